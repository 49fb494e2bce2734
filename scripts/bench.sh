#!/usr/bin/env bash
# npm run bench: throughput and memory of the engine against the I/O floor (positioned reads into
# reused buffers and the writes, no math): CPU, then the GPU through Node's WebGPU when an adapter exists, then both in a browser worker, then the randomized
# SVD on the GPU against the CPU and the SVD family's whole-merge cost. Options are passed to
# bench/run.mjs and bench/rsvd.mjs (e.g. --layers 2).
source "$(dirname "$0")/env.sh"
npm run build:cli
node --expose-gc bench/run.mjs "$@"
if node -e "import('./dist/cli/index.js').then((m) => m.nodeGpu()).then((g) => g.requestAdapter()).then((a) => process.exit(a ? 0 : 1), () => process.exit(1))"; then
  node --expose-gc bench/run.mjs --device gpu --layers "${L2S_BENCH_GPU_LAYERS:-2}" --repeat 1
else
  echo "bench: no WebGPU adapter for Node; GPU rows skipped" >&2
fi
# The Qwen2.5-7B-shaped case (about 6 GB of synthetic models on disk, over 10 minutes here with its
# GPU row on a software adapter): opt in with L2S_BENCH_7B=1 (bench/gpu-device.sh runs it on a GPU).
if [ "${L2S_BENCH_7B:-0}" = 1 ]; then
  node --expose-gc bench/gpu-7b.mjs --layers "${L2S_BENCH_7B_LAYERS:-2}" --gpu-memory "${L2S_BENCH_GPU_MEMORY:-2B}"
fi
node bench/browser.mjs --layers "${L2S_BENCH_BROWSER_LAYERS:-2}"
node --expose-gc bench/rsvd.mjs "$@"
# The model runtime: prefill / decode tokens/s on synthetic Qwen2.5-0.5B/1.5B shapes, Node then a browser worker.
node bench/runtime.mjs --layers "${L2S_BENCH_RUNTIME_LAYERS:-2}"
# AIM: calibration tokens/s on a synthetic 1.5B-shaped model (2 layers by default), GPU where Node has an adapter.
node bench/aim.mjs --layers "${L2S_BENCH_AIM_LAYERS:-2}"
