//! The HTTP server: axum routes over the [`Store`](crate::store).
//!
//! # How reports become opinions
//!
//! Each accepted report is one unit of evidence about its **subject** (the route is kept
//! for the audit log only): `delivered` is positive, `dropped`, `modified`, `misrouted` and
//! `replayed` are negative. How much it counts is decided by the `trust` crate's rules, the
//! same code the simulator's `OpinionBook` runs ([`trust::judge_report`]):
//!
//! * a report from a CSP or CSPG ([`ReporterVerifier::holds_proof`]) rests on the signed
//!   hand-overs it holds: it counts fully and joins the subject's *proven* view;
//! * a report from an ordinary peer is a referral. Where the proven view of its subject is
//!   confident, the report is held against it: one that contradicts it does not count and
//!   lowers its reporter's *referral* record, one that agrees raises it. It counts with the
//!   weight (classic discounting) the reporter's referral record then gives, so a peer
//!   nobody could check yet says nothing, and a slanderer loses its voice however well it
//!   forwards;
//! * with [`ServerConfig::check_reports`] off, every report counts fully (the rule before
//!   referral trust).
//!
//! Evidence is aged to the report's own timestamp when stored and to the time of the query
//! when read, with the configured half-life, and mapped to an opinion with
//! b = r/(r+s+2), d = s/(r+s+2), u = 2/(r+s+2) and the configured base rate.
//! An opinion set by an administrator overrides the evidence until it is deleted; evidence
//! keeps accumulating underneath. A peer with neither gets the vacuous opinion
//! (0, 0, 1, a), whose expectation is the base rate a (default 0.25, the paper's value: an
//! unknown peer is trusted less than a coin flip).
//!
//! # Order of checks for `POST /v1/reports`
//!
//! body size → JSON shape → timestamp window → signature → per-reporter rate limit →
//! nonce (in the writer, atomically with the insert). Only verified reporters reach the
//! rate-limit table, so its size is bounded by the key registry (and capped anyway).
//! `POST /v1/reports/batch` takes 1 to [`crate::MAX_BATCH`] reports of one reporter under
//! one signature ([`SignedBatch`]): body size → JSON shape → signature, refused whole; then
//! each report's subject → timestamp window → rate limit → nonce, answered each with its own
//! status and body, in the order posted: peers send the reports one call produces in one
//! request with one signature.

use crate::api::{
    ErrorBody, Health, OpinionView, RankRequest, RankResponse, RankedRouteView, ReportAck,
    ReportCounts,
};
use crate::metrics::{Metrics, RejectReason};
use crate::store::{PeerRecord, Store, StoreConfig, StoreError, Synchronous, WriteError, WriteOp};
use crate::{
    BatchItem, PeerId, ReportBody, ReporterVerifier, SignedBatch, SignedReport, VerifyError,
    parse_report,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use service::http::Transport;
use service::sync::{lock, read};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};
use trust::{Ageing, Opinion, OpinionSource, TrustPolicy, rank_routes};

/// A source of wall-clock time in Unix milliseconds (replaceable in tests).
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        service::time::unix_ms()
    }
}

