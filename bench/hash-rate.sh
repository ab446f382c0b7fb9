#!/usr/bin/env bash
# HASH throughput: ferry's `HASH` (SHA-256) over a raw control connection against `sha256sum`
# on the same file, both from a warm page cache, on loopback. Prints the median of several runs
# of each and the ratio ferry / sha256sum (the target is at most 1.5).
#
# Usage: bench/hash-rate.sh
#   SIZE_MIB=N   file size in MiB (default 1024)
#   RUNS=N       runs of each (default 5)
#   QUICK=1      a quick look: 64 MiB, 3 runs (SIZE_MIB and RUNS still win)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${QUICK:-0}" = 1 ]; then
  SIZE_MIB=${SIZE_MIB:-64}
  RUNS=${RUNS:-3}
fi
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-5}

. "$(dirname "$0")/common.sh"
bench_setup hash-rate sha256sum python3
file=$home/bench.bin
echo "writing ${SIZE_MIB} MiB of random bytes to $file" >&2
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$file"

bench_start_server

FILE=$file ADDR=$addr PASSWORD=$password RUNS=$RUNS SIZE_MIB=$SIZE_MIB python3 - <<'EOF'
import ftplib, os, statistics, subprocess, time

file, runs, size_mib = os.environ['FILE'], int(os.environ['RUNS']), int(os.environ['SIZE_MIB'])
host, port = os.environ['ADDR'].rsplit(':', 1)

# Both sides read from the page cache, not the disk.
with open(file, 'rb') as f:
    while f.read(1 << 24):
        pass

def timed(run):
    times, results = [], set()
    for _ in range(runs):
        start = time.perf_counter()
        results.add(run())
        times.append(time.perf_counter() - start)
    assert len(results) == 1, f'runs disagree: {results}'
    return statistics.median(times), results.pop()

local_s, local = timed(lambda: subprocess.run(
    ['sha256sum', file], check=True, capture_output=True, text=True).stdout.split()[0])

ftp = ftplib.FTP()
ftp.connect(host, int(port), timeout=600)
ftp.login('bench', os.environ['PASSWORD'])
ftp.sendcmd('OPTS HASH SHA-256')
ferry_s, reply = timed(lambda: ftp.sendcmd('HASH bench.bin'))
ftp.quit()
remote = reply.split()[3]
assert remote == local, f'digests differ: ferry {remote}, sha256sum {local}'

print(f'file: {size_mib} MiB, {runs} runs each, median wall time')
print(f'{"":24} {"seconds":>8} {"MiB/s":>8}')
print(f'{"sha256sum":24} {local_s:8.3f} {size_mib / local_s:8.1f}')
print(f'{"ferry HASH (SHA-256)":24} {ferry_s:8.3f} {size_mib / ferry_s:8.1f}')
print(f'ratio ferry / sha256sum: {ferry_s / local_s:.2f} (target: at most 1.5)')
EOF
