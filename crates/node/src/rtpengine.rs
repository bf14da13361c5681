//! Media anchoring handed to an rtpengine, for operators who already run one: the front-end's
//! SDP rewrite hook ([`MediaAnchor`]) becomes `offer`/`answer`/`delete` commands of
//! rtpengine's ng control protocol (UDP; a cookie, a space and a bencoded dictionary).
//!
//! The front-end does not say whether a body is an offer or an answer, so [`RtpengineAnchor`]
//! keeps, per call, which side offered last: a body from the other side while an offer is
//! open is the answer, anything else a new offer (a re-INVITE from either side included).
//! rtpengine tells the two sides apart by tag: the phone side is `phone`, the far side
//! `far`.
//!
//! The exchange is synchronous (the rewrite hook is), bounded by [`NG_TIMEOUT`] per try and
//! [`NG_TRIES`] tries; a call the rtpengine refuses or does not answer keeps its SDP
//! unchanged (the front-end passes it on). Calls tracked at once are bounded.

use sip::media::{MediaAnchor, MediaError, Origin};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Wait for one ng answer.
pub const NG_TIMEOUT: Duration = Duration::from_millis(500);
/// Tries of one ng command.
pub const NG_TRIES: usize = 2;
/// Longest ng answer read.
const MAX_ANSWER: usize = 65_536;
/// Deepest bencode nesting accepted.
const MAX_DEPTH: usize = 16;
/// Most calls tracked at once.
pub const MAX_CALLS: usize = 4096;

