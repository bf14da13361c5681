//! The peer's one sans-IO core: the secure overlay node, the peer's own user agent (the
//! calls the peer places and answers itself, [`crate::own_ua`]) and, when the peer serves
//! local phones, the SIP front-end with the adapter between it and the node, driven as one
//! [`Core`] (by the TLS runtime in a deployment, by the deterministic test network in
//! tests). The front-end's and the user agent's calls into the overlay (store and find
//! registrations, place a call, dialog messages) run on the node synchronously, and the
//! node's answers reach them inside the same input, so no task, lock or queue sits between
//! them. The shell only moves bytes and time: overlay frames through the runtime, SIP
//! datagrams in with [`PeerCore::handle_sip`] and out as [`PeerEvent::SipOut`].
//!
//! Driving contract (as for every core here): after each input drain `poll_transmit` and
//! `poll_event` until both are empty, then call `handle_timeout` at `poll_timeout`. Time
//! only moves forward.

use crate::frontend::FrontEnd;
use crate::msg::SipMessage;
use crate::own_ua::{CallError, CallEvent, OwnUa};
use crate::secure_overlay::{SecureAdapter, Taken};
use crate::txn::{Peer as SipPeer, SipTransmit};
use overlay::driver::{Core, Peer, SecureCore};
use overlay::secure::{SecureEvent, SecureNode};
use overlay::{Message, NodeId, Time, Transmit};
use std::collections::VecDeque;
use std::net::SocketAddr;

/// What arrived from a phone, as the transport hands it over.
#[derive(Debug)]
pub enum SipInbound {
    /// A UDP datagram, unparsed.
    Datagram {
        /// Sender.
        from: SocketAddr,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A message framed from a TCP stream.
    Message {
        /// Sender.
        from: SipPeer,
        /// The message.
        msg: Box<SipMessage>,
    },
}

/// What the core reports to the shell.
#[derive(Debug)]
pub enum PeerEvent {
    /// An overlay event for the application (calls it placed or answers, lookups, SOS
    /// rankings and evidence).
    Overlay(SecureEvent),
    /// An overlay event the front-end took care of (a call for a phone, a phone's call that
    /// failed): for the call history and logs only.
    Handled(SecureEvent),
    /// A SIP message for a phone.
    SipOut(SipTransmit),
    /// The peer's own user agent: a call it placed or answers.
    Call(CallEvent),
}

/// The front-end and its view of the node.
struct SipSide {
    fe: FrontEnd,
    adapter: SecureAdapter,
}

/// One peer: a secure node (`N` is [`SecureNode`] or a wrapper such as
/// `net::Instrumented`) and an optional SIP front-end (see the module doc).
pub struct PeerCore<N = SecureNode> {
    node: N,
    /// Boxed: most peers serve no phones, and the front-end's state (1.3 KiB) would
    /// otherwise be part of every peer's core.
    sip: Option<Box<SipSide>>,
    own: OwnUa,
    events: VecDeque<PeerEvent>,
    /// The latest time an input brought (events produced by work the application ran on
    /// the node are handed to the front-end at this time).
    now: Time,
}

impl<N: SecureCore<Event = SecureEvent>> PeerCore<N> {
    /// A peer without a front-end; its own user agent answers calls at once. Its SIP
    /// identifiers are seeded from the Node-ID: give a peer that may restart its own seed
    /// with [`PeerCore::with_call_seed`].
    pub fn new(mut node: N) -> Self {
        let me = node.node().chord().contact();
        let seed = u64::from(me.id.0 as u32);
        PeerCore {
            node,
            sip: None,
            own: OwnUa::new(me, seed),
            events: VecDeque::new(),
            now: Time::ZERO,
        }
    }

    /// Serve local phones with `fe`.
    pub fn with_frontend(mut self, fe: FrontEnd) -> Self {
        self.set_frontend(fe);
        self
    }

    /// Serve local phones with `fe` from now on (replacing a front-end, and forgetting its
    /// calls, if there was one).
    pub fn set_frontend(&mut self, fe: FrontEnd) {
        let me = self.node.node().chord().id();
        let space = self.node.node().chord().config().space;
        self.sip = Some(Box::new(SipSide {
            fe,
            adapter: SecureAdapter::new(me, space),
        }));
    }

