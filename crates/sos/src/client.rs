//! Typed async client for peers, CSPs and operators.
//!
//! Uses the services' HTTP client (`service::http::client`: reqwest with rustls, the ring
//! provider installed on first use).
//!
//! # Several SOS instances
//!
//! The base URL may be a comma-separated list (`https://a:7070,https://b:7070`): instances
//! that share one PostgreSQL database. The client talks to one of them and fails over:
//!
//! - A read (ranking, opinion, health, metrics) that finds its instance unreachable or
//!   answering 503 is asked of the next one, in the same call.
//! - A write is sent to the next instance in the same call only when the connection was
//!   refused (nothing was sent). Any other failure may have come after the write was
//!   stored, so the call fails — with the next instance chosen for the caller's retry,
//!   which resends the same signed report and takes `409 replayed_nonce` as "stored".
//!
//! The instance that answered last is tried first next time, by every clone.

use crate::api::{ErrorBody, Health, OpinionView, RankRequest, RankResponse, ReportAck};
use crate::{PeerId, SignedReport};
use reqwest::Method;
use service::http::{AnswerError, Api};
use service::tls::Trust;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use trust::{Discounting, Opinion};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not build the HTTP client.
    #[error("cannot build HTTP client: {0}")]
    Build(String),
    /// The server's success answer was too large or did not decode.
    #[error("unusable answer: {0}")]
    Answer(String),
    /// Transport failure, timeout, or an unreadable answer.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error status and body.
    #[error("server answered {status}: {} ({})", body.error, body.message)]
    Server {
        /// HTTP status.
        status: u16,
        /// The JSON error body.
        body: ErrorBody,
    },
    /// The base URL list names no SOS.
    #[error("no SOS URL given")]
    NoUrl,
}

service::answer_error_into!(ClientError, Http, Answer, Server);

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { body, .. } => Some(&body.error),
            _ => None,
        }
    }
}

/// The service name in the SOS's HTTPS certificate (`p2psip:service/sos`), which the client
/// requires: the certificate of another p2psip service does not pass for the SOS's.
pub const SERVICE: &str = "sos";

/// A connection to one SOS, or to several instances of it with failover.
#[derive(Debug, Clone)]
pub struct SosClient {
    apis: Arc<[Api]>,
    /// Index of the instance tried first.
    current: Arc<AtomicUsize>,
    admin_token: Option<String>,
}

/// Which failures move a call on to the next instance.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: any transport failure or 503.
    Read,
    /// Writes: only a refused connection (nothing was sent).
    Write,
}

