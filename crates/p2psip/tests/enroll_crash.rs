//! Crash test for the E&A: the real `p2psip enroll-server` process is killed with SIGKILL
//! while enrollments stream in from concurrent clients. After a restart on the same data
//! directory, every acknowledged enrollment is there (node row and certificate, byte for
//! byte), no Node-ID was handed out twice, the token's remaining uses match what was
//! committed, and clients that retry (with back-off) against the restarted server enroll.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use enroll::cert::{identity_from_cert, new_key_and_csr, pem_to_der};
use enroll::client::EnrollClient;
use enroll::{Capabilities, EnrollRequest};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;

use service::tls::Trust;
use support::{Proc, create_token, ea_command, kill_mid_stream, start_ea};

const TOKEN_USES: u64 = 100_000;

/// Start `p2psip enroll-server` on a free port, without a rate limit; returns the process
/// and its base URL.
fn start(data: &Path) -> (Proc, String) {
    start_ea(
        ea_command(data, 32)
            .args(["--rate-per-sec", "0"])
            .stderr(Stdio::null()),
    )
}

fn request(token: &str, csr: String) -> EnrollRequest {
    EnrollRequest {
        token: token.into(),
        csr,
        role: None,
        capabilities: Capabilities::default(),
        location: None,
        listen: None,
    }
}

/// An acknowledged enrollment: the Node-ID and the issued certificate (DER).
struct Acked {
    node_id: u128,
    cert: Vec<u8>,
}

#[test]
fn acknowledged_enrollments_survive_kill_9() {
    service::crypto::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ea");
    // The data directory (CA, database) is created by the first command.
    let token = create_token(&data, &["--uses", &TOKEN_USES.to_string()]);
    let (mut ea, url) = start(&data);

    // Keys are made up front so the load is the server's, not the clients' key generation.
    let csrs: Vec<String> = (0..400).map(|_| new_key_and_csr().unwrap().1).collect();
    let csrs = Arc::new(Mutex::new(csrs));
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client =
            EnrollClient::new(&url, &Trust::ca_file(&data.join("ca.pem")).unwrap()).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (client, csrs, acked, count, stop, token) = (
                client.clone(),
                csrs.clone(),
                acked.clone(),
                count.clone(),
                stop.clone(),
                token.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let Some(csr) = csrs.lock().unwrap().pop() else {
                        break;
                    };
                    match client.enroll(&request(&token, csr)).await {
                        Ok(resp) => {
                            let der = pem_to_der(&resp.chain, "CERTIFICATE").unwrap();
                            acked.lock().unwrap().push(Acked {
                                node_id: resp.node_id.0,
                                cert: der[0].clone(),
                            });
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break, // the server is gone
                    }
                }
            }));
        }
        kill_mid_stream(&mut ea, (&count, 60), Duration::from_secs(60), &stop, tasks).await;
    });
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() >= 60,
        "only {} enrollments acknowledged before the kill",
        acked.len()
    );

    // Every acknowledged enrollment is in the database: node row and the very certificate.
    let db = data.join(enroll::server::DB_FILE);
    let (committed, uses_left) = {
        let conn = rusqlite::Connection::open(&db).expect("open db after crash");
        let mut node = conn
            .prepare("SELECT revoked_at FROM nodes WHERE node_id = ?1")
            .unwrap();
        let mut cert = conn
            .prepare("SELECT der, node_id FROM certs WHERE serial = ?1")
            .unwrap();
        for a in &acked {
            let revoked: Option<i64> = node
                .query_row([a.node_id.to_string()], |r| r.get(0))
                .unwrap_or_else(|e| panic!("acknowledged node {} missing: {e}", a.node_id));
            assert_eq!(revoked, None);
            let serial = enroll::token::hex(&identity_from_cert(&a.cert).unwrap().serial);
            let (der, id): (Vec<u8>, String) = cert
                .query_row([&serial], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap_or_else(|e| panic!("acknowledged certificate {serial} missing: {e}"));
            assert_eq!(der, a.cert, "certificate {serial} differs");
            assert_eq!(id, a.node_id.to_string());
        }
        let committed: i64 = conn
            .query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))
            .unwrap();
        let uses_left: i64 = conn
            .query_row("SELECT uses_left FROM tokens", [], |r| r.get(0))
            .unwrap();
        (committed as u64, uses_left as u64)
    };
    let ids: BTreeSet<u128> = acked.iter().map(|a| a.node_id).collect();
    assert_eq!(ids.len(), acked.len(), "a Node-ID was handed out twice");
    // A token use is spent exactly when an enrollment commits (same transaction).
    assert_eq!(
        uses_left + committed,
        TOKEN_USES,
        "token uses vs committed enrollments"
    );
    // At most the requests in flight at the kill were committed but not acknowledged.
    assert!(committed >= acked.len() as u64 && committed <= acked.len() as u64 + 6);
    eprintln!(
        "acknowledged {} enrollments before SIGKILL; {committed} committed; nothing lost",
        acked.len()
    );

    // Restart on the same directory; clients retry with back-off until it answers.
    let (mut ea, url) = start(&data);
    rt.block_on(async {
        let client =
            EnrollClient::new(&url, &Trust::ca_file(&data.join("ca.pem")).unwrap()).unwrap();
        let mut fresh = BTreeSet::new();
        for _ in 0..5 {
            let csr = new_key_and_csr().unwrap().1;
            let mut backoff = Duration::from_millis(20);
            let resp = loop {
                match client.enroll(&request(&token, csr.clone())).await {
                    Ok(r) => break r,
                    Err(e) => {
                        assert!(backoff < Duration::from_secs(5), "no recovery: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            };
            assert!(
                !ids.contains(&resp.node_id.0),
                "reused Node-ID after restart"
            );
            fresh.insert(resp.node_id.0);
        }
        assert_eq!(fresh.len(), 5);
        // The CRL is served by the restarted server (to a client that trusts its CA; a
        // client with only the system's roots refuses its certificate).
        assert!(!client.crl().await.unwrap().is_empty());
        assert!(reqwest::get(format!("{url}/v1/crl")).await.is_err());
    });
    ea.child.kill().unwrap();
    let _ = ea.child.wait();
}
