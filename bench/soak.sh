#!/usr/bin/env bash
# Soak: a bounded run of many sessions against `ferry serve` on loopback, driven by
# `ferry-load` (crates/loadgen), in two scenarios, each on a fresh server:
#   soak       IDLE logged-in sessions sending NOOP every NOOP_EVERY, spread over source
#              addresses 127.0.0.2, .3, ... (PER_SOURCE each), plus ACTIVE sessions uploading
#              and downloading a FILE_MIB file without pause for DURATION; every download is
#              compared byte for byte.
#   slowloris  SLOW connections each sending one byte of a command every SLOW_INTERVAL for
#              SLOW_DURATION, while 10 well-behaved sessions send NOOP every 100 ms.
# Each scenario runs twice on its server (the second wave with a WAVE2_DURATION window), and
# the server's VmRSS, open fds and threads are read from /proc before, during and after each.
# Prints the figures and a PASS/FAIL line per target; exits 1 when one fails.
#   errors == 0                 no failed connect, login, NOOP, QUIT or transfer, no wrong byte
#   slowloris NOOP p99 < 100 ms the well-behaved sessions do not notice the slow ones
#   fds, threads back           at or below the baseline once the sessions have left
#   RSS back near baseline      after - before <= max(RSS_SLACK_MIB, RSS_SLACK_PCT% of the
#                               growth while the sessions were open)
#   wave 2 leaves RSS as found  what wave 1 left behind (the allocator keeps freed memory) is
#                               reused, not added to, as a leak would: the same test on wave 2
#
# Usage: bench/soak.sh   (raises `ulimit -n` as needed: run as root, or with a high hard limit)
#   IDLE=N ACTIVE=N DURATION=60s NOOP_EVERY=5s FILE_MIB=16 PER_SOURCE=100
#   SLOW=N SLOW_INTERVAL=3s SLOW_CALM=5s SLOW_DURATION=30s WAVE2_DURATION=10s
#   RSS_SLACK_MIB=16 RSS_SLACK_PCT=20 CONNECT_CONCURRENCY=32 (logins in flight while opening)
#   RSS_LIMIT_MIB=N  stop a scenario when the server's RSS passes N MiB (default: half of
#                    the memory available at the start), so that it cannot exhaust the machine
#   QUICK=1   a quick look: 200 idle, 10 active, 4 MiB, 10 s; 100 slow for 5 s; wave 2 3 s
# Logging in costs an argon2id verification (19 MiB, tens of ms of CPU), so opening 5,000
# sessions takes minutes on 2 cores: the ramp is reported, and the window starts after it.
# The whole run takes about 10 minutes on 2 cores, QUICK=1 about 2 (plus the build).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${QUICK:-0}" = 1 ]; then
  IDLE=${IDLE:-200}
  ACTIVE=${ACTIVE:-10}
  DURATION=${DURATION:-10s}
  FILE_MIB=${FILE_MIB:-4}
  SLOW=${SLOW:-100}
  SLOW_CALM=${SLOW_CALM:-2s}
  SLOW_DURATION=${SLOW_DURATION:-5s}
  WAVE2_DURATION=${WAVE2_DURATION:-3s}
fi
IDLE=${IDLE:-5000}
ACTIVE=${ACTIVE:-50}
DURATION=${DURATION:-60s}
NOOP_EVERY=${NOOP_EVERY:-5s}
FILE_MIB=${FILE_MIB:-16}
PER_SOURCE=${PER_SOURCE:-100}
SLOW=${SLOW:-500}
SLOW_INTERVAL=${SLOW_INTERVAL:-3s}
SLOW_CALM=${SLOW_CALM:-5s}
SLOW_DURATION=${SLOW_DURATION:-30s}
WAVE2_DURATION=${WAVE2_DURATION:-10s}
RSS_SLACK_MIB=${RSS_SLACK_MIB:-16}
RSS_SLACK_PCT=${RSS_SLACK_PCT:-20}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-32}
RSS_LIMIT_MIB=${RSS_LIMIT_MIB:-$(awk '/^MemAvailable:/ { print int($2 / 1024 / 2) }' /proc/meminfo)}
PROBES=10