impl SosClient {
    /// Client for the server at `base_url` (e.g. `https://sos.example.net:7070`), or for
    /// the instances of a comma-separated list of base URLs, believing a server only if
    /// `trust` does (the E&A CA from the node directory): a ranking or an opinion from
    /// anyone else is never read.
    pub fn new(base_url: &str, trust: &Trust) -> Result<Self, ClientError> {
        let apis = base_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                if u.starts_with("http://") {
                    tracing::warn!("SOS at {u}: plain HTTP, rankings and reports unprotected");
                }
                Api::with_trust(u, Duration::from_secs(10), trust, SERVICE)
                    .map_err(|e| ClientError::Build(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if apis.is_empty() {
            return Err(ClientError::NoUrl);
        }
        Ok(Self {
            apis: apis.into(),
            current: Arc::new(AtomicUsize::new(0)),
            admin_token: None,
        })
    }

    /// The base URLs of the instances this client knows, comma-separated as given.
    pub fn base_url(&self) -> String {
        self.apis
            .iter()
            .map(Api::base)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many instances this client knows.
    pub fn instances(&self) -> usize {
        self.apis.len()
    }

    /// Send the request `make` builds to the current instance, failing over as `retry`
    /// allows; the instance that answered becomes the current one.
    async fn call<T>(
        &self,
        retry: Retry,
        make: impl Fn(&Api) -> reqwest::RequestBuilder,
        read: impl AsyncFn(reqwest::RequestBuilder) -> Result<T, AnswerError>,
    ) -> Result<T, ClientError> {
        let n = self.apis.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            let res = read(make(&self.apis[i])).await;
            let next = match &res {
                Ok(_) => {
                    self.current.store(i, Ordering::Relaxed);
                    return res.map_err(ClientError::from);
                }
                Err(AnswerError::Http(e)) if e.is_connect() => true,
                Err(AnswerError::Http(_)) | Err(AnswerError::Refused { status: 503, .. }) => {
                    if retry == Retry::Write {
                        // Perhaps stored: the caller retries, on the next instance.
                        self.current.store((i + 1) % n, Ordering::Relaxed);
                        return res.map_err(ClientError::from);
                    }
                    true
                }
                Err(AnswerError::Refused { .. })
                | Err(AnswerError::TooLarge { .. })
                | Err(AnswerError::Decode(_)) => false,
            };
            if !next {
                self.current.store(i, Ordering::Relaxed);
                return res.map_err(ClientError::from);
            }
            last = Some(res);
        }
        self.current.store((first + 1) % n, Ordering::Relaxed);
        match last {
            Some(res) => res.map_err(ClientError::from),
            None => Err(ClientError::NoUrl),
        }
    }

    /// Use `token` for the admin calls.
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    fn admin(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(
            Retry::Read,
            |api| api.request(Method::GET, "/healthz"),
            Api::call,
        )
        .await
    }

    /// `GET /v1/opinions/{peer}`.
    pub async fn get_opinion(&self, peer: PeerId) -> Result<OpinionView, ClientError> {
        self.opinion(Method::GET, peer, None).await
    }

    /// `PUT /v1/opinions/{peer}` (admin).
    pub async fn put_opinion(
        &self,
        peer: PeerId,
        opinion: Opinion,
    ) -> Result<OpinionView, ClientError> {
        self.opinion(Method::PUT, peer, Some(&opinion)).await
    }

    /// `DELETE /v1/opinions/{peer}` (admin): back to evidence.
    pub async fn delete_opinion(&self, peer: PeerId) -> Result<OpinionView, ClientError> {
        self.opinion(Method::DELETE, peer, None).await
    }

    /// `method /v1/opinions/{peer}` with `body`: a read, or an admin's write (with the token).
    async fn opinion(
        &self,
        method: Method,
        peer: PeerId,
        body: Option<&Opinion>,
    ) -> Result<OpinionView, ClientError> {
        let path = format!("/v1/opinions/{peer}");
        let read = method == Method::GET;
        let retry = if read { Retry::Read } else { Retry::Write };
        let request = |api: &Api| {
            let rb = api.request(method.clone(), &path);
            let rb = match body {
                Some(o) => rb.json(o),
                None => rb,
            };
            if read { rb } else { self.admin(rb) }
        };
        self.call(retry, request, Api::call).await
    }

    /// `POST /v1/reports` with a report signed by [`crate::ReportSigner::sign`].
    pub async fn post_report(&self, report: &SignedReport) -> Result<ReportAck, ClientError> {
        self.post_json_text("/v1/reports", report.to_json()).await
    }

    /// `POST path` with `body`, JSON text the report's own encoder wrote
    /// ([`SignedReport::to_json`], [`crate::SignedBatch::to_json`]); the answer read as `T`.
    async fn post_json_text<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: String,
    ) -> Result<T, ClientError> {
        self.call(
            Retry::Write,
            |api| {
                api.request(Method::POST, path)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            },
            Api::call,
        )
        .await
    }

    /// The paper's worked example ([`trust::paper`]) on this SOS: set its four opinions
    /// (admin) and rank its two routes over HTTP; the ranking as [`trust::paper::rank`]
    /// makes it in process, to compare with [`trust::paper::EXPECTED`].
    pub async fn rank_paper_example(&self) -> Result<Vec<trust::RankedRoute<u128>>, ClientError> {
        for (p, ..) in trust::paper::OPINIONS {
            self.put_opinion(PeerId(p), trust::paper::opinion_of(p))
                .await?;
        }
        let routes = trust::paper::routes();
        let asked = routes
            .iter()
            .map(|r| r.iter().copied().map(PeerId).collect())
            .collect();
        let ranked = self.rank(asked).await?.ranked;
        Ok(ranked
            .into_iter()
            .enumerate()
            .map(|(place, r)| {
                let route: Vec<u128> = r.route.iter().map(|p| p.0).collect();
                let index = routes.iter().position(|x| *x == route).unwrap_or(place);
                trust::RankedRoute {
                    route,
                    opinion: r.opinion,
                    expectation: r.expectation,
                    index,
                }
            })
            .collect())
    }

    /// `POST /v1/reports/batch`: `batch` (1 to [`crate::MAX_BATCH`] reports under one
    /// signature) in one request; the answer holds each report's status, in order.
    pub async fn post_reports(
        &self,
        batch: &crate::SignedBatch,
    ) -> Result<Vec<crate::BatchItem>, ClientError> {
        self.post_json_text("/v1/reports/batch", batch.to_json())
            .await
    }

    /// `POST /v1/routes/rank` with the classic operator: best route first.
    pub async fn rank(&self, routes: Vec<Vec<PeerId>>) -> Result<RankResponse, ClientError> {
        self.rank_with(routes, Discounting::Classic).await
    }

    /// `POST /v1/routes/rank` with a chosen operator.
    pub async fn rank_with(
        &self,
        routes: Vec<Vec<PeerId>>,
        discounting: Discounting,
    ) -> Result<RankResponse, ClientError> {
        let req = RankRequest {
            routes,
            discounting,
        };
        self.call(
            Retry::Read,
            |api| api.request(Method::POST, "/v1/routes/rank").json(&req),
            Api::call,
        )
        .await
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let bytes = self
            .call(
                Retry::Read,
                |api| api.request(Method::GET, "/metrics"),
                Api::call_bytes,
            )
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
