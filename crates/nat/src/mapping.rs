//! Whether this host's NAT keeps one public address for a local port whatever the
//! destination (endpoint-independent mapping, RFC 4787 REQ-1) or gives each destination its
//! own (address- or port-dependent mapping, the "symmetric" NAT). Behind the latter the
//! address a STUN server reports is good for that server only: a media relay must not
//! advertise it to another peer, and goes through TURN instead.
//!
//! The test is RFC 5780 §4.3's: Binding requests from one local socket to two or more
//! server transport addresses (two STUN servers, or one server on two ports), then
//! [`classify`] the mapped addresses they report.

use crate::client::{BindingOptions, binding_request};
use serde::Serialize;
use std::net::SocketAddr;
use tokio::net::UdpSocket;
use tracing::{info, warn};

/// What the Binding answers say about the NAT's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mapping {
    /// Every server saw the same address: others can reach us where STUN says.
    Independent,
    /// Servers saw different addresses: the mapping depends on the destination.
    Dependent,
    /// Fewer than two distinct servers answered: nothing to compare.
    Unknown,
}

/// Classify `(server, mapped address)` answers to Bindings sent from one socket.
pub fn classify(answers: &[(SocketAddr, SocketAddr)]) -> Mapping {
    let mut servers: Vec<SocketAddr> = answers.iter().map(|a| a.0).collect();
    servers.sort();
    servers.dedup();
    if servers.len() < 2 {
        return Mapping::Unknown;
    }
    let first = answers[0].1;
    if answers.iter().all(|a| a.1 == first) {
        Mapping::Independent
    } else {
        Mapping::Dependent
    }
}

/// Send a Binding from one fresh socket to each of `servers` (in turn) and classify what
/// they saw. Servers that do not answer are left out (and logged).
pub async fn mapping_behaviour(servers: &[SocketAddr], opts: &BindingOptions) -> Mapping {
    let Some(first) = servers.first() else {
        return Mapping::Unknown;
    };
    let any: SocketAddr = if first.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(any).await {
        Ok(s) => s,
        Err(e) => {
            warn!("NAT mapping test: cannot bind a socket: {e}");
            return Mapping::Unknown;
        }
    };
    let mut answers = Vec::new();
    for &server in servers {
        match binding_request(&socket, server, opts).await {
            Ok(mapped) => answers.push((server, mapped)),
            Err(e) => warn!(%server, "NAT mapping test: no Binding answer: {e}"),
        }
    }
    let mapping = classify(&answers);
    info!(?mapping, ?answers, "NAT mapping behaviour");
    mapping
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_compared_across_distinct_servers() {
        let (s1, s2) = (a("192.0.2.1:3478"), a("192.0.2.1:3479"));
        let m = a("203.0.113.5:40000");
        assert_eq!(classify(&[(s1, m), (s2, m)]), Mapping::Independent);
        assert_eq!(
            classify(&[(s1, m), (s2, a("203.0.113.5:51234"))]),
            Mapping::Dependent
        );
        // One server, however often, tells nothing.
        assert_eq!(
            classify(&[(s1, m), (s1, a("203.0.113.5:1"))]),
            Mapping::Unknown
        );
        assert_eq!(classify(&[]), Mapping::Unknown);
    }
}
