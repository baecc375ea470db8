#!/usr/bin/env bash
# Installs what the web demo's browser test needs: Debian's chromium (never a downloaded browser
# build) and playwright-core from npm, pinned by web/test/package-lock.json.
#   scripts/setup-browser.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null || { echo "node is missing: apt-get install nodejs npm" >&2; exit 1; }
# playwright-core never downloads a browser; the test points it at /usr/bin/chromium.
(cd web/test && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
echo "browser test ready: $(chromium --version 2>/dev/null | head -1), playwright-core $(node -p "require('./web/test/node_modules/playwright-core/package.json').version")"
