#!/usr/bin/env bash
# ferry side by side with vsftpd, pure-ftpd, proftpd and pyftpdlib (bench/peers.sh): each
# server on its own loopback port with the same user and the same home, started afresh for
# each figure, measured by `ferry-load bench FIGURE` (crates/loadgen). Prints one table, a row
# per figure and a column per server, and ferry's ratio to the best peer: ferry / best where
# higher is better, best / ferry where lower is better, so that above 1.00 ferry wins.
#   a. RETR and STOR of one FILE_SIZE file: MB/s (10^6 bytes/s), and as a fraction of raw
#      loopback TCP (`ferry-load bench raw-tcp`, one stream, no server)
#   b. MANY_CLIENTS clients, each RETR of MANY_SIZE at once: aggregate MB/s, p50 and p99 ms
#   c. logins per second, LOGIN_WORKERS workers connecting, logging in and quitting for
#      LOGIN_DURATION: ferry's first logins (its login cache off: every login pays argon2id)
#      and repeated ones (the cache on); the peers check an MD5-crypt hash and cache nothing,
#      so one figure of theirs fills both rows
#   d. SMALL_COUNT files of SMALL_SIZE in one session: STOR, RETR and LIST files per second
#   e. the server's memory (Pss over its process tree) per idle logged-in session, for each
#      count in IDLE_SESSIONS; a count a server cannot hold reads n/a, with the reason below
#   f. the server's CPU seconds (its process tree) per GiB sent (RETR) and received (STOR)
#   g. a. over explicit FTPS (AUTH TLS, PROT P, one self-signed RSA 2048 certificate), and
#      FTPS RETR as a fraction of plain RETR
# Then, as a cross-check by another tool, pyftpdlib's own benchmark script (scripts/ftpbench
# of its source distribution, same version) against each server, in a small table of its own.
# Every server offers FTPS in every figure; see bench/peers.sh for how each is set up.
#
# Usage: bench/compare.sh   (as root: it adds a system user for the peers, apt-get, pip)
#   QUICK=1            a few minutes: 256M file, 50 clients x 10M, 2s of logins, 300 small
#                      files, 200 idle sessions, 20 ftpbench clients (the settings below win)
#   SERVERS="ferry vsftpd pure-ftpd proftpd pyftpdlib"   the columns, a subset in any order
#   FIGURES="retr stor many-retr logins small idle retr-tls stor-tls"   the figures, a subset
#   RUNS=3             runs of each figure on each server start (the median is shown)
#   IDLE_RUNS=1        runs of the idle figure: opening 10,000 sessions on a forking server
#                      takes minutes
#   FILE_SIZE=1G  MANY_CLIENTS=200  MANY_SIZE=10M  LOGIN_WORKERS=16  LOGIN_DURATION=5s
#   SMALL_COUNT=2000  SMALL_SIZE=4K  IDLE_SESSIONS="1000 10000"
#   FTPBENCH=1         0 skips the ftpbench cross-check; FTPBENCH_CLIENTS=50 FTPBENCH_SIZE=10M
#                      FTPBENCH_TIMEOUT=120 (seconds per server)
#   FIGURE_TIMEOUT=900 seconds one figure on one server may take before it reads n/a
#   MEM_FLOOR_MIB=2048 a figure is stopped (n/a) when the machine's available memory falls
#                      under this, so that a server holding thousands of sessions cannot
#                      exhaust it
#   OUT=FILE           where the report goes too (default target/bench-results/compare-DATE.txt)
#   FERRY_LOAD=PATH    a ferry-load binary to use instead of building one
#   BENCH_CACHE=DIR    the peers' packages and venv (default target/bench-peers), kept
#   SETTLE_SECS=70     longest wait before a figure for TIME_WAIT connections of the previous
#                      ones to drain (10 with QUICK=1, which is then less fair to the server
#                      that runs right after a figure with many connections)
#   HOME_TMPFS=1       the shared home on a tmpfs, so that the figures measure the servers,
#                      not this machine's disk (a virtual disk writing back ~330 MB/s, where
#                      ferry's fsync before it replaces a file times the disk); 0: on $TMPDIR
# The whole run takes 15-30 minutes on 2 cores, QUICK=1 about 5 (after the first install).
set -euo pipefail
cd "$(dirname "$0")/.."

