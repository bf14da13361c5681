//! The E&A server: data directory (CA files + database), enrollment and renewal logic, and
//! the axum HTTP shell.
//!
//! Data directory layout: `ca-key.pem` (PKCS#8, mode 0600, created on first start),
//! `ca.pem` (CA certificate), `enroll.sqlite3` (+ WAL files). The ID width and layer
//! boundaries are pinned in the database at first start; starting again with other values
//! is refused.
//!
//! **Several instances.** With the database on PostgreSQL ([`EnrollServer::open_with`]),
//! instances that share the CA files share everything else through the database: tokens
//! are used once whichever instance is asked, a Node-ID raced by two instances is retried
//! by the loser, and the CRL's contents, number and validity depend only on the database
//! and the clock's half-validity period, so every instance publishes the same list.
//!
//! **Renewal.** `POST /v1/renew` takes the current certificate and a fresh CSR. The
//! certificate must chain to this CA, be one this server issued and did not revoke, and be
//! unexpired or expired less than `renew_grace` ago; the CSR must be signed by the same key
//! (same SubjectPublicKeyInfo). The new certificate keeps the Node-ID, layer and role. A
//! replayed renewal only yields a certificate for a key the replayer does not hold.

use crate::api::{
    BootstrapPeer, DirectoryEntry, DirectoryResponse, EnrollRequest, EnrollResponse, ErrorBody,
    OverlayParams, RenewRequest, ServiceUrls,
};
use crate::cert::{self, Binding, Ca, CertError, Csr, VerifyError};
use crate::ids::{self, IdScheme};
use crate::layer::{self, CapabilityError, Layer, LayerArcs, LayerArcsError, LayerRule, Role};
use crate::ratelimit::{RateLimitConfig, RateLimiter};
use crate::store::{CertRow, NodeRow, Store, StoreError};
use crate::token;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use overlay::{IdSpace, NodeId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ring::rand::{SecureRandom, SystemRandom};
use service::postgres::PgOptions;
use service::sync::lock;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// CA private key file name in the data directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// CA certificate file name in the data directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// Most members `GET /v1/directory` lists (CSPGs and CSPs first).
pub const MAX_DIRECTORY: usize = 20_000;
/// Database file name in the data directory.
pub const DB_FILE: &str = "enroll.sqlite3";

/// Server configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// ID width m (paper scenario: 11; production: 128).
    pub id_bits: u32,
    /// Layer boundaries `[b1, b2]` (layer 1 = `[0,b1)`, 2 = `[b1,b2)`, 3 = rest); default
    /// equal thirds.
    pub layer_bounds: Option<[u128; 2]>,
    /// ID assignment scheme.
    pub id_scheme: IdScheme,
    /// Layer rule thresholds.
    pub layer_rule: LayerRule,
    /// Certificate validity.
    pub cert_validity: Duration,
    /// How long after expiry a certificate may still be renewed.
    pub renew_grace: Duration,
    /// CRL validity (nextUpdate − thisUpdate).
    pub crl_validity: Duration,
    /// The SOS, STUN and TURN servers handed to peers.
    pub services: ServiceUrls,
    /// Configured bootstrap peers (added after those from the database).
    pub bootstrap: Vec<BootstrapPeer>,
    /// Maximum request body, bytes.
    pub body_limit: usize,
    /// Per-source rate limit of POST requests.
    pub rate_limit: RateLimitConfig,
    /// Per-token rate limit of enrollments: how fast one token, however many uses it has
    /// left, may enroll identities (default [`RateLimitConfig::per_token`]: 512 at once,
    /// then one a second). A leaked multi-use token yields a Sybil operator `burst`
    /// identities at once and `per_sec` after that, from any number of addresses, until
    /// the operator revokes it; its use count caps the total. Each instance of a
    /// multi-instance E&A keeps its own table.
    pub token_rate_limit: RateLimitConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            id_bits: 128,
            layer_bounds: None,
            id_scheme: IdScheme::Location,
            layer_rule: LayerRule::default(),
            cert_validity: Duration::from_secs(24 * 3600),
            renew_grace: Duration::from_secs(3600),
            crl_validity: Duration::from_secs(3600),
            services: ServiceUrls::default(),
            bootstrap: Vec::new(),
            body_limit: 16 * 1024,
            rate_limit: RateLimitConfig::default(),
            token_rate_limit: RateLimitConfig::per_token(),
        }
    }
}

