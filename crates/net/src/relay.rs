//! Frames a public peer relays to an outbound-only peer behind NAT.
//!
//! An outbound-only peer N keeps one TLS link to its *relay* R (a public peer) and
//! advertises R's listen address as its own (hello flag `RELAYED`). A peer X that wants to
//! reach N dials that address naming N as the target; R authenticates X like any peer,
//! answers `RELAYING`, and forwards every frame X sends, wrapped in an envelope that says
//! who X is, over N's link. N accepts envelopes only on the link to its own relay (it
//! chose to trust R's word on who sent them, as it trusts R to carry them at all), and
//! believes a CSP/CSPG role in an envelope only from a relay that is a CSP/CSPG itself
//! (the roles the secure layer trusts with requests), so a NATed peer should pick one as
//! its relay. N's answers go to X directly: N can dial out.
//!
//! Envelope, in front of one overlay frame (the marker is never a wire version):
//!
//! ```text
//! 0xFE | layer (1) | role (1: 0 peer, 1 CSP, 2 CSPG) | hello of the sender (id, address)
//! ```

use crate::hello::{self, Hello, HelloError};
use enroll::{Layer, Role};
use overlay::Contact;
use overlay::driver::Peer;

/// First byte of an envelope.
pub(crate) const MARKER: u8 = 0xFE;
/// Bytes before the sender's hello.
const PREFIX: usize = 3;

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    /// Need more bytes.
    #[error("incomplete relay envelope")]
    Incomplete,
    /// Layer or role byte out of range.
    #[error("bad layer/role in relay envelope")]
    BadBinding,
    /// The sender's hello is malformed.
    #[error("relay envelope: {0}")]
    Hello(HelloError),
}

fn role_byte(r: Role) -> u8 {
    match r {
        Role::Peer => 0,
        Role::Csp => 1,
        Role::Cspg => 2,
    }
}

/// Append the envelope for a frame from `from`.
pub(crate) fn encode(from: &Peer, out: &mut Vec<u8>) -> bool {
    let Some(addr) = from.contact.addr else {
        return false;
    };
    out.push(MARKER);
    out.push(from.layer.get());
    out.push(role_byte(from.role));
    out.extend_from_slice(&Hello::new(from.contact.id, addr).encode());
    true
}

/// Read an envelope from the front of `buf` (which starts with [`MARKER`]); returns the
/// sender and the bytes used.
pub(crate) fn decode(buf: &[u8]) -> Result<(Peer, usize), EnvelopeError> {
    if buf.len() < PREFIX + hello::HEAD_LEN {
        return Err(EnvelopeError::Incomplete);
    }
    let layer = Layer::new(buf[1]).map_err(|_| EnvelopeError::BadBinding)?;
    let role = match buf[2] {
        0 => Role::Peer,
        1 => Role::Csp,
        2 => Role::Cspg,
        _ => return Err(EnvelopeError::BadBinding),
    };
    let h = match hello::decode(&buf[PREFIX..]) {
        Ok((h, _)) if h.flags != 0 || h.target.is_some() => {
            return Err(EnvelopeError::Hello(HelloError::BadFlags(h.flags)));
        }
        Ok(x) => x,
        Err(HelloError::Incomplete(_)) => return Err(EnvelopeError::Incomplete),
        Err(e) => return Err(EnvelopeError::Hello(e)),
    };
    let peer = Peer {
        contact: Contact::new(h.0.id, h.0.addr),
        layer,
        role,
    };
    Ok((peer, PREFIX + h.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay::NodeId;

    #[test]
    fn round_trip_and_refusals() {
        let p = Peer {
            contact: Contact::new(NodeId(42), "10.0.0.1:4000".parse().unwrap()),
            layer: Layer::TWO,
            role: Role::Csp,
        };
        let mut b = Vec::new();
        assert!(encode(&p, &mut b));
        assert_eq!(decode(&b), Ok((p, b.len())));
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), Err(EnvelopeError::Incomplete));
        }
        let mut bad = b.clone();
        bad[1] = 9;
        assert_eq!(decode(&bad), Err(EnvelopeError::BadBinding));
        let mut bad = b.clone();
        bad[2] = 3;
        assert_eq!(decode(&bad), Err(EnvelopeError::BadBinding));
        let mut bad = b;
        bad[PREFIX] = b'X';
        assert!(matches!(decode(&bad), Err(EnvelopeError::Hello(_))));
        let no_addr = Peer {
            contact: Contact::id_only(NodeId(1)),
            ..p
        };
        assert!(!encode(&no_addr, &mut Vec::new()));
    }

    proptest::proptest! {
        #[test]
        fn decoding_anything_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            if let Ok((_, used)) = decode(&bytes) {
                proptest::prop_assert!(used <= bytes.len());
            }
        }
    }
}
