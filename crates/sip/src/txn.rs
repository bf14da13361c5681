//! RFC 3261 transactions driven by `now`: sipx-sip's transaction layer plus the timer table
//! and the address each transaction talks to, behind our own small event type.
//!
//! A transaction holds its slot only while it does work: sending, retransmitting, waiting
//! for an answer or an ACK. Once all that is left is waiting out retransmissions of its last
//! messages (Timers D, I, J, K of RFC 3261, L and M of RFC 6026), the slot is freed at once.
//! Over TCP nothing is left behind: the transport does not retransmit. Over UDP a
//! [`Tombstone`] of a few bytes, keyed by a digest of the transaction key, stands in for the
//! rest of the linger time and absorbs the stragglers (resending the final response or the
//! ACK where RFC 3261 says to). Tombstones never refuse work: when their table is full the
//! one closest to its end goes first.

use crate::deadlines::Deadlines;
use crate::msg::{SipMessage, SipRequest, SipResponse};
use overlay::Time;
use sipx_sip::transaction::Dispatch;
use sipx_sip::{
    Message, Method, Output, Reliability, Timer, Timers, TransactionKey, TransactionLayer, TuEvent,
};
use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

/// Heap bytes one transaction in flight takes with SIPp-sized messages (its request, its
/// last response, its timers and keys): 3 881 measured on the heap by
/// `tests/table_memory.rs`, which fails if it grows past this. Table caps are memory
/// budgets divided by this.
pub const TRANSACTION_BYTES: usize = 4608;

/// Heap bytes one tombstone takes besides the message it may resend: 190-200 measured by
/// `tests/table_memory.rs`.
pub const TOMBSTONE_BYTES: usize = 256;

/// Tombstones round their end up to a multiple of this, so they expire in batches and do not
/// wake the driver once per call.
const TOMBSTONE_GRAIN: Duration = Duration::from_millis(500);

/// How a SIP message travels between a UA and us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP datagrams (unreliable: transactions retransmit).
    Udp,
    /// A TCP stream (reliable).
    Tcp,
}

impl Transport {
    /// As written in a Via.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Does the transport retransmit by itself?
    pub fn is_reliable(self) -> bool {
        self == Transport::Tcp
    }

    fn reliability(self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp => Reliability::Reliable,
        }
    }
}

/// A SIP endpoint address: transport and socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// UDP or TCP.
    pub transport: Transport,
    /// Where.
    pub addr: SocketAddr,
}

/// Bytes to put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipTransmit {
    /// Destination.
    pub to: Peer,
    /// One complete SIP message.
    pub bytes: Vec<u8>,
}

/// Handle of one transaction: sipx-sip's key with a total order (field by field), so the
/// tables keyed by transaction are ordered maps and timers due together fire in the same
/// order on every run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxKey(TransactionKey);

/// A transaction key's fields in the order they are compared and hashed: the variant (0:
/// RFC 3261, 1: legacy), then field by field (an RFC 3261 key's three fields fill the first
/// slots, the rest empty).
type KeyFields<'a> = (u8, [&'a [u8]; 5], u32, &'a [u8]);

fn key_fields(key: &TransactionKey) -> KeyFields<'_> {
    match key {
        TransactionKey::Rfc3261 {
            branch,
            sent_by,
            method,
        } => (0, [branch, sent_by, method, &[], &[]], 0, &[]),
        TransactionKey::Legacy {
            request_uri,
            top_via,
            from_tag,
            to_tag,
            call_id,
            cseq,
            method,
        } => (
            1,
            [request_uri, top_via, from_tag, to_tag, call_id],
            *cseq,
            method,
        ),
    }
}

impl Ord for TxKey {
    fn cmp(&self, other: &Self) -> Ordering {
        key_fields(&self.0).cmp(&key_fields(&other.0))
    }
}

impl PartialOrd for TxKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A transaction timer with the order of [`Timer::ALL`] (sipx-sip's `Timer` has none), to
/// key the timer queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimerSlot(Timer);

impl Ord for TimerSlot {
    fn cmp(&self, other: &Self) -> Ordering {
        let rank = |t: Timer| Timer::ALL.iter().position(|x| *x == t);
        rank(self.0).cmp(&rank(other.0))
    }
}

impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A transaction key boiled down to 16 bytes (SHA-256, truncated): what a [`Tombstone`] is
/// kept under. `server` keeps a server and a client transaction with the same key apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct KeyDigest([u8; 16]);

impl KeyDigest {
    fn of(key: &TransactionKey, server: bool) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut part = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        part(if server { b"server" } else { b"client" });
        let (variant, fields, cseq, method) = key_fields(key);
        part(if variant == 0 { b"rfc3261" } else { b"legacy" });
        for p in fields {
            part(p);
        }
        part(&cseq.to_be_bytes());
        part(method);
        let d = ctx.finish();
        let mut out = [0; 16];
        out.copy_from_slice(d.as_ref().get(..16).unwrap_or(&[0; 16]));
        KeyDigest(out)
    }
}