/// Everything the server can be told. [`ServerConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct ServerConfig {
    /// SQLite database file (created if missing); unused when `postgres` is set.
    pub db_path: PathBuf,
    /// PostgreSQL shared with other SOS instances instead of the SQLite file (see the
    /// `store_pg` module: same acknowledgement rule, rankings at most `postgres_refresh`
    /// behind other instances' reports). Default `None`.
    pub postgres: Option<service::postgres::PgOptions>,
    /// How often an instance on PostgreSQL reloads the opinions other instances wrote.
    /// Default 500 ms.
    pub postgres_refresh: Duration,
    /// Bearer token for the admin endpoints; `None` disables them.
    pub admin_token: Option<String>,
    /// Who may report, and how signatures are checked.
    pub verifier: Arc<dyn ReporterVerifier>,
    /// Base rate a for evidence-derived and default opinions. Default 0.25.
    pub base_rate: f64,
    /// Evidence half-life in ms; `None` means no ageing. Default 7 days.
    pub half_life_ms: Option<u64>,
    /// Hold ordinary peers' reports against what the CSPs proved and weigh them by their
    /// reporter's record (module docs). Off: every report counts fully, whoever sent it.
    /// Default on.
    pub check_reports: bool,
    /// A report's timestamp may differ from the server's clock by at most this. Default 5 min.
    pub timestamp_window_ms: u64,
    /// Sustained reports per second per ordinary reporter. Default 50.
    pub report_rate_per_sec: f64,
    /// Burst allowance per ordinary reporter. Default 200.
    pub report_burst: f64,
    /// Sustained reports per second per CSP or CSPG
    /// ([`ReporterVerifier::holds_proof`]). A CSP reports on every hop of every call it
    /// multicasts, ten or so reports per call: one that carries 200 calls/s sends ~2 000
    /// reports/s, and refusing them would throw its proof away. Default 10 000.
    pub infrastructure_report_rate_per_sec: f64,
    /// Burst allowance per CSP or CSPG. Default 40 000.
    pub infrastructure_report_burst: f64,
    /// Largest request body. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Most peers the opinion table may hold. Default 1 000 000.
    pub max_peers: usize,
    /// Most candidate routes in one rank request. Default 64.
    pub max_routes: usize,
    /// Most hops in one candidate route. Default 32.
    pub max_hops: usize,
    /// Most reporters tracked by the rate limiter. Default 100 000.
    pub max_rate_entries: usize,
    /// Most requests handled at once; more get 503. Default 1024.
    pub max_in_flight: usize,
    /// SQLite `synchronous` mode. Default FULL.
    pub synchronous: Synchronous,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("db_path", &self.db_path)
            .field("postgres", &self.postgres)
            .field("admin", &self.admin_token.is_some())
            .field("base_rate", &self.base_rate)
            .field("half_life_ms", &self.half_life_ms)
            .field("check_reports", &self.check_reports)
            .field("timestamp_window_ms", &self.timestamp_window_ms)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Defaults for a database path and a verifier.
    pub fn new(db_path: impl Into<PathBuf>, verifier: Arc<dyn ReporterVerifier>) -> Self {
        Self {
            db_path: db_path.into(),
            postgres: None,
            postgres_refresh: Duration::from_millis(500),
            admin_token: None,
            verifier,
            base_rate: 0.25,
            half_life_ms: Some(7 * 24 * 3600 * 1000),
            check_reports: true,
            timestamp_window_ms: 5 * 60 * 1000,
            report_rate_per_sec: 50.0,
            report_burst: 200.0,
            infrastructure_report_rate_per_sec: 10_000.0,
            infrastructure_report_burst: 40_000.0,
            max_body_bytes: 64 * 1024,
            max_peers: 1_000_000,
            max_routes: 64,
            max_hops: crate::MAX_ROUTE_HOPS,
            max_rate_entries: 100_000,
            max_in_flight: 1024,
            synchronous: Synchronous::Full,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database could not be opened or loaded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

struct Bucket {
    tokens: f64,
    last_ms: u64,
}

/// A reporter's token bucket settings: a sustained rate and a burst.
#[derive(Clone, Copy, Debug)]
struct ReportBudget {
    rate_per_sec: f64,
    burst: f64,
}

impl ReportBudget {
    fn new(rate_per_sec: f64, burst: f64) -> Result<Self, ServerError> {
        if !(rate_per_sec > 0.0 && burst >= 1.0) {
            return Err(ServerError::Config(
                "report rate must be > 0 and burst ≥ 1".into(),
            ));
        }
        Ok(ReportBudget {
            rate_per_sec,
            burst,
        })
    }

    /// How long an empty bucket takes to fill.
    fn refill_ms(&self) -> u64 {
        (self.burst / self.rate_per_sec * 1000.0).ceil() as u64
    }
}

/// Per-reporter token buckets, bounded.
struct RateTable {
    map: BTreeMap<PeerId, Bucket>,
}

struct AppState {
    store: Store,
    metrics: Metrics,
    rate: Mutex<RateTable>,
    admin_digest: Option<ring::digest::Digest>,
    verifier: Arc<dyn ReporterVerifier>,
    clock: Arc<dyn Clock>,
    policy: TrustPolicy,
    window_ms: u64,
    /// Report budget of an ordinary reporter.
    budget: ReportBudget,
    /// Report budget of a CSP or CSPG.
    infrastructure_budget: ReportBudget,
    max_rate_entries: usize,
    max_routes: usize,
    max_hops: usize,
    in_flight: Semaphore,
}

type St = State<Arc<AppState>>;

/// Build the router (opens the database and starts its writer thread).
pub fn router(cfg: ServerConfig) -> Result<Router, ServerError> {
    if !(0.0..=1.0).contains(&cfg.base_rate) {
        return Err(ServerError::Config("base rate must be in [0, 1]".into()));
    }
    let ageing = match cfg.half_life_ms {
        None => Ageing::never(),
        Some(h) => Ageing::half_life_ms(h).map_err(|e| ServerError::Config(e.to_string()))?,
    };
    let budget = ReportBudget::new(cfg.report_rate_per_sec, cfg.report_burst)?;
    let infrastructure_budget = ReportBudget::new(
        cfg.infrastructure_report_rate_per_sec,
        cfg.infrastructure_report_burst,
    )?;
    if cfg.max_hops == 0 || cfg.max_hops > crate::MAX_ROUTE_HOPS || cfg.max_routes == 0 {
        return Err(ServerError::Config("route limits out of range".into()));
    }
    let policy =
        TrustPolicy::new(cfg.base_rate, ageing).map_err(|e| ServerError::Config(e.to_string()))?;
    let store_cfg = StoreConfig {
        synchronous: cfg.synchronous,
        policy,
        check_reports: cfg.check_reports,
        max_peers: cfg.max_peers,
        // Retain nonces well past twice the window: a replay of a pruned nonce is then
        // always outside the timestamp window.
        retention_ms: cfg.timestamp_window_ms.saturating_mul(2) + 60_000,
        queue: 4096,
        refresh: cfg.postgres_refresh,
    };
    let store = match &cfg.postgres {
        Some(pg) => Store::open_postgres(pg.clone(), store_cfg)?,
        None => Store::open(&cfg.db_path, store_cfg)?,
    };
    let state = Arc::new(AppState {
        store,
        metrics: Metrics::default(),
        rate: Mutex::new(RateTable {
            map: BTreeMap::new(),
        }),
        admin_digest: cfg
            .admin_token
            .as_ref()
            .map(|t| ring::digest::digest(&ring::digest::SHA256, t.as_bytes())),
        verifier: cfg.verifier,
        clock: cfg.clock,
        policy,
        window_ms: cfg.timestamp_window_ms,
        budget,
        infrastructure_budget,
        max_rate_entries: cfg.max_rate_entries.max(1),
        max_routes: cfg.max_routes,
        max_hops: cfg.max_hops,
        in_flight: Semaphore::new(cfg.max_in_flight.max(1)),
    });
    let app = Router::new()
        .route("/v1/routes/rank", post(rank))
        .route("/v1/reports", post(report))
        .route("/v1/reports/batch", post(report_batch))
        .route(
            "/v1/opinions/{peer}",
            get(get_opinion).put(put_opinion).delete(delete_opinion),
        )
        .merge(service::monitor::routes(Probe(Arc::clone(&state))))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            limit_in_flight,
        ));
    // Counted outside the in-flight limit, so the 503s it answers are counted too.
    Ok(service::monitor::track(app, state.metrics.http.clone())
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .with_state(state))
}

