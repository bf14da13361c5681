//! ICE (RFC 8445) on one far leg of the media relay, sans-IO: the leg between this peer's
//! relay and the other peer's. Both relays put ICE attributes in the SDP they send each
//! other (host, server-reflexive when the peer's public address is a NAT's, relayed when
//! the leg rides a TURN allocation), run connectivity checks over the leg's RTP and RTCP
//! ports, and send media on the pair ICE selects for each component.
//!
//! The checks, nomination and answering the other side's checks are `rice-proto`'s agent
//! (the one `nat::IceSession` drives between peers), handed the relay's time and datagrams;
//! RTP and RTCP get an agent each, with one stream of one component (rice-proto 0.4 selects
//! a pair for only one component of a stream that has two, and with two streams in one
//! agent it loses the retransmission timer of one of them), both under the same
//! credentials, so on the wire they are components 1 and 2 of one ICE media stream. This
//! module adds candidates it already knows instead of gathering; on the controlled side it
//! also selects the pair an authenticated USE-CANDIDATE check arrives on when the agent has
//! not yet (the controlling side checked that 5-tuple both ways before nominating it, so
//! media need not wait for the agent's own check of the pair); and it adds consent freshness
//! (RFC 7675), which that agent lacks: once a pair is selected, a STUN Binding request goes
//! out on it every [`CONSENT_INTERVAL`] ± 20 % (seeded jitter), and a component whose
//! consent has not been refreshed by an authenticated success response for
//! [`CONSENT_TIMEOUT`] sends nothing more.
//!
//! Bounded: candidates per description ([`super::sdp::MAX_CANDIDATES`]), consent requests
//! in flight, datagrams queued for sending, steps per drive.

use overlay::Time;
use rice_proto::agent::{Agent, AgentPoll};
use rice_proto::candidate::{Candidate, CandidateType, TransportType};
use rice_proto::component::ComponentConnectionState;
use rice_proto::stream::Credentials;
use rice_stun_types::attribute::{IceControlled, IceControlling, Priority, UseCandidate};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use stun_proto::Instant;
use stun_proto::agent::Transmit;
use stun_proto::types::attribute::{AttributeStaticType, Username};
use stun_proto::types::message::{
    BINDING, IntegrityAlgorithm, Message, MessageClass, MessageIntegrityCredentials, MessageType,
    MessageWrite, MessageWriteExt, MessageWriteVec, ShortTermCredentials, TransactionId,
};

use super::sdp::IceAttributes;

/// Mean wait between two consent requests on a selected pair (RFC 7675 §5.1: 5 s,
/// randomised to 0.8–1.2 of it).
pub const CONSENT_INTERVAL: Duration = Duration::from_secs(5);
/// A component whose consent has not been refreshed this long stops sending (RFC 7675).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Consent requests remembered while waiting for their responses.
const MAX_CONSENT_PENDING: usize = 8;
/// Datagrams queued for the relay to send before further ones are dropped.
const MAX_TRANSMITS: usize = 256;
/// Agent outputs handled in one drive before coming back a millisecond later.
const MAX_STEPS: usize = 256;
/// RTP and RTCP.
const COMPONENTS: usize = 2;

/// The kind of a candidate (RFC 8445 §5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CandidateKind {
    /// An address of the peer's own.
    Host,
    /// An address a NAT gave the peer (learnt from STUN).
    ServerReflexive,
    /// An address learnt from a connectivity check.
    PeerReflexive,
    /// A TURN relayed address.
    Relayed,
}

impl CandidateKind {
    /// The SDP name (`host`, `srflx`, `prflx`, `relay`).
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
        }
    }

    fn of(t: CandidateType) -> Self {
        match t {
            CandidateType::Host => CandidateKind::Host,
            CandidateType::ServerReflexive => CandidateKind::ServerReflexive,
            CandidateType::PeerReflexive => CandidateKind::PeerReflexive,
            CandidateType::Relayed => CandidateKind::Relayed,
        }
    }
}

/// The pair ICE selected for one component of a far leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcePair {
    /// Our candidate's kind.
    pub local: CandidateKind,
    /// The address we send from (a server-reflexive candidate sends from its base).
    pub local_addr: SocketAddr,
    /// The other relay's candidate's kind.
    pub remote: CandidateKind,
    /// Where media goes.
    pub remote_addr: SocketAddr,
}

