//! `p2psip eval`: reproduce every result of the paper and the project's own as figures.
//!
//! Runs a fixed, seeded set of experiments on the simulator, the trust arithmetic and the
//! E&A locality code (`experiments`), turns them into figures (`figures`, drawn by
//! `plot`) and writes `DIR/report.html` (self-contained: SVG inline, no scripts, no
//! external fetches), `DIR/results.json` (parameters, seeds and raw series) and every figure
//! as `DIR/figN-*.svg` and `.png` (`report`).

mod experiments;
mod figures;
mod plot;
mod report;
mod results;

use crate::LabError;
use experiments::{Mode, Plan};
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
    let mut timings = Vec::new();
    let mut timed = |name: &'static str, t: Instant| {
        timings.push(Timing {
            experiment: name,
            wall_s: t.elapsed().as_secs_f64(),
        })
    };
    let t = Instant::now();
    let paper = experiments::paper(&plan, &mut step)?;
    timed("paper", t);
    let t = Instant::now();
    let lookups = experiments::lookups(&plan, &mut step)?;
    timed("lookups", t);
    let t = Instant::now();
    let locality = experiments::locality(&plan, &mut step)?;
    timed("locality", t);
    let t = Instant::now();
    let cache = experiments::cache(&plan, &mut step)?;
    timed("cache", t);
    let t = Instant::now();
    let trust = experiments::trust(&plan, &mut step)?;
    timed("trust", t);
    let t = Instant::now();
    let attack = experiments::attack(&plan, &mut step)?;
    timed("attack", t);
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
