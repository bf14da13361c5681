//! Referral trust at the real SOS, over HTTPS on 127.0.0.1:0, on SQLite and (when
//! PostgreSQL is installed) on PostgreSQL: the server judges reports with the `trust`
//! crate's rules, the same the simulator runs. A CSP's report is proof; an ordinary peer's
//! is held against that proof and weighed by the reporter's record, so a slanderer cannot
//! make the SOS distrust a peer the CSPs proved honest, and once caught it is not believed
//! about anyone else — also after a restart.

mod support;

use enroll::cert::ServiceRole;
use sos::{
    Algorithm, KeyRegistry, Outcome, PeerId, ReportBody, ReportSigner, RunningServer, ServerConfig,
    SignedReport, SosClient,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use testkit::https::LoopbackHttps;

const T0: u64 = 1_800_000_000_000;
/// A CSP: its reports rest on signed hand-overs.
const CSP: u128 = 1600;
/// An ordinary peer that reports what it saw.
const WITNESS: u128 = 1700;
/// An ordinary peer that forwards but lies about others.
const SLANDERER: u128 = 1666;
/// An ordinary peer nobody could check yet.
const NEWCOMER: u128 = 1900;
/// Proven to forward.
const HONEST: u128 = 1609;
/// Proven to drop.
const DROPPER: u128 = 1617;

struct FixedClock;

impl sos::Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        T0
    }
}

/// The reporters' keys, and a nonce counter shared by every report of a scenario.
struct Reporters {
    signers: Vec<ReportSigner>,
    nonce: AtomicU64,
}

impl Reporters {
    fn new() -> Self {
        let signers = [CSP, WITNESS, SLANDERER, NEWCOMER]
            .into_iter()
            .map(|p| {
                ReportSigner::generate(PeerId(p), Algorithm::Ed25519)
                    .expect("keygen")
                    .0
            })
            .collect();
        Self {
            signers,
            nonce: AtomicU64::new(1),
        }
    }

    /// Only the CSP is marked as infrastructure.
    fn registry(&self) -> KeyRegistry {
        KeyRegistry::from_entries(self.signers.iter().map(|s| s.registry_entry()))
            .expect("registry")
            .with_infrastructure([PeerId(CSP)])
    }

    /// For each `(reporter, subject, outcome, n)`, in order: `n` reports by `reporter` that
    /// `subject` did `outcome`, each acknowledged.
    async fn post(&self, client: &SosClient, batches: &[(u128, u128, Outcome, usize)]) {
        for &(reporter, subject, outcome, n) in batches {
            for _ in 0..n {
                let ack = client
                    .post_report(&self.signed(reporter, subject, outcome))
                    .await
                    .expect("report acknowledged");
                assert_eq!(ack.subject, PeerId(subject));
            }
        }
    }

    /// A report by `reporter` that `subject` did `outcome`, with a fresh nonce.
    fn signed(&self, reporter: u128, subject: u128, outcome: Outcome) -> SignedReport {
        let signer = self
            .signers
            .iter()
            .find(|s| s.peer() == PeerId(reporter))
            .expect("known reporter");
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.nonce.fetch_add(1, Ordering::SeqCst).to_be_bytes());
        let body = ReportBody {
            reporter: PeerId(reporter),
            subject: PeerId(subject),
            outcome,
            route: vec![PeerId(subject)],
            timestamp_ms: T0,
            nonce,
        };
        signer.sign(body).expect("sign")
    }
}

/// Where a scenario's SOS keeps its tables.
#[derive(Clone)]
enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

fn config(backend: &Backend, reporters: &Reporters) -> ServerConfig {
    let (path, pg) = match backend {
        Backend::Sqlite(p) => (p.clone(), None),
        Backend::Postgres(url) => (
            std::path::PathBuf::from("unused.db"),
            Some(service::postgres::PgOptions::new(url)),
        ),
    };
    let mut cfg = ServerConfig::new(path, Arc::new(reporters.registry()));
    cfg.postgres = pg;
    cfg.half_life_ms = None;
    cfg.report_burst = 10_000.0;
    cfg.report_rate_per_sec = 10_000.0;
    cfg.clock = Arc::new(FixedClock);
    cfg
}