settings=(QUICK SERVERS FIGURES RUNS IDLE_RUNS FILE_SIZE MANY_CLIENTS MANY_SIZE LOGIN_WORKERS LOGIN_DURATION
  SMALL_COUNT SMALL_SIZE IDLE_SESSIONS FTPBENCH FTPBENCH_CLIENTS FTPBENCH_SIZE FTPBENCH_TIMEOUT FIGURE_TIMEOUT
  MEM_FLOOR_MIB OUT FERRY_LOAD BENCH_CACHE PEERS_TLS_REUSE HOME_TMPFS SETTLE_SECS)
# The command as given, for the report: the settings taken from the environment, then the script.
command_line=""
for setting in "${settings[@]}"; do
  [ -n "${!setting+set}" ] && command_line+="$setting=$(printf '%q' "${!setting}") "
done
command_line+="bench/compare.sh"

if [ "${QUICK:-0}" = 1 ]; then
  FILE_SIZE=${FILE_SIZE:-256M}
  MANY_CLIENTS=${MANY_CLIENTS:-50}
  LOGIN_DURATION=${LOGIN_DURATION:-2s}
  SMALL_COUNT=${SMALL_COUNT:-300}
  IDLE_SESSIONS=${IDLE_SESSIONS:-200}
  FTPBENCH_CLIENTS=${FTPBENCH_CLIENTS:-20}
  SETTLE_SECS=${SETTLE_SECS:-10}
fi
SETTLE_SECS=${SETTLE_SECS:-70}
SERVERS=${SERVERS:-ferry vsftpd pure-ftpd proftpd pyftpdlib}
FIGURES=${FIGURES:-retr stor many-retr logins small idle retr-tls stor-tls}
RUNS=${RUNS:-3}
IDLE_RUNS=${IDLE_RUNS:-1}
FILE_SIZE=${FILE_SIZE:-1G}
MANY_CLIENTS=${MANY_CLIENTS:-200}
MANY_SIZE=${MANY_SIZE:-10M}
LOGIN_WORKERS=${LOGIN_WORKERS:-16}
LOGIN_DURATION=${LOGIN_DURATION:-5s}
SMALL_COUNT=${SMALL_COUNT:-2000}
SMALL_SIZE=${SMALL_SIZE:-4K}
IDLE_SESSIONS=${IDLE_SESSIONS:-1000 10000}
FTPBENCH=${FTPBENCH:-1}
FTPBENCH_CLIENTS=${FTPBENCH_CLIENTS:-50}
FTPBENCH_SIZE=${FTPBENCH_SIZE:-10M}
FTPBENCH_TIMEOUT=${FTPBENCH_TIMEOUT:-120}
FIGURE_TIMEOUT=${FIGURE_TIMEOUT:-900}
MEM_FLOOR_MIB=${MEM_FLOOR_MIB:-2048}
started=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-target/bench-results/compare-$started.txt}
read -r -a servers <<<"$SERVERS"

[ "$(id -u)" = 0 ] || { echo "compare: run as root (a system user for the peers, apt-get)" >&2; exit 1; }
# The generator holds a socket per session (10,000 idle ones, at most): the soft limit up to
# the hard one, which only CAP_SYS_RESOURCE could raise.
ulimit -n "$(ulimit -Hn)"

. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/peers.sh"
bench_setup compare curl openssl ss setpriv setsid ps pgrep timeout awk
if [ -n "${FERRY_LOAD:-}" ]; then
  load=$FERRY_LOAD
else
  cargo build --release --quiet -p loadgen --bin ferry-load
  load=$PWD/target/release/ferry-load
fi
"$load" bench --help >/dev/null 2>&1 || { echo "compare: $load has no bench subcommand" >&2; exit 1; }
peers_install
HOME_TMPFS=${HOME_TMPFS:-1}
home_fs="$(df -T "$home" | awk 'NR == 2 { print $2 }')"
unmount_home() { :; }
if [ "$HOME_TMPFS" = 1 ]; then
  mount -t tmpfs -o size=75%,mode=0755 ferry-bench-home "$home"
  # This VM's memory is slow the first time a page is touched (dd into a fresh tmpfs: ~350
  # MB/s, then 3-4 GB/s): touch it once, so the first server's uploads do not pay for it.
  dd if=/dev/zero of="$home/warm-up" bs=1M count=3072 status=none
  rm -f "$home/warm-up"
  home_fs=tmpfs
  unmount_home() { umount "$home" 2>/dev/null || true; }
