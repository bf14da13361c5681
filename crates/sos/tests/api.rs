//! The SOS over real HTTP on 127.0.0.1:0: the paper check, evidence, admin override, and
//! bad input (every refusal is a 4xx with a JSON body and leaves the database unchanged).

mod support;

use enroll::cert::ServiceRole;
use service::tls::Trust;
use sos::{
    Algorithm, KeyRegistry, Outcome, PeerId, ReportBody, ReportSigner, RunningServer, ServerConfig,
    SignedReport, SosClient,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use testkit::https::LoopbackHttps;
use trust::Opinion;

const TOKEN: &str = "s3cret-admin-token";
const T0: u64 = 1_800_000_000_000;

struct ManualClock(AtomicU64);

impl sos::Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    server: RunningServer,
    signers: Vec<ReportSigner>,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    /// The server's HTTPS and what its clients trust.
    https: LoopbackHttps,
    trust: Trust,
}

fn signers() -> Vec<ReportSigner> {
    vec![
        ReportSigner::generate(PeerId(1618), Algorithm::Ed25519)
            .expect("keygen")
            .0,
        ReportSigner::generate(PeerId(1536), Algorithm::EcdsaP256Sha256)
            .expect("keygen")
            .0,
    ]
}

fn config(db: &Path, signers: &[ReportSigner], clock: Arc<ManualClock>) -> ServerConfig {
    // Both reporters are CSPs: their reports are proof and count fully, within a CSP's
    // report budget (small here, to reach it).
    let registry = KeyRegistry::from_entries(signers.iter().map(|s| s.registry_entry()))
        .expect("registry")
        .with_infrastructure(signers.iter().map(|s| s.peer()));
    let mut cfg = ServerConfig::new(db, Arc::new(registry));
    cfg.admin_token = Some(TOKEN.into());
    cfg.half_life_ms = None;
    (
        cfg.infrastructure_report_burst,
        cfg.infrastructure_report_rate_per_sec,
    ) = (5.0, 1.0);
    cfg.max_body_bytes = 16 * 1024;
    cfg.clock = clock;
    cfg
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// The fixture with `tune` applied to the server's configuration.
async fn fixture_with(tune: impl FnOnce(&mut ServerConfig)) -> Fixture {
    service::crypto::install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sos.db");
    let signers = signers();
    let clock = Arc::new(ManualClock(AtomicU64::new(T0)));
    let mut cfg = config(&db, &signers, Arc::clone(&clock));
    tune(&mut cfg);
    let https = testkit::https::loopback(ServiceRole::Sos);
    let server = support::start_loopback(cfg, &https).await;
    let trust = https.trust.clone();
    Fixture {
        _dir: dir,
        db,
        server,
        signers,
        clock,
        http: service::http::client_trusting(std::time::Duration::from_secs(10), &trust)
            .expect("client"),
        https,
        trust,
    }
}

fn body(reporter: u128, subject: u128, outcome: Outcome, nonce: u8) -> ReportBody {
    ReportBody {
        reporter: PeerId(reporter),
        subject: PeerId(subject),
        outcome,
        route: vec![PeerId(1593), PeerId(subject), PeerId(1618)],
        timestamp_ms: T0,
        nonce: [nonce; 16],
    }
}

/// Everything in the database, as text, to compare before and after refused requests.
fn dump(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut out = String::new();
    for q in [
        "SELECT peer||':'||b||','||d||','||u||','||a FROM admin_opinions ORDER BY peer",
        "SELECT peer||':'||r||','||s||','||positive||','||negative FROM evidence ORDER BY peer",
        "SELECT id||':'||reporter||','||subject||','||outcome||','||hex(nonce) FROM reports ORDER BY id",
    ] {
        let mut stmt = conn.prepare(q).expect("query");
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).expect("rows");
        for r in rows {
            out.push_str(&r.expect("row"));
            out.push('\n');
        }
    }
    out
}

