#!/usr/bin/env bash
# What keeping accounts and quota usage in PostgreSQL costs against users.toml + DATA/quota/.
# Starts a throwaway PostgreSQL cluster on loopback (Debian's postgresql package, default
# durability: fsync on, synchronous commit), then two `ferry serve` processes in turn on the
# same account (same password, same home, a 100 GiB quota): the reference on users.toml and
# one with database_url. Measures each with ferry-load:
#   logins/s     repeated logins (the verified-login cache skips argon2id; a lookup remains)
#   first/s      logins with --login-cache-secs 0 (every login pays argon2id)
#   STOR MB/s    uploads of SIZE replacing one file, the quota charged as bytes arrive
# and prints both and the ratio postgres / users.toml (1.0 = no cost).
#
# Usage: bench/shared-store.sh
#   QUICK=1      shorter: 3 s of logins, 128M uploads
#   SIZE=256M    upload size (ferry-load syntax)
#   RUNS=3       runs of each figure (medians)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${QUICK:-0}" = 1 ]; then
  SIZE=${SIZE:-128M}
  DURATION=${DURATION:-3s}
fi
SIZE=${SIZE:-256M}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { echo "shared-store: needs PostgreSQL (apt-get install postgresql)" >&2; exit 1; }

. "$(dirname "$0")/common.sh"
bench_setup shared-store awk
cargo build --release --quiet -p loadgen --bin ferry-load
load=$PWD/target/release/ferry-load
"$ferry" user set bench --data "$data" --quota-bytes 100GiB >/dev/null

# The cluster, run as `postgres` when this runs as root (initdb and postgres refuse root).
pg=$work/pg
mkdir -p "$pg"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$pg"
  # The work directory is private (mode 0700): let postgres pass through, not list it.
  chmod o+x "$work"
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pgbin/initdb" -D "$pg/data" -U ferry -A trust -E UTF8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/log" -w \
  -o "-k $pg -h 127.0.0.1 -p $port" start >/dev/null
stop_pg() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -m fast stop >/dev/null 2>&1 || true; }
trap 'stop_pg; bench_cleanup' EXIT
"$pgbin/psql" -X -q -h 127.0.0.1 -p "$port" -U ferry -d postgres -c 'CREATE DATABASE bench'

# The same account in the database: same password and home, same quota.
pgdata=$work/data-pg
mkdir -p "$pgdata"
echo "database_url = \"postgres://ferry@127.0.0.1:$port/bench\"" >"$pgdata/ferry.toml"
printf '%s\n' "$password" |
  "$ferry" user add bench --data "$pgdata" --home "$home" --quota-bytes 100GiB --password-stdin >/dev/null

export FERRY_LOAD_PASSWORD=$password
# figure STORE FIGURE FLAGS...: runs a ferry-load figure against a fresh server on STORE
# (toml or pg); its key=value output goes to $work/STORE.FIGURE.
figure() {
  local store=$1 name=$2
  shift 2
  local dir=$data
  [ "$store" = pg ] && dir=$pgdata
  local serve_flags=()
  [ "$name" = first ] && serve_flags=(--login-cache-secs 0)
  data=$dir bench_start_server "${serve_flags[@]}"
  local figure=$1
  shift
  echo "$store $name: ferry-load bench $figure $* --runs $RUNS" >&2
  "$load" bench "$figure" "$@" --addr "$addr" --user bench --password-env FERRY_LOAD_PASSWORD \
    --server-pid "$server" --runs "$RUNS" >"$work/$store.$name"
  bench_stop_server
}
value() { sed -n "s/^$2=//p" "$work/$1" | head -n 1; }

for store in toml pg; do
  figure "$store" logins logins --duration "$DURATION"
  figure "$store" first logins --duration "$DURATION"
  figure "$store" stor stor --path bench.bin --size "$SIZE"
done

printf '%-26s %12s %12s %8s\n' figure users.toml postgres ratio
row() {
  local label=$1 name=$2 key=$3 a b
  a=$(value "toml.$name" "$key")
  b=$(value "pg.$name" "$key")
  printf '%-26s %12s %12s %8s\n' "$label" "$a" "$b" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }')"
}
row "repeated logins/s" logins logins_per_s
row "repeated login p99 ms" logins login_p99_ms
row "first logins/s" first logins_per_s
row "STOR MB/s ($SIZE)" stor stor_mbps
row "STOR CPU s/GiB" stor stor_cpu_s_per_gib
