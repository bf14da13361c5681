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
//! Bounded: streams per peer and per call, ports, bytes per stream per second, datagram
//! size; a stream with no traffic for `idle` is freed, and all of a call's streams when its
//! dialog ends. The shell binds and closes the sockets the relay asks for
//! ([`MediaCommand`]) and passes every datagram to [`MediaRelay::handle_datagram`].

use super::sdp::{Sdp, SdpError};
use crate::deadlines::Deadlines;
use overlay::Time;
use std::collections::{BTreeMap, VecDeque};
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
}

impl RelayConfig {
    /// Defaults: ports 20000–29999, 1024 streams, 8 per call, 60 s idle, 1 MB/s per stream.
    pub fn new(lan: IpAddr, public: IpAddr) -> Self {
        RelayConfig {
            lan,
            public,
            first_port: 20000,
            last_port: 29999,
            max_streams: 1024,
            max_streams_per_call: 8,
            idle: Duration::from_secs(60),
            max_bytes_per_sec: 1_000_000,
            max_datagram: 4096,
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
}

/// A socket the shell opens or closes for the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaCommand {
    /// Bind a UDP socket on this port.
    Open(u16),
    /// Close the socket on this port.
    Close(u16),
}

/// A datagram to send: the same bytes that came in, out of our port `from_port`, to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The relay's port to send from.
    pub from_port: u16,
    /// The destination.
    pub to: SocketAddr,
}

/// Counters for logs and tests.
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
}

