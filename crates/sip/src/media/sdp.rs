//! SDP (RFC 8866) just far enough to anchor media: find each `m=` stream's port and the
//! connection address it uses, then rewrite those (and `a=rtcp`, RFC 3605) to the relay's
//! address and ports. Every other line goes out byte for byte as it came in (codecs,
//! `a=crypto` keys of SDES-SRTP, DTLS fingerprints, bandwidth, direction), which is why this
//! is a line rewriter and not a parse-and-reserialize of the whole description: a full SDP
//! model would normalize what it does not need to touch. ICE lines are dropped from an
//! anchored description, because its candidates name addresses the relay replaces; a phone
//! that does ICE then falls back to plain RTP towards the relay (RFC 8445 §5.4). The relay
//! puts its own ICE lines in the description towards the other peer
//! ([`Sdp::rewrite_with`]), and reads the other peer's from [`Stream::ice`].
//!
//! Bounded: at most [`MAX_SDP_BYTES`] of text, [`MAX_LINES`] lines, [`MAX_STREAMS`] streams.

use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// Longest SDP body anchored (bigger ones are refused).
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Most lines in an SDP body.
pub const MAX_LINES: usize = 512;
/// Most `m=` streams in an SDP body.
pub const MAX_STREAMS: usize = 16;
/// Most `a=rtpmap` clock rates kept per stream.
pub const MAX_RTPMAPS: usize = 32;
/// Most `a=candidate` lines kept per stream (further ones are left out).
pub const MAX_CANDIDATES: usize = 16;
/// Longest `a=ice-ufrag`, `a=ice-pwd` or `a=candidate` value kept (RFC 8839 allows 256
/// characters for credentials; a candidate line is far shorter).
const MAX_ICE_VALUE: usize = 256;

/// The ICE attributes (RFC 8839) in force for one `m=` stream: its own `a=ice-ufrag` and
/// `a=ice-pwd`, else the session's, and its `a=candidate` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceAttributes {
    /// The username fragment.
    pub ufrag: String,
    /// The password.
    pub pwd: String,
    /// The candidates, each the value after `a=` (`candidate:…`), at most
    /// [`MAX_CANDIDATES`].
    pub candidates: Vec<String>,
}

/// `<pt> <encoding>/<rate>[/<channels>]` of an `a=rtpmap:` value.
fn parse_rtpmap(value: &str) -> Option<(u8, u32)> {
    let (pt, rest) = value.split_once(' ')?;
    let rate = rest.trim().split('/').nth(1)?;
    Some((pt.parse().ok()?, rate.parse().ok()?))
}

/// Why an SDP body could not be anchored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// Longer than [`MAX_SDP_BYTES`].
    #[error("SDP body of {0} bytes is too large")]
    TooLarge(usize),
    /// More than [`MAX_LINES`] lines.
    #[error("SDP body has too many lines")]
    TooManyLines,
    /// More than [`MAX_STREAMS`] `m=` lines.
    #[error("SDP body has too many media streams")]
    TooManyStreams,
    /// Not UTF-8 text.
    #[error("SDP body is not text")]
    NotText,
    /// The first line is not `v=0`.
    #[error("SDP body does not start with v=0")]
    NoVersion,
    /// A line that is not `<letter>=<value>` (1-based line number).
    #[error("SDP line {0} is malformed")]
    BadLine(usize),
    /// A `c=` line that is not `IN IP4|IP6 <address>` with a literal address.
    #[error("SDP line {0}: unsupported connection address")]
    BadConnection(usize),
    /// An `m=` line without a media, port and protocol, or with a port count.
    #[error("SDP line {0}: unsupported media line")]
    BadMedia(usize),
    /// An `a=rtcp:` line without a port.
    #[error("SDP line {0}: malformed a=rtcp")]
    BadRtcp(usize),
    /// A stream with a port and no connection address, neither its own nor the session's.
    #[error("SDP stream {0} has no connection address")]
    NoConnection(usize),
}