impl std::fmt::Display for IcePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} {}",
            self.local.as_str(),
            self.local_addr,
            self.remote.as_str(),
            self.remote_addr
        )
    }
}

/// The addresses one component of a far leg is reachable at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LocalAddrs {
    /// Our socket's address (the relay's address and the leg's port).
    pub(crate) host: Option<SocketAddr>,
    /// The NAT's address for that socket.
    pub(crate) srflx: Option<SocketAddr>,
    /// The TURN relayed address carrying the component.
    pub(crate) relay: Option<SocketAddr>,
}

/// What happened on a far leg's ICE, for the relay to log and count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IceEvent {
    /// Component `0` (RTP) or `1` (RTCP) has a pair.
    Selected(usize, IcePair),
    /// No pair works for the component.
    Failed(usize),
    /// The component's consent expired: it sends nothing more.
    ConsentLost(usize),
}

/// Why remote ICE attributes were not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RemoteError {
    /// Not one usable UDP candidate for the RTP component.
    NoCandidates,
    /// New credentials: an ICE restart, which takes a new agent.
    Restart,
}

#[derive(Clone, Debug, Default)]
struct Consent {
    /// When consent was last refreshed (the selection counts).
    refreshed: Option<Time>,
    /// When the next request goes out.
    next: Option<Time>,
    /// Requests in flight: transaction id and when sent.
    pending: VecDeque<(u128, Time)>,
    lost: bool,
}

/// SplitMix64: the seeded randomness of credentials, tie-breakers, transaction ids and
/// consent jitter.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` characters of the ICE alphabet (RFC 8839 `ice-char`, without `+` and `/`).
    fn ice_string(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(ALPHABET[(self.next() % ALPHABET.len() as u64) as usize]))
            .collect()
    }
}

fn instant(t: Time) -> Instant {
    Instant::from_nanos(i64::try_from(t.0).unwrap_or(i64::MAX / 1000) * 1000)
}

/// The relay's time at or after `i` (rounded up, so a wake-up is never early).
fn time(i: Instant) -> Time {
    let nanos = u64::try_from(i.as_nanos()).unwrap_or(0);
    Time(nanos.div_ceil(1000))
}

/// ICE on one far leg (see the module doc). The relay hands it the STUN datagrams that
/// arrive on the leg's ports ([`handle_stun`](Self::handle_stun)) and the time
/// ([`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout)), then
/// drains [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event).
pub(crate) struct FarIce {
    /// The agent of each component (RTP, RTCP).
    agents: [Agent; COMPONENTS],
    /// The agent's stream of each component.
    streams: [usize; COMPONENTS],
    /// The agent's component id in each of those streams.
    components: [usize; COMPONENTS],
    /// What [`new`](Self::new) was given, for a restart.
    locals: [LocalAddrs; COMPONENTS],
    local: (String, String),
    remote: Option<(String, String)>,
    /// Our attribute lines for the SDP.
    lines: Vec<String>,
    /// Our candidates' priorities by address, for consent requests.
    priorities: Vec<(SocketAddr, u32)>,
    /// The other relay's candidates: component, address, kind.
    remote_candidates: Vec<(usize, SocketAddr, CandidateKind)>,
    tie_breaker: u64,
    selected: [Option<IcePair>; COMPONENTS],
    consent: [Consent; COMPONENTS],
    failed: [bool; COMPONENTS],
    transmits: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    events: VecDeque<IceEvent>,
    /// When the agent wants to be driven again.
    wake: Option<Time>,
    rng: Rng,
    /// Datagrams dropped because [`MAX_TRANSMITS`] were queued.
    pub(crate) dropped: u64,
}

impl std::fmt::Debug for FarIce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarIce")
            .field("ufrag", &self.local.0)
            .field("controlling", &self.agents[0].controlling())
            .field("selected", &self.selected)
            .field("failed", &self.failed)
            .finish()
    }
}

