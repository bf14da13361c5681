//! The peer's own user agent: the calls `p2psip call` places, and the calls a peer without
//! phones answers itself, as real SIP from [`crate::ua`] carried by the secure call flow.
//! Its INVITE is the request the CSP holds and the callee fetches (paper Figures 3–4); every
//! later message of the dialog (180, 200, ACK, BYE and their answers) travels as the secure
//! node's dialog messages, straight between the two peers. Sans-IO: the [`crate::PeerCore`]
//! that owns it hands it the node and `now`.

use crate::deadlines::Deadlines;
use crate::msg::{self, MsgError, SipMessage, SipMethod};
use crate::txn::{Peer as SipPeer, Transport};
use crate::ua::{UaConfig, UaEvent, UserAgent};
use overlay::secure::{SecureEvent, SecureNode};
use overlay::{Contact, NodeId, Time};
use std::collections::{BTreeMap, VecDeque};

/// Domain of the SIP URIs peers use among themselves (Node-IDs as user parts).
pub const PEER_DOMAIN: &str = "p2psip.invalid";

/// Calls the own UA keeps at once (placed and answered): the user agent's own limit.
const MAX_CALLS: usize = crate::ua::MAX_DIALOGS;

/// How long an answered call waits for the caller's ACK before the callee gives it up
/// (RFC 3261 Timer H, 64·T1): a caller that vanished must not hold the call for ever.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(32);

/// A call with no message either way for this long is forgotten at this end (the other end
/// vanished without a BYE), as the front-end forgets its idle calls.
const CALL_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why a call could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer has as many calls open as it keeps.
    #[error("too many calls in flight on this peer")]
    Busy,
    /// The INVITE could not be built (a value would break the message).
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// The INVITE the UA built did not reach the overlay (a bug).
    #[error("the INVITE could not be handed to the overlay")]
    NotSent,
}

/// What the own UA reports, besides the overlay's own events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// A SIP message of `call` went out (`sent`) or came in: its first line, for reports.
    Sip {
        /// Call-ID.
        call: String,
        /// Sent by us.
        sent: bool,
        /// The message's first line.
        line: String,
    },
    /// What the user agent says about a call, with the peer at the other end.
    Ua {
        /// The other end.
        peer: NodeId,
        /// The event (its Call-ID names the call).
        event: UaEvent,
    },
}

/// One call of the own UA as the secure node names it.
#[derive(Clone, Copy, Debug)]
struct Leg {
    /// The calling peer and its handle: the dialog's key at both ends.
    caller: NodeId,
    handle: u64,
    /// The other end.
    peer: NodeId,
}

/// The own user agent and its map between Call-IDs and the node's calls.
pub(crate) struct OwnUa {
    me: NodeId,
    ua: UserAgent,
    /// What the UA takes as its own and its proxy's address: the overlay carries every
    /// message, so this only shows in Via and Contact.
    addr: SipPeer,
    calls: BTreeMap<String, Leg>,
    by_node: BTreeMap<(NodeId, u64), String>,
    /// When each call is given up: [`ACK_WAIT`] after answering it until the ACK comes,
    /// else [`CALL_IDLE`] after its last message.
    expiry: Deadlines<String>,
    /// Take incoming calls (else they are left to the application).
    answers: bool,
    events: VecDeque<CallEvent>,
}

/// The SDP a peer answers with when it has no media of its own to offer (no ICE).
pub(crate) fn plain_sdp(me: Contact) -> Vec<u8> {
    let host = me
        .addr
        .map_or_else(|| "0.0.0.0".to_owned(), |a| a.ip().to_string());
    let family = if host.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no={} 1 1 IN {family} {host}\r\ns=p2psip\r\nc=IN {family} {host}\r\nt=0 0\r\n\
         m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        me.id
    )
    .into_bytes()
}

