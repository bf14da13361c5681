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
}

impl RelayConfig {
    /// Defaults: ports 20000–29999, 1024 streams, 8 per call, 60 s idle, 1 MB/s per stream,
    /// no TURN.
    pub fn new(lan: IpAddr, public: IpAddr) -> Self {
        RelayConfig {
            lan,
            public,
            public_is_reflexive: false,
            first_port: 20000,
            last_port: 29999,
            max_streams: 1024,
            max_streams_per_call: 8,
            idle: Duration::from_secs(60),
            max_bytes_per_sec: 1_000_000,
            max_datagram: 4096,
            turn_pool: 0,
            turn_retry: Duration::from_secs(5),
            max_reports: 64,
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
}

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
}

const LEGS: usize = 2;
const PHONE: usize = 0;
const FAR: usize = 1;

/// One side of a stream: our RTP port (RTCP is the next one) and where that side is.
#[derive(Debug, Clone)]
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
}

impl Leg {
    fn new(port: u16) -> Self {
        Leg {
            port,
            announced: [None; 2],
            latched: [None; 2],
            relayed: None,
            quality: Quality::default(),
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
}

impl MediaRelay {
    /// A relay with `cfg`.
    pub fn new(cfg: RelayConfig) -> Self {
        let base = cfg.first_port.saturating_add(cfg.first_port % 2);
        let span = usize::from(cfg.last_port.saturating_sub(base)) + 1;
        // Whole pairs only.
        let span = if cfg.last_port < base {
            0
        } else {
            span - span % 2
        };
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
        };
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
    pub fn rewrite(
        &mut self,
        now: Time,
        call_id: &str,
        origin: Origin,
        body: &[u8],
    ) -> Result<Vec<u8>, MediaError> {
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
        if new > 0 && self.streams.len() + new > self.cfg.max_streams {
            return Err(MediaError::Full);
        }
        if new > 0 && of_call + new > self.cfg.max_streams_per_call {
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
            let id = match self.by_key.get(&key(i)).copied() {
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
        }
        self.refill(now);
        Ok(sdp.rewrite_to(&targets))
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
        let Some(to) = other.destination(component) else {
            self.stats.no_destination += 1;
            return None;
        };
        self.stats.forwarded += 1;
        Some(Forward {
            from_port: other.port + component as u16,
            to,
        })
    }

    /// Free the streams idle at `now`; ask for TURN allocations again after a failure.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(id) = self.idle.pop_due(now) {
            let Some(stream) = self.streams.get(&id) else {
                continue;
            };
            let due = stream.last_active + self.cfg.idle;
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
        match (self.idle.next(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
        self.idle.set(id, now + self.cfg.idle);
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
        for leg in &stream.legs {
            self.release(id, leg.port);
        }
        let far = &stream.legs[FAR];
        let path = if far.relayed.is_some() {
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

    /// A datagram of `n` bytes (not RTP: quality counts none of it).
    fn d(n: usize) -> Vec<u8> {
        vec![0; n]
    }

    fn relay() -> MediaRelay {
        let mut cfg = RelayConfig::new("10.0.0.1".parse().unwrap(), "203.0.113.1".parse().unwrap());
        cfg.first_port = 40000;
        cfg.last_port = 40015; // 8 pairs: 4 streams
        cfg.max_streams_per_call = 3;
        MediaRelay::new(cfg)
    }

    fn sdp(ip: &str, ports: &[u16]) -> Vec<u8> {
        let mut s = format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
        for p in ports {
            s += &format!("m=audio {p} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n");
        }
        s.into_bytes()
    }

    fn commands(r: &mut MediaRelay) -> Vec<MediaCommand> {
        std::iter::from_fn(|| r.poll_command()).collect()
    }

    /// The phone's offer, then the far end's answer: the caller's peer side of a call.
    fn offer_and_answer(r: &mut MediaRelay) -> (String, String) {
        let out = r
            .rewrite(
                Time::ZERO,
                "call-1",
                Origin::Phone,
                &sdp("192.168.1.20", &[4000]),
            )
            .unwrap();
        let back = r
            .rewrite(
                Time::ZERO,
                "call-1",
                Origin::FarEnd,
                &sdp("198.51.100.9", &[30000]),
            )
            .unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(back).unwrap(),
        )
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
            Some(Forward {
                from_port: 40002,
                to: addr("198.51.100.9:30000")
            })
        );
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40001, addr("192.168.1.20:4001"), &d(80)),
            Some(Forward {
                from_port: 40003,
                to: addr("198.51.100.9:30001")
            })
        );
        // Far end → phone.
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), &d(172)),
            Some(Forward {
                from_port: 40000,
                to: phone
            })
        );
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
            Some(Forward {
                from_port: 40002,
                to: nat
            })
        );
        // Someone else on the far leg: dropped, the latch holds.
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), &d(172)),
            None
        );
        assert_eq!(r.stats().foreign, 1);
        // A new answer with a new address unlatches the far leg; the same one does not.
        r.rewrite(
            Time::ZERO,
            "call-1",
            Origin::FarEnd,
            &sdp("198.51.100.9", &[30000]),
        )
        .unwrap();
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), &d(172)),
            None
        );
        r.rewrite(
            Time::ZERO,
            "call-1",
            Origin::FarEnd,
            &sdp("198.51.100.10", &[30000]),
        )
        .unwrap();
        assert!(
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), &d(172))
                .is_some()
        );
    }

    #[test]
    fn nothing_goes_out_before_the_other_side_has_said_where_it_is() {
        let mut r = relay();
        r.rewrite(
            Time::ZERO,
            "c",
            Origin::Phone,
            &sdp("192.168.1.20", &[4000]),
        )
        .unwrap();
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
        r.rewrite(
            Time::ZERO,
            "a",
            Origin::Phone,
            &sdp("192.168.1.20", &[1, 2, 3]),
        )
        .unwrap();
        assert_eq!(
            r.rewrite(
                Time::ZERO,
                "b",
                Origin::Phone,
                &sdp("192.168.1.21", &[1, 2])
            ),
            Err(MediaError::NoPorts)
        );
        r.rewrite(Time::ZERO, "b", Origin::Phone, &sdp("192.168.1.21", &[1]))
            .unwrap();
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
        small.cfg.max_streams = 1;
        small
            .rewrite(Time::ZERO, "a", Origin::Phone, &sdp("192.168.1.20", &[1]))
            .unwrap();
        assert_eq!(
            small.rewrite(Time::ZERO, "b", Origin::Phone, &sdp("192.168.1.20", &[1])),
            Err(MediaError::Full)
        );
    }

    #[test]
    fn a_dialog_end_a_disabled_stream_and_idleness_free_the_ports() {
        let mut r = relay();
        r.rewrite(
            Time::ZERO,
            "a",
            Origin::Phone,
            &sdp("192.168.1.20", &[4000, 4002]),
        )
        .unwrap();
        r.rewrite(
            Time::ZERO,
            "b",
            Origin::Phone,
            &sdp("192.168.1.21", &[4000]),
        )
        .unwrap();
        commands(&mut r);
        // Port 0 in a re-offer frees that stream only.
        r.rewrite(
            Time::ZERO,
            "a",
            Origin::Phone,
            &sdp("192.168.1.20", &[4000, 0]),
        )
        .unwrap();
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
        let idle = r.config().idle;
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
        r.rewrite(
            Time::ZERO,
            "a",
            Origin::Phone,
            &sdp("192.168.1.20", &[4000]),
        )
        .unwrap();
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
            r.rewrite(
                Time::ZERO,
                call,
                Origin::Phone,
                &sdp("192.168.1.20", &[4000]),
            )
            .unwrap();
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
        let resumed = r
            .rewrite(
                Time::ZERO,
                "call-1",
                Origin::Phone,
                &sdp("192.168.1.20", &[4000]),
            )
            .unwrap();
        assert_eq!(String::from_utf8(resumed).unwrap(), out);
        assert!(commands(&mut r).is_empty());
        assert_eq!(r.streams(), 1);
        // The far end still reaches the phone where it was.
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), &d(172)),
            Some(Forward {
                from_port: 40000,
                to: addr("192.168.1.20:4000")
            })
        );
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
        // Resume: the same relay ports towards the far end, no socket opened or closed, and
        // the phone's leg still latched where it was.
        let resumed = r
            .rewrite(
                Time::ZERO,
                "call-1",
                Origin::Phone,
                &sdp("192.168.1.20", &[4000]),
            )
            .unwrap();
        assert_eq!(String::from_utf8(resumed).unwrap(), out);
        assert!(commands(&mut r).is_empty());
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), &d(172)),
            Some(Forward {
                from_port: 40000,
                to: phone
            })
        );
    }

    #[test]
    fn the_called_side_anchors_the_far_offer_first() {
        let mut r = relay();
        // The offer comes from the far end: the phone is offered our LAN side.
        let to_phone = r
            .rewrite(
                Time::ZERO,
                "in",
                Origin::FarEnd,
                &sdp("198.51.100.9", &[30000]),
            )
            .unwrap();
        assert!(
            String::from_utf8(to_phone)
                .unwrap()
                .contains("c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 40000 ")
        );
        // Early media (183) and the 200 carry the same answer: one stream, the public side.
        for _ in 0..2 {
            let out = r
                .rewrite(
                    Time::ZERO,
                    "in",
                    Origin::Phone,
                    &sdp("192.168.1.30", &[5000]),
                )
                .unwrap();
            assert!(
                String::from_utf8(out)
                    .unwrap()
                    .contains("c=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 40002 ")
            );
        }
        assert_eq!(r.streams(), 1);
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), &d(172)),
            Some(Forward {
                from_port: 40000,
                to: addr("192.168.1.30:5000")
            })
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
        r.rewrite(
            Time::ZERO,
            "call-1",
            Origin::FarEnd,
            &sdp("198.51.100.9", &[30000]),
        )
        .unwrap();
        assert!(commands(&mut r).is_empty());
        // Datagrams cross as on sockets: the shell hands TURN data in as the port's.
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40000, addr("192.168.1.20:4000"), &rtp(1)),
            Some(Forward {
                from_port: 40002,
                to: addr("198.51.100.9:30000")
            })
        );
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), &rtp(7)),
            Some(Forward {
                from_port: 40000,
                to: addr("192.168.1.20:4000")
            })
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
            r.rewrite(
                Time::ZERO,
                call,
                Origin::Phone,
                &sdp("192.168.1.20", &[4000]),
            )
            .unwrap();
            r.end_call(call);
        }
        assert_eq!(r.poll_report().map(|r| r.call_id), Some("y".to_owned()));
        assert_eq!(r.stats().reports_dropped, 1);
    }
}