/// Errors starting the server or running operator commands (local problems).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// File system.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// CA material.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad ID width.
    #[error(transparent)]
    Id(#[from] overlay::IdError),
    /// Bad layer boundaries.
    #[error(transparent)]
    Arcs(#[from] LayerArcsError),
    /// Token generation.
    #[error(transparent)]
    Token(#[from] token::TokenError),
    /// The server's own TLS material.
    #[error(transparent)]
    Tls(#[from] service::tls::TlsError),
}

/// Layer boundaries as an operator writes them (`p2psip enroll-server --layer-bounds`) and
/// the data directory pins them: `B1,B2`, layer 1 = [0,B1), 2 = [B1,B2), 3 = [B2,2^m)
/// ([`ServerConfig::layer_bounds`]; whether they fit the ID width is checked at start).
pub fn parse_layer_bounds(s: &str) -> Result<[u128; 2], LayerBoundsError> {
    let (b1, b2) = s.split_once(',').ok_or(LayerBoundsError::Shape)?;
    Ok([b1.trim().parse()?, b2.trim().parse()?])
}

/// Layer boundaries that are not `B1,B2`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerBoundsError {
    /// Not two values separated by a comma.
    #[error("want B1,B2")]
    Shape,
    /// A boundary is not a decimal number below 2^128.
    #[error("a boundary is not a decimal number")]
    Number(#[from] std::num::ParseIntError),
}

/// How long a service certificate the E&A issues itself at start is valid: it is made
/// afresh at every start.
pub const OWN_CERT_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// The names a server's certificate holds: the operator's public names (DNS names or
/// addresses), the address it listens on unless that is the unspecified address, and
/// `localhost` when it listens on loopback.
pub fn service_names(listen: SocketAddr, public: &[String]) -> Vec<String> {
    let mut names: Vec<String> = public.to_vec();
    let ip = listen.ip();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    if ip.is_loopback() {
        names.push("localhost".into());
    }
    names.dedup();
    names
}

/// Issue a service certificate from `ca`, valid from an hour ago for `validity`.
fn issue_service(
    ca: &Ca,
    role: cert::ServiceRole,
    names: &[String],
    validity: Duration,
) -> Result<cert::ServiceCert, ServerError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CertError::Ca("rng failed".into()))?;
    let now = unix_now();
    let until = now.saturating_add(i64::try_from(validity.as_secs()).unwrap_or(i64::MAX));
    Ok(ca.issue_service(role, names, serial, now - 3600, until)?)
}

/// Current unix time in seconds, as certificates and the database count it (signed).
pub fn unix_now() -> i64 {
    i64::try_from(service::time::unix_secs()).unwrap_or(i64::MAX)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::Io(path.to_path_buf(), e)
}

/// Write a new file with mode 0600 (fails if it exists), synced.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// The data directory: CA and database.
#[derive(Debug)]
pub struct DataDir {
    ca: Ca,
    store: Store,
}

impl DataDir {
    /// Open `dir`, creating it, the CA (key mode 0600) and the database on first use.
    pub fn open(dir: &Path) -> Result<Self, ServerError> {
        Self::open_with(dir, None)
    }

    /// Open `dir` for its CA, with the database in `dir` (`None`) or on PostgreSQL shared
    /// with other E&A instances. Those instances share the CA by its files (copy `ca.pem`
    /// and `ca-key.pem`, or point them at one directory): the key never goes into the
    /// database. The database pins the CA certificate's SHA-256 on first use, so an
    /// instance started with another CA is refused instead of issuing from a second one.
    pub fn open_with(dir: &Path, postgres: Option<PgOptions>) -> Result<Self, ServerError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let ca = if key_path.exists() {
            let key = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            let crt = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            Ca::from_pem(&crt, &key)?
        } else {
            let ca = Ca::generate("p2psip E&A CA", unix_now(), 10)?;
            // Certificate first: a key without a certificate would be unusable, a
            // certificate without a key is simply replaced next start.
            std::fs::write(&cert_path, ca.cert_pem()).map_err(io_err(&cert_path))?;
            write_private(&key_path, ca.key_pem().as_bytes()).map_err(io_err(&key_path))?;
            ca
        };
        let store = match postgres {
            None => Store::open(&dir.join(DB_FILE))?,
            Some(pg) => {
                let store = Store::open_postgres(pg)?;
                let ca_hash = ring::digest::digest(&ring::digest::SHA256, ca.cert_der());
                store.pin_meta("ca_cert_sha256", &token::hex(ca_hash.as_ref()))?;
                store
            }
        };
        Ok(Self { ca, store })
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Create a token for `role` with `uses` uses, valid `ttl`; returns the token text
    /// (shown once, stored hashed).
    pub fn create_token(
        &self,
        role: Role,
        layer: Option<Layer>,
        uses: u32,
        ttl: Duration,
    ) -> Result<String, ServerError> {
        let t = token::generate()?;
        let now = unix_now();
        let exp = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        self.store
            .add_token(&token::hash(&t), role, layer, uses, exp, now)?;
        Ok(t)
    }

    /// Issue a server certificate for a service (`enroll-server sos-cert` for the SOS)
    /// under `names`, valid `validity`. The key is new and returned once; nothing is stored.
    pub fn issue_service_cert(
        &self,
        role: cert::ServiceRole,
        names: &[String],
        validity: Duration,
    ) -> Result<cert::ServiceCert, ServerError> {
        issue_service(&self.ca, role, names, validity)
    }

    /// Issue a service certificate (see [`DataDir::issue_service_cert`]) and write it into
    /// `out` (created) as a service's `--tls` directory reads it: `key.pem` (mode 0600, an
    /// existing one is refused), `chain.pem` (certificate, then CA) and `ca.pem`.
    pub fn write_service_cert(
        &self,
        role: cert::ServiceRole,
        names: &[String],
        validity: Duration,
        out: &Path,
    ) -> Result<(), ServerError> {
        let cert = self.issue_service_cert(role, names, validity)?;
        std::fs::create_dir_all(out).map_err(io_err(out))?;
        let key = out.join(crate::client::KEY_FILE);
        write_private(&key, cert.key_pem.as_bytes()).map_err(io_err(&key))?;
        for (file, text) in [
            (crate::client::CHAIN_FILE, cert.chain_pem.as_str()),
            (crate::client::CA_FILE, self.ca().cert_pem()),
        ] {
            let p = out.join(file);
            std::fs::write(&p, text).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Revoke a node's certificates. `None` when the node is unknown.
    pub fn revoke(&mut self, node: NodeId) -> Result<Option<usize>, ServerError> {
        Ok(self.store.revoke_node(node, unix_now())?)
    }

    /// Number of certificates ever issued.
    pub fn cert_count(&self) -> Result<i64, ServerError> {
        Ok(self.store.cert_count()?)
    }

    /// What `GET /v1/directory` lists: each node that is not revoked, its advertised
    /// address and newest valid certificate (DER), at most [`MAX_DIRECTORY`] nodes.
    pub fn directory(&self) -> Result<Vec<crate::store::DirectoryRow>, ServerError> {
        Ok(self.store.directory(unix_now(), MAX_DIRECTORY)?)
    }
}

/// The code of a store conflict with another instance (same Node-ID chosen at once): the
/// enrollment is run again before anyone sees it.
const CONFLICT: &str = "conflict";

/// How often an enrollment that lost a race with another instance is run again.
const CONFLICT_RETRIES: usize = 8;

/// The code of a database that is unreachable or restarting before anything was
/// committed: the enrollment is run again for up to [`DATABASE_PATIENCE`].
const UNAVAILABLE: &str = "storage_unavailable";

/// How long an enrollment waits for a lost database before answering 503.
const DATABASE_PATIENCE: Duration = Duration::from_secs(8);

/// A commit whose outcome is unknown (the connection broke during it) is never run again
/// by the server: it may have committed, and the token would then be used twice.
fn commit(tx: crate::store::Tx<'_>) -> Result<(), ApiError> {
    tx.commit().map_err(|e| {
        if e.is_unavailable() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                format!("the database went away during the commit: {e}"),
            )
        } else {
            e.into()
        }
    })
}

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        } else {
            tracing::debug!(code = self.code, status = %self.status, "{}", self.message);
        }
        let body = ErrorBody {
            error: self.code.into(),
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<CertError> for ApiError {
    fn from(e: CertError) -> Self {
        let (s, c) = match &e {
            CertError::MalformedCsr(_) => (StatusCode::BAD_REQUEST, "malformed_csr"),
            CertError::CsrSignature => (StatusCode::BAD_REQUEST, "csr_signature"),
            CertError::UnsupportedKey => (StatusCode::BAD_REQUEST, "unsupported_key"),
            CertError::MalformedCert(_) | CertError::Binding(_) => {
                (StatusCode::UNAUTHORIZED, "bad_certificate")
            }
            CertError::Ca(_) | CertError::Generate(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(s, c, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (s, c) = match &e {
            StoreError::TokenUnknown => (StatusCode::UNAUTHORIZED, "token_unknown"),
            StoreError::TokenExpired => (StatusCode::UNAUTHORIZED, "token_expired"),
            StoreError::TokenUsedUp => (StatusCode::UNAUTHORIZED, "token_used_up"),
            e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
            e if e.is_conflict() => (StatusCode::CONFLICT, CONFLICT),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(s, c, e.to_string())
    }
}

impl From<CapabilityError> for ApiError {
    fn from(e: CapabilityError) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_capabilities",
            e.to_string(),
        )
    }
}

struct CrlCache {
    version: i64,
    made_at: i64,
    number: u64,
    der: Vec<u8>,
}

/// The server's shared state (one per process).
struct Shared {
    config: ServerConfig,
    space: IdSpace,
    arcs: LayerArcs,
    overlay: OverlayParams,
    ca: Ca,
    store: Mutex<Store>,
    limiter: Mutex<RateLimiter>,
    /// Per-token enrollment rate, keyed by the token's hash.
    token_limiter: Mutex<RateLimiter<String>>,
    crl: Mutex<Option<CrlCache>>,
    rng: SystemRandom,
    metrics: crate::metrics::Metrics,
}

/// The E&A server, ready to serve.
#[derive(Clone)]
pub struct EnrollServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EnrollServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollServer")
            .field("ca", &self.shared.ca)
            .finish_non_exhaustive()
    }
}

impl EnrollServer {
    /// Open the data directory and check the overlay parameters against it.
    pub fn open(dir: &Path, config: ServerConfig) -> Result<Self, ServerError> {
        Self::open_with(dir, None, config)
    }

    /// [`EnrollServer::open`] with the database on PostgreSQL (`Some`), shared with other
    /// instances that hold the same CA files ([`DataDir::open_with`]).
    pub fn open_with(
        dir: &Path,
        postgres: Option<PgOptions>,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        let space = IdSpace::new(config.id_bits)?;
        let arcs = match config.layer_bounds {
            Some([b1, b2]) => LayerArcs::from_bounds(space, b1, b2)?,
            None => LayerArcs::thirds(space)?,
        };
        let DataDir { ca, store } = DataDir::open_with(dir, postgres)?;
        store.pin_meta("id_bits", &space.bits().to_string())?;
        let [_, b1, b2] = arcs.starts();
        store.pin_meta("layer_bounds", &format!("{b1},{b2}"))?;
        let overlay = OverlayParams::new(&arcs, config.id_scheme);
        Ok(Self {
            shared: Arc::new(Shared {
                limiter: Mutex::new(RateLimiter::new(config.rate_limit)),
                token_limiter: Mutex::new(RateLimiter::new(config.token_rate_limit)),
                config,
                space,
                arcs,
                overlay,
                ca,
                store: Mutex::new(store),
                crl: Mutex::new(None),
                rng: SystemRandom::new(),
                metrics: crate::metrics::Metrics::default(),
            }),
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.shared.ca.cert_pem()
    }

    /// The CA's fingerprint, what clients pin (`p2psip enroll --ca-fingerprint`).
    pub fn ca_fingerprint(&self) -> String {
        self.shared.ca.fingerprint()
    }

    /// The axum router (`/v1/enroll`, `/v1/renew`, `/v1/crl`, `/v1/ca`, `/v1/directory`;
    /// `/metrics`, `/healthz`, `/readyz` for monitoring, ready when the database answers).
    pub fn router(&self) -> Router {
        let app = Router::new()
            .route("/v1/enroll", post(issue_handler::<EnrollRequest>))
            .route("/v1/renew", post(issue_handler::<RenewRequest>))
            .route("/v1/crl", get(crl_handler))
            .route("/v1/ca", get(ca_handler))
            .route("/v1/directory", get(directory_handler))
            .merge(service::monitor::routes(Probe(self.shared.clone())));
        service::monitor::track(app, self.shared.metrics.http.clone())
            .layer(DefaultBodyLimit::max(self.shared.config.body_limit))
            .with_state(self.shared.clone())
    }

    /// HTTPS for this server under `names` ([`service_names`]): a certificate for the
    /// E&A's own API issued by its CA on a new key (made afresh at every start, valid
    /// [`OWN_CERT_VALIDITY`]).
    pub fn https(&self, names: &[String]) -> Result<service::http::Transport, ServerError> {
        let own = issue_service(
            &self.shared.ca,
            cert::ServiceRole::Enroll,
            names,
            OWN_CERT_VALIDITY,
        )?;
        let tls = service::tls::server_config(&own.chain_pem, &own.key_pem)?;
        Ok(service::http::Transport::Https(tls))
    }

    /// Serve HTTPS on `listener` until `shutdown` resolves, under the names of the address
    /// it is bound to ([`service_names`]).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let names = service_names(listener.local_addr()?, &[]);
        let transport = self.https(&names).map_err(std::io::Error::other)?;
        self.serve_with(listener, transport, shutdown).await
    }

    /// Serve on `listener` over `transport` until `shutdown` resolves.
    pub async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        transport: service::http::Transport,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        service::http::serve_with(listener, self.router(), transport, shutdown).await
    }

    /// Enroll directly (no HTTP): what `POST /v1/enroll` does, from `source`.
    pub fn enroll(&self, req: &EnrollRequest, source: IpAddr) -> Result<EnrollResponse, ApiError> {
        // PostgreSQL's client blocks: off the async runtime if called from it.
        let out = service::postgres::off_runtime(|| self.shared.enroll(req, source, unix_now()));
        self.shared.metrics.enrollment(outcome(&out));
        out
    }
}

impl Shared {
    fn seeded_rng(&self) -> Result<ChaCha8Rng, ApiError> {
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed).map_err(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "rng failed")
        })?;
        Ok(ChaCha8Rng::from_seed(seed))
    }

    fn serial(&self) -> Result<[u8; 16], ApiError> {
        let mut s = [0u8; 16];
        self.rng.fill(&mut s).map_err(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "rng failed")
        })?;
        Ok(s)
    }

    fn validity(&self, now: i64) -> (i64, i64) {
        let v = i64::try_from(self.config.cert_validity.as_secs()).unwrap_or(86_400);
        (now - 300, now + v)
    }

    fn response(
        &self,
        binding: &Binding,
        der: &[u8],
        not_after: i64,
        bootstrap: Vec<BootstrapPeer>,
    ) -> EnrollResponse {
        let mut bootstrap = bootstrap;
        bootstrap.extend(self.config.bootstrap.iter().cloned());
        EnrollResponse {
            node_id: binding.node_id,
            layer: binding.layer,
            role: binding.role,
            chain: format!(
                "{}{}",
                cert::der_to_pem(der, "CERTIFICATE"),
                self.ca.cert_pem()
            ),
            ca: self.ca.cert_pem().to_string(),
            not_after,
            overlay: self.overlay.clone(),
            bootstrap,
            services: self.config.services.clone(),
        }
    }

    /// Enroll, running again when another instance committed the same Node-ID first (the
    /// losing transaction rolled back, its token use with it).
    fn enroll(
        &self,
        req: &EnrollRequest,
        source: IpAddr,
        now: i64,
    ) -> Result<EnrollResponse, ApiError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.enroll_once(req, source, now) {
                Err(e) if e.code == CONFLICT && tries < CONFLICT_RETRIES => {
                    tracing::debug!("enrollment raced another instance, running it again");
                }
                // Nothing was committed: wait for the database to come back.
                Err(e) if e.code == UNAVAILABLE && started.elapsed() < DATABASE_PATIENCE => {
                    tracing::warn!("database unavailable, enrollment waits: {}", e.message);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    fn enroll_once(
        &self,
        req: &EnrollRequest,
        source: IpAddr,
        now: i64,
    ) -> Result<EnrollResponse, ApiError> {
        if req.token.len() > 256 {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_unknown",
                "token too long",
            ));
        }
        req.capabilities.validate()?;
        if let Some(loc) = req.location {
            layer::validate_location(loc.lat, loc.lon)?;
        }
        let csr = Csr::from_pem(&req.csr)?;
        let spki = csr.spki_der();
        let spki_hex = token::hex(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref());
        let mut rng = self.seeded_rng()?;
        let serial = self.serial()?;

        let mut store = lock(&self.store);
        let tx = store.begin()?;
        let token_hash = token::hash(&req.token);
        let tok = tx.take_token(&token_hash, now)?;
        // A valid token enrolling faster than its rate: refused before anything is
        // committed, so the use is not spent.
        if !lock(&self.token_limiter).check(token_hash, Instant::now()) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "token_rate_limited",
                "this token enrolls too many identities too fast",
            ));
        }
        let role = req.role.unwrap_or(tok.role);
        if role != tok.role {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_role",
                format!("this token enrolls a {}, not a {role}", tok.role),
            ));
        }
        let layer = self
            .config
            .layer_rule
            .assign(&req.capabilities, role, tok.layer)?;
        let arc = self.arcs.arc(layer);
        let space = self.space;
        let scheme = self.config.id_scheme;
        let location = req.location;
        let node_id = ids::choose_unique(
            space,
            arc,
            |attempt| match (scheme, location) {
                (IdScheme::Sha1, _) => ids::assign_sha1_id(space, arc, &spki, attempt),
                (IdScheme::Location, Some(l)) => {
                    ids::assign_location_id(space, arc, l.lat, l.lon, &mut rng)
                }
                (IdScheme::Location, None) => ids::assign_prefix_id(space, arc, source, &mut rng),
            },
            |id| tx.id_taken(id),
        )?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "id_space_full",
                format!("no free Node-ID near the requested place in layer {layer}"),
            )
        })?;
        let binding = Binding {
            node_id,
            layer,
            role,
        };
        let (not_before, not_after) = self.validity(now);
        let der = self
            .ca
            .issue(&csr, &binding, serial, not_before, not_after)?;
        let serial_hex = token::hex(&cert::identity_from_cert(&der)?.serial);
        tx.insert_node(
            &NodeRow {
                node_id,
                layer,
                role,
                spki_sha256: spki_hex,
                listen: req.listen.map(|a| a.to_string()),
                location: location.map(|l| (l.lat, l.lon)),
                source: source.to_string(),
            },
            now,
        )?;
        tx.insert_cert(
            &CertRow {
                serial: serial_hex,
                node_id,
                not_before,
                not_after,
                der: der.to_vec(),
            },
            now,
        )?;
        let bootstrap = tx.bootstrap(layer, node_id, 8, 2)?;
        commit(tx)?;
        drop(store);
        tracing::info!(%node_id, %layer, %role, %source, "enrolled");
        Ok(self.response(&binding, &der, not_after, bootstrap))
    }

    fn renew(&self, req: &RenewRequest, now: i64) -> Result<EnrollResponse, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "bad_certificate", m);
        let current = cert::pem_to_der(&req.certificate, "CERTIFICATE")
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| bad("no certificate given".into()))?;
        let csr = Csr::from_pem(&req.csr)?;
        let claimed = cert::identity_from_cert(&current)?;
        let grace = i64::try_from(self.config.renew_grace.as_secs()).unwrap_or(0);
        if now > claimed.not_after.saturating_add(grace) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "certificate_expired",
                "certificate expired beyond the renewal grace period; enroll again",
            ));
        }
        // Validate the chain at a time inside its validity when within the grace period.
        let at = now.min(claimed.not_after - 1).max(0) as u64;
        let who = cert::verify_peer_chain(
            self.ca.cert_der(),
            &[current.clone().into()],
            &[],
            rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(at)),
        )
        .map_err(|e: VerifyError| bad(e.to_string()))?;
        let mut spki_hash = [0u8; 32];
        spki_hash
            .copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &csr.spki_der()).as_ref());
        if spki_hash != who.spki_sha256 {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "key_mismatch",
                "the CSR is not signed by the certificate's key",
            ));
        }
        let serial = self.serial()?;
        let mut store = lock(&self.store);
        let tx = store.begin()?;
        let status = tx
            .cert_status(&token::hex(&who.serial))?
            .ok_or_else(|| bad("certificate not issued by this server".into()))?;
        if status.revoked_at.is_some() || status.node_id != who.node_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "revoked",
                "certificate or node revoked",
            ));
        }
        let binding = Binding {
            node_id: who.node_id,
            layer: who.layer,
            role: who.role,
        };
        let (not_before, not_after) = self.validity(now);
        let der = self
            .ca
            .issue(&csr, &binding, serial, not_before, not_after)?;
        tx.insert_cert(
            &CertRow {
                serial: token::hex(&cert::identity_from_cert(&der)?.serial),
                node_id: who.node_id,
                not_before,
                not_after,
                der: der.to_vec(),
            },
            now,
        )?;
        let bootstrap = tx.bootstrap(who.layer, who.node_id, 8, 2)?;
        commit(tx)?;
        drop(store);
        tracing::info!(node_id = %who.node_id, "renewed");
        Ok(self.response(&binding, &der, not_after, bootstrap))
    }

    /// The signed CRL, remade when a revocation happened or half its validity passed.
    ///
    /// On a database shared by several instances every instance must publish the same
    /// list: its issue time and number come from the database and the clock's current
    /// half-validity period (the later of the period's start and the newest revocation;
    /// the number is that time, shifted, plus the revocation count), not from when this
    /// instance happened to be asked. Only the ECDSA signature differs between instances.
    fn crl(&self, now: i64) -> Result<Vec<u8>, ApiError> {
        let ((version, newest), revoked, shared) = {
            let store = lock(&self.store);
            (
                store.revocation_version()?,
                store.revoked(now)?,
                store.is_shared(),
            )
        };
        let validity = i64::try_from(self.config.crl_validity.as_secs()).unwrap_or(3600);
        let half = (validity / 2).max(1);
        let made_at = if shared {
            (now - now.rem_euclid(half)).max(newest)
        } else {
            now
        };
        let mut cache = lock(&self.crl);
        if let Some(c) = cache.as_ref()
            && c.version == version
            && (if shared {
                c.made_at == made_at
            } else {
                now < c.made_at + half
            })
        {
            return Ok(c.der.clone());
        }
        let number = if shared {
            (u64::try_from(made_at).unwrap_or(0) << 16)
                | (u64::try_from(version).unwrap_or(0) & 0xffff)
        } else {
            cache
                .as_ref()
                .map_or(0, |c| c.number + 1)
                .max(u64::try_from(now).unwrap_or(0))
        };
        let der = self
            .ca
            .crl(&revoked, made_at - 60, made_at + validity, number)?;
        *cache = Some(CrlCache {
            version,
            made_at,
            number,
            der: der.clone(),
        });
        Ok(der)
    }

    fn directory(&self, now: i64) -> Result<DirectoryResponse, ApiError> {
        let rows = lock(&self.store).directory(now, MAX_DIRECTORY)?;
        let members = rows
            .into_iter()
            .map(|(_, listen, der)| DirectoryEntry {
                addr: listen.and_then(|a| a.parse().ok()),
                chain: format!(
                    "{}{}",
                    cert::der_to_pem(&der, "CERTIFICATE"),
                    self.ca.cert_pem()
                ),
            })
            .collect();
        Ok(DirectoryResponse { members })
    }

    fn admit(&self, source: IpAddr) -> Result<(), ApiError> {
        if lock(&self.limiter).check(source, Instant::now()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this address",
            ))
        }
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        ApiError::new(status, code, r.body_text())
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

