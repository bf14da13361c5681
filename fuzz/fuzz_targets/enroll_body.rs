//! The E&A request bodies: `POST /v1/enroll` JSON decoded and handed to the real server
//! logic (`EnrollServer::enroll`: token, capabilities, location, CSR, ID assignment,
//! issuance, SQLite), and the `POST /v1/renew` body's PEM/CSR/certificate parsing.
//!
//! The first byte picks the mode; modes 2 and 3 splice the fuzz bytes into an otherwise
//! valid request (live token, real CSR) so the fuzzer reaches past the token check.
#![no_main]

use enroll::cert::{Csr, identity_from_cert, new_key_and_csr, pem_to_der};
use enroll::{DataDir, EnrollRequest, EnrollServer, RenewRequest, Role, ServerConfig};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Duration;

struct Fixture {
    server: EnrollServer,
    token: String,
    csr_json: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = DataDir::open(dir.path())
            .expect("data dir")
            .create_token(Role::Peer, None, 1_000_000_000, Duration::from_secs(86_400))
            .expect("token");
        let server = EnrollServer::open(dir.path(), ServerConfig::default()).expect("server");
        let (_key, csr) = new_key_and_csr().expect("csr");
        Fixture {
            server,
            token,
            csr_json: serde_json::to_string(&csr).expect("json"),
            _dir: dir,
        }
    })
}

const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn enroll_json(body: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<EnrollRequest>(body) {
        if let Ok(resp) = fixture().server.enroll(&req, SOURCE) {
            // What was issued must be a certificate binding the Node-ID announced.
            let der = pem_to_der(&resp.chain, "CERTIFICATE").expect("issued chain parses");
            let id = identity_from_cert(&der[0]).expect("issued certificate parses");
            assert_eq!(id.node_id, resp.node_id);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => enroll_json(rest),
        1 => {
            if let Ok(req) = serde_json::from_slice::<RenewRequest>(rest) {
                if let Ok(ders) = pem_to_der(&req.certificate, "CERTIFICATE") {
                    for d in ders {
                        let _ = identity_from_cert(&d);
                    }
                }
                let _ = Csr::from_pem(&req.csr);
            }
            let text = String::from_utf8_lossy(rest);
            let _ = Csr::from_pem(&text);
            let _ = Csr::from_der(rest);
            let _ = identity_from_cert(rest);
        }
        2 => {
            // Fuzzed capabilities / location / listen / role around a valid token and CSR.
            let f = fixture();
            let mut body = format!(
                r#"{{"token":"{}","csr":{},"capabilities":"#,
                f.token, f.csr_json
            )
            .into_bytes();
            body.extend_from_slice(rest);
            body.push(b'}');
            enroll_json(&body);
        }
        _ => {
            // A fuzzed CSR text with a valid token.
            let f = fixture();
            let csr = String::from_utf8_lossy(rest);
            let req = EnrollRequest {
                token: f.token.clone(),
                csr: csr.into_owned(),
                role: None,
                capabilities: enroll::Capabilities::default(),
                location: None,
                listen: None,
            };
            let _ = f.server.enroll(&req, SOURCE);
        }
    }
});
