//! The peer's local control HTTP endpoint (loopback only, unauthenticated): `GET /status`,
//! `GET /lookup/{key}`, `POST /call` (what `p2psip status`, `lookup` and `call` talk to),
//! and for monitoring `GET /metrics` (Prometheus text), `GET /healthz` (the peer's loop
//! answers) and `GET /readyz` (on its ring with a successor and a predecessor, or alone on a ring it
//! started, and the directory loaded).

use crate::NodeCore;
use crate::calls::{self, CallReport, CallRequest, Shared};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use net::{Handle, SosCounters};
use overlay::{Contact, Event, IdSpace};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the handlers need.
#[derive(Clone)]
pub(crate) struct Ctl {
    pub h: Handle<NodeCore>,
    pub space: IdSpace,
    pub layer: u8,
    pub role: &'static str,
    pub shared: Arc<Shared>,
    pub sos: Option<Arc<SosCounters>>,
    pub sos_url: Option<String>,
    pub members: Arc<std::sync::atomic::AtomicUsize>,
    /// This peer started its ring (`--create`): alone on it, it is ready without a successor.
    pub creator: bool,
    /// How long a lookup may take before the endpoint gives up.
    pub lookup_wait: Duration,
    /// How long the callee may take in the dialog (each step).
    pub dialog_wait: Duration,
    /// NAT: the server-reflexive address learnt at start and the relay (outbound-only).
    pub nat: Value,
    /// Overlay messages received, by kind.
    pub kinds: Arc<net::KindLog>,
    /// Extra JSON for `/status` (the peer's database), if any.
    pub extra: Arc<dyn Fn() -> Value + Send + Sync>,
}

/// The router.
pub(crate) fn router(c: Ctl) -> axum::Router {
    axum::Router::new()
        .route("/status", axum::routing::get(status))
        .route("/lookup/{key}", axum::routing::get(lookup))
        .route("/call", axum::routing::post(call))
        .merge(service::monitor::routes(Probe(c.clone())))
        .with_state(c)
}

fn contact_json(c: &Contact) -> Value {
    json!({ "id": c.id.to_string(), "addr": c.addr })
}

/// Why a request to a running peer was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong (bad key, bad callee, bad body).
    #[error("{0}")]
    BadRequest(String),
    /// The peer is stopping or has too much in flight.
    #[error("{0}")]
    Unavailable(String),
    /// The overlay did not answer in time, or answered with a failure.
    #[error("{0}")]
    Timeout(String),
    /// An answer the peer did not expect (a bug).
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        // The error body of every p2psip service.
        let body = service::http::ErrorBody {
            error: code.into(),
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

fn answer<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn status(State(c): State<Ctl>) -> Response {
    answer(c.status().await)
}

async fn lookup(State(c): State<Ctl>, UrlPath(key): UrlPath<String>) -> Response {
    answer(c.lookup(&key).await)
}

async fn call(State(c): State<Ctl>, body: axum::body::Bytes) -> Response {
    let req: CallRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::BadRequest(format!("bad request body: {e}")).into_response(),
    };
    answer(c.call(req).await)
}

/// `GET /metrics`, `/healthz` (the peer's loop answers) and `/readyz` (see the module doc),
/// through the monitoring routes every service shares.
#[derive(Clone)]
struct Probe(Ctl);

impl service::monitor::Probe for Probe {
    async fn metrics(&self) -> Result<String, String> {
        self.0.metrics().await.map_err(|e| e.to_string())
    }

    async fn health(&self) -> Result<Response, String> {
        match self.0.h.call(|_, _| ()).await {
            Ok(()) => Ok("ok\n".into_response()),
            Err(_) => Err("the peer is stopping".into()),
        }
    }

    async fn ready(&self) -> Result<(), String> {
        let c = &self.0;
        let creator = c.creator;
        let ring =
            c.h.call(move |n, now| {
                let ch = n.node_at(now).chord();
                // On the ring: a successor, and a predecessor that has taken us for its
                // successor (the ring passes through us); or alone on a ring we started.
                let linked = ch.successor().is_some() && ch.predecessor().is_some();
                let alone = creator && ch.successor().is_none();
                ch.is_active() && (linked || alone)
            })
            .await;
        match ring {
            Ok(true) if c.members.load(Ordering::Relaxed) > 0 => Ok(()),
            Ok(true) => Err("no directory loaded yet".into()),
            Ok(false) => Err("not on a ring yet".into()),
            Err(_) => Err("the peer is stopping".into()),
        }
    }
}

