//! Sans-IO core of the p2psip overlay.
//!
//! Everything here is a pure state machine or a value type: no sockets, clocks, threads or
//! async. Time comes in as an argument ([`Time`]) and messages go out as values
//! ([`Transmit`]), so the same code runs inside the discrete-event simulator (`sim`) and the
//! tokio runtime (`net`).
//!
//! - [`IdSpace`] / [`NodeId`]: the m-bit identifier circle (m ≤ 128) and its arithmetic.
//! - [`ChordNode`]: one Chord peer — join, stabilize/notify, fix_fingers, check_predecessor,
//!   successor list, graceful leave with record hand-over, failure detection by timeout,
//!   recursive lookups that return the hop path.
//! - [`secure`]: the paper's layer on top — three layers, CSP/CSPG, PingRequest multicast
//!   with signed hop records, SOS-ranked routes, contact cache, plain-Chord baseline.
//! - [`wire`]: the messages and the framed codec (version, kind, length, postcard body).
//! - [`driver`]: the contract every driver (TLS runtime, test network) holds a core to.
#![warn(missing_docs, unreachable_pub)]

mod chord;
mod contact;
pub mod driver;
mod id;
pub mod secure;
mod time;
pub mod wire;

pub use chord::{
    ChordConfig, ChordNode, Event, LookupFailure, MAX_BOOTSTRAPS, RingArc, RingSpan, Transmit,
};
pub use contact::Contact;
pub use id::{IdError, IdSpace, NodeId};
pub use time::Time;
pub use wire::Message;
