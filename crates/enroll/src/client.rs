//! Client side: talk to an E&A server and write a node directory a peer starts from.
//!
//! Node directory (`p2psip enroll --out DIR`): `key.pem` (PKCS#8, mode 0600), `chain.pem`
//! (own certificate then CA), `ca.pem`, and `node.json` ([`NodeConfig`]).

use crate::api::{EnrollRequest, EnrollResponse, ErrorBody, NodeConfig, RenewRequest};
use reqwest::Method;
use service::http::{Api, ClientBuildError};
use service::tls::Trust;
use std::path::Path;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Transport or decoding failure.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The server's success answer was too large or did not decode.
    #[error("unusable answer: {0}")]
    Answer(String),
    /// The TLS trust given to the client is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] service::tls::TlsError),
    /// The server refused the request.
    #[error("server refused ({status}): {} — {}", .body.error, .body.message)]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error body.
        body: ErrorBody,
    },
    /// The CA certificate did not match the pinned fingerprint.
    #[error("CA fingerprint {got} does not match the pinned {want}")]
    CaMismatch {
        /// Fingerprint received.
        got: String,
        /// Fingerprint expected.
        want: String,
    },
    /// The server answered with another CA than the one the connection was verified
    /// against.
    #[error("the server answered with another CA ({0}) than the one it was verified against")]
    CaChanged(String),
    /// The node directory's private key is unusable.
    #[error("reading the private key {0}")]
    Key(String),
    /// Writing the node directory failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Local certificate handling.
    #[error(transparent)]
    Cert(#[from] crate::cert::CertError),
}

service::answer_error_into!(ClientError, Http, Answer, Refused);

/// An HTTP client for one E&A server.
#[derive(Clone, Debug)]
pub struct EnrollClient {
    api: Api,
}

impl EnrollClient {
    /// A client for `base` (e.g. `https://ea.example.net:7400`) that believes the server
    /// only if `trust` does: the node directory's `ca.pem`, or on first contact the CA's
    /// pinned fingerprint.
    pub fn new(base: &str, trust: &Trust) -> Result<Self, ClientError> {
        let api = Api::with_trust(
            base,
            std::time::Duration::from_secs(30),
            trust,
            crate::cert::ServiceRole::Enroll.as_str(),
        )
        .map_err(|e| match e {
            ClientBuildError::Tls(e) => ClientError::Tls(e),
            ClientBuildError::Http(e) => ClientError::Http(e),
        })?;
        if base.starts_with("http://") {
            tracing::warn!("E&A at {base}: plain HTTP, the enrollment token goes in cleartext");
        }
        Ok(Self { api })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        self.api.base()
    }

    /// `POST /v1/enroll`.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        Ok(Api::call(self.api.request(Method::POST, "/v1/enroll").json(req)).await?)
    }

    /// `POST /v1/renew`.
    pub async fn renew(&self, req: &RenewRequest) -> Result<EnrollResponse, ClientError> {
        Ok(Api::call(self.api.request(Method::POST, "/v1/renew").json(req)).await?)
    }

    /// Renew the certificate of the node directory `dir` with its own key: the key (PEM)
    /// to keep, and the server's answer (for [`write_node_dir`]).
    pub async fn renew_node_dir(
        &self,
        dir: &Path,
    ) -> Result<(String, EnrollResponse), ClientError> {
        let read = |file: &str| {
            let p = dir.join(file);
            std::fs::read_to_string(&p)
                .map_err(|e| ClientError::Io(format!("reading {}", p.display()), e))
        };
        let key_pem = read(KEY_FILE)?;
        let certificate = read(CHAIN_FILE)?;
        let key = crate::cert::KeyPair::from_pem(&key_pem)
            .map_err(|e| ClientError::Key(format!("{}: {e}", dir.join(KEY_FILE).display())))?;
        let csr = crate::cert::csr_for_key(&key)?;
        let resp = self.renew(&RenewRequest { certificate, csr }).await?;
        Ok((key_pem, resp))
    }

    /// `GET /v1/crl` (DER).
    pub async fn crl(&self) -> Result<Vec<u8>, ClientError> {
        Ok(Api::call_bytes(self.api.request(Method::GET, "/v1/crl")).await?)
    }

    /// `GET /v1/directory`: the enrolled members' chains and addresses.
    pub async fn directory(&self) -> Result<crate::api::DirectoryResponse, ClientError> {
        Ok(Api::call(self.api.request(Method::GET, "/v1/directory")).await?)
    }

    /// `GET /v1/ca` (PEM); checked against `pin` (SHA-256 hex of the DER) when given.
    pub async fn ca(&self, pin: Option<&str>) -> Result<String, ClientError> {
        let r = self.api.request(Method::GET, "/v1/ca").send().await?;
        let pem = r.error_for_status()?.text().await?;
        if let Some(want) = pin {
            let der = crate::cert::pem_to_der(&pem, "CERTIFICATE")?
                .into_iter()
                .next()
                .unwrap_or_default();
            let got = crate::cert::fingerprint(&der);
            if !got.eq_ignore_ascii_case(want) {
                return Err(ClientError::CaMismatch {
                    got,
                    want: want.to_string(),
                });
            }
        }
        Ok(pem)
    }
}

