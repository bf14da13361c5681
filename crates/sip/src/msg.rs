//! The message layer: parse SIP from datagrams and streams, build requests and responses.
//!
//! A thin wrapper over `sipx-sip` so the rest of p2psip sees only our own types
//! ([`SipRequest`], [`SipResponse`], [`SipMessage`], [`MsgError`]) and the size limits we chose.

use bytes::Bytes;
use sipx_sip::headers::{CSeq, CallId, Contact, Expires, From, To};
use sipx_sip::{HeaderName, Limits, Message, Method, Request, Response, StatusCode};
use std::fmt;

pub use sipx_sip::Method as SipMethod;

/// Largest SIP message we accept on any transport (headers and body).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Largest body (SDP) we accept.
pub const MAX_BODY: usize = 8 * 1024;

/// Why bytes are not a usable SIP message.
#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    /// The bytes do not frame or parse as SIP at all (no answer possible on a datagram;
    /// close the connection on a stream).
    #[error("unparseable SIP: {0}")]
    Parse(#[from] sipx_sip::error::ParseError),
    /// The message parsed, but a header we need is missing or malformed (answer 400).
    #[error("bad or missing {0} header")]
    Header(&'static str),
    /// A message could not be built (a value would inject a line break).
    #[error("cannot build SIP message: {0}")]
    Build(#[from] sipx_sip::BuildError),
}

/// The limits our front-end and UA parse with.
pub fn limits() -> Limits {
    Limits {
        max_message_bytes: MAX_MESSAGE,
        max_body_bytes: MAX_BODY,
        max_headers: 64,
        max_header_bytes: 4 * 1024,
        max_folding_lines: 8,
    }
}

/// A SIP request.
#[derive(Clone, Debug)]
pub struct SipRequest(pub(crate) Request);

/// A SIP response.
#[derive(Clone, Debug)]
pub struct SipResponse(pub(crate) Response);

/// A request or a response.
#[derive(Clone, Debug)]
pub enum SipMessage {
    /// A request.
    Request(SipRequest),
    /// A response.
    Response(SipResponse),
}

impl SipMessage {
    pub(crate) fn from_sipx(m: Message) -> Self {
        match m {
            Message::Request(r) => SipMessage::Request(SipRequest(r)),
            Message::Response(r) => SipMessage::Response(SipResponse(r)),
        }
    }

    pub(crate) fn into_sipx(self) -> Message {
        match self {
            SipMessage::Request(r) => Message::Request(r.0),
            SipMessage::Response(r) => Message::Response(r.0),
        }
    }

    /// Serialize to wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }

    /// The Call-ID, if present and valid.
    pub fn call_id(&self) -> Option<String> {
        match self {
            SipMessage::Request(r) => r.call_id(),
            SipMessage::Response(r) => r.call_id(),
        }
    }
}

/// Parse one message from a datagram (bytes after the message are ignored, RFC 3261 §18.3).
pub fn parse_datagram(buf: &[u8]) -> Result<SipMessage, MsgError> {
    let m = sipx_sip::parse_datagram(Bytes::copy_from_slice(buf), &limits())?;
    Ok(SipMessage::from_sipx(m))
}

/// Parse exactly one self-delimited message (as carried over the overlay).
pub fn parse_frame(buf: &[u8]) -> Result<SipMessage, MsgError> {
    let m = sipx_sip::parse_frame(Bytes::copy_from_slice(buf), &limits())?;
    Ok(SipMessage::from_sipx(m))
}

/// Frames messages out of a TCP byte stream by Content-Length. An error is fatal for the
/// connection (framing is lost).
#[derive(Debug)]
pub struct StreamFramer {
    inner: sipx_sip::StreamParser,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer {
            inner: sipx_sip::StreamParser::new(limits()),
        }
    }
}

impl StreamFramer {
    /// Append bytes; every message they complete, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SipMessage>, MsgError> {
        Ok(self
            .inner
            .push(chunk)?
            .into_iter()
            .map(SipMessage::from_sipx)
            .collect())
    }

    /// Bytes held for an incomplete message (slow-loris guard for the driver).
    pub fn pending(&self) -> usize {
        self.inner.pending()
    }
}

