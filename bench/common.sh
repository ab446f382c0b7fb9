# Shared by the bench scripts (sourced, not run): a release ferry, a work directory removed on
# exit, a `bench` user with a random password, and a server on 127.0.0.1:0.
#   bench_setup NAME TOOL...      checks tools, builds; sets ferry, work, data, password, home
#   bench_start_server [FLAGS...] starts `ferry serve`; sets server, addr (log in $work/serve.log)
#   bench_stop_server             stops it (SIGTERM), so that the next scenario gets a fresh one

bench_setup() {
  bench_name=$1
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$bench_name: needs $tool" >&2; exit 1; }
  done
  cargo build --release --quiet -p ferry --bin ferry
  ferry=$PWD/target/release/ferry
  work=$(mktemp -d)
  server=""
  trap bench_cleanup EXIT
  data=$work/data
  password=bench$RANDOM$RANDOM
  local added
  added=$(printf '%s\n' "$password" | "$ferry" user add bench --data "$data" --password-stdin)
  home=${added#added user bench with home }
  case $home in
    /*) ;;
    *) home=$data/$home ;;
  esac
  mkdir -p "$home"
}

bench_cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}

bench_stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}

bench_start_server() {
  "$ferry" serve --data "$data" --listen 127.0.0.1:0 "$@" >"$work/serve.log" 2>&1 &
  server=$!
  addr=""
  for _ in $(seq 200); do
    addr=$(sed -n 's/^ferry serving FTP on //p' "$work/serve.log" | head -n 1)
    [ -n "$addr" ] && return 0
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "$bench_name: the server did not start" >&2
  cat "$work/serve.log" >&2
  exit 1
}