/// What is left of a transaction that only waits out retransmissions over UDP, and what a
/// retransmission that reaches it gets.
#[derive(Debug)]
enum Tombstone {
    /// Send these bytes again to `to`: the final response of a non-INVITE server transaction
    /// (Timer J), the ACK of an INVITE client transaction that got a non-2xx (Timer D).
    Resend {
        /// Where the transaction talked to.
        to: Peer,
        /// The message, as sent.
        bytes: Box<[u8]>,
    },
    /// Swallow it: ACKs after a non-2xx was acknowledged (Timer I), responses to a non-INVITE
    /// request already answered (Timer K).
    Absorb,
    /// An INVITE server transaction that sent a 2xx (Timer L): swallow the INVITE's
    /// retransmissions; an ACK is the user's (RFC 6026).
    Accepted,
}

/// What the transactions hand to their user.
#[derive(Debug)]
pub enum TxEvent {
    /// A new request (a retransmission never shows here).
    Request {
        /// Its server transaction.
        key: TxKey,
        /// The request.
        req: SipRequest,
        /// Who sent it.
        from: Peer,
    },
    /// A response to one of our client transactions.
    Response {
        /// The client transaction.
        key: TxKey,
        /// The response.
        resp: SipResponse,
    },
    /// A message no transaction claimed: an ACK for a 2xx, a stray response.
    Unmatched {
        /// The message.
        msg: SipMessage,
        /// Who sent it.
        from: Peer,
    },
    /// A client transaction got no final answer within 64·T1.
    Timeout {
        /// The client transaction.
        key: TxKey,
    },
}

/// The transactions of one SIP element.
pub struct Transactions {
    layer: TransactionLayer,
    /// Every armed transaction timer, earliest first.
    timers: Deadlines<(TxKey, TimerSlot)>,
    dest: BTreeMap<TxKey, Peer>,
    max: usize,
    /// Finished UDP transactions still absorbing retransmissions.
    tombstones: BTreeMap<KeyDigest, Tombstone>,
    /// When each tombstone goes.
    tombstone_expiry: Deadlines<KeyDigest>,
    max_tombstones: usize,
    out: VecDeque<SipTransmit>,
    events: VecDeque<TxEvent>,
}