impl FarIce {
    /// ICE for a leg reachable at `locals` (RTP, RTCP); the offerer controls. `None` if
    /// the agent refuses the setup (a bug of ours, not the network's).
    pub(crate) fn new(
        now: Time,
        controlling: bool,
        locals: [LocalAddrs; COMPONENTS],
        seed: u64,
    ) -> Option<Self> {
        let mut rng = Rng(seed);
        let local = (rng.ice_string(8), rng.ice_string(24));
        let tie_breaker = rng.next();
        let mut agents = [(); COMPONENTS].map(|()| {
            Agent::builder()
                .controlling(controlling)
                .trickle_ice(false)
                .build()
        });
        let mut lines = vec![
            format!("a=ice-ufrag:{}", local.0),
            format!("a=ice-pwd:{}", local.1),
        ];
        let mut priorities = Vec::new();
        let mut streams = [0; COMPONENTS];
        let mut components = [0; COMPONENTS];
        for ((i, l), agent) in locals.iter().enumerate().zip(agents.iter_mut()) {
            let stream = agent.add_stream();
            let mut s = agent.mut_stream(stream)?;
            let id = s.add_component().ok()?;
            s.set_local_credentials(Credentials::new(local.0.clone(), local.1.clone()));
            (streams[i], components[i]) = (stream, id);
            // Component 1 or 2 on the wire.
            let component = i + 1;
            let kinds = [
                (CandidateType::Host, "1", l.host, l.host),
                (CandidateType::ServerReflexive, "2", l.srflx, l.host),
                (CandidateType::Relayed, "3", l.relay, l.relay),
            ];
            for (kind, foundation, addr, base) in kinds {
                let (Some(addr), Some(base)) = (addr, base) else {
                    continue;
                };
                let priority =
                    Candidate::calculate_priority(kind, TransportType::Udp, None, 0, component);
                let build = |component, kind| {
                    let b =
                        Candidate::builder(component, kind, TransportType::Udp, foundation, addr)
                            .priority(priority)
                            .base_address(base);
                    if kind == CandidateType::ServerReflexive {
                        b.related_address(base).build()
                    } else {
                        b.build()
                    }
                };
                lines.push(build(component, kind).to_sdp_string());
                // The agent checks from the base: a server-reflexive candidate is its
                // host's pairs (RFC 8445 §6.1.2.4), so only the others are added. The agent
                // pairs a relayed candidate only with a TURN client of its own, but here
                // the shell carries the allocation: to the agent the relayed address is a
                // socket like any other (the other side is told `typ relay`).
                match kind {
                    CandidateType::ServerReflexive => {}
                    CandidateType::Relayed => {
                        s.add_local_candidate(build(id, CandidateType::Host));
                        priorities.push((base, priority));
                    }
                    _ => {
                        s.add_local_candidate(build(id, kind));
                        priorities.push((base, priority));
                    }
                }
            }
            s.end_of_local_candidates();
        }
        let mut ice = FarIce {
            agents,
            streams,
            components,
            locals,
            local,
            remote: None,
            lines,
            priorities,
            remote_candidates: Vec::new(),
            tie_breaker,
            selected: [None; COMPONENTS],
            consent: Default::default(),
            failed: [false; COMPONENTS],
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            wake: None,
            rng,
            dropped: 0,
        };
        ice.drive(now);
        Some(ice)
    }

    /// A fresh agent for an ICE restart: same addresses and role, new credentials.
    pub(crate) fn restarted(&self, now: Time, seed: u64) -> Option<Self> {
        FarIce::new(now, self.agents[0].controlling(), self.locals, seed)
    }

    /// Our ICE attribute lines for the SDP towards the other peer.
    pub(crate) fn sdp_lines(&self) -> &[String] {
        &self.lines
    }