async fn start(backend: &Backend, reporters: &Reporters, https: &LoopbackHttps) -> RunningServer {
    support::start_loopback(config(backend, reporters), https).await
}

/// (belief, disbelief) of `peer` at the SOS.
async fn opinion(client: &SosClient, peer: u128) -> (f64, f64) {
    let v = client.get_opinion(PeerId(peer)).await.expect("opinion");
    (v.opinion.belief(), v.opinion.disbelief())
}

/// The CSP proves four times that HONEST forwards, then SLANDERER reports twenty times
/// that HONEST dropped: the SOS's (belief, disbelief) of HONEST after that.
async fn slander_a_proven_forwarder(reporters: &Reporters, client: &SosClient) -> (f64, f64) {
    reporters
        .post(
            client,
            &[
                (CSP, HONEST, Outcome::Delivered, 4),
                (SLANDERER, HONEST, Outcome::Dropped, 20),
            ],
        )
        .await;
    opinion(client, HONEST).await
}

/// The whole scenario against one backend.
async fn scenario(backend: Backend) {
    service::crypto::install_provider();
    let https = testkit::https::loopback(ServiceRole::Sos);
    let reporters = Reporters::new();
    let server = start(&backend, &reporters, &https).await;
    let client = SosClient::new(&server.url(), &https.trust).expect("client");

    // The CSP proves that DROPPER drops (and, below, that HONEST forwards).
    reporters
        .post(&client, &[(CSP, DROPPER, Outcome::Dropped, 4)])
        .await;

    // Twenty reports that HONEST dropped, from a peer without proof, against four proofs
    // that it forwards: counted, they would make the SOS distrust it.
    let (b, d) = slander_a_proven_forwarder(&reporters, &client).await;
    assert!(
        b > d,
        "slander made the SOS distrust a proven forwarder: b {b}, d {d}"
    );
    assert_eq!(d, 0.0, "a report that contradicts the proof does not count");
    let ranked = client
        .rank(vec![vec![PeerId(DROPPER)], vec![PeerId(HONEST)]])
        .await
        .expect("rank")
        .ranked;
    assert_eq!(ranked[0].route, vec![PeerId(HONEST)]);

    // The witness's reports agree with the proof: it earns a voice.
    reporters
        .post(
            &client,
            &[
                (WITNESS, HONEST, Outcome::Delivered, 4),
                (WITNESS, DROPPER, Outcome::Dropped, 4),
            ],
        )
        .await;

    // About peers nothing is proven of, the caught slanderer's word weighs nothing, the
    // witness's counts, and a newcomer nobody could check says nothing yet.
    reporters
        .post(
            &client,
            &[
                (SLANDERER, 1800, Outcome::Dropped, 10),
                (WITNESS, 1801, Outcome::Dropped, 2),
                (NEWCOMER, 1802, Outcome::Dropped, 2),
            ],
        )
        .await;
    let (_, d_slandered) = opinion(&client, 1800).await;
    let (_, d_witnessed) = opinion(&client, 1801).await;
    let (_, d_newcomer) = opinion(&client, 1802).await;
    assert_eq!(
        d_slandered, 0.0,
        "a discredited reporter is discounted to nothing"
    );
    // The witness's referral record: 8 agreeing reports, b = 8/10 = 0.8 per report.
    assert!(
        (d_witnessed - 1.6 / 3.6).abs() < 1e-9,
        "the witness's reports count with its record: d {d_witnessed}"
    );
    assert_eq!(d_newcomer, 0.0);

    // The records are durable: after a restart the slanderer is still discounted and the
    // witness still believed.
    server.shutdown().await.expect("shutdown");
    let server = start(&backend, &reporters, &https).await;
    let client = SosClient::new(&server.url(), &https.trust).expect("client");
    reporters
        .post(
            &client,
            &[
                (SLANDERER, 1803, Outcome::Dropped, 5),
                (WITNESS, 1804, Outcome::Dropped, 1),
            ],
        )
        .await;
    assert_eq!(opinion(&client, 1803).await.1, 0.0);
    assert!((opinion(&client, 1804).await.1 - 0.8 / 2.8).abs() < 1e-9);
    assert!(opinion(&client, HONEST).await.1 == 0.0);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_slanderer_cannot_talk_down_a_proven_peer_and_loses_its_voice_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    scenario(Backend::Sqlite(dir.path().join("sos.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slanderer_cannot_talk_down_a_proven_peer_and_loses_its_voice_postgres() {
    let Some(pg) = testkit::postgres::Cluster::start("sos referral on PostgreSQL") else {
        return;
    };
    scenario(Backend::Postgres(pg.url())).await;
}

/// The older rule stays available: with checks off every report counts fully.
#[tokio::test]
async fn with_checks_off_every_report_counts() {
    let run = SqliteRun::start(|cfg| cfg.check_reports = false).await;
    let (b, d) = slander_a_proven_forwarder(&run.reporters, &run.client).await;
    assert!((b - 4.0 / 26.0).abs() < 1e-9 && (d - 20.0 / 26.0).abs() < 1e-9);
    run.server.shutdown().await.expect("shutdown");
}

/// A server on a SQLite file in a scratch folder, its reporters and a client.
struct SqliteRun {
    _dir: tempfile::TempDir,
    reporters: Reporters,
    server: RunningServer,
    client: SosClient,
}

impl SqliteRun {
    /// Start the server with the test configuration, changed by `tune`.
    async fn start(tune: impl FnOnce(&mut ServerConfig)) -> Self {
        service::crypto::install_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let https = testkit::https::loopback(ServiceRole::Sos);
        let reporters = Reporters::new();
        let mut cfg = config(&Backend::Sqlite(dir.path().join("sos.db")), &reporters);
        tune(&mut cfg);
        let server = support::start_loopback(cfg, &https).await;
        let client = SosClient::new(&server.url(), &https.trust).expect("client");
        SqliteRun {
            _dir: dir,
            reporters,
            server,
            client,
        }
    }
}

/// A CSP reports on every hop of every call it multicasts: its reports have a budget of
/// their own, so a busy CSP is not refused at an ordinary peer's rate, and an ordinary
/// peer is still held to its own.
#[tokio::test]
async fn a_csp_reports_within_its_own_budget_and_an_ordinary_peer_within_its() {
    // The clock stands still: nothing refills.
    let run = SqliteRun::start(|cfg| {
        (cfg.report_burst, cfg.report_rate_per_sec) = (3.0, 1.0);
        (
            cfg.infrastructure_report_burst,
            cfg.infrastructure_report_rate_per_sec,
        ) = (30.0, 1.0);
    })
    .await;
    let (reporters, client) = (&run.reporters, &run.client);
    for (reporter, budget) in [(CSP, 30), (WITNESS, 3)] {
        for _ in 0..budget {
            let report = reporters.signed(reporter, HONEST, Outcome::Delivered);
            client
                .post_report(&report)
                .await
                .expect("within the budget");
        }
        let over = reporters.signed(reporter, HONEST, Outcome::Delivered);
        let err = client
            .post_report(&over)
            .await
            .expect_err("over the budget");
        assert_eq!(err.code(), Some("rate_limited"), "reporter {reporter}");
    }
    run.server.shutdown().await.expect("shutdown");
}

/// A registry file marks its CSPs and CSPGs under `infrastructure`, and reads back.
#[test]
fn the_registry_file_names_its_infrastructure() {
    let reporters = Reporters::new();
    let entries: Vec<_> = reporters
        .signers
        .iter()
        .map(|s| s.registry_entry())
        .collect();
    let json = KeyRegistry::to_json_with(&entries, &[PeerId(CSP)]);
    let reg = KeyRegistry::from_json(json.as_bytes()).expect("parse");
    assert_eq!(reg.infrastructure(), vec![PeerId(CSP)]);
    use sos::ReporterVerifier;
    assert!(reg.holds_proof(PeerId(CSP)));
    assert!(!reg.holds_proof(PeerId(WITNESS)));
    // An unregistered peer holds no proof even if marked.
    let reg = KeyRegistry::default().with_infrastructure([PeerId(CSP)]);
    assert!(!reg.holds_proof(PeerId(CSP)));
    // A file without the field (every older registry) marks nobody.
    let plain = KeyRegistry::from_json(KeyRegistry::to_json(&entries).as_bytes()).expect("parse");
    assert!(plain.infrastructure().is_empty());
}