impl Transactions {
    /// At most `max` transactions at once (client and server together), and at most
    /// `max_tombstones` finished ones absorbing retransmissions (beyond it the oldest go).
    pub fn new(timers: Timers, max: usize, max_tombstones: usize) -> Self {
        Transactions {
            layer: TransactionLayer::new(timers),
            timers: Deadlines::default(),
            dest: BTreeMap::new(),
            max,
            tombstones: BTreeMap::new(),
            tombstone_expiry: Deadlines::default(),
            max_tombstones,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Transactions in flight.
    pub fn len(&self) -> usize {
        let (c, s) = self.layer.len();
        c + s
    }

    /// None in flight?
    pub fn is_empty(&self) -> bool {
        self.layer.is_empty()
    }

    /// Finished transactions still absorbing UDP retransmissions.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// Is the table full (new requests get 503)?
    pub fn is_full(&self) -> bool {
        self.len() >= self.max
    }

    /// Feed a message from the network.
    pub fn receive(&mut self, now: Time, from: Peer, msg: SipMessage) {
        let msg = msg.into_sipx();
        if !self.tombstones.is_empty() && self.absorbed(&msg, from) {
            return;
        }
        match self.layer.receive(msg, from.transport.reliability()) {
            Dispatch::Created { key, outputs } => {
                let key = TxKey(key);
                self.dest.insert(key.clone(), from);
                self.apply(now, &key, outputs, Some(from));
            }
            Dispatch::Matched { key, outputs } => self.apply(now, &TxKey(key), outputs, Some(from)),
            Dispatch::Unmatched(m) => self.events.push_back(TxEvent::Unmatched {
                msg: SipMessage::from_sipx(*m),
                from,
            }),
        }
    }

    /// Did a tombstone take `msg` (a retransmission of a finished transaction's message)?
    fn absorbed(&mut self, msg: &Message, from: Peer) -> bool {
        let (key, server) = match msg {
            Message::Request(r) => (TransactionKey::from_request(r), true),
            Message::Response(r) => (TransactionKey::from_response(r), false),
        };
        let Some(key) = key else {
            return false;
        };
        let Some(stone) = self.tombstones.get(&KeyDigest::of(&key, server)) else {
            return false;
        };
        match (stone, msg) {
            // An ACK for a 2xx, or a 2xx after our ACK for a non-2xx (a forking proxy's
            // other branch): the user's.
            (Tombstone::Accepted, Message::Request(r)) if r.method == Method::Ack => false,
            (Tombstone::Resend { .. }, Message::Response(r)) if r.status.is_success() => false,
            (Tombstone::Resend { to, bytes }, _) => {
                if to.addr == from.addr {
                    self.out.push_back(SipTransmit {
                        to: *to,
                        bytes: bytes.to_vec(),
                    });
                }
                true
            }
            _ => true,
        }
    }

    /// Send a request to `to` in a new client transaction; `None` (nothing sent) when the
    /// table is full, so requests arriving from the overlay cannot grow it past `max`.
    pub fn send_request(&mut self, now: Time, to: Peer, req: SipRequest) -> Option<TxKey> {
        if self.is_full() {
            return None;
        }
        let (key, outputs) = self.layer.send_request(req.0, to.transport.reliability())?;
        let key = TxKey(key);
        self.dest.insert(key.clone(), to);
        self.apply(now, &key, outputs, None);
        Some(key)
    }

    /// Answer a server transaction (nothing happens if it is gone: see [`is_open`](Self::is_open)).
    pub fn send_response(&mut self, now: Time, key: &TxKey, resp: SipResponse) {
        let outputs = self.layer.send_response(&key.0, resp.0);
        self.apply(now, key, outputs, None);
    }

    /// Is transaction `key` still in flight? An INVITE server transaction is not once it has
    /// sent a 2xx: that answer's retransmissions are the user's to send, statelessly.
    pub fn is_open(&self, key: &TxKey) -> bool {
        self.layer.server_state(&key.0).is_some() || self.layer.client_state(&key.0).is_some()
    }

    /// Send a message outside any transaction (ACK for 2xx, a stateless 400/503).
    pub fn send_stateless(&mut self, to: Peer, bytes: Vec<u8>) {
        self.out.push_back(SipTransmit { to, bytes });
    }

    /// Forget a server transaction its user will not answer.
    pub fn abandon(&mut self, key: &TxKey) {
        self.layer.abandon(&key.0);
        self.forget(key);
    }

    /// Where a transaction talks to.
    pub fn peer_of(&self, key: &TxKey) -> Option<Peer> {
        self.dest.get(key).copied()
    }

    fn forget(&mut self, key: &TxKey) {
        if self.dest.remove(key).is_none() {
            return;
        }
        let [first, .., last] = Timer::ALL;
        self.timers
            .remove_range((key.clone(), TimerSlot(first))..=(key.clone(), TimerSlot(last)));
    }

    fn apply(&mut self, now: Time, key: &TxKey, outputs: Vec<Output>, from: Option<Peer>) {
        // The timer that, if armed, leaves the transaction only waiting out retransmissions.
        let mut linger = None;
        let mut sent = false;
        for o in outputs {
            match o {
                Output::Send(m) => {
                    if let Some(to) = self.dest.get(key).copied().or(from) {
                        let mut bytes = Vec::with_capacity(512);
                        m.write_to(&mut bytes);
                        self.out.push_back(SipTransmit { to, bytes });
                        sent = true;
                    }
                }
                Output::SetTimer { timer, after } if is_linger(timer) => {
                    linger = Some((timer, after));
                }
                Output::SetTimer { timer, after } => {
                    self.timers
                        .set((key.clone(), TimerSlot(timer)), now + after);
                }
                Output::ClearTimer(timer) => {
                    self.timers.remove(&(key.clone(), TimerSlot(timer)));
                }
                Output::ToTu(ev) => match *ev {
                    TuEvent::Request(r) => {
                        if let Some(from) = self.dest.get(key).copied().or(from) {
                            self.events.push_back(TxEvent::Request {
                                key: key.clone(),
                                req: SipRequest(*r),
                                from,
                            });
                        }
                    }
                    TuEvent::Response(r) => self.events.push_back(TxEvent::Response {
                        key: key.clone(),
                        resp: SipResponse(*r),
                    }),
                    TuEvent::Ack(r) => {
                        if let Some(from) = from {
                            self.events.push_back(TxEvent::Unmatched {
                                msg: SipMessage::Request(SipRequest(*r)),
                                from,
                            });
                        }
                    }
                    TuEvent::Timeout | TuEvent::TransportError => {
                        self.events.push_back(TxEvent::Timeout { key: key.clone() })
                    }
                    _ => {}
                },
                Output::Terminated(_) => self.forget(key),
                _ => {}
            }
        }
        if let Some((timer, after)) = linger {
            self.retire(now, key, timer, after, sent);
        }
        // The layer drops terminated transactions itself; drop our side too.
        if self.layer.client_state(&key.0).is_none() && self.layer.server_state(&key.0).is_none() {
            self.forget(key);
        }
    }

    /// `key` has nothing left to do but wait `after` on its linger `timer`: end it now and,
    /// over UDP, leave a tombstone for the wait. `sent`: the message it just sent (the last
    /// one queued) is what a retransmission gets.
    fn retire(&mut self, now: Time, key: &TxKey, timer: Timer, after: Duration, sent: bool) {
        let to = self.dest.get(key).copied();
        let server = self.layer.server_state(&key.0).is_some();
        // The linger timer fires now: the transaction terminates and frees its slot.
        let _ = self.layer.on_timer(&key.0, timer);
        self.forget(key);
        let Some(to) = to else {
            return;
        };
        if to.transport.is_reliable() || after.is_zero() {
            return;
        }
        let stone = match timer {
            Timer::J | Timer::D => match self.out.back() {
                Some(last) if sent => Tombstone::Resend {
                    to,
                    bytes: last.bytes.clone().into_boxed_slice(),
                },
                _ => Tombstone::Absorb,
            },
            Timer::L => Tombstone::Accepted,
            Timer::I | Timer::K => Tombstone::Absorb,
            // Timer M: a retransmitted 2xx is the user's anyway (it arrives unmatched).
            _ => return,
        };
        while self.tombstones.len() >= self.max_tombstones.max(1) {
            let Some((_, oldest)) = self.tombstone_expiry.pop_first() else {
                break;
            };
            self.tombstones.remove(&oldest);
        }
        let digest = KeyDigest::of(&key.0, server);
        let grain = TOMBSTONE_GRAIN.as_micros().max(1) as u64;
        let end = (now + after).as_micros().div_ceil(grain) * grain;
        self.tombstone_expiry.set(digest, Time(end));
        self.tombstones.insert(digest, stone);
    }

    /// Fire the timers due at `now`, earliest first (ties in transaction order). Only those
    /// armed before the call: a timer a firing one arms for `now` waits for the next call.
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<(TxKey, TimerSlot)> =
            std::iter::from_fn(|| self.timers.pop_due(now)).collect();
        for (key, TimerSlot(timer)) in due {
            let outputs = self.layer.on_timer(&key.0, timer);
            self.apply(now, &key, outputs, None);
        }
        while let Some(d) = self.tombstone_expiry.pop_due(now) {
            self.tombstones.remove(&d);
        }
    }

    /// Earliest timer.
    pub fn poll_timeout(&self) -> Option<Time> {
        [self.timers.next(), self.tombstone_expiry.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.out.pop_front()
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }
}

/// Is `timer` one that only waits out retransmissions (the transaction's work is done)?
fn is_linger(timer: Timer) -> bool {
    matches!(
        timer,
        Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{RequestParts, SipMethod, build_request};

    #[test]
    fn transaction_keys_order_rfc3261_first_then_field_by_field() {
        let rfc = |branch: &[u8], method: &[u8]| {
            TxKey(TransactionKey::Rfc3261 {
                branch: branch.to_vec(),
                sent_by: b"h".to_vec(),
                method: method.to_vec(),
            })
        };
        let legacy = |cseq: u32, method: &[u8]| {
            TxKey(TransactionKey::Legacy {
                request_uri: b"sip:b".to_vec(),
                top_via: b"v".to_vec(),
                from_tag: b"f".to_vec(),
                to_tag: Vec::new(),
                call_id: b"c".to_vec(),
                cseq,
                method: method.to_vec(),
            })
        };
        let mut keys = vec![
            legacy(2, b"BYE"),
            legacy(1, b"INVITE"),
            rfc(b"z9hG4bK2", b"BYE"),
            legacy(1, b"BYE"),
            rfc(b"z9hG4bK1", b"INVITE"),
            rfc(b"z9hG4bK1", b"BYE"),
        ];
        keys.sort();
        let want = [
            rfc(b"z9hG4bK1", b"BYE"),
            rfc(b"z9hG4bK1", b"INVITE"),
            rfc(b"z9hG4bK2", b"BYE"),
            legacy(1, b"BYE"),
            legacy(1, b"INVITE"),
            legacy(2, b"BYE"),
        ];
        assert_eq!(keys, want);
        assert_eq!(rfc(b"a", b"X").cmp(&rfc(b"a", b"X")), Ordering::Equal);
    }

    /// Where the tests' requests go: bob's UA over UDP.
    fn bob() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5170".parse().unwrap(),
        }
    }

    /// A request from alice to bob; `branch` makes its Via branch, and so its transaction.
    /// An INVITE starts a dialog (no To tag); any other method is sent within one.
    fn request_to_bob(method: SipMethod, branch: &str) -> SipRequest {
        let via = format!("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{branch}");
        let to = match method {
            SipMethod::Invite => "<sip:bob@p2psip.test>",
            _ => "<sip:bob@p2psip.test>;tag=b",
        };
        build_request(RequestParts {
            method,
            uri: "sip:bob@127.0.0.1:5170",
            via: &via,
            from: "<sip:alice@p2psip.test>;tag=a",
            to,
            call_id: "l@x",
            cseq: 1,
            contact: None,
            sdp: None,
        })
        .unwrap()
    }

    #[test]
    fn client_transactions_stop_at_the_cap() {
        let mut tx = Transactions::new(Timers::default(), 2, 2);
        let to = bob();
        let req = |n: u32| request_to_bob(SipMethod::Bye, &format!("t{n}"));
        let now = Time::from_millis(1);
        assert!(tx.send_request(now, to, req(1)).is_some());
        assert!(tx.send_request(now, to, req(2)).is_some());
        assert!(tx.send_request(now, to, req(3)).is_none());
        assert_eq!(tx.len(), 2);
        assert_eq!(std::iter::from_fn(|| tx.poll_transmit()).count(), 2);
    }

    /// Timers due together fire in the same order on every run, whatever order the
    /// transactions were opened in.
    #[test]
    fn due_timers_fire_in_one_order() {
        let to = bob();
        let req = |n: u32| request_to_bob(SipMethod::Options, &format!("d{n}"));
        let run = |order: &[u32]| {
            let mut tx = Transactions::new(Timers::default(), 1000, 1000);
            let start = Time::from_millis(1);
            for &n in order {
                assert!(tx.send_request(start, to, req(n)).is_some());
            }
            while tx.poll_transmit().is_some() {}
            // Every Timer E is due at once: the retransmissions come out in one batch.
            let t = tx.poll_timeout().unwrap();
            tx.handle_timeout(t);
            std::iter::from_fn(|| tx.poll_transmit())
                .map(|t| t.bytes)
                .collect::<Vec<_>>()
        };
        let forward: Vec<u32> = (0..300).collect();
        let backward: Vec<u32> = (0..300).rev().collect();
        let first = run(&forward);
        assert_eq!(first.len(), 300);
        assert_eq!(first, run(&forward));
        assert_eq!(first, run(&backward));
    }

    /// Alice's UA, sending to us over `transport`.
    fn alice(transport: Transport) -> Peer {
        Peer {
            transport,
            addr: "127.0.0.1:5150".parse().unwrap(),
        }
    }

    /// Requests the transactions hand up, and the messages they send.
    fn drain(tx: &mut Transactions) -> (Vec<TxEvent>, Vec<SipTransmit>) {
        (
            std::iter::from_fn(|| tx.poll_event()).collect(),
            std::iter::from_fn(|| tx.poll_transmit()).collect(),
        )
    }

    /// A request as it arrives from alice's UA.
    fn from_alice(method: SipMethod, branch: &str) -> SipMessage {
        SipMessage::Request(request_to_bob(method, branch))
    }

    /// A BYE answered over UDP frees its slot at once; what is left absorbs the BYE's
    /// retransmissions with the same 200 until Timer J (64·T1) has passed, after which the
    /// same branch is a new transaction again. Over TCP nothing is left at all.
    #[test]
    fn an_answered_request_leaves_a_tombstone_over_udp_and_nothing_over_tcp() {
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut tx = Transactions::new(Timers::default(), 8, 8);
            let ua = alice(transport);
            let t0 = Time::from_millis(1);
            tx.receive(t0, ua, from_alice(SipMethod::Bye, "bye1"));
            let (events, _) = drain(&mut tx);
            let [TxEvent::Request { key, req, .. }] = &events[..] else {
                panic!("{events:?}");
            };
            tx.send_response(t0, key, req.response(200, "OK", None).unwrap());
            let (_, sent) = drain(&mut tx);
            assert_eq!(sent.len(), 1);
            assert_eq!(tx.len(), 0, "{transport:?}: the answered BYE kept its slot");
            assert!(!tx.is_open(key));
            if transport == Transport::Tcp {
                assert_eq!(tx.tombstones(), 0);
                assert_eq!(tx.poll_timeout(), None);
                continue;
            }
            assert_eq!(tx.tombstones(), 1);
            // A retransmission gets the same 200, and its user hears nothing.
            let t1 = t0 + Duration::from_secs(2);
            tx.receive(t1, ua, from_alice(SipMethod::Bye, "bye1"));
            let (events, again) = drain(&mut tx);
            assert!(events.is_empty(), "{events:?}");
            assert_eq!(again, sent);
            // Timer J passes: the tombstone goes, and the branch is new again.
            let t2 = t0 + Timers::default().timeout();
            tx.handle_timeout(t2);
            assert_eq!(tx.tombstones(), 1, "the tombstone went before Timer J");
            let end = tx.poll_timeout().unwrap();
            assert!(end <= t2 + TOMBSTONE_GRAIN);
            tx.handle_timeout(end);
            assert_eq!(tx.tombstones(), 0);
            tx.receive(end, ua, from_alice(SipMethod::Bye, "bye1"));
            assert!(matches!(drain(&mut tx).0[..], [TxEvent::Request { .. }]));
        }
    }

