//! Chord (Stoica et al.): successor list, fingers, stabilization, recursive lookups.

mod config;
mod contacts;
mod fingers;
mod node;
mod span;

pub use config::ChordConfig;
pub use node::{ChordNode, Event, LookupFailure, MAX_BOOTSTRAPS, Transmit};
pub use span::{RingArc, RingSpan};
