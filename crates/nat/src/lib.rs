//! NAT traversal for p2psip: a STUN/TURN server and the client side peers use.
//!
//! Layer-2 peers sit behind NAT. They learn their server-reflexive address with a STUN
//! Binding ([`binding_request`], [`reflexive_address`]) and, when they cannot accept inbound
//! connections, keep a TURN relay ([`TurnClient`]) through which others reach them.
//!
//! # Design
//!
//! The protocol work is done by sans-IO state machines from the `stun-proto`,
//! `turn-server-proto` and `turn-client-proto` crates; this crate is the I/O shell around them
//! plus the policy they lack:
//!
//! - [`StunServer`] runs one tokio loop over a UDP socket. Every client datagram first passes
//!   an admission gate (pure, unit-tested) that resolves credentials — static users or TURN REST
//!   names `<expiry>:<node-id>` with password base64(HMAC-SHA1(secret, username)), see
//!   [`Credentials::rest`] — and enforces [`Limits`]: allocations per user (486), in total, and
//!   permissions / channels per allocation (508). Relay sockets are read by one task each into
//!   a bounded queue.
//! - [`TurnClient`] owns one UDP socket connected to the server and a background task that
//!   keeps the allocation, permissions and channels refreshed.
//!
//! Timestamps handed to the state machines are `sans_io_time::Instant`s measured from a base
//! `std::time::Instant` taken when each server/client starts.
//!
//! - [`mapping_behaviour`] tells whether the NAT's mapping depends on the destination (a
//!   "symmetric" NAT), in which case a peer's media goes through TURN.
//! - [`IceSession`] runs ICE (RFC 8445, `rice-proto`) for a call's media path after the overlay
//!   has set the call up: host, server-reflexive and relayed candidates, swapped as an
//!   [`IceDescription`], connectivity checks, and the chosen [`IcePair`].

#![warn(missing_docs, unreachable_pub)]

mod client;
mod credentials;
mod echo;
mod gate;
mod ice;
mod mapping;
pub mod metrics;
mod path;
mod ports;
mod reach;
#[cfg(test)]
mod rig;
mod server;

pub use client::{
    BindingOptions, ClientError, TurnClient, TurnOptions, binding_request, reflexive_address,
};
pub use credentials::{CredentialStore, Credentials, LookupError, rest_password, rest_username};
pub use echo::{EchoTally, answer_ice, probe_ice, probe_turn, spawn_udp_echo};
pub use gate::{GateStats, Limits};
pub use ice::{
    Endpoint, IceDescription, IceError, IceOptions, IcePair, IceSession, MAX_DATAGRAM,
    MAX_REMOTE_CANDIDATES,
};
pub use mapping::{Mapping, classify as classify_mapping, mapping_behaviour};
pub use ports::{PortRange, parse_port_range};
pub use reach::{ReachError, Reflexive, discover_reflexive, stun_server_addr};
pub use server::{
    Monitor, ServerConfig, ServerCounters, ServerError, ServerHandle, Snapshot, StunServer,
};
