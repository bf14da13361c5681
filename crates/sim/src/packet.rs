//! The compact form a message takes while it sits in the event queue.
//!
//! Almost every message of a lookup run is a routing step, its acknowledgement, its answer
//! or a ring-maintenance exchange between contacts known only by their Node-IDs. A
//! [`Message`] is sized for its largest (and rare) call variants and a [`Contact`] for a
//! socket address the simulator never sets, so a queued delivery in that form is about
//! twice as large as it needs to be, and a large simulation is bound by memory traffic.
//! [`Packet`] keeps the frequent kinds with bare Node-IDs and everything else boxed; the
//! conversion is lossless both ways, so the node receives exactly the message it was sent.

use overlay::wire::{Route, RouteReply};
use overlay::{Contact, Message, NodeId};

/// A message (and its sender) as it waits for delivery.
pub(crate) enum Packet {
    /// [`Message::Route`] between id-only contacts.
    Route {
        from: NodeId,
        lookup: u64,
        token: u64,
        origin: NodeId,
        key: NodeId,
        last_hop: bool,
        path: Vec<NodeId>,
    },
    /// [`Message::RouteReply`] between id-only contacts.
    Reply {
        from: NodeId,
        lookup: u64,
        key: NodeId,
        owner: NodeId,
        path: Vec<NodeId>,
    },
    /// One of the token-only kinds from an id-only contact.
    Token {
        from: NodeId,
        kind: TokenKind,
        token: u64,
    },
    /// [`Message::Neighbours`] listing id-only contacts.
    Neighbours {
        from: NodeId,
        token: u64,
        pred: Option<NodeId>,
        succs: Vec<Contact>,
    },
    /// [`Message::Notify`] from an id-only contact.
    Notify { from: NodeId },
    /// Anything else, or a sender or contact with a socket address.
    Other(Box<(Contact, Message)>),
}

/// The messages that carry nothing but a token.
#[derive(Clone, Copy)]
pub(crate) enum TokenKind {
    RouteAck,
    GetNeighbours,
    Ping,
    Pong,
}

impl Packet {
    /// Pack `msg` from `from`.
    pub(crate) fn new(from: Contact, msg: Message) -> Packet {
        if from.addr.is_some() {
            return Packet::Other(Box::new((from, msg)));
        }
        let from = from.id;
        let token = |kind, token| Packet::Token { from, kind, token };
        match msg {
            Message::Route(r) if r.origin.addr.is_none() => Packet::Route {
                from,
                lookup: r.lookup,
                token: r.token,
                origin: r.origin.id,
                key: r.key,
                last_hop: r.last_hop,
                path: r.path,
            },
            Message::RouteReply(r) if r.owner.addr.is_none() => Packet::Reply {
                from,
                lookup: r.lookup,
                key: r.key,
                owner: r.owner.id,
                path: r.path,
            },
            Message::Neighbours { token, pred, succs }
                if pred.is_none_or(|p| p.addr.is_none())
                    && succs.iter().all(|s| s.addr.is_none()) =>
            {
                Packet::Neighbours {
                    from,
                    token,
                    pred: pred.map(|p| p.id),
                    succs,
                }
            }
            Message::Notify => Packet::Notify { from },
            Message::RouteAck { token: t } => token(TokenKind::RouteAck, t),
            Message::GetNeighbours { token: t } => token(TokenKind::GetNeighbours, t),
            Message::Ping { token: t } => token(TokenKind::Ping, t),
            Message::Pong { token: t } => token(TokenKind::Pong, t),
            msg => Packet::Other(Box::new((Contact::id_only(from), msg))),
        }
    }

    /// Does this message only settle what its receiver waits for (see
    /// [`overlay::ChordNode::touch_lists`]): an acknowledgement, a pong, a lookup's answer,
    /// or a routed message on its last hop (the owner answers without routing)?
    pub(crate) fn is_answer(&self) -> bool {
        match self {
            Packet::Route { last_hop, .. } => *last_hop,
            Packet::Reply { .. } => true,
            Packet::Token { kind, .. } => matches!(kind, TokenKind::RouteAck | TokenKind::Pong),
            _ => false,
        }
    }

