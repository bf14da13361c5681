//! `p2psip eval`: reproduce every result of the paper and the project's own as figures.
//!
//! Runs a fixed, seeded set of experiments on the simulator, the trust arithmetic and the
//! E&A locality code (`experiments`), turns them into figures (`figures`, drawn by
//! `plot`) and writes `DIR/report.html` (self-contained: SVG inline, no scripts, no
//! external fetches; figure 8 from a file of real demo runs, `scaling`), `DIR/results.json` (parameters, seeds and raw series) and every figure
//! as `DIR/figN-*.svg` and `.png` (`report`).

mod experiments;
mod figures;
mod plot;
mod report;
mod results;
mod scaling;

use crate::LabError;
use experiments::{Mode, Plan, Step};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use results::{Results, Timing, load_demo};
use std::path::PathBuf;
use std::time::Instant;

/// Options for `p2psip eval`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  p2psip eval --quick --out eval-out && xdg-open eval-out/report.html"
)]
pub struct Args {
    /// Small sizes: about a minute in a release build.
    #[arg(long, conflicts_with = "tiny")]
    quick: bool,
    /// Smallest sizes, seconds even in a debug build (for the test suite; numbers are noisy).
    #[arg(long, hide = true)]
    tiny: bool,
    /// Output directory (created if missing; existing report files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Seed of every experiment.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A demo report (JSON) with real setup delays to add to figure 3: `srd_ms` (array of
    /// milliseconds) or `srd_ms_p50` and `srd_ms_p99`; optional `mode`.
    #[arg(long, value_name = "FILE")]
    demo_report: Option<PathBuf>,
    /// A scaling file (`scripts/scaling --out FILE`: real demo runs at growing sizes) for
    /// figure 8; without it the figure says how to make one.
    #[arg(long, value_name = "FILE")]
    scaling: Option<PathBuf>,
}

/// Run `p2psip eval`.
pub fn run(args: Args) -> Result<(), LabError> {
    let wall = Instant::now();
    let mode = if args.tiny {
        Mode::Tiny
    } else if args.quick {
        Mode::Quick
    } else {
        Mode::Full
    };
    let demo = args.demo_report.as_deref().map(load_demo).transpose()?;
    let scaling = args.scaling.as_deref().map(scaling::load).transpose()?;
    std::fs::create_dir_all(&args.out)
        .map_err(LabError::io("creating the output directory", &args.out))?;
    let plan = Plan::new(mode, args.seed);
    let bar = ProgressBar::with_draw_target(Some(plan.steps()), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("eval {bar:40} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut step = |label: String| {
        bar.inc(1);
        bar.set_message(label);
    };
    let mut runs = TimedRuns {
        plan: &plan,
        step: &mut step,
        timings: Vec::new(),
    };
    let paper = runs.run("paper", experiments::paper)?;
    let lookups = runs.run("lookups", experiments::lookups)?;
    let locality = runs.run("locality", experiments::locality)?;
    let cache = runs.run("cache", experiments::cache)?;
    let trust = runs.run("trust", experiments::trust)?;
    let attack = runs.run("attack", experiments::attack)?;
    let timings = runs.timings;
    bar.finish_and_clear();
    let results = Results {
        tool: "p2psip eval",
        version: env!("CARGO_PKG_VERSION"),
        plan,
        lookups,
        attack,
        cache,
        locality,
        trust,
        paper,
        demo,
        scaling,
        timings,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    let written = report::write(&args.out, &results)?;
    say!(
        "p2psip eval ({:?}, seed {}): {} figures in {:.1} s",
        mode,
        args.seed,
        written,
        wall.elapsed().as_secs_f64()
    );
    say!("{}", args.out.join("report.html").display());
    Ok(())
}

/// The experiments of one evaluation, run one after another under one plan and progress
/// bar, each one's wall time noted.
struct TimedRuns<'a> {
    plan: &'a Plan,
    step: Step<'a>,
    timings: Vec<Timing>,
}

impl TimedRuns<'_> {
    /// Runs `experiment` and notes its wall time under `name` (nothing when it fails).
    fn run<T>(
        &mut self,
        name: &'static str,
        experiment: fn(&Plan, Step<'_>) -> Result<T, LabError>,
    ) -> Result<T, LabError> {
        let t = Instant::now();
        let out = experiment(self.plan, &mut *self.step)?;
        self.timings.push(Timing {
            experiment: name,
            wall_s: t.elapsed().as_secs_f64(),
        });
        Ok(out)
    }
}