    /// Take the other relay's attributes and start the checks; its candidates' addresses
    /// by component (a TURN leg lets them in). The same credentials again change nothing.
    pub(crate) fn set_remote(
        &mut self,
        now: Time,
        remote: &IceAttributes,
    ) -> Result<Vec<(usize, SocketAddr)>, RemoteError> {
        let creds = (remote.ufrag.clone(), remote.pwd.clone());
        match &self.remote {
            Some(known) if *known == creds => return Ok(Vec::new()),
            Some(_) => return Err(RemoteError::Restart),
            None => {}
        }
        let parsed: Vec<Candidate> = remote
            .candidates
            .iter()
            .filter_map(|line| format!("a={}", line.trim()).parse::<Candidate>().ok())
            .filter(|c| {
                c.transport_type == TransportType::Udp && (1..=COMPONENTS).contains(&c.component_id)
            })
            // One of our own addresses is not the other relay (two homes on the same private
            // prefix): checking it would only talk to ourselves.
            .filter(|c| !self.priorities.iter().any(|(ours, _)| *ours == c.address))
            .collect();
        if !parsed.iter().any(|c| c.component_id == 1) {
            return Err(RemoteError::NoCandidates);
        }
        let mut addrs = Vec::new();
        for (i, agent) in self.agents.iter_mut().enumerate() {
            let (stream, id) = (self.streams[i], self.components[i]);
            let Some(mut s) = agent.mut_stream(stream) else {
                return Err(RemoteError::NoCandidates);
            };
            s.set_remote_credentials(Credentials::new(creds.0.clone(), creds.1.clone()));
            for c in parsed.iter().filter(|c| c.component_id == i + 1) {
                if !addrs.contains(&(i, c.address)) {
                    addrs.push((i, c.address));
                }
                self.remote_candidates
                    .push((i, c.address, CandidateKind::of(c.candidate_type)));
                let mut c = c.clone();
                c.component_id = id;
                s.add_remote_candidate(c);
            }
            s.end_of_remote_candidates();
        }
        self.remote = Some(creds);
        self.drive(now);
        Ok(addrs)
    }

    /// Whether the other relay's attributes have been taken.
    pub(crate) fn has_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// A STUN datagram that arrived on component `component` (0: RTP, 1: RTCP) at our
    /// address `local` from `from`.
    pub(crate) fn handle_stun(
        &mut self,
        now: Time,
        component: usize,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) {
        let (Some(&stream), Some(&id)) =
            (self.streams.get(component), self.components.get(component))
        else {
            return;
        };
        if self.consent_response(now, component, from, data) {
            return;
        }
        let nominated = !self.agents[component].controlling() && self.is_nomination(data);
        if let Some(mut s) = self.agents[component].mut_stream(stream) {
            // STUN only reaches here: the agent keeps no application data.
            let _ = s.handle_incoming_data(
                id,
                Transmit::new(data, TransportType::Udp, from, local),
                instant(now),
            );
        }
        self.drive(now);
        if nominated && self.selected[component].is_none() {
            // The controlling side checked this 5-tuple both ways before nominating it.
            let remote = self
                .remote_candidates
                .iter()
                .find(|(c, a, _)| *c == component && *a == from)
                .map_or(CandidateKind::PeerReflexive, |r| r.2);
            let pair = IcePair {
                local: self.local_kind(component, local),
                local_addr: local,
                remote,
                remote_addr: from,
            };
            self.select(now, component, pair);
        }
    }

    /// Whether `data` is a Binding request of the other relay nominating its pair
    /// (USE-CANDIDATE, our username, our password's integrity).
    fn is_nomination(&self, data: &[u8]) -> bool {
        let Ok(msg) = Message::from_bytes(data) else {
            return false;
        };
        if !msg.has_class(MessageClass::Request)
            || !msg.has_method(BINDING)
            || msg.raw_attribute(UseCandidate::TYPE).is_none()
        {
            return false;
        }
        let ours = msg.attribute::<Username>().is_ok_and(|u| {
            u.username()
                .strip_prefix(self.local.0.as_str())
                .is_some_and(|rest| rest.starts_with(':'))
        });
        let creds: MessageIntegrityCredentials =
            ShortTermCredentials::new(self.local.1.clone()).into();
        ours && msg.validate_integrity(&creds).is_ok()
    }

    /// The kind of our address `local` on `component`.
    fn local_kind(&self, component: usize, local: SocketAddr) -> CandidateKind {
        if self.locals[component].relay == Some(local) {
            CandidateKind::Relayed
        } else {
            CandidateKind::Host
        }
    }

    /// `pair` is component `component`'s pair from now on.
    fn select(&mut self, now: Time, component: usize, pair: IcePair) {
        if self.selected[component] == Some(pair) {
            return;
        }
        self.selected[component] = Some(pair);
        let wait = self.consent_wait();
        let c = &mut self.consent[component];
        if !c.lost {
            // The check that selected the pair was a consent; the next one is due later.
            c.refreshed = Some(now);
            c.next = Some(now + wait);
        }
        self.events.push_back(IceEvent::Selected(component, pair));
    }