/// The first line of a SIP message, for reports (at most 120 bytes).
fn first_line(b: &[u8]) -> String {
    let end = b
        .iter()
        .position(|c| *c == b'\r')
        .unwrap_or(b.len())
        .min(120);
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

impl OwnUa {
    /// The UA of the peer at `me`, answering calls at once. `seed` keeps its Call-IDs, tags
    /// and branches apart from those of any earlier life of the same peer (a restarted peer
    /// must not repeat a branch its callee still holds).
    pub(crate) fn new(me: Contact, seed: u64) -> Self {
        let addr = SipPeer {
            transport: Transport::Tcp,
            addr: me
                .addr
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        let cfg = UaConfig {
            user: me.id.to_string(),
            domain: PEER_DOMAIN.into(),
            local: addr,
            proxy: addr,
            sdp_answer: plain_sdp(me),
            auto_answer: true,
            timers: sipx_sip::Timers::default(),
        };
        OwnUa {
            me: me.id,
            ua: UserAgent::new(cfg, seed),
            addr,
            calls: BTreeMap::new(),
            by_node: BTreeMap::new(),
            expiry: Deadlines::default(),
            answers: true,
            events: VecDeque::new(),
        }
    }

    /// Take incoming calls (the default), or leave them to the application.
    pub(crate) fn set_answering(&mut self, on: bool) {
        self.answers = on;
    }

    /// Next thing to report.
    #[must_use]
    pub(crate) fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// Start the user agent afresh with `seed` (before any call), keeping its settings.
    pub(crate) fn reseed(&mut self, seed: u64) {
        self.ua.reseed(seed);
    }

    /// Answer incoming calls at once (or wait for [`OwnUa::answer`]).
    pub(crate) fn set_auto_answer(&mut self, on: bool) {
        self.ua.set_auto_answer(on);
    }

    /// Place a call to `callee` (its peer, found already) for `uri` (default
    /// `sip:<callee>@p2psip.invalid`) with `sdp`; returns the Call-ID and the node's handle.
    pub(crate) fn place(
        &mut self,
        now: Time,
        node: &mut SecureNode,
        callee: NodeId,
        uri: Option<&str>,
        sdp: &[u8],
    ) -> Result<(String, u64), CallError> {
        if self.calls.len() >= MAX_CALLS {
            return Err(CallError::Busy);
        }
        let uri = uri.map_or_else(|| format!("sip:{callee}@{PEER_DOMAIN}"), str::to_owned);
        let call = self.ua.invite_uri(now, &uri, sdp)?;
        self.route_placing(now, node, Some((call.as_str(), callee)));
        match self.calls.get(&call) {
            Some(leg) => Ok((call, leg.handle)),
            None => Err(CallError::NotSent),
        }
    }

    /// Hang up `call` (BYE).
    pub(crate) fn hang_up(
        &mut self,
        now: Time,
        node: &mut SecureNode,
        call: &str,
    ) -> Result<(), MsgError> {
        self.ua.bye(now, call)?;
        self.route(now, node);
        Ok(())
    }

    /// Answer the ringing `call` with `sdp`.
    pub(crate) fn answer(&mut self, now: Time, node: &mut SecureNode, call: &str, sdp: Vec<u8>) {
        self.ua.answer_with(now, call, sdp);
        self.route(now, node);
    }

    /// Take the node events that belong to the UA's calls; give every other event back.
    /// A failed call is given back too (the application reports it) after the UA forgets
    /// it.
    pub(crate) fn on_node_event(
        &mut self,
        now: Time,
        node: &mut SecureNode,
        ev: SecureEvent,
    ) -> Option<SecureEvent> {
        match ev {
            SecureEvent::IncomingCall { .. } if !self.answers => Some(ev),
            SecureEvent::IncomingCall {
                caller,
                call,
                invite,
            } => {
                let parsed = msg::parse_frame(&invite).ok();
                let accepted = match &parsed {
                    Some(SipMessage::Request(r)) if *r.method() == SipMethod::Invite => r
                        .call_id()
                        .filter(|id| self.calls.len() < MAX_CALLS && !self.calls.contains_key(id)),
                    _ => None,
                };
                let (Some(call_id), Some(m)) = (accepted, parsed) else {
                    // Not a SIP INVITE we can take (or too many calls): refuse it.
                    node.end_dialog(caller.id, call);
                    return None;
                };
                let leg = Leg {
                    caller: caller.id,
                    handle: call,
                    peer: caller.id,
                };
                self.calls.insert(call_id.clone(), leg);
                self.by_node.insert((caller.id, call), call_id);
                self.receive(now, node, m, &invite);
                None
            }
            SecureEvent::Dialog { caller, call, body }
                if self.by_node.contains_key(&(caller, call)) =>
            {
                // Only messages of this dialog's own call reach the UA: a peer must not reach
                // another call by naming its Call-ID. Unparsable bytes are dropped (the other
                // end's transactions time out).
                let ours = self.by_node.get(&(caller, call));
                if let Ok(m) = msg::parse_frame(&body)
                    && m.call_id().as_ref() == ours
                {
                    self.receive(now, node, m, &body);
                }
                None
            }
            SecureEvent::CallFailed { call, .. } if self.by_node.contains_key(&(self.me, call)) => {
                if let Some(id) = self.by_node.remove(&(self.me, call)) {
                    self.ua.abandon(&id);
                    self.calls.remove(&id);
                    self.expiry.remove(&id);
                }
                Some(ev)
            }
            other => Some(other),
        }
    }

    /// The UA's timers, and calls given up: answered but never ACKed, or idle.
    pub(crate) fn handle_timeout(&mut self, now: Time, node: &mut SecureNode) {
        self.ua.handle_timeout(now);
        while let Some(call) = self.expiry.pop_due(now) {
            self.ua.abandon(&call);
            if let Some(leg) = self.calls.remove(&call) {
                self.by_node.remove(&(leg.caller, leg.handle));
                node.end_dialog(leg.caller, leg.handle);
                self.events.push_back(CallEvent::Ua {
                    peer: leg.peer,
                    event: UaEvent::Failed { call, code: 408 },
                });
            }
        }
        self.route(now, node);
    }

    /// When the next timer is due.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        [self.ua.poll_timeout(), self.expiry.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Calls open.
    pub(crate) fn calls(&self) -> usize {
        self.calls.len()
    }

    /// A message `m` of one of the UA's calls arrived (`bytes`: as it came, for reports).
    fn receive(&mut self, now: Time, node: &mut SecureNode, m: SipMessage, bytes: &[u8]) {
        if let Some(call) = m.call_id() {
            // Any message of the call keeps it alive (and an ACK ends the wait for one).
            self.expiry.set(call.clone(), now + CALL_IDLE);
            self.events.push_back(CallEvent::Sip {
                call,
                sent: false,
                line: first_line(bytes),
            });
        }
        self.ua.handle_message(now, self.addr, m);
        self.route(now, node);
    }

    /// The UA's messages onto the overlay (the rest as dialog messages), then its events
    /// out; a call that ended leaves the node's dialog table.
    fn route(&mut self, now: Time, node: &mut SecureNode) {
        self.route_placing(now, node, None);
    }

    /// [`OwnUa::route`], with `placing`: the Call-ID of a call just placed and its callee,
    /// whose INVITE becomes the node's call.
    fn route_placing(&mut self, now: Time, node: &mut SecureNode, placing: Option<(&str, NodeId)>) {
        while let Some(t) = self.ua.poll_transmit() {
            let Ok(m) = msg::parse_frame(&t.bytes) else {
                continue;
            };
            let Some(call) = m.call_id() else {
                continue;
            };
            let line = first_line(&t.bytes);
            let invite_answer = match &m {
                SipMessage::Response(r)
                    if r.cseq()
                        .is_some_and(|(_, method)| method == SipMethod::Invite) =>
                {
                    Some(r.code())
                }
                _ => None,
            };
            if let Some((_, callee)) = placing.filter(|(id, _)| *id == call)
                && !self.calls.contains_key(&call)
            {
                let handle = node.call(now, callee, t.bytes);
                let leg = Leg {
                    caller: self.me,
                    handle,
                    peer: callee,
                };
                self.calls.insert(call.clone(), leg);
                self.by_node.insert((self.me, handle), call.clone());
                self.expiry.set(call.clone(), now + CALL_IDLE);
            } else if let Some(leg) = self.calls.get(&call).copied() {
                node.send_dialog(leg.caller, leg.handle, t.bytes);
                match invite_answer {
                    // Answered here: the caller's ACK must come within Timer H.
                    Some(200..=299) if leg.caller != self.me => {
                        self.expiry.set(call.clone(), now + ACK_WAIT);
                    }
                    // Refused here (486 at the user agent's limit): the call is over.
                    Some(300..) if leg.caller != self.me => {
                        self.forget(&call, node);
                    }
                    _ => self.expiry.set(call.clone(), now + CALL_IDLE),
                }
            } else {
                continue;
            }
            self.events.push_back(CallEvent::Sip {
                call,
                sent: true,
                line,
            });
        }
        while let Some(event) = self.ua.poll_event() {
            let Some(call) = event.call().map(str::to_owned) else {
                continue;
            };
            let Some(leg) = self.calls.get(&call).copied() else {
                continue;
            };
            if matches!(event, UaEvent::Ended { .. } | UaEvent::Failed { .. }) {
                self.forget(&call, node);
            }
            self.events.push_back(CallEvent::Ua {
                peer: leg.peer,
                event,
            });
        }
    }

    /// Forget `call` here and in the node's dialog table.
    fn forget(&mut self, call: &str, node: &mut SecureNode) {
        self.expiry.remove(&call.to_owned());
        if let Some(leg) = self.calls.remove(call) {
            self.by_node.remove(&(leg.caller, leg.handle));
            node.end_dialog(leg.caller, leg.handle);
        }
    }
}
