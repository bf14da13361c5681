//! The E&A server over real HTTP on loopback, with real certificates.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod support;

use enroll::api::{ErrorBody, Location};
use enroll::cert::{self, csr_for_key, new_key_and_csr};
use enroll::client::{ClientError, EnrollClient};
use enroll::{
    Capabilities, DataDir, EnrollRequest, EnrollServer, Layer, RenewRequest, Role, ServerConfig,
    VerifyError, verify_peer_chain,
};
use overlay::{IdSpace, NodeId};
use rustls_pki_types::{CertificateDer, UnixTime};
use service::tls::Trust;
use std::time::Duration;

/// An E&A server on loopback over its own data directory.
struct Running {
    dir: tempfile::TempDir,
    client: EnrollClient,
    url: String,
    trust: Trust,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The server's defaults in the paper's 11-bit ID space.
fn eleven_bits() -> ServerConfig {
    ServerConfig {
        id_bits: 11,
        ..ServerConfig::default()
    }
}

/// A server with `config` over a new data directory.
async fn start(config: ServerConfig) -> Running {
    start_in(tempfile::tempdir().unwrap(), config).await
}

async fn start_in(dir: tempfile::TempDir, config: ServerConfig) -> Running {
    service::crypto::install_provider();
    let served = support::serve_loopback(EnrollServer::open(dir.path(), config).unwrap()).await;
    Running {
        dir,
        client: served.client,
        url: served.url,
        trust: served.trust,
        _stop: served.stop,
    }
}

impl Running {
    /// Stop the server and start another with `config` over the same data directory.
    async fn restart(self, config: ServerConfig) -> Running {
        let Running {
            dir, _stop: stop, ..
        } = self;
        drop(stop);
        start_in(dir, config).await
    }

    /// The data directory, as the operator's commands open it.
    fn data(&self) -> DataDir {
        DataDir::open(self.dir.path()).unwrap()
    }

    /// A new enrollment token, valid for an hour.
    fn token(&self, role: Role, layer: Option<Layer>, uses: u32) -> String {
        self.data()
            .create_token(role, layer, uses, Duration::from_secs(3600))
            .unwrap()
    }

    /// Enroll a fresh key with `token`, as a new node does.
    async fn enroll_new_key(&self, token: &str) -> Result<enroll::EnrollResponse, ClientError> {
        let (_key, csr) = new_key_and_csr().unwrap();
        self.client.enroll(&request(token, &csr)).await
    }

