//! HTTPS for services started by tests: a throwaway E&A CA and a service certificate it
//! issues for `127.0.0.1` and `localhost`, so tests run the SOS (or any service API) over
//! TLS exactly as deployments do, with clients that trust that CA only.

use enroll::cert::{Ca, ServiceRole};
use service::http::Transport;
use service::tls::Trust;

/// A CA and one service's HTTPS on loopback.
pub struct LoopbackHttps {
    /// The CA that issued the service certificate.
    pub ca: Ca,
    /// What the server serves with.
    pub transport: Transport,
    /// What its clients believe.
    pub trust: Trust,
}

/// A new CA and an HTTPS transport for `role` on loopback, issued by it.
pub fn loopback(role: ServiceRole) -> LoopbackHttps {
    service::crypto::install_provider();
    let now = i64::try_from(service::time::unix_secs()).unwrap_or(i64::MAX);
    let ca = Ca::generate("p2psip test CA", now, 1).unwrap_or_else(|e| panic!("test CA: {e}"));
    let names = ["127.0.0.1".to_string(), "localhost".to_string()];
    let cert = ca
        .issue_service(role, &names, [7; 16], now - 60, now + 86_400)
        .unwrap_or_else(|e| panic!("test service certificate: {e}"));
    let config = service::tls::server_config(&cert.chain_pem, &cert.key_pem)
        .unwrap_or_else(|e| panic!("test TLS config: {e}"));
    let trust = Trust::ca_pem(ca.cert_pem()).unwrap_or_else(|e| panic!("test trust: {e}"));
    LoopbackHttps {
        ca,
        transport: Transport::Https(config),
        trust,
    }
}