/// Serve on `listener` over `transport` (HTTPS with the certificate the E&A CA issued for
/// the SOS, or plain HTTP when the operator insists) until `shutdown` resolves.
pub async fn serve(
    cfg: ServerConfig,
    listener: tokio::net::TcpListener,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = router(cfg)?;
    service::http::serve_with(listener, app, transport, shutdown).await?;
    Ok(())
}

/// A server running in the background of the current tokio runtime (tests, demo).
#[derive(Debug)]
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    scheme: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Bind `addr` (use port 0 for any) and serve over `transport` in a spawned task.
    pub async fn start(
        cfg: ServerConfig,
        addr: SocketAddr,
        transport: Transport,
    ) -> Result<Self, ServerError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(cfg)?;
        let scheme = transport.scheme();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service::http::serve_with(listener, app, transport, async move {
                let _ = rx.await;
            })
            .await?;
            Ok(())
        });
        Ok(Self {
            addr,
            scheme,
            stop: Some(stop),
            task,
        })
    }

    /// Base URL, e.g. `https://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stop accepting, finish in-flight requests, and wait.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e.to_string()))),
        }
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: code.to_string(),
            message: message.into(),
        }),
    )
        .into_response()
}

fn body_rejection(rej: BytesRejection) -> Response {
    let status = rej.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_body"
    };
    error(status, code, rej.body_text())
}