fi
trap 'peer_stop; peers_unprepare; unmount_home; bench_cleanup' EXIT
peers_prepare bench
export FERRY_LOAD_PASSWORD=$password
# Each figure's key=value lines in results/SERVER.FIGURE; its output and errors in scratch/.
results=$work/results
mkdir -p "$results" "$work/scratch" "$(dirname "$OUT")"

# `ferry serve --login-cache-secs 0` makes every login pay argon2id: the first-login row.
first_login_flags=()
if "$ferry" serve --help | grep -q -- '--login-cache-secs'; then
  first_login_flags=(--login-cache-secs 0)
fi

# Bytes in a size with an optional K, M or G (binary) suffix.
to_bytes() {
  case $1 in
    *[kK]) echo $((${1%?} * 1024)) ;;
    *[mM]) echo $((${1%?} * 1024 * 1024)) ;;
    *[gG]) echo $((${1%?} * 1024 * 1024 * 1024)) ;;
    *) echo "$1" ;;
  esac
}

echo "compare: writing $FILE_SIZE and $MANY_SIZE of random bytes into $home" >&2
head -c "$(to_bytes "$FILE_SIZE")" /dev/urandom >"$home/big.bin"
head -c "$(to_bytes "$MANY_SIZE")" /dev/urandom >"$home/many.bin"
chown "$peer_uid:$peer_gid" "$home/big.bin" "$home/many.bin"

# Leaves the home as every figure finds it: the two files to download, nothing else, nothing
# still to write back from an earlier upload.
reset_home() {
  find "$home" -mindepth 1 -maxdepth 1 ! -name big.bin ! -name many.bin -exec rm -rf {} +
  sync
}

# Kills process $1 (the generator's `timeout`) when the machine's available memory falls
# under MEM_FLOOR_MIB, and says so in file $2.
memory_guard() {
  local available
  while sleep 0.5; do
    available=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
    if [ "$available" -lt "$MEM_FLOOR_MIB" ]; then
      echo "stopped: the machine had $available MiB available (MEM_FLOOR_MIB=$MEM_FLOOR_MIB)" >"$2"
      kill "$1" 2>/dev/null
      return 0
    fi
  done
}

# Waits (at most 70 s: TIME_WAIT lasts 60) until the machine holds fewer than 1,000 TCP
# connections in TIME_WAIT. A figure that makes many connections (ferry's repeated logins:
# ~150,000 in 15 s) leaves them behind, and they slowed the next figure's data connections by
# more than 3x (small files: 1,658 RETR/s right after ferry's logins, 6,600-7,400 once they were
# gone), so the server that happened to run next paid for them.
settle_time_wait() {
  local waited=0
  while [ "$(ss -tan state time-wait | wc -l)" -gt 1000 ] && [ "$waited" -lt "$SETTLE_SECS" ]; do
    sleep 2
    waited=$((waited + 2))
  done
}

# run_figure SERVER NAME FIGURE-ARGS...: starts SERVER afresh, runs `ferry-load bench
# FIGURE-ARGS...` against it, stops it. Its key=value lines go to $results/SERVER.NAME, or
# error=REASON when it failed.
run_figure() {
  local name=$1 figure=$2
  shift 2
  local out=$results/$name.$figure scratch=$work/scratch/$name.$figure flags=()
  [ "$figure" = logins-first ] && flags=("${first_login_flags[@]}")
  settle_time_wait
  local began=$SECONDS
  reset_home
  peer_start "$name" "${flags[@]}"
  local command=("$load" bench "$@" --addr "$addr" --user bench --password-env FERRY_LOAD_PASSWORD
    --server-pid "$server")
  # A figure's own --runs (idle's) wins.
  [[ " $* " == *" --runs "* ]] || command+=(--runs "$RUNS")
  echo "$name $figure: ${command[*]}" >>"$results/commands"
  timeout -k 10 "$FIGURE_TIMEOUT" "${command[@]}" >"$scratch.out" 2>"$scratch.err" &
  local generator=$! rc=0
  memory_guard "$generator" "$scratch.guard" &
  local guard=$!
  wait "$generator" || rc=$?
  kill "$guard" 2>/dev/null || true
  wait "$guard" 2>/dev/null || true
  if [ "$rc" = 0 ] && [ -s "$scratch.out" ]; then
    cp "$scratch.out" "$out"
  else
    local reason
    if [ -s "$scratch.guard" ]; then
      reason=$(cat "$scratch.guard")
    elif [ "$rc" = 124 ]; then
      reason="timed out after ${FIGURE_TIMEOUT}s"
    else
      reason=$(grep -v '^ *$' "$scratch.err" | tail -n 1)
      reason=${reason:-ferry-load exited with $rc}
    fi
    kill -0 "$server" 2>/dev/null || reason+="; the server had exited: $(tail -n 1 "$(peer_log)")"
    if grep -q -i 'too many open files' "$(peer_log)"; then
      reason+="; the server ran out of file descriptors (ulimit -n $peers_nofile)"
    fi
    echo "error=$reason" >"$out"
  fi
  peer_stop
  cp "$(peer_log)" "$scratch.server.log"
  echo "compare: $name $figure ($((SECONDS - began)) s): $(grep -v '_runs=' "$out" | tr '\n' ' ')" >&2
}

