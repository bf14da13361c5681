//! The one HTTP server shell and the one HTTP client constructor.
//!
//! Servers (E&A, SOS) build their axum [`Router`] with their own routes and bounds (body
//! limit, requests in flight) and hand it to [`serve`], which adds what every server needs
//! the same way: the peer's socket address for handlers that rate-limit by source
//! (`ConnectInfo<SocketAddr>`), and a graceful shutdown that stops accepting and finishes
//! the requests in flight. Clients get their `reqwest::Client` from [`client`], which
//! installs the rustls provider first (reqwest is built with `rustls-no-provider`).
//!
//! Every error answer of a p2psip service carries an [`ErrorBody`]; a client turns an
//! answer into its JSON value or that body with [`answer`] (or, for a body that is not
//! JSON, [`answer_bytes`]). A client of one service holds an [`Api`]: the client and the
//! service's base URL, requests made by path.

use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serve `router` on `listener` until `shutdown` resolves, then finish the requests in
/// flight and return. Handlers may extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    axum::serve(
        listener.tap_io(no_delay),
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// How a service's API is served: HTTPS (the default of every p2psip service) or, only
/// when the operator asked for it with `--insecure-http`, plain HTTP.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TLS with this configuration ([`crate::tls::server_config`]).
    Https(Arc<rustls::ServerConfig>),
    /// Plain HTTP: tokens, reports and rankings in cleartext. For loopback experiments.
    InsecureHttp,
}

impl Transport {
    /// The URL scheme clients use: `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Https(_) => "https",
            Transport::InsecureHttp => "http",
        }
    }
}

/// Serve `router` on `listener` over `transport` until `shutdown` resolves (see
/// [`serve`]). Plain HTTP is logged as a warning naming the address, once at start.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match transport {
        Transport::InsecureHttp => {
            tracing::warn!(
                "serving PLAIN HTTP on {} (--insecure-http): tokens, reports and rankings \
                 cross the network in cleartext; use it on loopback only",
                listener.local_addr()?
            );
            serve(listener, router, shutdown).await
        }
        Transport::Https(config) => {
            use axum::serve::ListenerExt;
            // `tap_io` only so that axum hands handlers the client's `SocketAddr`.
            let tls = crate::tls::TlsListener::new(listener, config)?.tap_io(no_tap);
            axum::serve(
                tls,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    }
}

fn no_tap(_: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {}

/// Answers go out as soon as they are written (`TCP_NODELAY`): an answer written in two
/// parts (headers, then body; or two TLS records) otherwise waits with its second part
/// for the client's acknowledgement of the first, which a client delays by up to 40 ms.
/// That was the SOS round trip's p99 at call set-up (46–51 ms against a p50 of 3).
pub(crate) fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
    }
}

/// An HTTPS client that believes `trust` only (see [`crate::tls::Trust`]); every request
/// gives up after `timeout`. `http://` URLs still work with it (for servers run with
/// `--insecure-http`).
pub fn client_trusting(
    timeout: Duration,
    trust: &crate::tls::Trust,
) -> Result<reqwest::Client, ClientBuildError> {
    client_for_service(timeout, trust, None)
}

/// [`client_trusting`] that also requires the servers' certificates to be made for
/// `service` (`enroll`, `sos`; see [`crate::tls::Trust::client_config_for`]).
pub fn client_for_service(
    timeout: Duration,
    trust: &crate::tls::Trust,
    service: Option<&str>,
) -> Result<reqwest::Client, ClientBuildError> {
    crate::crypto::install_provider();
    let tls = trust.client_config_for(service)?;
    // A peer asks its SOS at call set-up, rarely but in a hurry: a connection kept open
    // (no idle timeout, TCP keep-alive for what lies between) saves the TCP and TLS round
    // trips on the call's path. At most MAX_IDLE_PER_HOST are kept per server.
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(None)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .tcp_keepalive(Duration::from_secs(60))
        .tls_backend_preconfigured(tls)
        .build()?)
}

/// Idle connections a service client keeps per server (more are opened under load and
/// closed when done): a peer needs one or two per SOS instance; the demo's 512 peers share
/// one client and keep a ranking and a report batch or two in flight for each of its
/// calls in flight. With 8 kept, every burst above them opened a fresh TLS connection to
/// the SOS on some call's path (the SOS round trip's p99 was 43 ms against a p50 of 3).
/// A client only keeps as many as it once had in use at the same time.
const MAX_IDLE_PER_HOST: usize = 32;

/// Why [`client_trusting`] could not build a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// The trust material.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// reqwest.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// An HTTP(S) client whose every request (connect, send, read the whole answer) gives up
/// after `timeout`. TLS is rustls with ring, the provider installed first.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    crate::crypto::install_provider();
    reqwest::Client::builder().timeout(timeout).build()
}