/// A request's JSON body as `T`, or the error answer: the body could not be read, or is
/// not that JSON.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Box<Response>> {
    let body = body.map_err(|r| Box::new(body_rejection(r)))?;
    serde_json::from_slice(&body).map_err(|e| Box::new(json_error(&e)))
}

fn json_error(e: &serde_json::Error) -> Response {
    let code = match e.classify() {
        serde_json::error::Category::Data => "invalid_request",
        _ => "malformed_json",
    };
    error(StatusCode::BAD_REQUEST, code, e.to_string())
}

/// A refused request, turned into a JSON error response at the handler boundary.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1, self.2)
    }
}

fn parse_peer(p: Result<Path<String>, PathRejection>) -> Result<PeerId, ApiError> {
    let Path(s) = p.map_err(|r| ApiError(StatusCode::BAD_REQUEST, "bad_path", r.body_text()))?;
    s.parse().map_err(|e: crate::PeerIdError| {
        ApiError(StatusCode::BAD_REQUEST, "bad_peer_id", e.to_string())
    })
}

async fn limit_in_flight(
    State(st): St,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match st.in_flight.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight",
        ),
    }
}

impl AppState {
    fn current(&self, rec: Option<&PeerRecord>, now_ms: u64) -> (Opinion, OpinionSource) {
        match rec {
            Some(r) => r.current(now_ms, &self.policy),
            None => (self.policy.vacuous(), OpinionSource::Default),
        }
    }

    fn view(&self, peer: PeerId) -> OpinionView {
        let now = self.clock.now_ms();
        let map = read(&self.store.peers);
        let rec = map.get(&peer);
        let (opinion, source) = self.current(rec, now);
        OpinionView {
            peer,
            source,
            opinion,
            expectation: opinion.expectation(),
            reports: rec
                .map(|r| ReportCounts {
                    positive: r.positive,
                    negative: r.negative,
                })
                .unwrap_or_default(),
        }
    }

    /// The peer an admin request is about, if the request carries the admin token (checked
    /// first) and names a well-formed Node-ID.
    fn admin_peer(
        &self,
        headers: &HeaderMap,
        peer: Result<Path<String>, PathRejection>,
    ) -> Result<PeerId, ApiError> {
        self.check_admin(headers)?;
        parse_peer(peer)
    }

