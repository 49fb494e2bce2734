#!/usr/bin/env bash
# npm test: install what is missing, build, check types and style, run unit and browser tests.
source "$(dirname "$0")/env.sh"
npm run build
npx tsc --noEmit -p tsconfig.json
npx biome check .
npx vitest run
if compgen -G "test/browser/*.spec.ts" >/dev/null; then npx playwright test; fi
