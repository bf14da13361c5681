//! A minimal SIP user agent (sans-IO) for `p2psip call` and tests: REGISTER, place a call
//! (INVITE with an SDP offer, report 180, ACK the 200, hang up with BYE) and answer calls
//! (180 then 200 with an SDP answer; 200 to BYE). All requests go to one outbound proxy,
//! the local front-end.

use crate::msg::{self, RequestParts, SipMessage, SipMethod, SipRequest, SipResponse};
use crate::txn::{Peer, SipTransmit, Transactions, TxEvent, TxKey};
use overlay::Time;
use std::collections::{BTreeMap, VecDeque};

/// Who the UA is and where it sends.
#[derive(Clone, Debug)]
pub struct UaConfig {
    /// User part of our AoR.
    pub user: String,
    /// Domain of our AoR.
    pub domain: String,
    /// Where we listen (Contact and Via).
    pub local: Peer,
    /// The front-end every request goes to.
    pub proxy: Peer,
    /// SDP we answer calls with.
    pub sdp_answer: Vec<u8>,
    /// Answer calls with 200 right after 180 (else ring until the caller cancels).
    pub auto_answer: bool,
    /// RFC 3261 T1/T2/T4.
    pub timers: sipx_sip::Timers,
}

/// What happened, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UaEvent {
    /// Our REGISTER was answered.
    Registered {
        /// Status code.
        code: u16,
    },
    /// The callee rings (180).
    Ringing {
        /// Call-ID.
        call: String,
    },
    /// The callee answered (200; we sent ACK).
    Answered {
        /// Call-ID.
        call: String,
        /// The SDP answer.
        sdp: Vec<u8>,
    },
    /// The call failed with a final non-2xx (or 408 on timeout).
    Failed {
        /// Call-ID.
        call: String,
        /// Status code.
        code: u16,
    },
    /// A call arrived and was answered.
    Incoming {
        /// Call-ID.
        call: String,
        /// The SDP offer.
        sdp: Vec<u8>,
    },
    /// The call ended (BYE answered, either direction).
    Ended {
        /// Call-ID.
        call: String,
    },
}

impl UaEvent {
    /// The Call-ID the event belongs to; `None` for a registration answer, which
    /// belongs to no call.
    pub fn call(&self) -> Option<&str> {
        match self {
            UaEvent::Ringing { call }
            | UaEvent::Answered { call, .. }
            | UaEvent::Failed { call, .. }
            | UaEvent::Incoming { call, .. }
            | UaEvent::Ended { call } => Some(call),
            UaEvent::Registered { .. } => None,
        }
    }
}

#[derive(Debug)]
struct Dialog {
    from: String,
    to: String,
    remote_target: String,
    cseq: u32,
    invite_key: Option<TxKey>,
    bye_key: Option<TxKey>,
    /// Caller side: the INVITE as sent (a CANCEL copies its Via).
    invite: Option<SipRequest>,
    /// Callee side, ringing: the INVITE's server transaction and request (for 487).
    ringing: Option<(TxKey, SipRequest, String)>,
}

/// A user agent.
pub struct UserAgent {
    cfg: UaConfig,
    tx: Transactions,
    dialogs: BTreeMap<String, Dialog>,
    reg_key: Option<TxKey>,
    events: VecDeque<UaEvent>,
    next: u64,
    /// 2xx answers we retransmit until ACKed (RFC 3261 §13.3.1.4): the UAS core's job.
    unacked: Vec<Unacked>,
}

#[derive(Debug)]
struct Unacked {
    call: String,
    to: Peer,
    bytes: Vec<u8>,
    next: Time,
    interval: std::time::Duration,
    give_up: Time,
}

/// Calls a user agent keeps at once; beyond it new INVITEs get 486.
pub const MAX_DIALOGS: usize = 1024;

impl UserAgent {
    /// A UA; `seed` keeps tags and branches distinct between UAs.
    pub fn new(cfg: UaConfig, seed: u64) -> Self {
        let tx = Transactions::new(cfg.timers, 4 * MAX_DIALOGS, 4 * MAX_DIALOGS);
        UserAgent {
            cfg,
            tx,
            dialogs: BTreeMap::new(),
            reg_key: None,
            events: VecDeque::new(),
            next: seed << 20,
            unacked: Vec::new(),
        }
    }

