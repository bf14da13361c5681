//! The paper's prototype and experiments, built on the same libraries a deployment uses.
//!
//! - [`demo`]: the paper's 512-peer prototype on real mutual-TLS peers in one process (E&A,
//!   SOS and STUN in-process, every peer a [`node::PeerCore`] on the [`net`] runtime), the
//!   malicious-peer scenario over plain Chord and the secure overlay, random calls, and the
//!   churn and soak runs;
//! - [`sim`]: the discrete-event simulator's front-end (lookups at scale, calls under attack,
//!   the paper's scenario);
//! - [`eval`]: every result as figures, written as a self-contained report;
//! - [`locality`]: lookup latency with location-aware vs SHA-1 Node-IDs.
//!
//! Each experiment has its `Args` (clap) and a `run(args)` entry; the `p2psip` binary lists
//! them as subcommands and drives them like any other user of these crates.

#![warn(missing_docs, unreachable_pub)]

// `say!`: the operator's lines on stdout (service::say!, which survives a closed stdout).
#[macro_use]
extern crate service;

pub mod demo;
mod error;
pub mod eval;
pub mod locality;
mod progress;
pub mod sim;

pub use error::{BoxError, LabError};
