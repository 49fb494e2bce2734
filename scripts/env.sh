# Shared by scripts/*.sh: install what is missing, find a browser, set up software WebGPU for Node.
# Sourced by a script, it also turns on strict mode and moves to the repository root, as those
# scripts expect. Sourced in an interactive shell (`source scripts/env.sh`), it only sets the
# variables: the shell's options and folder stay as they were, and a failure returns 1 rather than
# ending the shell. Either way the work runs in a subshell under strict mode; only its exports
# (L2S_CHROMIUM, VK_ICD_FILENAMES, XDG_RUNTIME_DIR) come back.
l2s_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

l2s_setup() (
  set -euo pipefail
  cd "$l2s_root"
  # Only the exports go to stdout (the caller evaluates them); everything else to stderr.
  exec 3>&1 1>&2

  # Reinstall when package-lock.json's content changed since the last install (a stamp of its hash),
  # not when its mtime moved: a checkout or merge that rewrites the lock unchanged keeps node_modules.
  lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
  stamp=node_modules/.l2s-lock.sha256
  if [ ! -d node_modules ] || { [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$lock_hash" ]; } ||
    { [ ! -f "$stamp" ] && [ package-lock.json -nt node_modules/.package-lock.json ]; }; then
    echo "l2s-merge: installing npm packages" >&2
    npm ci --no-audit --no-fund
  fi
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_hash" ] || echo "$lock_hash" >"$stamp"

  apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "l2s-merge: installing $* with apt-get" >&2
      (apt-get install -y -q "$@" || (apt-get update -q && apt-get install -y -q "$@")) >/dev/null
    else
      echo "l2s-merge: please install: $* (or set L2S_CHROMIUM to a Chromium/Chrome binary)" >&2
      return 1
    fi
  }

  # Browser for Playwright: $L2S_CHROMIUM, else Debian's chromium (Playwright's own browsers need a download).
  if [ -z "${L2S_CHROMIUM:-}" ]; then
    for c in /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
      if [ -x "$c" ]; then L2S_CHROMIUM=$c; break; fi
    done
    if [ -z "${L2S_CHROMIUM:-}" ]; then apt_install chromium && L2S_CHROMIUM=/usr/bin/chromium; fi
  fi
  if [ -n "${L2S_CHROMIUM:-}" ]; then printf 'export L2S_CHROMIUM=%q\n' "$L2S_CHROMIUM" >&3; fi

  # Node's WebGPU (Dawn) needs the Vulkan loader; with no GPU, SwiftShader from Chromium is the adapter.
  # grep -q stops reading early; with pipefail that SIGPIPE would read as "not installed".
  if ! ldconfig -p 2>/dev/null | grep libvulkan.so.1 >/dev/null; then apt_install libvulkan1 || true; fi
  if [ -z "${VK_ICD_FILENAMES:-}" ] && [ -f /usr/lib/chromium/vk_swiftshader_icd.json ] && ! ls /usr/share/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    printf 'export VK_ICD_FILENAMES=%q\n' /usr/lib/chromium/vk_swiftshader_icd.json >&3
  fi
  printf 'export XDG_RUNTIME_DIR=%q\n' "${XDG_RUNTIME_DIR:-$(mktemp -d)}" >&3
)

# A plain assignment and then its status: in the test of an `if`, or left of `&&` or `||`, bash
# would ignore the setup's own `set -e`.
l2s_exports=$(l2s_setup)
l2s_status=$?
unset -f l2s_setup
if [[ $- == *i* ]]; then
  [ "$l2s_status" = 0 ] && eval "$l2s_exports"
  unset l2s_root l2s_exports
  eval "unset l2s_status; return $l2s_status"
fi
set -euo pipefail
cd "$l2s_root"
[ "$l2s_status" = 0 ] || exit "$l2s_status"
eval "$l2s_exports"
unset l2s_root l2s_exports l2s_status