    /// After a 2xx to an INVITE over UDP the transaction is gone; its tombstone swallows
    /// the INVITE's retransmissions (RFC 6026 Timer L) and lets an ACK through to the user.
    #[test]
    fn an_accepted_invite_absorbs_retransmissions_and_passes_the_ack() {
        let mut tx = Transactions::new(Timers::default(), 8, 8);
        let ua = alice(Transport::Udp);
        let t0 = Time::from_millis(1);
        tx.receive(t0, ua, from_alice(SipMethod::Invite, "inv1"));
        let (events, _) = drain(&mut tx);
        let [TxEvent::Request { key, req, .. }] = &events[..] else {
            panic!("{events:?}");
        };
        tx.send_response(t0, key, req.response(200, "OK", Some("b")).unwrap());
        drain(&mut tx);
        assert_eq!((tx.len(), tx.tombstones()), (0, 1));
        tx.receive(t0, ua, from_alice(SipMethod::Invite, "inv1"));
        assert!(matches!(drain(&mut tx), (e, s) if e.is_empty() && s.is_empty()));
        tx.receive(t0, ua, from_alice(SipMethod::Ack, "inv1"));
        let (events, _) = drain(&mut tx);
        assert!(
            matches!(events[..], [TxEvent::Unmatched { .. }]),
            "{events:?}"
        );
    }

