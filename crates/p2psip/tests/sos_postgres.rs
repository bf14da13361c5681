//! Several `p2psip sos` processes on one throwaway PostgreSQL cluster under a stream of
//! signed reports: one instance killed with SIGKILL, or PostgreSQL itself crashed and
//! restarted, mid-stream. Every acknowledged report must be in the database, the evidence
//! must count exactly the stored reports (no instance's update lost to another's), the
//! clients must fail over to the surviving instances, and every instance must rank from
//! the same evidence once its reload interval has passed.
//!
//! Skipped loudly without PostgreSQL (`initdb`, `pg_ctl`); under `CI=true` a missing
//! PostgreSQL fails instead (`scripts/test` installs it).
#![allow(clippy::unwrap_used)] // a failure is a test failure

mod support;

use service::tls::Trust;
use support::{Proc, SOS_UNTHROTTLED, SUBJECTS, sos_tls, sos_trust, start_sos};

use sos::{Algorithm, ClientError, KeyRegistry, PeerId, ReportSigner, SosClient};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::postgres::Cluster;

const REPORTERS: u128 = 6;

/// Start `p2psip sos` on a free port against `db`; returns the process and its base URL.
fn start(db: &str, registry: &Path, tls: &Path) -> (Proc, String) {
    let mut extra = vec!["--key-registry", registry.to_str().unwrap()];
    extra.extend(SOS_UNTHROTTLED);
    start_sos("127.0.0.1:0", tls, db, &extra)
}

/// What both tests start from: SOS instances (dropped, so stopped, before the database) on
/// a throwaway PostgreSQL cluster, the reporters (their registry and the SOS's TLS
/// certificate live in the directory), and the trust in the SOS.
struct Setup {
    procs: Vec<Proc>,
    urls: Vec<String>,
    pg: Cluster,
    _dir: tempfile::TempDir,
    signers: Vec<Arc<ReportSigner>>,
    trust: Trust,
}

impl Setup {
    /// The reporters streaming through one client that knows every instance, once the
    /// first 300 reports are acknowledged.
    async fn streaming(&self) -> Stream {
        let client = SosClient::new(&self.urls.join(","), &self.trust).unwrap();
        assert_eq!(client.instances(), self.urls.len());
        let s = stream(&client, &self.signers);
        s.until(300, Duration::from_secs(60)).await;
        s
    }

    /// Check the database against `acked`, and that the instances at `urls` answer its
    /// counts; returns the counts.
    fn check(
        &self,
        rt: &tokio::runtime::Runtime,
        acked: &Acked,
        urls: &[String],
    ) -> BTreeMap<u128, (u64, u64)> {
        let counts = check_database(&self.pg.url(), acked);
        rt.block_on(instances_agree(urls, &counts, &self.trust));
        counts
    }
}

/// `instances` SOS processes on a new PostgreSQL cluster; `None` (a loud skip) without
/// PostgreSQL.
fn setup(test: &str, instances: usize) -> Option<Setup> {
    let pg = Cluster::start(test)?;
    service::crypto::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let (signers, registry) = signers(dir.path());
    let tls = sos_tls(&dir.path().join("ea"), &dir.path().join("sos-tls"));
    let trust = sos_trust(&tls);
    let (procs, urls) = (0..instances)
        .map(|_| start(&pg.url(), &registry, &tls))
        .unzip();
    Some(Setup {
        procs,
        urls,
        pg,
        _dir: dir,
        signers,
        trust,
    })
}

/// Every report a stream had acknowledged: (reporter, nonce) → stored row id (`None` when
/// the acknowledgement was a `409 replayed_nonce` on a retry: stored by a lost attempt).
type Acked = BTreeMap<(u128, [u8; 16]), Option<i64>>;

