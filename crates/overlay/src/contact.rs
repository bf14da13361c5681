//! How to reach a peer: its Node-ID plus, on real networks, a socket address.

use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A peer as the overlay knows it. In the simulator `addr` is `None` (the Node-ID is the
/// address); in the runtime it is where the peer's TLS listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Contact {
    /// The peer's Node-ID (bound to its certificate in the runtime).
    pub id: NodeId,
    /// Where to connect to it, when it is not implied.
    pub addr: Option<SocketAddr>,
}

impl Contact {
    /// A contact known only by its Node-ID (the simulator's addressing).
    pub fn id_only(id: NodeId) -> Self {
        Contact { id, addr: None }
    }

    /// A contact with a socket address.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        Contact {
            id,
            addr: Some(addr),
        }
    }
}