# The server holds two descriptors per logged-in session (its socket and its home directory),
# the generator one, and each active session a data connection on both sides.
need=$((2 * (IDLE + SLOW) + 4 * ACTIVE + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$need" || { echo "soak: cannot raise ulimit -n to $need" >&2; exit 1; }
fi

. "$(dirname "$0")/common.sh"
bench_setup soak awk
cargo build --release --quiet -p loadgen --bin ferry-load
load=$PWD/target/release/ferry-load
export FERRY_LOAD_PASSWORD=$password

# Idle and slow sessions come PER_SOURCE from each of 127.0.0.2, .3, ...; the active ones,
# the probes and the file's upload come from 127.0.0.1. Both stay under --max-per-ip.
server_flags=(--max-sessions $((IDLE + SLOW + ACTIVE + PROBES + 100))
  --max-per-ip $((PER_SOURCE + ACTIVE + PROBES + 10)))
run_load() {
  "$load" "$1" --addr "$addr" --user bench --password-env FERRY_LOAD_PASSWORD \
    --server-pid "$server" --per-source "$PER_SOURCE" --connect-concurrency "$CONNECT_CONCURRENCY" \
    --rss-limit-mib "$RSS_LIMIT_MIB" "${@:2}"
}

# Each scenario runs twice on one server, the second time with a short window: memory the
# first wave left behind is either reused by the second (the allocator keeps it) or grows
# again (a leak).
bench_start_server "${server_flags[@]}"
echo "soak: ferry serve pid $server on $addr; ulimit -n $(ulimit -n)" >&2
for wave in 1 2; do
  window=$DURATION
  [ "$wave" = 2 ] && window=$WAVE2_DURATION
  echo "soak: wave $wave" >&2
  run_load soak --idle "$IDLE" --active "$ACTIVE" --duration "$window" \
    --noop-every "$NOOP_EVERY" --file-mib "$FILE_MIB" >"$work/soak-$wave.txt"
done
bench_stop_server

bench_start_server "${server_flags[@]}"
echo "slowloris: ferry serve pid $server on $addr" >&2
for wave in 1 2; do
  window=$SLOW_DURATION
  [ "$wave" = 2 ] && window=$WAVE2_DURATION
  echo "slowloris: wave $wave" >&2
  run_load slowloris --clients "$SLOW" --interval "$SLOW_INTERVAL" --calm "$SLOW_CALM" \
    --duration "$window" --probes "$PROBES" >"$work/slowloris-$wave.txt"
done
bench_stop_server

# The value of figure $2 in file $1 ("" when absent).
fig() { sed -n "s/^$2=//p" "$1" | head -n 1; }

# Memory, fds and threads of the server, before/during/peak/after, from figures file $1.
server_table() {
  local f=$1
  printf '  %-16s %10s %10s %10s %10s\n' "server" before during peak after
  awk -F= '
    { v[$1] = $2 }
    END {
      printf "  %-16s %10.1f %10.1f %10.1f %10.1f\n", "RSS MiB", v["server_before_rss_kib"] / 1024,
        v["server_during_rss_kib"] / 1024, v["server_peak_rss_kib"] / 1024, v["server_after_rss_kib"] / 1024
      printf "  %-16s %10d %10d %10d %10d\n", "open fds", v["server_before_fds"], v["server_during_fds"],
        v["server_peak_fds"], v["server_after_fds"]
      printf "  %-16s %10d %10d %10d %10d\n", "threads", v["server_before_threads"], v["server_during_threads"],
        v["server_peak_threads"], v["server_after_threads"]
    }' "$f"
  echo "  RSS per session, (during - before) / sessions: $(fig "$f" rss_per_session_kib) KiB;" \
    "fds and threads settled $(fig "$f" server_settle_s) s after the sessions left"
}

errors_line() {
  local f=$1
  echo "  errors: $(fig "$f" errors) (connect $(fig "$f" errors_connect), login $(fig "$f" errors_login)," \
    "noop $(fig "$f" errors_noop), transfer $(fig "$f" errors_transfer), mismatch $(fig "$f" errors_mismatch)," \
    "quit $(fig "$f" errors_quit))"
}

# One line on the second wave, from figures file $1.
second_wave() {
  local f=$1
  echo "  second wave ($WAVE2_DURATION window): $(fig "$f" errors) errors, NOOP p99 $(fig "$f" noop_p99_ms) ms;" \
    "server RSS $(fig "$f" server_before_rss_kib) -> $(fig "$f" server_during_rss_kib) -> $(fig "$f" server_after_rss_kib) KiB," \
    "fds $(fig "$f" server_before_fds) -> $(fig "$f" server_during_fds) -> $(fig "$f" server_after_fds)," \
    "threads $(fig "$f" server_before_threads) -> $(fig "$f" server_during_threads) -> $(fig "$f" server_after_threads)"
}

soak=$work/soak-1.txt
slow=$work/slowloris-1.txt
echo
echo "ferry $(git describe --always --dirty 2>/dev/null || echo '?'), $(nproc) CPUs, loopback"
echo "soak: $(fig "$soak" idle_sessions) of $IDLE idle sessions (NOOP every $NOOP_EVERY) + $ACTIVE active" \
  "(${FILE_MIB} MiB file), ${DURATION} window after a $(fig "$soak" ramp_s) s ramp"
server_table "$soak"
echo "  RSS per idle session over the second half of the ramp: $(fig "$soak" rss_per_idle_session_kib) KiB"
echo "  login (connect to 230, $CONNECT_CONCURRENCY at once): $(fig "$soak" logins_per_s) per s," \
  "p50 $(fig "$soak" login_p50_ms) ms, p99 $(fig "$soak" login_p99_ms) ms"
echo "  NOOP in the window: $(fig "$soak" noop_count) sent, p50 $(fig "$soak" noop_p50_ms) ms," \
  "p99 $(fig "$soak" noop_p99_ms) ms, max $(fig "$soak" noop_max_ms) ms" \
  "(during the ramp: p99 $(fig "$soak" ramp_noop_p99_ms) ms, max $(fig "$soak" ramp_noop_max_ms) ms)"
echo "  transfers: $(fig "$soak" transfers) ($(fig "$soak" downloads) down, $(fig "$soak" uploads) up)," \
  "$(fig "$soak" transfer_mb) MB, $(fig "$soak" transfer_mb_s) MB/s"
errors_line "$soak"
second_wave "$work/soak-2.txt"
echo
echo "slowloris: $(fig "$slow" slow_clients) connections sending a byte every $SLOW_INTERVAL for $SLOW_DURATION;" \
  "$PROBES probes sending NOOP every 100 ms (also for $SLOW_CALM before the slow ones came;" \
  "the baseline has them logged in)"
server_table "$slow"
echo "  slow connections: $(fig "$slow" slow_held) held to the end, $(fig "$slow" slow_dropped) dropped by the server," \
  "$(fig "$slow" slow_refused) refused; all in after $(fig "$slow" slow_arrival_s) s"
echo "  probe NOOP before: p50 $(fig "$slow" calm_noop_p50_ms) ms, p99 $(fig "$slow" calm_noop_p99_ms) ms;" \
  "during: $(fig "$slow" noop_count) sent, p50 $(fig "$slow" noop_p50_ms) ms, p99 $(fig "$slow" noop_p99_ms) ms," \
  "max $(fig "$slow" noop_max_ms) ms"
echo "  a new connection during the flood: $(fig "$slow" flood_connect_ms) ms to its greeting"
errors_line "$slow"
second_wave "$work/slowloris-2.txt"
echo

# Both waves' figures in one file per scenario, the second wave's keys prefixed with w2_.
for scenario in soak slowloris; do
  { cat "$work/$scenario-1.txt"; sed 's/^/w2_/' "$work/$scenario-2.txt"; } >"$work/$scenario.txt"
done

failed=0
# verdict NAME OK DETAIL: one PASS/FAIL line.
verdict() {
  if [ "$2" = 1 ]; then
    echo "PASS  $1 ($3)"
  else
    echo "FAIL  $1 ($3)"
    failed=1
  fi
}
# check NAME AWK-CONDITION DETAIL FILE: the condition over the figures of FILE (v["key"]);
# slack(growth) is the RSS slack for a growth in KiB.
check() {
  local ok
  ok=$(awk -F= -v slack_mib="$RSS_SLACK_MIB" -v slack_pct="$RSS_SLACK_PCT" "
    function slack(growth) { return (slack_mib * 1024 > slack_pct / 100 * growth) ? slack_mib * 1024 : slack_pct / 100 * growth }
    { v[\$1] = \$2 }
    END { print (($2) ? 1 : 0) }" "$4")
  verdict "$1" "$ok" "$3"
}
# The figure $3 of file $2 in both waves: "wave 1 / wave 2" for detail texts, $1 the separator
both() { echo "$(fig "$2" "$3")$1$(fig "$2" "w2_$3")"; }
for scenario in soak slowloris; do
  f=$work/$scenario.txt
  check "$scenario: errors == 0" \
    'v["errors"] == 0 && v["errors"] != "" && v["w2_errors"] == 0 && v["w2_errors"] != ""' \
    "$(both ' and ' "$f" errors) errors in the two waves" "$f"
  check "$scenario: fds back to baseline" \
    'v["server_after_fds"] <= v["server_before_fds"] && v["w2_server_after_fds"] <= v["w2_server_before_fds"]' \
    "$(fig "$f" server_before_fds) -> $(fig "$f" server_during_fds) -> $(fig "$f" server_after_fds); wave 2 -> $(fig "$f" w2_server_after_fds)" "$f"
  check "$scenario: threads back to baseline" \
    'v["server_after_threads"] <= v["server_before_threads"] && v["w2_server_after_threads"] <= v["w2_server_before_threads"]' \
    "$(fig "$f" server_before_threads) -> $(fig "$f" server_peak_threads) at most -> $(fig "$f" server_after_threads); wave 2 -> $(fig "$f" w2_server_after_threads)" "$f"
  check "$scenario: RSS back near baseline" \
    'v["server_after_rss_kib"] - v["server_before_rss_kib"] <= slack(v["server_during_rss_kib"] - v["server_before_rss_kib"])' \
    "$(fig "$f" server_before_rss_kib) -> $(fig "$f" server_during_rss_kib) -> $(fig "$f" server_after_rss_kib) KiB; slack max(${RSS_SLACK_MIB} MiB, ${RSS_SLACK_PCT}% of the growth)" "$f"
  check "$scenario: wave 2 leaves RSS where it found it (no leak)" \
    'v["w2_server_after_rss_kib"] - v["w2_server_before_rss_kib"] <= slack(v["server_during_rss_kib"] - v["server_before_rss_kib"])' \
    "$(fig "$f" w2_server_before_rss_kib) -> $(fig "$f" w2_server_during_rss_kib) -> $(fig "$f" w2_server_after_rss_kib) KiB" "$f"
  check "$scenario: server RSS stayed under ${RSS_LIMIT_MIB} MiB" 'v["rss_limit_hit"] == 0 && v["w2_rss_limit_hit"] == 0' \
    "peak $(both ' and ' "$f" server_peak_rss_kib) KiB" "$f"
done
check "soak: every idle session logged in" "v[\"idle_sessions\"] == $IDLE && v[\"w2_idle_sessions\"] == $IDLE" \
  "$(both ' and ' "$work/soak.txt" idle_sessions) of $IDLE" "$work/soak.txt"
check "slowloris: probe NOOP p99 < 100 ms" \
  'v["noop_p99_ms"] != "" && v["noop_p99_ms"] < 100 && v["w2_noop_p99_ms"] != "" && v["w2_noop_p99_ms"] < 100' \
  "$(both ' and ' "$work/slowloris.txt" noop_p99_ms) ms" "$work/slowloris.txt"
exit "$failed"
