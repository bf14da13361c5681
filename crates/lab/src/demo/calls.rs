//! The demo's calls: the INVITE a peer sends, one call rung and hung up, and the seeded
//! choices of who calls whom and who is killed.

use super::cluster::DemoPeer;
use crate::LabError;
use net::{CallOutcome, Handle};
use overlay::NodeId;
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use sip::PEER_DOMAIN;
use sip::msg::{RequestParts, SipMethod, build_request};
use std::net::SocketAddr;

/// The peers to kill, in kill order: a seeded shuffle of the `killable` ones, cut to
/// `count(how many are killable)`.
pub(crate) fn pick_victims(
    rng: &mut Xoshiro256PlusPlus,
    killable: &[bool],
    count: impl FnOnce(usize) -> usize,
) -> Vec<usize> {
    let mut victims: Vec<usize> = (0..killable.len()).filter(|i| killable[*i]).collect();
    let n = count(victims.len());
    super::members::seeded_shuffle(rng, &mut victims);
    victims.truncate(n);
    victims
}

/// Call `callee` from the peer behind `from` and, once it rang, hang up at both ends (`to`:
/// the callee's handle, if it still runs). The demo's calls stop at Ringing and carry no BYE;
/// without the hang-up every peer would remember each of its calls until its dialog cap.
pub(crate) async fn ring_and_hang_up(
    from: &Handle<DemoPeer>,
    to: Option<&Handle<DemoPeer>>,
    caller: NodeId,
    callee: NodeId,
    seq: u64,
) -> Result<CallOutcome, LabError> {
    let inv = invite(caller, callee, from.local_addr(), seq)
        .map_err(LabError::setup("building the demo's INVITE"))?;
    let out = from
        .place_call(callee, inv)
        .await
        .map_err(LabError::request("placing a call"))?;
    if let CallOutcome::Ringing { call, .. } = out {
        from.end_call(caller, call)
            .await
            .map_err(LabError::request("hanging up a call that rang"))?;
        if let Some(to) = to {
            // A callee killed meanwhile has nothing left to forget.
            let _ = to.end_call(caller, call).await;
        }
    }
    Ok(out)
}

/// Two different peers of `parties` (at least two distinct), caller first.
pub(crate) fn pick_pair<T: Copy + PartialEq>(
    rng: &mut Xoshiro256PlusPlus,
    parties: &[T],
) -> (T, T) {
    let a = parties[rng.random_range(0..parties.len())];
    let mut b = parties[rng.random_range(0..parties.len())];
    while b == a {
        b = parties[rng.random_range(0..parties.len())];
    }
    (a, b)
}

/// The INVITE peer `caller` sends to peer `callee`, built with the sip crate's request
/// builder, with an SDP offer for one audio stream. `contact` is where the caller listens;
/// `tag` makes the Call-ID, From tag and Via branch unique.
pub(crate) fn invite(
    caller: NodeId,
    callee: NodeId,
    contact: SocketAddr,
    tag: u64,
) -> Result<Vec<u8>, sip::MsgError> {
    let ip = contact.ip();
    let sdp = format!(
        "v=0\r\no={caller} {tag} 1 IN IP4 {ip}\r\ns=p2psip\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let callee_uri = format!("sip:{callee}@{PEER_DOMAIN}");
    let request = build_request(RequestParts {
        method: SipMethod::Invite,
        uri: &callee_uri,
        via: &format!("SIP/2.0/TLS {contact};branch=z9hG4bK{tag:016x}"),
        from: &format!("<sip:{caller}@{PEER_DOMAIN}>;tag={tag:x}"),
        to: &format!("<{callee_uri}>"),
        call_id: &format!("{tag:016x}-{caller}@{PEER_DOMAIN}"),
        cseq: 1,
        contact: Some(&format!("<sip:{caller}@{contact};transport=tls>")),
        sdp: Some(sdp.as_bytes()),
    })?;
    Ok(request.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip::SipMessage;

    #[test]
    fn invite_parses_as_an_rfc3261_invite_with_an_sdp_offer() {
        let contact = SocketAddr::from(([127, 0, 0, 1], 5061));
        let bytes = invite(NodeId(80), NodeId(1618), contact, 7).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("INVITE sip:1618@p2psip.invalid SIP/2.0\r\n"),
            "{text}"
        );
        let Ok(SipMessage::Request(r)) = sip::msg::parse_frame(&bytes) else {
            panic!("not a SIP request: {text}");
        };
        assert_eq!(r.uri_user().as_deref(), Some("1618"));
        assert_eq!(r.to_user().as_deref(), Some("1618"));
        assert_eq!(r.from_tag().as_deref(), Some("7"));
        assert_eq!(r.cseq(), Some((1, SipMethod::Invite)));
        assert_eq!(
            r.call_id().as_deref(),
            Some("0000000000000007-80@p2psip.invalid")
        );
        assert_eq!(r.top_branch().as_deref(), Some("z9hG4bK0000000000000007"));
        assert!(
            r.body()
                .starts_with(b"v=0\r\no=80 7 1 IN IP4 127.0.0.1\r\n")
        );
        assert!(r.validate().is_ok());
    }
}
