//! What a run counts and measures: failures by stage, latency percentiles, and the figures
//! printed at the end as `key=value` lines for the bench scripts.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where in a session something failed; each stage is counted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect or the 220 greeting.
    Connect,
    /// USER/PASS.
    Login,
    /// A NOOP without its 200 in time.
    Noop,
    /// A RETR or STOR that did not complete with a 2xx.
    Transfer,
    /// A transfer that completed with the wrong bytes or byte count.
    Mismatch,
    /// QUIT without its 221.
    Quit,
}

impl Stage {
    const ALL: [Stage; 6] = [
        Stage::Connect,
        Stage::Login,
        Stage::Noop,
        Stage::Transfer,
        Stage::Mismatch,
        Stage::Quit,
    ];

    /// The name in the figures (`errors_connect`, ...).
    fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Login => "login",
            Stage::Noop => "noop",
            Stage::Transfer => "transfer",
            Stage::Mismatch => "mismatch",
            Stage::Quit => "quit",
        }
    }
}

/// One failure: where, and what the server or the network said.
#[derive(Debug)]
pub struct Failure {
    /// Which counter it goes to.
    pub stage: Stage,
    /// For the first few, shown on stderr.
    pub detail: String,
}

impl Failure {
    /// A failure of `stage`.
    pub fn new(stage: Stage, detail: impl Into<String>) -> Failure {
        Failure {
            stage,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage.name(), self.detail)
    }
}

impl std::error::Error for Failure {}

/// How many failures are shown on stderr; the rest are only counted.
const SHOWN_FAILURES: u64 = 10;

/// Failure counts of a run, shared by all its sessions.
#[derive(Debug, Default)]
pub struct Errors {
    /// Indexed like `Stage::ALL`.
    counts: [AtomicU64; Stage::ALL.len()],
    /// All failures so far, to decide which ones are shown.
    total: AtomicU64,
    /// Serializes the shown messages so that lines do not interleave.
    shown: Mutex<()>,
}

impl Errors {
    /// Counts `failure` and shows it when it is among the first few.
    pub fn record(&self, failure: &Failure) {
        let index = Stage::ALL
            .iter()
            .position(|s| *s == failure.stage)
            .unwrap_or(0);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let seen = self.total.fetch_add(1, Ordering::Relaxed);
        if seen < SHOWN_FAILURES {
            let _guard = self.shown.lock();
            eprintln!("  error: {failure}");
        } else if seen == SHOWN_FAILURES {
            eprintln!("  (further errors are only counted)");
        }
    }

    /// All failures so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// `errors` and one `errors_<stage>` figure per stage.
    pub fn report(&self, figures: &mut Figures) {
        figures.push("errors", self.total());
        for (stage, count) in Stage::ALL.iter().zip(&self.counts) {
            figures.push(
                &format!("errors_{}", stage.name()),
                count.load(Ordering::Relaxed),
            );
        }
    }
}

/// Latency samples of one kind.
#[derive(Debug, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    /// Adds one sample.
    pub fn push(&mut self, sample: Duration) {
        self.samples.push(sample);
    }

    /// The nearest-rank `q` quantile (0.5 for the median), `None` without samples.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        self.samples.sort_unstable();
        percentile(&self.samples, q)
    }

    /// `<key>_count`, `<key>_p50_ms`, `<key>_p99_ms` and `<key>_max_ms`; no percentiles
    /// without samples.
    pub fn report(mut self, key: &str, figures: &mut Figures) {
        self.samples.sort_unstable();
        figures.push(&format!("{key}_count"), self.samples.len());
        for (name, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
            if let Some(value) = percentile(&self.samples, q) {
                figures.push(&format!("{key}_{name}_ms"), millis(value));
            }
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// Milliseconds with two decimals.
pub fn millis(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The figures of a run in the order measured, printed as `key=value` lines on stdout.
#[derive(Debug, Default)]
pub struct Figures {
    lines: Vec<(String, String)>,
}

impl Figures {
    /// Adds one figure.
    pub fn push(&mut self, key: &str, value: impl fmt::Display) {
        self.lines.push((key.to_string(), value.to_string()));
    }

    /// Prints all figures on stdout.
    pub fn print(&self) -> std::io::Result<()> {
        self.write(&mut std::io::stdout().lock())
    }

    /// Writes all figures to `out`.
    pub fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for (key, value) in &self.lines {
            writeln!(out, "{key}={value}")?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&ms(&[7]), 0.99), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn errors_are_counted_by_stage() {
        let errors = Errors::default();
        errors.record(&Failure::new(Stage::Login, "530"));
        errors.record(&Failure::new(Stage::Mismatch, "byte 3"));
        errors.record(&Failure::new(Stage::Mismatch, "byte 4"));
        let mut figures = Figures::default();
        errors.report(&mut figures);
        let get = |key: &str| {
            figures
                .lines
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("errors").as_deref(), Some("3"));
        assert_eq!(get("errors_login").as_deref(), Some("1"));
        assert_eq!(get("errors_mismatch").as_deref(), Some("2"));
        assert_eq!(get("errors_noop").as_deref(), Some("0"));
    }
}
