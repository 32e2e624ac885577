#!/usr/bin/env bash
# Fleet and overhead benchmarks: builds release binaries (switchyard, vllm-sim, switchyard-bench)
# and runs `switchyard-bench` with the given arguments, e.g.
#   scripts/bench.sh compare --workload seed --arms envoy-least-request,switchyard --json seed.json
#   scripts/bench.sh overhead --json overhead.json
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
ENVOY_BIN="$(scripts/install-tools.sh)"
export ENVOY_BIN
cargo build --locked --release --quiet -p switchyard -p vllm-sim -p switchyard-bench
exec "${CARGO_TARGET_DIR:-$root/target}/release/switchyard-bench" "$@"