/// (method, path, admin token, body, expected status, expected error code)
type Case<'a> = (&'a str, String, Option<&'a str>, String, u16, &'a str);

fn close(x: f64, y: f64) -> bool {
    (x - y).abs() < 1e-9
}

#[tokio::test]
async fn paper_check_over_http() {
    let f = fixture().await;
    let admin = SosClient::new(&f.server.url(), &f.trust)
        .expect("client")
        .with_admin_token(TOKEN);
    let health = admin.health().await.expect("health");
    assert_eq!((health.status.as_str(), health.peers), ("ok", 0));
    for &(peer, b, d, u) in &trust::paper::OPINIONS {
        let op = Opinion::new(b, d, u, trust::paper::BASE_RATE).expect("valid");
        let view = admin.put_opinion(PeerId(peer), op).await.expect("put");
        assert_eq!(view.source, sos::OpinionSource::Admin);
    }
    let routes = trust::paper::routes()
        .into_iter()
        .map(|r| r.into_iter().map(PeerId).collect())
        .collect();
    let ranked = admin.rank(routes).await.expect("rank").ranked;
    assert_eq!(ranked[0].route, vec![PeerId(1600), PeerId(1618)]);
    let o = ranked[0].opinion;
    assert!(
        close(o.belief(), 0.738) && close(o.disbelief(), 0.041) && close(o.uncertainty(), 0.221)
    );
    assert!(close(ranked[0].expectation, 0.79325));
    let o = ranked[1].opinion;
    assert!(close(o.belief(), 0.6624) && close(o.disbelief(), 0.0368));
    assert!(close(o.uncertainty(), 0.3008) && close(ranked[1].expectation, 0.7376));

    // The raw JSON shape from the issue.
    let resp = f
        .http
        .post(format!("{}/v1/routes/rank", f.server.url()))
        .body(r#"{"routes":[["1593","1609","1618"],["1600","1618"]]}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["ranked"][0]["route"], serde_json::json!(["1600", "1618"]));

    // Clearing the override falls back to the (empty) evidence: the default opinion.
    let view = admin.delete_opinion(PeerId(1600)).await.expect("delete");
    assert_eq!(view.source, sos::OpinionSource::Default);
    assert!(close(view.expectation, 0.25));
    let err = admin
        .delete_opinion(PeerId(1600))
        .await
        .expect_err("nothing to delete");
    assert_eq!(err.code(), Some("no_admin_opinion"));
    f.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn reports_become_evidence_and_survive_restart() {
    let f = fixture().await;
    let client = SosClient::new(&f.server.url(), &f.trust).expect("client");
    let mut nonce = 0u8;
    for (i, outcome) in [Outcome::Delivered, Outcome::Delivered, Outcome::Dropped]
        .into_iter()
        .enumerate()
    {
        nonce += 1;
        let signer = &f.signers[i % 2];
        let r = signer
            .sign(body(signer.peer().0, 1609, outcome, nonce))
            .expect("sign");
        let ack = client.post_report(&r).await.expect("accepted");
        assert_eq!(ack.subject, PeerId(1609));
    }
    let view = client.get_opinion(PeerId(1609)).await.expect("get");
    assert_eq!(view.source, sos::OpinionSource::Evidence);
    assert_eq!((view.reports.positive, view.reports.negative), (2, 1));
    // r = 2, s = 1: b = 2/5, d = 1/5, u = 2/5.
    assert!(close(view.opinion.belief(), 0.4) && close(view.opinion.uncertainty(), 0.4));

    // Ranking uses evidence; the unknown peer 7 is vacuous (E = a).
    let ranked = client
        .rank(vec![vec![PeerId(7)], vec![PeerId(1609)]])
        .await
        .expect("rank")
        .ranked;
    assert_eq!(ranked[0].route, vec![PeerId(1609)]);
    assert!(close(ranked[1].expectation, 0.25));

    let metrics = client.metrics().await.expect("metrics");
    for line in [
        r#"p2psip_sos_reports_total{outcome="accepted"} 3"#,
        r#"p2psip_sos_evidence_total{outcome="delivered"} 2"#,
        r#"p2psip_sos_evidence_total{outcome="dropped"} 1"#,
        r#"p2psip_sos_rankings_total{outcome="ok"} 1"#,
        r#"p2psip_sos_request_duration_seconds_count{method="POST",path="/v1/routes/rank"} 1"#,
        r#"p2psip_sos_requests_total{method="POST",path="/v1/reports",code="200"} 3"#,
        "p2psip_sos_peers 1",
        "p2psip_sos_store_reachable 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    assert_eq!(
        f.http
            .get(format!("{}/readyz", f.server.url()))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );

    // Restart on the same database: evidence is back, and the old nonce is still refused.
    let replay = f.signers[0]
        .sign(body(1618, 1609, Outcome::Delivered, 1))
        .expect("sign");
    let Fixture {
        _dir,
        db,
        server,
        signers,
        clock,
        https,
        trust,
        ..
    } = f;
    server.shutdown().await.expect("shutdown");
    let server = support::start_loopback(config(&db, &signers, clock), &https).await;
    let client = SosClient::new(&server.url(), &trust).expect("client");
    let view = client.get_opinion(PeerId(1609)).await.expect("get");
    assert_eq!((view.reports.positive, view.reports.negative), (2, 1));
    let err = client.post_report(&replay).await.expect_err("replay");
    assert_eq!(err.code(), Some("replayed_nonce"));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn evidence_ages_and_admin_overrides() {
    let f = fixture_with(|cfg| cfg.half_life_ms = Some(60_000)).await;
    let client = SosClient::new(&f.server.url(), &f.trust)
        .expect("client")
        .with_admin_token(TOKEN);
    for n in 0..4 {
        let r = f.signers[0]
            .sign(body(1618, 1609, Outcome::Delivered, n))
            .expect("sign");
        client.post_report(&r).await.expect("accepted");
    }
    let fresh = client.get_opinion(PeerId(1609)).await.expect("get");
    assert!(close(fresh.opinion.belief(), 4.0 / 6.0));
    f.clock.0.fetch_add(60_000, Ordering::SeqCst);
    let aged = client.get_opinion(PeerId(1609)).await.expect("get");
    assert!(close(aged.opinion.belief(), 2.0 / 4.0), "{aged:?}");

    let set = Opinion::new(0.1, 0.8, 0.1, 0.5).expect("valid");
    let view = client.put_opinion(PeerId(1609), set).await.expect("put");
    assert_eq!(view.opinion, set);
    // Evidence keeps counting underneath the override.
    let r = f.signers[0]
        .sign(ReportBody {
            timestamp_ms: T0 + 60_000,
            ..body(1618, 1609, Outcome::Delivered, 99)
        })
        .expect("sign");
    client.post_report(&r).await.expect("accepted");
    let view = client.get_opinion(PeerId(1609)).await.expect("get");
    assert_eq!(view.opinion, set);
    assert_eq!(view.reports.positive, 5);
    let view = client.delete_opinion(PeerId(1609)).await.expect("delete");
    assert_eq!(view.source, sos::OpinionSource::Evidence);
    f.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_input_is_4xx_json_and_changes_nothing() {
    let f = fixture().await;
    let url = f.server.url();
    let client = SosClient::new(&url, &f.trust).expect("client");
    // Some state to protect.
    let good = f.signers[0]
        .sign(body(1618, 1609, Outcome::Delivered, 1))
        .expect("sign");
    client.post_report(&good).await.expect("accepted");
    let admin = client.clone().with_admin_token(TOKEN);
    admin
        .put_opinion(
            PeerId(1593),
            Opinion::new(0.8, 0.1, 0.1, 0.25).expect("valid"),
        )
        .await
        .expect("put");
    let before = dump(&f.db);
    assert_eq!(before.lines().count(), 3, "{before}");

    let valid_report = |tweak: &dyn Fn(&mut SignedReport)| {
        let mut r = f.signers[0]
            .sign(body(1618, 1609, Outcome::Dropped, 50))
            .expect("sign");
        tweak(&mut r);
        r.to_json()
    };
    let resigned = |b: ReportBody| f.signers[0].sign(b).expect("sign").to_json();
    let huge = format!(r#"{{"routes":[[{}"1"]]}}"#, "\"1\",".repeat(20_000));

    // (method, path, token, body, expected status, expected error code)
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/v1/reports".into(),
            None,
            "{not json".into(),
            400,
            "invalid_report",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            r#"{"reporter":1618}"#.into(),
            400,
            "invalid_report",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            valid_report(&|r| r.signature[0] ^= 1),
            403,
            "bad_signature",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            valid_report(&|r| r.body.outcome = Outcome::Delivered),
            403,
            "bad_signature",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            valid_report(&|r| r.body.reporter = PeerId(4)),
            403,
            "unknown_reporter",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            good.to_json(),
            409,
            "replayed_nonce",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            resigned(ReportBody {
                timestamp_ms: T0 - 3_600_000,
                ..body(1618, 1609, Outcome::Dropped, 60)
            }),
            400,
            "timestamp_outside_window",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            resigned(body(1618, 1618, Outcome::Dropped, 61)),
            400,
            "invalid_report",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            valid_report(&|_| {}).replace('}', r#","extra":1}"#),
            400,
            "invalid_report",
        ),
        (
            "POST",
            "/v1/reports".into(),
            None,
            "x".repeat(20_000),
            413,
            "body_too_large",
        ),
        (
            "PUT",
            "/v1/opinions/1609".into(),
            None,
            r#"{"b":1,"d":0,"u":0,"a":0.5}"#.into(),
            401,
            "missing_token",
        ),
        (
            "PUT",
            "/v1/opinions/1609".into(),
            Some("wrong"),
            r#"{"b":1,"d":0,"u":0,"a":0.5}"#.into(),
            403,
            "bad_token",
        ),
        (
            "PUT",
            "/v1/opinions/1609".into(),
            Some(TOKEN),
            r#"{"b":0.82,"d":0.08,"u":0.08,"a":0.25}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "PUT",
            "/v1/opinions/1609".into(),
            Some(TOKEN),
            r#"{"b":1.5,"d":-0.5,"u":0,"a":0.25}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "PUT",
            "/v1/opinions/1609".into(),
            Some(TOKEN),
            r#"{"b":"0.8","d":0.1,"u":0.1,"a":0.25}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "PUT",
            "/v1/opinions/1609".into(),
            Some(TOKEN),
            r#"{"b":0.8,"d":0.1,"u":0.1,"a":0.25,"c":1}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "PUT",
            "/v1/opinions/1609".into(),
            Some(TOKEN),
            r#"{"b":0.8,"#.into(),
            400,
            "malformed_json",
        ),
        (
            "PUT",
            "/v1/opinions/-5".into(),
            Some(TOKEN),
            r#"{"b":1,"d":0,"u":0,"a":0.5}"#.into(),
            400,
            "bad_peer_id",
        ),
        (
            "PUT",
            "/v1/opinions/340282366920938463463374607431768211456".into(),
            Some(TOKEN),
            r#"{"b":1,"d":0,"u":0,"a":0.5}"#.into(),
            400,
            "bad_peer_id",
        ),
        (
            "DELETE",
            "/v1/opinions/1593".into(),
            None,
            String::new(),
            401,
            "missing_token",
        ),
        (
            "DELETE",
            "/v1/opinions/1593".into(),
            Some("nope"),
            String::new(),
            403,
            "bad_token",
        ),
        (
            "GET",
            "/v1/opinions/abc".into(),
            None,
            String::new(),
            400,
            "bad_peer_id",
        ),
        (
            "POST",
            "/v1/routes/rank".into(),
            None,
            r#"{"routes":[]}"#.into(),
            400,
            "no_routes",
        ),
        (
            "POST",
            "/v1/routes/rank".into(),
            None,
            r#"{"routes":[[]]}"#.into(),
            400,
            "empty_route",
        ),
        (
            "POST",
            "/v1/routes/rank".into(),
            None,
            r#"{"routes":[[1593]]}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/routes/rank".into(),
            None,
            r#"{"routes":[["1"]],"x":1}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/routes/rank".into(),
            None,
            r#"{"routes":[["1"]],"discounting":"magic"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/routes/rank".into(),
            None,
            format!(r#"{{"routes":[[{}"1"]]}}"#, "\"1\",".repeat(40)),
            400,
            "route_too_long",
        ),
        (
            "POST",
            "/v1/routes/rank".into(),
            None,
            huge,
            413,
            "body_too_large",
        ),
        (
            "GET",
            "/v1/nothing".into(),
            None,
            String::new(),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/opinions/1".into(),
            None,
            String::new(),
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, token, body, status, code) in cases {
        let mut rb = f
            .http
            .request(method.parse().expect("method"), format!("{url}{path}"))
            .body(body.clone());
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.expect("send");
        let got = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert_eq!(got, status, "{method} {path} {body:.80}: {text}");
        let err: sos::ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not a JSON error body ({e}): {text}"));
        assert_eq!(err.error, code, "{method} {path}: {text}");
        assert_eq!(dump(&f.db), before, "{method} {path} changed the database");
    }

    // Rate limit: burst 5 (one used above, plus one replay which also costs a token).
    let mut limited = false;
    for n in 100..110 {
        let r = f.signers[1]
            .sign(body(1536, 1609, Outcome::Delivered, n))
            .expect("sign");
        match client.post_report(&r).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Some("rate_limited"));
                limited = true;
                break;
            }
        }
    }
    assert!(limited, "rate limit never triggered");
    f.clock.0.fetch_add(10_000, Ordering::SeqCst);
    let metrics = client.metrics().await.expect("metrics");
    assert!(
        metrics.contains(r#"p2psip_sos_reports_total{outcome="bad_signature"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"p2psip_sos_reports_total{outcome="replay"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"p2psip_sos_reports_total{outcome="rate_limited"} 1"#),
        "{metrics}"
    );
    f.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn peer_table_and_nonce_store_are_bounded() {
    let f = fixture_with(|cfg| {
        cfg.max_peers = 2;
        cfg.infrastructure_report_burst = 100.0;
        cfg.timestamp_window_ms = 1_000;
    })
    .await;
    let client = SosClient::new(&f.server.url(), &f.trust).expect("client");
    let s = &f.signers[0];
    for (n, subject) in [(1u8, 1609u128), (2, 1600)] {
        let r = s
            .sign(body(1618, subject, Outcome::Delivered, n))
            .expect("sign");
        client.post_report(&r).await.expect("accepted");
    }
    let before = dump(&f.db);
    let r = s
        .sign(body(1618, 1593, Outcome::Delivered, 3))
        .expect("sign");
    let err = client.post_report(&r).await.expect_err("table full");
    assert_eq!(err.code(), Some("peer_table_full"));
    assert_eq!(dump(&f.db), before);
    // Known peers still take evidence.
    let r = s.sign(body(1618, 1609, Outcome::Dropped, 4)).expect("sign");
    client.post_report(&r).await.expect("accepted");
    assert_eq!(sos::count_reports(&f.db).expect("count"), 3);

    // Stored reports (the nonce store) are pruned once older than twice the window plus a
    // minute; an old nonce is then refused by the timestamp window instead.
    f.clock
        .0
        .fetch_add(2 * 1_000 + 60_000 + 1, Ordering::SeqCst);
    let now = f.clock.0.load(Ordering::SeqCst);
    let r = s
        .sign(ReportBody {
            timestamp_ms: now,
            ..body(1618, 1609, Outcome::Delivered, 5)
        })
        .expect("sign");
    client.post_report(&r).await.expect("accepted");
    assert_eq!(
        sos::count_reports(&f.db).expect("count"),
        1,
        "old rows pruned"
    );
    let old = s
        .sign(body(1618, 1609, Outcome::Delivered, 1))
        .expect("sign");
    let err = client.post_report(&old).await.expect_err("stale");
    assert_eq!(err.code(), Some("timestamp_outside_window"));
    // Evidence is kept in the aggregate, not in the pruned rows.
    let view = client.get_opinion(PeerId(1609)).await.expect("get");
    assert_eq!((view.reports.positive, view.reports.negative), (2, 1));
    f.server.shutdown().await.expect("shutdown");
}

/// A base URL list fails over: a refused connection sends reads and writes on to the next
/// instance in the same call, and the instance that answered is asked first afterwards.
#[tokio::test]
async fn a_client_with_a_url_list_fails_over_to_a_live_instance() {
    let f = fixture().await;
    // A port nothing listens on (bound, then released).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("https://{}", l.local_addr().expect("addr"))
    };
    let client = SosClient::new(&format!("{dead}, {}", f.server.url()), &f.trust).expect("client");
    assert_eq!(client.instances(), 2);
    let ranked = client
        .rank(vec![vec![PeerId(1593), PeerId(1618)]])
        .await
        .expect("rank fails over");
    assert_eq!(ranked.ranked.len(), 1);
    let report = f.signers[0]
        .sign(body(1618, 1609, Outcome::Delivered, 42))
        .expect("sign");
    let ack = client
        .post_report(&report)
        .await
        .expect("report fails over");
    assert_eq!(ack.reports.positive, 1);
    // Now the live instance is asked first: a replay is its answer, not a failover.
    let err = client.post_report(&report).await.expect_err("replay");
    assert_eq!(err.code(), Some("replayed_nonce"));
    assert!(matches!(
        SosClient::new(" , ", &f.trust),
        Err(sos::ClientError::NoUrl)
    ));
}

/// A request held in flight (its body still arriving) takes the only slot: the next is
/// answered 503 `overloaded`, and the metrics count that answer by its route.
#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_refused_and_counted() {
    use tokio::io::AsyncWriteExt;
    let f = fixture_with(|c| c.max_in_flight = 1).await;
    let tcp = tokio::net::TcpStream::connect(f.server.addr)
        .await
        .expect("connect");
    let tls = f.trust.client_config().expect("client TLS");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut slow = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS");
    slow.write_all(
        b"POST /v1/routes/rank HTTP/1.1\r\nHost: sos\r\nContent-Length: 100\r\n\r\n{\"routes\"",
    )
    .await
    .expect("write");
    let url = format!("{}/v1/routes/rank", f.server.url());
    let t0 = std::time::Instant::now();
    loop {
        let resp = f
            .http
            .post(&url)
            .body(r#"{"routes":[["1"]]}"#)
            .send()
            .await
            .expect("send");
        if resp.status() == 503 {
            let e: sos::ErrorBody = resp.json().await.expect("json");
            assert_eq!(e.error, "overloaded");
            break;
        }
        // The held request may not have reached its handler yet.
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "never refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(slow);
    // The slot is free again once the held connection is gone.
    let t0 = std::time::Instant::now();
    let metrics = loop {
        match SosClient::new(&f.server.url(), &f.trust)
            .expect("client")
            .metrics()
            .await
        {
            Ok(m) => break m,
            Err(_) => {
                assert!(
                    t0.elapsed() < std::time::Duration::from_secs(5),
                    "stays full"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let line = r#"p2psip_sos_requests_total{method="POST",path="/v1/routes/rank",code="503"} "#;
    assert!(
        metrics.lines().any(|l| l.starts_with(line)),
        "{line} in {metrics}"
    );
}

#[tokio::test]
async fn a_batch_of_reports_is_answered_report_by_report_in_order() {
    // Room in the body for a batch one report too long (the count is what is refused).
    let f = fixture_with(|c| c.max_body_bytes = 256 * 1024).await;
    let client = SosClient::new(&f.server.url(), &f.trust).expect("client");
    let (a, b) = (&f.signers[0], &f.signers[1]);
    let good = body(a.peer().0, 1609, Outcome::Delivered, 1);
    // About the reporter itself, and from outside the timestamp window: refused on their own.
    let selfish = body(a.peer().0, a.peer().0, Outcome::Delivered, 2);
    let mut stale = body(a.peer().0, 1600, Outcome::Dropped, 3);
    stale.timestamp_ms = T0 - 3_600_000;
    let batch = a
        .sign_batch(vec![good.clone(), selfish, stale, good])
        .expect("sign");
    let items = client.post_reports(&batch).await.expect("batch answered");
    let statuses: Vec<u16> = items.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [200, 400, 400, 409], "{items:?}");
    assert_eq!(items[0].ack.as_ref().map(|a| a.subject), Some(PeerId(1609)));
    let errors: Vec<Option<&str>> = items
        .iter()
        .map(|i| i.error.as_ref().map(|e| e.error.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            None,
            Some("invalid_report"),
            Some("timestamp_outside_window"),
            Some("replayed_nonce")
        ]
    );
    let other = b
        .sign_batch(vec![body(b.peer().0, 1600, Outcome::Dropped, 3)])
        .expect("sign");
    let items = client.post_reports(&other).await.expect("batch answered");
    assert_eq!(items.iter().map(|i| i.status).collect::<Vec<_>>(), [200]);
    let view = client.get_opinion(PeerId(1609)).await.expect("get");
    assert_eq!((view.reports.positive, view.reports.negative), (1, 0));
    let view = client.get_opinion(PeerId(1600)).await.expect("get");
    assert_eq!((view.reports.positive, view.reports.negative), (0, 1));

    // A batch signed by b but claiming to be a's, one altered after signing, an empty
    // batch, one too many, and one that is not a batch are refused whole and change nothing.
    let before = dump(&f.db);
    let mut forged = b
        .sign_batch(vec![body(b.peer().0, 1609, Outcome::Dropped, 4)])
        .expect("sign");
    forged.reporter = a.peer();
    for r in &mut forged.reports {
        r.reporter = a.peer();
    }
    let mut altered = a
        .sign_batch(vec![body(a.peer().0, 1609, Outcome::Delivered, 5)])
        .expect("sign");
    altered.reports[0].outcome = Outcome::Dropped;
    for (batch, what) in [(forged, "forged"), (altered, "altered")] {
        match client.post_reports(&batch).await {
            Err(sos::ClientError::Server { status: 403, body }) => {
                assert_eq!(body.error, "bad_signature", "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    let one = body(a.peer().0, 1609, Outcome::Delivered, 9);
    for (reports, what) in [
        (Vec::new(), "empty"),
        (vec![one; sos::MAX_BATCH + 1], "too many"),
    ] {
        let batch = a.sign_batch(reports).expect("sign");
        match client.post_reports(&batch).await {
            Err(sos::ClientError::Server { status: 400, body }) => {
                assert_eq!(body.error, "invalid_batch", "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    let resp = f
        .http
        .post(format!("{}/v1/reports/batch", f.server.url()))
        .header("content-type", "application/json")
        .body(format!(
            "[{}]",
            a.sign(body(a.peer().0, 1609, Outcome::Delivered, 10))
                .expect("sign")
                .to_json()
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(dump(&f.db), before);
}