# The figure $3 of server $1's run $2 ("" when absent).
fig() {
  local file=$results/$1.$2
  [ -f "$file" ] || return 0
  sed -n "s/^$3=//p" "$file" | head -n 1
}

echo "compare: raw loopback TCP" >&2
echo "raw-tcp: $load bench raw-tcp --size $FILE_SIZE --runs $RUNS" >>"$results/commands"
"$load" bench raw-tcp --size "$FILE_SIZE" --runs "$RUNS" >"$results/raw.raw-tcp"
raw=$(fig raw raw-tcp raw_tcp_mbps)

# figure NAME: measures figure NAME on every server, one after the other.
figure() {
  local name sessions
  for name in "${servers[@]}"; do
    case $1 in
      retr) run_figure "$name" retr retr --path big.bin --size "$FILE_SIZE" ;;
      stor) run_figure "$name" stor stor --path stor.bin --size "$FILE_SIZE" ;;
      many-retr)
        run_figure "$name" many-retr many-retr --clients "$MANY_CLIENTS" --path many.bin --size "$MANY_SIZE"
        ;;
      logins)
        if [ "$name" = ferry ] && [ "${#first_login_flags[@]}" -gt 0 ]; then
          run_figure "$name" logins-first logins --workers "$LOGIN_WORKERS" --duration "$LOGIN_DURATION"
        fi
        run_figure "$name" logins logins --workers "$LOGIN_WORKERS" --duration "$LOGIN_DURATION"
        # The peers cache no logins: their first logins are their logins.
        [ "$name" = ferry ] || cp "$results/$name.logins" "$results/$name.logins-first"
        ;;
      small) run_figure "$name" small small --count "$SMALL_COUNT" --size "$SMALL_SIZE" --dir small ;;
      idle)
        for sessions in $IDLE_SESSIONS; do
          run_figure "$name" "idle-$sessions" idle --sessions "$sessions" --runs "$IDLE_RUNS"
        done
        ;;
      retr-tls) run_figure "$name" retr-tls retr --tls --path big.bin --size "$FILE_SIZE" ;;
      stor-tls) run_figure "$name" stor-tls stor --tls --path stor.bin --size "$FILE_SIZE" ;;
      *)
        echo "compare: unknown figure $1 (FIGURES: retr stor many-retr logins small idle retr-tls stor-tls)" >&2
        exit 1
        ;;
    esac
  done
}
for figure_name in $FIGURES; do
  figure "$figure_name"
done

# pyftpdlib's benchmark script, from the source distribution of the pyftpdlib installed.
ftpbench_script=""
if [ "$FTPBENCH" = 1 ]; then
  ftpbench_script=$BENCH_CACHE/ftpbench-$(peer_version pyftpdlib)
  if [ ! -f "$ftpbench_script" ]; then
    sdist=$BENCH_CACHE/sdist
    if "$BENCH_CACHE/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
      -d "$sdist" "pyftpdlib==$(peer_version pyftpdlib)" >/dev/null 2>&1 &&
      tar -xzf "$sdist/pyftpdlib-$(peer_version pyftpdlib).tar.gz" -O --wildcards '*/scripts/ftpbench' \
        >"$ftpbench_script.tmp" 2>/dev/null; then
      mv "$ftpbench_script.tmp" "$ftpbench_script"
    else
      rm -f "$ftpbench_script.tmp"
      ftpbench_script=""
      echo "compare: pip could not fetch pyftpdlib's source distribution: no ftpbench cross-check" >&2
    fi
  fi
fi

