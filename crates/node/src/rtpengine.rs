//! Media anchoring handed to an rtpengine, for operators who already run one: the front-end's
//! SDP rewrite hook ([`MediaAnchor`]) becomes `offer`/`answer`/`delete` commands of
//! rtpengine's ng control protocol (UDP; a cookie, a space and a bencoded dictionary).
//!
//! The front-end does not say whether a body is an offer or an answer, so [`RtpengineAnchor`]
//! keeps, per call, which side offered last: a body from the other side while an offer is
//! open is the answer, anything else a new offer (a re-INVITE from either side included) —
//! except the answer again, from the side that gave it, with the same `o=` line (RFC 3264
//! §8: a changed description has a new version): the 200 repeating a 183's early-media
//! answer, which rtpengine is given as an `answer` again, not taken for a new offer that
//! would leave the pairing of every later offer and answer the wrong way round.
//! rtpengine tells the two sides apart by tag: the phone side is `phone`, the far side
//! `far`.
//!
//! Both peers of a call anchor it, each with its own sessions, and one rtpengine may serve
//! both (an operator's serves many peers): under the SIP Call-ID alone their two sessions
//! would be one at rtpengine, each peer's offer and answer landing on the other's, and the
//! media would not cross. So the call-id a peer gives rtpengine is the SIP Call-ID and the
//! peer's own label ([`RtpengineAnchor::ng_call_id`]).
//!
//! rtpengine remembers the answer to each cookie for a while and answers a command whose
//! cookie it has seen (from any client) with that answer again, taking it for a
//! retransmission: each [`NgClient`] starts its cookies with a random prefix of its own, so
//! two peers on one rtpengine, or a peer restarted, are never answered with another's
//! answers.
//!
//! The exchange is synchronous (the rewrite hook is), bounded by [`NG_TIMEOUT`] per try and
//! [`NG_TRIES`] tries; a call the rtpengine refuses or does not answer keeps its SDP
//! unchanged (the front-end passes it on). The wait holds up the peer's core, so once the
//! rtpengine has not answered, it is not asked again for [`NG_BACKOFF`]: meanwhile SDP
//! passes unanchored at once. Calls tracked at once are bounded.

use overlay::Time;
use sip::media::{MediaAnchor, MediaError, Origin, Rewritten};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Wait for one ng answer.
pub const NG_TIMEOUT: Duration = Duration::from_millis(500);
/// Tries of one ng command.
pub const NG_TRIES: usize = 2;
/// After the rtpengine did not answer, how long it is not asked again.
pub const NG_BACKOFF: Duration = Duration::from_secs(5);
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
    /// Random: this client's cookies are its own (see the module doc).
    prefix: u64,
    cookie: u64,
    /// The last command went unanswered (as opposed to refused).
    silent: bool,
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
            prefix: crate::media::seed(),
            cookie: 0,
            silent: false,
            buf: vec![0; MAX_ANSWER],
        })
    }

    /// Send the command `fields` and return the answer's dictionary when its result is
    /// `ok` (or `pong`).
    pub fn command(&mut self, fields: &[(&str, Bencode)]) -> Result<Bencode, MediaError> {
        self.cookie += 1;
        let cookie = format!("{:016x}.{} ", self.prefix, self.cookie);
        let dict = Bencode::Dict(
            fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
        );
        let mut msg = cookie.clone().into_bytes();
        dict.encode(&mut msg);
        self.silent = false;
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
        self.silent = true;
        Err(MediaError::Unavailable("rtpengine does not answer".into()))
    }

    /// Whether the last command went unanswered.
    pub fn silent(&self) -> bool {
        self.silent
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
        self.negotiate("offer", call_id, &[("from-tag", from_tag)], sdp)
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
        let tags = [("from-tag", from_tag), ("to-tag", to_tag)];
        self.negotiate("answer", call_id, &tags, sdp)
    }

    /// `offer` or `answer` (`command`) of `sdp` in call `call_id` between the sides `tags`
    /// name: the SDP to pass on.
    fn negotiate(
        &mut self,
        command: &str,
        call_id: &str,
        tags: &[(&str, &str)],
        sdp: &[u8],
    ) -> Result<Vec<u8>, MediaError> {
        let mut fields = vec![
            ("command", Bencode::str(command)),
            ("call-id", Bencode::str(call_id)),
        ];
        fields.extend(tags.iter().map(|&(tag, value)| (tag, Bencode::str(value))));
        fields.push(("sdp", Bencode::Bytes(sdp.to_vec())));
        sdp_of(&self.command(&fields)?)
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

/// Where one call's offer/answer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Exchange {
    /// This side's offer awaits its answer.
    Offered(Origin),
    /// This side answered with a description of this `o=` line.
    Answered(Origin, Vec<u8>),
}

/// The `o=` line of an SDP body (empty when it has none).
fn origin_line(sdp: &[u8]) -> Vec<u8> {
    sdp.split(|b| *b == b'\n')
        .find(|l| l.starts_with(b"o="))
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .unwrap_or_default()
}