    /// A full tombstone table makes room by dropping the tombstone closest to its end; it
    /// never refuses a transaction.
    #[test]
    fn tombstones_beyond_their_cap_drop_the_oldest() {
        let mut tx = Transactions::new(Timers::default(), 8, 2);
        let ua = alice(Transport::Udp);
        for (n, at) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
            let now = Time::from_millis(at);
            tx.receive(now, ua, from_alice(SipMethod::Bye, &format!("b{n}")));
            let (events, _) = drain(&mut tx);
            let [TxEvent::Request { key, req, .. }] = &events[..] else {
                panic!("{events:?}");
            };
            tx.send_response(now, key, req.response(200, "OK", None).unwrap());
            drain(&mut tx);
        }
        assert_eq!(tx.tombstones(), 2);
        let now = Time::from_millis(4_000);
        // The first BYE's tombstone went: its retransmission is a new request.
        tx.receive(now, ua, from_alice(SipMethod::Bye, "b1"));
        assert!(matches!(drain(&mut tx).0[..], [TxEvent::Request { .. }]));
        // The third's is still there.
        tx.receive(now, ua, from_alice(SipMethod::Bye, "b3"));
        let (events, sent) = drain(&mut tx);
        assert!(events.is_empty() && sent.len() == 1);
    }
}