fn header_str(h: &sipx_sip::Headers, name: &HeaderName) -> Option<String> {
    h.value(name)
        .map(|v| String::from_utf8_lossy(&v).trim().to_string())
}

fn call_id_of(h: &sipx_sip::Headers) -> Option<String> {
    match h.typed::<CallId>() {
        Some(Ok(c)) if !c.0.is_empty() => Some(String::from_utf8_lossy(&c.0).into_owned()),
        _ => None,
    }
}

fn cseq_of(h: &sipx_sip::Headers) -> Option<(u32, Method)> {
    match h.typed::<CSeq>() {
        Some(Ok(c)) => Some((c.sequence, c.method)),
        _ => None,
    }
}

fn to_tag_of(h: &sipx_sip::Headers) -> Option<String> {
    match h.typed::<To>() {
        Some(Ok(t)) => t.tag().map(|t| String::from_utf8_lossy(t).into_owned()),
        _ => None,
    }
}

fn contact_uri_of(h: &sipx_sip::Headers) -> Option<String> {
    match h.typed::<Contact>() {
        Some(Ok(c)) => Some(c.uri.to_string()),
        _ => None,
    }
}

impl SipRequest {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.0.method
    }

    /// The Request-URI as text.
    pub fn uri(&self) -> String {
        self.0.uri.to_string()
    }

    /// The user part of the Request-URI.
    pub fn uri_user(&self) -> Option<String> {
        self.0
            .uri
            .user()
            .map(|u| String::from_utf8_lossy(u).into_owned())
    }

    /// The user part of the To URI.
    pub fn to_user(&self) -> Option<String> {
        match self.0.headers.typed::<To>() {
            Some(Ok(t)) => t
                .uri
                .user()
                .map(|u| String::from_utf8_lossy(u).into_owned()),
            _ => None,
        }
    }

    /// The From tag.
    pub fn from_tag(&self) -> Option<String> {
        match self.0.headers.typed::<From>() {
            Some(Ok(f)) => f.tag().map(|t| String::from_utf8_lossy(t).into_owned()),
            _ => None,
        }
    }

    /// The To tag (present on in-dialog requests).
    pub fn to_tag(&self) -> Option<String> {
        to_tag_of(&self.0.headers)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<String> {
        call_id_of(&self.0.headers)
    }

    /// The CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, Method)> {
        cseq_of(&self.0.headers)
    }

    /// Expires: the header, else the first Contact's `expires` parameter.
    pub fn expires(&self) -> Option<u32> {
        if let Some(Ok(e)) = self.0.headers.typed::<Expires>() {
            return Some(e.0);
        }
        let c = self.0.headers.typed::<Contact>()?.ok()?;
        std::str::from_utf8(c.param("expires")?).ok()?.parse().ok()
    }

    /// The first Contact URI as text (`None` also for `Contact: *`).
    pub fn contact_uri(&self) -> Option<String> {
        contact_uri_of(&self.0.headers)
    }

    /// Is this `Contact: *` (remove all bindings)?
    pub fn contact_is_star(&self) -> bool {
        header_str(&self.0.headers, &HeaderName::Contact).as_deref() == Some("*")
    }

    /// The body (SDP).
    pub fn body(&self) -> &[u8] {
        self.0.body()
    }

    /// A header's raw value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        header_str(&self.0.headers, &header_name(name))
    }

    /// Set the body and its Content-Length and Content-Type (a proxy rewriting SDP).
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) -> Result<(), MsgError> {
        set_body_headers(&mut self.0.headers, content_type, body.len())?;
        self.0.set_body(Bytes::from(body));
        Ok(())
    }

    /// Check what every request we act on must carry (RFC 3261 §8.1.1): Call-ID, CSeq
    /// matching the method, From, To, Via. A failure is answered with 400.
    pub fn validate(&self) -> Result<(), MsgError> {
        let h = &self.0.headers;
        if h.get(&HeaderName::Via).is_none() {
            return Err(MsgError::Header("Via"));
        }
        if !matches!(h.typed::<From>(), Some(Ok(_))) {
            return Err(MsgError::Header("From"));
        }
        if !matches!(h.typed::<To>(), Some(Ok(_))) {
            return Err(MsgError::Header("To"));
        }
        if self.call_id().is_none() {
            return Err(MsgError::Header("Call-ID"));
        }
        match self.cseq() {
            Some((_, m)) if m == self.0.method => Ok(()),
            _ => Err(MsgError::Header("CSeq")),
        }
    }

    /// Build a response to this request (copies Via, From, To, Call-ID, CSeq). A To tag is
    /// added when `to_tag` is given and the To has none.
    pub fn response(
        &self,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> Result<SipResponse, MsgError> {
        let status = StatusCode::new(code).ok_or(MsgError::Header("status"))?;
        let mut b = sipx_sip::ResponseBuilder::to_request(&self.0, status, reason.to_string())?;
        if let Some(tag) = to_tag
            && self.to_tag().is_none()
            && let Some(to) = header_str(&self.0.headers, &HeaderName::To)
        {
            b = b.set_header(&HeaderName::To, format!("{to};tag={tag}"))?;
        }
        Ok(SipResponse(b.build()))
    }

    /// Serialize.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.0.write_to(&mut out);
        out
    }

    /// Put a Via on top (a proxy forwarding this request).
    pub fn push_via(&mut self, value: &str) -> Result<(), MsgError> {
        self.0
            .headers
            .push_front(sipx_sip::Header::build(HeaderName::Via, value.to_string())?);
        Ok(())
    }

    /// Add a header at the end.
    pub fn push_header(&mut self, name: &str, value: &str) -> Result<(), MsgError> {
        self.0.headers.push(named_header(name, value)?);
        Ok(())
    }

    /// Add a header before all others (Record-Route: ours goes on top).
    pub fn push_header_front(&mut self, name: &str, value: &str) -> Result<(), MsgError> {
        self.0.headers.push_front(named_header(name, value)?);
        Ok(())
    }

    /// Remove every header of this name.
    pub fn remove_header(&mut self, name: &str) {
        self.0.headers.remove_all(&header_name(name));
    }

    /// Replace the Request-URI.
    pub fn set_uri(&mut self, uri: &str) -> Result<(), MsgError> {
        let uri = sipx_sip::Uri::parse(Bytes::copy_from_slice(uri.as_bytes()))
            .map_err(|_| MsgError::Header("Request-URI"))?;
        self.0
            .set_uri(uri)
            .map_err(|_| MsgError::Header("Request-URI"))
    }

    /// Decrement Max-Forwards (70 if absent); `false` when it reached zero (answer 483).
    pub fn decrement_max_forwards(&mut self) -> bool {
        let cur: u32 = header_str(&self.0.headers, &HeaderName::MaxForwards)
            .and_then(|v| v.parse().ok())
            .unwrap_or(70);
        if cur == 0 {
            return false;
        }
        self.0.headers.remove_all(&HeaderName::MaxForwards);
        if let Ok(h) = sipx_sip::Header::build(HeaderName::MaxForwards, (cur - 1).to_string()) {
            self.0.headers.push(h);
        }
        true
    }

    /// The branch of the top Via.
    pub fn top_branch(&self) -> Option<String> {
        let v = self.0.headers.get(&HeaderName::Via)?;
        let first = sipx_sip::Via::parse_list(v.raw_value())
            .ok()?
            .into_iter()
            .next()?;
        first
            .branch()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

impl SipResponse {
    /// The status code.
    pub fn code(&self) -> u16 {
        self.0.status.code()
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<String> {
        call_id_of(&self.0.headers)
    }

    /// The CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, Method)> {
        cseq_of(&self.0.headers)
    }

    /// The To tag.
    pub fn to_tag(&self) -> Option<String> {
        to_tag_of(&self.0.headers)
    }

    /// The first Contact URI as text.
    pub fn contact_uri(&self) -> Option<String> {
        contact_uri_of(&self.0.headers)
    }

    /// The body (SDP).
    pub fn body(&self) -> &[u8] {
        self.0.body()
    }

    /// A header's raw value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        header_str(&self.0.headers, &header_name(name))
    }

    /// The session interval of RFC 4028 (`Session-Expires: 1800;refresher=uac`), if the
    /// response sets one.
    pub fn session_expires(&self) -> Option<std::time::Duration> {
        let v = self.header("Session-Expires")?;
        let secs = v.split(';').next()?.trim().parse::<u32>().ok()?;
        (secs > 0).then(|| std::time::Duration::from_secs(secs.into()))
    }

    /// Set the body and its Content-Length and Content-Type.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) -> Result<(), MsgError> {
        set_body_headers(&mut self.0.headers, content_type, body.len())?;
        self.0.set_body(Bytes::from(body));
        Ok(())
    }

    /// Add a header at the end.
    pub fn push_header(&mut self, name: &str, value: &str) -> Result<(), MsgError> {
        self.0.headers.push(named_header(name, value)?);
        Ok(())
    }

    /// Remove the top Via (a proxy passing a response back).
    pub fn pop_via(&mut self) -> Option<String> {
        let h = self.0.headers.get(&HeaderName::Via)?.clone();
        let raw = h.raw_value();
        let end = sipx_sip::headers::via::first_hop_end(raw);
        let first = String::from_utf8_lossy(raw.get(..end).unwrap_or(raw))
            .trim()
            .to_string();
        let rest = raw.get(end..).unwrap_or(&[]);
        let rest = String::from_utf8_lossy(rest)
            .trim_start_matches([',', ' ', '\t'])
            .trim()
            .to_string();
        // Replace the first Via row with what is left of it (if anything).
        let mut idx = None;
        for (i, hh) in self.0.headers.iter().enumerate() {
            if matches!(hh.name(), HeaderName::Via) {
                idx = Some(i);
                break;
            }
        }
        self.0.headers.remove_first(&HeaderName::Via);
        if !rest.is_empty()
            && let (Some(i), Ok(nh)) = (idx, sipx_sip::Header::build(HeaderName::Via, rest))
        {
            self.0.headers.insert(i, nh);
        }
        Some(first)
    }

    /// Serialize.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.0.write_to(&mut out);
        out
    }
}

