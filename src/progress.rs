//! Progress of long operations: a bar on a terminal, a plain line every few seconds otherwise
//! (logs and CI keep a readable record), both on stderr.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Bytes done of an operation, shown as it goes.
pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

/// Seconds between plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    /// Starts showing progress of `label`, out of `total` bytes when known.
    pub fn new(label: &'static str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (bar, template) = match total {
                Some(total) => (
                    ProgressBar::new(total),
                    "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
                ),
                None => (
                    ProgressBar::new_spinner(),
                    "{msg} {spinner} {bytes} ({bytes_per_sec})",
                ),
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            label,
            total,
            bar,
            last_line: Instant::now(),
        }
    }

    /// `done` bytes are done.
    pub fn set(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                match self.total {
                    Some(total) if total > 0 => eprintln!(
                        "{}: {} of {} ({}%)",
                        self.label,
                        HumanBytes(done),
                        HumanBytes(total),
                        done.saturating_mul(100) / total
                    ),
                    _ => eprintln!("{}: {}", self.label, HumanBytes(done)),
                }
            }
            None => {}
        }
    }

    /// Removes the bar (the caller prints the outcome).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
