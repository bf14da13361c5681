//! The sans-IO surface the network drives: the runtime's own driving contract
//! ([`Core`]), plus what a runtime learns from sockets and certificates and a test network
//! has to be told.

use overlay::driver::{self, Core};
use overlay::secure::{Layer, Role, SecureEvent, SecureNode};
use overlay::{ChordNode, Contact, NodeId, Time};

/// A sans-IO peer: a [`Core`], driven by [`crate::Network`] as the runtime drives it (see
/// the crate doc for the order of calls).
pub trait Peer: Core {
    /// The peer's own contact (the `from` of what it sends).
    fn contact(&self) -> Contact;
    /// The sender of a frame from `from`, as this peer's runtime would know it from the
    /// sender's certificate. By default a layer-1 peer.
    fn authenticate(&self, from: Contact) -> driver::Peer {
        driver::Peer {
            contact: from,
            layer: Layer::ONE,
            role: Role::Peer,
        }
    }
    /// An event the test network answers itself, in place of the world outside the peer
    /// (the SOS ranking routes): `None` when answered (what that queues is drained
    /// afterwards), the event otherwise. By default every event is the application's.
    fn answer(&mut self, _now: Time, event: Self::Event) -> Option<Self::Event> {
        Some(event)
    }
}

impl Peer for ChordNode {
    fn contact(&self) -> Contact {
        ChordNode::contact(self)
    }
}

/// A secure peer whose SOS always ranks the first route best: `RankRoutes` is answered on
/// the spot and never reaches [`crate::Network::events`].
impl Peer for SecureNode {
    fn contact(&self) -> Contact {
        self.chord().contact()
    }
    fn authenticate(&self, from: Contact) -> driver::Peer {
        authenticated(self, from)
    }
    fn answer(&mut self, now: Time, event: SecureEvent) -> Option<SecureEvent> {
        match event {
            SecureEvent::RankRoutes { query, .. } => {
                self.handle_ranking(now, query, Some(0));
                None
            }
            ev => Some(ev),
        }
    }
}

/// What a certificate would say about `contact`, as far as `me` knows it: its layer from
/// the arcs and its role from the CSP/CSPG directory (the test network has no TLS).
pub(crate) fn authenticated(me: &SecureNode, contact: Contact) -> driver::Peer {
    let ctx = me.context();
    let known = |lists: &[Vec<NodeId>; 3]| lists.iter().any(|l| l.contains(&contact.id));
    let role = if known(&ctx.directory.cspgs) {
        Role::Cspg
    } else if known(&ctx.directory.csps) {
        Role::Csp
    } else {
        Role::Peer
    };
    driver::Peer {
        contact,
        layer: ctx.arcs.layer_of(contact.id),
        role,
    }
}
