#!/usr/bin/env bash
# The GPU figures on a Linux x86-64 machine with an NVIDIA GPU and Vulkan, through Node's WebGPU
# (Dawn): every GPU test case (kernels, merge methods, the randomized SVD and its streaming within a
# memory budget, AIM, the model runtime) and the Qwen2.5-7B-shaped bench (bench/gpu-7b.mjs: the
# read+write floor, TIES on the CPU and on the GPU within the budget), each as a table.
#
#   bash bench/gpu-device.sh pack      here, with node_modules: builds dist/cli and dist/gpu-cases
#                                      and gathers what the GPU machine needs into .device/ (about
#                                      30 MB: the bundles and the linux-x64 `webgpu` package)
#   bash bench/gpu-device.sh [OPTIONS] there (needs only node >= 20 and an NVIDIA Vulkan driver):
#     --layers N        7B layers (default 2)       --gpu-memory SIZE  GPU budget (default 8B)
#     --cases-only      only the test cases         --bench-only       only the 7B bench
#     --only TEXT       only the test cases whose name contains TEXT
# Logs and tables go to $OUT (or .tmp/gpu-device). A software adapter (SwiftShader, llvmpipe) is
# refused: its times say nothing of a GPU (L2S_ALLOW_SOFTWARE=1 runs anyway, e.g. to try the script).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = pack ]; then
  npm run build:cli
  npx vite build --config bench/gpu-cases.vite.config.ts
  rm -rf .device
  mkdir -p .device/node_modules/webgpu/dist .device/node_modules/@huggingface .device/dist
  cp -r dist/cli dist/gpu-cases .device/dist/
  (cd node_modules/webgpu && cp -r index.js package.json build types.d.ts ../../.device/node_modules/webgpu/)
  cp -r node_modules/webgpu/dist/linux-x64 .device/node_modules/webgpu/dist/
  cp -r node_modules/yaml .device/node_modules/
  cp -r node_modules/@huggingface/tokenizers node_modules/@huggingface/jinja .device/node_modules/@huggingface/
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx '/.device/' "$exclude" 2>/dev/null || echo /.device/ >>"$exclude"
  du -sh .device
  echo "gpu-device: carry .device (and .gl, the Vulkan loader .debs, where the machine has no libvulkan)"
  exit 0
fi

layers=2
budget=8B
run_cases=1
run_bench=1
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers=$2; shift 2 ;;
    --gpu-memory) budget=$2; shift 2 ;;
    --cases-only) run_bench=0; shift ;;
    --bench-only) run_cases=0; shift ;;
    --only) only=(--only "$2"); shift 2 ;;
    *) echo "gpu-device: unknown option $1 (see the comment at the top of bench/gpu-device.sh)" >&2; exit 2 ;;
  esac
done
out=${OUT:-.tmp/gpu-device}
mkdir -p "$out"

# The Vulkan loader: a bare machine gets it from .gl/*.deb (unpacked into /).
if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
  if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    echo "gpu-device: no libvulkan.so.1 and no .gl/*.deb to unpack; install libvulkan1" >&2
    exit 2
  fi
fi
# The NVIDIA Vulkan driver where the container runtime put it, unless the environment names one.
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; break; fi
  done
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
# What pack gathered, where the repo's own are missing.
[ -e node_modules ] || ln -s .device/node_modules node_modules
[ -e dist/cli ] || { mkdir -p dist && cp -r .device/dist/cli dist/; }
[ -e dist/gpu-cases ] || { mkdir -p dist && cp -r .device/dist/gpu-cases dist/; }

adapter=$(node --input-type=module -e "
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const a = await create([]).requestAdapter({ powerPreference: 'high-performance' });
  if (!a) { console.log('none'); process.exit(0); }
  const i = a.info;
  console.log([i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ') + (i.isFallbackAdapter ? ' (fallback)' : ''));
  process.exit(0);
")
echo "gpu-device: adapter: $adapter" | tee "$out/adapter.txt"
if [ "$adapter" = none ]; then echo "gpu-device: Dawn found no adapter (VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset})" >&2; exit 2; fi
if echo "$adapter" | grep -qiE 'swiftshader|llvmpipe|lavapipe|fallback' && [ "${L2S_ALLOW_SOFTWARE:-0}" != 1 ]; then
  echo "gpu-device: that is a software renderer, not a GPU; set L2S_ALLOW_SOFTWARE=1 to run anyway" >&2
  exit 2
fi

status=0
if [ "$run_cases" = 1 ]; then
  echo "== GPU test cases" >&2
  node dist/gpu-cases/run.js "${only[@]}" 2>&1 | tee "$out/gpu-cases.md" || status=1
fi
if [ "$run_bench" = 1 ]; then
  echo "== Qwen2.5-7B-shaped bench ($layers layers, GPU budget $budget)" >&2
  node --expose-gc bench/gpu-7b.mjs --layers "$layers" --gpu-memory "$budget" --dir "${L2S_BENCH_DIR:-.tmp/bench}" 2>&1 |
    tee "$out/gpu-7b.txt" || status=1
fi
exit $status
