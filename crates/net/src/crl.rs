//! Loading and refreshing the CRL (from the E&A server's `crl_url`, or a file).

use crate::stats::Shared;
use crate::tls::{Identity, Refusal, Trust};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

/// Largest CRL accepted, bytes.
const MAX_CRL: usize = 4 * 1024 * 1024;

/// Why a CRL could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// It could not be fetched or read.
    #[error("fetching the CRL from {0}: {1}")]
    Fetch(String, String),
    /// It was fetched but is unusable (does not parse, or fails with our own chain).
    #[error("CRL from {0} refused: {1}")]
    Refused(String, Refusal),
}

/// Fetch a CRL (DER) from an `https://` URL (the server verified against `ca`, the E&A
/// CA; `http://` only for an E&A run with `--insecure-http`) or read it from a file.
pub async fn fetch_crl(source: &str, ca: &CertificateDer<'static>) -> Result<Vec<u8>, CrlError> {
    let fail = |e: String| CrlError::Fetch(source.to_string(), e);
    if source.starts_with("http://") || source.starts_with("https://") {
        let client = enroll::client::published_http_client(ca, Duration::from_secs(5))
            .map_err(|e| fail(e.to_string()))?;
        let resp = client
            .get(source)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| fail(e.to_string()))?;
        if resp.content_length().is_some_and(|n| n as usize > MAX_CRL) {
            return Err(fail("CRL too large".into()));
        }
        let body = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
        if body.len() > MAX_CRL {
            return Err(fail("CRL too large".into()));
        }
        Ok(body.to_vec())
    } else {
        let body = tokio::fs::read(source)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if body.len() > MAX_CRL {
            return Err(fail("CRL too large".into()));
        }
        Ok(body)
    }
}

/// Fetch a CRL, check it against our own chain and adopt it. A CRL that revokes us is
/// adopted (and logged as an error): it is valid, we are just no longer welcome.
pub async fn load_crl(trust: &Trust, own: &Identity, source: &str) -> Result<(), CrlError> {
    let der = fetch_crl(source, &trust.ca).await?;
    adopt(trust, own, source, der)
}

fn adopt(trust: &Trust, own: &Identity, source: &str, der: Vec<u8>) -> Result<(), CrlError> {
    match trust.check_crl(&der, own) {
        Ok(()) => {}
        Err(Refusal::Revoked) => {
            error!("the CRL from {source} revokes our own certificate; peers will refuse us")
        }
        Err(e) => return Err(CrlError::Refused(source.to_string(), e)),
    }
    trust.crls.set(der);
    Ok(())
}

/// Refresh the CRL every `every` until shutdown; failures keep the previous CRL.
pub(crate) async fn refresh(
    source: String,
    every: Duration,
    trust: Trust,
    own: Identity,
    stats: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the caller loaded the CRL at start
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let r = match fetch_crl(&source, &trust.ca).await {
            Ok(der) => adopt(&trust, &own, &source, der),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                Shared::inc(&stats.c.crl_loads);
                info!("CRL refreshed from {source}");
            }
            Err(e) => {
                Shared::inc(&stats.c.crl_failures);
                warn!("{e}; keeping the previous CRL (peers are refused once it expires)");
            }
        }
    }
}