    /// Whether `data` answers one of our consent requests (and if so, take it).
    fn consent_response(
        &mut self,
        now: Time,
        component: usize,
        from: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Ok(msg) = Message::from_bytes(data) else {
            return false;
        };
        if !msg.is_response() {
            return false;
        }
        let id = u128::from(msg.transaction_id());
        let c = &mut self.consent[component];
        let Some(at) = c.pending.iter().position(|(t, _)| *t == id) else {
            return false;
        };
        let Some((_, pwd)) = &self.remote else {
            return true;
        };
        let creds: MessageIntegrityCredentials = ShortTermCredentials::new(pwd.clone()).into();
        let from_pair = self.selected[component].is_some_and(|p| p.remote_addr == from);
        if from_pair && msg.validate_integrity(&creds).is_ok() {
            c.pending.remove(at);
            if msg.has_class(MessageClass::Success) && !c.lost {
                c.refreshed = Some(now);
            }
        }
        true
    }

    /// Drive the agent and consent at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Time) {
        if self.wake.is_some_and(|w| w <= now) {
            self.drive(now);
        }
        for component in 0..COMPONENTS {
            self.consent_at(now, component);
        }
    }

    fn consent_at(&mut self, now: Time, component: usize) {
        let Some(pair) = self.selected[component] else {
            return;
        };
        let c = &mut self.consent[component];
        if c.lost {
            return;
        }
        let refreshed = c.refreshed.unwrap_or(now);
        if now.saturating_since(refreshed) >= CONSENT_TIMEOUT {
            c.lost = true;
            c.next = None;
            c.pending.clear();
            self.events.push_back(IceEvent::ConsentLost(component));
            return;
        }
        if c.next.is_some_and(|n| n > now) {
            return;
        }
        let wait = self.consent_wait();
        self.consent[component].next = Some(now + wait);
        let Some((ufrag, pwd)) = self.remote.clone() else {
            return;
        };
        let id = u128::from(self.rng.next()) << 32 | u128::from(self.rng.next() as u32);
        let priority = self
            .priorities
            .iter()
            .find(|(a, _)| *a == pair.local_addr)
            .map_or(0, |p| p.1);
        let controlling = self.agents[component].controlling();
        let Some(request) = consent_request(
            id,
            &format!("{ufrag}:{}", self.local.0),
            &pwd,
            priority,
            controlling,
            self.tie_breaker,
        ) else {
            return;
        };
        let c = &mut self.consent[component];
        if c.pending.len() >= MAX_CONSENT_PENDING {
            c.pending.pop_front();
        }
        c.pending.push_back((id, now));
        self.push_transmit(pair.local_addr, pair.remote_addr, request);
    }

    /// The wait before the next consent request: 0.8 to 1.2 of [`CONSENT_INTERVAL`].
    fn consent_wait(&mut self) -> Duration {
        let span = CONSENT_INTERVAL.as_micros() as u64;
        Duration::from_micros(span * 8 / 10 + self.rng.next() % (span * 4 / 10 + 1))
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        let mut at = self.wake;
        for (c, pair) in self.consent.iter().zip(&self.selected) {
            if pair.is_none() || c.lost {
                continue;
            }
            let expiry = c.refreshed.map(|r| r + CONSENT_TIMEOUT);
            for t in [c.next, expiry].into_iter().flatten() {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        at
    }

    /// The next datagram to send: (our address, destination, bytes).
    pub(crate) fn poll_transmit(&mut self) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next thing that happened.
    pub(crate) fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// The pair of component `component`, once selected.
    pub(crate) fn selected(&self, component: usize) -> Option<IcePair> {
        self.selected.get(component).copied().flatten()
    }

    /// Whether component `component` is still looking for its pair: none selected yet and
    /// the checks not failed. Media then takes the leg's default path (see the relay).
    pub(crate) fn before_selection(&self, component: usize) -> bool {
        self.selected(component).is_none() && self.failed.get(component) == Some(&false)
    }

    /// Whether `addr` is one of the other relay's candidates for `component`.
    pub(crate) fn is_remote_candidate(&self, component: usize, addr: SocketAddr) -> bool {
        self.remote_candidates
            .iter()
            .any(|(c, a, _)| *c == component && *a == addr)
    }

    /// Where media of `component` may go now: the selected pair's remote address while
    /// its consent holds.
    pub(crate) fn destination(&self, component: usize) -> Option<SocketAddr> {
        let pair = self.selected(component)?;
        (!self.consent[component].lost).then_some(pair.remote_addr)
    }

    /// Whether component `component` lost its consent.
    pub(crate) fn consent_lost(&self, component: usize) -> bool {
        self.consent.get(component).is_some_and(|c| c.lost)
    }

    fn push_transmit(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if self.transmits.len() >= MAX_TRANSMITS {
            self.dropped += 1;
        } else {
            self.transmits.push_back((from, to, data));
        }
    }

    /// Run the agents until they wait.
    fn drive(&mut self, now: Time) {
        let mut wake = None;
        for i in 0..COMPONENTS {
            if let Some(t) = self.drive_one(i, now) {
                wake = Some(wake.map_or(t, |w: Time| w.min(t)));
            }
        }
        self.wake = wake;
    }

    /// Run component `i`'s agent until it waits: when it wants the time again.
    fn drive_one(&mut self, i: usize, now: Time) -> Option<Time> {
        let at = instant(now);
        for _ in 0..MAX_STEPS {
            while let Some(t) = self.agents[i].poll_transmit(at) {
                let t = t.transmit;
                self.push_transmit(t.from, t.to, t.data.to_vec());
            }
            match self.agents[i].poll(at) {
                AgentPoll::Closed => return None,
                AgentPoll::WaitUntil(t) => {
                    if t > at {
                        return Some(time(t));
                    }
                }
                AgentPoll::AllocateSocket(s) => {
                    ice_agent::refuse_socket(&mut self.agents[i], &s, at)
                }
                AgentPoll::SelectedPair(p) => {
                    let pair = ice_agent::keep_selected_pair(&mut self.agents[i], &p);
                    let relayed = self.locals[i].relay == Some(pair.local.base_address);
                    let chosen = IcePair {
                        local: if relayed {
                            CandidateKind::Relayed
                        } else {
                            CandidateKind::of(pair.local.candidate_type)
                        },
                        local_addr: pair.local.base_address,
                        remote: CandidateKind::of(pair.remote.candidate_type),
                        remote_addr: pair.remote.address,
                    };
                    self.select(now, i, chosen);
                }
                AgentPoll::ComponentStateChange(c) => {
                    if c.state == ComponentConnectionState::Failed && !self.failed[i] {
                        self.failed[i] = true;
                        self.events.push_back(IceEvent::Failed(i));
                    }
                }
                AgentPoll::RemoveSocket(_)
                | AgentPoll::GatheredCandidate(_)
                | AgentPoll::GatheringComplete(_) => {}
            }
        }
        // Still busy: come back shortly rather than spin.
        Some(now + Duration::from_millis(1))
    }
}

/// A consent request (RFC 7675 §5.1: an ICE connectivity check without USE-CANDIDATE).
fn consent_request(
    id: u128,
    username: &str,
    pwd: &str,
    priority: u32,
    controlling: bool,
    tie_breaker: u64,
) -> Option<Vec<u8>> {
    let mtype = MessageType::from_class_method(MessageClass::Request, BINDING);
    let mut msg = Message::builder(mtype, TransactionId::from(id), MessageWriteVec::new());
    msg.add_attribute(&Priority::new(priority)).ok()?;
    if controlling {
        msg.add_attribute(&IceControlling::new(tie_breaker)).ok()?;
    } else {
        msg.add_attribute(&IceControlled::new(tie_breaker)).ok()?;
    }
    msg.add_attribute(&Username::new(username).ok()?).ok()?;
    let creds: MessageIntegrityCredentials = ShortTermCredentials::new(pwd.to_owned()).into();
    msg.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
        .ok()?;
    msg.add_fingerprint().ok()?;
    Some(msg.finish())
}

/// Whether a datagram is STUN by its first byte (RFC 7983 §7: 0–3; RTP and RTCP are
/// 128–191, DTLS 20–63, TURN channel data 64–79).
pub fn is_stun(data: &[u8]) -> bool {
    data.first().is_some_and(|b| *b <= 3)
}
