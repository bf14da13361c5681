//! SIP on top of the test network: phones (sans-IO [`UserAgent`]s), the datagrams between
//! them and their front-ends, and the front-ends on secure peers of a [`Network`].
//!
//! A [`SipWorld`] runs phones against any set of [`FrontEnds`]: SIP datagrams take no time
//! and are delivered as soon as they are sent; between two of them the front-ends' overlay
//! handles one input ([`FrontEnds::step_overlay`]), so the clock is the overlay's. Two sets
//! are here: [`LoopbackFrontEnds`] on the in-process overlay (which takes no time), and the
//! peers of a [`Network`] running [`PeerCore`]s.

use crate::network::Network;
use crate::peer::{Peer as NetPeer, authenticated};
use overlay::driver::SecureCore;
use overlay::secure::SecureEvent;
use overlay::secure::{Ed25519Registry, Ed25519Signer};
use overlay::{Contact, NodeId, Time};
use sip::ua::{UaConfig, UaEvent, UserAgent};
use sip::{
    FrontEnd, FrontEndConfig, LoopbackNet, LoopbackOverlay, Peer, PeerCore, PeerEvent, SipInbound,
    SipTransmit,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Most datagrams and overlay inputs one [`SipWorld::run`] handles before it calls the run
/// runaway (two parties answering each other forever).
const MAX_INPUTS_PER_RUN: u32 = 1_000_000;

/// The front-ends the phones talk to, over whatever overlay joins them.
pub trait FrontEnds {
    /// The clock.
    fn now(&self) -> Time;
    /// Hand a datagram from `from` to the front-end listening on `to`; false if none does.
    fn handle_datagram(&mut self, from: Peer, to: Peer, bytes: &[u8]) -> bool;
    /// The next datagram a front-end sends, with the address it leaves from.
    fn poll_transmit(&mut self) -> Option<(Peer, SipTransmit)>;
    /// Handle the overlay's next input at or before `deadline` (moving the clock to it);
    /// false if there is none.
    fn step_overlay(&mut self, deadline: Time) -> bool;
    /// Move the clock to `to` (nothing is left before it) and run what falls due.
    fn advance(&mut self, to: Time);
}

/// SIP phones, the datagrams on their way and what the phones reported.
#[derive(Default)]
pub struct Phones {
    uas: Vec<(UserAgent, Peer)>,
    wire: VecDeque<(Peer, SipTransmit)>,
    events: Vec<(usize, UaEvent)>,
    drop_next: Option<&'static str>,
    dropped: u64,
}

impl Phones {
    /// Add a phone for `user@domain` listening on `local`, registering and calling through
    /// `proxy`, answering calls at once with `sdp_answer`. Returns its index.
    pub fn add(
        &mut self,
        user: &str,
        domain: &str,
        local: Peer,
        proxy: Peer,
        sdp_answer: &[u8],
    ) -> usize {
        let cfg = UaConfig {
            user: user.into(),
            domain: domain.into(),
            local,
            proxy,
            sdp_answer: sdp_answer.to_vec(),
            auto_answer: true,
            timers: sipx_sip::Timers::default(),
        };
        let index = self.uas.len();
        self.uas
            .push((UserAgent::new(cfg, index as u64 + 1), local));
        index
    }

    /// Phone `ua`. Panics if there is none (a test's own mistake).
    pub fn ua(&mut self, ua: usize) -> &mut UserAgent {
        match self.uas.get_mut(ua) {
            Some((ua, _)) => ua,
            None => panic!("no phone {ua}"),
        }
    }

    /// Drop the next datagram (either way) whose text starts with `prefix`.
    pub fn drop_next(&mut self, prefix: &'static str) {
        self.drop_next = Some(prefix);
    }

    /// Datagrams dropped by [`drop_next`](Self::drop_next).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Everything the phones reported, with the phone's index.
    pub fn events(&self) -> &[(usize, UaEvent)] {
        &self.events
    }

    /// Take what the phones reported so far (a long run reads them as it goes).
    pub fn take_events(&mut self) -> Vec<(usize, UaEvent)> {
        std::mem::take(&mut self.events)
    }

    /// Did phone `ua` report an event `what` accepts?
    pub fn has(&self, ua: usize, what: impl Fn(&UaEvent) -> bool) -> bool {
        self.events.iter().any(|(i, e)| *i == ua && what(e))
    }

    /// Phone `ua` reported `event`; else panic with every event.
    #[track_caller]
    pub fn expect(&self, ua: usize, event: UaEvent) {
        assert!(
            self.has(ua, |e| *e == event),
            "phone {ua} did not report {event:?}: {:?}",
            self.events
        );
    }

    /// Phone `ua` reported an event `what` accepts; else panic with every event.
    #[track_caller]
    pub fn expect_that(&self, ua: usize, what: impl Fn(&UaEvent) -> bool) {
        assert!(self.has(ua, what), "phone {ua}: {:?}", self.events);
    }

    /// Phone `caller` heard call `call` ring and be answered with `answer`, and phone
    /// `callee` received it with `offer`; else panic with every event.
    #[track_caller]
    pub fn expect_answered(
        &self,
        caller: usize,
        callee: usize,
        call: &str,
        offer: &[u8],
        answer: &[u8],
    ) {
        let call = call.to_string();
        self.expect(caller, UaEvent::Ringing { call: call.clone() });
        let answered = UaEvent::Answered {
            call: call.clone(),
            sdp: answer.to_vec(),
        };
        self.expect(caller, answered);
        let incoming = UaEvent::Incoming {
            call,
            sdp: offer.to_vec(),
        };
        self.expect(callee, incoming);
    }

    /// Take the phones' datagrams and events.
    fn collect(&mut self) {
        for (i, (ua, local)) in self.uas.iter_mut().enumerate() {
            while let Some(t) = ua.poll_transmit() {
                self.wire.push_back((*local, t));
            }
            while let Some(e) = ua.poll_event() {
                self.events.push((i, e));
            }
        }
    }

    /// Deliver every datagram on the wire, phones' and front-ends' answers included, until
    /// none is left. Returns whether there was any.
    fn deliver(&mut self, front_ends: &mut impl FrontEnds) -> bool {
        let mut any = false;
        loop {
            self.collect();
            while let Some((from, t)) = front_ends.poll_transmit() {
                self.wire.push_back((from, t));
            }
            let Some((from, t)) = self.wire.pop_front() else {
                return any;
            };
            any = true;
            if let Some(prefix) = self.drop_next
                && t.bytes.starts_with(prefix.as_bytes())
            {
                self.drop_next = None;
                self.dropped += 1;
                continue;
            }
            if front_ends.handle_datagram(from, t.to, &t.bytes) {
                continue;
            }
            let now = front_ends.now();
            if let Some((ua, _)) = self.uas.iter_mut().find(|(_, l)| l.addr == t.to.addr) {
                ua.handle_datagram(now, from, &t.bytes);
            }
        }
    }
}

/// Phones and front-ends on one clock.
pub struct SipWorld<F> {
    /// The phones.
    pub phones: Phones,
    /// The front-ends and their overlay.
    pub front_ends: F,
}

impl<F: FrontEnds> SipWorld<F> {
    /// Phones to be added, talking to `front_ends`.
    pub fn new(front_ends: F) -> Self {
        SipWorld {
            phones: Phones::default(),
            front_ends,
        }
    }

    /// The clock.
    pub fn now(&self) -> Time {
        self.front_ends.now()
    }

    /// Run `ms` of virtual time: datagrams as they are sent, the overlay's inputs as they
    /// fall due; then the phones' timers.
    pub fn run(&mut self, ms: u64) {
        let end = self.now() + Duration::from_millis(ms);
        for _ in 0..MAX_INPUTS_PER_RUN {
            let sip = self.phones.deliver(&mut self.front_ends);
            if !self.front_ends.step_overlay(end) && !sip {
                self.front_ends.advance(end);
                for (ua, _) in &mut self.phones.uas {
                    ua.handle_timeout(end);
                }
                return;
            }
        }
        panic!("SIP world runaway: {MAX_INPUTS_PER_RUN} inputs before {end:?}");
    }

    /// Run `ms` in steps of 50 ms.
    pub fn settle(&mut self, ms: u64) {
        for _ in 0..(ms / 50).max(1) {
            self.run(50);
        }
    }

    /// Phone `ua`'s user agent and the clock, for an input.
    pub fn ua(&mut self, ua: usize) -> (&mut UserAgent, Time) {
        let now = self.now();
        (self.phones.ua(ua), now)
    }
}

/// One front-end on its handle of the in-process overlay.
pub struct LoopbackFrontEnd {
    /// The front-end.
    pub fe: FrontEnd,
    /// Its handle of the overlay.
    pub ov: LoopbackOverlay,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Front-ends joined by the in-process overlay ([`LoopbackNet`]), which takes no time: the
/// front-end logic alone, on a virtual clock.
pub struct LoopbackFrontEnds {
    /// The overlay.
    pub net: LoopbackNet,
    /// The front-ends, the `i`-th on `127.0.0.{i+1}:5060`.
    pub nodes: Vec<LoopbackFrontEnd>,
    now: Time,
}

impl LoopbackFrontEnds {
    /// `count` front-ends for `domain`, each on its own peer (node IDs from 100) with a
    /// fresh signing key; `configure` adjusts each one's defaults.
    pub fn new(count: usize, domain: &str, configure: impl Fn(&mut FrontEndConfig)) -> Self {
        const UNIX_OFFSET_MS: u64 = 1_700_000_000_000;
        let mut keys = Ed25519Registry::default();
        let mut signers = Vec::new();
        for i in 0..count {
            let Ok((s, _)) = Ed25519Signer::generate() else {
                panic!("no signing key");
            };
            keys.insert(NodeId(100 + i as u128), s.public_key());
            signers.push(s);
        }
        let keys = Arc::new(keys);
        let net = LoopbackNet::new(keys.clone(), UNIX_OFFSET_MS);
        let nodes = signers
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let addr = SocketAddr::from(([127, 0, 0, i as u8 + 1], 5060));
                let mut cfg = FrontEndConfig::new(domain, addr);
                cfg.unix_offset_ms = UNIX_OFFSET_MS;
                configure(&mut cfg);
                let id = NodeId(100 + i as u128);
                LoopbackFrontEnd {
                    fe: FrontEnd::new(cfg, id, Box::new(s), keys.clone()),
                    ov: net.join(id),
                    addr,
                }
            })
            .collect();
        LoopbackFrontEnds {
            net,
            nodes,
            now: Time::from_millis(1),
        }
    }
}