    /// Ok(()) if the request carries the admin token.
    fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(want) = &self.admin_digest else {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "no admin token is configured on this server".into(),
            ));
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "Authorization: Bearer <token> required".into(),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let got = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        // Compare digests without an early exit.
        let diff = want
            .as_ref()
            .iter()
            .zip(got.as_ref())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        if diff != 0 {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "bad_token",
                "admin token is wrong".into(),
            ));
        }
        Ok(())
    }

    /// Take one report from `reporter`'s budget (a CSP's or CSPG's when it holds proof).
    fn allow_report(&self, reporter: PeerId, proof: bool, now: u64) -> bool {
        let budget = if proof {
            self.infrastructure_budget
        } else {
            self.budget
        };
        let mut table = lock(&self.rate);
        if !table.map.contains_key(&reporter) && table.map.len() >= self.max_rate_entries {
            // Forget reporters whose bucket has refilled completely: they lose nothing (the
            // longer of the two refill times bounds every bucket's).
            let refill_ms = self
                .budget
                .refill_ms()
                .max(self.infrastructure_budget.refill_ms());
            table
                .map
                .retain(|_, b| now.saturating_sub(b.last_ms) < refill_ms);
            if table.map.len() >= self.max_rate_entries {
                return false;
            }
        }
        let b = table.map.entry(reporter).or_insert(Bucket {
            tokens: budget.burst,
            last_ms: now,
        });
        let elapsed = now.saturating_sub(b.last_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * budget.rate_per_sec).min(budget.burst);
        b.last_ms = b.last_ms.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn rank(State(st): St, body: Result<Bytes, BytesRejection>) -> Response {
    let answer = rank_routes_of(&st, body);
    st.metrics.ranked(answer.status().is_success());
    answer
}

fn rank_routes_of(st: &AppState, body: Result<Bytes, BytesRejection>) -> Response {
    let req: RankRequest = match json_body(body) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    if req.routes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "no_routes",
            "at least one route is required",
        );
    }
    if req.routes.len() > st.max_routes {
        return error(
            StatusCode::BAD_REQUEST,
            "too_many_routes",
            format!("at most {} routes", st.max_routes),
        );
    }
    if let Some(i) = req.routes.iter().position(|r| r.len() > st.max_hops) {
        return error(
            StatusCode::BAD_REQUEST,
            "route_too_long",
            format!("route {i} has more than {} hops", st.max_hops),
        );
    }
    let now = st.clock.now_ms();
    let ranked = {
        let map = read(&st.store.peers);
        rank_routes(
            req.routes,
            |p| st.current(map.get(p), now).0,
            req.discounting,
        )
    };
    let ranked = match ranked {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "empty_route", e.to_string()),
    };
    let resp = RankResponse {
        ranked: ranked
            .into_iter()
            .map(|r| RankedRouteView {
                route: r.route,
                opinion: r.opinion,
                expectation: r.expectation,
            })
            .collect(),
    };
    axum::Json(resp).into_response()
}

/// A report body read and parsed with `parse`; a body that cannot be read, or does not
/// parse, is answered (400 `code`, or the body's own rejection) and counted as malformed.
fn parse_body<T>(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
    parse: impl FnOnce(&[u8]) -> Result<T, crate::ReportError>,
    code: &str,
) -> Result<T, Box<Response>> {
    let parsed = match body {
        Ok(b) => {
            parse(&b).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, code, e.to_string())))
        }
        Err(r) => Err(Box::new(body_rejection(r))),
    };
    if parsed.is_err() {
        st.metrics.rejected(RejectReason::Malformed);
    }
    parsed
}

