//! Fault test from the peer's side: a peer's SOS link (`net::SosLink`, what every secure
//! peer uses for its signed reports) streams reports while the real `p2psip sos` process is
//! killed with SIGKILL and restarted on the same address and database. The link retries
//! with back-off, so every report the peer produced ends up stored exactly once — none lost
//! while the SOS was down, none doubled by a retry of a report whose answer was lost.
//! (`sos_crash.rs` checks the server side: acknowledged reports survive the kill.)
#![allow(clippy::unwrap_used)]

mod support;

use support::{BIN, Proc, sos_tls, sos_trust, try_spawn_cmd};

use enroll::cert::{Binding, Ca, Csr, der_to_pem, new_key_and_csr};
use enroll::{Layer, Role};
use net::{CertSigner, Identity, SosCounters, SosLink};
use overlay::NodeId;
use overlay::secure::Outcome;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const ME: u128 = 700;

/// `p2psip sos` on `listen`; `None` if it did not come up (e.g. the port is not free yet).
fn start(db: &Path, registry: &Path, listen: &str, tls: &Path) -> Option<Proc> {
    let sos = try_spawn_cmd(
        Command::new(BIN)
            .args(["sos", "--listen", listen, "--db"])
            .arg(db)
            .arg("--tls")
            .arg(tls)
            .arg("--key-registry")
            .arg(registry)
            .args(["--report-rate", "1000000", "--report-burst", "1000000"])
            .args(["--sync", "full"]),
        1,
    )?;
    let line = &sos.first_lines[0];
    assert!(line.starts_with("sos listening on "), "{line:?}");
    Some(sos)
}

fn identity(ca: &Ca) -> Identity {
    let (key_pem, csr) = new_key_and_csr().unwrap();
    let csr = Csr::from_pem(&csr).unwrap();
    let t = enroll::server::unix_now();
    let der = ca
        .issue(
            &csr,
            &Binding {
                node_id: NodeId(ME),
                layer: Layer::ONE,
                role: Role::Peer,
            },
            [7; 16],
            t - 60,
            t + 3600,
        )
        .unwrap();
    Identity::from_pem(&(der_to_pem(&der, "CERTIFICATE") + ca.cert_pem()), &key_pem).unwrap()
}

#[test]
fn a_peer_loses_no_report_across_an_sos_kill_9_and_restart() {
    service::crypto::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sos.db");
    let tls = sos_tls(&dir.path().join("ea"), &dir.path().join("sos-tls"));
    let registry = dir.path().join("registry.json");
    let ca = Ca::generate("test E&A", enroll::server::unix_now(), 1).unwrap();
    let id = identity(&ca);
    let alg = CertSigner::from_identity(&id).unwrap().alg().sos();
    let entry = sos::ReportSigner::from_pkcs8(sos::PeerId(ME), alg, id.key_der())
        .unwrap()
        .registry_entry();
    std::fs::write(&registry, sos::KeyRegistry::to_json(&[entry])).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = start(&db, &registry, &listen, &tls).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counters = Arc::new(SosCounters::default());
    let sent = rt.block_on(async {
        let client = sos::SosClient::new(&format!("https://{listen}"), &sos_trust(&tls)).unwrap();
        let link = SosLink::new(client, &id, counters.clone()).unwrap();
        let mut sent = 0u64;
        let subjects = [1593u128, 1600, 1609, 1618];
        let mut send = |n: u64| {
            for _ in 0..n {
                let s = subjects[(sent % 4) as usize];
                let o = if sent.is_multiple_of(3) {
                    Outcome::Dropped
                } else {
                    Outcome::Delivered
                };
                link.send_report(NodeId(ME), NodeId(s), o);
                sent += 1;
            }
        };
        // Stream 4 reports every 20 ms; kill -9 once 100 are acknowledged; 1 report every 50 ms
        // while it is down (under the link's 32 deliveries in flight); restart 1 s later
        // on the same address and database; stream on for another second.
        let t0 = Instant::now();
        while counters.reports_ok.load(Ordering::Relaxed) < 100 {
            assert!(t0.elapsed() < Duration::from_secs(30), "SOS too slow");
            send(4);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.child.kill().unwrap();
        let _ = server.child.wait();
        let down = Instant::now();
        while down.elapsed() < Duration::from_secs(1) {
            send(1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut restarted = None;
        for _ in 0..20 {
            if let Some(c) = start(&db, &registry, &listen, &tls) {
                restarted = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server = restarted.expect("the SOS did not restart on its address");
        let up = Instant::now();
        while up.elapsed() < Duration::from_secs(1) {
            send(4);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Every delivery finishes (acknowledged, or given up after its last try).
        let t1 = Instant::now();
        loop {
            let done = counters.reports_ok.load(Ordering::Relaxed)
                + counters.reports_failed.load(Ordering::Relaxed)
                + counters.reports_dropped.load(Ordering::Relaxed);
            if done == sent || t1.elapsed() > Duration::from_secs(20) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    });
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let ok = counters.reports_ok.load(Ordering::Relaxed);
    let failed = counters.reports_failed.load(Ordering::Relaxed);
    let dropped = counters.reports_dropped.load(Ordering::Relaxed);
    let retries = counters.report_retries.load(Ordering::Relaxed);
    let conn = rusqlite::Connection::open(&db).unwrap();
    // A count over this reporter's stored reports.
    let count = |what: &str| -> i64 {
        let sql = format!("SELECT COUNT({what}) FROM reports WHERE reporter = ?1");
        conn.query_row(&sql, [ME.to_string()], |r| r.get(0))
            .unwrap()
    };
    let stored = count("*");
    let distinct = count("DISTINCT nonce");
    eprintln!(
        "{sent} reports produced: {ok} acknowledged, {failed} failed, {dropped} dropped, {retries} retries; {stored} stored ({distinct} distinct)"
    );
    assert!(
        retries > 0,
        "the SOS outage caused no retry: nothing was tested"
    );
    assert_eq!(failed, 0, "reports given up");
    assert_eq!(dropped, 0, "reports dropped for lack of slots");
    assert_eq!(ok, sent, "not every report was acknowledged");
    assert_eq!(stored as u64, sent, "stored reports ≠ produced reports");
    assert_eq!(distinct, stored, "a retried report was stored twice");
}
