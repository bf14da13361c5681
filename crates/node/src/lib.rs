//! A p2psip peer as a library: what `p2psip peer` runs, usable from tests, the lab and any
//! program that embeds a peer.
//!
//! [`Node::start`] takes a [`Config`] (the node directory `p2psip enroll` wrote plus the
//! operator's choices) and brings up the whole peer: the secure overlay node (paper: Chord
//! in three layers, CSP/CSPG, PingRequest multicast) on the mutual-TLS runtime, its
//! database (`peer.db`: contact cache, records, held requests, call history), the E&A
//! directory and CRL, the SOS link, the local control endpoint and, when configured, the SIP
//! front-end for local phones. [`run`] is the whole life of a peer in the shape of
//! mini-redis' `server::run`: start, serve until the shutdown future resolves, leave the
//! ring gracefully.
//!
//! The protocol logic lives in the sans-IO crates (`overlay`, `sip`); this crate is the
//! shell that wires them to sockets, files and time.
#![warn(missing_docs, unreachable_pub)]

mod calls;
mod config;
mod control;
mod daemon;
mod db;
mod directory;
mod error;
mod launch;
mod media;
mod metrics;
mod phones;
pub mod reporter_keys;
pub mod rtpengine;

pub use calls::{CallReport, CallRequest, HistoryEntry};
pub use config::{
    ChordTiming, Config, CrlPolicy, JoinMode, NodeSource, SipConfig, SosChoice, parse_contact,
};
pub use control::ApiError;
pub use daemon::{CONTROL_FILE, Node, NodeInfo, control_addr_of, run};
pub use directory::fetch as fetch_directory;
pub use error::{DirectoryError, NodeError};
use launch::{Launch, Running, launch};
pub use media::{MediaConfig, MediaPlane, MediaTurn, TurnMode};
pub use sip::{PeerCore, PeerEvent};

use std::sync::Arc;

/// Every peer's core: the SIP front-end, the own user agent and the secure overlay node,
/// with the received-message counts (and, for experiments, the paper's malicious
/// forwarder) of [`net::Instrumented`].
pub type NodeCore = PeerCore<net::Instrumented>;

/// Load the SIP front-end's digest credentials (`user:password` or `user:HA1` per line)
/// for `domain`, offering `digest` algorithms (e.g. `SHA-256,MD5`); `None` without a file.
/// Says on stderr which it is: an operator must notice a front-end open to anyone.
pub fn load_sip_auth(
    credentials: Option<&std::path::Path>,
    domain: &str,
    digest: &str,
) -> Result<Option<Arc<sip::digest::DigestAuth>>, NodeError> {
    let Some(path) = credentials else {
        eprintln!("SIP front-end without authentication (no --sip-credentials)");
        return Ok(None);
    };
    let bad = |e: sip::digest::AuthError| NodeError::Sip(format!("{}: {e}", path.display()));
    let mut auth = sip::digest::load(path, &domain.to_ascii_lowercase()).map_err(bad)?;
    auth.algorithms = sip::digest::parse_algorithms(digest).map_err(bad)?;
    eprintln!(
        "SIP front-end with digest authentication: {} users, realm {}, algorithms {:?}",
        auth.users(),
        auth.realm(),
        auth.algorithms
    );
    Ok(Some(Arc::new(auth)))
}