impl Leg {
    fn new(port: u16) -> Self {
        Leg {
            port,
            announced: [None; 2],
            latched: [None; 2],
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
    last_active: Time,
    window_start: Time,
    window_bytes: u64,
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
    /// When each stream's idle check is due.
    idle: Deadlines<u64>,
    commands: VecDeque<MediaCommand>,
    next_id: u64,
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
        MediaRelay {
            cfg,
            streams: BTreeMap::new(),
            by_key: BTreeMap::new(),
            ports: vec![None; span],
            base,
            cursor: 0,
            idle: Deadlines::default(),
            commands: VecDeque::new(),
            next_id: 0,
            stats: RelayStats::default(),
        }
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

    /// Rewrite an SDP body passing through the front-end for call `call_id`: every active
    /// stream gets (or keeps) its relay, the sending side's leg learns where that side
    /// receives, and the body comes back naming our other leg (our public address towards
    /// the far end, our LAN address towards the phone). Disabled streams (port 0) free
    /// their relay. On an error nothing changed.
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
        let (from_leg, to_leg, addr) = match origin {
            Origin::Phone => (PHONE, FAR, self.cfg.public),
            Origin::FarEnd => (FAR, PHONE, self.cfg.lan),
        };
        let mut ports = Vec::with_capacity(streams.len());
        for (i, s) in streams.iter().enumerate() {
            if s.port == 0 {
                if let Some(id) = self.by_key.get(&key(i)).copied() {
                    self.free(id);
                }
                ports.push(None);
                continue;
            }
            if !s.is_active() {
                // Held (c=0.0.0.0): passes as it is.
                ports.push(None);
                continue;
            }
            let id = match self.by_key.get(&key(i)).copied() {
                Some(id) => Some(id),
                None => self.open(now, key(i)),
            };
            let Some(stream) = id.and_then(|id| self.streams.get_mut(&id)) else {
                ports.push(None);
                continue;
            };
            stream.last_active = now;
            let rtp = SocketAddr::new(s.addr, s.port);
            let rtcp = SocketAddr::new(s.addr, s.rtcp_port.unwrap_or(s.port.wrapping_add(1)));
            let leg = &mut stream.legs[from_leg];
            if leg.announced != [Some(rtp), Some(rtcp)] {
                leg.announced = [Some(rtp), Some(rtcp)];
                leg.latched = [None; 2];
            }
            ports.push(Some(stream.legs[to_leg].port));
        }
        Ok(sdp.rewrite(addr, &ports))
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

    /// The shell could not open `port`: free the stream it belongs to.
    pub fn port_unavailable(&mut self, port: u16) {
        if let Some((id, _)) = self.slot(port).copied().flatten() {
            self.free(id);
        }
    }

    /// A datagram of `len` bytes arrived on our `port` from `from`: where to send it, if
    /// anywhere.
    pub fn handle_datagram(
        &mut self,
        now: Time,
        port: u16,
        from: SocketAddr,
        len: usize,
    ) -> Option<Forward> {
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
        stream.last_active = now;
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

    /// Free the streams idle at `now`.
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
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.idle.next()
    }

    /// The next socket to open or close.
    pub fn poll_command(&mut self) -> Option<MediaCommand> {
        self.commands.pop_front()
    }

    fn slot(&self, port: u16) -> Option<&Option<(u64, usize)>> {
        let offset = port.checked_sub(self.base)?;
        self.ports.get(usize::from(offset))
    }

    fn free_pairs(&self) -> usize {
        self.ports.chunks(2).filter(|p| p[0].is_none()).count()
    }

    /// Take a free pair for stream `id`'s `leg`: its even port.
    fn take_pair(&mut self, id: u64, leg: usize) -> Option<u16> {
        let pairs = self.ports.len() / 2;
        for step in 0..pairs {
            let pair = (self.cursor + step) % pairs;
            if self.ports[pair * 2].is_none() {
                self.cursor = (pair + 1) % pairs;
                self.ports[pair * 2] = Some((id, leg));
                self.ports[pair * 2 + 1] = Some((id, leg));
                let port = self.base + (pair * 2) as u16;
                self.commands.push_back(MediaCommand::Open(port));
                self.commands.push_back(MediaCommand::Open(port + 1));
                return Some(port);
            }
        }
        None
    }

    /// A new stream for `key`, if two port pairs are free.
    fn open(&mut self, now: Time, key: StreamKey) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let phone = self.take_pair(id, PHONE)?;
        let Some(far) = self.take_pair(id, FAR) else {
            self.release(id, phone);
            return None;
        };
        self.by_key.insert(key.clone(), id);
        self.idle.set(id, now + self.cfg.idle);
        self.streams.insert(
            id,
            Stream {
                key,
                legs: [Leg::new(phone), Leg::new(far)],
                last_active: now,
                window_start: now,
                window_bytes: 0,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
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
            r.handle_datagram(Time::ZERO, 40000, phone, 172),
            Some(Forward {
                from_port: 40002,
                to: addr("198.51.100.9:30000")
            })
        );
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40001, addr("192.168.1.20:4001"), 80),
            Some(Forward {
                from_port: 40003,
                to: addr("198.51.100.9:30001")
            })
        );
        // Far end → phone.
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), 172),
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
        assert!(r.handle_datagram(Time::ZERO, 40002, nat, 172).is_some());
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40000, addr("192.168.1.20:4000"), 172),
            Some(Forward {
                from_port: 40002,
                to: nat
            })
        );
        // Someone else on the far leg: dropped, the latch holds.
        assert_eq!(
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), 172),
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
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), 172),
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
            r.handle_datagram(Time::ZERO, 40002, addr("192.0.2.66:5000"), 172)
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
            r.handle_datagram(Time::ZERO, 40000, addr("192.168.1.20:4000"), 172),
            None
        );
        assert_eq!(r.stats().no_destination, 1);
        assert_eq!(
            r.handle_datagram(Time::ZERO, 41000, addr("192.168.1.20:4000"), 172),
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
        r.handle_datagram(t30, 40008, addr("192.168.1.21:4000"), 100);
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
        r.port_unavailable(40003);
        assert_eq!(r.streams(), 0);
        assert_eq!(commands(&mut r).len(), 4);
        // The range wraps round to the freed ports.
        r.rewrite(
            Time::ZERO,
            "b",
            Origin::Phone,
            &sdp("192.168.1.20", &[4000]),
        )
        .unwrap();
        assert_eq!(r.streams(), 1);
    }

    #[test]
    fn size_and_rate_bounds_drop_datagrams() {
        let mut r = relay();
        r.cfg.max_bytes_per_sec = 1000;
        offer_and_answer(&mut r);
        let phone = addr("192.168.1.20:4000");
        assert_eq!(r.handle_datagram(Time::ZERO, 40000, phone, 5000), None);
        for _ in 0..5 {
            assert!(r.handle_datagram(Time::ZERO, 40000, phone, 200).is_some());
        }
        assert_eq!(r.handle_datagram(Time::ZERO, 40000, phone, 200), None);
        assert_eq!(r.stats().over_limit, 2);
        // The next second has a fresh budget.
        let t1 = Time::ZERO + Duration::from_secs(1);
        assert!(r.handle_datagram(t1, 40000, phone, 200).is_some());
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
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), 172),
            Some(Forward {
                from_port: 40000,
                to: addr("192.168.1.20:4000")
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
            r.handle_datagram(Time::ZERO, 40002, addr("198.51.100.9:30000"), 172),
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
}