# ftpbench SERVER: ftpbench's upload, download and concurrence benchmarks on a fresh SERVER;
# its figures to $results/SERVER.ftpbench as key=value (MiB/s for the 1 s windows, seconds for
# the concurrent phases), and error=REASON for each benchmark that failed or timed out.
run_ftpbench() {
  local name=$1 out=$results/$1.ftpbench scratch=$work/scratch/$1.ftpbench benchmark rc
  reset_home
  peer_start "$name"
  : >"$scratch.txt"
  : >"$scratch.errors"
  for benchmark in upload download concurrence; do
    local command=("$BENCH_CACHE/venv/bin/python" -u "$ftpbench_script" -u bench -p "$password"
      -H 127.0.0.1 -P "${addr#*:}" -b "$benchmark" -n "$FTPBENCH_CLIENTS" -s "$FTPBENCH_SIZE")
    echo "$name ftpbench: ${command[*]/$password/\$password}" >>"$results/commands"
    # ftpbench works in its current directory on the server: the login directory.
    rc=0
    timeout -k 10 "$FTPBENCH_TIMEOUT" "${command[@]}" >"$scratch.$benchmark" 2>"$scratch.err" || rc=$?
    cat "$scratch.$benchmark" >>"$scratch.txt"
    if [ "$rc" = 124 ]; then
      echo "error=$benchmark timed out after ${FTPBENCH_TIMEOUT}s, after: $(grep -v '^ *$' "$scratch.$benchmark" |
        tail -n 1 | tr -s ' ')" >>"$scratch.errors"
    elif [ "$rc" != 0 ]; then
      echo "error=$benchmark failed: $(grep -v '^ *$' "$scratch.err" | tail -n 1)" >>"$scratch.errors"
    fi
  done
  awk '
    /^STOR \(client -> server\)/ { print "stor_mib_s=" $(NF - 1) }
    /^RETR \(server -> client\)/ { print "retr_mib_s=" $(NF - 1) }
    /concurrent clients \(connect, login\)/ { print "connect_s=" $(NF - 1) }
    /concurrent clients \(RETR/ { print "multi_retr_s=" $(NF - 1) }
    /concurrent clients \(STOR/ { print "multi_stor_s=" $(NF - 1) }' "$scratch.txt" >"$out"
  cat "$scratch.errors" >>"$out"
  peer_stop
  cp "$(peer_log)" "$scratch.server.log"
  echo "compare: $name ftpbench: $(tr '\n' ' ' <"$out")" >&2
}
if [ -n "$ftpbench_script" ]; then
  for name in "${servers[@]}"; do
    run_ftpbench "$name"
  done
fi

# A number in a width of 10: fewer decimals as it grows.
format_number() {
  awk -v v="$1" 'BEGIN {
    a = v < 0 ? -v : v
    if (a >= 1000) printf "%.0f", v; else if (a >= 100) printf "%.1f", v; else printf "%.2f", v
  }'
}

# The value of a row for server $1: figure $2's key $3, divided by figure $4's key $5 when
# given (figure "raw": the raw loopback TCP figure). Prints "" when a figure is missing.
row_value() {
  local value divisor
  value=$(fig "$1" "$2" "$3")
  [ -n "$value" ] || return 0
  if [ -n "${4:-}" ]; then
    if [ "$4" = raw ]; then divisor=$raw; else divisor=$(fig "$1" "$4" "$5"); fi
    [ -n "$divisor" ] || return 0
    awk -v v="$value" -v d="$divisor" 'BEGIN { if (d > 0) printf "%.4f", v / d }'
  else
    echo "$value"
  fi
}

