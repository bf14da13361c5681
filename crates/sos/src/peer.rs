//! Peer IDs as the JSON API spells them: decimal strings of up to 128 bits.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A peer's Node-ID. On the wire it is a decimal string ("1618"), because IDs can be
/// 128-bit and JSON numbers lose precision past 2^53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u128);

/// Why a peer ID string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    /// Not 1–39 ASCII decimal digits, or larger than 2^128 − 1.
    #[error("peer id must be a decimal string of at most 128 bits")]
    Invalid,
}

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 39 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(PeerIdError::Invalid);
        }
        s.parse::<u128>()
            .map(PeerId)
            .map_err(|_| PeerIdError::Invalid)
    }
}

/// A hop of a route that is not a peer ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad peer id {hop:?}")]
pub struct RouteError {
    /// The hop as written.
    pub hop: String,
    /// What is wrong with it.
    #[source]
    pub source: PeerIdError,
}

/// A route as a command line writes it: peer IDs in path order, separated by commas, with
/// spaces around each allowed and empty hops skipped (`""` is the empty route).
pub fn parse_route(s: &str) -> Result<Vec<PeerId>, RouteError> {
    s.split(',')
        .filter(|h| !h.trim().is_empty())
        .map(|h| {
            h.trim().parse().map_err(|source| RouteError {
                hop: h.to_owned(),
                source,
            })
        })
        .collect()
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u128> for PeerId {
    fn from(v: u128) -> Self {
        PeerId(v)
    }
}

impl Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PeerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal peer id string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PeerId, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_only() {
        assert_eq!("1618".parse::<PeerId>(), Ok(PeerId(1618)));
        assert_eq!(
            u128::MAX.to_string().parse::<PeerId>(),
            Ok(PeerId(u128::MAX))
        );
        for bad in [
            "",
            "-1",
            "+1",
            "0x10",
            "1e3",
            " 1",
            "340282366920938463463374607431768211456",
        ] {
            assert!(bad.parse::<PeerId>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<PeerId>("1618").is_err());
        assert_eq!(
            serde_json::to_string(&PeerId(7)).ok().as_deref(),
            Some("\"7\"")
        );
    }

    #[test]
    fn routes_parse_hop_by_hop() {
        assert_eq!(
            parse_route("1593, 1609,1618"),
            Ok(vec![PeerId(1593), PeerId(1609), PeerId(1618)])
        );
        assert_eq!(parse_route(""), Ok(vec![]));
        assert_eq!(parse_route("7,,8,"), Ok(vec![PeerId(7), PeerId(8)]));
        let bad = parse_route("7,x8").unwrap_err();
        assert_eq!(bad.hop, "x8");
        assert_eq!(bad.to_string(), "bad peer id \"x8\"");
    }
}
