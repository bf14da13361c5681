//! Sans-IO core of the p2psip overlay.
//!
//! Everything here is a pure state machine or a value type: no sockets, clocks, threads or
//! async. Time comes in as an argument and messages go out as values, so the same code runs
//! inside the discrete-event simulator (`sim`) and the tokio runtime (`net`).
#![warn(missing_docs, unreachable_pub)]

mod id;

pub use id::{IdError, IdSpace, NodeId};
