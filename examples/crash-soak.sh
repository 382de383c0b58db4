#!/usr/bin/env bash
# Crash-consistency soak: thousands of deploy/promote/revert runs of the real
# binary, each killed with SIGKILL at a random instant, each followed by the
# invariant checks (current and last-good resolve to releases that match
# their manifests, no temporary debris, a clean journal, the next command
# succeeds). The suite runs the same harness with a modest count.
#
#   examples/crash-soak.sh            # 2000 trials
#   examples/crash-soak.sh 10000
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-2000}"
SWITCHYARD_CRASH_TRIALS="$trials" cargo test --release --features test-seams --test it crash::random_kills_never_break_current -- --nocapture
