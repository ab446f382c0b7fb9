#!/usr/bin/env bash
# The servers bench/compare.sh measures ferry against, each run from the packages a distribution
# ships, on its own loopback port, with one bench user and one home for all. Sourced, after
# bench/common.sh's bench_setup (it uses ferry, data, work, home, password):
#   peers_install             Debian's vsftpd, pure-ftpd and proftpd (+ mod_tls) unpacked into
#                             $BENCH_CACHE (they conflict as packages: none is installed), the
#                             libraries they lack installed; pyftpdlib + pyopenssl in a venv
#   peers_prepare USER        the system user USER (home $home, password $password as an
#                             MD5-crypt hash), a self-signed certificate, each peer's user file;
#                             both wait for any other run to finish first (peers_lock)
#   peer_start NAME [FLAGS]   starts NAME (ferry vsftpd pure-ftpd proftpd pyftpdlib) in the
#                             foreground of its own session, explicit FTPS offered; sets server
#                             (its root pid: sessions are its descendants) and addr; FLAGS go
#                             to `ferry serve` only
#   peer_stop                 stops it and everything it forked; waits for its port to be free
#   peer_version NAME         the version of NAME's package
#   peer_log                  the current server's log file
# Every server but ferry logs in with an MD5-crypt hash (microseconds); ferry with argon2id.
# The root daemons (vsftpd, pure-ftpd, proftpd) drop to USER for sessions; ferry and pyftpdlib
# run as USER. Each gets the control port PEERS_BASE_PORT + i and the passive ports
# PEERS_PASV_BASE + 4000 * i (4,000 of them; pure-ftpd excepted, see peer_start), i its place
# in peers_all.
#
# Run as a command, bench/peers.sh check starts each server and has curl log in, list, upload
# and download over plain FTP and explicit FTPS.

BENCH_CACHE=${BENCH_CACHE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/bench-peers}
PEERS_BASE_PORT=${PEERS_BASE_PORT:-2130}
PEERS_PASV_BASE=${PEERS_PASV_BASE:-10000}
# YES: vsftpd and proftpd refuse FTPS data connections that do not resume the control
# connection's TLS session, as ferry does by default; NO lets them through.
PEERS_TLS_REUSE=${PEERS_TLS_REUSE:-YES}
peers_all=(ferry vsftpd pure-ftpd proftpd pyftpdlib)
peers_debs=(vsftpd pure-ftpd proftpd-core proftpd-mod-crypto)
peers_conf=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/peers
# A PAM service of our own for vsftpd: the package's /etc/pam.d/vsftpd is not installed.
peers_pam_service='ferry-bench-vsftpd'
# Descriptors for 10,000 sessions: as many as the hard limit allows (raising it takes
# CAP_SYS_RESOURCE, which a sandbox may not grant).
peers_nofile=${PEERS_NOFILE:-$(ulimit -Hn)}

peers_fail() {
  echo "peers: $*" >&2
  exit 1
}

# The unpacked package $1's root directory.
peer_root() { echo "$BENCH_CACHE/root/$1"; }
peer_deb() { compgen -G "$BENCH_CACHE/debs/$1_*.deb" | head -n 1; }

# One run at a time: every run uses the same ports and the same system user, and two on one
# machine would measure each other. Waits for the run that holds the lock.
peers_lock() {
  [ -z "${peers_lock_fd:-}" ] || return 0
  mkdir -p "$BENCH_CACHE"
  exec {peers_lock_fd}>>"$BENCH_CACHE/lock"
  if ! flock -n "$peers_lock_fd"; then
    echo "peers: another bench/compare.sh or bench/peers.sh check is running; waiting for it" >&2
    flock "$peers_lock_fd"
  fi
}