/// A bencoded value of the ng protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bencode {
    /// A byte string.
    Bytes(Vec<u8>),
    /// An integer.
    Int(i64),
    /// A list.
    List(Vec<Bencode>),
    /// A dictionary (keys sorted, as bencode wants).
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    /// A byte string of `s`.
    pub fn str(s: &str) -> Self {
        Bencode::Bytes(s.as_bytes().to_vec())
    }

    /// Append the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Bencode::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Bencode::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The value at the start of `b` and the bytes after it; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<(Bencode, &[u8])> {
        Self::decode_at(b, 0)
    }

    fn decode_at(b: &[u8], depth: usize) -> Option<(Bencode, &[u8])> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *b.first()? {
            b'i' => {
                let end = b.iter().position(|&c| c == b'e')?;
                let i = std::str::from_utf8(b.get(1..end)?).ok()?.parse().ok()?;
                Some((Bencode::Int(i), &b[end + 1..]))
            }
            b'l' => {
                let mut rest = &b[1..];
                let mut l = Vec::new();
                while *rest.first()? != b'e' {
                    let (v, r) = Self::decode_at(rest, depth + 1)?;
                    l.push(v);
                    rest = r;
                }
                Some((Bencode::List(l), &rest[1..]))
            }
            b'd' => {
                let mut rest = &b[1..];
                let mut d = BTreeMap::new();
                while *rest.first()? != b'e' {
                    let (Bencode::Bytes(k), r) = Self::decode_at(rest, depth + 1)? else {
                        return None;
                    };
                    let (v, r) = Self::decode_at(r, depth + 1)?;
                    d.insert(k, v);
                    rest = r;
                }
                Some((Bencode::Dict(d), &rest[1..]))
            }
            b'0'..=b'9' => {
                let colon = b.iter().position(|&c| c == b':')?;
                let len: usize = std::str::from_utf8(&b[..colon]).ok()?.parse().ok()?;
                let end = colon.checked_add(1)?.checked_add(len)?;
                let body = b.get(colon + 1..end)?;
                Some((Bencode::Bytes(body.to_vec()), &b[end..]))
            }
            _ => None,
        }
    }

    /// The value under `key` of a dictionary.
    pub fn get(&self, key: &str) -> Option<&Bencode> {
        match self {
            Bencode::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// A byte string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Bencode::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// A client of one rtpengine's ng control port.
#[derive(Debug)]
pub struct NgClient {
    sock: UdpSocket,
    cookie: u64,
    buf: Vec<u8>,
}

impl NgClient {
    /// A client of the rtpengine listening (`--listen-ng`) on `addr`.
    pub fn new(addr: SocketAddr) -> Result<Self, MediaError> {
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(bind).map_err(unavailable)?;
        sock.connect(addr).map_err(unavailable)?;
        sock.set_read_timeout(Some(NG_TIMEOUT))
            .map_err(unavailable)?;
        Ok(NgClient {
            sock,
            cookie: 0,
            buf: vec![0; MAX_ANSWER],
        })
    }

    /// Send the command `fields` and return the answer's dictionary when its result is
    /// `ok` (or `pong`).
    pub fn command(&mut self, fields: &[(&str, Bencode)]) -> Result<Bencode, MediaError> {
        self.cookie += 1;
        let cookie = format!("p2psip{} ", self.cookie);
        let dict = Bencode::Dict(
            fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
        );
        let mut msg = cookie.clone().into_bytes();
        dict.encode(&mut msg);
        for _ in 0..NG_TRIES {
            self.sock.send(&msg).map_err(unavailable)?;
            // Answers to earlier tries (other cookies) are skipped until this one's.
            while let Ok(n) = self.sock.recv(&mut self.buf) {
                let Some(rest) = self.buf[..n].strip_prefix(cookie.as_bytes()) else {
                    continue;
                };
                let (v, _) = Bencode::decode(rest)
                    .ok_or_else(|| MediaError::Unavailable("bad bencode from rtpengine".into()))?;
                return match v.get("result").and_then(Bencode::text).as_deref() {
                    Some("ok" | "pong") => Ok(v),
                    r => Err(MediaError::Unavailable(format!(
                        "rtpengine: {} {}",
                        r.unwrap_or("no result"),
                        v.get("error-reason")
                            .and_then(Bencode::text)
                            .unwrap_or_default()
                    ))),
                };
            }
        }
        Err(MediaError::Unavailable("rtpengine does not answer".into()))
    }

    /// `ping`: whether the rtpengine answers.
    pub fn ping(&mut self) -> Result<(), MediaError> {
        self.command(&[("command", Bencode::str("ping"))])
            .map(|_| ())
    }

    /// `offer` of `sdp` in call `call_id` from the side tagged `from_tag`: the SDP to pass
    /// on.
    pub fn offer(
        &mut self,
        call_id: &str,
        from_tag: &str,
        sdp: &[u8],
    ) -> Result<Vec<u8>, MediaError> {
        let v = self.command(&[
            ("command", Bencode::str("offer")),
            ("call-id", Bencode::str(call_id)),
            ("from-tag", Bencode::str(from_tag)),
            ("sdp", Bencode::Bytes(sdp.to_vec())),
        ])?;
        sdp_of(&v)
    }

    /// `answer` of `sdp` from the side tagged `to_tag` to the offer of `from_tag`: the SDP
    /// to pass on.
    pub fn answer(
        &mut self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        sdp: &[u8],
    ) -> Result<Vec<u8>, MediaError> {
        let v = self.command(&[
            ("command", Bencode::str("answer")),
            ("call-id", Bencode::str(call_id)),
            ("from-tag", Bencode::str(from_tag)),
            ("to-tag", Bencode::str(to_tag)),
            ("sdp", Bencode::Bytes(sdp.to_vec())),
        ])?;
        sdp_of(&v)
    }

    /// `delete` the call `call_id`.
    pub fn delete(&mut self, call_id: &str) -> Result<(), MediaError> {
        self.command(&[
            ("command", Bencode::str("delete")),
            ("call-id", Bencode::str(call_id)),
        ])
        .map(|_| ())
    }
}

fn unavailable(e: std::io::Error) -> MediaError {
    MediaError::Unavailable(e.to_string())
}

fn sdp_of(v: &Bencode) -> Result<Vec<u8>, MediaError> {
    match v.get("sdp") {
        Some(Bencode::Bytes(b)) => Ok(b.clone()),
        _ => Err(MediaError::Unavailable(
            "rtpengine answered without SDP".into(),
        )),
    }
}

/// The ng tag of a side.
fn tag(o: Origin) -> &'static str {
    match o {
        Origin::Phone => "phone",
        Origin::FarEnd => "far",
    }
}

/// [`MediaAnchor`] through an rtpengine (see the module doc).
#[derive(Debug)]
pub struct RtpengineAnchor {
    ng: NgClient,
    /// Per call: the side whose offer awaits its answer, if any.
    calls: HashMap<String, Option<Origin>>,
}

impl RtpengineAnchor {
    /// An anchor through the rtpengine whose ng port is `addr` (it must answer a ping).
    pub fn new(addr: SocketAddr) -> Result<Self, MediaError> {
        let mut ng = NgClient::new(addr)?;
        ng.ping()?;
        Ok(RtpengineAnchor {
            ng,
            calls: HashMap::new(),
        })
    }

    /// Calls tracked.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }
}

impl MediaAnchor for RtpengineAnchor {
    fn rewrite(
        &mut self,
        _now: overlay::Time,
        call_id: &str,
        origin: Origin,
        sdp: &[u8],
    ) -> Result<Vec<u8>, MediaError> {
        let open = match self.calls.get(call_id) {
            Some(open) => *open,
            None if self.calls.len() >= MAX_CALLS => return Err(MediaError::Full),
            None => None,
        };
        match open {
            Some(offerer) if offerer != origin => {
                let body = self.ng.answer(call_id, tag(offerer), tag(origin), sdp)?;
                self.calls.insert(call_id.to_owned(), None);
                Ok(body)
            }
            _ => {
                let body = self.ng.offer(call_id, tag(origin), sdp)?;
                self.calls.insert(call_id.to_owned(), Some(origin));
                Ok(body)
            }
        }
    }

    fn end_call(&mut self, call_id: &str) {
        if self.calls.remove(call_id).is_some()
            && let Err(e) = self.ng.delete(call_id)
        {
            tracing::info!(call = %call_id, "rtpengine delete: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::process::{Child, Command, Stdio};

    #[test]
    fn bencode_round_trip() {
        let v = Bencode::Dict(BTreeMap::from([
            (b"command".to_vec(), Bencode::str("offer")),
            (b"n".to_vec(), Bencode::Int(-3)),
            (b"flags".to_vec(), Bencode::List(vec![Bencode::str("x")])),
        ]));
        let mut b = Vec::new();
        v.encode(&mut b);
        assert_eq!(b, b"d7:command5:offer5:flagsl1:xe1:ni-3ee");
        assert_eq!(Bencode::decode(&b), Some((v, &b""[..])));
        assert_eq!(Bencode::decode(b"5:ab"), None);
        assert_eq!(Bencode::decode(b"99999999999999999999999:a"), None);
        let deep = "l".repeat(100);
        assert_eq!(Bencode::decode(deep.as_bytes()), None);
    }

    /// An rtpengine on loopback, ended with the test.
    struct Engine(Child, SocketAddr);

    impl Drop for Engine {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn engine() -> Option<Engine> {
        if Command::new("rtpengine").arg("--version").output().is_err() {
            testkit::tool_missing("rtpengine", "rtpengine-daemon");
            return None;
        }
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new("rtpengine")
            .args([
                "--foreground",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng={addr}"),
                "--port-min=46000",
                "--port-max=46099",
                "--delete-delay=0",
                "--log-stderr",
                "--log-level=3",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(Engine(child, addr))
    }

    fn sdp(port: u16) -> Vec<u8> {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        .into_bytes()
    }

    fn port_in(body: &[u8]) -> u16 {
        sip::media::Sdp::parse(body).unwrap().streams()[0].port
    }

    /// A phone's offer and the far end's answer through a real rtpengine: each side is
    /// told an rtpengine port, RTP crosses both ways, and the call's end deletes it.
    #[test]
    fn rtp_crosses_an_rtpengine() {
        let Some(e) = engine() else { return };
        let mut anchor = None;
        for _ in 0..50 {
            match RtpengineAnchor::new(e.1) {
                Ok(a) => {
                    anchor = Some(a);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let mut a = anchor.expect("rtpengine answers a ping");
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&phone, &far] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        let t = overlay::Time::ZERO;
        let offer = a
            .rewrite(
                t,
                "c1",
                Origin::Phone,
                &sdp(phone.local_addr().unwrap().port()),
            )
            .unwrap();
        let answer = a
            .rewrite(
                t,
                "c1",
                Origin::FarEnd,
                &sdp(far.local_addr().unwrap().port()),
            )
            .unwrap();
        let (to_far, to_phone) = (port_in(&offer), port_in(&answer));
        assert!((46000..=46099).contains(&to_far), "offer names {to_far}");
        assert!(
            (46000..=46099).contains(&to_phone),
            "answer names {to_phone}"
        );
        let mut rtp = [0u8; 172];
        rtp[0] = 0x80;
        let mut buf = [0u8; 512];
        phone.send_to(&rtp, ("127.0.0.1", to_phone)).unwrap();
        let (n, from) = far.recv_from(&mut buf).unwrap();
        assert_eq!((n, from.port()), (172, to_far));
        rtp[2] = 1;
        far.send_to(&rtp, ("127.0.0.1", to_far)).unwrap();
        let (n, from) = phone.recv_from(&mut buf).unwrap();
        assert_eq!((n, from.port()), (172, to_phone));
        // A re-INVITE from the far end: its offer, the phone's answer, the same ports.
        let reoffer = a
            .rewrite(
                t,
                "c1",
                Origin::FarEnd,
                &sdp(far.local_addr().unwrap().port()),
            )
            .unwrap();
        let reanswer = a
            .rewrite(
                t,
                "c1",
                Origin::Phone,
                &sdp(phone.local_addr().unwrap().port()),
            )
            .unwrap();
        assert_eq!((port_in(&reoffer), port_in(&reanswer)), (to_phone, to_far));
        assert_eq!(a.calls(), 1);
        a.end_call("c1");
        assert_eq!(a.calls(), 0);
        // The call is gone from rtpengine.
        let query = a.ng.command(&[
            ("command", Bencode::str("query")),
            ("call-id", Bencode::str("c1")),
        ]);
        assert!(
            matches!(&query, Err(MediaError::Unavailable(r)) if r.contains("Unknown call-id")),
            "{query:?}"
        );
    }
}
