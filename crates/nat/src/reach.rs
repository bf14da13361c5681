//! What a peer learns about its own reachability at start: its server-reflexive address.
//!
//! A peer asks the configured STUN server(s) for a Binding ([`discover_reflexive`]) and
//! compares the answer with the local address the request left from. If they differ, a NAT
//! sits between the peer and the server ([`Reflexive::behind_nat`]): the peer cannot expect
//! inbound connections and should keep its overlay links by outbound connections (the `net`
//! runtime's outbound-only mode) and use ICE for media.

use crate::client::{BindingOptions, ClientError, reflexive_address};
use serde::Serialize;
use std::net::SocketAddr;
use tracing::{info, warn};

/// A STUN Binding answer: which server answered, from which local address, and what the
/// server saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Reflexive {
    /// The STUN server that answered.
    pub server: SocketAddr,
    /// Local address of the UDP socket the Binding left from.
    pub local: SocketAddr,
    /// The server-reflexive address (XOR-MAPPED-ADDRESS).
    pub reflexive: SocketAddr,
}

impl Reflexive {
    /// The server saw another address than the one we sent from: a NAT translated it.
    pub fn behind_nat(&self) -> bool {
        self.local != self.reflexive
    }
}

/// Why no server-reflexive address could be learnt.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// The caller configured no STUN server.
    #[error("no STUN server configured")]
    NoServer,
    /// Every server failed; the last failure.
    #[error("no STUN server answered ({tried} tried); last: {server}: {source}")]
    AllFailed {
        /// Servers tried.
        tried: usize,
        /// The last one.
        server: SocketAddr,
        /// Its failure.
        source: ClientError,
    },
}

/// The server address in a STUN URL as E&A hands it out (`node.json` `stun_urls`):
/// `stun:IP:PORT`, `udp://IP:PORT` or a bare `IP:PORT` (no DNS: peers are configured with
/// addresses). `None` for anything else.
pub fn stun_server_addr(url: &str) -> Option<SocketAddr> {
    let rest = url
        .strip_prefix("stun:")
        .or_else(|| url.strip_prefix("udp://"))
        .unwrap_or(url);
    rest.trim_start_matches("//")
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Ask the STUN servers in order until one answers; log and return what it saw.
pub async fn discover_reflexive(
    servers: &[SocketAddr],
    opts: &BindingOptions,
) -> Result<Reflexive, ReachError> {
    let mut last = None;
    for &server in servers {
        match reflexive_address(server, opts).await {
            Ok((local, reflexive)) => {
                let r = Reflexive {
                    server,
                    local,
                    reflexive,
                };
                info!(
                    %server, %local, %reflexive, behind_nat = r.behind_nat(),
                    "server-reflexive address learnt"
                );
                return Ok(r);
            }
            Err(e) => {
                warn!(%server, "STUN Binding failed: {e}");
                last = Some((server, e));
            }
        }
    }
    match last {
        None => Err(ReachError::NoServer),
        Some((server, source)) => Err(ReachError::AllFailed {
            tried: servers.len(),
            server,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_urls_parse() {
        let a: SocketAddr = "10.201.0.1:3478".parse().unwrap();
        for u in [
            "stun:10.201.0.1:3478",
            "udp://10.201.0.1:3478",
            "10.201.0.1:3478",
            "stun://10.201.0.1:3478/",
        ] {
            assert_eq!(stun_server_addr(u), Some(a), "{u}");
        }
        assert_eq!(
            stun_server_addr("stun:[::1]:3478"),
            Some("[::1]:3478".parse().unwrap())
        );
        for bad in [
            "",
            "stun:",
            "stun:example.org:3478",
            "turn:10.0.0.1",
            "10.0.0.1",
        ] {
            assert_eq!(stun_server_addr(bad), None, "{bad}");
        }
    }
}