/// Check that `ca_pem`, the CA an enrollment answer hands out, is the one `trust` verified
/// the connection against (any CA when `trust` holds none: plain HTTP).
pub fn check_answered_ca(trust: &Trust, ca_pem: &str) -> Result<(), ClientError> {
    let got = service::tls::certs_from_pem(ca_pem, "the CA in the answer")?;
    let first = got.first().map(|c| c.as_ref()).unwrap_or_default();
    let fingerprint = crate::cert::fingerprint(first);
    let ok = match trust {
        Trust::Pinned(pin) => fingerprint == crate::token::hex(pin),
        Trust::Ca(cas) if cas.is_empty() => true,
        Trust::Ca(cas) => cas.iter().any(|c| c.as_ref() == first),
    };
    if ok {
        Ok(())
    } else {
        Err(ClientError::CaChanged(fingerprint))
    }
}

/// An HTTP client for the E&A's published URLs (the CRL, the directory) that believes a
/// server only if its certificate chains to `ca` and was made for the E&A service.
pub fn published_http_client(
    ca: &rustls::pki_types::CertificateDer<'static>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, ClientBuildError> {
    service::http::client_for_service(
        timeout,
        &Trust::Ca(vec![ca.clone()]),
        Some(crate::cert::ServiceRole::Enroll.as_str()),
    )
}

/// Key file name in a node directory.
pub const KEY_FILE: &str = "key.pem";
/// Chain file name in a node directory.
pub const CHAIN_FILE: &str = "chain.pem";
/// CA file name in a node directory.
pub const CA_FILE: &str = "ca.pem";
/// Node config file name in a node directory.
pub const NODE_FILE: &str = "node.json";

/// Write key (0600), chain, CA and `node.json` into `dir` (created if missing). An
/// existing key file is replaced only when `key_pem` differs (renewal keeps the key).
pub fn write_node_dir(
    dir: &Path,
    key_pem: &str,
    resp: &EnrollResponse,
    server: &str,
    listen: Option<std::net::SocketAddr>,
) -> Result<NodeConfig, ClientError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| ClientError::Io(p, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = dir.join(KEY_FILE);
    if std::fs::read_to_string(&key).ok().as_deref() != Some(key_pem) {
        let _ = std::fs::remove_file(&key);
        crate::server::write_private(&key, key_pem.as_bytes()).map_err(io(&key))?;
    }
    let chain = dir.join(CHAIN_FILE);
    std::fs::write(&chain, &resp.chain).map_err(io(&chain))?;
    let ca = dir.join(CA_FILE);
    std::fs::write(&ca, &resp.ca).map_err(io(&ca))?;
    let cfg = NodeConfig {
        node_id: resp.node_id,
        layer: resp.layer,
        role: resp.role,
        overlay: resp.overlay.clone(),
        bootstrap: resp.bootstrap.clone(),
        services: resp.services.clone(),
        listen,
        enroll_server: server.to_string(),
        crl_url: format!("{server}/v1/crl"),
        key_file: KEY_FILE.into(),
        chain_file: CHAIN_FILE.into(),
        ca_file: CA_FILE.into(),
        not_after: resp.not_after,
    };
    let node = dir.join(NODE_FILE);
    let json = serde_json::to_string_pretty(&cfg)
        .map_err(|e| ClientError::Io(node.display().to_string(), e.into()))?;
    std::fs::write(&node, json + "\n").map_err(io(&node))?;
    Ok(cfg)
}
