//! The server's side of a run, read from /proc/<pid> (Linux): resident memory, open file
//! descriptors and threads, sampled before, during and after the load, to tell what a
//! session costs and whether everything is given back when the sessions end; and for the
//! bench, the CPU time and proportional memory of the server's whole process tree.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stats::Figures;

/// Resource use of the server at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// VmRSS in KiB.
    pub rss_kib: u64,
    /// Entries of /proc/<pid>/fd.
    pub fds: u64,
    /// Entries of /proc/<pid>/task.
    pub threads: u64,
}

impl Usage {
    /// The larger of each figure.
    pub fn max(self, other: Usage) -> Usage {
        Usage {
            rss_kib: self.rss_kib.max(other.rss_kib),
            fds: self.fds.max(other.fds),
            threads: self.threads.max(other.threads),
        }
    }

    /// `server_<key>_rss_kib`, `server_<key>_fds`, `server_<key>_threads`.
    fn report(self, key: &str, figures: &mut Figures) {
        figures.push(&format!("server_{key}_rss_kib"), self.rss_kib);
        figures.push(&format!("server_{key}_fds"), self.fds);
        figures.push(&format!("server_{key}_threads"), self.threads);
    }
}

/// The running server process.
#[derive(Debug, Clone)]
pub struct Server {
    proc_dir: PathBuf,
}

impl Server {
    /// The server with process id `pid`; fails when /proc does not show it.
    pub fn new(pid: u32) -> io::Result<Server> {
        let server = Server {
            proc_dir: PathBuf::from(format!("/proc/{pid}")),
        };
        server.sample()?;
        Ok(server)
    }

    /// Its resource use now.
    pub fn sample(&self) -> io::Result<Usage> {
        let status = std::fs::read_to_string(self.proc_dir.join("status"))?;
        Ok(Usage {
            rss_kib: vm_rss_kib(&status).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/<pid>/status")
            })?,
            fds: count_entries(&self.proc_dir.join("fd"))?,
            threads: count_entries(&self.proc_dir.join("task"))?,
        })
    }
}

/// Server figures of a run: before the load, while it ran, the highest seen, and after.
#[derive(Debug, Clone, Copy)]
pub struct Usages {
    /// Before any session was opened.
    pub before: Usage,
    /// With all sessions open, at the end of the measured window.
    pub during: Usage,
    /// The highest of each figure over the whole run.
    pub peak: Usage,
    /// After the sessions left and the server settled.
    pub after: Usage,
    /// How long settling took.
    pub settle: Duration,
    /// Whether the run was stopped for passing the memory limit, when there was one.
    pub rss_limit_hit: Option<bool>,
}

impl Usages {
    /// All figures, plus `rss_per_session_kib` for `sessions` open during the window.
    pub fn report(&self, sessions: usize, figures: &mut Figures) {
        self.before.report("before", figures);
        self.during.report("during", figures);
        self.peak.report("peak", figures);
        self.after.report("after", figures);
        figures.push(
            "server_settle_s",
            format!("{:.1}", self.settle.as_secs_f64()),
        );
        if sessions > 0 {
            let grown = self.during.rss_kib.saturating_sub(self.before.rss_kib);
            figures.push(
                "rss_per_session_kib",
                format!("{:.1}", grown as f64 / sessions as f64),
            );
        }
        if let Some(hit) = self.rss_limit_hit {
            figures.push("rss_limit_hit", u8::from(hit));
        }
    }
}

/// Stops a run whose server grows past a memory limit, before it takes the machine down.
#[derive(Debug, Clone)]
pub struct RssGuard {
    /// The limit on VmRSS, in KiB.
    pub limit_kib: u64,
    /// Cancelled when the limit is passed: the run's stop signal.
    pub abort: CancellationToken,
}

/// The server watched through a run: its baseline, its peak (sampled twice a second), the
/// memory guard, and its settling once the sessions have left.
#[derive(Debug)]
pub struct Watch {
    server: Server,
    before: Usage,
    guard: Option<RssGuard>,
    /// Ends the peak sampling.
    done: CancellationToken,
    peak: JoinHandle<Usage>,
}

impl Watch {
    /// Takes the baseline and starts sampling.
    pub fn start(server: Server, guard: Option<RssGuard>) -> io::Result<Watch> {
        let before = server.sample()?;
        let done = CancellationToken::new();
        let peak = tokio::spawn(watch_peak(server.clone(), done.clone(), guard.clone()));
        Ok(Watch {
            server,
            before,
            guard,
            done,
            peak,
        })
    }

    /// The server's use now.
    pub fn sample(&self) -> io::Result<Usage> {
        self.server.sample()
    }

