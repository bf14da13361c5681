//! The contract between a sans-IO core and whatever drives it: the TLS runtime (`net`),
//! the deterministic test network (`testkit`) and the simulator move bytes and time; the
//! core decides everything else. It sits here, beside the state machines it describes, so
//! cores in other sans-IO crates (the SIP peer core) implement it without depending on a
//! runtime.
//!
//! **Driving.** After every input (`handle_message`, `handle_timeout`, `handle_not_sent`,
//! or work the application runs on the core) the driver drains `poll_transmit` and
//! `poll_event` until both are empty, then sleeps until `poll_timeout`. Time only moves
//! forward. The driver authenticates senders: a [`Peer`] carries the Node-ID, layer and
//! role its certificate binds, so the core never trusts a claim in a message for them.

use crate::secure::{Layer, Role, SecureEvent, SecureNode};
use crate::{ChordNode, Contact, Event, Message, NodeId, Time, Transmit};
use std::fmt;

/// An authenticated peer, as the driver hands it to the core with each message.
///
/// `contact.id` is the Node-ID bound in the certificate the peer presented (and equal to
/// the one it claimed); `contact.addr` is its listen address (dialled, or claimed and
/// checked against the source address); `layer` and `role` come from its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Node-ID and listen address.
    pub contact: Contact,
    /// Layer bound in the certificate.
    pub layer: Layer,
    /// Role bound in the certificate (peer, CSP, CSPG).
    pub role: Role,
}

/// A sans-IO state machine a driver can run: the overlay node, or a node that wraps it
/// (secure routing, SIP). See the module doc for the order of calls.
pub trait Core: Send + 'static {
    /// What the core reports to the application.
    type Event: Send + fmt::Debug + 'static;

    /// A message from an authenticated peer.
    fn handle_message(&mut self, now: Time, from: &Peer, msg: Message);
    /// The time returned by [`poll_timeout`](Self::poll_timeout) was reached.
    fn handle_timeout(&mut self, now: Time);
    /// Next message to send.
    #[must_use]
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// Next event for the application.
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    fn poll_timeout(&self) -> Option<Time>;
    /// `msg` for `to` was dropped before it left: this peer's send queue to `to` was full.
    /// Local congestion, so the core must not count it against `to`.
    fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message);
    /// Leave the overlay gracefully (called once, at shutdown; its messages are flushed).
    fn leave(&mut self, now: Time);
    /// The last link to `peer` closed; `unreachable`: a connection to it could not be set
    /// up. The core may treat what it sent `peer` as lost, or ask a neighbour whether it
    /// is still there. Default: ignored (timeouts find out).
    fn handle_link_down(&mut self, _now: Time, _peer: NodeId, _unreachable: bool) {}
    /// Does the core's routing state need a link to `peer` (a neighbour it talks to at
    /// rest)? The driver keeps such links open while quiet and closes others first.
    /// Default: none is needed.
    fn keeps_link(&self, _peer: NodeId) -> bool {
        false
    }
    /// Peers this core talks to on most calls (a peer's CSPG and the CSP of its arc): the
    /// driver holds a link to each open (dialling it when there is none, pinging it while
    /// it is quiet so that the far side keeps it too), so no call waits for a TLS handshake
    /// with them. They must also be kept ([`keeps_link`](Self::keeps_link)). Default: none.
    fn standing_links(&self) -> Vec<Contact> {
        Vec::new()
    }
    /// If `event` answers a request the application started (a lookup, a call, a store),
    /// the token that request returned, so the driver can hand it to whoever waits.
    fn request_token(_event: &Self::Event) -> Option<u64> {
        None
    }
    /// If `event` says a peer stopped answering (an RPC or a hop acknowledgement timed out
    /// and the peer left the routing state), that peer. The driver closes its links to it:
    /// a link the network cut silently stays open for minutes while TCP retransmits into
    /// it with back-off, and what the core sends the peer once the network is back would
    /// wait for the next retransmission; a fresh dial carries it at once. Default: none.
    fn failed_peer(_event: &Self::Event) -> Option<NodeId> {
        None
    }
}

