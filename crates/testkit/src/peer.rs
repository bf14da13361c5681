//! The sans-IO surface the network drives, and its two overlay implementations.

use overlay::secure::{SecureEvent, SecureNode};
use overlay::{ChordNode, Contact, Event, Message, NodeId, Time, Transmit};

/// A sans-IO peer: what [`crate::Network`] needs to drive it (see the crate doc for the
/// order of calls).
pub trait Peer {
    /// What the peer reports to its application.
    type Event;

    /// The peer's own contact (the `from` of what it sends).
    fn contact(&self) -> Contact;
    /// A frame arrived from `from`.
    fn handle_message(&mut self, now: Time, from: Contact, msg: Message);
    /// The peer's deadline has come.
    fn handle_timeout(&mut self, now: Time);
    /// A frame for `to` could not be sent (its link is full).
    fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message);
    /// The next frame to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next event. A peer whose events need an answer from outside (the SOS ranking
    /// routes) may answer them here; what that queues is drained afterwards.
    fn poll_event(&mut self, now: Time) -> Option<Self::Event>;
    /// When [`handle_timeout`](Self::handle_timeout) is due.
    fn poll_timeout(&self) -> Option<Time>;
}

impl Peer for ChordNode {
    type Event = Event;

    fn contact(&self) -> Contact {
        ChordNode::contact(self)
    }
    fn handle_message(&mut self, now: Time, from: Contact, msg: Message) {
        ChordNode::handle_message(self, now, from, msg);
    }
    fn handle_timeout(&mut self, now: Time) {
        ChordNode::handle_timeout(self, now);
    }
    fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message) {
        ChordNode::handle_not_sent(self, now, to, msg);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        ChordNode::poll_transmit(self)
    }
    fn poll_event(&mut self, _now: Time) -> Option<Event> {
        ChordNode::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Time> {
        ChordNode::poll_timeout(self)
    }
}

/// A secure peer whose SOS always ranks the first route best: `RankRoutes` is answered on
/// the spot and never reaches [`crate::Network::events`].
impl Peer for SecureNode {
    type Event = SecureEvent;

    fn contact(&self) -> Contact {
        self.chord().contact()
    }
    fn handle_message(&mut self, now: Time, from: Contact, msg: Message) {
        SecureNode::handle_message(self, now, from, msg);
    }
    fn handle_timeout(&mut self, now: Time) {
        SecureNode::handle_timeout(self, now);
    }
    fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message) {
        SecureNode::handle_not_sent(self, now, to, msg);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        SecureNode::poll_transmit(self)
    }
    fn poll_event(&mut self, now: Time) -> Option<SecureEvent> {
        loop {
            match SecureNode::poll_event(self)? {
                SecureEvent::RankRoutes { query, .. } => self.handle_ranking(now, query, Some(0)),
                ev => return Some(ev),
            }
        }
    }
    fn poll_timeout(&self) -> Option<Time> {
        SecureNode::poll_timeout(self)
    }
}
