//! RFC 3261 transactions driven by `now`: sipx-sip's transaction layer plus the timer table
//! and the address each transaction talks to, behind our own small event type.

use crate::deadlines::Deadlines;
use crate::msg::{SipMessage, SipRequest, SipResponse};
use overlay::Time;
use sipx_sip::transaction::Dispatch;
use sipx_sip::{Output, Reliability, Timer, Timers, TransactionKey, TransactionLayer, TuEvent};
use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

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

impl Ord for TxKey {
    fn cmp(&self, other: &Self) -> Ordering {
        use TransactionKey::{Legacy, Rfc3261};
        match (&self.0, &other.0) {
            (
                Rfc3261 {
                    branch,
                    sent_by,
                    method,
                },
                Rfc3261 {
                    branch: b,
                    sent_by: s,
                    method: m,
                },
            ) => (branch, sent_by, method).cmp(&(b, s, m)),
            (Rfc3261 { .. }, Legacy { .. }) => Ordering::Less,
            (Legacy { .. }, Rfc3261 { .. }) => Ordering::Greater,
            (
                Legacy {
                    request_uri,
                    top_via,
                    from_tag,
                    to_tag,
                    call_id,
                    cseq,
                    method,
                },
                Legacy {
                    request_uri: u,
                    top_via: v,
                    from_tag: f,
                    to_tag: t,
                    call_id: c,
                    cseq: n,
                    method: m,
                },
            ) => (
                request_uri,
                top_via,
                from_tag,
                to_tag,
                call_id,
                cseq,
                method,
            )
                .cmp(&(u, v, f, t, c, n, m)),
        }
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
    out: VecDeque<SipTransmit>,
    events: VecDeque<TxEvent>,
}

impl Transactions {
    /// At most `max` transactions at once (client and server together).
    pub fn new(timers: Timers, max: usize) -> Self {
        Transactions {
            layer: TransactionLayer::new(timers),
            timers: Deadlines::default(),
            dest: BTreeMap::new(),
            max,
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

    /// Is the table full (new requests get 503)?
    pub fn is_full(&self) -> bool {
        self.len() >= self.max
    }

    /// Feed a message from the network.
    pub fn receive(&mut self, now: Time, from: Peer, msg: SipMessage) {
        match self
            .layer
            .receive(msg.into_sipx(), from.transport.reliability())
        {
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

    /// Answer a server transaction.
    pub fn send_response(&mut self, now: Time, key: &TxKey, resp: SipResponse) {
        let outputs = self.layer.send_response(&key.0, resp.0);
        self.apply(now, key, outputs, None);
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
        self.dest.remove(key);
        for t in Timer::ALL {
            self.timers.remove(&(key.clone(), TimerSlot(t)));
        }
    }

    fn apply(&mut self, now: Time, key: &TxKey, outputs: Vec<Output>, from: Option<Peer>) {
        for o in outputs {
            match o {
                Output::Send(m) => {
                    if let Some(to) = self.dest.get(key).copied().or(from) {
                        let mut bytes = Vec::with_capacity(512);
                        m.write_to(&mut bytes);
                        self.out.push_back(SipTransmit { to, bytes });
                    }
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
        // The layer drops terminated transactions itself; drop our side too.
        if self.layer.client_state(&key.0).is_none() && self.layer.server_state(&key.0).is_none() {
            self.forget(key);
        }
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
    }

    /// Earliest timer.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.next()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{RequestParts, SipMethod, build_request};

    /// Where the tests' requests go: bob's UA over UDP.
    fn bob() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5170".parse().unwrap(),
        }
    }

    /// A request from alice to bob; `branch` makes its Via branch, and so its transaction.
    fn request_to_bob(
        method: SipMethod,
        branch: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
    ) -> SipRequest {
        let via = format!("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{branch}");
        build_request(RequestParts {
            method,
            uri: "sip:bob@127.0.0.1:5170",
            via: &via,
            from: "<sip:alice@p2psip.test>;tag=a",
            to,
            call_id,
            cseq,
            contact: None,
            sdp: None,
        })
        .unwrap()
    }

    #[test]
    fn client_transactions_stop_at_the_cap() {
        let mut tx = Transactions::new(Timers::default(), 2);
        let to = bob();
        let req = |n: u32| {
            request_to_bob(
                SipMethod::Bye,
                &format!("t{n}"),
                "<sip:bob@p2psip.test>;tag=b",
                "c@x",
                n,
            )
        };
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
        let req = |n: u32| {
            request_to_bob(
                SipMethod::Options,
                &format!("d{n}"),
                "<sip:bob@p2psip.test>",
                &format!("d{n}@x"),
                1,
            )
        };
        let run = |order: &[u32]| {
            let mut tx = Transactions::new(Timers::default(), 1000);
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
}
