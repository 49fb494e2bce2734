#!/usr/bin/env bash
# npm run bench: throughput and memory of the engine against a read+write baseline.
source "$(dirname "$0")/env.sh"
npm run build:cli
node --expose-gc bench/run.mjs "$@"