    /// Once the sessions have left: waits up to `limit` for the fds and threads to fall
    /// back to the baseline, then stops sampling and returns the figures.
    pub async fn finish(self, during: Usage, limit: Duration) -> io::Result<Usages> {
        let start = Instant::now();
        let after = loop {
            let now = self.server.sample()?;
            let settled = now.fds <= self.before.fds && now.threads <= self.before.threads;
            if settled || start.elapsed() >= limit {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let settle = start.elapsed();
        self.done.cancel();
        let peak = self.peak.await.unwrap_or_default().max(during).max(after);
        Ok(Usages {
            before: self.before,
            during,
            peak,
            after,
            settle,
            rss_limit_hit: self.guard.map(|g| peak.rss_kib > g.limit_kib),
        })
    }
}

/// Samples the server twice a second until `done`, keeping the highest figures, and
/// cancels the guard's token when the memory passes its limit.
async fn watch_peak(server: Server, done: CancellationToken, guard: Option<RssGuard>) -> Usage {
    let mut peak = Usage::default();
    loop {
        if let Ok(now) = server.sample() {
            peak = peak.max(now);
            let tripped = guard
                .as_ref()
                .filter(|g| now.rss_kib > g.limit_kib && !g.abort.is_cancelled());
            if let Some(guard) = tripped {
                eprintln!(
                    "  the server's RSS is {} MiB, over the limit of {} MiB: stopping the run",
                    now.rss_kib / 1024,
                    guard.limit_kib / 1024
                );
                guard.abort.cancel();
            }
        }
        tokio::select! {
            _ = done.cancelled() => return peak,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The `VmRSS:   1234 kB` line of /proc/<pid>/status.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn count_entries(dir: &std::path::Path) -> io::Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// The soft limit on open files of this process, from /proc/self/limits.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Raises this process's limit on open files to `wanted`, the hard limit too when that is
/// lower (which takes root).
pub fn raise_open_files_limit(wanted: u64) -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: Some(wanted),
        maximum: now.maximum.map(|hard| hard.max(wanted)),
    };
    setrlimit(Resource::Nofile, raised).map_err(io::Error::from)
}

/// A server and all its live descendants: forking servers (vsftpd, proftpd, pure-ftpd) run
/// each session in processes of their own, and those count as the server's too.
#[derive(Debug, Clone, Copy)]
pub struct ProcessTree {
    root: u32,
}

/// What /proc/<pid>/stat tells about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks: its own CPU time and that of the
    /// children it has reaped.
    cpu_ticks: u64,
}

impl ProcessTree {
    /// The tree under `root`; fails when /proc does not show it.
    pub fn new(root: u32) -> io::Result<ProcessTree> {
        proc_stat(root)?;
        Ok(ProcessTree { root })
    }

    /// CPU time used so far by the live members, plus what each of them has reaped: a
    /// session process that ended is counted through its parent.
    pub fn cpu_ticks(&self) -> io::Result<u64> {
        Ok(self.members()?.iter().map(|(_, stat)| stat.cpu_ticks).sum())
    }

    /// Proportional set size summed over the members (KiB): pages that forked processes
    /// share are split between them instead of counted once per process.
    pub fn pss_kib(&self) -> io::Result<u64> {
        let mut total = 0;
        for (pid, _) in self.members()? {
            match std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                Ok(rollup) => total += rollup_pss_kib(&rollup).unwrap_or(0),
                // A member that ended since the listing no longer holds memory.
                Err(_) if pid != self.root => {}
                Err(err) => return Err(err),
            }
        }
        Ok(total)
    }

    /// The root and its live descendants with their /proc stat figures.
    fn members(&self) -> io::Result<Vec<(u32, ProcStat)>> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let pid = entry?
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            // Processes come and go while /proc is read; the root's absence is caught below.
            if let Some((pid, Ok(stat))) = pid.map(|pid| (pid, proc_stat(pid))) {
                all.push((pid, stat));
            }
        }
        let root = all
            .iter()
            .find(|(pid, _)| *pid == self.root)
            .copied()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no process {}", self.root))
            })?;
        let mut members = vec![root];
        let mut next = 0;
        while let Some(&(parent, _)) = members.get(next) {
            members.extend(all.iter().filter(|(_, stat)| stat.ppid == parent).copied());
            next += 1;
        }
        Ok(members)
    }
}

fn proc_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad /proc/{pid}/stat")))
}

/// `pid (comm) state ppid ... utime stime cutime cstime ...`; comm may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| fields.get(n)?.parse::<u64>().ok();
    // Fields 4 (ppid) and 14 to 17 (utime, stime, cutime, cstime) of proc(5), counted
    // here from field 3.
    let cpu_ticks = field(11)? + field(12)? + field(13)? + field(14)?;
    Some(ProcStat {
        ppid: u32::try_from(field(1)?).ok()?,
        cpu_ticks,
    })
}

/// The `Pss:   1234 kB` line of /proc/<pid>/smaps_rollup.
fn rollup_pss_kib(rollup: &str) -> Option<u64> {
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second, the unit of /proc's CPU times: `getconf CLK_TCK`, or 100 (the
/// value on Linux) when that cannot be run; sysconf itself would take unsafe code.
pub fn clock_ticks_per_second() -> u64 {
    let asked = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok());
    asked.unwrap_or_else(|| {
        eprintln!("  `getconf CLK_TCK` failed: assuming 100 clock ticks per second");
        100
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_comes_from_the_vm_rss_line() {
        let status = "Name:\tferry\nVmHWM:\t  9000 kB\nVmRSS:\t  8123 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(8123));
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "42 (a) b) (c) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 5 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                ppid: 7,
                cpu_ticks: 11 + 22 + 33 + 44
            })
        );
        assert_eq!(parse_stat("42 (a) S 7"), None);
    }

    #[test]
    fn pss_comes_from_the_pss_line() {
        let rollup = "00400000-7ffd [rollup]\nRss:  900 kB\nPss:  512 kB\nPss_Anon: 300 kB\n";
        assert_eq!(rollup_pss_kib(rollup), Some(512));
    }

    #[test]
    fn this_process_tree_can_be_sampled() {
        let tree = ProcessTree::new(std::process::id()).unwrap();
        assert!(tree.pss_kib().unwrap() > 0);
        tree.cpu_ticks().unwrap();
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let server = Server::new(std::process::id()).unwrap();
        let usage = server.sample().unwrap();
        assert!(usage.rss_kib > 0 && usage.fds > 0 && usage.threads > 0);
        assert!(open_files_limit().is_some());
    }
}