    /// The secure node, for work the application runs on it at `now`.
    pub fn node_at(&mut self, now: Time) -> &mut SecureNode {
        self.now = self.now.max(now);
        self.node.node()
    }

    /// Seed the own user agent's Call-IDs, tags and branches with `seed` (before any call:
    /// it starts the user agent afresh). A peer that restarts takes a fresh random seed, so
    /// its new calls never look like retransmissions of its old ones to their callees.
    pub fn with_call_seed(mut self, seed: u64) -> Self {
        self.own.reseed(seed);
        self
    }

    /// Whether the peer's own user agent takes calls for this peer (the default). Off, an
    /// incoming call is left to the application as the overlay's `IncomingCall` (the lab's
    /// demo, which measures the paper's Ringing and hangs up at the overlay level).
    pub fn with_answering(mut self, on: bool) -> Self {
        self.own.set_answering(on);
        self
    }

    /// Let the application answer incoming calls ([`PeerCore::answer_call`]) instead of
    /// the own user agent answering at once (to put per-call media, e.g. ICE candidates,
    /// into the answer).
    pub fn set_manual_answer(&mut self, manual: bool) {
        self.own.set_auto_answer(!manual);
    }

    /// The SDP this peer answers with when it has nothing better.
    pub fn plain_sdp(&self) -> Vec<u8> {
        crate::own_ua::plain_sdp(self.node.node_ref().chord().contact())
    }

    /// Place a call from the peer's own user agent to `callee` (for `uri`, default
    /// `sip:<callee>@p2psip.invalid`) with the SDP offer `sdp`. Returns the Call-ID and the
    /// secure node's handle of the call; progress comes as [`PeerEvent::Call`] and the
    /// overlay's `CallRinging` / `CallFailed`.
    pub fn place_call(
        &mut self,
        now: Time,
        callee: NodeId,
        uri: Option<&str>,
        sdp: &[u8],
    ) -> Result<(String, u64), CallError> {
        self.now = self.now.max(now);
        let r = self.own.place(now, self.node.node(), callee, uri, sdp);
        self.drain(now);
        r
    }

    /// Hang up a call of the own user agent.
    pub fn hang_up(&mut self, now: Time, call: &str) -> Result<(), CallError> {
        self.now = self.now.max(now);
        let r = self.own.hang_up(now, self.node.node(), call);
        self.drain(now);
        Ok(r?)
    }

    /// Answer a call ringing at the own user agent with `sdp`.
    pub fn answer_call(&mut self, now: Time, call: &str, sdp: Vec<u8>) {
        self.now = self.now.max(now);
        self.own.answer(now, self.node.node(), call, sdp);
        self.drain(now);
    }

    /// Calls the own user agent has open.
    pub fn own_calls(&self) -> usize {
        self.own.calls()
    }

    /// The front-end's counters and open calls, if there is a front-end.
    pub fn frontend(&self) -> Option<&FrontEnd> {
        self.sip.as_ref().map(|s| &s.fe)
    }

    /// A datagram or message from a phone. Without a front-end it is ignored.
    pub fn handle_sip(&mut self, now: Time, input: SipInbound) {
        self.now = self.now.max(now);
        if let Some(s) = &mut self.sip {
            let mut ov = s.adapter.with(self.node.node());
            match input {
                SipInbound::Datagram { from, bytes } => {
                    s.fe.handle_datagram(now, from, &bytes, &mut ov)
                }
                SipInbound::Message { from, msg } => s.fe.handle_message(now, from, *msg, &mut ov),
            }
        }
        self.drain(now);
    }