struct Stream {
    acked: Arc<Mutex<Acked>>,
    count: Arc<AtomicU64>,
    failovers: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One task per reporter, each sending signed reports through `client` one after the
/// other, resending the same report after a failure the way a peer does.
fn stream(client: &SosClient, signers: &[Arc<ReportSigner>]) -> Stream {
    let s = Stream {
        acked: Arc::default(),
        count: Arc::default(),
        failovers: Arc::default(),
        stop: Arc::default(),
        tasks: Vec::new(),
    };
    let now_ms = service::time::unix_ms();
    let mut tasks = Vec::new();
    for (w, signer) in signers.iter().enumerate() {
        let (client, signer) = (client.clone(), Arc::clone(signer));
        let (acked, count, failovers, stop) = (
            Arc::clone(&s.acked),
            Arc::clone(&s.count),
            Arc::clone(&s.failovers),
            Arc::clone(&s.stop),
        );
        tasks.push(tokio::spawn(async move {
            let mut n: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let support::Numbered { report, nonce, .. } =
                    support::numbered_report(&signer, w, n, now_ms);
                let started = Instant::now();
                let mut tries = 0;
                let id = loop {
                    tries += 1;
                    match client.post_report(&report).await {
                        Ok(ack) => break Some(ack.id),
                        Err(ClientError::Server { status: 409, body })
                            if tries > 1 && body.error == "replayed_nonce" =>
                        {
                            break None;
                        }
                        Err(e) => {
                            assert!(
                                started.elapsed() < Duration::from_secs(60),
                                "report {n} of {} not stored within 60 s: {e}",
                                signer.peer()
                            );
                            failovers.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                };
                acked.lock().unwrap().insert((signer.peer().0, nonce), id);
                count.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    Stream { tasks, ..s }
}

impl Stream {
    async fn until(&self, acked: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count.load(Ordering::SeqCst) < acked {
            assert!(
                Instant::now() < deadline,
                "only {} reports acknowledged within {within:?}",
                self.count.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Acked {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.acked)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

fn signers(dir: &Path) -> (Vec<Arc<ReportSigner>>, std::path::PathBuf) {
    let signers: Vec<Arc<ReportSigner>> = (0..REPORTERS)
        .map(|i| {
            Arc::new(
                ReportSigner::generate(PeerId(2000 + i), Algorithm::Ed25519)
                    .unwrap()
                    .0,
            )
        })
        .collect();
    let entries: Vec<_> = signers.iter().map(|s| s.registry_entry()).collect();
    let registry = dir.join("registry.json");
    std::fs::write(&registry, KeyRegistry::to_json(&entries)).unwrap();
    (signers, registry)
}

/// Every acknowledged report is stored under its acknowledged id; each subject's evidence
/// (summed over the instances' shards) counts exactly its stored reports. Returns (positive, negative) per subject.
fn check_database(url: &str, acked: &Acked) -> BTreeMap<u128, (u64, u64)> {
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let stored: BTreeMap<(u128, Vec<u8>), i64> = db
        .query("SELECT reporter, nonce, id FROM reports", &[])
        .unwrap()
        .into_iter()
        .map(|r| {
            let reporter: String = r.get(0);
            ((reporter.parse().unwrap(), r.get(1)), r.get(2))
        })
        .collect();
    for ((reporter, nonce), id) in acked {
        let row = stored.get(&(*reporter, nonce.to_vec()));
        let Some(row) = row else {
            panic!("acknowledged report of {reporter} (nonce {nonce:?}) is not stored");
        };
        if let Some(id) = id {
            assert_eq!(row, id, "report of {reporter} stored under another id");
        }
    }
    let mut counts = BTreeMap::new();
    for r in db
        .query(
            "SELECT subject, count(*) FILTER (WHERE outcome = 'delivered'),
                    count(*) FILTER (WHERE outcome <> 'delivered')
             FROM reports GROUP BY subject",
            &[],
        )
        .unwrap()
    {
        let subject: String = r.get(0);
        let (p, n): (i64, i64) = (r.get(1), r.get(2));
        counts.insert(subject.parse::<u128>().unwrap(), (p as u64, n as u64));
    }
    for r in db
        .query(
            "SELECT peer, sum(positive)::bigint, sum(negative)::bigint FROM evidence
             GROUP BY peer",
            &[],
        )
        .unwrap()
    {
        let peer: String = r.get(0);
        let (p, n): (i64, i64) = (r.get(1), r.get(2));
        let want = counts
            .get(&peer.parse::<u128>().unwrap())
            .copied()
            .unwrap_or((0, 0));
        assert_eq!(
            (p as u64, n as u64),
            want,
            "evidence of {peer} does not count its stored reports"
        );
    }
    counts
}

/// Every instance answers the counts in the database once its reload has run.
async fn instances_agree(urls: &[String], counts: &BTreeMap<u128, (u64, u64)>, trust: &Trust) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for url in urls {
        let client = SosClient::new(url, trust).unwrap();
        for s in SUBJECTS {
            let want = counts.get(&s).copied().unwrap_or((0, 0));
            loop {
                let v = client.get_opinion(PeerId(s)).await.unwrap();
                if (v.reports.positive, v.reports.negative) == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{url}: subject {s} has {:?}, the database {want:?}",
                    v.reports
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn three_instances_lose_nothing_acknowledged_when_one_is_killed() {
    let Some(mut setup) = setup(
        "three_instances_lose_nothing_acknowledged_when_one_is_killed",
        3,
    ) else {
        return;
    };
    let rt = runtime();
    let acked = rt.block_on(async {
        let s = setup.streaming().await;
        // The first instance is the one the clients are talking to: SIGKILL it.
        let victim = &mut setup.procs[0];
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
        let at_kill = s.count.load(Ordering::SeqCst);
        s.until(at_kill + 300, Duration::from_secs(60)).await;
        let failovers = s.failovers.load(Ordering::SeqCst);
        let acked = s.finish().await;
        eprintln!(
            "{} reports acknowledged, {at_kill} before the kill; {failovers} retried",
            acked.len()
        );
        acked
    });
    let counts = setup.check(&rt, &acked, &setup.urls[1..]);
    let total: u64 = counts.values().map(|(p, n)| p + n).sum();
    assert!(total >= acked.len() as u64);
}

/// The status of `GET /readyz` at the SOS on `url`.
async fn readyz(url: &str, trust: &Trust) -> u16 {
    service::http::client_trusting(Duration::from_secs(5), trust)
        .unwrap()
        .get(format!("{url}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_postgres_restart_mid_stream_loses_nothing_acknowledged() {
    let Some(setup) = setup(
        "a_postgres_restart_mid_stream_loses_nothing_acknowledged",
        2,
    ) else {
        return;
    };
    let urls = &setup.urls;
    let rt = runtime();
    let acked = rt.block_on(async {
        let s = setup.streaming().await;
        setup.pg.stop_immediate().unwrap();
        let at_crash = s.count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let during = s.count.load(Ordering::SeqCst) - at_crash;
        assert!(
            during <= REPORTERS as u64,
            "{during} reports acknowledged while PostgreSQL was down"
        );
        // Not ready while the database is gone (a reload fails within its 500 ms)…
        assert_eq!(readyz(&urls[0], &setup.trust).await, 503);
        setup.pg.start_again().unwrap();
        s.until(at_crash + 300, Duration::from_secs(60)).await;
        // … and ready again once it is back.
        let t0 = std::time::Instant::now();
        while readyz(&urls[0], &setup.trust).await != 200 {
            assert!(t0.elapsed() < Duration::from_secs(20), "not ready again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let acked = s.finish().await;
        eprintln!(
            "{} reports acknowledged, {at_crash} before PostgreSQL crashed",
            acked.len()
        );
        acked
    });
    setup.check(&rt, &acked, urls);
}