impl FrontEnds for LoopbackFrontEnds {
    fn now(&self) -> Time {
        self.now
    }

    fn handle_datagram(&mut self, from: Peer, to: Peer, bytes: &[u8]) -> bool {
        let Some(n) = self.nodes.iter_mut().find(|n| n.addr == to.addr) else {
            return false;
        };
        if let Ok(m) = sip::msg::parse_datagram(bytes) {
            let mut ov = n.ov.clone();
            n.fe.handle_message(self.now, from, m, &mut ov);
        }
        true
    }

    fn poll_transmit(&mut self) -> Option<(Peer, SipTransmit)> {
        self.nodes.iter_mut().find_map(|n| {
            let t = n.fe.poll_transmit()?;
            let from = Peer {
                transport: t.to.transport,
                addr: n.addr,
            };
            Some((from, t))
        })
    }

    fn step_overlay(&mut self, _deadline: Time) -> bool {
        let mut busy = false;
        for n in &mut self.nodes {
            let mut ov = n.ov.clone();
            while let Some(ev) = n.ov.poll_event() {
                busy = true;
                n.fe.handle_overlay_event(self.now, ev, &mut ov);
            }
        }
        busy
    }

    fn advance(&mut self, to: Time) {
        self.now = to;
        for n in &mut self.nodes {
            let mut ov = n.ov.clone();
            n.fe.handle_timeout(to, &mut ov);
        }
    }
}

