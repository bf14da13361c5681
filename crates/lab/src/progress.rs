//! Progress bars on stderr (never on stdout, which carries the report), shown only to a
//! person at a terminal or once the work takes a while.

use indicatif::{ProgressBar, ProgressStyle};
use sim::Progress;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A bar of `len` steps labelled `msg`, hidden when `quiet` or when stderr is no terminal.
pub(crate) fn bar(len: u64, msg: &'static str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

/// A progress bar on stderr that appears only once the work has taken over a second.
pub(crate) struct LazyProgress {
    started: Instant,
    bar: Option<ProgressBar>,
    phase: &'static str,
}

impl LazyProgress {
    pub(crate) fn new() -> Self {
        LazyProgress {
            started: Instant::now(),
            bar: None,
            phase: "",
        }
    }

    pub(crate) fn update(&mut self, p: Progress) {
        if self.bar.is_none() && self.started.elapsed() > Duration::from_secs(1) {
            let bar = ProgressBar::new(p.total.max(1));
            bar.set_style(
                ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            if self.phase != p.phase {
                self.phase = p.phase;
                bar.set_message(p.phase);
                bar.set_length(p.total.max(1));
            }
            bar.set_position(p.done);
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Runs the simulated calls of `run` behind a [`LazyProgress`], as `lab sim` and the demo
/// both show them.
pub(crate) fn run_calls(run: &sim::CallRun) -> Result<sim::CallReport, sim::CallError> {
    let mut progress = LazyProgress::new();
    let report = sim::run_calls(run, &mut |done, total| {
        progress.update(Progress {
            phase: "calls",
            done,
            total,
        })
    })?;
    progress.finish();
    Ok(report)
}