/// Replace Content-Type and Content-Length for a body of `len` bytes.
fn set_body_headers(
    h: &mut sipx_sip::Headers,
    content_type: &str,
    len: usize,
) -> Result<(), MsgError> {
    h.remove_all(&HeaderName::ContentLength);
    h.remove_all(&HeaderName::ContentType);
    h.push(sipx_sip::Header::build(
        HeaderName::ContentType,
        content_type.to_string(),
    )?);
    h.push(sipx_sip::Header::build(
        HeaderName::ContentLength,
        len.to_string(),
    )?);
    Ok(())
}

impl fmt::Display for SipRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.method, self.0.uri)
    }
}

/// Build a new out-of-dialog or in-dialog request from parts (used by the UA core).
pub struct RequestParts<'a> {
    /// Method.
    pub method: Method,
    /// Request-URI.
    pub uri: &'a str,
    /// Via value (with branch).
    pub via: &'a str,
    /// From value (with tag).
    pub from: &'a str,
    /// To value.
    pub to: &'a str,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// Contact value, if any.
    pub contact: Option<&'a str>,
    /// SDP body, if any.
    pub sdp: Option<&'a [u8]>,
}

/// The header name `name` spells (a known one or an extension header).
fn header_name(name: &str) -> HeaderName {
    HeaderName::parse(&Bytes::copy_from_slice(name.as_bytes()))
}