/// One `m=` stream as its sender described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// The media type (`audio`, `video`, ...).
    pub media: String,
    /// The RTP port; 0: the stream is disabled.
    pub port: u16,
    /// The connection address in force for the stream (its own `c=`, else the session's).
    pub addr: IpAddr,
    /// The RTCP port from `a=rtcp`, when given (else RTP port + 1, or the RTP port with
    /// `a=rtcp-mux`).
    pub rtcp_port: Option<u16>,
    /// RTP clock rates by payload type from `a=rtpmap` (at most [`MAX_RTPMAPS`]), for
    /// jitter in milliseconds.
    pub clock_rates: Vec<(u8, u32)>,
    /// The stream's ICE attributes, when it has a username fragment and a password.
    pub ice: Option<IceAttributes>,
}

impl Stream {
    /// Whether media flows on this stream: a port, and an address that is not the
    /// "held" `0.0.0.0` / `::` of RFC 2543 style hold.
    pub fn is_active(&self) -> bool {
        self.port != 0 && !self.addr.is_unspecified()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `c=` at session level.
    SessionConnection,
    /// `c=` of stream n.
    MediaConnection(usize),
    /// `m=` of stream n.
    Media(usize),
    /// `a=rtcp:` of stream n.
    Rtcp(usize),
    /// An ICE attribute (dropped when anchoring).
    Ice,
    /// Anything else (kept as is).
    Other,
}

struct Line<'a> {
    /// The line without its ending.
    text: &'a str,
    /// Its ending as it came (`\r\n`, `\n` or nothing for the last line).
    ending: &'a str,
    kind: Kind,
}

/// A parsed SDP body, borrowing the text it came from.
pub struct Sdp<'a> {
    lines: Vec<Line<'a>>,
    streams: Vec<Stream>,
    /// Whether stream n has its own `c=` line.
    own_connection: Vec<bool>,
}

const ICE_ATTRIBUTES: [&str; 7] = [
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "end-of-candidates",
    "remote-candidates",
];

fn parse_connection(value: &str, line: usize) -> Result<IpAddr, SdpError> {
    let mut it = value.split_ascii_whitespace();
    let (Some("IN"), Some(family), Some(addr), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(SdpError::BadConnection(line));
    };
    // Multicast TTL and count (`/127/3`) are not for phones: refuse them.
    let ip: IpAddr = addr.parse().map_err(|_| SdpError::BadConnection(line))?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(SdpError::BadConnection(line)),
    }
}

/// `<media> <port> <proto> <fmt>...`: the media type and port.
fn parse_media(value: &str, line: usize) -> Result<(String, u16), SdpError> {
    let mut it = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(_proto)) = (it.next(), it.next(), it.next()) else {
        return Err(SdpError::BadMedia(line));
    };
    let port: u16 = port.parse().map_err(|_| SdpError::BadMedia(line))?;
    Ok((media.to_owned(), port))
}