/// A p2psip service's HTTP API at one base URL, as its typed clients (E&A, SOS) talk to it.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// The API at `base_url` (a trailing `/` is dropped), every request given up after
    /// `timeout` (see [`client`]), with no trust of its own: for a peer's local control
    /// endpoint (`http://127.0.0.1:7001`). The E&A and the SOS are reached with
    /// [`Api::with_trust`].
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: client(timeout)?,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// The API of `service` (`enroll`, `sos`) at `base_url`, with HTTPS verified by `trust`
    /// and the certificate required to be one for that service ([`client_for_service`]).
    pub fn with_trust(
        base_url: &str,
        timeout: Duration,
        trust: &crate::tls::Trust,
        service: &str,
    ) -> Result<Self, ClientBuildError> {
        Ok(Self {
            http: client_for_service(timeout, trust, Some(service))?,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A `method` request for `path` (from `/`), for the caller to add a body or headers to
    /// and hand to [`Api::call`] or [`Api::call_bytes`].
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Send `request` and read its answer as JSON (see [`answer`]).
    pub async fn call<T: DeserializeOwned>(
        request: reqwest::RequestBuilder,
    ) -> Result<T, AnswerError> {
        answer(request.send().await?).await
    }

    /// Send `request` and read its answer's bytes (see [`answer_bytes`]).
    pub async fn call_bytes(request: reqwest::RequestBuilder) -> Result<Vec<u8>, AnswerError> {
        answer_bytes(request.send().await?).await
    }
}

/// The body of every 4xx/5xx answer of a p2psip service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `bad_signature`, `token_used_up`.
    pub error: String,
    /// Human-readable detail.
    pub message: String,
}

/// Why [`answer`] has no value.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Transport failure, timeout, or a success answer that does not decode.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error status; `body` is its [`ErrorBody`] (or, when the
    /// answer is not one, code `http` with the answer's text as the message).
    #[error("server answered {status}: {} ({})", body.error, body.message)]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// The answer's body is longer than [`MAX_ANSWER_BYTES`]: not read further.
    #[error("the server's answer exceeds {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// A success answer whose body is not the JSON expected.
    #[error("the server's answer does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// `impl From<AnswerError> for $error`, for a service client's error type with a variant
/// for transport failures (`$http(reqwest::Error)`), one for answers that cannot be used
/// (`$answer(String)`: too large, or not the JSON expected) and one for refusals
/// (`$refused { status: u16, body: ErrorBody }`): every client maps them the same way.
#[macro_export]
macro_rules! answer_error_into {
    ($error:ty, $http:ident, $answer:ident, $refused:ident) => {
        impl From<$crate::http::AnswerError> for $error {
            fn from(e: $crate::http::AnswerError) -> Self {
                use $crate::http::AnswerError as A;
                match e {
                    A::Http(e) => Self::$http(e),
                    e @ (A::TooLarge { .. } | A::Decode(_)) => Self::$answer(e.to_string()),
                    A::Refused { status, body } => Self::$refused { status, body },
                }
            }
        }
    };
}

/// Longest answer body a client reads (a CRL or membership directory of a large overlay
/// stays far below it); a server that sends more is cut off instead of filling memory.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Read a service's answer: the JSON value of a success, or the error body of a refusal.
pub async fn answer<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, AnswerError> {
    let body = answer_bytes(resp).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Read a service's answer whose success is not JSON (a DER CRL, Prometheus text): its
/// bytes, or the error body of a refusal.
pub async fn answer_bytes(resp: reqwest::Response) -> Result<Vec<u8>, AnswerError> {
    if resp.status().is_success() {
        return read_capped(resp).await;
    }
    Err(refusal(resp).await)
}

/// The body of `resp`, at most [`MAX_ANSWER_BYTES`] of it.
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, AnswerError> {
    let limit = MAX_ANSWER_BYTES;
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(AnswerError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(AnswerError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The [`AnswerError`] of an error answer: its [`ErrorBody`], or its text as the message.
async fn refusal(resp: reqwest::Response) -> AnswerError {
    let status = resp.status();
    let bytes = match read_capped(resp).await {
        Ok(bytes) => bytes,
        Err(e) => return e,
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(ErrorBody {
        error: "http".into(),
        message: text,
    });
    AnswerError::Refused {
        status: status.as_u16(),
        body,
    }
}

/// A server on an ephemeral loopback port, for the server tests of this crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use axum::extract::ConnectInfo;
    use axum::routing::get;

    /// A router that answers `/who` with the client's IP address.
    pub(crate) fn who_router() -> Router {
        Router::new().route(
            "/who",
            get(|ConnectInfo(from): ConnectInfo<SocketAddr>| async move { from.ip().to_string() }),
        )
    }

    /// A running server: where it listens, what stops it gracefully, and the serving task.
    pub(crate) struct Running {
        pub(crate) addr: SocketAddr,
        pub(crate) stop: tokio::sync::oneshot::Sender<()>,
        pub(crate) task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    /// Serve `router` over `transport` on 127.0.0.1 and an ephemeral port.
    pub(crate) async fn start(router: Router, transport: Transport) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(listener, router, transport, async move {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Running, start, who_router};
    use super::*;
    use axum::routing::get;

    #[tokio::test]
    async fn serves_with_the_source_address_and_stops_gracefully() {
        let Running { addr, stop, task } = start(who_router(), Transport::InsecureHttp).await;
        let http = client(Duration::from_secs(5)).unwrap();
        let body = http
            .get(format!("http://{addr}/who"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "127.0.0.1");
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(http.get(format!("http://{addr}/who")).send().await.is_err());
    }

    #[tokio::test]
    async fn an_answer_longer_than_the_cap_is_refused_not_read() {
        let router = Router::new()
            .route("/big", get(|| async { vec![b'x'; MAX_ANSWER_BYTES + 1] }))
            .route("/fits", get(|| async { "[1,2,3]" }));
        let Running { addr, stop, task } = start(router, Transport::InsecureHttp).await;
        let http = client(Duration::from_secs(10)).unwrap();
        let big = http.get(format!("http://{addr}/big")).send().await.unwrap();
        assert!(matches!(
            answer_bytes(big).await,
            Err(AnswerError::TooLarge {
                limit: MAX_ANSWER_BYTES
            })
        ));
        let fits = http
            .get(format!("http://{addr}/fits"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer::<Vec<u8>>(fits).await.unwrap(), vec![1, 2, 3]);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_client_gives_up_after_its_timeout() {
        // A listener that accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let http = client(Duration::from_millis(200)).unwrap();
        let e = http
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap_err();
        assert!(e.is_timeout(), "{e}");
    }
}