/// A header `name: value`, for the messages' `push_header*`.
fn named_header(name: &str, value: &str) -> Result<sipx_sip::Header, MsgError> {
    Ok(sipx_sip::Header::build(
        header_name(name),
        value.to_string(),
    )?)
}

/// Build a request.
pub fn build_request(p: RequestParts<'_>) -> Result<SipRequest, MsgError> {
    let uri = sipx_sip::Uri::parse(Bytes::copy_from_slice(p.uri.as_bytes()))
        .map_err(|_| MsgError::Header("Request-URI"))?;
    let mut b = sipx_sip::RequestBuilder::new(p.method.clone(), uri)
        .header(HeaderName::Via, p.via.to_string())?
        .max_forwards(70)
        .header(HeaderName::From, p.from.to_string())?
        .header(HeaderName::To, p.to.to_string())?
        .header(HeaderName::CallId, p.call_id.to_string())?
        .cseq(p.cseq, &p.method)?;
    if let Some(c) = p.contact {
        b = b.header(HeaderName::Contact, c.to_string())?;
    }
    if let Some(sdp) = p.sdp {
        b = b
            .header(HeaderName::ContentType, "application/sdp")?
            .body(Bytes::copy_from_slice(sdp));
    }
    Ok(SipRequest(b.build()))
}