    fn cert_count(&self) -> i64 {
        self.data().cert_count().unwrap()
    }
}

fn request(token: &str, csr: &str) -> EnrollRequest {
    EnrollRequest {
        token: token.into(),
        csr: csr.into(),
        role: None,
        capabilities: Capabilities::default(),
        location: Some(Location {
            lat: 59.91,
            lon: 10.75,
        }),
        listen: Some("127.0.0.1:5060".parse().unwrap()),
    }
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn chain_of(pem: &str) -> Vec<CertificateDer<'static>> {
    cert::pem_to_der(pem, "CERTIFICATE")
        .unwrap()
        .into_iter()
        .map(CertificateDer::from)
        .collect()
}

fn refused(r: Result<enroll::EnrollResponse, ClientError>) -> (u16, ErrorBody) {
    match r {
        Err(ClientError::Refused { status, body }) => (status, body),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn enroll_verify_revoke_crl() {
    let srv = start(eleven_bits()).await;
    let t = srv.token(Role::Peer, None, 2);
    let resp = srv.enroll_new_key(&t).await.unwrap();
    assert_eq!(resp.layer, Layer::TWO);
    assert_eq!(resp.role, Role::Peer);
    assert_eq!(resp.overlay.id_bits, 11);
    let space = IdSpace::new(11).unwrap();
    assert!(space.id(resp.node_id.0).is_ok());
    let arc = &resp.overlay.layers[1];
    assert!(space.distance(arc.start, resp.node_id) < arc.len);

    // The chain verifies against the CA with webpki, and binds the returned ID.
    let chain = chain_of(&resp.chain);
    assert_eq!(chain.len(), 2);
    let ca_der = cert::pem_to_der(&resp.ca, "CERTIFICATE").unwrap().remove(0);
    let who = verify_peer_chain(&ca_der, &chain, &[], now()).unwrap();
    assert_eq!(who.node_id, resp.node_id);
    assert_eq!((who.layer, who.role), (Layer::TWO, Role::Peer));

    // A second peer nearby gets a close ID and sees the first as bootstrap.
    let resp2 = srv.enroll_new_key(&t).await.unwrap();
    assert_ne!(resp2.node_id, resp.node_id);
    assert_eq!(resp2.bootstrap.len(), 1);
    assert_eq!(resp2.bootstrap[0].node_id, resp.node_id);

    // The CRL is signed and empty, then lists the revoked certificate.
    let crl = srv.client.crl().await.unwrap();
    verify_peer_chain(&ca_der, &chain, std::slice::from_ref(&crl), now()).unwrap();
    let mut data = srv.data();
    assert_eq!(data.revoke(resp.node_id).unwrap(), Some(1));
    assert_eq!(data.revoke(NodeId(2047)).unwrap(), None);
    let crl = srv.client.crl().await.unwrap();
    {
        use x509_parser::prelude::FromDer;
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&crl).unwrap();
        let serials: Vec<&[u8]> = parsed
            .iter_revoked_certificates()
            .map(|r| r.raw_serial())
            .collect();
        assert_eq!(serials, vec![who.serial.as_slice()]);
    }
    assert!(matches!(
        verify_peer_chain(&ca_der, &chain, std::slice::from_ref(&crl), now()),
        Err(VerifyError::Revoked)
    ));
    verify_peer_chain(&ca_der, &chain_of(&resp2.chain), &[crl], now()).unwrap();
}

async fn get(trust: &Trust, url: &str) -> (u16, String) {
    let r = service::http::client_trusting(Duration::from_secs(10), trust)
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_enrollments_tokens_and_the_crl() {
    let srv = start(eleven_bits()).await;
    assert_eq!(
        get(&srv.trust, &format!("{}/healthz", srv.url)).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        get(&srv.trust, &format!("{}/readyz", srv.url)).await,
        (200, "ready\n".into())
    );
    let t = srv.token(Role::Peer, None, 1);
    srv.token(Role::Peer, None, 1);
    let (_key, csr) = new_key_and_csr().unwrap();
    let resp = srv.client.enroll(&request(&t, &csr)).await.unwrap();
    refused(srv.client.enroll(&request(&t, &csr)).await);
    refused(srv.client.enroll(&request("nonsense", &csr)).await);
    srv.data().revoke(resp.node_id).unwrap();
    let (code, text) = get(&srv.trust, &format!("{}/metrics", srv.url)).await;
    assert_eq!(code, 200);
    for line in [
        r#"p2psip_enroll_enrollments_total{outcome="ok"} 1"#,
        r#"p2psip_enroll_enrollments_total{outcome="token_used_up"} 1"#,
        r#"p2psip_enroll_enrollments_total{outcome="token_unknown"} 1"#,
        r#"p2psip_enroll_tokens_refused_total{reason="used_up"} 1"#,
        r#"p2psip_enroll_tokens_refused_total{reason="unknown"} 1"#,
        "p2psip_enroll_tokens_used_total 1",
        "p2psip_enroll_tokens_issued_total 2",
        "p2psip_enroll_tokens_usable 1",
        "p2psip_enroll_certificates_issued_total 1",
        "p2psip_enroll_crl_entries 1",
        "p2psip_enroll_members 0",
        "p2psip_enroll_store_reachable 1",
        r#"p2psip_enroll_request_duration_seconds_count{method="POST",path="/v1/enroll"} 3"#,
        r#"p2psip_enroll_requests_total{method="POST",path="/v1/enroll",code="401"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
}

#[tokio::test]
async fn roles_tokens_and_bad_input_write_nothing() {
    let srv = start(ServerConfig::default()).await;
    let peer_token = srv.token(Role::Peer, None, 1);
    let (key, csr) = new_key_and_csr().unwrap();

    // A peer token cannot enroll a CSP.
    let mut req = request(&peer_token, &csr);
    req.role = Some(Role::Csp);
    let (status, body) = refused(srv.client.enroll(&req).await);
    assert_eq!((status, body.error.as_str()), (403, "wrong_role"));

    // Malformed CSR, foreign CSR (key swapped), absurd capabilities, bad location.
    let (s, b) = refused(srv.client.enroll(&request(&peer_token, "junk")).await);
    assert_eq!((s, b.error.as_str()), (400, "malformed_csr"));
    let a = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let der = cert::pem_to_der(&csr_for_key(&a).unwrap(), "CERTIFICATE REQUEST")
        .unwrap()
        .remove(0);
    let pa = a.public_key_raw().to_vec();
    let pos = der.windows(pa.len()).position(|w| w == pa).unwrap();
    let mut forged = der.clone();
    forged[pos..pos + pa.len()].copy_from_slice(other.public_key_raw());
    let forged = cert::der_to_pem(&forged, "CERTIFICATE REQUEST");
    let (s, b) = refused(srv.client.enroll(&request(&peer_token, &forged)).await);
    assert_eq!((s, b.error.as_str()), (400, "csr_signature"));
    let mut req = request(&peer_token, &csr);
    req.capabilities.cpu_cores = 1_000_000;
    let (s, b) = refused(srv.client.enroll(&req).await);
    assert_eq!((s, b.error.as_str()), (422, "bad_capabilities"));
    let mut req = request(&peer_token, &csr);
    req.location = Some(Location {
        lat: 123.0,
        lon: 0.0,
    });
    assert_eq!(refused(srv.client.enroll(&req).await).0, 422);
    let (s, b) = refused(srv.client.enroll(&request("p2pt_nope", &csr)).await);
    assert_eq!((s, b.error.as_str()), (401, "token_unknown"));

    // Raw HTTP: unknown fields, oversized body.
    let http = service::http::client_trusting(Duration::from_secs(10), &srv.trust).unwrap();
    let url = format!("{}/v1/enroll", srv.client.base());
    let mut v = serde_json::to_value(request(&peer_token, &csr)).unwrap();
    v["admin"] = serde_json::Value::Bool(true);
    let r = http.post(&url).json(&v).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.error, "bad_json");
    assert!(body.message.contains("unknown field"), "{}", body.message);
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.error, "body_too_large");

    // Nothing was written: no certificate, and the one-use token still works once.
    assert_eq!(srv.cert_count(), 0);
    let resp = srv
        .client
        .enroll(&request(&peer_token, &csr))
        .await
        .unwrap();
    assert_eq!(srv.cert_count(), 1);
    let (s, b) = refused(srv.client.enroll(&request(&peer_token, &csr)).await);
    assert_eq!((s, b.error.as_str()), (401, "token_used_up"));
    assert_eq!(srv.cert_count(), 1);

    // A CSP token gives a CSP certificate; it can pin the layer.
    let csp_token = srv.token(Role::Csp, Some(Layer::THREE), 1);
    let (_k, csr2) = new_key_and_csr().unwrap();
    let csp = srv
        .client
        .enroll(&request(&csp_token, &csr2))
        .await
        .unwrap();
    let ca_der = cert::pem_to_der(&csp.ca, "CERTIFICATE").unwrap().remove(0);
    let who = verify_peer_chain(&ca_der, &chain_of(&csp.chain), &[], now()).unwrap();
    assert_eq!(
        (who.role, who.layer, who.node_id),
        (Role::Csp, Layer::THREE, csp.node_id)
    );

    // Renewal: same key → new certificate, same binding; another key → refused.
    let key = rcgen::KeyPair::from_pem(&key).unwrap();
    let renew = RenewRequest {
        certificate: resp.chain.clone(),
        csr: csr_for_key(&key).unwrap(),
    };
    let renewed = srv.client.renew(&renew).await.unwrap();
    assert_eq!(renewed.node_id, resp.node_id);
    assert_ne!(renewed.chain, resp.chain);
    let who = verify_peer_chain(&ca_der, &chain_of(&renewed.chain), &[], now()).unwrap();
    assert_eq!(who.node_id, resp.node_id);
    let stolen = RenewRequest {
        certificate: resp.chain.clone(),
        csr: new_key_and_csr().unwrap().1,
    };
    let (s, b) = refused(srv.client.renew(&stolen).await);
    assert_eq!((s, b.error.as_str()), (403, "key_mismatch"));
    srv.data().revoke(resp.node_id).unwrap();
    let (s, b) = refused(srv.client.renew(&renew).await);
    assert_eq!((s, b.error.as_str()), (403, "revoked"));
}

#[tokio::test]
async fn ca_persists_and_parameters_are_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let first = EnrollServer::open(dir.path(), ServerConfig::default()).unwrap();
    let pem = first.ca_pem().to_string();
    drop(first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(enroll::server::CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = EnrollServer::open(dir.path(), ServerConfig::default()).unwrap();
    assert_eq!(again.ca_pem(), pem);
    // The same CA directory under another ID space is refused.
    assert!(EnrollServer::open(dir.path(), eleven_bits()).is_err());
}

/// A rate limit that lets three requests through, then (for the length of a test) none.
fn burst_of_three() -> enroll::ratelimit::RateLimitConfig {
    enroll::ratelimit::RateLimitConfig {
        per_sec: 0.001,
        burst: 3.0,
        ..Default::default()
    }
}

#[tokio::test]
async fn rate_limited_per_source() {
    let cfg = ServerConfig {
        rate_limit: burst_of_three(),
        ..ServerConfig::default()
    };
    let srv = start(cfg).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(refused(srv.client.enroll(&request("p2pt_x", "junk")).await).0);
    }
    assert_eq!(codes, vec![400, 400, 400, 429, 429]);
}

/// Every server limits each token's enrollments unless its operator says otherwise.
#[test]
fn tokens_are_rate_limited_by_default() {
    let limit = ServerConfig::default().token_rate_limit;
    assert_eq!(limit, enroll::ratelimit::RateLimitConfig::per_token());
    assert!(limit.per_sec > 0.0 && limit.burst >= 512.0);
}

/// A Sybil operator with a leaked ten-use token: the token's rate lets it enroll a burst of
/// three identities, refuses the rest without spending their uses, and another token is not
/// held back by it; the use count caps what the token can ever enroll.
#[tokio::test]
async fn a_leaked_token_enrolls_a_burst_then_is_rate_limited_and_capped_by_its_uses() {
    let cfg = ServerConfig {
        token_rate_limit: burst_of_three(),
        ..ServerConfig::default()
    };
    let srv = start(cfg).await;
    let leaked = srv.token(Role::Peer, None, 10);
    let other = srv.token(Role::Peer, None, 1);
    for _ in 0..3 {
        srv.enroll_new_key(&leaked).await.unwrap();
    }
    for _ in 0..3 {
        let (status, body) = refused(srv.enroll_new_key(&leaked).await);
        assert_eq!((status, body.error.as_str()), (429, "token_rate_limited"));
    }
    assert_eq!(srv.cert_count(), 3);
    srv.enroll_new_key(&other).await.unwrap();
    assert_eq!(srv.cert_count(), 4);

    // Without a rate, the refused attempts' uses are still there: seven more, then none.
    let cfg = ServerConfig {
        token_rate_limit: enroll::ratelimit::RateLimitConfig::off(),
        ..ServerConfig::default()
    };
    let srv = srv.restart(cfg).await;
    for _ in 0..7 {
        srv.enroll_new_key(&leaked).await.unwrap();
    }
    let (status, body) = refused(srv.enroll_new_key(&leaked).await);
    assert_eq!((status, body.error.as_str()), (401, "token_used_up"));
    assert_eq!(srv.cert_count(), 11);
}

/// `GET /v1/directory` lists every enrolled node that is not revoked, with its newest
/// certificate chain and the address it gave; CSPGs, then CSPs, then peers.
#[tokio::test]
async fn directory_lists_the_enrolled_and_drops_the_revoked() {
    let srv = start(eleven_bits()).await;
    assert!(srv.client.directory().await.unwrap().members.is_empty());
    let mut ids = Vec::new();
    for (role, addr) in [
        (Role::Peer, "127.0.0.1:6001"),
        (Role::Csp, "127.0.0.1:6002"),
        (Role::Peer, "127.0.0.1:6003"),
    ] {
        let t = srv.token(role, Some(Layer::TWO), 1);
        let (_key, csr) = new_key_and_csr().unwrap();
        let mut req = request(&t, &csr);
        req.listen = Some(addr.parse().unwrap());
        let resp = srv.client.enroll(&req).await.unwrap();
        ids.push((resp.node_id, role, addr));
    }
    let ca_der = cert::pem_to_der(&srv.client.ca(None).await.unwrap(), "CERTIFICATE")
        .unwrap()
        .remove(0);
    let listed = |d: &enroll::api::DirectoryResponse| -> Vec<(NodeId, Role, String)> {
        d.members
            .iter()
            .map(|m| {
                let who = verify_peer_chain(&ca_der, &chain_of(&m.chain), &[], now()).unwrap();
                (who.node_id, who.role, m.addr.unwrap().to_string())
            })
            .collect()
    };
    let d = srv.client.directory().await.unwrap();
    let got = listed(&d);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].1, Role::Csp, "infrastructure first: {got:?}");
    for (id, role, addr) in &ids {
        assert!(
            got.contains(&(*id, *role, addr.to_string())),
            "{id} missing from {got:?}"
        );
    }
    // Revoked: gone from the directory.
    srv.data().revoke(ids[0].0).unwrap();
    let got = listed(&srv.client.directory().await.unwrap());
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(id, _, _)| *id != ids[0].0));
}

