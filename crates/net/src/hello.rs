//! The hello exchanged right after the TLS handshake, before any overlay frame.
//!
//! Each side states the Node-ID it claims and the address its TLS listener can be reached
//! at. The claimed ID must equal the Node-ID bound in the certificate the peer presented;
//! the address is what the overlay then records in the peer's [`Contact`](overlay::Contact).
//!
//! A peer behind NAT that accepts no connections (outbound-only) sets [`RELAYED`]: its
//! address is then the listen address of its *relay*, a public peer it keeps a link to.
//! Whoever dials that address names the peer it wants in `target`; the relay answers with
//! [`RELAYING`] when it forwards to that target (see `relay.rs`).
//!
//! Layout (fixed size, 41 + 4 or 41 + 16 bytes, so a reader never allocates on a
//! peer's say-so):
//!
//! ```text
//! magic "P2PH" (4) | version (1) | flags (1) | node id u128 BE (16) | target u128 BE (16)
//! | port u16 BE (2) | family (1: 4|6) | ip (4|16)
//! ```

use overlay::NodeId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Magic bytes that open a hello.
const MAGIC: [u8; 4] = *b"P2PH";
/// Hello format version.
const VERSION: u8 = 2;
/// Flag: the sender accepts no connections; its address is its relay's.
pub(crate) const RELAYED: u8 = 1;
/// Flag (answer to a dial): this peer relays frames to the `target` the dialler named.
pub(crate) const RELAYING: u8 = 2;
/// Flag: `target` is present (set by the dialling side).
pub(crate) const HAS_TARGET: u8 = 4;
/// Every flag this version knows.
const KNOWN_FLAGS: u8 = RELAYED | RELAYING | HAS_TARGET;
/// Bytes before the IP address.
pub(crate) const HEAD_LEN: usize = 4 + 1 + 1 + 16 + 16 + 2 + 1;
/// Longest hello (IPv6).
pub(crate) const MAX_LEN: usize = HEAD_LEN + 16;

/// What a peer claims about itself at connection set-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The Node-ID the peer claims (checked against its certificate).
    pub(crate) id: NodeId,
    /// Where the peer's TLS listener is (its relay's, with [`RELAYED`]).
    pub(crate) addr: SocketAddr,
    /// [`RELAYED`] | [`RELAYING`] (| [`HAS_TARGET`], managed by `target`).
    pub(crate) flags: u8,
    /// The peer the dialler wants to reach (usually the one it connected to).
    pub(crate) target: Option<NodeId>,
}

/// Why a hello was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HelloError {
    /// Need more bytes (only from [`decode`] on partial input).
    #[error("incomplete hello: need {0} more bytes")]
    Incomplete(usize),
    /// Does not start with the magic bytes.
    #[error("not a p2psip hello")]
    BadMagic,
    /// Unknown hello version.
    #[error("unsupported hello version {0}")]
    BadVersion(u8),
    /// Unknown flag bits.
    #[error("unknown hello flags {0:#04x}")]
    BadFlags(u8),
    /// Address family byte is neither 4 nor 6.
    #[error("bad address family {0}")]
    BadFamily(u8),
    /// Port 0 cannot be connected to.
    #[error("claimed listen port is 0")]
    ZeroPort,
}

impl Hello {
    /// A plain hello: this peer, reachable at `addr`.
    pub(crate) fn new(id: NodeId, addr: SocketAddr) -> Self {
        Hello {
            id,
            addr,
            flags: 0,
            target: None,
        }
    }

    /// Does the hello carry `flag`?
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Encode.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        let flags = (self.flags & (RELAYED | RELAYING))
            | if self.target.is_some() { HAS_TARGET } else { 0 };
        out.push(flags);
        out.extend_from_slice(&self.id.0.to_be_bytes());
        out.extend_from_slice(&self.target.map_or(0, |t| t.0).to_be_bytes());
        out.extend_from_slice(&self.addr.port().to_be_bytes());
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out
    }
}

/// Total length of the hello whose first [`HEAD_LEN`] bytes are `head`.
pub(crate) fn total_len(head: &[u8]) -> Result<usize, HelloError> {
    if head.len() < HEAD_LEN {
        return Err(HelloError::Incomplete(HEAD_LEN - head.len()));
    }
    if head[..4] != MAGIC {
        return Err(HelloError::BadMagic);
    }
    if head[4] != VERSION {
        return Err(HelloError::BadVersion(head[4]));
    }
    if head[5] & !KNOWN_FLAGS != 0 {
        return Err(HelloError::BadFlags(head[5]));
    }
    match head[HEAD_LEN - 1] {
        4 => Ok(HEAD_LEN + 4),
        6 => Ok(HEAD_LEN + 16),
        f => Err(HelloError::BadFamily(f)),
    }
}