    /// A word from each end of the lists the message carries (a route's path, a neighbour
    /// list), which its receiver reads: the simulator loads them ahead of time.
    pub(crate) fn touch(&self) -> u64 {
        let ends = |ids: &[NodeId]| {
            ids.first().map_or(0, |i| i.0 as u64) ^ ids.last().map_or(0, |i| i.0 as u64)
        };
        match self {
            Packet::Route { path, .. } | Packet::Reply { path, .. } => ends(path),
            Packet::Neighbours { succs, .. } => {
                succs.first().map_or(0, |c| c.id.0 as u64)
                    ^ succs.last().map_or(0, |c| c.id.0 as u64)
            }
            _ => 0,
        }
    }

    /// The sender and the message, exactly as they were packed.
    pub(crate) fn unpack(self) -> (Contact, Message) {
        match self {
            Packet::Route {
                from,
                lookup,
                token,
                origin,
                key,
                last_hop,
                path,
            } => (
                Contact::id_only(from),
                Message::Route(Route {
                    lookup,
                    origin: Contact::id_only(origin),
                    key,
                    token,
                    last_hop,
                    path,
                }),
            ),
            Packet::Reply {
                from,
                lookup,
                key,
                owner,
                path,
            } => (
                Contact::id_only(from),
                Message::RouteReply(RouteReply {
                    lookup,
                    key,
                    owner: Contact::id_only(owner),
                    path,
                }),
            ),
            Packet::Token { from, kind, token } => (
                Contact::id_only(from),
                match kind {
                    TokenKind::RouteAck => Message::RouteAck { token },
                    TokenKind::GetNeighbours => Message::GetNeighbours { token },
                    TokenKind::Ping => Message::Ping { token },
                    TokenKind::Pong => Message::Pong { token },
                },
            ),
            Packet::Neighbours {
                from,
                token,
                pred,
                succs,
            } => (
                Contact::id_only(from),
                Message::Neighbours {
                    token,
                    pred: pred.map(Contact::id_only),
                    succs,
                },
            ),
            Packet::Notify { from } => (Contact::id_only(from), Message::Notify),
            Packet::Other(b) => *b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn contacts() -> Vec<Contact> {
        let addr: SocketAddr = "192.0.2.1:5060".parse().expect("valid address");
        vec![Contact::id_only(NodeId(7)), Contact::new(NodeId(9), addr)]
    }

    #[test]
    fn every_kind_comes_back_unchanged() {
        let mut msgs = Vec::new();
        for c in contacts() {
            msgs.push(Message::Route(Route {
                lookup: 1,
                origin: c,
                key: NodeId(u128::MAX),
                token: 3,
                last_hop: true,
                path: vec![NodeId(1), NodeId(2)],
            }));
            msgs.push(Message::RouteReply(RouteReply {
                lookup: 4,
                key: NodeId(5),
                owner: c,
                path: vec![NodeId(3)],
            }));
            msgs.push(Message::Neighbours {
                token: 6,
                pred: Some(c),
                succs: vec![c, c],
            });
            msgs.push(Message::Neighbours {
                token: 7,
                pred: None,
                succs: vec![Contact::id_only(NodeId(1)), c],
            });
        }
        msgs.extend([
            Message::RouteAck { token: 10 },
            Message::GetNeighbours { token: 11 },
            Message::Ping { token: 12 },
            Message::Pong { token: 13 },
            Message::Notify,
        ]);
        for from in contacts() {
            for m in &msgs {
                let back = Packet::new(from, m.clone()).unpack();
                assert_eq!(back, (from, m.clone()));
            }
        }
    }

    #[test]
    fn a_queued_delivery_is_small() {
        assert!(std::mem::size_of::<Packet>() <= 96);
    }
}