#[tokio::test]
async fn first_contact_is_pinned_and_a_wrong_pin_sends_no_token() {
    let srv = start(eleven_bits()).await;
    let t = srv.token(Role::Peer, None, 1);
    let (_key, csr) = new_key_and_csr().unwrap();
    // Another E&A's CA fingerprint: the handshake fails before the token leaves.
    let other = tempfile::tempdir().unwrap();
    let wrong = DataDir::open(other.path()).unwrap().ca().fingerprint();
    let pinned_wrong = EnrollClient::new(&srv.url, &Trust::pinned(&wrong).unwrap()).unwrap();
    match pinned_wrong.enroll(&request(&t, &csr)).await {
        Err(ClientError::Http(e)) => assert!(e.is_connect(), "{e:?}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert_eq!(srv.cert_count(), 0);
    // A client that trusts no CA of ours at all (a fresh, unrelated CA): refused too.
    let foreign = Trust::ca_pem(DataDir::open(other.path()).unwrap().ca().cert_pem()).unwrap();
    assert!(
        EnrollClient::new(&srv.url, &foreign)
            .unwrap()
            .enroll(&request(&t, &csr))
            .await
            .is_err()
    );
    // The right pin: the token, unused so far, enrolls.
    let fp = srv.data().ca().fingerprint();
    let pinned = EnrollClient::new(&srv.url, &Trust::pinned(&fp).unwrap()).unwrap();
    let ca = pinned.ca(Some(&fp)).await.unwrap();
    assert_eq!(cert::fingerprint(&chain_of(&ca)[0]), fp);
    pinned.enroll(&request(&t, &csr)).await.unwrap();
    assert_eq!(srv.cert_count(), 1);
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = srv.url.replace("https://", "http://");
    assert!(
        EnrollClient::new(&plain, &srv.trust)
            .unwrap()
            .ca(None)
            .await
            .is_err()
    );
}

#[test]
fn service_certificates_serve_their_names_and_are_no_peers() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let names = vec!["sos.example.net".to_string(), "192.0.2.7".to_string()];
    let sos = data
        .issue_service_cert(cert::ServiceRole::Sos, &names, Duration::from_secs(86_400))
        .unwrap();
    let chain = chain_of(&sos.chain_pem);
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].as_ref(), data.ca().cert_der().as_ref());
    let ee = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(data.ca().cert_der()).unwrap();
    ee.verify_for_usage(
        cert::SIG_ALGS,
        &[anchor],
        &[],
        now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    for good in ["sos.example.net", "192.0.2.7"] {
        let name = rustls_pki_types::ServerName::try_from(good).unwrap();
        ee.verify_is_valid_for_subject_name(&name).unwrap();
    }
    let other = rustls_pki_types::ServerName::try_from("ea.example.net").unwrap();
    assert!(ee.verify_is_valid_for_subject_name(&other).is_err());
    // The overlay refuses it: no Node-ID binding.
    assert!(verify_peer_chain(data.ca().cert_der(), &chain, &[], now()).is_err());
    let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    assert!(san.value.general_names.iter().any(|n| matches!(
        n,
        x509_parser::extensions::GeneralName::URI(u) if *u == "p2psip:service/sos"
    )));
    assert!(
        data.issue_service_cert(cert::ServiceRole::Sos, &[], Duration::from_secs(60))
            .is_err()
    );
}

