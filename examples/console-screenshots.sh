#!/usr/bin/env bash
# Screenshots of the web console (#16) for a reviewer to look at.
#
# Usage (from anywhere in a checkout): examples/console-screenshots.sh [DIR]
# DIR defaults to target/console-screenshots/. Needs Debian's chromium and
# chromium-driver (apt-get install chromium chromium-driver).
#
# It runs the console's browser test (tests/it/console_browser.rs) with
# SWITCHYARD_SCREENSHOTS_DIR set: cargo builds the binary; the test sets up
# a temporary root with app `web` (1.0.0 live, 1.1.0 and 1.2.0 in its
# release folder, a warm and an activate hook slow enough to watch), starts
# the agent with a console, chromedriver and headless chromium, and saves a
# PNG of each page as it goes: the login page, the overview, the app page
# during a deploy, the deploy's and the revert's confirmation pages, the
# history, and a viewer refused an action. Everything but DIR is removed
# when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/console-screenshots}"
for tool in chromium chromedriver; do
  if ! command -v "$tool" >/dev/null; then
    echo "console-screenshots: $tool is missing: apt-get install chromium chromium-driver" >&2
    exit 1
  fi
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out"/[0-9]-*.png
# The test suite's own build (same features), so nothing is built twice.
SWITCHYARD_SCREENSHOTS_DIR="$out" cargo test --features test-seams --test it -- \
  console_browser --nocapture
ls -l "$out"/*.png
