//! What a peer is in the overlay besides a Chord peer: ordinary peer, CSP or CSPG. E&A binds
//! it into the peer's certificate; the secure layer acts on it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a peer does besides being a Chord peer. Named in lowercase (`peer`, `csp`, `cspg`)
/// in JSON, the CLI, certificates and the databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary peer.
    Peer,
    /// Chord Secure Proxy: holds requests and multicasts PingRequests.
    Csp,
    /// CSP Gateway: forwards requests between layers.
    Cspg,
}

/// A role name other than `peer`, `csp` or `cspg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (peer, csp, cspg)")]
pub struct UnknownRole(pub String);

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 3] = [Role::Peer, Role::Csp, Role::Cspg];

    /// The lowercase name used in JSON, the CLI, certificates and the databases.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Csp => "csp",
            Role::Cspg => "cspg",
        }
    }

    /// A CSP or CSPG (the overlay's infrastructure).
    pub fn is_infrastructure(self) -> bool {
        self != Role::Peer
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    /// The role [`Role::as_str`] names `s` (the one list of names, so the two cannot drift).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert_eq!("CSP".parse::<Role>(), Err(UnknownRole("CSP".into())));
        assert!(serde_json::from_str::<Role>("\"Csp\"").is_err());
    }
}