# table ROW...: one line per row "LABEL|higher-or-lower|FIGURE|KEY[|FIGURE|KEY]"; a column
# per server, then ferry's ratio to the best peer. Failures go to $notes.
notes=()
table() {
  local spec label better figure key dfigure dkey name value ferry_value best ratio
  printf '%-44s %-6s' "" better
  for name in "${servers[@]}"; do printf ' %10s' "$name"; done
  printf ' %10s\n' "ferry/best"
  for spec in "$@"; do
    IFS='|' read -r label better figure key dfigure dkey <<<"$spec"
    # A figure that was not run (FIGURES) has no row.
    compgen -G "$results/*.$figure" >/dev/null || continue
    printf '%-44s %-6s' "$label" "$better"
    ferry_value="" best=""
    for name in "${servers[@]}"; do
      value=$(row_value "$name" "$figure" "$key" "$dfigure" "$dkey")
      if [ -n "$value" ]; then
        printf ' %10s' "$(format_number "$value")"
        if [ "$name" = ferry ]; then
          ferry_value=$value
        elif [ -z "$best" ] || awk -v v="$value" -v b="$best" -v h="$better" \
          'BEGIN { exit !((h == "higher") ? v > b : v < b) }'; then
          best=$value
        fi
      elif [ -f "$results/$name.$figure" ]; then
        printf ' %10s' n/a
      else
        printf ' %10s' -
      fi
    done
    ratio=-
    if [ -n "$ferry_value" ] && [ -n "$best" ]; then
      ratio=$(awk -v f="$ferry_value" -v b="$best" -v h="$better" 'BEGIN {
        r = (h == "higher") ? (b > 0 ? f / b : 0) : (f > 0 ? b / f : 0)
        if (r == 0) print "-"; else printf "%.2f", r }')
    fi
    printf ' %10s\n' "$ratio"
  done
}

