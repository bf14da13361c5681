//! The peer's own user agent: the calls `p2psip call` places, and the calls a peer without
//! phones answers itself, as real SIP from [`crate::ua`] carried by the secure call flow.
//! Its INVITE is the request the CSP holds and the callee fetches (paper Figures 3–4); every
//! later message of the dialog (180, 200, ACK, BYE and their answers) travels as the secure
//! node's dialog messages, straight between the two peers. Sans-IO: the [`crate::PeerCore`]
//! that owns it hands it the node and `now`.

use crate::msg::{self, MsgError, SipMessage, SipMethod};
use crate::txn::{Peer as SipPeer, Transport};
use crate::ua::{UaConfig, UaEvent, UserAgent};
use overlay::secure::{SecureEvent, SecureNode};
use overlay::{Contact, NodeId, Time};
use std::collections::{BTreeMap, VecDeque};

/// Domain of the SIP URIs peers use among themselves (Node-IDs as user parts).
pub const PEER_DOMAIN: &str = "p2psip.invalid";

/// Calls the own UA keeps at once (placed and answered); beyond it new ones are refused.
const MAX_CALLS: usize = 4096;

/// How long an answered call waits for the caller's ACK before the callee gives it up
/// (RFC 3261 Timer H, 64·T1): a caller that vanished must not hold the call for ever.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(32);

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
    /// Calls placed whose INVITE has not left yet: Call-ID → callee.
    placing: BTreeMap<String, NodeId>,
    /// Calls answered here whose ACK has not come: Call-ID → when to give up.
    awaiting_ack: BTreeMap<String, Time>,
    /// Take incoming calls (else they are left to the application).
    answers: bool,
    events: VecDeque<CallEvent>,
}

/// The SDP a peer answers with when it has no media of its own to offer (no ICE).
fn plain_sdp(me: Contact) -> Vec<u8> {
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
    /// The UA of the peer at `me`; it answers calls at once unless `auto_answer` is off.
    /// `seed` keeps its Call-IDs, tags and branches apart from those of any earlier life of
    /// the same peer (a restarted peer must not repeat a branch its callee still holds).
    pub(crate) fn new(me: Contact, auto_answer: bool, seed: u64) -> Self {
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
            auto_answer,
            timers: sipx_sip::Timers::default(),
        };
        OwnUa {
            me: me.id,
            ua: UserAgent::new(cfg, seed),
            addr,
            calls: BTreeMap::new(),
            by_node: BTreeMap::new(),
            placing: BTreeMap::new(),
            awaiting_ack: BTreeMap::new(),
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

    /// The SDP this peer offers and answers with when it has nothing better.
    pub(crate) fn plain_sdp(me: Contact) -> Vec<u8> {
        plain_sdp(me)
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
        self.placing.insert(call.clone(), callee);
        self.route(now, node);
        self.placing.remove(&call);
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
                let accepted = match msg::parse_frame(&invite) {
                    Ok(SipMessage::Request(r)) if *r.method() == SipMethod::Invite => r
                        .call_id()
                        .filter(|id| self.calls.len() < MAX_CALLS && !self.calls.contains_key(id)),
                    _ => None,
                };
                let Some(call_id) = accepted else {
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
                self.receive(now, node, &invite);
                None
            }
            SecureEvent::Dialog { caller, call, body }
                if self.by_node.contains_key(&(caller, call)) =>
            {
                self.receive(now, node, &body);
                None
            }
            SecureEvent::CallFailed { call, .. } if self.by_node.contains_key(&(self.me, call)) => {
                if let Some(id) = self.by_node.remove(&(self.me, call)) {
                    self.ua.abandon(&id);
                    self.calls.remove(&id);
                }
                Some(ev)
            }
            other => Some(other),
        }
    }

    /// The UA's timers, and answered calls whose ACK never came.
    pub(crate) fn handle_timeout(&mut self, now: Time, node: &mut SecureNode) {
        self.ua.handle_timeout(now);
        let lapsed: Vec<String> = self
            .awaiting_ack
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(call, _)| call.clone())
            .collect();
        for call in lapsed {
            self.awaiting_ack.remove(&call);
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
        let ack = self.awaiting_ack.values().min().copied();
        [self.ua.poll_timeout(), ack].into_iter().flatten().min()
    }

    /// Calls open.
    pub(crate) fn calls(&self) -> usize {
        self.calls.len()
    }

    fn receive(&mut self, now: Time, node: &mut SecureNode, bytes: &[u8]) {
        let Ok(m) = msg::parse_frame(bytes) else {
            return;
        };
        if let Some(call) = m.call_id() {
            if matches!(&m, SipMessage::Request(r) if *r.method() == SipMethod::Ack) {
                self.awaiting_ack.remove(&call);
            }
            self.events.push_back(CallEvent::Sip {
                call,
                sent: false,
                line: first_line(bytes),
            });
        }
        self.ua.handle_message(now, self.addr, m);
        self.route(now, node);
    }

    /// The UA's messages onto the overlay (its INVITE as a call, the rest as dialog
    /// messages), then its events out; a call that ended leaves the node's dialog table.
    fn route(&mut self, now: Time, node: &mut SecureNode) {
        while let Some(t) = self.ua.poll_transmit() {
            let Ok(m) = msg::parse_frame(&t.bytes) else {
                continue;
            };
            let Some(call) = m.call_id() else {
                continue;
            };
            let line = first_line(&t.bytes);
            if let Some(callee) = self.placing.get(&call).copied()
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
            } else if let Some(leg) = self.calls.get(&call) {
                let answer = matches!(&m, SipMessage::Response(r)
                    if (200..300).contains(&r.code())
                        && r.cseq().is_some_and(|(_, method)| method == SipMethod::Invite));
                if answer && leg.caller != self.me {
                    self.awaiting_ack.insert(call.clone(), now + ACK_WAIT);
                }
                node.send_dialog(leg.caller, leg.handle, t.bytes);
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
                self.awaiting_ack.remove(&call);
                self.calls.remove(&call);
                self.by_node.remove(&(leg.caller, leg.handle));
                node.end_dialog(leg.caller, leg.handle);
            }
            self.events.push_back(CallEvent::Ua {
                peer: leg.peer,
                event,
            });
        }
    }
}
