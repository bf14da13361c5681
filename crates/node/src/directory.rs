//! Where a peer's membership comes from: the directory E&A publishes (`GET /v1/directory`)
//! or a file in the same JSON shape ([`net::DirectoryFile`]). Every chain in it is checked
//! against the E&A CA and the CRL before it counts ([`net::Membership::from_file`]).

use crate::error::DirectoryError;
use net::{DirectoryFile, KeyBook, Membership, MembershipError, Trust};
use overlay::IdSpace;
use overlay::secure::LayerArcs;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::Duration;

/// Largest directory accepted, bytes (about 20 000 members of 2 KiB).
const MAX_DIRECTORY_BYTES: usize = 64 << 20;

/// The layer arcs named in `node.json`.
pub(crate) fn arcs_of(
    space: IdSpace,
    p: &enroll::api::OverlayParams,
) -> Result<LayerArcs, DirectoryError> {
    let mut starts = [None; 3];
    for a in &p.layers {
        starts[a.layer.index()] = Some(a.start.0);
    }
    let [Some(s1), Some(s2), Some(s3)] = starts else {
        return Err(DirectoryError::Arcs(
            "the overlay parameters do not name all three layer arcs".into(),
        ));
    };
    LayerArcs::new(space, [s1, s2, s3])
        .map_err(|e| DirectoryError::Arcs(format!("layer arcs: {e}")))
}

/// The default source: the E&A server that enrolled this peer.
pub(crate) fn default_source(enroll_server: &str) -> Option<String> {
    let base = enroll_server.trim_end_matches('/');
    (!base.is_empty()).then(|| format!("{base}/v1/directory"))
}

/// Read the directory from `source` (an `https://` URL served by the E&A, verified against
/// `ca`; `http://` only for an E&A run with `--insecure-http`; or a file), at most
/// [`MAX_DIRECTORY_BYTES`].
pub async fn fetch(
    source: &str,
    ca: &CertificateDer<'static>,
) -> Result<DirectoryFile, DirectoryError> {
    let fetch_err = |why: String| DirectoryError::Fetch {
        source_url: source.to_owned(),
        why,
    };
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let client = enroll::client::published_http_client(ca, Duration::from_secs(10))
            .map_err(|e| fetch_err(e.to_string()))?;
        let mut resp = client
            .get(source)
            .send()
            .await
            .map_err(|e| fetch_err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fetch_err(format!("HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_err(e.to_string()))? {
            if body.len() + chunk.len() > MAX_DIRECTORY_BYTES {
                return Err(DirectoryError::TooLarge {
                    at: source.to_owned(),
                    max: MAX_DIRECTORY_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        body
    } else {
        let read_err = |source_err| DirectoryError::Read {
            path: source.to_owned(),
            source: source_err,
        };
        let meta = tokio::fs::metadata(source).await.map_err(read_err)?;
        if meta.len() > MAX_DIRECTORY_BYTES as u64 {
            return Err(DirectoryError::TooLarge {
                at: source.to_owned(),
                max: MAX_DIRECTORY_BYTES,
            });
        }
        tokio::fs::read(source)
            .await
            .map_err(|e| DirectoryError::Read {
                path: source.to_owned(),
                source: e,
            })?
    };
    serde_json::from_slice(&bytes).map_err(|e| DirectoryError::Parse {
        source_name: source.to_owned(),
        source: e,
    })
}

/// Fetch and check: the membership of the members whose chains pass. Their keys go into
/// `keys`, the one key book the peer keeps for its whole life (signature checks in the
/// node, the SIP registration validator and the front-end all hold it), so a refresh adds
/// members without swapping verifiers; a member dropped from the directory keeps its key
/// until restart, but a revoked one is refused at every TLS handshake by the CRL.
/// Malformed or refused members are skipped and listed in [`Membership::refused`].
pub(crate) async fn load(
    trust: &Trust,
    arcs: LayerArcs,
    source: &str,
    keys: &Arc<KeyBook>,
) -> Result<Membership, DirectoryError> {
    let file = fetch(source, &trust.ca).await?;
    Ok(build(trust, arcs, &file, keys))
}

fn build(trust: &Trust, arcs: LayerArcs, file: &DirectoryFile, keys: &Arc<KeyBook>) -> Membership {
    let mut m = Membership::new(arcs);
    m.keys = keys.clone();
    for (index, e) in file.members.iter().enumerate() {
        let chain: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_slice_iter(e.chain.as_bytes()).collect();
        let chain = match chain {
            Ok(c) => c,
            Err(err) => {
                m.refused.push((index, format!("bad PEM: {err}")));
                continue;
            }
        };
        match m.add(trust, &chain, e.addr) {
            Ok(_) | Err(MembershipError::Refused(_)) => {}
            Err(other) => m.refused.push((index, other.to_string())),
        }
    }
    m
}