# The reasons of the figures that failed, once each.
collect_notes() {
  local file reason
  for file in "$results"/*.*; do
    # The peers' first-login figures are copies of their login figures.
    case $(basename "$file") in ferry.*) ;; *.logins-first) continue ;; esac
    while IFS= read -r reason; do
      notes+=("$(basename "$file"): $reason")
    done < <(sed -n 's/^error=//p' "$file")
  done
  for sessions in $IDLE_SESSIONS; do
    for name in "${servers[@]}"; do
      local alive
      alive=$(fig "$name" "idle-$sessions" idle_sessions_alive)
      if [ -n "$alive" ] && awk -v a="$alive" -v n="$sessions" 'BEGIN { exit !(a < n) }'; then
        notes+=("$name.idle-$sessions: only $alive of $sessions sessions still answered NOOP")
      fi
    done
  done
}

rows=(
  "a. RETR $FILE_SIZE, MB/s|higher|retr|retr_mbps"
  "a. STOR $FILE_SIZE, MB/s|higher|stor|stor_mbps"
  "a. RETR / raw loopback TCP|higher|retr|retr_mbps|raw|"
  "a. STOR / raw loopback TCP|higher|stor|stor_mbps|raw|"
  "b. $MANY_CLIENTS x RETR $MANY_SIZE at once, MB/s|higher|many-retr|many_retr_mbps"
  "b. $MANY_CLIENTS x RETR $MANY_SIZE, p50 ms|lower|many-retr|many_retr_p50_ms"
  "b. $MANY_CLIENTS x RETR $MANY_SIZE, p99 ms|lower|many-retr|many_retr_p99_ms"
)
if [ "${#first_login_flags[@]}" -gt 0 ]; then
  rows+=("c. logins/s, $LOGIN_WORKERS workers, first login|higher|logins-first|logins_per_s"
    "c. login p99 ms, first login|lower|logins-first|login_p99_ms")
fi
rows+=(
  "c. logins/s, $LOGIN_WORKERS workers, repeated|higher|logins|logins_per_s"
  "c. login p99 ms, repeated|lower|logins|login_p99_ms"
  "d. $SMALL_COUNT x $SMALL_SIZE STOR, files/s|higher|small|small_stor_files_per_s"
  "d. $SMALL_COUNT x $SMALL_SIZE RETR, files/s|higher|small|small_retr_files_per_s"
  "d. $SMALL_COUNT x $SMALL_SIZE LIST, files/s|higher|small|small_list_files_per_s"
)
for sessions in $IDLE_SESSIONS; do
  rows+=("e. KiB per idle session, $sessions sessions|lower|idle-$sessions|idle_kib_per_session")
done
rows+=(
  "f. server CPU s per GiB sent (RETR)|lower|retr|retr_cpu_s_per_gib"
  "f. server CPU s per GiB received (STOR)|lower|stor|stor_cpu_s_per_gib"
  "g. FTPS RETR $FILE_SIZE, MB/s|higher|retr-tls|retr_mbps"
  "g. FTPS STOR $FILE_SIZE, MB/s|higher|stor-tls|stor_mbps"
  "g. FTPS RETR / raw loopback TCP|higher|retr-tls|retr_mbps|raw|"
  "g. FTPS STOR / raw loopback TCP|higher|stor-tls|stor_mbps|raw|"
  "g. FTPS RETR / plain RETR|higher|retr-tls|retr_mbps|retr|retr_mbps"
  "g. FTPS server CPU s per GiB sent|lower|retr-tls|retr_cpu_s_per_gib"
  "g. FTPS server CPU s per GiB received|lower|stor-tls|stor_cpu_s_per_gib"
)
ftpbench_rows=(
  "STOR, 1 s window, MiB/s|higher|ftpbench|stor_mib_s"
  "RETR, 1 s window, MiB/s|higher|ftpbench|retr_mib_s"
  "$FTPBENCH_CLIENTS clients connect + login, s|lower|ftpbench|connect_s"
  "$FTPBENCH_CLIENTS clients RETR $FTPBENCH_SIZE at once, s|lower|ftpbench|multi_retr_s"
  "$FTPBENCH_CLIENTS clients STOR $FTPBENCH_SIZE at once, s|lower|ftpbench|multi_stor_s"
)

report() {
  local name
  echo "ferry against other FTP servers on loopback, $(date '+%Y-%m-%d %H:%M')"
  local cpu memory
  cpu=$(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -n 1)
  memory=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
  echo "machine: $(nproc) CPUs ($cpu), $memory, Linux $(uname -r)"
  echo "command: $command_line   ($((SECONDS / 60)) min $((SECONDS % 60)) s)"
  echo "versions:"
  for name in "${servers[@]}"; do
    case $name in
      ferry) echo "  ferry      $(peer_version ferry) ($(git describe --always --dirty 2>/dev/null || echo '?'))" ;;
      pyftpdlib)
        echo "  pyftpdlib  $(peer_version pyftpdlib) (PyPI, with pyOpenSSL" \
          "$("$BENCH_CACHE/venv/bin/python" -c 'import OpenSSL; print(OpenSSL.__version__)');" \
          "Python $("$BENCH_CACHE/venv/bin/python" -c 'import platform; print(platform.python_version())'))"
        ;;
      *) printf '  %-10s %s (Debian package)\n' "$name" "$(peer_version "$name")" ;;
    esac
  done
  echo "raw loopback TCP, one stream: $(format_number "$raw") MB/s; $RUNS run(s) per figure" \
    "($IDLE_RUNS of idle), the median"
  echo
  table "${rows[@]}"
  echo
  echo "ferry/best: ferry's value / the best peer's where higher is better, the best peer's / ferry's"
  echo "where lower is better: above 1.00 ferry wins. MB = 10^6 bytes. n/a: failed (see notes); -: not run."
  echo "Logins: ferry verifies argon2id (its login cache off for \"first login\", on for \"repeated\");"
  echo "the peers verify an MD5-crypt hash (vsftpd through PAM, pure-ftpd puredb, proftpd AuthUserFile,"
  echo "pyftpdlib crypt(3) in its authorizer). pyftpdlib serves from one process (its asynchronous"
  echo "FTPServer); vsftpd forks two processes per session, pure-ftpd and proftpd one. FTPS data"
  echo "connections must resume the control connection's TLS session on ferry, vsftpd and proftpd"
  echo "(PEERS_TLS_REUSE=${PEERS_TLS_REUSE}). Open files per process: at most $(ulimit -Hn) (the hard limit)."
  echo "The shared home is on $home_fs (HOME_TMPFS=$HOME_TMPFS)."
  if [ -n "$ftpbench_script" ]; then
    echo
    echo "Cross-check: pyftpdlib $(peer_version pyftpdlib)'s scripts/ftpbench -b upload, download," \
      "concurrence -n $FTPBENCH_CLIENTS -s $FTPBENCH_SIZE"
    echo "(Python ftplib client, 8 KiB buffers: it measures the client as much as the server; MiB = 2^20 bytes)"
    table "${ftpbench_rows[@]}"
  fi
  collect_notes
  if [ "${#notes[@]}" -gt 0 ]; then
    echo
    echo "notes:"
    printf '  %s\n' "${notes[@]}"
  fi
}

report | tee "$OUT"
{
  echo
  echo "commands (the password in \$FERRY_LOAD_PASSWORD):"
  sed 's/^/  /' "$results/commands"
} >>"$OUT"
# Every figure's key=value lines (each run's values in KEY_runs); scratch/: the generator's
# output and errors, and the server's log, of each figure.
kept=${OUT%.txt}.d
mkdir -p "$kept"
cp "$results"/* "$kept"/
cp -r "$work/scratch" "$kept/"
echo "compare: report in $OUT, figures and logs in $kept" >&2
