//! Two E&A instances on one throwaway PostgreSQL cluster, sharing the CA by its files.
//!
//! Every single-use token is sent to both instances at the same moment: exactly one of the
//! two enrolls, Node-IDs (in the paper's crowded 11-bit space, where two instances often
//! pick the same free ID at once) and certificate serials never repeat, and both instances
//! publish the same CRL after a revocation. Skipped loudly without PostgreSQL; under
//! `CI=true` a missing PostgreSQL fails instead.
#![allow(clippy::unwrap_used)] // a failure is a test failure

mod support;

use enroll::api::Location;
use enroll::cert::{self, new_key_and_csr};
use enroll::client::{ClientError, EnrollClient};
use enroll::ratelimit::RateLimitConfig;
use enroll::{Capabilities, DataDir, EnrollRequest, EnrollServer, Role, ServerConfig};
use service::postgres::PgOptions;
use service::tls::Trust;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use testkit::postgres::Cluster;

const TOKENS: usize = 24;

async fn start(dir: &Path, pg: &str) -> (EnrollClient, tokio::sync::oneshot::Sender<()>) {
    let config = ServerConfig {
        id_bits: 11,
        // Every request comes from 127.0.0.1.
        rate_limit: RateLimitConfig {
            per_sec: 0.0,
            ..RateLimitConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = EnrollServer::open_with(dir, Some(PgOptions::new(pg)), config).unwrap();
    let served = support::serve_loopback(server).await;
    (served.client, served.stop)
}

fn request(token: &str, i: usize) -> EnrollRequest {
    let (_key, csr) = new_key_and_csr().unwrap();
    EnrollRequest {
        token: token.into(),
        csr,
        role: None,
        capabilities: Capabilities::default(),
        // Everyone in one city: the location-aware scheme aims them at the same IDs.
        location: Some(Location {
            lat: 59.91 + (i % 3) as f64 * 0.001,
            lon: 10.75,
        }),
        listen: Some(format!("127.0.0.1:{}", 20_000 + i).parse().unwrap()),
    }
}

/// The data directory `dir` on database `url`, and `n` single-use peer tokens made in it,
/// valid an hour.
fn single_use_tokens(dir: &std::path::Path, url: &str, n: usize) -> (DataDir, Vec<String>) {
    let data = DataDir::open_with(dir, Some(PgOptions::new(url))).unwrap();
    let tokens = (0..n)
        .map(|_| {
            data.create_token(Role::Peer, None, 1, Duration::from_secs(3600))
                .unwrap()
        })
        .collect();
    (data, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_enroll_concurrently_without_reusing_tokens_or_ids() {
    let Some(pg) =
        Cluster::start("two_instances_enroll_concurrently_without_reusing_tokens_or_ids")
    else {
        return;
    };
    service::crypto::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let (data, tokens) = single_use_tokens(dir.path(), &pg.url(), TOKENS);
    let (a, _stop_a) = start(dir.path(), &pg.url()).await;
    let (b, _stop_b) = start(dir.path(), &pg.url()).await;

    let mut tasks = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        for (k, client) in [&a, &b].into_iter().enumerate() {
            let (client, req) = (client.clone(), request(t, 2 * i + k));
            tasks.push(tokio::spawn(async move { (i, client.enroll(&req).await) }));
        }
    }
    let mut per_token = vec![0usize; TOKENS];
    let mut ids = BTreeSet::new();
    let mut serials = BTreeSet::new();
    for task in tasks {
        let (i, res) = task.await.unwrap();
        match res {
            Ok(resp) => {
                per_token[i] += 1;
                assert!(ids.insert(resp.node_id), "{} issued twice", resp.node_id);
                let der = cert::pem_to_der(&resp.chain, "CERTIFICATE")
                    .unwrap()
                    .remove(0);
                let serial = cert::identity_from_cert(&der).unwrap().serial;
                assert!(serials.insert(serial), "a serial was issued twice");
            }
            Err(ClientError::Refused { status: 401, body }) => {
                assert_eq!(body.error, "token_used_up", "{}", body.message);
            }
            Err(e) => panic!("token {i}: {e}"),
        }
    }
    assert_eq!(
        per_token,
        vec![1; TOKENS],
        "each token enrolls exactly once"
    );
    assert_eq!(data.cert_count().unwrap(), TOKENS as i64);

    // A revocation shows in the CRL of both instances: the same list, number and times.
    let mut data = data;
    let victim = *ids.first().unwrap();
    assert_eq!(data.revoke(victim).unwrap(), Some(1));
    let (crl_a, crl_b) = (a.crl().await.unwrap(), b.crl().await.unwrap());
    use x509_parser::prelude::FromDer;
    let parse = |der: &[u8]| {
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(der).unwrap();
        (
            crl.tbs_cert_list.as_ref().to_vec(),
            crl.iter_revoked_certificates().count(),
        )
    };
    let (tbs_a, revoked_a) = parse(&crl_a);
    let (tbs_b, revoked_b) = parse(&crl_b);
    assert_eq!((revoked_a, revoked_b), (1, 1));
    assert_eq!(tbs_a, tbs_b, "the instances publish different CRLs");

    // Each instance counts its own enrollments; what the database holds, both report.
    let trust = Trust::ca_pem(data.ca().cert_pem()).unwrap();
    let http = service::http::client_trusting(Duration::from_secs(10), &trust).unwrap();
    let mut enrolled = 0;
    for c in [&a, &b] {
        let get = |path: &str| http.get(format!("{}{path}", c.base())).send();
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let text = get("/metrics").await.unwrap().text().await.unwrap();
        for line in [
            format!("p2psip_enroll_certificates_issued_total {TOKENS}"),
            format!("p2psip_enroll_tokens_issued_total {TOKENS}"),
            "p2psip_enroll_tokens_usable 0".into(),
            "p2psip_enroll_crl_entries 1".into(),
            format!("p2psip_enroll_members {}", TOKENS - 1),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        enrolled += text
            .lines()
            .find_map(|l| l.strip_prefix(r#"p2psip_enroll_enrollments_total{outcome="ok"} "#))
            .unwrap()
            .parse::<usize>()
            .unwrap();
    }
    assert_eq!(enrolled, TOKENS, "the instances' enrollments add up");
}

#[test]
fn an_instance_with_another_ca_is_refused() {
    let Some(pg) = Cluster::start("an_instance_with_another_ca_is_refused") else {
        return;
    };
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    DataDir::open_with(one.path(), Some(PgOptions::new(pg.url()))).unwrap();
    let err = DataDir::open_with(two.path(), Some(PgOptions::new(pg.url()))).unwrap_err();
    assert!(err.to_string().contains("ca_cert_sha256"), "{err}");
}

/// The database connection can be TLS (rustls, ring) with the operator's CA file: a server
/// that requires TLS from 127.0.0.1 is reached with it, and refuses the plain connection.
#[test]
fn the_database_connection_can_be_tls_with_a_ca_file() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let Some(pg) = Cluster::start("the_database_connection_can_be_tls_with_a_ca_file") else {
        return;
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let crt = pg
        .write_private("server.crt", server_cert.pem().as_bytes())
        .unwrap();
    let key = pg
        .write_private("server.key", server_key.serialize_pem().as_bytes())
        .unwrap();
    // TLS only: a plain connection from 127.0.0.1 finds no pg_hba line.
    let hba = pg
        .write_private(
            "hba.conf",
            b"hostssl all all 127.0.0.1/32 trust\nlocal all all trust\n",
        )
        .unwrap();
    pg.restart_with(&format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c hba_file={}",
        crt.display(),
        key.display(),
        hba.display()
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("db-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let plain = DataDir::open_with(dir.path(), Some(PgOptions::new(pg.url())));
    assert!(plain.is_err(), "a plain connection was accepted");
    let mut tls = PgOptions::new(format!("{}?sslmode=require", pg.url()));
    tls.ca_file = Some(ca_file);
    let data = DataDir::open_with(dir.path(), Some(tls)).unwrap();
    data.create_token(Role::Peer, None, 1, Duration::from_secs(60))
        .unwrap();
    assert_eq!(data.cert_count().unwrap(), 0);
}

/// PostgreSQL crashes (`pg_ctl stop -m immediate`) and comes back while two instances
/// enroll one peer after another: the instances wait for it instead of failing, and every
/// certificate they returned is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_enrollment_loses_no_certificate() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let Some(pg) = Cluster::start("a_postgres_restart_mid_enrollment_loses_no_certificate") else {
        return;
    };
    let pg = Arc::new(pg);
    service::crypto::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let (_data, tokens) = single_use_tokens(dir.path(), &pg.url(), TOKENS * 2);
    let (a, _stop_a) = start(dir.path(), &pg.url()).await;
    let (b, _stop_b) = start(dir.path(), &pg.url()).await;
    let done = Arc::new(AtomicUsize::new(0));
    let enrolling = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut issued = Vec::new();
            let mut unknown = 0;
            for (i, t) in tokens.iter().enumerate() {
                let client = if i % 2 == 0 { &a } else { &b };
                match client.enroll(&request(t, i)).await {
                    Ok(resp) => {
                        let der = cert::pem_to_der(&resp.chain, "CERTIFICATE")
                            .unwrap()
                            .remove(0);
                        issued.push(cert::identity_from_cert(&der).unwrap().serial);
                    }
                    // The connection broke during the commit: it may or may not be stored.
                    Err(ClientError::Refused { status: 503, body })
                        if body.error == "outcome_unknown" =>
                    {
                        unknown += 1;
                    }
                    Err(e) => panic!("enrollment {i} failed: {e}"),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            (issued, unknown)
        })
    };
    while done.load(Ordering::SeqCst) < 8 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restart = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || {
        restart.stop_immediate().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        restart.start_again().unwrap();
    })
    .await
    .unwrap();
    let (issued, unknown) = enrolling.await.unwrap();
    eprintln!(
        "{} certificates issued, {unknown} with an unknown outcome",
        issued.len()
    );
    assert!(unknown <= 2, "{unknown} enrollments lost their outcome");
    // The blocking client, off the runtime's threads.
    let url = pg.url();
    let stored: BTreeSet<String> = tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        db.query("SELECT serial FROM certs", &[])
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect()
    })
    .await
    .unwrap();
    for serial in &issued {
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            stored.contains(&hex),
            "certificate {hex} was returned but not stored"
        );
    }
    assert!(stored.len() <= issued.len() + unknown);
}
