#!/usr/bin/env bash
# Starts or stops a vLLM server for a model directory, as `generate.openai` (url: ...) expects
# one: the weight routes on (VLLM_SERVER_DEV_MODE=1), log-probs of the sampling distribution
# (--logprobs-mode processed_logprobs), f32 unless told otherwise, a 1 GiB KV cache on CPU
# unless VLLM_CPU_KVCACHE_SPACE says more. vLLM comes from scripts/setup-vllm.sh (installed on
# first use). The model must have untied embeddings for in-place reloads: see
# `tandem model untie`.
#
#   scripts/vllm-server.sh start MODEL_DIR [--port P] [--state DIR] [-- more vLLM arguments]
#       waits for /health, prints the server's URL; pid and log go to --state (default
#       ./vllm-server)
#   scripts/vllm-server.sh stop [--state DIR]
#       stops the server and its workers
#
#   VLLM_STARTUP_TIMEOUT   seconds to wait for /health (default 900)
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
action=$1
shift
state=./vllm-server
port=8000
model=
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --port) port=$2; shift 2 ;;
    --state) state=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage ;;
    *) if [ -z "$model" ] && [ "$action" = start ]; then model=$1; shift; else usage; fi ;;
  esac
done

stop() {
  local pid
  pid=$(cat "$state/pid" 2>/dev/null) || { echo "vllm-server: no server recorded in $state" >&2; return 0; }
  # The server leads its own process group (setsid): stop the group, workers included.
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$state/pid"
  echo "vllm-server: stopped $pid" >&2
}

case $action in
  stop) stop ;;
  start)
    [ -n "$model" ] || usage
    [ -f "$model/config.json" ] || { echo "vllm-server: $model/config.json: no such file" >&2; exit 1; }
    python=$("$(dirname "$0")/setup-vllm.sh")
    mkdir -p "$state"
    if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
      echo "vllm-server: a server is already running from $state (pid $(cat "$state/pid")); stop it first" >&2
      exit 1
    fi
    dtype=(--dtype float32)
    for a in "${extra[@]}"; do case $a in --dtype|--dtype=*) dtype=() ;; esac; done
    model=$(cd "$model" && pwd)
    VLLM_SERVER_DEV_MODE=1 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} \
      setsid "$python" -m vllm.entrypoints.openai.api_server --model "$model" \
      --host 127.0.0.1 --port "$port" --logprobs-mode processed_logprobs "${dtype[@]}" "${extra[@]}" \
      >"$state/server.log" 2>&1 </dev/null &
    echo $! >"$state/pid"
    deadline=$((SECONDS + ${VLLM_STARTUP_TIMEOUT:-900}))
    until curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
      if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
        echo "vllm-server: the server exited; $state/server.log ends:" >&2
        tail -5 "$state/server.log" >&2
        rm -f "$state/pid"
        exit 1
      fi
      if [ $SECONDS -ge $deadline ]; then
        echo "vllm-server: no answer on /health within ${VLLM_STARTUP_TIMEOUT:-900} s; stopping it" >&2
        stop
        exit 1
      fi
      sleep 1
    done
    echo "http://127.0.0.1:$port"
    ;;
  *) usage ;;
esac
