//! Load for `scripts/bench-sos`: reporter keys and their registry, signed reports with
//! unique nonces, and the rank request the benchmark repeats. Written by `p2psip sos
//! bench-fixtures`; kept here beside the report format it signs.

use crate::verify::Algorithm;
use crate::{KeyRegistry, Outcome, PeerId, ReportBody, ReportSigner, SignerError};
use std::io::Write as _;
use std::path::Path;

/// The benchmark's rank request: 5 candidate routes of 4 hops to callee 1618.
pub const BENCH_ROUTES: [[u128; 4]; 5] = [
    [1331, 1593, 1609, 1618],
    [1536, 1600, 1609, 1618],
    [1400, 1593, 1617, 1618],
    [1030, 1536, 1600, 1618],
    [1331, 1400, 1609, 1618],
];

/// Why the fixtures could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A file or the directory.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A key could not be made or could not sign.
    #[error(transparent)]
    Signer(#[from] SignerError),
}

/// In `dir` (created): `registry.json` with `reporters` fresh Ed25519 reporter keys (every
/// `csp_every`-th marked as a CSP, whose reports are proof the others' are checked against;
/// 0: none),
/// `reports.jsonl` with `reports` signed reports about the peers of [`BENCH_ROUTES`]
/// (three in four `delivered`, timestamped `now_ms`, each with its own nonce) and
/// `rank.json`, the rank request. Returns how many reporters it made.
pub fn write_bench_fixtures(
    dir: &Path,
    reporters: u32,
    csp_every: u32,
    reports: u32,
    now_ms: u64,
) -> Result<usize, FixtureError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e| FixtureError::Io(what, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut signers = Vec::new();
    for i in 0..reporters.max(1) {
        signers
            .push(ReportSigner::generate(PeerId(100_000 + u128::from(i)), Algorithm::Ed25519)?.0);
    }
    let entries: Vec<_> = signers.iter().map(ReportSigner::registry_entry).collect();
    let csps: Vec<PeerId> = signers
        .iter()
        .enumerate()
        .filter(|(i, _)| csp_every > 0 && (*i as u32).is_multiple_of(csp_every))
        .map(|(_, s)| s.peer())
        .collect();
    let registry = dir.join("registry.json");
    std::fs::write(&registry, KeyRegistry::to_json_with(&entries, &csps)).map_err(io(&registry))?;
    let mut subjects: Vec<u128> = BENCH_ROUTES.iter().flatten().copied().collect();
    subjects.sort_unstable();
    subjects.dedup();
    let rank_body = serde_json::json!({
        "routes": BENCH_ROUTES
            .iter()
            .map(|r| r.iter().map(u128::to_string).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    });
    let rank = dir.join("rank.json");
    std::fs::write(&rank, rank_body.to_string()).map_err(io(&rank))?;
    let path = dir.join("reports.jsonl");
    let file = std::fs::File::create(&path).map_err(io(&path))?;
    let mut out = std::io::BufWriter::new(file);
    let outcomes = [
        Outcome::Delivered,
        Outcome::Delivered,
        Outcome::Delivered,
        Outcome::Dropped,
    ];
    for i in 0..reports as usize {
        let signer = &signers[i % signers.len()];
        let subject = subjects[i % subjects.len()];
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let body = ReportBody {
            reporter: signer.peer(),
            subject: PeerId(subject),
            outcome: outcomes[i % outcomes.len()],
            route: vec![PeerId(subject)],
            timestamp_ms: now_ms,
            nonce,
        };
        writeln!(out, "{}", signer.sign(body)?.to_json()).map_err(io(&path))?;
    }
    out.flush().map_err(io(&path))?;
    Ok(signers.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_report;

    #[test]
    fn fixtures_are_reports_the_registry_verifies() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            write_bench_fixtures(dir.path(), 3, 2, 10, 1_000).unwrap(),
            3
        );
        let registry =
            KeyRegistry::from_json(&std::fs::read(dir.path().join("registry.json")).unwrap())
                .unwrap();
        let lines = std::fs::read_to_string(dir.path().join("reports.jsonl")).unwrap();
        let mut nonces = std::collections::BTreeSet::new();
        for line in lines.lines() {
            let r = parse_report(line.as_bytes()).unwrap();
            crate::ReporterVerifier::verify(
                &registry,
                r.body.reporter,
                &r.body.canonical_bytes(),
                &r.signature,
            )
            .unwrap();
            assert!(nonces.insert(r.body.nonce));
        }
        assert_eq!(nonces.len(), 10);
        let rank: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("rank.json")).unwrap()).unwrap();
        assert_eq!(rank["routes"].as_array().unwrap().len(), BENCH_ROUTES.len());
    }
}
