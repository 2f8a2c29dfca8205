#!/usr/bin/env bash
# The long crash-safety run: KILLS (default 120) kills spread over every stage command, half at
# fault points inside file writes and between outputs and side files, half by SIGKILL at a
# random moment; each rerun must end with the uninterrupted run's files, bit for bit.
# Usage: scripts/crash_test.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export DELTAPLAN_CRASH_KILLS="${1:-120}" DELTAPLAN_CRASH_SEED="${2:-1}"
cargo test --release -p deltaplan --test crash -- --ignored crash_long --nocapture