/// A peer as it runs for real: the secure node and, if it serves phones, its front-end, in
/// one [`PeerCore`]. The SOS ranks the first route best, as for a bare
/// [`overlay::secure::SecureNode`].
impl NetPeer for PeerCore {
    fn contact(&self) -> Contact {
        self.node_ref().chord().contact()
    }
    fn authenticate(&self, from: Contact) -> overlay::driver::Peer {
        authenticated(self.node_ref(), from)
    }
    fn answer(&mut self, now: Time, event: PeerEvent) -> Option<PeerEvent> {
        match event {
            PeerEvent::Overlay(SecureEvent::RankRoutes { query, .. }) => {
                self.node_at(now).handle_ranking(now, query, Some(0));
                None
            }
            ev => Some(ev),
        }
    }
}

impl FrontEnds for Network<PeerCore> {
    fn now(&self) -> Time {
        Network::now(self)
    }

    fn handle_datagram(&mut self, from: Peer, to: Peer, bytes: &[u8]) -> bool {
        let Some(id) = self.peers().find_map(|(id, p)| {
            p.frontend()
                .is_some_and(|f| f.local() == to.addr)
                .then_some(id)
        }) else {
            return false;
        };
        let Ok(m) = sip::msg::parse_datagram(bytes) else {
            return true;
        };
        let input = SipInbound::Message {
            from,
            msg: Box::new(m),
        };
        self.act(id, |p, now| p.handle_sip(now, input));
        true
    }

    fn poll_transmit(&mut self) -> Option<(Peer, SipTransmit)> {
        let (id, ev) = self.take_event(|e| matches!(e, PeerEvent::SipOut(_)))?;
        let PeerEvent::SipOut(t) = ev else {
            return None;
        };
        let addr = self.peer(id).frontend().map(|f| f.local())?;
        let from = Peer {
            transport: t.to.transport,
            addr,
        };
        Some((from, t))
    }

    fn step_overlay(&mut self, deadline: Time) -> bool {
        self.step_until(deadline)
    }

    fn advance(&mut self, to: Time) {
        self.run_until(to);
    }
}
