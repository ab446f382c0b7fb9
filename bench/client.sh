#!/usr/bin/env bash
# Client throughput: the `ferry` client against the reference clients, both downloading from
# one `ferry serve` on loopback, run in alternation:
#   ferry get              vs curl                    one big file
#   ferry get --segments 4 vs lftp pget -n 4          the same over four connections
#   ferry mirror --parallel 4 vs lftp mirror --parallel=4   many small files into an empty dir
# ferry verifies every transfer against the server's HASH by default and the references do not,
# so each ferry row also runs with --no-verify.
# Prints the median wall time of several runs of each (the whole command: connect, login,
# transfer, verification), and the ratio ferry / reference (below 1: ferry is faster).
#
# Usage: bench/client.sh
#   SIZE_MIB=N   big file size in MiB (default 1024)
#   FILES=N      number of 4 KiB files (default 2000)
#   RUNS=N       runs of each (default 5)
#   QUICK=1      a quick look: 128 MiB, 500 files, 3 runs (SIZE_MIB, FILES and RUNS still win)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${QUICK:-0}" = 1 ]; then
  SIZE_MIB=${SIZE_MIB:-128}
  FILES=${FILES:-500}
  RUNS=${RUNS:-3}
fi
SIZE_MIB=${SIZE_MIB:-1024}
FILES=${FILES:-2000}
RUNS=${RUNS:-5}

. "$(dirname "$0")/common.sh"
bench_setup client curl lftp cmp diff split awk
# lftp reads no rc files or history of the machine.
export HOME=$work/home
mkdir -p "$HOME"
mkdir -p "$home/small"
echo "writing ${SIZE_MIB} MiB of random bytes and $FILES files of 4 KiB to $home" >&2
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$home/big.bin"
head -c $((FILES * 4096)) /dev/urandom | split -b 4096 -a 6 -d - "$home/small/f"

bench_start_server
url=ftp://bench:$password@$addr
out=$work/out

# ftp:use-abor off: pget ends its segments early, and ferry serve answers an ABOR sent with
# Telnet urgent data after such a cut only once the next command arrives, which would leave lftp
# waiting for net:timeout now and then; closing the data connection instead measures the client.
lftp_run() {
  lftp --norc -c "set ftp:ssl-allow no; set ftp:use-abor no; set net:max-retries 1; \
    set xfer:clobber on; set cmd:fail-exit yes; open -u bench,$password ftp://$addr; $1"
}

# The commands compared; each writes into $out, which is emptied before every run.
ferry_get() { "$ferry" get "$url/big.bin" "$out/big.bin"; }
ferry_get_no_verify() { "$ferry" get --no-verify "$url/big.bin" "$out/big.bin"; }
curl_get() { curl --silent --show-error -o "$out/big.bin" "$url/big.bin"; }
ferry_segments() { "$ferry" get --segments 4 "$url/big.bin" "$out/big.bin"; }
ferry_segments_no_verify() { "$ferry" get --segments 4 --no-verify "$url/big.bin" "$out/big.bin"; }
lftp_pget() { lftp_run "pget -n 4 big.bin -o '$out/big.bin'"; }
ferry_mirror() { "$ferry" mirror --parallel 4 "$url/small/" "$out/small"; }
ferry_mirror_no_verify() { "$ferry" mirror --parallel 4 --no-verify "$url/small/" "$out/small"; }
lftp_mirror() { lftp_run "mirror --parallel=4 small '$out/small'"; }

fresh() {
  rm -rf "$out"
  mkdir -p "$out"
}

# Checks what the last run left in $out.
check_big() { cmp -s "$out/big.bin" "$home/big.bin" || { echo "client: $1: wrong bytes" >&2; exit 1; }; }
check_small() { diff -r -q "$out/small" "$home/small" >/dev/null || { echo "client: $1: trees differ" >&2; exit 1; }; }

# Thousands of loopback connections leave their sockets in TIME_WAIT for a minute; with too
# many, the next run finds no free port (the server answers 425 to EPSV and PASV). Wait for them
# to drain, so that every run starts with the ports it needs.
settle() {
  command -v ss >/dev/null || return 0
  while [ "$(ss -tan state time-wait | wc -l)" -gt 8000 ]; do
    sleep 1
  done
}

# Wall time of one run of function $1 in seconds; its output goes to $work/$1.log.
time_one() {
  fresh
  settle
  local start end
  start=$(date +%s.%N)
  if ! "$1" >"$work/$1.log" 2>&1; then
    echo "client: $1 failed:" >&2
    cat "$work/$1.log" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.4f\n", b - a }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

results=$work/results
: >"$results"
# Runs ferry function $2 and reference function $3 in alternation, checking the result with
# $4; appends "label ferry_median reference_median reference_name" to the results.
compare() {
  local label=$1 ours=$2 theirs=$3 check=$4 name=$5 t
  : >"$work/ours" ; : >"$work/theirs"
  for _ in $(seq "$RUNS"); do
    t=$(time_one "$ours"); "$check" "$ours"; echo "$t" >>"$work/ours"
    t=$(time_one "$theirs"); "$check" "$theirs"; echo "$t" >>"$work/theirs"
  done
  printf '%s\t%s\t%s\t%s\n' "$label" "$(median <"$work/ours")" "$(median <"$work/theirs")" "$name" >>"$results"
  echo "  done: $label" >&2
}

# Everything served from the page cache.
cat "$home/big.bin" >/dev/null
echo "measuring on $addr, $RUNS runs each" >&2
compare "get ${SIZE_MIB} MiB" ferry_get curl_get check_big curl
compare "get --no-verify" ferry_get_no_verify curl_get check_big curl
compare "get --segments 4" ferry_segments lftp_pget check_big "lftp pget -n 4"
compare "get --segments 4 --no-verify" ferry_segments_no_verify lftp_pget check_big "lftp pget -n 4"
compare "mirror --parallel 4, $FILES x 4 KiB" ferry_mirror lftp_mirror check_small "lftp mirror --parallel=4"
compare "mirror --parallel 4 --no-verify" ferry_mirror_no_verify lftp_mirror check_small "lftp mirror --parallel=4"

echo
echo "ferry client vs reference clients, median wall time of $RUNS runs, loopback"
awk -F '\t' -v mib="$SIZE_MIB" '
  BEGIN { printf "%-34s %9s %9s %7s  %s\n", "workload", "ferry s", "ref s", "ratio", "reference" }
  {
    rate = ($1 ~ /mirror/) ? "" : sprintf("  (%.0f vs %.0f MiB/s)", mib / $2, mib / $3)
    printf "%-34s %9.3f %9.3f %7.2f  %s%s\n", $1, $2, $3, $2 / $3, $4, rate
  }' "$results"
echo "ratio = ferry / reference: below 1 is faster than the reference"
