#!/usr/bin/env bash
# The whole test suite: installs the real Envoy, then runs every unit, component and end-to-end
# test of the workspace (end-to-end tests start real Envoy 1.40 processes on loopback).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
ENVOY_BIN="$(scripts/install-tools.sh)"
export ENVOY_BIN
echo "envoy: $("$ENVOY_BIN" --version | grep -o 'version: .*')"
cargo test --workspace --locked "$@"