impl Ctl {
    /// `GET /metrics`: the Prometheus text.
    pub(crate) async fn metrics(&self) -> Result<String, ApiError> {
        let scrape = self
            .h
            .call(|n, now| {
                let n = n.node_at(now);
                let ch = n.chord();
                crate::metrics::Scrape {
                    active: ch.is_active(),
                    successors: ch.successors().len(),
                    predecessor_known: ch.predecessor().is_some(),
                    fingers: ch.fingers().count(),
                    records: ch.records().len(),
                    contact_cache: n.cache_len(),
                    dialogs: n.dialog_count(),
                    held_requests: n.held_requests().count(),
                    ..crate::metrics::Scrape::default()
                }
            })
            .await
            .map_err(|_| ApiError::Unavailable("the peer is stopping".into()))?;
        let shared = &self.shared;
        let scrape = crate::metrics::Scrape {
            members: self.members.load(Ordering::Relaxed),
            calls_completed: shared.completed_total.load(Ordering::Relaxed),
            calls_failed: shared.failed_total.load(Ordering::Relaxed),
            calls_answered: shared.answered_total.load(Ordering::Relaxed),
            net: json!(self.h.stats()),
            media: shared.media.get().map(|m| m.stats()),
            kinds: self.kinds.totals_by_kind(),
            sos: self.sos.as_ref().map(|s| {
                [
                    s.rank_ok.load(Ordering::Relaxed),
                    s.rank_failed.load(Ordering::Relaxed),
                    s.reports_ok.load(Ordering::Relaxed),
                    s.reports_failed.load(Ordering::Relaxed),
                    s.reports_dropped.load(Ordering::Relaxed),
                    s.reports_waiting.load(Ordering::Relaxed),
                ]
            }),
            ..scrape
        };
        crate::metrics::render(&shared.metrics, &scrape)
            .map_err(|e| ApiError::Internal(format!("encoding the metrics: {e}")))
    }

    /// `GET /status`.
    pub(crate) async fn status(&self) -> Result<Value, ApiError> {
        let c = self;
        let r = c
        .h
        .call(|n, now| {
            let n = n.node_at(now);
            let ch = n.chord();
            json!({
                "node": ch.id().to_string(),
                "addr": ch.contact().addr,
                "active": ch.is_active(),
                "predecessor": ch.predecessor().as_ref().map(contact_json),
                "successors": ch.successors().map(|c| contact_json(&c)).collect::<Vec<_>>(),
                "fingers": ch.fingers().map(|c| contact_json(&c)).collect::<Vec<_>>(),
                "records": ch.records().len(),
                "record_keys": ch.records().keys().take(64).map(|k| k.to_string()).collect::<Vec<_>>(),
                "contact_cache": n.cache_len(),
                "cached_contacts": n.contact_cache().entries(now)
                    .take(64).map(|(c, _)| c.id.to_string()).collect::<Vec<_>>(),
                "dialogs": n.dialog_count(),
                "held_requests": n.held_requests().count(),
                "directory": {
                    "csps": n.context().directory.csps.iter().map(|l| l.len()).collect::<Vec<_>>(),
                    "cspgs": n.context().directory.cspgs.iter().map(|l| l.len()).collect::<Vec<_>>(),
                },
            })
        })
        .await;
        let Ok(mut v) = r else {
            return Err(ApiError::Unavailable("the peer is stopping".into()));
        };
        v["layer"] = json!(c.layer);
        v["role"] = json!(c.role);
        v["mode"] = json!("secure");
        v["members"] = json!(c.members.load(Ordering::Relaxed));
        v["stats"] = json!(c.h.stats());
        v["sos"] = match &c.sos {
            Some(s) => json!({
                "url": c.sos_url,
                "rank_ok": s.rank_ok.load(Ordering::Relaxed),
                "rank_failed": s.rank_failed.load(Ordering::Relaxed),
                "reports_ok": s.reports_ok.load(Ordering::Relaxed),
                "reports_failed": s.reports_failed.load(Ordering::Relaxed),
                "reports_dropped": s.reports_dropped.load(Ordering::Relaxed),
                "reports_waiting": s.reports_waiting.load(Ordering::Relaxed),
            }),
            None => Value::Null,
        };
        v["calls"] = json!({
            "answered": c.shared.answered_total.load(Ordering::Relaxed),
            "completed": c.shared.completed_total.load(Ordering::Relaxed),
            "failed": c.shared.failed_total.load(Ordering::Relaxed),
            "recent": c.shared.history(),
        });
        v["store"] = (c.extra)();
        v["nat"] = c.nat.clone();
        Ok(v)
    }