/// A request that gets a certificate: `POST /v1/enroll` and `POST /v1/renew` differ only
/// in the work done and in what the metrics count.
trait Issue: serde::de::DeserializeOwned + Send + 'static {
    /// Do the work, on a blocking thread.
    fn issue(&self, s: &Shared, source: IpAddr, now: i64) -> Result<EnrollResponse, ApiError>;
    /// Count the answer: ok, or its error code.
    fn count(m: &crate::metrics::Metrics, outcome: Result<(), &'static str>);
}

impl Issue for EnrollRequest {
    fn issue(&self, s: &Shared, source: IpAddr, now: i64) -> Result<EnrollResponse, ApiError> {
        s.enroll(self, source, now)
    }

    fn count(m: &crate::metrics::Metrics, outcome: Result<(), &'static str>) {
        m.enrollment(outcome);
    }
}

impl Issue for RenewRequest {
    fn issue(&self, s: &Shared, _: IpAddr, now: i64) -> Result<EnrollResponse, ApiError> {
        s.renew(self, now)
    }

    fn count(m: &crate::metrics::Metrics, outcome: Result<(), &'static str>) {
        m.renewal(outcome);
    }
}

/// `POST /v1/enroll` or `/v1/renew`: admit the source, parse the request, issue, count.
async fn issue_handler<R: Issue>(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EnrollResponse>, ApiError> {
    let counted = s.clone();
    let out = async move {
        s.admit(peer.ip())?;
        let req: R = parse_body(body)?;
        blocking(move || req.issue(&s, peer.ip(), unix_now())).await
    }
    .await;
    R::count(&counted.metrics, outcome(&out));
    Ok(axum::Json(out?))
}

/// How an enrollment or renewal is counted: ok, or its error code.
fn outcome<T>(r: &Result<T, ApiError>) -> Result<(), &'static str> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e.code),
    }
}

