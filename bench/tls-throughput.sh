#!/usr/bin/env bash
# FTPS throughput: curl downloading and uploading one file from/to `ferry serve --tls` on
# loopback, over plain FTP and over explicit FTPS (AUTH TLS, PROT P, the certificate pinned),
# in alternation. Prints the median of several runs of each, in MB/s (10^6 bytes per second,
# wall time of the whole curl run: connect, login, handshakes and transfer), and the ratio
# FTPS / plain.
#
# Usage: bench/tls-throughput.sh
#   SIZE_MIB=N   file size in MiB (default 1024)
#   RUNS=N       runs of each (default 5)
#   QUICK=1      a quick look: 128 MiB, 3 runs (SIZE_MIB and RUNS still win)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${QUICK:-0}" = 1 ]; then
  SIZE_MIB=${SIZE_MIB:-128}
  RUNS=${RUNS:-3}
fi
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-5}

. "$(dirname "$0")/common.sh"
bench_setup tls-throughput curl cmp awk
file=$home/bench.bin
size=$((SIZE_MIB * 1024 * 1024))
echo "writing ${SIZE_MIB} MiB of random bytes to $file" >&2
head -c "$size" /dev/urandom >"$file"
# The local copy curl uploads from, outside the served home.
src=$work/upload.bin
cp "$file" "$src"

bench_start_server --tls
cert=$(sed -n 's/^TLS certificate //p' "$work/serve.log" | head -n 1)
[ -f "$cert" ] || { echo "tls-throughput: no certificate announced" >&2; cat "$work/serve.log" >&2; exit 1; }
fingerprint=$(sed -n 's/^ *SHA-256 fingerprint //p' "$work/serve.log" | head -n 1)

# Warm the page cache for the first download and the first upload alike.
cat "$file" "$src" >/dev/null

plain=()
ftps=(--ssl-reqd --cacert "$cert")

# One curl run; prints its wall time in seconds. $1: down or up; the rest: TLS options.
transfer() {
  local direction=$1
  shift
  local out
  case $direction in
    down)
      out=$(curl --silent --show-error --max-time 1200 "$@" -u "bench:$password" \
        -o /dev/null -w '%{size_download} %{time_total}' "ftp://$addr/bench.bin")
      ;;
    up)
      out=$(curl --silent --show-error --max-time 1200 "$@" -u "bench:$password" \
        -T "$src" -w '%{size_upload} %{time_total}' "ftp://$addr/upload.bin")
      ;;
  esac
  local bytes=${out% *}
  [ "$bytes" = "$size" ] || { echo "tls-throughput: $direction moved $bytes of $size bytes" >&2; exit 1; }
  echo "${out#* }"
}

declare -A times
for run in $(seq "$RUNS"); do
  for direction in down up; do
    for mode in plain ftps; do
      if [ "$mode" = plain ]; then
        t=$(transfer "$direction" "${plain[@]}")
      else
        t=$(transfer "$direction" "${ftps[@]}")
      fi
      times[$direction-$mode]+="$t "
      if [ "$direction" = up ]; then
        cmp -s "$src" "$home/upload.bin" || { echo "tls-throughput: the $mode upload differs" >&2; exit 1; }
      fi
      echo "run $run: $direction $mode ${t}s" >&2
    done
  done
done

median() {
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "ferry $(git describe --always --dirty 2>/dev/null || echo '?'), $(nproc) CPUs, curl $(curl --version | head -n 1 | cut -d' ' -f2)"
echo "file: ${SIZE_MIB} MiB on loopback, $RUNS runs each, median of curl's wall time"
echo "FTPS: explicit AUTH TLS, PROT P, certificate pinned (SHA-256 ${fingerprint:0:23}...)"
printf '%-10s %12s %12s %12s %12s %14s\n' "" "plain s" "plain MB/s" "FTPS s" "FTPS MB/s" "FTPS / plain"
for direction in down up; do
  p=$(median "${times[$direction-plain]}")
  f=$(median "${times[$direction-ftps]}")
  awk -v d="$direction" -v p="$p" -v f="$f" -v size="$size" 'BEGIN {
    name = (d == "down") ? "download" : "upload"
    printf "%-10s %12.3f %12.1f %12.3f %12.1f %14.2f\n", name, p, size / p / 1e6, f, size / f / 1e6, (size / f) / (size / p)
  }'
done
