//! What a peer is in the overlay besides a Chord peer: ordinary peer, CSP or CSPG.

use serde::{Deserialize, Serialize};

/// What a peer does besides being a Chord peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// An ordinary peer.
    Peer,
    /// Chord Secure Proxy: holds requests and multicasts PingRequests.
    Csp,
    /// CSP Gateway: forwards requests between layers.
    Cspg,
}