/// Decode a hello from the front of `buf`; returns it and the bytes used.
pub(crate) fn decode(buf: &[u8]) -> Result<(Hello, usize), HelloError> {
    let len = total_len(buf)?;
    if buf.len() < len {
        return Err(HelloError::Incomplete(len - buf.len()));
    }
    let flags = buf[5];
    let mut id = [0u8; 16];
    id.copy_from_slice(&buf[6..22]);
    let mut target = [0u8; 16];
    target.copy_from_slice(&buf[22..38]);
    let target = u128::from_be_bytes(target);
    if flags & HAS_TARGET == 0 && target != 0 {
        return Err(HelloError::BadFlags(flags));
    }
    let port = u16::from_be_bytes([buf[38], buf[39]]);
    if port == 0 {
        return Err(HelloError::ZeroPort);
    }
    let ip = if len == HEAD_LEN + 4 {
        let mut o = [0u8; 4];
        o.copy_from_slice(&buf[HEAD_LEN..len]);
        IpAddr::V4(Ipv4Addr::from(o))
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&buf[HEAD_LEN..len]);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    Ok((
        Hello {
            id: NodeId(u128::from_be_bytes(id)),
            addr: SocketAddr::new(ip, port),
            flags: flags & (RELAYED | RELAYING),
            target: (flags & HAS_TARGET != 0).then_some(NodeId(target)),
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_v4_v6() {
        for (addr, flags, target) in [
            ("127.0.0.1:4000", 0, None),
            ("[::1]:65535", RELAYED, Some(NodeId(0))),
            ("0.0.0.0:1", RELAYING, Some(NodeId(u128::MAX))),
        ] {
            let h = Hello {
                id: NodeId(u128::MAX - 7),
                addr: addr.parse().unwrap(),
                flags,
                target,
            };
            let bytes = h.encode();
            assert!(bytes.len() <= MAX_LEN);
            assert_eq!(decode(&bytes).unwrap(), (h, bytes.len()));
            for cut in 0..bytes.len() {
                assert!(matches!(
                    decode(&bytes[..cut]),
                    Err(HelloError::Incomplete(_))
                ));
            }
        }
    }

    #[test]
    fn refuses_garbage() {
        let h = Hello::new(NodeId(5), "127.0.0.1:9".parse().unwrap());
        let good = h.encode();
        let mut b = good.clone();
        b[5] = 8;
        assert_eq!(decode(&b), Err(HelloError::BadFlags(8)));
        let mut b = good.clone();
        b[30] = 1; // a target without HAS_TARGET
        assert_eq!(decode(&b), Err(HelloError::BadFlags(0)));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(decode(&b), Err(HelloError::BadMagic));
        let mut b = good.clone();
        b[4] = 9;
        assert_eq!(decode(&b), Err(HelloError::BadVersion(9)));
        let mut b = good.clone();
        b[HEAD_LEN - 1] = 5;
        assert_eq!(decode(&b), Err(HelloError::BadFamily(5)));
        let mut b = good;
        b[38] = 0;
        b[39] = 0;
        assert_eq!(decode(&b), Err(HelloError::ZeroPort));
        // A TLS record or an overlay frame is not a hello.
        assert!(
            decode(&[
                0x16, 3, 3, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
            ])
            .is_err()
        );
    }

    // "Decode anything, never panic" (the CI mirror of the `net_hello` fuzz target): the
    // reader's two steps (`total_len` on the head, then `decode`) on any bytes; whatever
    // decodes is at most MAX_LEN long and re-encodes to the same bytes.
    proptest::proptest! {
        #[test]
        fn decoding_anything_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(len) = total_len(&bytes[..bytes.len().min(HEAD_LEN)]) {
                proptest::prop_assert!(len <= MAX_LEN);
            }
            if let Ok((h, used)) = decode(&bytes) {
                proptest::prop_assert!(used <= MAX_LEN);
                proptest::prop_assert_eq!(&h.encode()[..], &bytes[..used]);
            }
        }

        #[test]
        fn decoding_near_valid_hellos_never_panics(
            id in proptest::prelude::any::<u128>(),
            flags in 0u8..8,
            target in proptest::prelude::any::<u128>(),
            port in proptest::prelude::any::<u16>(),
            family in proptest::prelude::any::<u8>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
        ) {
            let mut b = MAGIC.to_vec();
            b.push(VERSION);
            b.push(flags);
            b.extend_from_slice(&id.to_be_bytes());
            let target = if flags & HAS_TARGET != 0 { target } else { 0 };
            b.extend_from_slice(&target.to_be_bytes());
            b.extend_from_slice(&port.to_be_bytes());
            b.push(family);
            b.extend_from_slice(&tail);
            match decode(&b) {
                Ok((h, used)) => {
                    proptest::prop_assert!(port != 0 && (family == 4 || family == 6));
                    proptest::prop_assert_eq!(h.id, NodeId(id));
                    proptest::prop_assert_eq!(h.target, (flags & HAS_TARGET != 0).then_some(NodeId(target)));
                    proptest::prop_assert_eq!(used, if family == 4 { HEAD_LEN + 4 } else { HEAD_LEN + 16 });
                }
                Err(HelloError::Incomplete(_)) => proptest::prop_assert!(tail.len() < 16),
                Err(_) => proptest::prop_assert!(port == 0 || (family != 4 && family != 6)),
            }
        }
    }
}
