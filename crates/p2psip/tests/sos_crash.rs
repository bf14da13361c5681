//! Crash test: the real `p2psip sos` process is killed with SIGKILL while signed reports are
//! streaming in; after a restart on the same database every acknowledged report is there.

mod support;

use support::{Proc, SOS_UNTHROTTLED, SUBJECTS, kill_mid_stream, sos_tls, sos_trust, start_sos};

use sos::{Algorithm, KeyRegistry, PeerId, ReportSigner, SosClient};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Start `p2psip sos` on a free port; returns the process and its base URL.
fn start(db: &Path, registry: &Path, tls: &Path) -> (Proc, String) {
    let mut extra = vec![
        "--key-registry",
        registry.to_str().expect("a UTF-8 path"),
        "--sync",
        "full",
    ];
    extra.extend(SOS_UNTHROTTLED);
    start_sos(
        "127.0.0.1:0",
        tls,
        db.to_str().expect("a UTF-8 path"),
        &extra,
    )
}

#[derive(Default)]
struct Tally {
    /// (subject, positive?) → acknowledged count
    acked: BTreeMap<(u128, bool), u64>,
    /// (subject, positive?) → sent (acknowledged or not)
    sent: BTreeMap<(u128, bool), u64>,
    /// Every acknowledged (row id, reporter, nonce).
    rows: Vec<(i64, u128, [u8; 16])>,
}

#[test]
fn acknowledged_reports_survive_kill_9() {
    service::crypto::install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sos.db");
    let registry = dir.path().join("registry.json");
    let signers: Vec<Arc<ReportSigner>> = (0..4)
        .map(|i| {
            Arc::new(
                ReportSigner::generate(PeerId(2000 + i), Algorithm::Ed25519)
                    .expect("keygen")
                    .0,
            )
        })
        .collect();
    let entries: Vec<_> = signers.iter().map(|s| s.registry_entry()).collect();
    // CSPs: their reports count fully, so the opinions can be checked against the counts.
    let csps: Vec<_> = signers.iter().map(|s| s.peer()).collect();
    std::fs::write(&registry, KeyRegistry::to_json_with(&entries, &csps)).expect("write registry");

    let tls = sos_tls(&dir.path().join("ea"), &dir.path().join("sos-tls"));
    let trust = sos_trust(&tls);
    let (mut server, url) = start(&db, &registry, &tls);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;

    rt.block_on(async {
        let client = SosClient::new(&url, &trust).expect("client");
        let mut tasks = Vec::new();
        for (w, signer) in signers.iter().enumerate() {
            let (client, signer, tally, acks, stop) = (
                client.clone(),
                Arc::clone(signer),
                Arc::clone(&tally),
                Arc::clone(&acks),
                Arc::clone(&stop),
            );
            tasks.push(tokio::spawn(async move {
                let mut n: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let support::Numbered {
                        report,
                        nonce,
                        subject,
                        positive,
                    } = support::numbered_report(&signer, w, n, now_ms);
                    *tally
                        .lock()
                        .expect("tally lock")
                        .sent
                        .entry((subject, positive))
                        .or_default() += 1;
                    match client.post_report(&report).await {
                        Ok(ack) => {
                            let mut t = tally.lock().expect("tally lock");
                            *t.acked.entry((subject, positive)).or_default() += 1;
                            t.rows.push((ack.id, signer.peer().0, nonce));
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                        // The server is gone: stop streaming.
                        Err(_) => break,
                    }
                }
            }));
        }
        // Let a few hundred reports through, then kill -9 mid-stream.
        kill_mid_stream(
            &mut server,
            (&acks, 300),
            Duration::from_secs(30),
            &stop,
            tasks,
        )
        .await;
    });

    let t = tally.lock().expect("tally lock");
    let acked_total: u64 = t.acked.values().sum();
    let sent_total: u64 = t.sent.values().sum();
    assert!(
        acked_total >= 300,
        "only {acked_total} reports acknowledged before the kill"
    );
    eprintln!("acknowledged {acked_total} of {sent_total} reports before SIGKILL");

    // Every acknowledged row is in the database, byte for byte.
    {
        let conn = rusqlite::Connection::open(&db).expect("open db after crash");
        let mut stmt = conn
            .prepare("SELECT reporter, nonce FROM reports WHERE id = ?1")
            .expect("prepare");
        for (id, reporter, nonce) in &t.rows {
            let (r, n): (String, Vec<u8>) = stmt
                .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap_or_else(|e| panic!("acknowledged report {id} missing: {e}"));
            assert_eq!((r, n), (reporter.to_string(), nonce.to_vec()));
        }
    }

    // Restart on the same database: the opinions reflect every acknowledged report.
    let (mut server, url) = start(&db, &registry, &tls);
    rt.block_on(async {
        let client = SosClient::new(&url, &trust).expect("client");
        for s in SUBJECTS {
            let view = client.get_opinion(PeerId(s)).await.expect("opinion");
            let get = |m: &BTreeMap<(u128, bool), u64>, pos| m.get(&(s, pos)).copied().unwrap_or(0);
            let (pos, neg) = (view.reports.positive, view.reports.negative);
            assert!(
                get(&t.acked, true) <= pos && pos <= get(&t.sent, true),
                "subject {s}: {pos} positive stored, acked {}, sent {}",
                get(&t.acked, true),
                get(&t.sent, true)
            );
            assert!(
                get(&t.acked, false) <= neg && neg <= get(&t.sent, false),
                "subject {s}: {neg} negative stored, acked {}, sent {}",
                get(&t.acked, false),
                get(&t.sent, false)
            );
            // With no ageing, the opinion is exactly the evidence mapping of the counts.
            let k = (pos + neg + 2) as f64;
            assert!((view.opinion.belief() - pos as f64 / k).abs() < 1e-9);
            assert!((view.opinion.disbelief() - neg as f64 / k).abs() < 1e-9);
        }
    });
    server.child.kill().expect("stop the server");
    let _ = server.child.wait();
}