/// A core that is, or wraps, a [`SecureNode`]. A wrapper may have events of its own
/// besides the node's (a SIP front-end's messages); [`SecureCore::split`] tells them apart.
pub trait SecureCore: Core {
    /// The secure node.
    fn node(&mut self) -> &mut SecureNode;
    /// The secure node, to look at.
    fn node_ref(&self) -> &SecureNode;
    /// The secure node's event inside `event`, or the wrapper's own event back.
    fn split(event: Self::Event) -> Result<SecureEvent, Self::Event>;
    /// A secure node's event as this core's event.
    fn wrap(event: SecureEvent) -> Self::Event;
}

/// The [`Core`] methods a sans-IO node has under the same name and signature (timers,
/// sends that failed, and the three polls): handed to the node's own method.
macro_rules! core_io_by_own_methods {
    ($node:ident, $event:ty) => {
        fn handle_timeout(&mut self, now: Time) {
            $node::handle_timeout(self, now);
        }

        fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message) {
            $node::handle_not_sent(self, now, to, msg);
        }

        fn poll_transmit(&mut self) -> Option<Transmit> {
            $node::poll_transmit(self)
        }

        fn poll_event(&mut self) -> Option<$event> {
            $node::poll_event(self)
        }

        fn poll_timeout(&self) -> Option<Time> {
            $node::poll_timeout(self)
        }
    };
}

impl Core for ChordNode {
    type Event = Event;

    fn handle_message(&mut self, now: Time, from: &Peer, msg: Message) {
        ChordNode::handle_message(self, now, from.contact, msg);
    }

    core_io_by_own_methods!(ChordNode, Event);

    fn leave(&mut self, now: Time) {
        ChordNode::leave(self, now);
    }

    fn handle_link_down(&mut self, now: Time, peer: NodeId, unreachable: bool) {
        ChordNode::handle_link_down(self, now, peer, unreachable);
    }

    fn keeps_link(&self, peer: NodeId) -> bool {
        ChordNode::keeps_link(self, peer)
    }

    fn request_token(event: &Event) -> Option<u64> {
        match event {
            Event::LookupDone { lookup, .. } | Event::LookupFailed { lookup, .. } => Some(*lookup),
            _ => None,
        }
    }

    fn failed_peer(event: &Event) -> Option<NodeId> {
        match event {
            Event::PeerFailed { peer } => Some(*peer),
            _ => None,
        }
    }
}

impl Core for SecureNode {
    type Event = SecureEvent;

    fn handle_message(&mut self, now: Time, from: &Peer, msg: Message) {
        // Only a CSP or CSPG certificate may hand a request to its callee.
        if matches!(msg, Message::Deliver { .. }) && !matches!(from.role, Role::Csp | Role::Cspg) {
            tracing::warn!(peer = %from.contact.id, role = %from.role, "deliver from a non-CSP refused");
            return;
        }
        SecureNode::handle_message(self, now, from.contact, msg);
    }

    core_io_by_own_methods!(SecureNode, SecureEvent);

    fn leave(&mut self, now: Time) {
        self.chord_mut().leave(now);
    }

    fn handle_link_down(&mut self, now: Time, peer: NodeId, unreachable: bool) {
        self.chord_mut().handle_link_down(now, peer, unreachable);
    }

    fn keeps_link(&self, peer: NodeId) -> bool {
        SecureNode::keeps_link(self, peer)
    }

    fn standing_links(&self) -> Vec<Contact> {
        SecureNode::standing_links(self)
    }

    fn request_token(event: &SecureEvent) -> Option<u64> {
        match event {
            SecureEvent::CallRinging { call, .. } | SecureEvent::CallFailed { call, .. } => {
                Some(*call)
            }
            SecureEvent::Stored { query, .. } | SecureEvent::Fetched { query, .. } => Some(*query),
            _ => None,
        }
    }

    fn failed_peer(event: &SecureEvent) -> Option<NodeId> {
        match event {
            SecureEvent::Chord(e) => <ChordNode as Core>::failed_peer(e),
            _ => None,
        }
    }
}

impl SecureCore for SecureNode {
    fn node(&mut self) -> &mut SecureNode {
        self
    }

    fn node_ref(&self) -> &SecureNode {
        self
    }

    fn split(event: SecureEvent) -> Result<SecureEvent, SecureEvent> {
        Ok(event)
    }

    fn wrap(event: SecureEvent) -> SecureEvent {
        event
    }
}