/// [`MediaAnchor`] through an rtpengine (see the module doc).
#[derive(Debug)]
pub struct RtpengineAnchor {
    ng: NgClient,
    /// Tells this peer's sessions at rtpengine from another peer's of the same call.
    label: String,
    /// Per call: where its offer/answer stands.
    calls: HashMap<String, Exchange>,
    /// The rtpengine did not answer: not asked again before this.
    quiet_until: Option<overlay::Time>,
    /// The latest time a rewrite was asked at.
    now: overlay::Time,
}

impl RtpengineAnchor {
    /// An anchor through the rtpengine whose ng port is `addr` (it must answer a ping),
    /// for the peer `label` (its Node-ID: no other peer's anchor may share it).
    pub fn new(addr: SocketAddr, label: &str) -> Result<Self, MediaError> {
        let mut ng = NgClient::new(addr)?;
        ng.ping()?;
        Ok(RtpengineAnchor {
            ng,
            label: label.to_owned(),
            calls: HashMap::new(),
            quiet_until: None,
            now: overlay::Time::ZERO,
        })
    }

    /// Calls tracked.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The call-id rtpengine knows this peer's session of the SIP call `call_id` by (what
    /// an operator looks up there): `CALL-ID~LABEL`.
    pub fn ng_call_id(&self, call_id: &str) -> String {
        format!("{call_id}~{}", self.label)
    }

    /// Whether the rtpengine is not to be asked now (see [`NG_BACKOFF`]).
    fn quiet(&self) -> bool {
        self.quiet_until.is_some_and(|t| self.now < t)
    }

    /// The ng offer or answer of a body (see the module doc).
    fn exchange(
        &mut self,
        call_id: &str,
        origin: Origin,
        sdp: &[u8],
    ) -> Result<Vec<u8>, MediaError> {
        let state = match self.calls.get(call_id) {
            Some(state) => Some(state.clone()),
            None if self.calls.len() >= MAX_CALLS => return Err(MediaError::Full),
            None => None,
        };
        let ng_call = self.ng_call_id(call_id);
        let other = match origin {
            Origin::Phone => Origin::FarEnd,
            Origin::FarEnd => Origin::Phone,
        };
        let answer = match state {
            Some(Exchange::Offered(offerer)) => offerer != origin,
            Some(Exchange::Answered(answerer, o)) => answerer == origin && o == origin_line(sdp),
            None => false,
        };
        if answer {
            let body = self.ng.answer(&ng_call, tag(other), tag(origin), sdp)?;
            let done = Exchange::Answered(origin, origin_line(sdp));
            self.calls.insert(call_id.to_owned(), done);
            Ok(body)
        } else {
            let body = self.ng.offer(&ng_call, tag(origin), sdp)?;
            self.calls
                .insert(call_id.to_owned(), Exchange::Offered(origin));
            Ok(body)
        }
    }
}

impl MediaAnchor for RtpengineAnchor {
    fn rewrite(&mut self, now: Time, call_id: &str, origin: Origin, sdp: &[u8]) -> Rewritten {
        self.now = self.now.max(now);
        if self.quiet() {
            return Err(MediaError::Unavailable(format!(
                "rtpengine did not answer; not asked again for {NG_BACKOFF:?}"
            )));
        }
        let got = self.exchange(call_id, origin, sdp);
        if got.is_err() && self.ng.silent() {
            self.quiet_until = Some(self.now + NG_BACKOFF);
        }
        got
    }