/// A CANCEL for an INVITE we sent (same Request-URI, top Via, From, To, Call-ID, CSeq number).
pub fn cancel_for(inv: &SipRequest) -> Option<SipRequest> {
    let via = inv.header("Via")?;
    let top = via.split(',').next()?.trim().to_string();
    let (cseq, _) = inv.cseq()?;
    build_request(RequestParts {
        method: Method::Cancel,
        uri: &inv.uri(),
        via: &top,
        from: &inv.header("From")?,
        to: &inv.header("To")?,
        call_id: &inv.call_id()?,
        cseq,
        contact: None,
        sdp: None,
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const REGISTER: &str = "REGISTER sip:p2psip.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5170;branch=z9hG4bK-1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@p2psip.test>;tag=a1\r\n\
        To: <sip:alice@p2psip.test>\r\n\
        Call-ID: reg-1@127.0.0.1\r\n\
        CSeq: 1 REGISTER\r\n\
        Contact: <sip:alice@127.0.0.1:5170>\r\n\
        Expires: 300\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_register_fields() {
        let SipMessage::Request(r) = parse_datagram(REGISTER.as_bytes()).unwrap() else {
            panic!("not a request")
        };
        r.validate().unwrap();
        assert_eq!(r.to_user().as_deref(), Some("alice"));
        assert_eq!(r.expires(), Some(300));
        assert_eq!(r.contact_uri().as_deref(), Some("sip:alice@127.0.0.1:5170"));
        assert_eq!(r.call_id().as_deref(), Some("reg-1@127.0.0.1"));
        assert_eq!(r.top_branch().as_deref(), Some("z9hG4bK-1"));
        let resp = r.response(200, "OK", Some("xyz")).unwrap();
        let back = parse_datagram(&resp.to_bytes()).unwrap();
        let SipMessage::Response(back) = back else {
            panic!("not a response")
        };
        assert_eq!(back.code(), 200);
        assert_eq!(back.to_tag().as_deref(), Some("xyz"));
    }

    #[test]
    fn bad_cseq_fails_validation_but_can_be_answered() {
        let bad = REGISTER.replace("CSeq: 1 REGISTER", "CSeq: x INVITE");
        let SipMessage::Request(r) = parse_datagram(bad.as_bytes()).unwrap() else {
            panic!("not a request")
        };
        assert!(matches!(r.validate(), Err(MsgError::Header("CSeq"))));
        assert_eq!(r.response(400, "Bad CSeq", None).unwrap().code(), 400);
    }

    #[test]
    fn stream_framing_splits_by_content_length() {
        let mut f = StreamFramer::default();
        let two = format!("{REGISTER}{REGISTER}");
        let (a, b) = two.as_bytes().split_at(100);
        assert!(f.push(a).unwrap().is_empty());
        assert_eq!(f.push(b).unwrap().len(), 2);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn oversized_is_refused() {
        let big = REGISTER.replace(
            "Content-Length: 0",
            &format!("Content-Length: {}", MAX_BODY + 1),
        );
        assert!(parse_datagram(big.as_bytes()).is_err());
    }

    #[test]
    fn pop_via_removes_only_the_top_hop() {
        let two_vias = REGISTER.replace(
            "Via: SIP/2.0/UDP 127.0.0.1:5170;branch=z9hG4bK-1\r\n",
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-top, SIP/2.0/UDP 127.0.0.1:5170;branch=z9hG4bK-1\r\n",
        );
        let SipMessage::Request(r) = parse_datagram(two_vias.as_bytes()).unwrap() else {
            panic!("not a request")
        };
        let mut resp = r.response(200, "OK", None).unwrap();
        let top = resp.pop_via().unwrap();
        assert!(top.contains("z9hG4bK-top"), "{top}");
        let text = String::from_utf8(resp.to_bytes()).unwrap();
        assert!(text.contains("branch=z9hG4bK-1"), "{text}");
        assert!(!text.contains("z9hG4bK-top"), "{text}");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9._~!*-]{0,15}"
    }

    proptest! {
        #[test]
        fn parsing_anything_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_datagram(&bytes);
            let _ = parse_frame(&bytes);
            let mut f = StreamFramer::default();
            for chunk in bytes.chunks(97) {
                if f.push(chunk).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn sip_shaped_garbage_never_panics(
            method in "[A-Z]{1,9}",
            headers in proptest::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,40}"), 0..12),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut s = format!("{method} sip:x@y SIP/2.0\r\n");
            for (n, v) in headers {
                s.push_str(&format!("{n}: {v}\r\n"));
            }
            s.push_str("\r\n");
            let mut b = s.into_bytes();
            b.extend(body);
            if let Ok(SipMessage::Request(r)) = parse_datagram(&b) {
                let _ = r.validate();
                let _ = r.response(400, "Bad Request", Some("t"));
                let _ = (r.expires(), r.contact_uri(), r.to_user(), r.top_branch());
            }
        }

        #[test]
        fn build_parse_round_trip(
            user in token(), callee in token(), call_id in "[a-zA-Z0-9]{1,20}@[a-z]{1,8}",
            cseq in 1u32..1_000_000, tag in "[a-zA-Z0-9]{1,12}",
            sdp in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let req = build_request(RequestParts {
                method: SipMethod::Invite,
                uri: &format!("sip:{callee}@p2psip.test"),
                via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1",
                from: &format!("<sip:{user}@p2psip.test>;tag={tag}"),
                to: &format!("<sip:{callee}@p2psip.test>"),
                call_id: &call_id,
                cseq,
                contact: Some("<sip:x@127.0.0.1:5070>"),
                sdp: Some(&sdp),
            }).unwrap();
            let SipMessage::Request(back) = parse_datagram(&req.to_bytes()).unwrap() else {
                panic!("not a request");
            };
            back.validate().unwrap();
            prop_assert_eq!(back.call_id(), Some(call_id.clone()));
            prop_assert_eq!(back.cseq().map(|c| c.0), Some(cseq));
            prop_assert_eq!(back.from_tag(), Some(tag));
            prop_assert_eq!(back.body(), &sdp[..]);
            // Through the stream framer too, two at a time, split anywhere.
            let mut two = req.to_bytes();
            two.extend(req.to_bytes());
            let mut f = StreamFramer::default();
            let (a, b) = two.split_at(two.len() / 3);
            let mut got = f.push(a).unwrap();
            got.extend(f.push(b).unwrap());
            prop_assert_eq!(got.len(), 2);
            let resp = back.response(180, "Ringing", Some("bt")).unwrap();
            let SipMessage::Response(r) = parse_datagram(&resp.to_bytes()).unwrap() else {
                panic!("not a response");
            };
            prop_assert_eq!(r.code(), 180);
            prop_assert_eq!(r.call_id(), Some(call_id));
            prop_assert_eq!(r.to_tag(), Some("bt".to_string()));
        }
    }
}
