#!/usr/bin/env bash
# npm run screenshots: reruns the browser specs that take screenshots (through the harness's
# screenshot()), writing the pictures into docs/screenshots/ for the README. npm test writes them
# under test-results/screenshots/ instead, so a test run leaves the work tree clean.
source "$(dirname "$0")/env.sh"
mapfile -t specs < <(grep -l 'screenshot(page' test/browser/*.spec.ts)
L2S_SCREENSHOTS=docs npx playwright test "${specs[@]}" "$@"