    fn token(&mut self) -> String {
        self.next += 1;
        format!("{}{:x}", self.cfg.user, self.next)
    }

    fn via(&mut self) -> String {
        let b = self.token();
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK-ua-{b}",
            self.cfg.local.transport.via_name(),
            self.cfg.local.addr
        )
    }

    fn contact(&self) -> String {
        let t = match self.cfg.local.transport {
            crate::Transport::Udp => "",
            crate::Transport::Tcp => ";transport=tcp",
        };
        format!("<sip:{}@{}{t}>", self.cfg.user, self.cfg.local.addr)
    }

    fn aor(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.cfg.domain)
    }

    /// Register our AoR for `expires` seconds (0 unregisters).
    pub fn register(&mut self, now: Time, expires: u32) -> Result<(), msg::MsgError> {
        let via = self.via();
        let tag = self.token();
        let call_id = format!("reg-{}", self.token());
        let me = self.aor(&self.cfg.user);
        let contact = format!("{};expires={expires}", self.contact());
        let mut req = msg::build_request(RequestParts {
            method: SipMethod::Register,
            uri: &format!("sip:{}", self.cfg.domain),
            via: &via,
            from: &format!("<{me}>;tag={tag}"),
            to: &format!("<{me}>"),
            call_id: &call_id,
            cseq: 1,
            contact: Some(&contact),
            sdp: None,
        })?;
        req.push_header("Expires", &expires.to_string())?;
        self.reg_key = self.tx.send_request(now, self.cfg.proxy, req);
        Ok(())
    }

    /// Call `user`@domain with an SDP offer; returns the Call-ID.
    pub fn invite(&mut self, now: Time, user: &str, sdp: &[u8]) -> Result<String, msg::MsgError> {
        let uri = self.aor(user);
        self.invite_uri(now, &uri, sdp)
    }

    /// Call the SIP URI `uri` (any domain) with an SDP offer; returns the Call-ID.
    pub fn invite_uri(
        &mut self,
        now: Time,
        uri: &str,
        sdp: &[u8],
    ) -> Result<String, msg::MsgError> {
        let via = self.via();
        let tag = self.token();
        let call_id = format!("call-{}", self.token());
        let from = format!("<{}>;tag={tag}", self.aor(&self.cfg.user));
        let to = format!("<{uri}>");
        let req = msg::build_request(RequestParts {
            method: SipMethod::Invite,
            uri,
            via: &via,
            from: &from,
            to: &to,
            call_id: &call_id,
            cseq: 1,
            contact: Some(&self.contact()),
            sdp: Some(sdp),
        })?;
        let key = self.tx.send_request(now, self.cfg.proxy, req.clone());
        if self.dialogs.len() < MAX_DIALOGS {
            self.dialogs.insert(
                call_id.clone(),
                Dialog {
                    from,
                    to,
                    remote_target: uri.to_owned(),
                    cseq: 1,
                    invite_key: key,
                    bye_key: None,
                    invite: Some(req),
                    ringing: None,
                },
            );
        }
        Ok(call_id)
    }

    /// Cancel a call that has not been answered yet (the INVITE ends with 487).
    pub fn cancel(&mut self, now: Time, call: &str) {
        let Some(c) = self
            .dialogs
            .get(call)
            .and_then(|d| d.invite.as_ref())
            .and_then(msg::cancel_for)
        else {
            return;
        };
        self.tx.send_request(now, self.cfg.proxy, c);
    }

    /// Hang up an established call.
    pub fn bye(&mut self, now: Time, call: &str) -> Result<(), msg::MsgError> {
        let via = self.via();
        let Some(d) = self.dialogs.get_mut(call) else {
            return Ok(());
        };
        d.cseq += 1;
        let req = msg::build_request(RequestParts {
            method: SipMethod::Bye,
            uri: &d.remote_target,
            via: &via,
            from: &d.from,
            to: &d.to,
            call_id: call,
            cseq: d.cseq,
            contact: None,
            sdp: None,
        })?;
        let key = self.tx.send_request(now, self.cfg.proxy, req);
        if let Some(d) = self.dialogs.get_mut(call) {
            d.bye_key = key;
        }
        Ok(())
    }

    /// A message from the network.
    pub fn handle_message(&mut self, now: Time, from: Peer, m: SipMessage) {
        self.tx.receive(now, from, m);
        self.drain(now);
    }

    /// A datagram from the network.
    pub fn handle_datagram(&mut self, now: Time, from: Peer, bytes: &[u8]) {
        if let Ok(m) = msg::parse_datagram(bytes) {
            self.handle_message(now, from, m);
        }
    }

    fn drain(&mut self, now: Time) {
        while let Some(ev) = self.tx.poll_event() {
            match ev {
                TxEvent::Request { key, req, .. } => self.on_request(now, key, req),
                TxEvent::Response { key, resp } => self.on_response(now, key, resp),
                TxEvent::Unmatched {
                    msg: SipMessage::Request(r),
                    ..
                } if *r.method() == SipMethod::Ack => {
                    let call = r.call_id().unwrap_or_default();
                    self.unacked.retain(|u| u.call != call);
                }
                TxEvent::Unmatched { msg, .. } => {
                    if let SipMessage::Response(r) = msg
                        && r.code() / 100 == 2
                        && let Some(call) = r.call_id()
                        && self.dialogs.contains_key(&call)
                    {
                        // A retransmitted 200: ACK again.
                        self.ack(&call, &r);
                    }
                }
                TxEvent::Timeout { key } => {
                    let call = self
                        .dialogs
                        .iter()
                        .find(|(_, d)| d.invite_key.as_ref() == Some(&key))
                        .map(|(c, _)| c.clone());
                    if let Some(call) = call {
                        self.dialogs.remove(&call);
                        self.events.push_back(UaEvent::Failed { call, code: 408 });
                    }
                }
            }
        }
    }

    fn ack(&mut self, call: &str, ok: &SipResponse) {
        let via = self.via();
        let Some(d) = self.dialogs.get_mut(call) else {
            return;
        };
        if let Some(tag) = ok.to_tag()
            && !d.to.contains(";tag=")
        {
            d.to = format!("{};tag={tag}", d.to);
        }
        if let Some(c) = ok.contact_uri() {
            d.remote_target = c;
        }
        if let Ok(ack) = msg::build_request(RequestParts {
            method: SipMethod::Ack,
            uri: &d.remote_target,
            via: &via,
            from: &d.from,
            to: &d.to,
            call_id: call,
            cseq: 1,
            contact: None,
            sdp: None,
        }) {
            self.tx.send_stateless(self.cfg.proxy, ack.to_bytes());
        }
    }

    fn on_response(&mut self, _now: Time, key: TxKey, resp: SipResponse) {
        if self.reg_key.as_ref() == Some(&key) {
            if resp.code() >= 200 {
                self.reg_key = None;
                self.events
                    .push_back(UaEvent::Registered { code: resp.code() });
            }
            return;
        }
        let Some(call) = resp.call_id() else {
            return;
        };
        let Some(d) = self.dialogs.get(&call) else {
            return;
        };
        let code = resp.code();
        if d.bye_key.as_ref() == Some(&key) {
            if code >= 200 {
                self.dialogs.remove(&call);
                self.events.push_back(UaEvent::Ended { call });
            }
            return;
        }
        if d.invite_key.as_ref() != Some(&key) {
            return;
        }
        match code {
            180 | 183 => self.events.push_back(UaEvent::Ringing { call }),
            200..=299 => {
                self.ack(&call, &resp);
                self.events.push_back(UaEvent::Answered {
                    call,
                    sdp: resp.body().to_vec(),
                });
            }
            c if c >= 300 => {
                self.dialogs.remove(&call);
                self.events.push_back(UaEvent::Failed { call, code: c });
            }
            _ => {}
        }
    }

    fn on_request(&mut self, now: Time, key: TxKey, req: SipRequest) {
        let call = req.call_id().unwrap_or_default();
        match req.method() {
            SipMethod::Invite if req.to_tag().is_none() => {
                let tag = self.token();
                if self.dialogs.len() >= MAX_DIALOGS {
                    if let Ok(r) = req.response(486, "Busy Here", Some(&tag)) {
                        self.tx.send_response(now, &key, r);
                    }
                    return;
                }
                if let Ok(r) = req.response(180, "Ringing", Some(&tag)) {
                    self.tx.send_response(now, &key, r);
                }
                let to = req.header("To").unwrap_or_default();
                self.dialogs.insert(
                    call.clone(),
                    Dialog {
                        // Our side of the dialog: From/To swap for requests we send.
                        from: format!("{to};tag={tag}"),
                        to: req.header("From").unwrap_or_default(),
                        remote_target: req.contact_uri().unwrap_or_default(),
                        cseq: 100,
                        invite_key: None,
                        bye_key: None,
                        invite: None,
                        ringing: Some((key.clone(), req.clone(), tag.clone())),
                    },
                );
                self.events.push_back(UaEvent::Incoming {
                    call: call.clone(),
                    sdp: req.body().to_vec(),
                });
                if self.cfg.auto_answer {
                    self.answer(now, &call);
                }
            }
            SipMethod::Cancel => {
                if let Ok(r) = req.response(200, "OK", None) {
                    self.tx.send_response(now, &key, r);
                }
                if let Some((k, inv, tag)) =
                    self.dialogs.get_mut(&call).and_then(|d| d.ringing.take())
                {
                    self.dialogs.remove(&call);
                    if let Ok(r) = inv.response(487, "Request Terminated", Some(&tag)) {
                        self.tx.send_response(now, &k, r);
                    }
                    self.events.push_back(UaEvent::Ended { call });
                }
            }
            SipMethod::Bye => {
                let known = self.dialogs.remove(&call).is_some();
                let (code, text) = if known {
                    (200, "OK")
                } else {
                    (481, "Call/Transaction Does Not Exist")
                };
                if let Ok(r) = req.response(code, text, None) {
                    self.tx.send_response(now, &key, r);
                }
                if known {
                    self.events.push_back(UaEvent::Ended { call });
                }
            }
            _ => {
                if let Ok(r) = req.response(405, "Method Not Allowed", None) {
                    self.tx.send_response(now, &key, r);
                }
            }
        }
    }

    /// Forget `call` here at once, without a message (its transport is gone: the overlay
    /// could not deliver it). Reports nothing.
    pub fn abandon(&mut self, call: &str) {
        self.dialogs.remove(call);
        self.unacked.retain(|u| u.call != call);
    }

    /// Start the user agent afresh with `seed` (its Call-IDs, tags and branches), keeping
    /// its configuration.
    pub fn reseed(&mut self, seed: u64) {
        *self = UserAgent::new(self.cfg.clone(), seed);
    }

    /// Switch automatic answering on or off.
    pub fn set_auto_answer(&mut self, on: bool) {
        self.cfg.auto_answer = on;
    }

    /// Answer a ringing call with 200 and our SDP.
    pub fn answer(&mut self, now: Time, call: &str) {
        let sdp = self.cfg.sdp_answer.clone();
        self.answer_with(now, call, sdp);
    }

    /// Answer a ringing call with 200 and `sdp` (an answer made for this call, e.g. with
    /// its ICE candidates).
    pub fn answer_with(&mut self, now: Time, call: &str, sdp: Vec<u8>) {
        let Some((key, req, tag)) = self.dialogs.get_mut(call).and_then(|d| d.ringing.take())
        else {
            return;
        };
        if let Ok(mut r) = req.response(200, "OK", Some(&tag)) {
            let _ = r.push_header("Contact", &self.contact());
            let _ = r.set_body("application/sdp", sdp);
            if let Some(to) = self.tx.peer_of(&key)
                && !to.transport.is_reliable()
            {
                let t1 = self.cfg.timers.t1;
                self.unacked.push(Unacked {
                    call: call.to_string(),
                    to,
                    bytes: r.to_bytes(),
                    next: now + t1,
                    interval: t1,
                    give_up: now + t1 * 64,
                });
            }
            self.tx.send_response(now, &key, r);
        }
    }

    /// Run transaction timers due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.tx.handle_timeout(now);
        self.unacked.retain(|u| u.give_up > now);
        let t2 = self.cfg.timers.t2;
        for u in &mut self.unacked {
            if u.next <= now {
                self.tx.send_stateless(u.to, u.bytes.clone());
                u.interval = (u.interval * 2).min(t2);
                u.next = now + u.interval;
            }
        }
        self.drain(now);
    }

    /// Next timer.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.tx
            .poll_timeout()
            .into_iter()
            .chain(self.unacked.iter().map(|u| u.next))
            .min()
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.tx.poll_transmit()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }
}