peers_install() {
  peers_lock
  mkdir -p "$BENCH_CACHE/debs" "$BENCH_CACHE/root"
  local pkg missing=()
  for pkg in "${peers_debs[@]}"; do
    [ -n "$(peer_deb "$pkg")" ] || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "peers: downloading ${missing[*]}" >&2
    # apt-get download writes to the current directory, as _apt when it can: it cannot here.
    (cd "$BENCH_CACHE/debs" && apt-get download "${missing[@]}" 2>/dev/null) ||
      { apt-get update -qq && (cd "$BENCH_CACHE/debs" && apt-get download "${missing[@]}" 2>/dev/null); } ||
      peers_fail "apt-get download ${missing[*]} failed"
  fi
  local libs=() dep
  for pkg in "${peers_debs[@]}"; do
    [ -d "$(peer_root "$pkg")/usr" ] || dpkg-deb -x "$(peer_deb "$pkg")" "$(peer_root "$pkg")"
    # The libraries among the package's dependencies (the first of each alternative).
    for dep in $(dpkg-deb -f "$(peer_deb "$pkg")" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g' |
      grep '^lib'); do
      dpkg-query -W -f '${Status}\n' "$dep" 2>/dev/null | grep -q '^install ok installed' || libs+=("$dep")
    done
  done
  if [ "${#libs[@]}" -gt 0 ]; then
    echo "peers: installing the libraries the peers need: ${libs[*]}" >&2
    apt-get install -y -qq --no-install-recommends "${libs[@]}" >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${libs[@]}" >/dev/null; } ||
      peers_fail "apt-get install ${libs[*]} failed"
  fi
  local bin
  for bin in "$(peer_root vsftpd)/usr/sbin/vsftpd" "$(peer_root pure-ftpd)/usr/sbin/pure-ftpd" \
    "$(peer_root proftpd-core)/usr/sbin/proftpd" "$(peer_root proftpd-mod-crypto)/usr/lib/proftpd/mod_tls.so"; do
    [ -e "$bin" ] || peers_fail "$bin is missing from its package"
    if ldd "$bin" | grep -q 'not found'; then
      peers_fail "$bin lacks libraries: $(ldd "$bin" | grep 'not found' | tr -s ' \t' ' ')"
    fi
  done
  # mod_tls loads from one module directory with the core's modules.
  local moddir=$BENCH_CACHE/root/proftpd-modules
  if [ ! -e "$moddir/mod_tls.so" ]; then
    mkdir -p "$moddir"
    cp "$(peer_root proftpd-core)"/usr/lib/proftpd/*.so "$(peer_root proftpd-mod-crypto)"/usr/lib/proftpd/*.so \
      "$moddir"/
  fi
  # pyftpdlib runs as the bench user, who cannot reach a Python under /root: a venv of the
  # system's interpreter, in the cache.
  local venv=$BENCH_CACHE/venv
  if ! "$venv/bin/python" -c 'import pyftpdlib, OpenSSL' 2>/dev/null; then
    echo "peers: installing pyftpdlib and pyopenssl into $venv" >&2
    /usr/bin/python3 -m venv "$venv" || peers_fail "python3 -m venv failed (apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pyftpdlib pyopenssl ||
      peers_fail "pip install pyftpdlib pyopenssl failed"
  fi
  chmod -R a+rX "$BENCH_CACHE"
}

peer_version() {
  case $1 in
    ferry) "$ferry" --version | awk '{ print $2 }' ;;
    vsftpd | pure-ftpd) dpkg-deb -f "$(peer_deb "$1")" Version ;;
    proftpd) dpkg-deb -f "$(peer_deb proftpd-core)" Version ;;
    pyftpdlib) "$BENCH_CACHE/venv/bin/python" -c 'import pyftpdlib; print(pyftpdlib.__ver__)' ;;
  esac
}

# The place of peer $1 in peers_all.
peer_index() {
  local i
  for i in "${!peers_all[@]}"; do
    [ "${peers_all[$i]}" = "$1" ] && { echo "$i"; return 0; }
  done
  peers_fail "unknown server $1 (one of ${peers_all[*]})"
}
peer_port() { echo $((PEERS_BASE_PORT + $(peer_index "$1"))); }
peer_pasv() {
  local low=$((PEERS_PASV_BASE + 4000 * $(peer_index "$1")))
  echo "$low $((low + 3999))"
}

peers_prepare() {
  peer_user=$1
  peers_lock
  peers_dir=$work/peers
  mkdir -p "$peers_dir"
  # Every server's user (bench, or nobody for the daemons' unprivileged parts) walks this path.
  chmod 755 "$work" "$peers_dir"
  peer_hash=$(printf '%s\n' "$password" | openssl passwd -1 -stdin)
  local marker="ferry bench peers"
  if id "$peer_user" >/dev/null 2>&1; then
    [ "$(getent passwd "$peer_user" | cut -d: -f5)" = "$marker" ] ||
      peers_fail "a system user $peer_user exists that bench/peers.sh did not create"
    usermod -p "$peer_hash" -d "$home" "$peer_user"
  else
    useradd -M -U -c "$marker" -s /usr/sbin/nologin -d "$home" -p "$peer_hash" "$peer_user"
  fi
  peer_uid=$(id -u "$peer_user")
  peer_gid=$(id -g "$peer_user")
  # ferry runs as the bench user too: it reads and updates its data directory.
  chown -R "$peer_uid:$peer_gid" "$data"
  printf '%s\n' 'auth required pam_unix.so' 'account required pam_unix.so' 'session required pam_permit.so' \
    >"/etc/pam.d/$peers_pam_service"

  # One self-signed certificate for all, readable by the servers that run as the bench user.
  cert=$peers_dir/cert.pem
  key=$peers_dir/key.pem
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$key" -out "$cert" 2>/dev/null ||
    peers_fail "openssl could not make a certificate"
  chgrp "$peer_gid" "$key"
  chmod 640 "$key"

  # pure-ftpd: pure-pw writes the line (argon2id, about 2 s a login here), we put in the hash.
  local pure=$peers_dir/pure-ftpd
  mkdir -p "$pure"
  rm -f "$pure/pureftpd.passwd"
  printf '%s\n%s\n' "$password" "$password" |
    "$(peer_root pure-ftpd)/usr/bin/pure-pw" useradd "$peer_user" -f "$pure/pureftpd.passwd" \
      -u "$peer_uid" -g "$peer_gid" -d "$home" >/dev/null
  awk -F: -v OFS=: -v hash="$peer_hash" '{ $2 = hash; print }' "$pure/pureftpd.passwd" >"$pure/passwd.tmp"
  mv "$pure/passwd.tmp" "$pure/pureftpd.passwd"
  "$(peer_root pure-ftpd)/usr/bin/pure-pw" mkdb "$pure/pureftpd.pdb" -f "$pure/pureftpd.passwd" ||
    peers_fail "pure-pw mkdb failed"

  # proftpd: AuthUserFile and AuthGroupFile in passwd and group format.
  local pro=$peers_dir/proftpd
  mkdir -p "$pro"
  echo "$peer_user:$peer_hash:$peer_uid:$peer_gid::$home:/bin/sh" >"$pro/proftpd.passwd"
  echo "$peer_user:x:$peer_gid:" >"$pro/proftpd.group"
  chmod 600 "$pro/proftpd.passwd"

  # vsftpd's chroot for its unprivileged process: empty, owned by root.
  mkdir -p "$peers_dir/vsftpd/empty"
  chmod 755 "$peers_dir/vsftpd/empty"
}

# Removes the system user and the PAM service (what peers_prepare left outside $work), unless
# another run has taken the user over since (its password hash is not this run's).
peers_unprepare() {
  [ -n "${peer_user:-}" ] || return 0
  [ "$(getent shadow "$peer_user" | cut -d: -f2)" = "$peer_hash" ] || return 0
  userdel "$peer_user" 2>/dev/null || true
  rm -f "/etc/pam.d/$peers_pam_service"
}

# Template $1 with this server's values, into $2.
peer_template() {
  local pasv reuse_comment="# "
  [ "$PEERS_TLS_REUSE" = YES ] || reuse_comment=""
  read -r -a pasv <<<"$(peer_pasv "$peer_name")"
  sed -e "s|@PORT@|$peer_port_now|g" -e "s|@PASV_MIN@|${pasv[0]}|g" -e "s|@PASV_MAX@|${pasv[1]}|g" \
    -e "s|@RUN@|$peer_run|g" -e "s|@CERT@|$cert|g" -e "s|@KEY@|$key|g" \
    -e "s|@PAM_SERVICE@|$peers_pam_service|g" -e "s|@MODDIR@|$BENCH_CACHE/root/proftpd-modules|g" \
    -e "s|@TLS_REUSE@|$PEERS_TLS_REUSE|g" -e "s|@TLS_REUSE_COMMENT@|$reuse_comment|g" "$1" >"$2"
}

peer_log() { echo "$peer_run/server.log"; }

# Runs a server in place of this (sub)shell, leading its own session and process group (setsid
# execs in place: the pid stays), so that peer_stop finds whatever it forks; with the
# descriptor limit raised and without the lock, which must go when the run does.
peer_exec() {
  [ -z "${peers_lock_fd:-}" ] || exec {peers_lock_fd}>&-
  ulimit -n "$peers_nofile"
  exec setsid "$@"
}

peer_start() {
  peer_name=$1
  shift
  peer_port_now=$(peer_port "$peer_name")
  peer_run=$peers_dir/$peer_name
  mkdir -p "$peer_run"
  local pasv
  read -r -a pasv <<<"$(peer_pasv "$peer_name")"
  if ss -Hltn "sport = :$peer_port_now" | grep -q .; then
    peers_fail "port $peer_port_now is taken: $(ss -Hltnp "sport = :$peer_port_now")"
  fi
  case $peer_name in
    ferry)
      (peer_exec setpriv --reuid="$peer_uid" --regid="$peer_gid" --init-groups \
        "$ferry" serve --data "$data" --listen "127.0.0.1:$peer_port_now" --passive-ports "${pasv[0]}-${pasv[1]}" \
        --max-sessions 30000 --max-per-ip 30000 --idle-timeout 3600 \
        --tls --tls-cert "$cert" --tls-key "$key" "$@") >"$peer_run/server.log" 2>&1 &
      ;;
    vsftpd)
      peer_template "$peers_conf/vsftpd.conf" "$peer_run/vsftpd.conf"
      # vsftpd writes its startup errors ("500 OOPS") to descriptor 0, the socket under inetd.
      (peer_exec "$(peer_root vsftpd)/usr/sbin/vsftpd" "$peer_run/vsftpd.conf") \
        0>>"$peer_run/server.log" >>"$peer_run/server.log" 2>&1 &
      ;;
    pure-ftpd)
      # -E no anonymous, -H no reverse DNS, -A chroot, -c/-C sessions in all and per address,
      # -Y 1 TLS offered, -2 certificate and key, -I idle minutes, -f none no syslog. No -p:
      # pure-ftpd caps -c at half the passive range (2,000 for 4,000 ports), so it takes its
      # passive ports from the kernel's ephemeral range, which no other server's range is in.
      (peer_exec "$(peer_root pure-ftpd)/usr/sbin/pure-ftpd" -S "127.0.0.1,$peer_port_now" \
        -l "puredb:$peer_run/pureftpd.pdb" -E -H -A -c 30000 -C 30000 -Y 1 -2 "$cert,$key" -I 60 -f none) \
        >"$peer_run/server.log" 2>&1 &
      ;;
    proftpd)
      peer_template "$peers_conf/proftpd.conf" "$peer_run/proftpd.conf"
      (peer_exec "$(peer_root proftpd-core)/usr/sbin/proftpd" --nodaemon -c "$peer_run/proftpd.conf") \
        >"$peer_run/server.log" 2>&1 &
      ;;
    pyftpdlib)
      (export FTP_BENCH_HASH=$peer_hash &&
        peer_exec setpriv --reuid="$peer_uid" --regid="$peer_gid" --init-groups \
          "$BENCH_CACHE/venv/bin/python" "$peers_conf/pyftpdlib_serve.py" --port "$peer_port_now" \
          --home "$home" --user "$peer_user" --passive-ports "${pasv[0]}-${pasv[1]}" \
          --cert "$cert" --key "$key" --max-cons 30000) >"$peer_run/server.log" 2>&1 &
      ;;
    *) peers_fail "unknown server $peer_name" ;;
  esac
  server=$!
  addr=127.0.0.1:$peer_port_now
  for _ in $(seq 200); do
    ss -Hltn "sport = :$peer_port_now" | grep -q . && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.05
  done
  cat "$peer_run/server.log" >&2
  peer_stop
  peers_fail "$peer_name did not start"
}

# "PID START" for process $1 and its descendants, START its start time as ps prints it, so
# that a pid the kernel gave to another process since is not taken for one of them.
peer_tree() {
  ps -e -o pid=,ppid=,lstart= | awk -v root="$1" '
    { parent[$1] = $2; start[$1] = $3 " " $4 " " $5 " " $6 " " $7 }
    END {
      for (p in parent) {
        q = p
        while (q in parent && q != root && q > 1) q = parent[q]
        if (q == root) print p, start[p]
      }
    }'
}

# The pids of the processes of tree $1 (peer_tree's lines) still running.
peer_alive() {
  [ -n "$1" ] || return 0
  ps -e -o pid=,lstart= | awk '
    NR == FNR { want[$1] = $2 " " $3 " " $4 " " $5 " " $6; next }
    ($1 in want) && want[$1] == $2 " " $3 " " $4 " " $5 " " $6 { print $1 }' <(printf '%s\n' "$1") -
}

peer_stop() {
  [ -n "${server:-}" ] || return 0
  # vsftpd's sessions lead process groups of their own: the whole tree is signalled, and its
  # group. The root is this shell's child, unreaped until `wait`: its pid stays its own.
  local tree alive
  tree=$(peer_tree "$server")
  # shellcheck disable=SC2046
  kill -TERM -- "-$server" $(peer_alive "$tree") 2>/dev/null || true
  for _ in $(seq 100); do
    alive=$(peer_alive "$tree")
    [ -z "$alive" ] && break
    # A zombie root alone: everything else is gone.
    [ "$alive" = "$server" ] && [ "$(ps -o stat= -p "$server" | cut -c1)" = Z ] && break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  [ -z "$alive" ] || kill -KILL -- "-$server" $alive 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  for _ in $(seq 100); do
    [ -z "$(peer_alive "$tree")" ] && ! ss -Hltn "sport = :$peer_port_now" | grep -q . && break
    sleep 0.1
  done
  server=""
}

# bench/peers.sh check: every server logs in, lists, uploads and downloads, plain and FTPS.
peers_check() {
  local name mode url tls out=$work/check
  mkdir -p "$out"
  head -c 1048576 /dev/urandom >"$out/up.bin"
  for name in "$@"; do
    peer_start "$name"
    for mode in plain ftps; do
      tls=()
      [ "$mode" = ftps ] && tls=(--ssl-reqd --cacert "$cert")
      url=ftp://$peer_user:$password@$addr
      rm -f "$home/up-$mode.bin"
      if curl -sS --max-time 20 "${tls[@]}" -T "$out/up.bin" "$url/up-$mode.bin" &&
        curl -sS --max-time 20 "${tls[@]}" -o "$out/down.bin" "$url/up-$mode.bin" &&
        cmp -s "$out/up.bin" "$out/down.bin" &&
        curl -sS --max-time 20 "${tls[@]}" -l "$url/" | grep -qx "up-$mode.bin"; then
        echo "check: $name $(peer_version "$name") $mode: upload, download, list ok"
      else
        echo "check: $name $mode FAILED; its log:"
        cat "$(peer_log)"
      fi
    done
    peer_stop
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  case ${1:-} in
    check)
      shift
      . bench/common.sh
      bench_setup peers curl openssl ss setpriv setsid cmp
      peers_install
      trap 'peer_stop; peers_unprepare; bench_cleanup' EXIT
      peers_prepare bench
      if [ $# -gt 0 ]; then peers_check "$@"; else peers_check "${peers_all[@]}"; fi
      ;;
    install) peers_install ;;
    *) echo "usage: bench/peers.sh check [NAME...] | install   (sourced by bench/compare.sh)" >&2; exit 2 ;;
  esac
fi
