#!/usr/bin/env bash
# The full fault sweep: every mutating command (deploy, promote, revert,
# install, prune, backup restore, backup create, maintenance, resolve) runs under Debian's strace, which kills it
# (SIGKILL) or fails the call (ENOSPC, EIO) at the Nth call of every
# injection point: the rename family, symlink, unlink, rmdir and mkdir, and
# (here at every N, where CI takes a stride) write, fsync/fdatasync/syncfs
# and openat. After each injection `status` then `prune` run, and the
# invariants of tests/it/faults.rs are checked. Prints the injection points
# per command and mode, and the violations (the run fails on any).
#
#   examples/fault-sweep.sh                 # everything
#   examples/fault-sweep.sh deploy,promote  # some commands
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { echo "needs strace (apt-get install strace)" >&2; exit 2; }
SWITCHYARD_FAULT_STRIDE=1 SWITCHYARD_FAULT_COMMANDS="${1:-}" \
  cargo test --locked --features test-seams --test it faults::faults_in -- --test-threads=1 2>&1 |
  grep -oE 'fault sweep .*|[0-9]+ violations.*|test result.*'
