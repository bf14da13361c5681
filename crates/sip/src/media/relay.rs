//! The media relay of one peer for its local phones (sans-IO): per call and per `m=`
//! stream, two legs of RTP/RTCP port pairs taken from a bounded range, one leg facing the
//! local phone, the other facing the far end (the other peer's relay). SDP passing through
//! the front-end is rewritten so that each side sends to its own leg; datagrams arriving on
//! a leg go out of the other leg's matching port.
//!
//! Each leg is symmetric (latching, RFC 4961 and the "comedia" practice): it sends to the
//! address the SDP gave until the first datagram from that side arrives, then to (and only
//! accepts from) that datagram's source, so phones behind a NAT or sending from another port
//! than they announced still get their media. A new SDP from a side with a new address
//! unlatches its leg.
//!
//! Behind a NAT whose mapping depends on the destination (a "symmetric" NAT), the far end
//! cannot reach the address this peer learnt from its STUN server. The far leg then goes
//! through TURN (RFC 8656): with [`RelayConfig::turn_pool`] set, the relay keeps that many
//! TURN allocations ready (the shell makes them, [`MediaCommand::Allocate`]), a new stream's
//! far leg takes two (RTP and RTCP), the SDP towards the far end names their relayed
//! addresses, and the far end's address from its SDP becomes a permission on each
//! ([`MediaCommand::Permit`]). The shell then carries the leg's datagrams in TURN
//! Send/ChannelData instead of on a local socket; the relay itself sees the same ports.
//! When no allocation is ready the stream goes direct and the shortfall is counted.
//!
//! Between the two peers, the far legs run ICE ([`super::ice`], RFC 8445) when the other
//! relay does too: the SDP towards the far end carries our ICE attributes (host,
//! server-reflexive, relayed candidates of the far leg's ports), the far end's SDP brings
//! its own, the relays check the pairs, and media goes on the pair selected for each
//! component while its consent (RFC 7675) holds. Until a component has its pair, its media
//! takes the default path instead of waiting: to the source the far end's media arrives
//! from (one of its candidates), else to its SDP's `c=`/`m=` address, as with a far end
//! without ICE, so the first words of a call are not lost to the checks (RFC 8445 §12.1
//! lets data flow before selection; that address came from the other relay through the
//! overlay, and it is where a far leg without ICE sends anyway). Once a pair is selected,
//! media takes it only; checks that fail, or consent that expires, stop it. STUN arriving on any port is told from
//! RTP/RTCP by its first byte (RFC 7983) and never forwarded: on an ICE far leg it goes to
//! the agent, elsewhere it is dropped and counted. A far end whose SDP carries no ICE
//! attributes gets the latching described above, as does every far leg with
//! [`RelayConfig::ice`] off. The relay sends ICE's own datagrams through the same ports
//! ([`MediaRelay::poll_transmit`]).
//!
//! Each stream measures both directions (packets, loss, RFC 3550 jitter, [`quality`]) and
//! leaves a [`StreamReport`] when it ends, with the path its far leg took.
//!
//! Bounded: streams per peer and per call, ports, bytes per stream per second, datagram
//! size, ready TURN allocations, reports kept; a stream with no traffic for `idle` is
//! freed, and all of a call's streams when its dialog ends. The shell binds and closes the
//! sockets the relay asks for ([`MediaCommand`]) and passes every datagram to
//! [`MediaRelay::handle_datagram`].
//!
//! [`quality`]: super::quality

use super::ice::{self, FarIce, IceEvent, IcePair, LocalAddrs, RemoteError};
use super::quality::Quality;
use super::sdp::{Sdp, SdpError, Target};
use crate::deadlines::Deadlines;
use overlay::Time;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use thiserror::Error;

/// Relay settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// The address local phones reach the relay at (the SIP front-end's address).
    pub lan: IpAddr,
    /// The address the far end reaches the relay at (the peer's advertised or
    /// server-reflexive address).
    pub public: IpAddr,
    /// Whether `public` is a NAT's address for us (learnt from STUN) rather than one of
    /// our own: it names the path of direct streams in reports.
    pub public_is_reflexive: bool,
    /// Ports, streams and idle time.
    pub bounds: RelayBounds,
    /// Most bytes one stream may forward per second (both directions, RTP and RTCP);
    /// datagrams beyond are dropped.
    pub max_bytes_per_sec: u64,
    /// Longest datagram forwarded.
    pub max_datagram: usize,
    /// TURN allocations kept ready for far legs (two per stream); 0: far legs use the
    /// relay's own sockets.
    pub turn_pool: usize,
    /// Wait after a failed allocation before asking again; it doubles with each failure
    /// in a row (up to 16 times), as a server refusing for quota (486) refuses until
    /// allocations are deleted.
    pub turn_retry: Duration,
    /// Most stream reports kept for [`MediaRelay::poll_report`] (older ones are dropped).
    pub max_reports: usize,
    /// Offer ICE on far legs, and run it with a far end that offers or answers it.
    pub ice: bool,
    /// Seed of the relay's randomness (ICE credentials, tie-breakers, consent jitter).
    pub seed: u64,
}

impl RelayConfig {
    /// Defaults: ports 20000–29999, 1024 streams, 8 per call, 60 s idle, 1 MB/s per stream,
    /// no TURN.
    pub fn new(lan: IpAddr, public: IpAddr) -> Self {
        RelayConfig {
            lan,
            public,
            public_is_reflexive: false,
            bounds: RelayBounds::default(),
            max_bytes_per_sec: 1_000_000,
            max_datagram: 4096,
            turn_pool: 0,
            turn_retry: Duration::from_secs(5),
            max_reports: 64,
            ice: true,
            seed: 0,
        }
    }
}

/// What an operator bounds a relay by: its port range, the streams it relays, how long an
/// idle stream is kept. Part of [`RelayConfig`], and what a peer's media settings carry
/// to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayBounds {
    /// First port of the range the relay takes its ports from (rounded up to even).
    pub first_port: u16,
    /// Last port of the range.
    pub last_port: u16,
    /// Most streams relayed at once (each takes four ports).
    pub max_streams: usize,
    /// Most streams relayed for one call.
    pub max_streams_per_call: usize,
    /// A stream with no datagram and no SDP this long is freed.
    pub idle: Duration,
}

impl Default for RelayBounds {
    /// Ports 20000–29999, 1024 streams, 8 per call, 60 s idle.
    fn default() -> Self {
        RelayBounds {
            first_port: 20000,
            last_port: 29999,
            max_streams: 1024,
            max_streams_per_call: 8,
            idle: Duration::from_secs(60),
        }
    }
}

/// Where an SDP body came from, relative to this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// From a local phone, on its way to the far end.
    Phone,
    /// From the far end, on its way to a local phone.
    FarEnd,
}

/// An SDP body rewritten to pass on instead of the one received, or why it cannot be.
pub type Rewritten = Result<Vec<u8>, MediaError>;

/// Why an SDP body was not anchored (the front-end then passes it on unchanged).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// The body is not SDP the relay can rewrite.
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// The peer relays `max_streams` already.
    #[error("the relay is full")]
    Full,
    /// The call has `max_streams_per_call` streams already.
    #[error("the call has too many streams")]
    TooManyStreams,
    /// No free port pair is left in the range.
    #[error("no free media ports")]
    NoPorts,
    /// The anchor the media is handed to (an rtpengine) refused or did not answer.
    #[error("media anchor unavailable: {0}")]
    Unavailable(String),
}

/// What the shell does for the relay: sockets and TURN allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaCommand {
    /// Bind a UDP socket on this port.
    Open(u16),
    /// Close what carries this port (its socket, or its TURN allocation).
    Close(u16),
    /// Make a TURN allocation and answer with [`MediaRelay::turn_allocated`] or
    /// [`MediaRelay::turn_failed`] under this token.
    Allocate(u64),
    /// From now on the allocation `token` carries `port`: datagrams from its peers arrive
    /// as the port's, the port's datagrams leave through it.
    Attach {
        /// The allocation.
        token: u64,
        /// The relay port it stands for.
        port: u16,
    },
    /// Let `peer` reach the allocation carrying `port` (TURN CreatePermission, or a
    /// ChannelBind for shorter framing).
    Permit {
        /// The relay port.
        port: u16,
        /// The far end's address.
        peer: SocketAddr,
    },
    /// Delete the allocation `token`, not attached to any port (the pool shrank).
    Discard(u64),
}

/// A datagram to send: the same bytes that came in, out of our port `from_port`, to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The relay's port to send from.
    pub from_port: u16,
    /// The destination.
    pub to: SocketAddr,
}

/// Counters for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Datagrams from a source other than the one a leg latched on.
    pub foreign: u64,
    /// Datagrams with nowhere to go yet (the other side's SDP has not come).
    pub no_destination: u64,
    /// Datagrams over the size or the stream's rate bound.
    pub over_limit: u64,
    /// Datagrams on a port of no stream.
    pub stray: u64,
    /// Streams freed for lack of traffic.
    pub idled: u64,
    /// Streams whose far leg went through TURN.
    pub turn_streams: u64,
    /// Streams that went direct because no TURN allocation was ready.
    pub turn_short: u64,
    /// TURN allocations that failed.
    pub turn_failed: u64,
    /// Streams ended (and reported).
    pub ended: u64,
    /// Streams ended by their far leg's path: direct, server-reflexive, relayed.
    pub ended_by_path: [u64; 3],
    /// RTP packets received on all ended streams, both directions.
    pub rtp_packets: u64,
    /// RTP packets lost on all ended streams, both directions.
    pub rtp_lost: u64,
    /// Reports dropped because [`RelayConfig::max_reports`] were waiting.
    pub reports_dropped: u64,
    /// Ports the shell could not open (held by another program): their pairs rest for
    /// [`REFUSED_PAIR_REST`].
    pub ports_refused: u64,
    /// STUN datagrams handed to a far leg's ICE.
    pub stun_received: u64,
    /// STUN datagrams on a port without ICE (a phone's leg, a far end without ICE):
    /// dropped, never forwarded.
    pub stun_dropped: u64,
    /// Far legs whose ICE selected a pair for RTP.
    pub ice_selected: u64,
    /// Far legs whose ICE found no working pair for RTP.
    pub ice_failed: u64,
    /// Far legs that offered ICE and were answered without it (latching instead).
    pub ice_declined: u64,
    /// Components of far legs whose consent expired (RFC 7675): they send no more.
    pub consent_lost: u64,
    /// Datagrams dropped on an ICE far leg whose checks failed or whose consent expired,
    /// or from a far source that is none of the other relay's candidates before a pair is
    /// selected.
    pub no_consent: u64,
    /// Datagrams forwarded to the far end on the default path while ICE was still
    /// choosing a pair.
    pub before_selection: u64,
    /// ICE datagrams dropped because the send queue was full.
    pub ice_dropped: u64,
}

/// A datagram the relay itself sends (ICE checks and their answers): `data` out of our
/// port `from_port` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The relay's port to send from.
    pub from_port: u16,
    /// The destination.
    pub to: SocketAddr,
    /// The bytes.
    pub data: Vec<u8>,
}

/// ICE datagrams queued for [`MediaRelay::poll_transmit`] before further ones are dropped.
const MAX_TRANSMITS: usize = 1024;

