#!/usr/bin/env bash
# The web demo in a real browser: installs Debian's chromium and playwright-core
# (scripts/setup-browser.sh), builds `ulm`, starts `ulm serve` on a free port and drives the page.
#   web/test/run.sh            # screenshot in web/test/out/handoff.png
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup-browser.sh
cargo build --release -q -p ulm
ULM_BIN="${CARGO_TARGET_DIR:-target}/release/ulm" node web/test/browser.test.mjs
