//! The demo's calls: the INVITE a peer sends, one call rung and hung up, and the seeded
//! choices of who calls whom and who is killed.

use super::cluster::DemoPeer;
use net::{CallOutcome, Handle};
use overlay::NodeId;
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
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
    victims.shuffle(rng);
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
) -> Result<CallOutcome, net::NetError> {
    let inv = invite(caller.0, callee.0, from.local_addr(), seq);
    let out = from.place_call(callee, inv).await?;
    if let CallOutcome::Ringing { call, .. } = out {
        from.end_call(caller, call).await?;
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
