//! The SIP INVITE text calls carry (until the `sip` crate builds it), for the demo and,
//! later, `p2psip call`.

use std::net::SocketAddr;

/// A SIP INVITE (RFC 3261 syntax) from `caller` to `callee`, with an SDP offer for one
/// audio stream. `contact` is where the caller listens; `tag` makes Call-ID, tag and branch
/// unique.
pub(crate) fn invite(caller: u128, callee: u128, contact: SocketAddr, tag: u64) -> Vec<u8> {
    let sdp = format!(
        "v=0\r\no={caller} {tag} 1 IN IP4 {ip}\r\ns=p2psip\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = contact.ip()
    );
    format!(
        "INVITE sip:{callee}@p2psip.invalid SIP/2.0\r\n\
         Via: SIP/2.0/TLS {contact};branch=z9hG4bK{tag:016x}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{caller}@p2psip.invalid>;tag={tag:x}\r\n\
         To: <sip:{callee}@p2psip.invalid>\r\n\
         Call-ID: {tag:016x}-{caller}@p2psip.invalid\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{caller}@{contact};transport=tls>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        len = sdp.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_is_rfc3261_shaped() {
        let inv = invite(80, 1618, SocketAddr::from(([127, 0, 0, 1], 5061)), 7);
        let text = String::from_utf8(inv).unwrap_or_default();
        assert!(text.starts_with("INVITE sip:1618@p2psip.invalid SIP/2.0\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains("\r\nCSeq: 1 INVITE"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.starts_with("v=0\r\n"));
    }
}