/// How long a port pair the shell could not open is passed over: another program holds
/// it, and trying it for every call would cost each call a failed bind.
pub const REFUSED_PAIR_REST: Duration = Duration::from_secs(60);

/// The way a stream's far leg reached the other peer (the discriminant indexes
/// [`RelayStats::ended_by_path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaPath {
    /// On the peer's own address.
    Direct = 0,
    /// On the address a NAT gave the peer (learnt from STUN).
    ServerReflexive = 1,
    /// Through a TURN allocation.
    Relayed = 2,
}

impl MediaPath {
    /// The path of an ICE pair: relayed when either side is a TURN relay, server-reflexive
    /// when either is a NAT's address, else direct.
    pub fn of_pair(pair: &IcePair) -> Self {
        use ice::CandidateKind::{Host, Relayed};
        if pair.local == Relayed || pair.remote == Relayed {
            MediaPath::Relayed
        } else if pair.local == Host && pair.remote == Host {
            MediaPath::Direct
        } else {
            MediaPath::ServerReflexive
        }
    }

    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaPath::Direct => "direct",
            MediaPath::ServerReflexive => "server-reflexive",
            MediaPath::Relayed => "relayed",
        }
    }
}

/// One direction of an ended stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectionReport {
    /// RTP packets received.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets lost (expected − received).
    pub lost: u64,
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
}

impl DirectionReport {
    fn of(q: &Quality) -> Self {
        DirectionReport {
            packets: q.packets,
            bytes: q.bytes,
            lost: q.lost(),
            jitter_ms: q.jitter_ms(),
        }
    }

    /// Lost packets as a percentage of those expected.
    pub fn loss_percent(&self) -> f64 {
        let expected = self.packets + self.lost;
        if expected == 0 {
            0.0
        } else {
            self.lost as f64 * 100.0 / expected as f64
        }
    }
}

/// What one stream did, left when it ends (dialog end, port 0, idleness).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamReport {
    /// The call.
    pub call_id: String,
    /// The `m=` index.
    pub index: usize,
    /// The far leg's path.
    pub path: MediaPath,
    /// Where the far end's RTP came from (latched), else where its SDP said.
    pub far: Option<SocketAddr>,
    /// How long the stream lived.
    pub duration: Duration,
    /// Datagrams from the phone (towards the far end).
    pub from_phone: DirectionReport,
    /// Datagrams from the far end (towards the phone).
    pub from_far: DirectionReport,
    /// The pair ICE selected for the far leg's RTP, when the far leg ran ICE.
    pub ice: Option<IcePair>,
    /// Whether the far leg lost consent (RFC 7675) and stopped sending.
    pub consent_lost: bool,
}

const LEGS: usize = 2;
const PHONE: usize = 0;
const FAR: usize = 1;

/// One side of a stream: our RTP port (RTCP is the next one) and where that side is.
#[derive(Debug)]
struct Leg {
    port: u16,
    /// Where the SDP of this side says it receives (RTP, RTCP).
    announced: [Option<SocketAddr>; 2],
    /// The source its first datagram came from (RTP, RTCP).
    latched: [Option<SocketAddr>; 2],
    /// The TURN relayed addresses carrying this leg (RTP, RTCP), when it goes through TURN.
    relayed: Option<[SocketAddr; 2]>,
    /// What arrived on this leg's RTP port.
    quality: Quality,
    /// ICE with the other relay (far legs only, when both sides run it).
    ice: Option<Box<FarIce>>,
    /// The pair ICE selected for RTP, kept for the report.
    ice_pair: Option<IcePair>,
}

impl Leg {
    fn new(port: u16) -> Self {
        Leg {
            port,
            announced: [None; 2],
            latched: [None; 2],
            relayed: None,
            quality: Quality::default(),
            ice: None,
            ice_pair: None,
        }
    }

    fn destination(&self, component: usize) -> Option<SocketAddr> {
        self.latched[component].or(self.announced[component])
    }
}

type StreamKey = (String, usize);

#[derive(Debug)]
struct Stream {
    key: StreamKey,
    legs: [Leg; LEGS],
    started: Time,
    last_active: Time,
    window_start: Time,
    window_bytes: u64,
    /// Clock rates of the stream's payload types (from both sides' SDP).
    clock_rates: Vec<(u8, u32)>,
}

/// The relay of one peer (see the module doc).
#[derive(Debug)]
pub struct MediaRelay {
    cfg: RelayConfig,
    /// Streams by id.
    streams: BTreeMap<u64, Stream>,
    /// Stream ids by (Call-ID, m= index).
    by_key: BTreeMap<StreamKey, u64>,
    /// The stream and leg on each port of the range (index: port − first_port).
    ports: Vec<Option<(u64, usize)>>,
    /// The first port (even).
    base: u16,
    /// Where the next search for a free pair starts (pair index).
    cursor: usize,
    /// Pairs the shell could not open (another program holds a port), by pair index:
    /// passed over until then ([`REFUSED_PAIR_REST`]).
    refused_until: Vec<Time>,
    /// When each stream's idle check is due.
    idle: Deadlines<u64>,
    commands: VecDeque<MediaCommand>,
    next_id: u64,
    /// TURN allocations ready for a far leg: (token, relayed address).
    turn_ready: VecDeque<(u64, SocketAddr)>,
    /// Allocations asked for and not answered yet.
    turn_pending: BTreeSet<u64>,
    /// No new allocation is asked for before this (after a failure).
    turn_retry_at: Option<Time>,
    /// Failed allocations since the last one made.
    turn_failures: u32,
    next_token: u64,
    reports: VecDeque<StreamReport>,
    stats: RelayStats,
    /// When each stream's far-leg ICE wants the time.
    ice_due: Deadlines<u64>,
    /// ICE datagrams to send.
    transmits: VecDeque<Transmit>,
    /// Seeds each far leg's ICE (SplitMix64 state).
    rng: u64,
}

impl MediaRelay {
    /// A relay with `cfg`.
    pub fn new(cfg: RelayConfig) -> Self {
        let (first, last) = (cfg.bounds.first_port, cfg.bounds.last_port);
        let base = first.saturating_add(first % 2);
        let span = usize::from(last.saturating_sub(base)) + 1;
        // Whole pairs only.
        let span = if last < base { 0 } else { span - span % 2 };
        let mut relay = MediaRelay {
            cfg,
            streams: BTreeMap::new(),
            by_key: BTreeMap::new(),
            ports: vec![None; span],
            base,
            cursor: 0,
            refused_until: vec![Time::ZERO; span / 2],
            idle: Deadlines::default(),
            commands: VecDeque::new(),
            next_id: 0,
            turn_ready: VecDeque::new(),
            turn_pending: BTreeSet::new(),
            turn_retry_at: None,
            turn_failures: 0,
            next_token: 0,
            reports: VecDeque::new(),
            stats: RelayStats::default(),
            ice_due: Deadlines::default(),
            transmits: VecDeque::new(),
            rng: 0,
        };
        relay.rng = relay.cfg.seed;
        relay.refill(Time::ZERO);
        relay
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Streams relayed now.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// TURN allocations ready for new streams.
    pub fn turn_ready(&self) -> usize {
        self.turn_ready.len()
    }

    /// Keep `pool` TURN allocations ready from now on (0: new streams go direct, and the
    /// ready ones are discarded). Streams already relayed keep theirs.
    pub fn set_turn_pool(&mut self, now: Time, pool: usize) {
        self.cfg.turn_pool = pool;
        while self.turn_ready.len() > pool {
            if let Some((token, _)) = self.turn_ready.pop_back() {
                self.commands.push_back(MediaCommand::Discard(token));
            }
        }
        if pool == 0 {
            // Answers still to come are discarded when they arrive.
            self.turn_pending.clear();
        }
        self.turn_retry_at = None;
        self.refill(now);
    }

    /// The allocation `token` asked for is ready, relayed at `relayed`.
    pub fn turn_allocated(&mut self, now: Time, token: u64, relayed: SocketAddr) {
        if self.turn_pending.remove(&token) && self.turn_ready.len() < self.cfg.turn_pool {
            self.turn_ready.push_back((token, relayed));
            self.turn_failures = 0;
        } else {
            self.commands.push_back(MediaCommand::Discard(token));
        }
        self.refill(now);
    }

    /// The allocation `token` asked for failed: ask again after
    /// [`RelayConfig::turn_retry`], doubled for each failure in a row.
    pub fn turn_failed(&mut self, now: Time, token: u64) {
        if self.turn_pending.remove(&token) {
            self.stats.turn_failed += 1;
            let wait = self.cfg.turn_retry * (1 << self.turn_failures.min(4));
            self.turn_failures = self.turn_failures.saturating_add(1);
            let at = now + wait;
            // Failures answered together wait as long as the first.
            self.turn_retry_at = Some(self.turn_retry_at.map_or(at, |t| t.max(at)));
        }
    }

    /// Ask for allocations until the pool (with those pending) is full, unless waiting
    /// after a failure.
    fn refill(&mut self, now: Time) {
        if self.turn_retry_at.is_some_and(|at| now < at) {
            return;
        }
        self.turn_retry_at = None;
        while self.turn_ready.len() + self.turn_pending.len() < self.cfg.turn_pool {
            let token = self.next_token;
            self.next_token += 1;
            self.turn_pending.insert(token);
            self.commands.push_back(MediaCommand::Allocate(token));
        }
    }

    /// Rewrite an SDP body passing through the front-end for call `call_id`: every active
    /// stream gets (or keeps) its relay, the sending side's leg learns where that side
    /// receives, and the body comes back naming our other leg (our public address, or the
    /// far leg's TURN relay, towards the far end; our LAN address towards the phone).
    /// Disabled streams (port 0) free their relay. On an error nothing changed.
    pub fn rewrite(&mut self, now: Time, call_id: &str, origin: Origin, body: &[u8]) -> Rewritten {
        let sdp = Sdp::parse(body)?;
        let streams = sdp.streams();
        let key = |i: usize| (call_id.to_owned(), i);
        // Check the bounds before taking anything, so a refusal leaves no half relay.
        let new = streams
            .iter()
            .enumerate()
            .filter(|(i, s)| s.is_active() && !self.by_key.contains_key(&key(*i)))
            .count();
        let of_call = self
            .by_key
            .range((call_id.to_owned(), 0)..=(call_id.to_owned(), usize::MAX))
            .count();
        if new > 0 && self.streams.len() + new > self.cfg.bounds.max_streams {
            return Err(MediaError::Full);
        }
        if new > 0 && of_call + new > self.cfg.bounds.max_streams_per_call {
            return Err(MediaError::TooManyStreams);
        }
        if new * LEGS > self.free_pairs() {
            return Err(MediaError::NoPorts);
        }
        let (from_leg, to_leg) = match origin {
            Origin::Phone => (PHONE, FAR),
            Origin::FarEnd => (FAR, PHONE),
        };
        let mut targets = Vec::with_capacity(streams.len());
        let mut lines: Vec<Vec<String>> = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            if s.port == 0 {
                if let Some(id) = self.by_key.get(&key(i)).copied() {
                    self.free(id);
                }
                targets.push(None);
                continue;
            }
            if !s.is_active() {
                // Held (c=0.0.0.0): passes as it is.
                targets.push(None);
                continue;
            }
            let existing = self.by_key.get(&key(i)).copied();
            let id = match existing {
                Some(id) => Some(id),
                None => self.open(now, key(i)),
            };
            let Some(stream) = id.and_then(|id| self.streams.get_mut(&id)) else {
                targets.push(None);
                continue;
            };
            stream.last_active = now;
            for c in &s.clock_rates {
                if !stream.clock_rates.iter().any(|(pt, _)| *pt == c.0)
                    && stream.clock_rates.len() < super::sdp::MAX_RTPMAPS
                {
                    stream.clock_rates.push(*c);
                }
            }
            let rtp = SocketAddr::new(s.addr, s.port);
            let rtcp = SocketAddr::new(s.addr, s.rtcp_port.unwrap_or(s.port.wrapping_add(1)));
            let leg = &mut stream.legs[from_leg];
            if leg.announced != [Some(rtp), Some(rtcp)] {
                leg.announced = [Some(rtp), Some(rtcp)];
                leg.latched = [None; 2];
                if leg.relayed.is_some() {
                    // The far end must be let in through the TURN relay.
                    for (c, peer) in [rtp, rtcp].into_iter().enumerate() {
                        self.commands.push_back(MediaCommand::Permit {
                            port: leg.port + c as u16,
                            peer,
                        });
                    }
                }
            }
            let to = &stream.legs[to_leg];
            targets.push(Some(match (to_leg, to.relayed) {
                (FAR, Some([rtp, rtcp])) => Target { rtp, rtcp },
                (FAR, None) => Target::pair(SocketAddr::new(self.cfg.public, to.port)),
                _ => Target::pair(SocketAddr::new(self.cfg.lan, to.port)),
            }));
            if let Some(id) = id {
                self.far_ice(now, id, origin, existing.is_none(), s.ice.as_ref());
                let ice = self.streams.get(&id).and_then(|s| s.legs[FAR].ice.as_ref());
                if let (Some(ice), Origin::Phone) = (ice, origin) {
                    lines.resize(i, Vec::new());
                    lines.push(ice.sdp_lines().to_vec());
                }
            }
        }
        self.refill(now);
        Ok(sdp.rewrite_with(&targets, &lines))
    }

