#!/usr/bin/env bash
# The main job on the embedded default: three simulated vLLM pods (vllm-sim: A10, Llama-2-7B,
# --max-loras 4 --max-cpu-loras 12, the seed scenario's ten LoRA adapters) on 127.0.0.1:8001-8003, Switchyard (ext_proc :9002, health
# :9003, metrics :9090) and a real Envoy 1.40 gateway on :8080. Shows routing working, then leaves
# the gateway up for curl until Ctrl-C. It also runs a short seed comparison (envoy-least-request
# vs Switchyard, 20 s of arrivals each, on fresh simulated fleets). `--once` stops after the show
# (used by CI); `--no-compare` skips the comparison.
set -euo pipefail
once=false
compare=true
for arg in "$@"; do
  case "$arg" in
    --once) once=true ;;
    --no-compare) compare=false ;;
    *) echo "usage: scripts/demo.sh [--once] [--no-compare]" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

envoy="$(scripts/install-tools.sh)"
echo "==> building switchyard, vllm-sim and switchyard-bench"
cargo build --locked --quiet -p switchyard --bin switchyard -p vllm-sim --bin vllm-sim \
  -p switchyard-bench --bin switchyard-bench
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
run="$root/.run"
mkdir -p "$run"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for port in 8001 8002 8003 8080 9002 9003 9090 9901; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use; stop whatever holds it (an earlier demo?) and retry" >&2
    exit 1
  fi
done

adapters=()
for a in sql-lora sql-lora-1 sql-lora-2 sql-lora-3 sql-lora-4 \
         tweet-summary tweet-summary-1 tweet-summary-2 tweet-summary-3 tweet-summary-4; do
  adapters+=("$a=/adapters/$a")
done
echo "==> starting 3 simulated vLLM pods (A10, Llama-2-7B), Switchyard and Envoy (logs in .run/)"
"$bin/vllm-sim" --port 8001 --pods 3 --gpu A10 --model meta-llama/Llama-2-7b-hf \
  --enable-lora --max-loras 4 --max-cpu-loras 12 --lora-modules "${adapters[@]}" >"$run/pods.log" 2>&1 &
pids+=($!)
"$bin/switchyard" --bind-address 127.0.0.1 >"$run/switchyard.out" 2>"$run/switchyard.log" &
pids+=($!)
"$envoy" -c deploy/local/envoy.yaml --disable-hot-restart -l warning >"$run/envoy.log" 2>&1 &
pids+=($!)

wait_for() { # description, command...
  local what="$1"; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $what; see .run/*.log" >&2
  exit 1
}
wait_for "envoy" curl -sf localhost:9901/ready
wait_for "switchyard to see 3 pods" sh -c 'curl -sf localhost:9090/metrics | grep -q "inference_pool_ready_pods{name=\"vllm-llama2-7b-pool\"} 3"'

echo
echo "==> the seed example through the gateway:"
echo "    curl localhost:8080/v1/completions -d '{\"model\":\"tweet-summary\",\"prompt\":\"Write as if you were a critic: San Francisco\",\"max_tokens\":100,\"temperature\":0}'"
reply="$(curl -s -D "$run/headers.txt" localhost:8080/v1/completions \
  -d '{"model":"tweet-summary","prompt":"Write as if you were a critic: San Francisco","max_tokens":100,"temperature":0}')"
status="$(head -n1 "$run/headers.txt" | tr -d '\r')"
echo "    $status, served by $(grep -i '^x-served-by' "$run/headers.txt" | tr -d '\r' | cut -d' ' -f2)," \
  "model rewritten to $(echo "$reply" | grep -o '"model":"[^"]*"' | cut -d'"' -f4)"
case "$status" in *" 200"*) ;; *) echo "the gateway did not answer 200: $reply" >&2; exit 1 ;; esac

echo
echo "==> 60 concurrent requests (10 at a time) over the adapters; where they went:"
models=(tweet-summary sql-lora sql-lora-2 tweet-summary-4 meta-llama/Llama-2-7b-hf batch-summary)
: >"$run/served.txt"
batch=()
for i in $(seq 0 59); do
  model="${models[$((i % ${#models[@]}))]}"
  (curl -s -o /dev/null -D - localhost:8080/v1/completions \
    -d "{\"model\":\"$model\",\"prompt\":\"request $i\",\"max_tokens\":$((20 + (i * 7) % 60))}" \
    | tr -d '\r' | awk -v m="$model" '/^x-served-by:/ {print $2, m}' >>"$run/served.txt") &
  batch+=($!)
  if (( ${#batch[@]} == 10 )); then wait "${batch[@]}"; batch=(); fi
done
echo "    requests per pod:"
cut -d' ' -f1 "$run/served.txt" | sort | uniq -c | sed 's/^/      /'
served="$(wc -l <"$run/served.txt")"
echo "    $served of 60 answered"
[ "$served" -eq 60 ] || { echo "some requests failed; see .run/*.log" >&2; exit 1; }

echo
echo "==> Switchyard's own metrics (curl localhost:9090/metrics):"
curl -s localhost:9090/metrics | grep -E '^inference_objective_request_total|^inference_pool_(ready_pods|average)' | sed 's/^/    /'

if $compare; then
  echo
  echo "==> a short seed comparison: the same seeded requests through Envoy least-request and through"
  echo "    Envoy + Switchyard, each in front of its own fresh 3-pod fleet (full runs: scripts/bench.sh)"
  ENVOY_BIN="$envoy" "$bin/switchyard-bench" compare --workload seed --duration 20 \
    --arms envoy-least-request,switchyard 2>/dev/null | sed 's/^/    /'
fi

if $once; then
  echo
  echo "demo OK"
  exit 0
fi
echo
echo "Gateway up on http://localhost:8080 (Envoy admin :9901, Switchyard metrics :9090). Try:"
echo "  curl localhost:8080/v1/completions -d '{\"model\":\"tweet-summary\",\"prompt\":\"Write as if you were a critic: San Francisco\",\"max_tokens\":100,\"temperature\":0}'"
echo "Ctrl-C stops everything."
wait "${pids[@]}"