/// `GET /metrics`, `/healthz`, and `/readyz` (the database answers).
#[derive(Clone)]
struct Probe(Arc<Shared>);

impl service::monitor::Probe for Probe {
    async fn metrics(&self) -> Result<String, String> {
        let s = self.0.clone();
        let db = tokio::task::spawn_blocking(move || lock(&s.store).counts(unix_now()))
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = &db {
            tracing::warn!("metrics without the database's numbers: {e}");
        }
        self.0.metrics.render(db.ok())
    }

    async fn ready(&self) -> Result<(), String> {
        let s = self.0.clone();
        tokio::task::spawn_blocking(move || lock(&s.store).ping())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the database does not answer: {e}"))
    }
}

async fn crl_handler(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let der = blocking(move || s.crl(unix_now())).await?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response())
}

async fn directory_handler(
    State(s): State<Arc<Shared>>,
) -> Result<axum::Json<DirectoryResponse>, ApiError> {
    let out = blocking(move || s.directory(unix_now())).await?;
    Ok(axum::Json(out))
}

async fn ca_handler(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca.cert_pem().to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_bounds_read_as_pinned() {
        assert_eq!(parse_layer_bounds("683, 1365"), Ok([683, 1365]));
        assert_eq!(parse_layer_bounds("683"), Err(LayerBoundsError::Shape));
        assert!(matches!(
            parse_layer_bounds("683,x"),
            Err(LayerBoundsError::Number(_))
        ));
    }
}