/// `--id-scheme sha1`: the ID is the SHA-1 of the peer's key reduced into its layer's arc,
/// whatever location the peer gives, so two peers of one city land far apart.
#[tokio::test]
async fn sha1_scheme_ids_come_from_the_key_not_the_location() {
    let config = ServerConfig {
        id_scheme: enroll::IdScheme::Sha1,
        ..ServerConfig::default()
    };
    let srv = start(config).await;
    let t = srv.token(Role::Peer, Some(Layer::TWO), 2);
    let space = IdSpace::new(128).unwrap();
    let arc = enroll::LayerArcs::thirds(space).unwrap().arc(Layer::TWO);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_key, csr) = new_key_and_csr().unwrap();
        let resp = srv.client.enroll(&request(&t, &csr)).await.unwrap();
        assert_eq!(resp.overlay.id_scheme, enroll::IdScheme::Sha1);
        let spki = cert::Csr::from_pem(&csr).unwrap().spki_der();
        assert_eq!(resp.node_id, enroll::assign_sha1_id(space, arc, &spki, 0));
        ids.push(resp.node_id);
    }
    // Both asked for Oslo; location-aware IDs would share their high bits.
    let gap = space
        .distance(ids[0], ids[1])
        .min(space.distance(ids[1], ids[0]));
    assert!(gap > arc.len >> 40, "{ids:?}");
}