    /// ICE on stream `id`'s far leg after an SDP from `origin` (with ICE attributes
    /// `remote`, if any): a stream we offer starts it, a far end's offer with ICE starts it
    /// as the controlled side, a far end's SDP with ICE hands it the candidates, and one
    /// without ICE ends it (latching instead).
    fn far_ice(
        &mut self,
        now: Time,
        id: u64,
        origin: Origin,
        created: bool,
        remote: Option<&super::sdp::IceAttributes>,
    ) {
        if !self.cfg.ice {
            return;
        }
        let seed = self.next_seed();
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let leg = &mut stream.legs[FAR];
        let locals = std::array::from_fn(|c| match leg.relayed {
            Some(r) => LocalAddrs {
                relay: Some(r[c]),
                ..LocalAddrs::default()
            },
            None => {
                let port = leg.port + c as u16;
                LocalAddrs {
                    host: Some(SocketAddr::new(self.cfg.lan, port)),
                    srflx: (self.cfg.public != self.cfg.lan)
                        .then(|| SocketAddr::new(self.cfg.public, port)),
                    relay: None,
                }
            }
        });
        match (origin, remote) {
            (Origin::Phone, _) => {
                if created {
                    leg.ice = FarIce::new(now, true, locals, seed).map(Box::new);
                }
            }
            (Origin::FarEnd, None) => {
                if leg.ice.take().is_some() {
                    self.stats.ice_declined += 1;
                    tracing::info!(call = %stream.key.0, stream = stream.key.1,
                        "media: the far end answered without ICE; its leg latches");
                }
            }
            (Origin::FarEnd, Some(attrs)) => {
                if created {
                    leg.ice = FarIce::new(now, false, locals, seed).map(Box::new);
                }
                let Some(mut agent) = leg.ice.take() else {
                    return;
                };
                let mut taken = agent.set_remote(now, attrs);
                if taken == Err(RemoteError::Restart)
                    && let Some(fresh) = agent.restarted(now, seed)
                {
                    tracing::info!(call = %stream.key.0, stream = stream.key.1,
                        "media: the far end restarted ICE");
                    agent = Box::new(fresh);
                    leg.ice_pair = None;
                    taken = agent.set_remote(now, attrs);
                }
                match taken {
                    Ok(addrs) => {
                        if leg.relayed.is_some() {
                            // The far end's candidates must reach us through the TURN relay
                            // (its SDP address has been let in already).
                            for (c, peer) in addrs {
                                if leg.announced.get(c) == Some(&Some(peer)) {
                                    continue;
                                }
                                self.commands.push_back(MediaCommand::Permit {
                                    port: leg.port + c as u16,
                                    peer,
                                });
                            }
                        }
                        leg.ice = Some(agent);
                    }
                    Err(e) => {
                        self.stats.ice_declined += 1;
                        tracing::info!(call = %stream.key.0, stream = stream.key.1,
                            "media: the far end's ICE is unusable ({e:?}); its leg latches");
                    }
                }
            }
        }
        self.ice_sync(id);
    }

