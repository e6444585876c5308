#!/usr/bin/env bash
# Memory targets of fcrest, measured from /proc:
#
#  1. idle connections: core_hello (one worker) holds N keep-alive connections that each
#     served one request and now sit idle; its VmRSS must stay within 64 MiB (N = 10,000).
#  2. a large body: echo buffers one request with a body of B bytes (8 MiB); its peak RSS
#     (VmHWM, reset just before the request through /proc/PID/clear_refs) may grow by less
#     than twice the body size over its RSS before the request.
#
# Usage: bench/memory.sh [--build DIR] [--conns N] [--body BYTES]
# Needs core_hello, echo and fcgi_load built in DIR (default build-bench; bench/run builds
# them). Prints a human-readable summary and one "MEMORY ..." line per measurement; exits
# non-zero when a target is missed or a step fails.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-bench
conns=10000
body=$((8 * 1024 * 1024))
rss_limit_kib=$((64 * 1024))

while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --body) body=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "memory.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

load=$build/bench/fcgi_load
for f in "$load" "$build/examples/core_hello" "$build/examples/echo"; do
  [ -x "$f" ] || { echo "memory.sh: $f is missing (build first)" >&2; exit 2; }
done

tmp=$(mktemp -d /tmp/fcrest-memory.XXXXXX)
pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# div A B [DIGITS]: A/B with DIGITS decimals (default 1).
div() {
  awk -v a="$1" -v b="$2" -v d="${3:-1}" 'BEGIN { printf "%.*f", d, a / b }'
}

# kib PID FIELD: a VmRSS/VmHWM value from /proc/PID/status, in KiB.
kib() {
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# wait_ready ADDR: until the application answers one request (5 s at most).
wait_ready() {
  for _ in $(seq 50); do
    if "$load" -t "$1" -c 1 -n 1 -q --timeout 1 --expect-status 200 >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "memory.sh: nothing answers on $1" >&2
  return 1
}

# stop PID: SIGTERM, wait, and drop it from the clean-up list (its PID may be reused later).
stop() {
  local keep=() p
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do
    [ "$p" = "$1" ] || keep+=("$p")
  done
  pids=("${keep[@]}")
}

status=0
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- 1. idle keep-alive connections ------------------------------------------------------
sock=$tmp/hello.sock
"$build/examples/core_hello" --listen "unix:$sock" --max-conns $((conns + 100)) &
hello_pid=$!
pids+=("$hello_pid")
wait_ready "unix:$sock"
rss_before=$(kib "$hello_pid" VmRSS)
"$load" -t "unix:$sock" -c "$conns" --hold 600 --timeout 60 >"$tmp/hold.out" 2>&1 &
hold_pid=$!
pids+=("$hold_pid")
held=0
for _ in $(seq 600); do
  if grep -q '^HOLDING' "$tmp/hold.out"; then
    held=1
    break
  fi
  kill -0 "$hold_pid" 2>/dev/null || break
  sleep 0.1
done
if [ "$held" = 1 ]; then
  sleep 0.5 # let the server settle after the last answer
  rss=$(kib "$hello_pid" VmRSS)
  ok=$((rss <= rss_limit_kib ? 1 : 0))
  [ "$ok" = 1 ] || status=1
  echo "$conns idle keep-alive connections: core_hello VmRSS $(div "$rss" 1024) MiB" \
    "($(div "$rss_before" 1024) MiB before, $(div $((rss - rss_before)) "$conns" 2) KiB per" \
    "connection); target <= 64 MiB: $([ "$ok" = 1 ] && echo met || echo MISSED)"
  echo "MEMORY test=idle_conns conns=$conns rss_kib=$rss rss_before_kib=$rss_before limit_kib=$rss_limit_kib ok=$ok"
else
  echo "memory.sh: the $conns connections were not all established:" >&2
  cat "$tmp/hold.out" >&2
  echo "MEMORY test=idle_conns conns=$conns rss_kib=0 rss_before_kib=$rss_before limit_kib=$rss_limit_kib ok=0"
  status=1
fi
stop "$hold_pid"
stop "$hello_pid"

# ---- 2. one large body ------------------------------------------------------------------
sock=$tmp/echo.sock
"$build/examples/echo" --listen "unix:$sock" --log-level warn &
echo_pid=$!
pids+=("$echo_pid")
wait_ready "unix:$sock"
# wait_ready sent one small request: the code paths are mapped. The large one comes next, on a
# fresh heap (a second one could reuse what the allocator kept from the first).
rss_before=$(kib "$echo_pid" VmRSS)
echo 5 >"/proc/$echo_pid/clear_refs" # resets VmHWM to the current RSS
"$load" -t "unix:$sock" -c 1 -n 1 -b "$body" -q --timeout 30 >"$tmp/body.out"
hwm=$(kib "$echo_pid" VmHWM)
extra=$((hwm - rss_before))
limit=$((2 * body / 1024))
ok=$((extra < limit ? 1 : 0))
grep -q ' errors=0 ' "$tmp/body.out" || { ok=0; cat "$tmp/body.out" >&2; }
[ "$ok" = 1 ] || status=1
echo "one request with a $body-byte body: echo peak RSS +$(div "$extra" 1024) MiB over" \
  "$(div "$rss_before" 1024) MiB before ($(div $((extra * 1024)) "$body" 2)x the body);" \
  "target < 2x: $([ "$ok" = 1 ] && echo met || echo MISSED)"
echo "MEMORY test=body body=$body extra_peak_kib=$extra rss_before_kib=$rss_before limit_kib=$limit ok=$ok"
exit "$status"
