//! Monitoring over HTTP, the same on every service: `GET /metrics` (Prometheus/OpenMetrics
//! text), `GET /healthz` (the process answers) and `GET /readyz` (it should get traffic).
//!
//! A service says what each of those means through its [`Probe`]; [`routes`] adds the three
//! routes to its own router (E&A, SOS), and [`serve`] runs them alone on a listener of
//! their own for a service that speaks no HTTP otherwise (the STUN/TURN server). A
//! refusal is a 503 with the [`ErrorBody`](crate::http::ErrorBody) of every p2psip
//! service, so a probe that is not ready says why.
//!
//! [`HttpMetrics`] counts and times the requests of a service's HTTP API by route template
//! (bounded: only routes the router has, the rest under `other`), through [`track`].

use crate::http::ErrorBody;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::time::Instant;

/// The content type of `GET /metrics` (what prometheus-client's text encoder writes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request-duration buckets, seconds: from a ranking served from memory (tens of µs) to an
/// enrollment that signs a certificate and waits for its commit (up to seconds).
pub const REQUEST_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// What a service answers to its monitoring routes.
pub trait Probe: Clone + Send + Sync + 'static {
    /// The metrics text, or why it cannot be made now (the service is stopping).
    fn metrics(&self) -> impl Future<Output = Result<String, String>> + Send;

    /// `GET /healthz`: the process is alive. The default answers `ok` as long as the HTTP
    /// server does; a service with a loop of its own asks the loop.
    fn health(&self) -> impl Future<Output = Result<Response, String>> + Send {
        async { Ok("ok\n".into_response()) }
    }

    /// `GET /readyz`: the service should get traffic (its store is reachable, its loop
    /// answers), or why not.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;
}

fn refused(code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: code.into(),
        message,
    };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// `/metrics`, `/healthz` and `/readyz` for `probe`, to merge into a service's router (of
/// any state type).
pub fn routes<S: Clone + Send + Sync + 'static, P: Probe>(probe: P) -> Router<S> {
    let (m, h, r) = (probe.clone(), probe.clone(), probe);
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                match m.metrics().await {
                    Ok(text) => {
                        ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
                    }
                    Err(e) => refused("unavailable", e),
                }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(move || async move {
                match h.health().await {
                    Ok(answer) => answer,
                    Err(e) => refused("unhealthy", e),
                }
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || async move {
                match r.ready().await {
                    Ok(()) => "ready\n".into_response(),
                    Err(e) => refused("not_ready", e),
                }
            }),
        )
}

/// Serve only the monitoring routes of `probe` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    probe: impl Probe,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = routes::<(), _>(probe).fallback(|| async {
        let body = ErrorBody {
            error: "not_found".into(),
            message: "this endpoint serves /metrics, /healthz and /readyz".into(),
        };
        (StatusCode::NOT_FOUND, axum::Json(body))
    });
    crate::http::serve(listener, router, shutdown).await
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Endpoint {
    method: String,
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    method: String,
    path: String,
    code: String,
}

type Histograms = Family<Endpoint, Histogram, fn() -> Histogram>;

/// Requests of a service's HTTP API by method, route template and status code, and their
/// durations (see [`track`]); cloning shares the counts.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<Answered, Counter>,
    duration: Histograms,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            Histogram::new(REQUEST_BUCKETS)
        }
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram),
        }
    }
}

impl HttpMetrics {
    /// Count one answered request.
    pub fn observe(&self, method: &str, path: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&Answered {
                method: method.into(),
                path: path.into(),
                code: code.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&Endpoint {
                method: method.into(),
                path: path.into(),
            })
            .observe(seconds);
    }

    /// Register as `requests` (counter, `_total`) and `request_duration_seconds`
    /// (histogram) in `r`, under its prefix.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "requests",
            "HTTP requests answered, by method, route and status code",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer an HTTP request, by method and route",
            self.duration.clone(),
        );
    }

    /// A scrape whose names start with `prefix` and that holds these HTTP metrics already:
    /// where a service writes its own.
    pub fn scrape(&self, prefix: &str) -> crate::metrics::Scrape {
        let mut s = crate::metrics::Scrape::new(prefix);
        self.register(s.registry());
        s
    }
}

/// `router` with every request counted and timed in `metrics` (routes added to it later
/// are not). The route is the template it matched (`/v1/opinions/{peer}`), `other` for
/// none, so the label values stay bounded whatever clients ask for.
pub fn track<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    metrics: HttpMetrics,
) -> Router<S> {
    router.layer(axum::middleware::from_fn_with_state(metrics, observe))
}

async fn observe(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let method = match method.as_str() {
        "GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "PATCH" | "OPTIONS" => method,
        _ => "other".to_owned(),
    };
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_owned();
    let answer = next.run(req).await;
    m.observe(
        &method,
        &path,
        answer.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[derive(Clone)]
    struct Flag(Arc<AtomicBool>);

    impl Probe for Flag {
        async fn metrics(&self) -> Result<String, String> {
            let mut s = crate::metrics::Scrape::new("t");
            s.gauge("up", "1", 0);
            s.encode().map_err(|e| e.to_string())
        }
        async fn ready(&self) -> Result<(), String> {
            if self.0.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("store unreachable".into())
            }
        }
    }

    #[tokio::test]
    async fn probes_answer_and_requests_are_counted_by_route() {
        let flag = Flag(Arc::new(AtomicBool::new(false)));
        let http = HttpMetrics::default();
        let app = Router::new().route("/v1/x/{id}", axum::routing::get(|| async { "x" }));
        let app = track(app, http.clone()).merge(routes(flag.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::http::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        let client = crate::http::client(Duration::from_secs(5)).unwrap();
        let get = |p: &str| {
            let c = client.clone();
            let url = format!("http://{addr}{p}");
            async move {
                let r = c.get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await, (200, "ok\n".into()));
        let (code, body) = get("/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("store unreachable"), "{body}");
        flag.0.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz").await, (200, "ready\n".into()));
        let (code, body) = get("/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("t_up 0") && body.ends_with("# EOF\n"),
            "{body}"
        );
        get("/v1/x/1").await;
        get("/v1/x/2").await;
        get("/nowhere").await;
        let text = http.scrape("t").encode().unwrap();
        assert!(
            text.contains(r#"requests_total{method="GET",path="/v1/x/{id}",code="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"request_duration_seconds_count{method="GET",path="/v1/x/{id}"} 2"#),
            "{text}"
        );
        // Only the tracked router's routes are counted; the monitoring routes merged
        // after it are not.
        assert!(!text.contains("/readyz"), "{text}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
