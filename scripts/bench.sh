#!/usr/bin/env bash
# npm run bench: throughput and memory of the engine against a read+write baseline, then the
# randomized SVD on the GPU against the CPU and the SVD family's whole-merge cost.
source "$(dirname "$0")/env.sh"
npm run build:cli
node --expose-gc bench/run.mjs "$@"
node --expose-gc bench/rsvd.mjs "$@"