impl<'a> Sdp<'a> {
    /// Parse `body`, within the module's bounds.
    pub fn parse(body: &'a [u8]) -> Result<Self, SdpError> {
        if body.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge(body.len()));
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
        let mut lines = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if lines.len() >= MAX_LINES {
                return Err(SdpError::TooManyLines);
            }
            let (full, after) = match rest.find('\n') {
                Some(i) => (&rest[..=i], &rest[i + 1..]),
                None => (rest, ""),
            };
            rest = after;
            let body_len = full.trim_end_matches(['\r', '\n']).len();
            let (text, ending) = full.split_at(body_len);
            lines.push(Line {
                text,
                ending,
                kind: Kind::Other,
            });
        }
        if lines.first().map(|l| l.text) != Some("v=0") {
            return Err(SdpError::NoVersion);
        }
        let mut session_addr = None;
        let mut streams: Vec<(String, u16, Option<IpAddr>, Option<u16>)> = Vec::new();
        let mut clocks: Vec<Vec<(u8, u32)>> = Vec::new();
        // ICE credentials of the session (index 0) and of each stream (index s + 1), and
        // each stream's candidates.
        let mut creds: Vec<(Option<&str>, Option<&str>)> = vec![(None, None)];
        let mut candidates: Vec<Vec<String>> = Vec::new();
        for (n, l) in lines.iter_mut().enumerate() {
            let number = n + 1;
            if l.text.is_empty() {
                // A stray empty line (often a trailing one) carries nothing.
                continue;
            }
            let b = l.text.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                return Err(SdpError::BadLine(number));
            }
            let value = &l.text[2..];
            let current = streams.len().checked_sub(1);
            match (b[0], current) {
                (b'c', None) => {
                    session_addr = Some(parse_connection(value, number)?);
                    l.kind = Kind::SessionConnection;
                }
                (b'c', Some(s)) => {
                    streams[s].2 = Some(parse_connection(value, number)?);
                    l.kind = Kind::MediaConnection(s);
                }
                (b'm', _) => {
                    if streams.len() >= MAX_STREAMS {
                        return Err(SdpError::TooManyStreams);
                    }
                    let (media, port) = parse_media(value, number)?;
                    streams.push((media, port, None, None));
                    clocks.push(Vec::new());
                    creds.push((None, None));
                    candidates.push(Vec::new());
                    l.kind = Kind::Media(streams.len() - 1);
                }
                (b'a', _) => {
                    let name = value.split(':').next().unwrap_or_default();
                    if ICE_ATTRIBUTES.contains(&name) {
                        l.kind = Kind::Ice;
                        let v = value[name.len()..].strip_prefix(':').unwrap_or_default();
                        let at = current.map_or(0, |s| s + 1);
                        if v.is_empty() || v.len() > MAX_ICE_VALUE {
                            // Nothing usable: the line is dropped all the same.
                        } else if name == "ice-ufrag" {
                            creds[at].0 = Some(v);
                        } else if name == "ice-pwd" {
                            creds[at].1 = Some(v);
                        } else if let (Some(s), "candidate") = (current, name)
                            && candidates[s].len() < MAX_CANDIDATES
                        {
                            candidates[s].push(value.to_owned());
                        }
                    } else if let (Some(s), Some(v)) = (current, value.strip_prefix("rtpmap:")) {
                        if let Some(c) = parse_rtpmap(v)
                            && clocks[s].len() < MAX_RTPMAPS
                        {
                            clocks[s].push(c);
                        }
                    } else if let (Some(s), Some(v)) = (current, value.strip_prefix("rtcp:")) {
                        let port = v
                            .split_ascii_whitespace()
                            .next()
                            .and_then(|p| p.parse::<u16>().ok())
                            .ok_or(SdpError::BadRtcp(number))?;
                        streams[s].3 = Some(port);
                        l.kind = Kind::Rtcp(s);
                    }
                }
                _ => {}
            }
        }
        let own_connection = streams.iter().map(|s| s.2.is_some()).collect();
        let session_creds = creds[0];
        let streams = streams
            .into_iter()
            .zip(clocks)
            .zip(candidates)
            .enumerate()
            .map(
                |(i, (((media, port, addr, rtcp_port), clock_rates), candidates))| {
                    let (own_ufrag, own_pwd) = creds[i + 1];
                    let ice = match (own_ufrag.or(session_creds.0), own_pwd.or(session_creds.1)) {
                        (Some(ufrag), Some(pwd)) => Some(IceAttributes {
                            ufrag: ufrag.to_owned(),
                            pwd: pwd.to_owned(),
                            candidates,
                        }),
                        _ => None,
                    };
                    let addr = match addr.or(session_addr) {
                        Some(a) => a,
                        None if port == 0 => IpAddr::from([0, 0, 0, 0]),
                        None => return Err(SdpError::NoConnection(i)),
                    };
                    Ok(Stream {
                        media,
                        port,
                        addr,
                        rtcp_port,
                        clock_rates,
                        ice,
                    })
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Sdp {
            lines,
            streams,
            own_connection,
        })
    }

    /// The streams, in `m=` order.
    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }

    /// The body with stream n's RTP at `addr`:`ports[n]` (RTCP at the next port) where
    /// `ports[n]` is given; streams without a port in `ports` keep theirs. A session-level
    /// `c=` is rewritten when a stream that relies on it is; ICE attributes are dropped when
    /// any stream is. Every other line is kept byte for byte.
    pub fn rewrite(&self, addr: IpAddr, ports: &[Option<u16>]) -> Vec<u8> {
        let targets: Vec<Option<Target>> = ports
            .iter()
            .map(|p| p.map(|p| Target::pair(SocketAddr::new(addr, p))))
            .collect();
        self.rewrite_to(&targets)
    }

    /// The body with stream n's RTP and RTCP at `targets[n]` where given (a TURN relay
    /// hands out RTP and RTCP addresses that need not be neighbours, nor on the same IP as
    /// other streams). The session `c=` takes the address of the first anchored stream that
    /// relies on it; such a stream with another address gets its own `c=` after its `m=`.
    /// RTCP that is not at RTP port + 1 on the same address is named by `a=rtcp` (RFC
    /// 3605), added at the end of the stream's section when the sender had none. ICE
    /// attributes are dropped when any stream is anchored; every other line is kept byte
    /// for byte.
    pub fn rewrite_to(&self, targets: &[Option<Target>]) -> Vec<u8> {
        self.rewrite_with(targets, &[])
    }

    /// [`rewrite_to`](Self::rewrite_to), and `lines[n]` (attribute lines without their
    /// endings, such as the relay's own ICE attributes) added at the end of anchored stream
    /// n's section.
    pub fn rewrite_with(&self, targets: &[Option<Target>], lines: &[Vec<String>]) -> Vec<u8> {
        let target_of = |s: usize| targets.get(s).copied().flatten();
        let anchored = (0..self.streams.len()).any(|s| target_of(s).is_some());
        let session_addr = (0..self.streams.len())
            .filter(|&s| !self.own_connection[s])
            .find_map(|s| target_of(s).map(|t| t.rtp.ip()));
        let family = |ip: IpAddr| if ip.is_ipv4() { "IP4" } else { "IP6" };
        let has_rtcp_line: Vec<bool> = (0..self.streams.len())
            .map(|s| self.lines.iter().any(|l| l.kind == Kind::Rtcp(s)))
            .collect();
        // The lines stream s needs added at the end of its section: `a=rtcp` when RTCP is
        // not next to RTP and the sender had none, then the caller's.
        let added = |s: usize| -> Vec<String> {
            let Some(t) = target_of(s) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            if !has_rtcp_line[s] && !t.rtcp_is_next() {
                let ip = t.rtcp.ip();
                out.push(format!("a=rtcp:{} IN {} {ip}", t.rtcp.port(), family(ip)));
            }
            out.extend(lines.get(s).into_iter().flatten().cloned());
            out
        };
        let mut out = Vec::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum());
        let mut current: Option<usize> = None;
        let mut ending = "\r\n";
        for l in &self.lines {
            if let Kind::Media(s) = l.kind {
                for text in current.map(added).unwrap_or_default() {
                    out.extend_from_slice(text.as_bytes());
                    out.extend_from_slice(ending.as_bytes());
                }
                current = Some(s);
            }
            if !l.ending.is_empty() {
                ending = l.ending;
            }
            let replaced = match l.kind {
                Kind::SessionConnection => {
                    session_addr.map(|ip| format!("c=IN {} {ip}", family(ip)))
                }
                Kind::MediaConnection(s) => target_of(s).map(|t| {
                    let ip = t.rtp.ip();
                    format!("c=IN {} {ip}", family(ip))
                }),
                Kind::Media(s) => target_of(s).map(|t| {
                    // `m=<media> <port> <rest>`: only the port changes.
                    let value = &l.text[2..];
                    let mut parts = value.splitn(3, ' ');
                    let media = parts.next().unwrap_or_default();
                    let _old = parts.next();
                    let rest = parts.next().unwrap_or_default();
                    let mut m = format!("m={media} {} {rest}", t.rtp.port());
                    if !self.own_connection[s] && session_addr != Some(t.rtp.ip()) {
                        let ip = t.rtp.ip();
                        let end = if l.ending.is_empty() {
                            ending
                        } else {
                            l.ending
                        };
                        m = format!("{m}{end}c=IN {} {ip}", family(ip));
                    }
                    m
                }),
                Kind::Rtcp(s) => target_of(s).map(|t| {
                    let has_addr = l.text.split_ascii_whitespace().count() > 1;
                    let (port, ip) = (t.rtcp.port(), t.rtcp.ip());
                    if has_addr || ip != t.rtp.ip() {
                        format!("a=rtcp:{port} IN {} {ip}", family(ip))
                    } else {
                        format!("a=rtcp:{port}")
                    }
                }),
                Kind::Ice if anchored => {
                    continue;
                }
                _ => None,
            };
            match replaced {
                Some(text) => out.extend_from_slice(text.as_bytes()),
                None => out.extend_from_slice(l.text.as_bytes()),
            }
            out.extend_from_slice(l.ending.as_bytes());
        }
        for text in current.map(added).unwrap_or_default() {
            if self.lines.last().is_some_and(|l| l.ending.is_empty()) {
                out.extend_from_slice(ending.as_bytes());
                out.extend_from_slice(text.as_bytes());
            } else {
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(ending.as_bytes());
            }
        }
        out
    }
}

