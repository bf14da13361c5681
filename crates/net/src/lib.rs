//! The p2psip runtime: drives a sans-IO overlay node over TCP with mutual TLS 1.3.
//!
//! **One loop.** [`PeerRuntime::start`] binds the TLS listener and spawns one task that owns
//! the core (any [`Core`]; [`overlay::ChordNode`] implements it) and all routing state of the
//! shell. Each turn it drains the core (`poll_transmit` into connections, `poll_event` to
//! waiting requests or the application's bounded event channel), sets its timer to
//! `poll_timeout`, and waits for exactly one input: a command from a [`Handle`], a frame or
//! connection event from a connection task, a new TCP connection, or the timer. Time is
//! [`overlay::Time`] in microseconds since the loop started. The core never sees a socket.
//!
//! **Connections.** Each connection is a task that performs TCP connect/accept, the TLS 1.3
//! handshake (rustls, ring, mutual authentication with E&A certificates, see [`Trust`]), and
//! a fixed-size hello in which each side claims its Node-ID and listen address. The
//! certificate's Node-ID must equal the claimed one (inbound) or the dialled one
//! (outbound); the claimed listen IP must be the source IP (or unspecified). Then it reads
//! length-delimited frames of the overlay codec ([`overlay::wire`]; oversized or malformed
//! frames close the connection) and writes the frames the loop queues for it. Every step
//! is bounded: connect and handshake timeouts (slow-loris), an idle timeout, a semaphore
//! capping inbound connections, a bounded send queue per connection (full → frame dropped
//! and counted; the loop never waits on a peer), and one bounded channel from all
//! connections to the loop (full → readers wait, which is TCP backpressure). Connections are
//! opened on demand to `Contact::addr` and reused in both directions. A failed dial only
//! loses the message: the core detects dead peers with its own timeouts.
//!
//! **Plugging in.** A node that wraps Chord (secure routing, SIP) implements [`Core`] and
//! gets the authenticated [`Peer`] (Node-ID, listen address, layer and role from the
//! certificate) with every message. Applications use [`Handle::call`] to run code on the
//! core inside the loop, [`Handle::request`] to wait for the event that answers a request
//! ([`Core::request_token`]), and [`Handle::shutdown`] for a graceful leave: the core's
//! `leave` runs, its messages are flushed, then every connection closes.
//!
//! **Revocation.** The CRL lives in a [`CrlStore`] read on every handshake and refreshed
//! periodically ([`NetConfig::crl_refresh`]); [`RevocationPolicy`] decides what happens while
//! none is loaded. TLS session resumption is disabled so every connection is checked.
#![warn(missing_docs, unreachable_pub)]

mod budget;
mod chord;
mod config;
mod conn;
mod crl;
mod hello;
mod keys;
mod link_tls;
mod node_dir;
mod relay;
mod runtime;
mod secure;
mod send_queue;
mod stats;
mod tls;

pub use chord::{Found, LookupError, RingStatus};
pub use config::{Limits, LinkBudget, NetConfig};
pub use crl::{CrlError, fetch_crl, load_crl};
pub use keys::{CertRegistry, CertSigner, KeyAlg, KeyBook, KeyError, cert_public_key};
pub use node_dir::NodeDir;
pub use runtime::{Core, Handle, NetError, Peer, PeerRuntime};
pub use secure::{
    CallOutcome, DirectoryFile, Instrumented, KindLog, MemberEntry, Membership, MembershipError,
    SecureCore, SosCounters, SosLink, run_events, secure_node,
};
pub use stats::Stats;
pub use tls::{ConfigError, CrlStore, Identity, Refusal, RevocationPolicy, Trust};