    /// `GET /lookup/{key}`.
    pub(crate) async fn lookup(&self, key: &str) -> Result<Value, ApiError> {
        let c = self;
        let Ok(v) = key.parse::<u128>() else {
            return Err(ApiError::BadRequest("key must be a decimal integer".into()));
        };
        let Ok(key) = c.space.id(v) else {
            return Err(ApiError::BadRequest("key outside the ID space".into()));
        };
        if service::sync::lock(&c.shared.lookups).len() >= calls::MAX_LOOKUPS {
            return Err(ApiError::Unavailable("too many lookups in flight".into()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = c.shared.clone();
        // The waiter is registered inside the loop, before the answer can be dispatched.
        let started =
            c.h.call(move |n, now| {
                let n = n.node_at(now);
                let id = n.chord_mut().lookup(now, key);
                service::sync::lock(&shared.lookups).insert(id, tx);
                id
            })
            .await;
        let Ok(id) = started else {
            return Err(ApiError::Unavailable("the peer is stopping".into()));
        };
        let ev = tokio::time::timeout(c.lookup_wait, rx).await;
        service::sync::lock(&c.shared.lookups).remove(&id);
        match ev {
            Ok(Ok(Event::LookupDone {
                key,
                owner,
                path,
                latency,
                attempts,
                ..
            })) => Ok(json!({
                "key": key.to_string(),
                "owner": contact_json(&owner),
                "path": path.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "hops": path.len().saturating_sub(1),
                "latency_us": latency.as_micros() as u64,
                "attempts": attempts,
            })),
            Ok(Ok(Event::LookupFailed { reason, .. })) => {
                Err(ApiError::Timeout(format!("lookup failed: {reason:?}")))
            }
            Ok(Ok(other)) => Err(ApiError::Internal(format!("{other:?}"))),
            Ok(Err(_)) | Err(_) => Err(ApiError::Timeout("lookup timed out".into())),
        }
    }

    /// `POST /call`: place a call and run it to its end.
    pub(crate) async fn call(&self, req: CallRequest) -> Result<CallReport, ApiError> {
        let c = self;
        let (to, aor) = if let Some(user_host) = req.to.strip_prefix("sip:") {
            let aor = match user_host.split_once('@') {
                Some((user, host)) if !user.is_empty() && !host.is_empty() => {
                    sip::normalize_aor(user, host)
                }
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "`to` must be sip:user@domain, got {:?}",
                        req.to
                    )));
                }
            };
            match calls::resolve_aor(&c.h, c.space, &aor).await {
                Ok(id) => (id, Some(aor)),
                Err(why) => {
                    let report = CallReport {
                        from: c.h.contact().id.to_string(),
                        to: req.to.clone(),
                        aor: Some(aor),
                        result: "failed".into(),
                        reason: Some(why),
                        ..CallReport::default()
                    };
                    return Ok(report);
                }
            }
        } else {
            match req.to.parse::<u128>().ok().and_then(|v| c.space.id(v).ok()) {
                Some(id) => (id, None),
                None => {
                    return Err(ApiError::BadRequest(format!(
                        "`to` must be a Node-ID (decimal, inside the ID space) or sip:user@domain, got {:?}",
                        req.to
                    )));
                }
            }
        };
        if to == c.h.contact().id {
            return Err(ApiError::BadRequest("a peer cannot call itself".into()));
        }
        let hold = Duration::from_millis(req.hold_ms.min(600_000));
        Ok(calls::place(&c.h, &c.shared, to, aor, hold, c.dialog_wait).await)
    }
}
