//! The E&A request bodies as an attacker sends them, for enroll's "decode anything, never
//! panic" proptests and the `enroll_body` fuzz target alike: a live E&A (a data directory
//! with a token of many uses and a real CSR to splice fuzzed bytes around), and the checks
//! every body must pass: it never panics, and what is accepted comes back as a certificate
//! that binds the Node-ID announced.
//!
//! These are test helpers: setting the E&A up is the test's precondition, so a failure
//! there panics.

use enroll::cert::{Csr, identity_from_cert, new_key_and_csr, pem_to_der};
use enroll::{
    Capabilities, DataDir, EnrollRequest, EnrollServer, RenewRequest, Role, ServerConfig,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Duration;

/// The source address every request comes from (TEST-NET-1).
pub const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// A live E&A with what a valid request needs.
pub struct LiveEa {
    /// The server logic behind `POST /v1/enroll`.
    pub server: EnrollServer,
    /// A peer token with uses to spare.
    pub token: String,
    /// A real CSR, as the JSON string a request carries.
    pub csr_json: String,
    _dir: tempfile::TempDir,
}

/// The one live E&A of this process (set up on first use).
pub fn live_ea() -> &'static LiveEa {
    static EA: OnceLock<LiveEa> = OnceLock::new();
    EA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let token = DataDir::open(dir.path())
            .expect("the E&A data directory")
            .create_token(Role::Peer, None, 1_000_000_000, Duration::from_secs(86_400))
            .expect("a token");
        let server = EnrollServer::open(dir.path(), ServerConfig::default()).expect("the E&A");
        let (_key, csr) = new_key_and_csr().expect("a CSR");
        LiveEa {
            server,
            token,
            csr_json: serde_json::to_string(&csr).expect("a CSR as JSON"),
            _dir: dir,
        }
    })
}

impl LiveEa {
    /// `body` as a `POST /v1/enroll` body: true when it was accepted, and then the chain
    /// issued must be a certificate that binds the Node-ID announced.
    pub fn enroll_json(&self, body: &[u8]) -> bool {
        let Ok(req) = serde_json::from_slice::<EnrollRequest>(body) else {
            return false;
        };
        let Ok(resp) = self.server.enroll(&req, SOURCE) else {
            return false;
        };
        let der = pem_to_der(&resp.chain, "CERTIFICATE").expect("the issued chain parses");
        let id = identity_from_cert(&der[0]).expect("the issued certificate parses");
        assert_eq!(id.node_id, resp.node_id);
        true
    }

    /// A request body with the live token and CSR and `capabilities` spliced in as the
    /// capabilities' JSON text (fuzzed bytes may run on into the fields after it).
    pub fn with_capabilities(&self, capabilities: &[u8]) -> Vec<u8> {
        let mut body = format!(
            r#"{{"token":"{}","csr":{},"capabilities":"#,
            self.token, self.csr_json
        )
        .into_bytes();
        body.extend_from_slice(capabilities);
        body.push(b'}');
        body
    }

    /// A request with the live token and `csr` as its CSR text, handed to the server.
    pub fn enroll_csr(&self, csr: String) {
        let req = EnrollRequest {
            token: self.token.clone(),
            csr,
            role: None,
            capabilities: Capabilities::default(),
            location: None,
            listen: None,
        };
        let _ = self.server.enroll(&req, SOURCE);
    }
}

/// `body` through every decoder a `POST /v1/renew` body meets (JSON, PEM, DER, the CSR and
/// the certificate), and as raw bytes through the CSR and certificate decoders.
pub fn decode_renew(body: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<RenewRequest>(body) {
        if let Ok(ders) = pem_to_der(&req.certificate, "CERTIFICATE") {
            for d in ders {
                let _ = identity_from_cert(&d);
            }
        }
        let _ = Csr::from_pem(&req.csr);
    }
    let _ = Csr::from_der(body);
    let _ = Csr::from_pem(&String::from_utf8_lossy(body));
    let _ = identity_from_cert(body);
}
