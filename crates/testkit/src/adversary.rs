//! What a peer really puts on the wire: honest by default, or a hostile or constrained
//! [`Behaviour`] that drops, modifies, misroutes, replays or bounces the frames it sends.

use overlay::{Message, NodeId, Time};

/// What becomes of one frame a peer is about to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Put `msg` on the link to `to` (the original, a modified copy, or a misrouted one).
    Send {
        /// Receiver.
        to: NodeId,
        /// What it receives.
        msg: Message,
    },
    /// Hand the frame back to its sender as not sent, as the runtime does when the link's
    /// send queue is full.
    Bounce {
        /// The peer it was for.
        to: NodeId,
        /// The frame.
        msg: Message,
    },
}

/// A peer's behaviour on the frames it sends: given the time, the sender, the receiver and
/// the frame, the actions to take (none drops it). Any
/// `FnMut(Time, NodeId, NodeId, Message) -> Vec<Action>` is one.
pub trait Behaviour {
    /// Decide what leaves for a frame `me` is about to send to `to`.
    fn on_send(&mut self, now: Time, me: NodeId, to: NodeId, msg: Message) -> Vec<Action>;
}

impl<F> Behaviour for F
where
    F: FnMut(Time, NodeId, NodeId, Message) -> Vec<Action>,
{
    fn on_send(&mut self, now: Time, me: NodeId, to: NodeId, msg: Message) -> Vec<Action> {
        self(now, me, to, msg)
    }
}

/// Is `msg` a PingRequest copy that `me` forwards (its last hop record is `me`'s), as
/// opposed to one the CSP sends first-hand?
pub fn forwarded_ping(me: NodeId, msg: &Message) -> bool {
    matches!(msg, Message::PingRequest(p) if p.hops.last().map(|h| h.hop) == Some(me))
}

/// Applies `act` to every frame `pick` selects and sends the others as they are: the one
/// shape of every `*_if` behaviour below, which differ only in what they do to a frame.
fn acting_on(
    mut pick: impl FnMut(NodeId, NodeId, &Message) -> bool,
    mut act: impl FnMut(NodeId, Message) -> Vec<Action>,
) -> impl Behaviour {
    move |_now, me, to, msg: Message| {
        if pick(me, to, &msg) {
            act(to, msg)
        } else {
            vec![Action::Send { to, msg }]
        }
    }
}

/// Drops every frame `pick` selects (a black hole for those frames).
pub fn drop_if(pick: impl FnMut(NodeId, NodeId, &Message) -> bool) -> impl Behaviour {
    acting_on(pick, |_, _| Vec::new())
}

/// Rewrites every frame `pick` selects with `change` before it leaves.
pub fn modify_if(
    pick: impl FnMut(NodeId, NodeId, &Message) -> bool,
    mut change: impl FnMut(&mut Message),
) -> impl Behaviour {
    acting_on(pick, move |to, mut msg| {
        change(&mut msg);
        vec![Action::Send { to, msg }]
    })
}

/// Sends every frame `pick` selects to `elsewhere` instead of its receiver.
pub fn misroute_if(
    pick: impl FnMut(NodeId, NodeId, &Message) -> bool,
    elsewhere: NodeId,
) -> impl Behaviour {
    acting_on(pick, move |_, msg| {
        vec![Action::Send { to: elsewhere, msg }]
    })
}

/// Sends every frame `pick` selects `1 + extra` times (a replay right behind the original).
pub fn replay_if(
    pick: impl FnMut(NodeId, NodeId, &Message) -> bool,
    extra: usize,
) -> impl Behaviour {
    acting_on(pick, move |to, msg| {
        vec![Action::Send { to, msg }; 1 + extra]
    })
}

/// The sender's link is full for every frame `pick` selects: they are bounced back to it.
pub fn bounce_if(pick: impl FnMut(NodeId, NodeId, &Message) -> bool) -> impl Behaviour {
    acting_on(pick, |to, msg| vec![Action::Bounce { to, msg }])
}
