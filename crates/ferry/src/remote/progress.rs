//! Progress bars (indicatif) on a terminal, nothing when stderr is piped or with --quiet.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where bars and notes go for one command.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Bars are drawn (stderr is a terminal and not --quiet).
    bars: bool,
    /// Notes such as "not verified" are printed (not --quiet).
    notes: bool,
    /// Holds several bars at once (mirror, segments).
    multi: MultiProgress,
}

impl Progress {
    /// Bars only on a terminal; nothing at all with `quiet`.
    pub fn new(quiet: bool) -> Self {
        let bars = !quiet && std::io::stderr().is_terminal();
        let target = if bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            bars,
            notes: !quiet,
            multi: MultiProgress::with_draw_target(target),
        }
    }

    /// A bar for one file of `total` bytes (a spinner with a byte count when unknown).
    pub fn file(&self, name: &str, total: Option<u64>) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(bytes_style()),
            None => ProgressBar::new_spinner().with_style(spinner_style()),
        };
        bar.set_message(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.multi.add(bar)
    }

    /// The bar for a whole batch of `total` bytes (mirror); the file bars added after it show
    /// below it.
    pub fn total(&self, total: u64) -> ProgressBar {
        let bar = self.file("total", Some(total));
        bar.set_style(total_style());
        bar
    }

    /// An error about one item of a batch, on stderr even with --quiet (the batch goes on).
    pub fn error(&self, text: &str) {
        if self.bars {
            self.multi.suspend(|| eprintln!("{text}"));
        } else {
            eprintln!("{text}");
        }
    }

    /// A note on stderr (suppressed by --quiet), printed above any bars.
    pub fn note(&self, text: &str) {
        if self.notes {
            if self.bars {
                let _ = self.multi.println(text);
            } else {
                eprintln!("{text}");
            }
        }
    }
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:30!} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg:30!} {spinner} {bytes:>10} {bytes_per_sec:>12}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn total_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:30!} [{bar:30.green/blue}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}