    /// Move the node's events to the front-end or the own user agent (what they take) or
    /// the event queue, and the front-end's messages to the event queue, until neither has
    /// more. Calls for the peer go to its phones when it serves phones, else to its own user
    /// agent; the call history sees them either way ([`PeerEvent::Handled`]).
    fn drain(&mut self, now: Time) {
        while let Some(ev) = Core::poll_event(&mut self.node) {
            let history = matches!(
                ev,
                SecureEvent::IncomingCall { .. } | SecureEvent::CallFailed { .. }
            )
            .then(|| ev.clone());
            let ev = match &mut self.sip {
                Some(s) => match s.adapter.take(ev) {
                    Taken::FrontEnd(oe) => {
                        let mut ov = s.adapter.with(self.node.node());
                        s.fe.handle_overlay_event(now, oe, &mut ov);
                        None
                    }
                    Taken::Other(ev) => Some(ev),
                },
                None => Some(ev),
            };
            let ev = ev.and_then(|ev| self.own.on_node_event(now, self.node.node(), ev));
            match (ev, history) {
                (Some(ev), _) => self.events.push_back(PeerEvent::Overlay(ev)),
                (None, Some(copy)) => self.events.push_back(PeerEvent::Handled(copy)),
                (None, None) => {}
            }
        }
        if let Some(s) = &mut self.sip {
            while let Some(t) = s.fe.poll_transmit() {
                self.events.push_back(PeerEvent::SipOut(t));
            }
        }
        while let Some(ev) = self.own.poll_event() {
            self.events.push_back(PeerEvent::Call(ev));
        }
    }
}

impl<N: SecureCore<Event = SecureEvent>> Core for PeerCore<N> {
    type Event = PeerEvent;

    fn handle_message(&mut self, now: Time, from: &Peer, msg: Message) {
        self.now = self.now.max(now);
        Core::handle_message(&mut self.node, now, from, msg);
        self.drain(now);
    }

    fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        Core::handle_timeout(&mut self.node, now);
        if let Some(s) = &mut self.sip
            && s.fe.poll_timeout().is_some_and(|t| t <= now)
        {
            let mut ov = s.adapter.with(self.node.node());
            s.fe.handle_timeout(now, &mut ov);
        }
        if self.own.poll_timeout().is_some_and(|t| t <= now) {
            self.own.handle_timeout(now, self.node.node());
        }
        self.drain(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Core::poll_transmit(&mut self.node)
    }

    fn poll_event(&mut self) -> Option<PeerEvent> {
        if self.events.is_empty() {
            self.drain(self.now);
        }
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Time> {
        let fe = self.sip.as_ref().and_then(|s| s.fe.poll_timeout());
        [Core::poll_timeout(&self.node), fe, self.own.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message) {
        Core::handle_not_sent(&mut self.node, now, to, msg);
    }

    fn leave(&mut self, now: Time) {
        Core::leave(&mut self.node, now);
    }

    fn handle_link_down(&mut self, now: Time, peer: NodeId, unreachable: bool) {
        self.now = self.now.max(now);
        Core::handle_link_down(&mut self.node, now, peer, unreachable);
        self.drain(now);
    }

    fn keeps_link(&self, peer: NodeId) -> bool {
        Core::keeps_link(&self.node, peer)
    }

    fn standing_links(&self) -> Vec<overlay::Contact> {
        Core::standing_links(&self.node)
    }

    fn request_token(event: &PeerEvent) -> Option<u64> {
        match event {
            PeerEvent::Overlay(e) => N::request_token(e),
            PeerEvent::Handled(_) | PeerEvent::SipOut(_) | PeerEvent::Call(_) => None,
        }
    }

    fn failed_peer(event: &PeerEvent) -> Option<NodeId> {
        match event {
            PeerEvent::Overlay(e) => N::failed_peer(e),
            PeerEvent::Handled(_) | PeerEvent::SipOut(_) | PeerEvent::Call(_) => None,
        }
    }
}

impl<N: SecureCore<Event = SecureEvent>> SecureCore for PeerCore<N> {
    fn node(&mut self) -> &mut SecureNode {
        self.node.node()
    }

    fn node_ref(&self) -> &SecureNode {
        self.node.node_ref()
    }

    fn split(event: PeerEvent) -> Result<SecureEvent, PeerEvent> {
        match event {
            PeerEvent::Overlay(e) => Ok(e),
            other => Err(other),
        }
    }

    fn wrap(event: SecureEvent) -> PeerEvent {
        PeerEvent::Overlay(event)
    }
}
