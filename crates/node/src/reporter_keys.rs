//! The SOS's reporter keys taken from E&A's directory (`p2psip sos --enroll-server`): the
//! certificate key of every member whose chain verifies, CSPs and CSPGs marked as holders
//! of proof, re-read on a timer so newly enrolled peers can report without a restart.
//! It lives here, beside [`crate::fetch_directory`], because it reads the same directory a
//! peer joins by.

use crate::NodeError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sos::{KeyRegistry, PeerId};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Reporter keys that follow E&A's directory: a registry rebuilt from the verified
/// certificate chains E&A publishes, swapped in whole at each refresh.
#[derive(Debug)]
pub struct EnrolledKeys(RwLock<Arc<KeyRegistry>>);

impl EnrolledKeys {
    /// The registry in use now.
    fn current(&self) -> Arc<KeyRegistry> {
        self.0
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Number of reporters in the registry in use now.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether the registry in use now is empty.
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }
}

impl sos::ReporterVerifier for EnrolledKeys {
    fn verify(
        &self,
        reporter: PeerId,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), sos::VerifyError> {
        self.current().verify(reporter, message, signature)
    }
}

/// The registry of everyone in the directory at `directory` whose chain verifies against
/// `trust`; members whose chain does not are logged and left out.
pub async fn enrolled_registry(
    trust: &net::Trust,
    directory: &str,
) -> Result<KeyRegistry, NodeError> {
    let file = crate::fetch_directory(directory, &trust.ca).await?;
    let book = net::KeyBook::new();
    let mut infrastructure = Vec::new();
    for (i, m) in file.members.iter().enumerate() {
        let chain: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_slice_iter(m.chain.as_bytes()).collect();
        match chain
            .map_err(|e| e.to_string())
            .and_then(|c| book.insert_verified(trust, &c).map_err(|e| e.to_string()))
        {
            Ok(id) if id.role != enroll::Role::Peer => infrastructure.push(PeerId(id.node_id.0)),
            Ok(_) => {}
            Err(e) => tracing::warn!("directory member {i} skipped: {e}"),
        }
    }
    Ok(KeyRegistry::from_entries(book.registry_entries())
        .map_err(|e| NodeError::Sos(format!("building the key registry: {e}")))?
        .with_infrastructure(infrastructure))
}

/// The E&A CA certificate (PEM) to check `base`'s directory with: read from `ca_file`, or,
/// without one and only for a plain `http://` E&A, fetched from it and trusted on first use.
async fn ca_pem(base: &str, ca_file: Option<&Path>) -> Result<String, NodeError> {
    match ca_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(NodeError::io(format!("reading the CA {}", p.display()))),
        None if base.starts_with("http://") => {
            service::crypto::install_provider();
            tracing::warn!("trusting the CA {base} hands out on first use (plain HTTP)");
            let fetch = |e: enroll::client::ClientError| {
                NodeError::Sos(format!("fetching the CA from {base}: {e}"))
            };
            enroll::client::EnrollClient::new(base, &service::tls::Trust::Ca(Vec::new()))
                .map_err(fetch)?
                .ca(None)
                .await
                .map_err(fetch)
        }
        None => Err(NodeError::Config(format!(
            "--enroll-server {base} over HTTPS needs --ca or --tls"
        ))),
    }
}

/// Follow the E&A at `base`: the registry of its directory now, checked against the CA in
/// `ca_file` (see [`ca_pem`]), then re-read every `every` by a task on the current tokio
/// runtime (a failed refresh keeps the keys in use and is logged).
pub async fn follow(
    base: &str,
    ca_file: Option<&Path>,
    every: Duration,
) -> Result<Arc<EnrolledKeys>, NodeError> {
    let base = base.trim_end_matches('/');
    let pem = ca_pem(base, ca_file).await?;
    let ca = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| NodeError::Config(format!("the E&A CA certificate: {e}")))?;
    let trust = net::Trust {
        ca,
        crls: net::CrlStore::new(),
        // E&A leaves revoked nodes out of its directory; each refresh drops them.
        policy: net::RevocationPolicy::AllowMissing,
    };
    let dir = format!("{base}/v1/directory");
    let reg = enrolled_registry(&trust, &dir).await?;
    tracing::info!(reporters = reg.len(), "reporter keys from {dir}");
    let keys = Arc::new(EnrolledKeys(RwLock::new(Arc::new(reg))));
    let refreshed = keys.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match enrolled_registry(&trust, &dir).await {
                Ok(reg) => {
                    if let Ok(mut g) = refreshed.0.write() {
                        *g = Arc::new(reg);
                    }
                }
                Err(e) => tracing::warn!("reporter keys not refreshed: {e}"),
            }
        }
    });
    Ok(keys)
}