/// Where one anchored stream receives: RTP and RTCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The RTP address.
    pub rtp: SocketAddr,
    /// The RTCP address.
    pub rtcp: SocketAddr,
}

impl Target {
    /// RTP at `rtp`, RTCP at the next port.
    pub fn pair(rtp: SocketAddr) -> Self {
        Target {
            rtp,
            rtcp: SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)),
        }
    }

    /// Whether RTCP is where RFC 3550 puts it without `a=rtcp`: RTP port + 1, same address.
    pub fn rtcp_is_next(&self) -> bool {
        *self == Target::pair(self.rtp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=alice 2890844526 2890844526 IN IP4 10.200.0.2\r\n\
        s=-\r\n\
        c=IN IP4 10.200.0.2\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/SAVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n\
        a=candidate:1 1 UDP 2130706431 10.200.0.2 49170 typ host\r\n\
        a=ice-ufrag:abcd\r\n\
        a=sendrecv\r\n\
        m=video 51372 UDP/TLS/RTP/SAVPF 96\r\n\
        c=IN IP4 10.200.0.3\r\n\
        a=rtcp:53020 IN IP4 10.200.0.3\r\n\
        a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB\r\n\
        m=audio 0 RTP/AVP 0\r\n";

    #[test]
    fn streams_take_their_own_or_the_session_connection() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let s = sdp.streams();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].port, s[0].addr),
            (49170, "10.200.0.2".parse().unwrap())
        );
        assert_eq!(s[0].rtcp_port, None);
        assert_eq!(
            (s[1].port, s[1].addr),
            (51372, "10.200.0.3".parse().unwrap())
        );
        assert_eq!(s[1].rtcp_port, Some(53020));
        assert_eq!(s[2].port, 0);
        assert!(!s[2].is_active());
    }

    #[test]
    fn rewrite_moves_addresses_and_ports_and_keeps_keys_and_codecs() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let out = sdp.rewrite(
            "203.0.113.7".parse().unwrap(),
            &[Some(20000), Some(20004), None],
        );
        let out = String::from_utf8(out).unwrap();
        // Addresses and ports move, the phone's ICE lines go, all else stays as it was.
        let want = OFFER
            .replace("c=IN IP4 10.200.0.2", "c=IN IP4 203.0.113.7")
            .replace("m=audio 49170", "m=audio 20000")
            .replace(
                "a=candidate:1 1 UDP 2130706431 10.200.0.2 49170 typ host\r\n",
                "",
            )
            .replace("a=ice-ufrag:abcd\r\n", "")
            .replace("m=video 51372", "m=video 20004")
            .replace("a=rtcp:53020", "a=rtcp:20005")
            .replace("10.200.0.3", "203.0.113.7");
        assert_eq!(out, want);
    }

    #[test]
    fn an_untouched_session_connection_stays_and_ipv6_is_named_as_such() {
        // Only the video stream (own c=) is anchored: the session c= stays.
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let out = sdp.rewrite("2001:db8::1".parse().unwrap(), &[None, Some(30000)]);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("c=IN IP4 10.200.0.2\r\n"));
        assert!(out.contains("m=audio 49170 RTP/SAVP"));
        assert!(out.contains("m=video 30000 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP6 2001:db8::1\r\n"));
        assert!(out.contains("a=rtcp:30001 IN IP6 2001:db8::1\r\n"));
    }

    #[test]
    fn bare_newlines_and_a_missing_last_ending_are_kept() {
        let body = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0\na=rtcp:4001";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        let out = sdp.rewrite("192.0.2.9".parse().unwrap(), &[Some(6000)]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.9\nt=0 0\nm=audio 6000 RTP/AVP 0\na=rtcp:6001"
        );
    }

    #[test]
    fn relayed_targets_name_their_rtcp_and_their_own_addresses() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let relay = |rtp: &str, rtcp: &str| Target {
            rtp: rtp.parse().unwrap(),
            rtcp: rtcp.parse().unwrap(),
        };
        // Audio through a TURN relay whose RTCP allocation is elsewhere; video through
        // another relay IP (it has its own c= and a=rtcp).
        let out = sdp.rewrite_to(&[
            Some(relay("198.51.100.1:50010", "198.51.100.1:50377")),
            Some(relay("198.51.100.2:50020", "198.51.100.2:50021")),
            None,
        ]);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("s=-\r\nc=IN IP4 198.51.100.1\r\n"), "{out}");
        assert!(out.contains("a=sendrecv\r\na=rtcp:50377 IN IP4 198.51.100.1\r\nm=video 50020 "));
        assert!(out.contains("m=video 50020 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 198.51.100.2\r\n"));
        assert!(out.contains("a=rtcp:50021 IN IP4 198.51.100.2\r\n"));
        // A second stream on the session address but anchored elsewhere gets its own c=;
        // the added a=rtcp of the last stream ends the body.
        let body = "v=0\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\n";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        let out = sdp.rewrite_to(&[
            Some(Target::pair("10.0.0.1:20000".parse().unwrap())),
            Some(relay("198.51.100.1:50010", "198.51.100.1:50011")),
        ]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n\
             m=audio 50010 RTP/AVP 0\r\nc=IN IP4 198.51.100.1\r\n"
        );
        let body = "v=0\nc=IN IP4 10.0.0.2\nm=audio 4000 RTP/AVP 0";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        let out = sdp.rewrite_to(&[Some(relay("198.51.100.1:50010", "198.51.100.1:50377"))]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "v=0\nc=IN IP4 198.51.100.1\nm=audio 50010 RTP/AVP 0\na=rtcp:50377 IN IP4 198.51.100.1"
        );
    }

    #[test]
    fn ice_attributes_are_read_per_stream_and_replaced_by_ours() {
        let mut body = String::from(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n\
             a=ice-ufrag:sess\r\na=ice-pwd:sessionpassword0123456\r\n\
             m=audio 40002 RTP/AVP 0\r\n\
             a=candidate:1 1 UDP 2128609535 10.0.0.1 40002 typ host\r\n\
             a=end-of-candidates\r\n\
             m=video 40006 RTP/AVP 96\r\na=ice-ufrag:own\r\n",
        );
        for i in 0..MAX_CANDIDATES + 3 {
            body += &format!(
                "a=candidate:2 1 UDP 1 198.51.100.9 {} typ srflx\r\n",
                41000 + i
            );
        }
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        let audio = sdp.streams()[0].ice.as_ref().unwrap();
        assert_eq!(
            (audio.ufrag.as_str(), audio.pwd.as_str()),
            ("sess", "sessionpassword0123456")
        );
        assert_eq!(
            audio.candidates,
            ["candidate:1 1 UDP 2128609535 10.0.0.1 40002 typ host"]
        );
        // A stream's own ufrag wins over the session's; its candidates are bounded.
        let video = sdp.streams()[1].ice.as_ref().unwrap();
        assert_eq!(
            (video.ufrag.as_str(), video.pwd.as_str()),
            ("own", "sessionpassword0123456")
        );
        assert_eq!(video.candidates.len(), MAX_CANDIDATES);
        // Anchored, the body loses every ICE line of its sender and carries the given ones.
        let t = Some(Target::pair("203.0.113.1:40010".parse().unwrap()));
        let ours = vec![
            "a=ice-ufrag:mine".to_owned(),
            "a=ice-pwd:minepassword".to_owned(),
        ];
        let out = String::from_utf8(sdp.rewrite_with(&[t, t], &[ours, Vec::new()])).unwrap();
        assert!(!out.contains("sess") && !out.contains("candidate") && !out.contains("end-of"));
        assert!(out.contains(
            "m=audio 40010 RTP/AVP 0\r\na=ice-ufrag:mine\r\na=ice-pwd:minepassword\r\nm=video"
        ));
        // Without a password there are no ICE attributes.
        let bare =
            "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=ice-ufrag:u\r\n";
        assert_eq!(Sdp::parse(bare.as_bytes()).unwrap().streams()[0].ice, None);
    }

    #[test]
    fn held_streams_are_not_active() {
        let body = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert!(!sdp.streams()[0].is_active());
    }

    #[test]
    fn malformed_and_oversized_bodies_are_refused() {
        let refused = |body: &[u8]| Sdp::parse(body).err();
        let whole: &[(&[u8], SdpError)] = &[
            (b"", SdpError::NoVersion),
            (b"v=1\r\n", SdpError::NoVersion),
            (b"v=0\r\nthis is not sdp\r\n", SdpError::BadLine(2)),
            (
                b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n",
                SdpError::NoConnection(0),
            ),
            (b"v=0\r\n\xff\r\n", SdpError::NotText),
        ];
        for (body, want) in whole {
            let body_text = String::from_utf8_lossy(body);
            assert_eq!(refused(body).as_ref(), Some(want), "{body_text:?}");
        }
        // A session connection that is not one IPv4 unicast address.
        for c in ["IP4 example.com", "IP6 192.0.2.1", "IP4 224.2.1.1/127"] {
            let body = format!("v=0\r\nc=IN {c}\r\n");
            assert_eq!(
                refused(body.as_bytes()),
                Some(SdpError::BadConnection(2)),
                "{c}"
            );
        }
        // A bad media description after a good connection.
        for (media, want) in [
            ("m=audio", SdpError::BadMedia(3)),
            ("m=audio 4000/2 RTP/AVP 0", SdpError::BadMedia(3)),
            ("m=audio 70000 RTP/AVP 0", SdpError::BadMedia(3)),
            ("m=audio 4000 RTP/AVP 0\r\na=rtcp:x", SdpError::BadRtcp(4)),
        ] {
            let body = format!("v=0\r\nc=IN IP4 192.0.2.1\r\n{media}\r\n");
            assert_eq!(refused(body.as_bytes()), Some(want), "{media:?}");
        }
        let big = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_SDP_BYTES / 5 + 1));
        assert_eq!(refused(big.as_bytes()), Some(SdpError::TooLarge(big.len())));
        let many = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_LINES));
        assert_eq!(refused(many.as_bytes()), Some(SdpError::TooManyLines));
        let streams = format!(
            "v=0\r\nc=IN IP4 192.0.2.1\r\n{}",
            "m=audio 4000 RTP/AVP 0\r\n".repeat(MAX_STREAMS + 1)
        );
        assert_eq!(refused(streams.as_bytes()), Some(SdpError::TooManyStreams));
    }

    proptest::proptest! {
        /// Whatever follows `v=0`, parsing returns (no panic), and a rewrite with no ports
        /// gives the body back byte for byte.
        #[test]
        fn any_bytes_parse_without_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let body = [b"v=0\r\n".as_slice(), &tail].concat();
            if let Ok(sdp) = Sdp::parse(&body) {
                proptest::prop_assert_eq!(sdp.rewrite("192.0.2.1".parse().unwrap(), &[]), body);
            }
        }
    }
}