    fn next_seed(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Take what stream `id`'s far-leg ICE produced: datagrams to send, events to log and
    /// count, its next deadline.
    fn ice_sync(&mut self, id: u64) {
        let Some(stream) = self.streams.get_mut(&id) else {
            self.ice_due.remove(&id);
            return;
        };
        let leg = &mut stream.legs[FAR];
        let Some(agent) = leg.ice.as_mut() else {
            self.ice_due.remove(&id);
            return;
        };
        while let Some((from, to, data)) = agent.poll_transmit() {
            let from_port = match leg.relayed {
                Some(r) => r
                    .iter()
                    .position(|a| *a == from)
                    .map(|c| leg.port + c as u16),
                None => Some(from.port()).filter(|p| *p == leg.port || *p == leg.port + 1),
            };
            match from_port {
                Some(from_port) if self.transmits.len() < MAX_TRANSMITS => {
                    self.transmits.push_back(Transmit {
                        from_port,
                        to,
                        data,
                    });
                }
                _ => self.stats.ice_dropped += 1,
            }
        }
        self.stats.ice_dropped += std::mem::take(&mut agent.dropped);
        let (call, index) = (&stream.key.0, stream.key.1);
        while let Some(event) = agent.poll_event() {
            match event {
                IceEvent::Selected(c, pair) => {
                    leg.latched[c] = Some(pair.remote_addr);
                    if c == 0 {
                        if leg.ice_pair.is_none() {
                            self.stats.ice_selected += 1;
                        }
                        leg.ice_pair = Some(pair);
                    }
                    tracing::info!(call = %call, stream = index, component = c + 1,
                        path = MediaPath::of_pair(&pair).as_str(),
                        "media: ICE selected {pair}");
                }
                IceEvent::Failed(c) => {
                    if c == 0 {
                        self.stats.ice_failed += 1;
                    }
                    tracing::warn!(call = %call, stream = index, component = c + 1,
                        "media: ICE found no working pair to the far end");
                }
                IceEvent::ConsentLost(c) => {
                    self.stats.consent_lost += 1;
                    tracing::warn!(call = %call, stream = index, component = c + 1,
                        "media: consent to send to the far end expired ({:?} without a \
                         refreshed check); sending stopped", ice::CONSENT_TIMEOUT);
                }
            }
        }
        match agent.poll_timeout() {
            Some(at) => self.ice_due.set(id, at),
            None => {
                self.ice_due.remove(&id);
            }
        }
    }

    /// The dialog of `call_id` ended: free its streams.
    pub fn end_call(&mut self, call_id: &str) {
        let ids: Vec<u64> = self
            .by_key
            .range((call_id.to_owned(), 0)..=(call_id.to_owned(), usize::MAX))
            .map(|(_, id)| *id)
            .collect();
        for id in ids {
            self.free(id);
        }
    }

    /// The shell could not open `port`: free the stream it belongs to, and pass over the
    /// port's pair for [`REFUSED_PAIR_REST`]. `true` when the pair was not resting already
    /// (worth a warning in the shell's log; a repeat is not).
    pub fn port_unavailable(&mut self, now: Time, port: u16) -> bool {
        self.stats.ports_refused += 1;
        let mut fresh = false;
        if let Some(pair) = usize::from(port)
            .checked_sub(usize::from(self.base))
            .map(|i| i / 2)
            && let Some(until) = self.refused_until.get_mut(pair)
        {
            fresh = *until <= now;
            *until = now + REFUSED_PAIR_REST;
        }
        if let Some((id, _)) = self.slot(port).copied().flatten() {
            self.free(id);
        }
        fresh
    }

    /// A datagram `data` arrived on our `port` from `from` (for a port carried by TURN:
    /// from the peer the relay names): where to send it, if anywhere.
    pub fn handle_datagram(
        &mut self,
        now: Time,
        port: u16,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Forward> {
        let len = data.len();
        let Some((id, leg)) = self.slot(port).copied().flatten() else {
            self.stats.stray += 1;
            return None;
        };
        let Some(stream) = self.streams.get_mut(&id) else {
            self.stats.stray += 1;
            return None;
        };
        let component = usize::from(port != stream.legs[leg].port);
        if ice::is_stun(data) {
            // RFC 7983: STUN, never media. It is ICE's on a far leg running it.
            let far = &mut stream.legs[FAR];
            match far.ice.as_mut().filter(|_| leg == FAR) {
                Some(agent) => {
                    let local = match far.relayed {
                        Some(r) => r[component],
                        None => SocketAddr::new(self.cfg.lan, port),
                    };
                    self.stats.stun_received += 1;
                    agent.handle_stun(now, component, local, from, data);
                    self.ice_sync(id);
                }
                None => self.stats.stun_dropped += 1,
            }
            return None;
        }
        if let Some(agent) = stream.legs[leg].ice.as_ref().filter(|i| i.has_remote()) {
            // From the far end over ICE: on the selected pair; before there is one, from
            // the other relay's candidates (its default path among them).
            match agent.selected(component) {
                Some(p) if p.remote_addr == from => {}
                Some(_) => {
                    self.stats.foreign += 1;
                    return None;
                }
                None if agent.before_selection(component)
                    && (agent.is_remote_candidate(component, from)
                        || stream.legs[leg].announced[component] == Some(from)) => {}
                None => {
                    self.stats.no_consent += 1;
                    return None;
                }
            }
        }
        let latched = &mut stream.legs[leg].latched[component];
        match latched {
            Some(src) if *src != from => {
                self.stats.foreign += 1;
                return None;
            }
            Some(_) => {}
            None => *latched = Some(from),
        }
        stream.last_active = stream.last_active.max(now);
        if component == 0 {
            let rates = &stream.clock_rates;
            stream.legs[leg].quality.packet(now, data, rates);
        }
        if len > self.cfg.max_datagram {
            self.stats.over_limit += 1;
            return None;
        }
        if now.saturating_since(stream.window_start) >= Duration::from_secs(1) {
            stream.window_start = now;
            stream.window_bytes = 0;
        }
        stream.window_bytes += len as u64;
        if stream.window_bytes > self.cfg.max_bytes_per_sec {
            self.stats.over_limit += 1;
            return None;
        }
        let other = &stream.legs[1 - leg];
        let mut default_path = false;
        let to = match other.ice.as_ref().filter(|i| i.has_remote()) {
            Some(agent) => match agent.destination(component) {
                Some(to) => Ok(to),
                // No pair yet: the default path, where the far end's own media comes from
                // or its SDP's c=/m= address (see the module doc).
                None if agent.before_selection(component) => {
                    default_path = true;
                    other.destination(component).ok_or(false)
                }
                None => Err(true),
            },
            None => other.destination(component).ok_or(false),
        };
        let to = match to {
            Ok(to) => to,
            Err(ice) => {
                if ice {
                    self.stats.no_consent += 1;
                } else {
                    self.stats.no_destination += 1;
                }
                return None;
            }
        };
        self.stats.forwarded += 1;
        self.stats.before_selection += u64::from(default_path);
        Some(Forward {
            from_port: other.port + component as u16,
            to,
        })
    }

    /// Free the streams idle at `now`, drive far-leg ICE (checks, consent); ask for TURN
    /// allocations again after a failure.
    pub fn handle_timeout(&mut self, now: Time) {
        let mut due = Vec::new();
        while let Some(id) = self.ice_due.pop_due(now) {
            due.push(id);
        }
        for id in due {
            if let Some(agent) = self
                .streams
                .get_mut(&id)
                .and_then(|s| s.legs[FAR].ice.as_mut())
            {
                agent.handle_timeout(now);
            }
            self.ice_sync(id);
        }
        while let Some(id) = self.idle.pop_due(now) {
            let Some(stream) = self.streams.get(&id) else {
                continue;
            };
            let due = stream.last_active + self.cfg.bounds.idle;
            if due > now {
                self.idle.set(id, due);
            } else {
                self.stats.idled += 1;
                self.free(id);
            }
        }
        self.refill(now);
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let retry = self
            .turn_retry_at
            .filter(|_| self.turn_ready.len() + self.turn_pending.len() < self.cfg.turn_pool);
        [self.idle.next(), retry, self.ice_due.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next datagram the relay itself sends (ICE checks, answers, consent).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next socket or allocation to open, attach or close.
    pub fn poll_command(&mut self) -> Option<MediaCommand> {
        self.commands.pop_front()
    }

    /// The next report of an ended stream.
    pub fn poll_report(&mut self) -> Option<StreamReport> {
        self.reports.pop_front()
    }

    fn slot(&self, port: u16) -> Option<&Option<(u64, usize)>> {
        let offset = port.checked_sub(self.base)?;
        self.ports.get(usize::from(offset))
    }

    fn free_pairs(&self) -> usize {
        self.ports.chunks(2).filter(|p| p[0].is_none()).count()
    }

    /// Take a free pair for stream `id`'s `leg`: its even port. With `open`, the shell is
    /// asked for its sockets.
    fn take_pair(&mut self, now: Time, id: u64, leg: usize, open: bool) -> Option<u16> {
        let pairs = self.ports.len() / 2;
        for step in 0..pairs {
            let pair = (self.cursor + step) % pairs;
            let resting = self.refused_until.get(pair).is_some_and(|t| *t > now);
            if self.ports[pair * 2].is_none() && !resting {
                self.cursor = (pair + 1) % pairs;
                self.ports[pair * 2] = Some((id, leg));
                self.ports[pair * 2 + 1] = Some((id, leg));
                let port = self.base + (pair * 2) as u16;
                if open {
                    self.commands.push_back(MediaCommand::Open(port));
                    self.commands.push_back(MediaCommand::Open(port + 1));
                }
                return Some(port);
            }
        }
        None
    }

    /// A new stream for `key`, if two port pairs are free; its far leg through TURN when
    /// the pool is on and has two allocations ready.
    fn open(&mut self, now: Time, key: StreamKey) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let turn = self.cfg.turn_pool > 0;
        let relayed = if turn && self.turn_ready.len() >= 2 {
            match (self.turn_ready.pop_front(), self.turn_ready.pop_front()) {
                (Some(a), Some(b)) => Some([a, b]),
                _ => None,
            }
        } else {
            None
        };
        let phone = self.take_pair(now, id, PHONE, true);
        let far = phone.and_then(|_| self.take_pair(now, id, FAR, relayed.is_none()));
        let (Some(phone), Some(far)) = (phone, far) else {
            if let Some(p) = phone {
                self.release(id, p);
            }
            // Give the allocations back to the pool.
            for a in relayed.into_iter().flatten().rev() {
                self.turn_ready.push_front(a);
            }
            return None;
        };
        let mut far_leg = Leg::new(far);
        match relayed {
            Some([(t0, r0), (t1, r1)]) => {
                self.commands.push_back(MediaCommand::Attach {
                    token: t0,
                    port: far,
                });
                self.commands.push_back(MediaCommand::Attach {
                    token: t1,
                    port: far + 1,
                });
                far_leg.relayed = Some([r0, r1]);
                self.stats.turn_streams += 1;
            }
            None if turn => self.stats.turn_short += 1,
            None => {}
        }
        self.by_key.insert(key.clone(), id);
        self.idle.set(id, now + self.cfg.bounds.idle);
        self.streams.insert(
            id,
            Stream {
                key,
                legs: [Leg::new(phone), far_leg],
                started: now,
                last_active: now,
                window_start: now,
                window_bytes: 0,
                clock_rates: Vec::new(),
            },
        );
        Some(id)
    }

    /// Give back stream `id`'s pair at `port` (and `port + 1`).
    fn release(&mut self, id: u64, port: u16) {
        for port in [port, port.wrapping_add(1)] {
            let offset = port.checked_sub(self.base).map(usize::from);
            if let Some(slot) = offset.and_then(|o| self.ports.get_mut(o))
                && slot.is_some_and(|(owner, _)| owner == id)
            {
                *slot = None;
                self.commands.push_back(MediaCommand::Close(port));
            }
        }
    }

    fn free(&mut self, id: u64) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        self.by_key.remove(&stream.key);
        self.idle.remove(&id);
        self.ice_due.remove(&id);
        for leg in &stream.legs {
            self.release(id, leg.port);
        }
        let far = &stream.legs[FAR];
        let path = if let Some(pair) = &far.ice_pair {
            MediaPath::of_pair(pair)
        } else if far.relayed.is_some() {
            MediaPath::Relayed
        } else if self.cfg.public_is_reflexive {
            MediaPath::ServerReflexive
        } else {
            MediaPath::Direct
        };
        let report = StreamReport {
            call_id: stream.key.0.clone(),
            index: stream.key.1,
            path,
            far: far.destination(0),
            duration: stream.last_active.saturating_since(stream.started),
            from_phone: DirectionReport::of(&stream.legs[PHONE].quality),
            from_far: DirectionReport::of(&far.quality),
            ice: far.ice_pair,
            consent_lost: far.ice.as_ref().is_some_and(|i| i.consent_lost(0)),
        };
        self.stats.ended += 1;
        self.stats.ended_by_path[path as usize] += 1;
        self.stats.rtp_packets += report.from_phone.packets + report.from_far.packets;
        self.stats.rtp_lost += report.from_phone.lost + report.from_far.lost;
        if self.reports.len() >= self.cfg.max_reports {
            self.reports.pop_front();
            self.stats.reports_dropped += 1;
        }
        if self.cfg.max_reports > 0 {
            self.reports.push_back(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A datagram of `n` bytes (neither RTP, which quality would count, nor STUN, which
    /// the relay never forwards).
    fn d(n: usize) -> Vec<u8> {
        vec![0x40; n]
    }

    fn relay() -> MediaRelay {
        let mut cfg = RelayConfig::new("10.0.0.1".parse().unwrap(), "203.0.113.1".parse().unwrap());
        cfg.bounds.first_port = 40000;
        cfg.bounds.last_port = 40015; // 8 pairs: 4 streams
        cfg.bounds.max_streams_per_call = 3;
        // The latching and bounds tests speak to a far end without ICE; ICE has its own.
        cfg.ice = false;
        MediaRelay::new(cfg)
    }

    fn sdp(ip: &str, ports: &[u16]) -> Vec<u8> {
        let mut s = format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
        for p in ports {
            s += &format!("m=audio {p} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n");
        }
        s.into_bytes()
    }

    /// What the relay makes, at time zero, of the body `sdp(ip, ports)` from `from` in `call`.
    fn rewrite_sdp(
        r: &mut MediaRelay,
        call: &str,
        from: Origin,
        ip: &str,
        ports: &[u16],
    ) -> String {
        let out = r.rewrite(Time::ZERO, call, from, &sdp(ip, ports)).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// What `handle_datagram` returns for a datagram sent on from `from_port` to `to`.
    fn forward(from_port: u16, to: SocketAddr) -> Option<Forward> {
        Some(Forward { from_port, to })
    }

    /// A datagram from the far end of `offer_and_answer` to its relay port.
    fn from_far_end(r: &mut MediaRelay) -> Option<Forward> {
        r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), &d(172))
    }

    fn commands(r: &mut MediaRelay) -> Vec<MediaCommand> {
        std::iter::from_fn(|| r.poll_command()).collect()
    }

    /// The phone's offer, then the far end's answer: the caller's peer side of a call.
    fn offer_and_answer(r: &mut MediaRelay) -> (String, String) {
        let out = rewrite_sdp(r, "call-1", Origin::Phone, "192.168.1.20", &[4000]);
        let back = rewrite_sdp(r, "call-1", Origin::FarEnd, "198.51.100.9", &[30000]);
        (out, back)
    }

    #[test]
    fn each_side_is_pointed_at_its_own_leg_and_datagrams_cross() {
        let mut r = relay();
        let (out, back) = offer_and_answer(&mut r);
        // Towards the far end: our public address and the far leg; towards the phone: our
        // LAN address and the phone leg.
        assert!(out.contains("c=IN IP4 203.0.113.1\r\n") && out.contains("m=audio 40002 "));
        assert!(back.contains("c=IN IP4 10.0.0.1\r\n") && back.contains("m=audio 40000 "));
        assert_eq!(
            commands(&mut r),
            [40000, 40001, 40002, 40003]
                .map(MediaCommand::Open)
                .to_vec()
        );
        // Phone → far end, RTP and RTCP.
        let phone = addr("192.168.1.20:4000");
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40000, phone, &d(172)),
            forward(40002, addr("198.51.100.9:30000"))
        );
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40001, addr("192.168.1.20:4001"), &d(80)),
            forward(40003, addr("198.51.100.9:30001"))
        );
        // Far end → phone.
        assert_eq!(from_far_end(&mut r), forward(40000, phone));
        assert_eq!(r.stats().forwarded, 3);
    }

    #[test]
    fn a_leg_latches_on_its_first_source_and_ignores_others() {
        let mut r = relay();
        offer_and_answer(&mut r);
        // The far peer's NAT maps its port elsewhere: we answer where it really is.
        let nat = addr("198.51.100.9:61000");
        assert!(r.handle_datagram(Time::ZERO, 40002, nat, &d(172)).is_some());
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40000, addr("192.168.1.20:4000"), &d(172)),
            forward(40002, nat)
        );
        // Someone else on the far leg: dropped, the latch holds.
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), &d(172)),
            None
        );
        assert_eq!(r.stats().foreign, 1);
        // A new answer with a new address unlatches the far leg; the same one does not.
        rewrite_sdp(&mut r, "call-1", Origin::FarEnd, "198.51.100.9", &[30000]);
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), &d(172)),
            None
        );
        rewrite_sdp(&mut r, "call-1", Origin::FarEnd, "198.51.100.10", &[30000]);
        assert!(
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), &d(172))
                .is_some()
        );
    }

    #[test]
    fn nothing_goes_out_before_the_other_side_has_said_where_it_is() {
        let mut r = relay();
        rewrite_sdp(&mut r, "c", Origin::Phone, "192.168.1.20", &[4000]);
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40000, addr("192.168.1.20:4000"), &d(172)),
            None
        );
        assert_eq!(r.stats().no_destination, 1);
        assert_eq!(
            r.handle_datagram(Time::ZERO, 41000, addr("192.168.1.20:4000"), &d(172)),
            None
        );
        assert_eq!(r.stats().stray, 1);
    }

    #[test]
    fn bounds_refuse_without_taking_anything() {
        let mut r = relay();
        // Four streams fit in the range, three in a call.
        assert_eq!(
            r.rewrite(
                Time::ZERO,
                "a",
                Origin::Phone,
                &sdp("192.168.1.20", &[1, 2, 3, 4])
            ),
            Err(MediaError::TooManyStreams)
        );
        assert_eq!(r.streams(), 0);
        rewrite_sdp(&mut r, "a", Origin::Phone, "192.168.1.20", &[1, 2, 3]);
        assert_eq!(
            r.rewrite(
                Time::ZERO,
                "b",
                Origin::Phone,
                &sdp("192.168.1.21", &[1, 2])
            ),
            Err(MediaError::NoPorts)
        );
        rewrite_sdp(&mut r, "b", Origin::Phone, "192.168.1.21", &[1]);
        assert_eq!(r.streams(), 4);
        // Malformed and oversized bodies change nothing either.
        let before = commands(&mut r).len();
        assert_eq!(before, 16);
        assert!(matches!(
            r.rewrite(Time::ZERO, "c", Origin::Phone, b"v=0\r\nm=audio\r\n"),
            Err(MediaError::Sdp(_))
        ));
        let big = vec![b'a'; super::super::sdp::MAX_SDP_BYTES + 1];
        assert!(matches!(
            r.rewrite(Time::ZERO, "c", Origin::Phone, &big),
            Err(MediaError::Sdp(SdpError::TooLarge(_)))
        ));
        assert!(commands(&mut r).is_empty());
        // A peer-wide cap below the ports.
        let mut small = relay();
        small.cfg.bounds.max_streams = 1;
        rewrite_sdp(&mut small, "a", Origin::Phone, "192.168.1.20", &[1]);
        assert_eq!(
            small.rewrite(Time::ZERO, "b", Origin::Phone, &sdp("192.168.1.20", &[1])),
            Err(MediaError::Full)
        );
    }

    #[test]
    fn a_dialog_end_a_disabled_stream_and_idleness_free_the_ports() {
        let mut r = relay();
        rewrite_sdp(&mut r, "a", Origin::Phone, "192.168.1.20", &[4000, 4002]);
        rewrite_sdp(&mut r, "b", Origin::Phone, "192.168.1.21", &[4000]);
        commands(&mut r);
        // Port 0 in a re-offer frees that stream only.
        rewrite_sdp(&mut r, "a", Origin::Phone, "192.168.1.20", &[4000, 0]);
        assert_eq!(r.streams(), 2);
        assert_eq!(
            commands(&mut r),
            [40004, 40005, 40006, 40007]
                .map(MediaCommand::Close)
                .to_vec()
        );
        r.end_call("a");
        assert_eq!(r.streams(), 1);
        assert_eq!(commands(&mut r).len(), 4);
        // "b" has traffic at 30 s, so it outlives the first idle deadline.
        let idle = r.config().bounds.idle;
        let t30 = Time::ZERO + Duration::from_secs(30);
        r.handle_datagram(t30, 40008, addr("192.168.1.21:4000"), &d(100));
        assert_eq!(r.poll_timeout(), Some(Time::ZERO + idle));
        r.handle_timeout(Time::ZERO + idle);
        assert_eq!(r.streams(), 1);
        assert_eq!(r.poll_timeout(), Some(t30 + idle));
        r.handle_timeout(t30 + idle);
        assert_eq!(r.streams(), 0);
        assert_eq!(r.stats().idled, 1);
        assert_eq!(commands(&mut r).len(), 4);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_port_the_shell_could_not_open_frees_its_stream() {
        let mut r = relay();
        rewrite_sdp(&mut r, "a", Origin::Phone, "192.168.1.20", &[4000]);
        commands(&mut r);
        assert!(r.port_unavailable(Time::ZERO, 40003));
        assert_eq!(r.streams(), 0);
        assert_eq!(commands(&mut r).len(), 4);
        assert!(
            !r.port_unavailable(Time::ZERO, 40002),
            "a resting pair is no news"
        );
        assert_eq!(r.stats().ports_refused, 2);
        // Every other pair is tried before the refused one (40002/40003) again: 7 streams'
        // worth of pairs while it rests (only 3 streams fit), then, rested, it is taken.
        let opened = |r: &mut MediaRelay| -> Vec<u16> {
            commands(r)
                .into_iter()
                .filter_map(|c| match c {
                    MediaCommand::Open(p) => Some(p),
                    _ => None,
                })
                .collect()
        };
        let mut seen = Vec::new();
        for call in ["b", "c", "d"] {
            rewrite_sdp(&mut r, call, Origin::Phone, "192.168.1.20", &[4000]);
            seen.extend(opened(&mut r));
        }
        assert!(!seen.contains(&40002) && !seen.contains(&40003), "{seen:?}");
        for call in ["b", "c", "d"] {
            r.end_call(call);
        }
        commands(&mut r);
        let later = Time::ZERO + REFUSED_PAIR_REST;
        let mut seen = Vec::new();
        for call in ["e", "f", "g", "h"] {
            r.rewrite(later, call, Origin::Phone, &sdp("192.168.1.20", &[4000]))
                .unwrap();
            seen.extend(opened(&mut r));
        }
        assert!(
            seen.contains(&40002),
            "the rested pair is taken again: {seen:?}"
        );
    }

    #[test]
    fn size_and_rate_bounds_drop_datagrams() {
        let mut r = relay();
        r.cfg.max_bytes_per_sec = 1000;
        offer_and_answer(&mut r);
        let phone = addr("192.168.1.20:4000");
        assert_eq!(r.handle_datagram(Time::ZERO, 40000, phone, &d(5000)), None);
        for _ in 0..5 {
            assert!(
                r.handle_datagram(Time::ZERO, 40000, phone, &d(200))
                    .is_some()
            );
        }
        assert_eq!(r.handle_datagram(Time::ZERO, 40000, phone, &d(200)), None);
        assert_eq!(r.stats().over_limit, 2);
        // The next second has a fresh budget.
        let t1 = Time::ZERO + Duration::from_secs(1);
        assert!(r.handle_datagram(t1, 40000, phone, &d(200)).is_some());
    }

    /// The resume after a hold in `offer_and_answer`'s call: the phone's offer again is
    /// rewritten as the first time (`out`: the same relay ports towards the far end), no
    /// socket is opened or closed, and the far end still reaches the phone at `phone`.
    fn assert_resumes(r: &mut MediaRelay, out: &str, phone: SocketAddr) {
        let resumed = rewrite_sdp(r, "call-1", Origin::Phone, "192.168.1.20", &[4000]);
        assert_eq!(resumed, out);
        assert!(commands(r).is_empty());
        assert_eq!(from_far_end(r), forward(40000, phone));
    }

    #[test]
    fn a_re_offer_for_hold_and_resume_keeps_the_relay() {
        let mut r = relay();
        let (out, _) = offer_and_answer(&mut r);
        commands(&mut r);
        // Hold (RFC 6337: a=sendonly) and resume: same streams, same ports, no new sockets.
        let hold = String::from_utf8(sdp("192.168.1.20", &[4000])).unwrap() + "a=sendonly\r\n";
        let held = r
            .rewrite(Time::ZERO, "call-1", Origin::Phone, hold.as_bytes())
            .unwrap();
        let held = String::from_utf8(held).unwrap();
        assert!(held.contains("m=audio 40002 ") && held.ends_with("a=sendonly\r\n"));
        assert_resumes(&mut r, &out, addr("192.168.1.20:4000"));
        assert_eq!(r.streams(), 1);
    }

    #[test]
    fn an_inactive_hold_with_no_address_keeps_the_relay_for_the_resume() {
        let mut r = relay();
        let (out, _) = offer_and_answer(&mut r);
        commands(&mut r);
        let phone = addr("192.168.1.20:4000");
        assert!(
            r.handle_datagram(Time::ZERO, 40000, phone, &d(172))
                .is_some()
        );
        // RFC 2543 style hold: c=0.0.0.0 and a=inactive pass untouched, nothing is freed.
        let hold = "v=0\r\no=- 1 2 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0 8\r\na=inactive\r\n";
        let held = r
            .rewrite(Time::ZERO, "call-1", Origin::Phone, hold.as_bytes())
            .unwrap();
        assert_eq!(held, hold.as_bytes());
        let answer = "v=0\r\no=- 1 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n\
                      m=audio 30000 RTP/AVP 0\r\na=inactive\r\n";
        r.rewrite(Time::ZERO, "call-1", Origin::FarEnd, answer.as_bytes())
            .unwrap();
        assert_eq!(r.streams(), 1);
        // The phone's leg stays latched where it was.
        assert_resumes(&mut r, &out, phone);
    }

    #[test]
    fn the_called_side_anchors_the_far_offer_first() {
        let mut r = relay();
        // The offer comes from the far end: the phone is offered our LAN side.
        let to_phone = rewrite_sdp(&mut r, "in", Origin::FarEnd, "198.51.100.9", &[30000]);
        assert!(to_phone.contains("c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 40000 "));
        // Early media (183) and the 200 carry the same answer: one stream, the public side.
        for _ in 0..2 {
            let out = rewrite_sdp(&mut r, "in", Origin::Phone, "192.168.1.30", &[5000]);
            assert!(out.contains("c=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 40002 "));
        }
        assert_eq!(r.streams(), 1);
        assert_eq!(
            from_far_end(&mut r),
            forward(40000, addr("192.168.1.30:5000"))
        );
    }

    #[test]
    fn a_held_offer_passes_as_it_is() {
        let mut r = relay();
        let held = b"v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let out = r.rewrite(Time::ZERO, "h", Origin::Phone, held).unwrap();
        assert_eq!(out, held.to_vec());
        assert_eq!(r.streams(), 0);
    }

    fn turn_relay(pool: usize) -> MediaRelay {
        let mut r = relay();
        r.set_turn_pool(Time::ZERO, pool);
        r
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&[0; 4 + 160]);
        p
    }

    #[test]
    fn a_far_leg_through_turn_names_the_relayed_addresses_and_lets_the_far_end_in() {
        let mut r = turn_relay(2);
        assert_eq!(
            commands(&mut r),
            [MediaCommand::Allocate(0), MediaCommand::Allocate(1)]
        );
        r.turn_allocated(Time::ZERO, 0, addr("198.51.100.1:50000"));
        r.turn_allocated(Time::ZERO, 1, addr("198.51.100.1:50377"));
        assert_eq!(r.turn_ready(), 2);
        let (out, back) = offer_and_answer(&mut r);
        // The far end is given the TURN relay, RTCP on its own allocation.
        assert!(out.contains("c=IN IP4 198.51.100.1\r\n"), "{out}");
        assert!(out.contains("m=audio 50000 RTP/AVP 0 8\r\n"));
        assert!(out.ends_with("a=rtcp:50377 IN IP4 198.51.100.1\r\n"));
        assert!(back.contains("c=IN IP4 10.0.0.1\r\n") && back.contains("m=audio 40000 "));
        // Sockets for the phone leg only; the far leg rides the allocations, which let the
        // far end's RTP and RTCP in once its answer names them; the pool is refilled.
        assert_eq!(
            commands(&mut r),
            [
                MediaCommand::Open(40000),
                MediaCommand::Open(40001),
                MediaCommand::Attach {
                    token: 0,
                    port: 40002
                },
                MediaCommand::Attach {
                    token: 1,
                    port: 40003
                },
                MediaCommand::Allocate(2),
                MediaCommand::Allocate(3),
                MediaCommand::Permit {
                    port: 40002,
                    peer: addr("198.51.100.9:30000")
                },
                MediaCommand::Permit {
                    port: 40003,
                    peer: addr("198.51.100.9:30001")
                },
            ]
        );
        // The same answer again (a 200 after a 183) asks for nothing more.
        rewrite_sdp(&mut r, "call-1", Origin::FarEnd, "198.51.100.9", &[30000]);
        assert!(commands(&mut r).is_empty());
        // Datagrams cross as on sockets: the shell hands TURN data in as the port's.
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40000, addr("192.168.1.20:4000"), &rtp(1)),
            forward(40002, addr("198.51.100.9:30000"))
        );
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), &rtp(7)),
            forward(40000, addr("192.168.1.20:4000"))
        );
        assert_eq!(r.stats().turn_streams, 1);
        // Hanging up closes the ports, allocations included, and reports a relayed path.
        r.end_call("call-1");
        assert_eq!(
            commands(&mut r),
            [40000, 40001, 40002, 40003]
                .map(MediaCommand::Close)
                .to_vec()
        );
        let report = r.poll_report().unwrap();
        assert_eq!(report.path, MediaPath::Relayed);
        assert_eq!(report.far, Some(addr("198.51.100.9:30000")));
        assert_eq!((report.from_phone.packets, report.from_far.packets), (1, 1));
    }

    #[test]
    fn without_ready_allocations_a_stream_goes_direct_and_a_failure_waits() {
        let mut r = turn_relay(2);
        commands(&mut r);
        r.turn_allocated(Time::ZERO, 0, addr("198.51.100.1:50000"));
        r.turn_failed(Time::ZERO, 1);
        assert_eq!(r.stats().turn_failed, 1);
        // One allocation is not enough for RTP and RTCP: direct, counted.
        let (out, _) = offer_and_answer(&mut r);
        assert!(out.contains("c=IN IP4 203.0.113.1\r\n") && out.contains("m=audio 40002 "));
        assert_eq!(r.stats().turn_short, 1);
        assert!(!commands(&mut r).contains(&MediaCommand::Allocate(2)));
        // The retry comes after turn_retry, not before.
        let retry = Time::ZERO + r.config().turn_retry;
        assert_eq!(r.poll_timeout(), Some(retry));
        r.handle_timeout(Time::ZERO + (r.config().turn_retry - Duration::from_millis(1)));
        assert!(commands(&mut r).is_empty());
        r.handle_timeout(retry);
        assert_eq!(commands(&mut r), [MediaCommand::Allocate(2)]);
        // A second failure in a row waits twice as long; a success resets the wait.
        r.turn_failed(retry, 2);
        let twice = retry + r.config().turn_retry * 2;
        assert_eq!(r.poll_timeout(), Some(twice));
        r.handle_timeout(twice);
        assert_eq!(commands(&mut r), [MediaCommand::Allocate(3)]);
        r.turn_allocated(twice, 3, addr("198.51.100.1:50002"));
        r.set_turn_pool(twice, 3);
        assert_eq!(commands(&mut r), [MediaCommand::Allocate(4)]);
        r.turn_failed(twice, 4);
        assert_eq!(r.poll_timeout(), Some(twice + r.config().turn_retry));
        let retry = twice + r.config().turn_retry;
        r.handle_timeout(retry);
        assert_eq!(commands(&mut r), [MediaCommand::Allocate(5)]);
        // Turning TURN off discards the ready allocations and one answered late.
        r.set_turn_pool(retry, 0);
        r.turn_allocated(retry, 5, addr("198.51.100.1:50004"));
        assert_eq!(
            commands(&mut r),
            [
                MediaCommand::Discard(3),
                MediaCommand::Discard(0),
                MediaCommand::Discard(5)
            ]
        );
        assert_eq!(r.turn_ready(), 0);
        // An unknown token is discarded as well, and a failure of one is not counted.
        r.turn_allocated(retry, 99, addr("198.51.100.1:50004"));
        r.turn_failed(retry, 98);
        assert_eq!(commands(&mut r), [MediaCommand::Discard(99)]);
        assert_eq!(r.stats().turn_failed, 3);
    }

    #[test]
    fn an_ended_stream_reports_its_path_packets_loss_and_jitter() {
        let mut r = relay();
        r.cfg.public_is_reflexive = true;
        offer_and_answer(&mut r);
        let (phone, far) = (addr("192.168.1.20:4000"), addr("198.51.100.9:61000"));
        // 50 packets each way at 20 ms; the far end's 10th and 20th are lost, and its
        // packets arrive alternately on time and 2 ms late.
        for i in 0..50u16 {
            let t = Time::ZERO + Duration::from_millis(u64::from(i) * 20);
            r.handle_datagram(t, 40000, phone, &rtp(i));
            if i != 10 && i != 20 {
                let late = Duration::from_millis(u64::from(i % 2) * 2);
                r.handle_datagram(t + late, 40002, far, &rtp(i));
            }
            // RTCP is forwarded, not counted as RTP.
            r.handle_datagram(t, 40001, addr("192.168.1.20:4001"), &rtp(i));
        }
        r.end_call("call-1");
        let rep = r.poll_report().unwrap();
        assert_eq!((rep.call_id.as_str(), rep.index), ("call-1", 0));
        assert_eq!(rep.path, MediaPath::ServerReflexive);
        assert_eq!(rep.far, Some(far));
        assert_eq!(rep.duration, Duration::from_millis(982));
        assert_eq!(
            (
                rep.from_phone.packets,
                rep.from_phone.lost,
                rep.from_phone.jitter_ms
            ),
            (50, 0, 0.0)
        );
        assert_eq!((rep.from_far.packets, rep.from_far.lost), (48, 2));
        assert!((rep.from_far.loss_percent() - 4.0).abs() < 1e-9);
        assert!(rep.from_far.jitter_ms > 1.0 && rep.from_far.jitter_ms < 2.1);
        assert_eq!((r.stats().rtp_packets, r.stats().rtp_lost), (98, 2));
        assert_eq!(r.stats().ended_by_path, [0, 1, 0]);
        assert!(r.poll_report().is_none());
        // Reports are bounded: the oldest go first.
        r.cfg.max_reports = 1;
        for call in ["x", "y"] {
            rewrite_sdp(&mut r, call, Origin::Phone, "192.168.1.20", &[4000]);
            r.end_call(call);
        }
        assert_eq!(r.poll_report().map(|r| r.call_id), Some("y".to_owned()));
        assert_eq!(r.stats().reports_dropped, 1);
    }

    // ICE between two relays, on virtual time over a simulated internet: each relay sits
    // behind a full-cone NAT that keeps ports (its public address is server-reflexive).
    // Both homes use the same private address, as in scripts/voice-nat: a check towards the
    // other home's host candidate lands on the sender's own port.

    /// A relay for ICE tests: LAN `lan`, NAT address `public`.
    fn ice_relay(lan: &str, public: &str, seed: u64) -> MediaRelay {
        let mut cfg = RelayConfig::new(lan.parse().unwrap(), public.parse().unwrap());
        cfg.bounds.first_port = 40000;
        cfg.bounds.last_port = 40015;
        cfg.public_is_reflexive = true;
        cfg.seed = seed;
        // These tests send no media for minutes: checks and consent do not keep a stream.
        cfg.bounds.idle = Duration::from_secs(3600);
        MediaRelay::new(cfg)
    }

    const A_LAN: &str = "10.0.0.1";
    const A_NAT: &str = "203.0.113.1";
    const B_LAN: &str = "10.0.0.1";
    const B_NAT: &str = "198.51.100.9";
    /// The phones' RTP addresses (their SDP in [`Pair::call`]).
    const ALICE: &str = "192.168.1.20:4000";
    const BOB: &str = "192.168.2.30:5000";

    /// The two peers' relays and the network between them.
    struct Pair {
        a: MediaRelay,
        b: MediaRelay,
        now: Time,
        /// Datagrams from b to a are lost (b's side of the path is cut).
        cut_b_to_a: bool,
        /// Datagrams a sent to b and b received, ICE and media.
        a_to_b: u64,
        /// One-way delay of every datagram.
        latency: Duration,
        /// This many more datagrams from a to b are lost.
        lose_a_to_b: usize,
        /// a's far leg (ports 40002, 40003) rides TURN allocations relayed at these.
        a_turn: Option<[SocketAddr; 2]>,
        /// Datagrams on their way: arrival, to a (else b), port, source, bytes.
        inflight: VecDeque<(Time, bool, u16, SocketAddr, Vec<u8>)>,
        /// What reached alice's and bob's phones.
        alice_heard: Vec<Vec<u8>>,
        bob_heard: Vec<Vec<u8>>,
    }

    impl Pair {
        fn new() -> Self {
            Pair {
                a: ice_relay(A_LAN, A_NAT, 1),
                b: ice_relay(B_LAN, B_NAT, 2),
                now: Time::ZERO,
                cut_b_to_a: false,
                a_to_b: 0,
                latency: Duration::ZERO,
                lose_a_to_b: 0,
                a_turn: None,
                inflight: VecDeque::new(),
                alice_heard: Vec::new(),
                bob_heard: Vec::new(),
            }
        }

        /// Alice's phone offers through a, b passes the offer to bob's phone, bob's answer
        /// comes back: the SDP each side saw.
        fn call(&mut self, b_answers_ice: bool) -> [String; 4] {
            let t = self.now;
            let offer = self
                .a
                .rewrite(t, "c", Origin::Phone, &sdp("192.168.1.20", &[4000]))
                .unwrap();
            let to_bob = self.b.rewrite(t, "c", Origin::FarEnd, &offer).unwrap();
            let mut answer = self
                .b
                .rewrite(t, "c", Origin::Phone, &sdp("192.168.2.30", &[5000]))
                .unwrap();
            if !b_answers_ice {
                // An older peer: its answer names its public side and nothing more.
                answer = String::from_utf8(answer)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with("a=ice") && !l.starts_with("a=candidate"))
                    .map(|l| format!("{l}\r\n"))
                    .collect::<String>()
                    .into_bytes();
            }
            let to_alice = self.a.rewrite(t, "c", Origin::FarEnd, &answer).unwrap();
            [offer, to_bob, answer, to_alice].map(|b| String::from_utf8(b).unwrap())
        }

        /// Put what the relays send on the network.
        fn collect(&mut self) {
            while let Some(t) = self.a.poll_transmit() {
                self.route(true, t.from_port, t.to, t.data);
            }
            while let Some(t) = self.b.poll_transmit() {
                self.route(false, t.from_port, t.to, t.data);
            }
        }

        /// A datagram relay a (else b) sends out of its port `from_port` to `to`, on its
        /// way: into the other home through its NAT, back into its own, or to a phone.
        fn route(&mut self, from_a: bool, from_port: u16, to: SocketAddr, data: Vec<u8>) {
            let at = self.now + self.latency;
            let ip = to.ip().to_string();
            if from_a {
                let relayed = self
                    .a_turn
                    .and_then(|r| r.get(usize::from(from_port.checked_sub(40002)?)).copied());
                if to == addr(ALICE) {
                    self.alice_heard.push(data);
                } else if let Some(from) = relayed {
                    // Out of the allocation: from its relayed address, to anywhere.
                    if ip == B_NAT {
                        self.a_to_b += 1;
                        self.inflight.push_back((at, false, to.port(), from, data));
                    }
                } else if ip == A_LAN {
                    let from = SocketAddr::new(A_LAN.parse().unwrap(), from_port);
                    self.inflight.push_back((at, true, to.port(), from, data));
                } else if ip == B_NAT && self.lose_a_to_b > 0 {
                    self.lose_a_to_b -= 1;
                } else if ip == B_NAT {
                    let from = SocketAddr::new(A_NAT.parse().unwrap(), from_port);
                    self.a_to_b += 1;
                    self.inflight.push_back((at, false, to.port(), from, data));
                }
            } else if to == addr(BOB) {
                self.bob_heard.push(data);
            } else if ip == B_LAN {
                let from = SocketAddr::new(B_LAN.parse().unwrap(), from_port);
                self.inflight.push_back((at, false, to.port(), from, data));
            } else if ip == A_NAT && !self.cut_b_to_a {
                let from = SocketAddr::new(B_NAT.parse().unwrap(), from_port);
                self.inflight.push_back((at, true, to.port(), from, data));
            } else if let Some(c) = self.a_turn.and_then(|r| r.iter().position(|a| *a == to)) {
                // Into a's allocation: the shell hands it in as the port's.
                let from = SocketAddr::new(B_NAT.parse().unwrap(), from_port);
                self.inflight
                    .push_back((at, true, 40002 + c as u16, from, data));
            }
        }

        /// Hand each relay what has arrived by now; media goes on where the relay says.
        fn arrive(&mut self) {
            while self.inflight.front().is_some_and(|d| d.0 <= self.now) {
                let Some((_, to_a, port, from, data)) = self.inflight.pop_front() else {
                    break;
                };
                let r = if to_a { &mut self.a } else { &mut self.b };
                let out = r.handle_datagram(self.now, port, from, &data);
                if ice::is_stun(&data) {
                    assert_eq!(out, None, "STUN is never forwarded");
                } else if let Some(f) = out {
                    self.route(to_a, f.from_port, f.to, data);
                }
            }
        }

        /// Alice's phone (a phone leg of a, else bob's of b) sends `data` to its relay.
        fn phone_sends(&mut self, alice: bool, data: Vec<u8>) {
            let (r, phone) = if alice {
                (&mut self.a, addr(ALICE))
            } else {
                (&mut self.b, addr(BOB))
            };
            if let Some(f) = r.handle_datagram(self.now, 40000, phone, &data) {
                self.route(alice, f.from_port, f.to, data);
            }
        }

        /// Run both relays on virtual time until `until`: at each deadline and arrival.
        fn run_until(&mut self, until: Time) {
            for _ in 0..1_000_000 {
                self.collect();
                let next = [
                    self.a.poll_timeout(),
                    self.b.poll_timeout(),
                    self.inflight.front().map(|d| d.0),
                ]
                .into_iter()
                .flatten()
                .min();
                let Some(next) = next.filter(|n| *n <= until) else {
                    self.now = until;
                    return;
                };
                self.now = self.now.max(next);
                self.arrive();
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
            }
            panic!("the relays never settle");
        }

        fn far_leg_pair(r: &MediaRelay) -> Option<IcePair> {
            r.streams.values().next().and_then(|s| s.legs[FAR].ice_pair)
        }

        /// The pairs both sides selected on their far legs, for a test that needs them.
        fn selected(&self) -> (IcePair, IcePair) {
            let a = Self::far_leg_pair(&self.a).expect("a selected a pair");
            let b = Self::far_leg_pair(&self.b).expect("b selected a pair");
            (a, b)
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_far_sdp_carries_ice_and_the_phones_never_see_it() {
        let mut p = Pair::new();
        let [offer, to_bob, answer, to_alice] = p.call(true);
        // Towards the other peer: the default address as before, then credentials and
        // host and server-reflexive candidates for RTP and RTCP.
        assert!(offer.contains("c=IN IP4 203.0.113.1\r\n") && offer.contains("m=audio 40002 "));
        for line in [
            "a=candidate:1 1 UDP 2128609535 10.0.0.1 40002 typ host",
            "a=candidate:2 1 UDP 1692401919 203.0.113.1 40002 typ srflx raddr 10.0.0.1 rport 40002",
            "a=candidate:1 2 UDP 2128609534 10.0.0.1 40003 typ host",
        ] {
            assert!(offer.contains(line), "{line} not in {offer}");
        }
        assert!(offer.contains("a=ice-ufrag:") && offer.contains("a=ice-pwd:"));
        assert!(answer.contains("a=ice-ufrag:") && answer.contains("198.51.100.9 40002 typ srflx"));
        // The phones get plain SDP naming their own peer.
        for to_phone in [&to_bob, &to_alice] {
            assert!(!to_phone.contains("a=ice") && !to_phone.contains("a=candidate"));
        }
        // Same seed, same credentials: runs are reproducible.
        let mut again = Pair::new();
        assert_eq!(again.call(true)[0], offer);
    }

    #[test]
    fn checks_select_the_nominated_pair_and_media_takes_it() {
        let mut p = Pair::new();
        p.call(true);
        p.run_until(Time::ZERO + secs(3));
        // The homes' private addresses do not cross: each side sends from its host base
        // to the other's server-reflexive address.
        let (a, b) = p.selected();
        assert_eq!(
            a.to_string(),
            "host 10.0.0.1:40002 -> srflx 198.51.100.9:40002"
        );
        assert_eq!(b.remote_addr, addr("203.0.113.1:40002"));
        assert_eq!(MediaPath::of_pair(&a), MediaPath::ServerReflexive);
        assert_eq!((p.a.stats().ice_selected, p.b.stats().ice_selected), (1, 1));
        assert!(p.a.stats().stun_received > 0 && p.b.stats().stun_received > 0);
        // RTP from alice's phone goes out on the pair; what b gets reaches bob's phone.
        let fwd =
            p.a.handle_datagram(p.now, 40000, addr("192.168.1.20:4000"), &rtp(1))
                .unwrap();
        assert_eq!(
            fwd,
            Forward {
                from_port: 40002,
                to: addr("198.51.100.9:40002")
            }
        );
        assert_eq!(
            p.b.handle_datagram(p.now, 40002, addr("203.0.113.1:40002"), &rtp(1)),
            forward(40000, addr("192.168.2.30:5000"))
        );
        // Media from another source than the pair's is not taken.
        assert_eq!(
            p.b.handle_datagram(p.now, 40002, addr("192.0.2.66:40002"), &rtp(2)),
            None
        );
        assert_eq!(p.b.stats().foreign, 1);
        // The report names the pair.
        p.a.end_call("c");
        let report = p.a.poll_report().unwrap();
        assert_eq!(report.path, MediaPath::ServerReflexive);
        assert_eq!(report.ice, Some(a));
        assert!(!report.consent_lost);
    }

    #[test]
    fn both_sides_select_both_components_over_paths_with_delay() {
        // The nomination of the controlling side crosses the controlled side's own check
        // of the pair at some delays; each side must still select a pair for RTP and RTCP.
        for ms in [1, 5, 20, 50, 100, 150] {
            for _ in 0..4 {
                let mut p = Pair::new();
                p.latency = Duration::from_millis(ms);
                p.call(true);
                p.run_until(Time::ZERO + secs(5));
                for (side, r) in [("a", &p.a), ("b", &p.b)] {
                    let ice = r.streams.values().next().unwrap().legs[FAR].ice.as_ref();
                    let ice = ice.unwrap();
                    for c in 0..2 {
                        let pair = ice.selected(c);
                        assert!(
                            pair.is_some_and(|p| p.remote == ice::CandidateKind::ServerReflexive
                                || p.remote == ice::CandidateKind::PeerReflexive),
                            "{ms} ms: {side} component {c}: {pair:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn media_flows_from_the_first_packet_while_the_checks_run() {
        // Both phones talk from the moment they have the other's SDP, a packet every 20 ms
        // for two seconds, over paths of several delays. Until a pair is selected each
        // relay sends on the default path (the other's c=/m= address); then on the pair.
        for ms in [1, 20, 50, 100] {
            let mut p = Pair::new();
            p.latency = Duration::from_millis(ms);
            p.call(true);
            let packets = 100u16;
            let mut selected = None;
            for seq in 0..packets {
                p.run_until(Time::ZERO + Duration::from_millis(20 * u64::from(seq)));
                p.phone_sends(true, rtp(seq));
                p.phone_sends(false, rtp(seq));
                let both = Pair::far_leg_pair(&p.a).is_some() && Pair::far_leg_pair(&p.b).is_some();
                if both && selected.is_none() {
                    selected = Some(seq);
                }
            }
            p.run_until(p.now + secs(1));
            let selected = selected.expect("both sides selected a pair");
            assert!(
                selected > 0,
                "{ms} ms: a pair was there before the first packet"
            );
            // Every packet reached the other phone, in order: none was lost to the checks.
            let seqs = |heard: &[Vec<u8>]| -> Vec<u16> {
                heard
                    .iter()
                    .map(|d| u16::from_be_bytes([d[2], d[3]]))
                    .collect()
            };
            let sent: Vec<u16> = (0..packets).collect();
            assert_eq!(seqs(&p.bob_heard), sent, "{ms} ms: bob");
            assert_eq!(seqs(&p.alice_heard), sent, "{ms} ms: alice");
            for r in [&p.a, &p.b] {
                let s = r.stats();
                assert_eq!(
                    (s.no_consent, s.foreign, s.no_destination),
                    (0, 0, 0),
                    "{ms} ms: {s:?}"
                );
                assert!(s.before_selection > 0, "{ms} ms: {s:?}");
                assert!(s.before_selection < u64::from(packets), "{ms} ms: {s:?}");
            }
            // Once selected, media takes the pair: the far end's server-reflexive address.
            let to =
                p.a.handle_datagram(p.now, 40000, addr(ALICE), &rtp(packets));
            assert_eq!(to.map(|f| f.to), Some(addr("198.51.100.9:40002")));
        }
    }

    #[test]
    fn before_a_pair_media_is_taken_only_from_the_far_ends_candidates() {
        let mut p = Pair::new();
        p.call(true);
        // No check has crossed yet: b takes media from a's server-reflexive candidate (its
        // default address), not from an address a never offered.
        assert_eq!(Pair::far_leg_pair(&p.b), None);
        let from_a =
            p.b.handle_datagram(p.now, 40002, addr("203.0.113.1:40002"), &rtp(1));
        assert_eq!(from_a.map(|f| f.to), Some(addr(BOB)));
        let stranger =
            p.b.handle_datagram(p.now, 40002, addr("192.0.2.66:40002"), &rtp(2));
        assert_eq!(stranger, None);
        assert_eq!(p.b.stats().no_consent, 1);
    }

    #[test]
    fn lost_checks_are_sent_again() {
        // The first checks of a towards b are lost: a retransmits, and each side still
        // selects a pair for both components.
        for lost in [1, 3, 6] {
            let mut p = Pair::new();
            p.latency = Duration::from_millis(10);
            p.lose_a_to_b = lost;
            p.call(true);
            p.run_until(Time::ZERO + secs(8));
            for r in [&p.a, &p.b] {
                let ice = r.streams.values().next().unwrap().legs[FAR].ice.as_ref();
                let ice = ice.unwrap();
                assert!(
                    ice.selected(0).is_some() && ice.selected(1).is_some(),
                    "{lost} lost: {ice:?}"
                );
            }
        }
    }

    #[test]
    fn a_far_leg_through_turn_pairs_its_relayed_candidate() {
        let mut p = Pair::new();
        let relayed = [addr("192.0.2.1:50000"), addr("192.0.2.1:50377")];
        p.a.set_turn_pool(Time::ZERO, 2);
        commands(&mut p.a);
        p.a.turn_allocated(Time::ZERO, 0, relayed[0]);
        p.a.turn_allocated(Time::ZERO, 1, relayed[1]);
        p.a_turn = Some(relayed);
        p.latency = Duration::from_millis(20);
        p.call(true);
        p.run_until(Time::ZERO + secs(5));
        let (a, b) = p.selected();
        let expected = format!("relay {} -> srflx 198.51.100.9:40002", relayed[0]);
        assert_eq!(a.to_string(), expected);
        assert_eq!(
            (b.remote, b.remote_addr),
            (ice::CandidateKind::Relayed, relayed[0])
        );
        assert_eq!(MediaPath::of_pair(&a), MediaPath::Relayed);
        // Media leaves a's far leg port (the shell sends it through the allocation).
        assert_eq!(
            p.a.handle_datagram(p.now, 40000, addr("192.168.1.20:4000"), &rtp(1)),
            forward(40002, addr("198.51.100.9:40002"))
        );
    }

    #[test]
    fn new_far_credentials_restart_ice_with_new_ones_of_ours() {
        let mut p = Pair::new();
        let [offer, _, answer, _] = p.call(true);
        p.run_until(Time::ZERO + secs(3));
        assert!(Pair::far_leg_pair(&p.a).is_some());
        let ufrag = |sdp: &str| {
            sdp.lines()
                .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
                .unwrap()
                .to_owned()
        };
        // The same answer again (a 200 after a 183) changes nothing.
        p.a.rewrite(p.now, "c", Origin::FarEnd, answer.as_bytes())
            .unwrap();
        assert!(Pair::far_leg_pair(&p.a).is_some());
        // A far end that restarts ICE (RFC 8445 §9: new ufrag and pwd) gets a fresh agent:
        // no pair until its checks succeed, and our next description has new credentials.
        let restarted = answer
            .replace(&ufrag(&answer), "Rstr")
            .replace("a=ice-pwd:", "a=ice-pwd:x");
        p.a.rewrite(p.now, "c", Origin::FarEnd, restarted.as_bytes())
            .unwrap();
        assert_eq!(Pair::far_leg_pair(&p.a), None);
        let reoffer =
            p.a.rewrite(p.now, "c", Origin::Phone, &sdp("192.168.1.20", &[4000]))
                .unwrap();
        let reoffer = String::from_utf8(reoffer).unwrap();
        assert_ne!(ufrag(&reoffer), ufrag(&offer));
        assert!(reoffer.contains("m=audio 40002 "), "same ports: {reoffer}");
        assert_eq!(p.a.streams(), 1);
    }

    #[test]
    fn consent_is_refreshed_every_five_seconds_and_lost_after_thirty_of_silence() {
        let mut p = Pair::new();
        p.call(true);
        p.run_until(Time::ZERO + secs(3));
        assert!(Pair::far_leg_pair(&p.a).is_some());
        // Two minutes with the path up: consent requests every 4–6 s keep both sides going.
        let before = p.a_to_b;
        p.run_until(Time::ZERO + secs(123));
        let requests = p.a_to_b - before;
        // RTP and RTCP, a request every 4–6 s each (40–60), and as many answers to b's.
        assert!((80..=120).contains(&requests), "{requests} datagrams");
        assert_eq!(p.a.stats().consent_lost, 0);
        let phone = addr("192.168.1.20:4000");
        assert!(p.a.handle_datagram(p.now, 40000, phone, &rtp(1)).is_some());
        // b's answers stop reaching a. Its last refresh came at most 6 s before: 23 s
        // later a still sends; 30 s after that refresh it stops both components, logs it
        // and counts it.
        p.cut_b_to_a = true;
        let cut = p.now;
        p.run_until(cut + secs(23));
        assert!(p.a.handle_datagram(p.now, 40000, phone, &rtp(2)).is_some());
        assert_eq!(p.a.stats().consent_lost, 0);
        p.run_until(cut + secs(30));
        assert_eq!(p.a.stats().consent_lost, 2);
        assert_eq!(p.a.handle_datagram(p.now, 40000, phone, &rtp(3)), None);
        assert_eq!(
            p.a.handle_datagram(p.now, 40001, addr("192.168.1.20:4001"), &rtp(3)),
            None
        );
        assert_eq!(p.a.stats().no_consent, 2);
        // b's own requests went the cut way: b lost consent at the same time.
        assert_eq!(p.b.stats().consent_lost, 2);
        // Nothing more goes out on a's pair: no consent requests either.
        let quiet = p.a_to_b;
        p.run_until(p.now + secs(20));
        assert_eq!(p.a_to_b, quiet);
        p.a.end_call("c");
        assert!(p.a.poll_report().unwrap().consent_lost);
    }

    #[test]
    fn stun_never_reaches_a_phone() {
        let mut p = Pair::new();
        p.call(true);
        p.run_until(Time::ZERO + secs(3));
        // A STUN Binding request (first byte 0) from alice's phone, and one from the far
        // end on the far leg: neither goes anywhere.
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        let phone = addr("192.168.1.20:4000");
        assert_eq!(p.a.handle_datagram(p.now, 40000, phone, &stun), None);
        assert_eq!(p.a.stats().stun_dropped, 1);
        let b = addr("198.51.100.9:40002");
        assert_eq!(p.a.handle_datagram(p.now, 40002, b, &stun), None);
        // A relay without ICE drops STUN on every port too.
        let mut r = relay();
        offer_and_answer(&mut r);
        for (port, from) in [(40000, phone), (40002, addr("198.51.100.9:30000"))] {
            assert_eq!(r.handle_datagram(Time::ZERO, port, from, &stun), None);
        }
        assert_eq!((r.stats().stun_dropped, r.stats().forwarded), (2, 0));
        // The ICE checks themselves were delivered to the relays and nothing reached a
        // phone (`Pair::deliver` asserts each STUN datagram is forwarded nowhere).
        assert!(p.b.stats().stun_received > 0);
    }

    #[test]
    fn a_far_end_without_ice_still_latches() {
        let mut p = Pair::new();
        let [_, _, answer, to_alice] = p.call(false);
        assert!(!answer.contains("a=ice"));
        assert!(to_alice.contains("m=audio 40000 "));
        assert_eq!(p.a.stats().ice_declined, 1);
        // Its media comes from where its NAT maps it: a latches on it and answers there.
        let nat = addr("198.51.100.9:61000");
        assert_eq!(
            p.a.handle_datagram(Time::ZERO, 40002, nat, &rtp(1)),
            forward(40000, addr("192.168.1.20:4000"))
        );
        assert_eq!(
            p.a.handle_datagram(Time::ZERO, 40000, addr("192.168.1.20:4000"), &rtp(1)),
            forward(40002, nat)
        );
        // No checks, no consent: nothing of a's own goes out.
        p.run_until(Time::ZERO + secs(60));
        assert_eq!(p.a_to_b, 0);
        // An offer without ICE is answered without it.
        let mut c = ice_relay(B_LAN, B_NAT, 3);
        rewrite_sdp(&mut c, "x", Origin::FarEnd, "203.0.113.1", &[30000]);
        let answer = rewrite_sdp(&mut c, "x", Origin::Phone, "192.168.2.30", &[5000]);
        assert!(!answer.contains("a=ice"));
    }

    #[test]
    fn a_far_leg_through_turn_offers_its_relayed_candidates_and_lets_the_far_end_in() {
        let mut r = ice_relay(A_LAN, A_NAT, 4);
        r.set_turn_pool(Time::ZERO, 2);
        commands(&mut r);
        r.turn_allocated(Time::ZERO, 0, addr("192.0.2.1:50000"));
        r.turn_allocated(Time::ZERO, 1, addr("192.0.2.1:50377"));
        let offer = rewrite_sdp(&mut r, "t", Origin::Phone, "192.168.1.20", &[4000]);
        assert!(offer.contains("a=candidate:3 1 UDP 14680319 192.0.2.1 50000 typ relay"));
        assert!(offer.contains("a=candidate:3 2 UDP 14680318 192.0.2.1 50377 typ relay"));
        assert!(
            !offer.contains("typ host"),
            "no socket of ours carries the leg"
        );
        // The far end answers with ICE: each of its candidates is let in on its component.
        let mut b = ice_relay(B_LAN, B_NAT, 5);
        b.rewrite(Time::ZERO, "t", Origin::FarEnd, offer.as_bytes())
            .unwrap();
        let answer = rewrite_sdp(&mut b, "t", Origin::Phone, "192.168.2.30", &[5000]);
        commands(&mut r);
        r.rewrite(Time::ZERO, "t", Origin::FarEnd, answer.as_bytes())
            .unwrap();
        let permits: Vec<_> = commands(&mut r)
            .into_iter()
            .filter(|c| matches!(c, MediaCommand::Permit { .. }))
            .collect();
        for (port, peer) in [
            (40002, "10.0.0.1:40002"),
            (40002, "198.51.100.9:40002"),
            (40003, "10.0.0.1:40003"),
            (40003, "198.51.100.9:40003"),
        ] {
            let want = MediaCommand::Permit {
                port,
                peer: addr(peer),
            };
            assert!(permits.contains(&want), "{want:?} not in {permits:?}");
        }
        // The checks leave from the allocations' ports.
        let mut ports = BTreeSet::new();
        for _ in 0..10 {
            ports.extend(std::iter::from_fn(|| r.poll_transmit()).map(|t| t.from_port));
            let Some(next) = r.poll_timeout() else {
                break;
            };
            r.handle_timeout(next);
        }
        assert!(ports.iter().all(|p| [40002, 40003].contains(p)) && !ports.is_empty());
    }
}
