//! Where a peer's membership comes from: the directory E&A publishes (`GET /v1/directory`)
//! or a file in the same JSON shape ([`net::DirectoryFile`]). Every chain in it is checked
//! against the E&A CA and the CRL before it counts ([`net::Membership::from_file`]).

use anyhow::{Context, bail};
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
pub(crate) fn arcs_of(space: IdSpace, p: &enroll::api::OverlayParams) -> anyhow::Result<LayerArcs> {
    let mut starts = [None; 3];
    for a in &p.layers {
        starts[a.layer.index()] = Some(a.start.0);
    }
    let [Some(s1), Some(s2), Some(s3)] = starts else {
        bail!("node.json: the overlay parameters do not name all three layer arcs");
    };
    LayerArcs::new(space, [s1, s2, s3]).context("node.json: layer arcs")
}

/// The default source: the E&A server that enrolled this peer.
pub(crate) fn default_source(enroll_server: &str) -> Option<String> {
    let base = enroll_server.trim_end_matches('/');
    (!base.is_empty()).then(|| format!("{base}/v1/directory"))
}

/// Read the directory from `source` (an `http(s)://` URL or a file).
pub(crate) async fn fetch(source: &str) -> anyhow::Result<DirectoryFile> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut resp = client
            .get(source)
            .send()
            .await
            .with_context(|| format!("fetching the directory from {source}"))?;
        if !resp.status().is_success() {
            bail!(
                "fetching the directory from {source}: HTTP {}",
                resp.status()
            );
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_DIRECTORY_BYTES {
                bail!("the directory at {source} is larger than {MAX_DIRECTORY_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        body
    } else {
        let meta = tokio::fs::metadata(source)
            .await
            .with_context(|| format!("reading the directory file {source}"))?;
        if meta.len() > MAX_DIRECTORY_BYTES as u64 {
            bail!("the directory file {source} is larger than {MAX_DIRECTORY_BYTES} bytes");
        }
        tokio::fs::read(source)
            .await
            .with_context(|| format!("reading the directory file {source}"))?
    };
    serde_json::from_slice(&bytes).with_context(|| format!("parsing the directory from {source}"))
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
) -> anyhow::Result<Membership> {
    let file = fetch(source).await?;
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
