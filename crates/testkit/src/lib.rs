//! A deterministic in-memory network for p2psip tests.
//!
//! One [`Network`] drives N sans-IO peers ([`overlay::secure::SecureNode`],
//! [`overlay::ChordNode`], or a test's own type implementing [`Peer`]) on a virtual clock,
//! the way quinn-proto's test `Pair` and str0m's netem do: no sockets, no threads, no wall
//! clock, and every random choice drawn from one seeded RNG, so a run repeats bit for bit.
//!
//! # Driving contract
//!
//! A [`Peer`] is an [`overlay::driver::Core`], the runtime's own driving contract, driven
//! the way the runtime drives it:
//!
//! - **Inputs.** A frame is handed to its receiver with `handle_message(now, from, msg)`,
//!   `from` being the sender as [`Peer::authenticate`] says its certificate would name it; a
//!   peer whose `poll_timeout()` has come gets `handle_timeout(now)`; a frame its
//!   [`Behaviour`] refuses to put on a full link is handed back with
//!   `handle_not_sent(now, to, msg)`, as the runtime does.
//! - **Drain until idle.** After every input the network drains the peer: `poll_transmit()`
//!   until `None` (each frame goes through the sender's behaviour, then onto the link), then
//!   `poll_event()` until `None` (events [`Peer::answer`] does not answer itself are logged
//!   in [`Network::events`]), and again
//!   until both are empty, since answering an event may queue frames.
//! - **Time only moves forward**, and only by jumping: [`Network::step_until`] takes the
//!   earliest of the next frame arrival and the earliest peer deadline, moves the clock there
//!   and handles that one input. Frames go first on a tie, then peers in Node-ID order.
//! - **Links.** Each frame is delayed by its link's latency and lost with its link's loss
//!   probability (drawn when it is sent). A frame between two sides of a partition, or to a
//!   peer that does not exist, is not delivered (checked when it arrives, so healing a
//!   partition does not resurrect frames lost while it stood).
//! - **Capture.** Every delivered frame is kept in [`Network::captured`], in delivery order,
//!   with the times it was sent and delivered, so a test asserts on what travelled.
//! - **Adversaries.** A peer may be given a [`Behaviour`]: it sees each frame the peer is
//!   about to send and decides what really leaves (nothing, a modified frame, a frame to
//!   another peer, several copies) — see [`adversary`]. A test can also act as a compromised
//!   peer directly with [`Network::deliver`].
//!
//! [`SecureRing`] builds the converged twelve-peer secure overlay most tests share, and a
//! network of [`overlay::secure::SecureNode`]s has shorthands for calls and SOS evidence
//! ([`Network::call`], [`Network::rang`], [`Network::reports_since`]). With the `sip`
//! feature, `sip` adds phones and front-ends on top; with the `sipp` feature, `sipp` runs real
//! SIPp processes against front-ends that listen on sockets; with the `enroll` feature,
//! `enroll_bodies` holds a live E&A for hostile request bodies and `https` a CA and a
//! loopback service certificate for services tests run over HTTPS; with the `rtpengine`
//! feature, `rtpengine` starts a real rtpengine on loopback.
#![warn(missing_docs, unreachable_pub)]

pub mod adversary;
mod call_report;
#[cfg(feature = "enroll")]
pub mod enroll_bodies;
#[cfg(feature = "enroll")]
pub mod https;
mod network;
mod peer;
pub mod ports;
#[cfg(feature = "postgres")]
pub mod postgres;
mod ring;
#[cfg(feature = "rtpengine")]
pub mod rtpengine;
mod secure;
#[cfg(feature = "sip")]
pub mod sip;
#[cfg(feature = "sipp")]
pub mod sipp;

mod tools;

pub use adversary::{Action, Behaviour};
pub use call_report::{COMPLETED_CALL_SIP, assert_completed_call_sip};
pub use network::{Frame, Link, Network};
pub use peer::Peer;
pub use ring::{
    SecureRing, UNIX_EPOCH_MS, assert_lookups_find_owners, converged_ring, demo_chord, fast_chord,
    owner, ring_whole, sparse_seed, spread_ids,
};
pub use secure::{CALL_RUN, TEST_INVITE};
pub use tools::{have_tool, tool_missing};