    fn end_call(&mut self, call_id: &str) {
        if self.calls.remove(call_id).is_none() {
            return;
        }
        if self.quiet() {
            // Its own timeout ends the session there.
            tracing::info!(call = %call_id, "rtpengine silent: its session is not deleted");
            return;
        }
        if let Err(e) = self.ng.delete(&self.ng_call_id(call_id)) {
            if self.ng.silent() {
                self.quiet_until = Some(self.now + NG_BACKOFF);
            }
            tracing::info!(call = %call_id, "rtpengine delete: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use testkit::rtpengine::Rtpengine;

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

    fn sdp(port: u16) -> Vec<u8> {
        sdp_version(port, 1)
    }

    /// An rtpengine that has gone silent (its host unreachable, say): the first body waits
    /// out the tries and passes unanchored; the bodies after it pass at once, without
    /// asking, for [`NG_BACKOFF`]; then it is asked again.
    #[test]
    fn a_silent_rtpengine_is_not_asked_again_for_a_while() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut a = RtpengineAnchor {
            ng: NgClient::new(silent.local_addr().unwrap()).unwrap(),
            label: "p1".into(),
            calls: HashMap::new(),
            quiet_until: None,
            now: overlay::Time::ZERO,
        };
        let asked = |a: &mut RtpengineAnchor, secs: u64| {
            let t0 = std::time::Instant::now();
            let at = overlay::Time::ZERO + Duration::from_secs(secs);
            let got = a.rewrite(at, "c1", Origin::Phone, &sdp(4000));
            assert!(matches!(got, Err(MediaError::Unavailable(_))), "{got:?}");
            t0.elapsed() >= NG_TIMEOUT * NG_TRIES as u32
        };
        assert!(asked(&mut a, 0), "the first body asks");
        assert!(!asked(&mut a, 1), "asked again within the back-off");
        a.end_call("c1");
        assert!(
            !asked(&mut a, NG_BACKOFF.as_secs() - 1),
            "asked again within the back-off"
        );
        assert!(
            asked(&mut a, NG_BACKOFF.as_secs()),
            "not asked after the back-off"
        );
        // What it was sent: two tries of the first offer, two of the one after the back-off.
        silent.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        let mut offers = 0;
        while let Ok(n) = silent.recv(&mut buf) {
            assert!(String::from_utf8_lossy(&buf[..n]).contains("5:offer"));
            offers += 1;
        }
        assert_eq!(offers, 2 * NG_TRIES);
    }

    /// A description of version `v` (its `o=` line's).
    fn sdp_version(port: u16, v: u32) -> Vec<u8> {
        format!(
            "v=0\r\no=- 1 {v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        .into_bytes()
    }

    fn port_in(body: &[u8]) -> u16 {
        sip::media::Sdp::parse(body).unwrap().streams()[0].port
    }

    /// The port `a` names instead of `port` in version `version` of call c1's body from
    /// `origin`.
    fn renamed_port(a: &mut RtpengineAnchor, origin: Origin, port: u16, version: u32) -> u16 {
        let body = a.rewrite(
            overlay::Time::ZERO,
            "c1",
            origin,
            &sdp_version(port, version),
        );
        port_in(&body.unwrap())
    }

    /// A phone's offer and the far end's answer through a real rtpengine: each side is
    /// told an rtpengine port, RTP crosses both ways, and the call's end deletes it.
    #[test]
    fn rtp_crosses_an_rtpengine() {
        let Some(e) = Rtpengine::start(46000, 46099) else {
            return;
        };
        let mut a = RtpengineAnchor::new(e.ng(), "p1").unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&phone, &far] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        let t = overlay::Time::ZERO;
        let (pp, fp) = (
            phone.local_addr().unwrap().port(),
            far.local_addr().unwrap().port(),
        );
        let offer = a.rewrite(t, "c1", Origin::Phone, &sdp(pp)).unwrap();
        let answer = a.rewrite(t, "c1", Origin::FarEnd, &sdp(fp)).unwrap();
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
        // That answer came in a 183 (early media); the 200 repeats it. It is the answer
        // again, not a new offer from the far end.
        let again = a.rewrite(t, "c1", Origin::FarEnd, &sdp(fp)).unwrap();
        assert_eq!(port_in(&again), to_phone);
        let answered = Exchange::Answered(Origin::FarEnd, b"o=- 1 1 IN IP4 127.0.0.1".to_vec());
        assert_eq!(a.calls.get("c1"), Some(&answered));
        // A re-INVITE from the far end (a new version): its offer, the phone's answer, the
        // same ports; then one from the phone.
        let reoffer = renamed_port(&mut a, Origin::FarEnd, fp, 2);
        assert_eq!(a.calls.get("c1"), Some(&Exchange::Offered(Origin::FarEnd)));
        let reanswer = renamed_port(&mut a, Origin::Phone, pp, 2);
        assert_eq!((reoffer, reanswer), (to_phone, to_far));
        let reoffer = renamed_port(&mut a, Origin::Phone, pp, 3);
        assert_eq!(a.calls.get("c1"), Some(&Exchange::Offered(Origin::Phone)));
        let reanswer = renamed_port(&mut a, Origin::FarEnd, fp, 3);
        assert_eq!((reoffer, reanswer), (to_far, to_phone));
        // Media still crosses.
        phone.send_to(&rtp, ("127.0.0.1", to_phone)).unwrap();
        let (n, from) = far.recv_from(&mut buf).unwrap();
        assert_eq!((n, from.port()), (172, to_far));
        assert_eq!(a.calls(), 1);
        // Another peer's session of the same call, at the same rtpengine, is its own.
        let mut b = RtpengineAnchor::new(e.ng(), "p2").unwrap();
        let theirs = b.rewrite(t, "c1", Origin::FarEnd, &offer).unwrap();
        assert_ne!(port_in(&theirs), to_far, "{}", e.log());
        assert_eq!(e.calls(), ["c1~p1", "c1~p2"]);
        a.end_call("c1");
        assert_eq!(a.calls(), 0);
        // The call is gone from rtpengine.
        assert_eq!(e.calls(), ["c1~p2"], "{}", e.log());
        let query = a.ng.command(&[
            ("command", Bencode::str("query")),
            ("call-id", Bencode::str("c1~p1")),
        ]);
        assert!(
            matches!(&query, Err(MediaError::Unavailable(r)) if r.contains("Unknown call-id")),
            "{query:?}"
        );
    }
}