async fn report(State(st): St, body: Result<Bytes, BytesRejection>) -> Response {
    let signed = match parse_body(&st, body, parse_report, "invalid_report") {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    match accept_report(&st, signed).await {
        Ok(ack) => axum::Json(ack).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST /v1/reports/batch`: up to [`crate::MAX_BATCH`] reports of one reporter under one
/// signature (a callee reports every hop of every route a call took at once): the batch is
/// parsed and its signature checked whole, then each report is checked and stored as
/// `POST /v1/reports` would, concurrently so they share the store's commits; the answer
/// lists each report's status in the order posted.
async fn report_batch(State(st): St, body: Result<Bytes, BytesRejection>) -> Response {
    let batch = match parse_body(&st, body, crate::report::parse_batch, "invalid_batch") {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    let msg = SignedBatch::canonical_bytes(batch.reporter, &batch.reports);
    if let Err(refusal) = check_signature(&st, batch.reporter, &msg, &batch.signature) {
        return refusal.into_response();
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, report) in batch.reports.into_iter().enumerate() {
        let st = Arc::clone(&st);
        set.spawn(async move {
            let answer = match report.validate() {
                Ok(()) => match check_timestamp(&st, &report) {
                    Ok(()) => accept_verified(&st, report).await,
                    Err(refusal) => Err(refusal),
                },
                Err(e) => {
                    st.metrics.rejected(RejectReason::Malformed);
                    Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_report",
                        e.to_string(),
                    ))
                }
            };
            (i, answer)
        });
    }
    let mut answers = Vec::with_capacity(set.len());
    while let Some(done) = set.join_next().await {
        match done {
            Ok(a) => answers.push(a),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("a report of the batch failed: {e}"),
                );
            }
        }
    }
    answers.sort_by_key(|(i, _)| *i);
    let items: Vec<BatchItem> = answers
        .into_iter()
        .map(|(_, a)| match a {
            Ok(ack) => BatchItem {
                status: StatusCode::OK.as_u16(),
                ack: Some(ack),
                error: None,
            },
            Err(r) => BatchItem {
                status: r.status.as_u16(),
                ack: None,
                error: Some(r.body),
            },
        })
        .collect();
    axum::Json(items).into_response()
}

/// Why a report was not stored: the status and body `POST /v1/reports` answers.
struct Refusal {
    status: StatusCode,
    body: ErrorBody,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            body: ErrorBody {
                error: code.to_string(),
                message: message.into(),
            },
        }
    }

    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// Check a parsed report (clock window, signature, the reporter's rate) and store it;
/// counted in the metrics either way.
async fn accept_report(st: &AppState, signed: SignedReport) -> Result<ReportAck, Refusal> {
    check_timestamp(st, &signed.body)?;
    let msg = signed.body.canonical_bytes();
    check_signature(st, signed.body.reporter, &msg, &signed.signature)?;
    accept_verified(st, signed.body).await
}

/// Refuse a report whose timestamp is outside the window around the server's clock.
fn check_timestamp(st: &AppState, report: &ReportBody) -> Result<(), Refusal> {
    let now = st.clock.now_ms();
    if report.timestamp_ms.abs_diff(now) > st.window_ms {
        st.metrics.rejected(RejectReason::Timestamp);
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "timestamp_outside_window",
            format!(
                "timestamp must be within {} ms of the server clock",
                st.window_ms
            ),
        ));
    }
    Ok(())
}

/// Refuse `signature` over `msg` unless `reporter`'s registered key made it.
fn check_signature(
    st: &AppState,
    reporter: PeerId,
    msg: &[u8],
    signature: &[u8],
) -> Result<(), Refusal> {
    let (reason, code, e) = match st.verifier.verify(reporter, msg, signature) {
        Ok(()) => return Ok(()),
        Err(e @ VerifyError::UnknownReporter(_)) => {
            (RejectReason::UnknownReporter, "unknown_reporter", e)
        }
        Err(e @ VerifyError::BadSignature) => (RejectReason::BadSignature, "bad_signature", e),
    };
    st.metrics.rejected(reason);
    Err(Refusal::new(StatusCode::FORBIDDEN, code, e.to_string()))
}

/// Store a report whose signature checked out: the reporter's rate limit, then the nonce
/// and the insert (atomically, in the writer).
async fn accept_verified(st: &AppState, report: ReportBody) -> Result<ReportAck, Refusal> {
    let reject = |reason: RejectReason, status: StatusCode, code: &str, message: String| {
        st.metrics.rejected(reason);
        Refusal::new(status, code, message)
    };
    let now = st.clock.now_ms();
    let proof = st.verifier.holds_proof(report.reporter);
    if !st.allow_report(report.reporter, proof, now) {
        return Err(reject(
            RejectReason::RateLimited,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many reports from this reporter".into(),
        ));
    }
    let subject = report.subject;
    let evidence = report.outcome;
    let result = st
        .store
        .write(|reply| WriteOp::Report {
            report,
            proof,
            received_ms: now,
            reply,
        })
        .await;
    match result {
        Ok((id, reports)) => {
            st.metrics.accepted(evidence);
            Ok(ReportAck {
                id,
                subject,
                reports,
            })
        }
        Err(e) => Err(write_refusal(st, e)),
    }
}

fn write_error(st: &AppState, e: WriteError) -> Response {
    write_refusal(st, e).into_response()
}

fn write_refusal(st: &AppState, e: WriteError) -> Refusal {
    match e {
        WriteError::Replay => {
            st.metrics.rejected(RejectReason::Replay);
            Refusal::new(StatusCode::CONFLICT, "replayed_nonce", e.to_string())
        }
        WriteError::TooManyPeers => {
            st.metrics.rejected(RejectReason::TooManyPeers);
            Refusal::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "peer_table_full",
                e.to_string(),
            )
        }
        WriteError::Storage(_) | WriteError::Closed => {
            st.metrics.rejected(RejectReason::Storage);
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                e.to_string(),
            )
        }
    }
}

async fn get_opinion(State(st): St, peer: Result<Path<String>, PathRejection>) -> Response {
    match parse_peer(peer) {
        Ok(p) => axum::Json(st.view(p)).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn put_opinion(
    State(st): St,
    headers: HeaderMap,
    peer: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let peer = match st.admin_peer(&headers, peer) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let opinion: Opinion = match json_body(body) {
        Ok(o) => o,
        Err(refused) => return *refused,
    };
    let now_ms = st.clock.now_ms();
    let result = st
        .store
        .write(|reply| WriteOp::PutAdmin {
            peer,
            opinion,
            now_ms,
            reply,
        })
        .await;
    match result {
        Ok(()) => axum::Json(st.view(peer)).into_response(),
        Err(e) => write_error(&st, e),
    }
}

async fn delete_opinion(
    State(st): St,
    headers: HeaderMap,
    peer: Result<Path<String>, PathRejection>,
) -> Response {
    let peer = match st.admin_peer(&headers, peer) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let result = st
        .store
        .write(|reply| WriteOp::DeleteAdmin { peer, reply })
        .await;
    match result {
        Ok(true) => axum::Json(st.view(peer)).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "no_admin_opinion",
            format!("peer {peer} has no admin-set opinion"),
        ),
        Err(e) => write_error(&st, e),
    }
}

/// `GET /metrics`, `/healthz` (the JSON [`Health`]) and `/readyz` (the store is reachable).
#[derive(Clone)]
struct Probe(Arc<AppState>);

impl service::monitor::Probe for Probe {
    async fn metrics(&self) -> Result<String, String> {
        let st = &self.0;
        let peers = read(&st.store.peers).len();
        st.metrics.render(peers, st.store.stats())
    }

    async fn health(&self) -> Result<Response, String> {
        let peers = read(&self.0.store.peers).len();
        Ok(axum::Json(Health {
            status: "ok".into(),
            peers,
        })
        .into_response())
    }

    async fn ready(&self) -> Result<(), String> {
        if self.0.store.stats().reachable {
            Ok(())
        } else {
            Err("the opinion store is unreachable (its last commit or reload failed)".into())
        }
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
