# Shared by scripts/*.sh: install what is missing, find a browser, set up software WebGPU for Node.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
export L2S_CHROMIUM

# Node's WebGPU (Dawn) needs the Vulkan loader; with no GPU, SwiftShader from Chromium is the adapter.
if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then apt_install libvulkan1 || true; fi
if [ -z "${VK_ICD_FILENAMES:-}" ] && [ -f /usr/lib/chromium/vk_swiftshader_icd.json ] && ! ls /usr/share/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
