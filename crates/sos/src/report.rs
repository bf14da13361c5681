//! Evidence reports: the JSON a peer posts, and the canonical bytes it signs.
//!
//! # Canonical body (what the signature covers)
//!
//! A fixed-layout, big-endian byte string, so signer and verifier never disagree about
//! JSON whitespace, key order or number formatting:
//!
//! | bytes | field |
//! |---|---|
//! | 21 | ASCII `p2psip-sos-report-v1` followed by one 0x00 byte (domain separation) |
//! | 16 | reporter peer ID, u128 big-endian |
//! | 16 | subject peer ID, u128 big-endian |
//! | 1 | outcome: 1 delivered, 2 dropped, 3 modified, 4 misrouted, 5 replayed |
//! | 8 | timestamp, u64 big-endian milliseconds since the Unix epoch |
//! | 16 | nonce |
//! | 1 | number of route hops n, at most [`MAX_ROUTE_HOPS`] |
//! | 16·n | route hops, each u128 big-endian, in path order |
//!
//! # JSON form
//!
//! ```json
//! {"reporter":"1618","subject":"1609","outcome":"delivered",
//!  "route":["1593","1609","1618"],"timestamp_ms":1700000000000,
//!  "nonce":"00112233445566778899aabbccddeeff","signature":"<hex>"}
//! ```
//!
//! Unknown fields are rejected. The nonce is 16 bytes as 32 hex digits; the signature is
//! hex (Ed25519: 64 bytes; ECDSA P-256 SHA-256 fixed: 64 bytes).

use crate::PeerId;
use serde::{Deserialize, Serialize};

/// Most hops a reported route may have (bounds parsing and signing work).
pub const MAX_ROUTE_HOPS: usize = 32;
/// Largest signature accepted, in bytes.
pub const MAX_SIGNATURE_BYTES: usize = 128;
/// Domain-separation prefix of the canonical body.
const MAGIC: &[u8; 21] = b"p2psip-sos-report-v1\0";
const FIXED_LEN: usize = 21 + 16 + 16 + 1 + 8 + 16 + 1;

/// What the reporter saw the subject do with a message: the overlay's own evidence type, so a
/// peer reports exactly what its secure layer observed.
pub use overlay::secure::Outcome;

/// The outcome's byte in the canonical body (module doc).
fn outcome_code(o: Outcome) -> u8 {
    match o {
        Outcome::Delivered => 1,
        Outcome::Dropped => 2,
        Outcome::Modified => 3,
        Outcome::Misrouted => 4,
        Outcome::Replayed => 5,
    }
}

/// The outcome of a byte in the canonical body, if it names one.
fn outcome_from_code(c: u8) -> Option<Outcome> {
    Some(match c {
        1 => Outcome::Delivered,
        2 => Outcome::Dropped,
        3 => Outcome::Modified,
        4 => Outcome::Misrouted,
        5 => Outcome::Replayed,
        _ => return None,
    })
}

/// The signed content of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportBody {
    /// Who saw it (must hold a registered key).
    pub reporter: PeerId,
    /// Whom the evidence is about.
    pub subject: PeerId,
    /// What the subject did.
    pub outcome: Outcome,
    /// The route the message took, for the audit log.
    pub route: Vec<PeerId>,
    /// When the reporter saw it, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Fresh random value; a (reporter, nonce) pair is accepted once.
    pub nonce: [u8; 16],
}

/// A report with its signature over [`ReportBody::canonical_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReport {
    /// The signed content.
    pub body: ReportBody,
    /// Signature by the reporter's key.
    pub signature: Vec<u8>,
}

/// Why report bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Not valid JSON for a report (syntax, types, missing or unknown fields).
    #[error("malformed report: {0}")]
    Malformed(String),
    /// The nonce is not 32 hex digits.
    #[error("nonce must be 32 hex digits")]
    BadNonce,
    /// The signature is not hex or is too long.
    #[error("signature must be hex of at most 128 bytes")]
    BadSignatureEncoding,
    /// More than [`MAX_ROUTE_HOPS`] hops.
    #[error("route has more than 32 hops")]
    RouteTooLong,
    /// A reporter may not report on itself.
    #[error("reporter and subject are the same peer")]
    SelfReport,
    /// Canonical bytes of the wrong length or with an unknown tag.
    #[error("canonical body is malformed")]
    BadCanonical,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReport {
    reporter: PeerId,
    subject: PeerId,
    outcome: Outcome,
    route: Vec<PeerId>,
    timestamp_ms: u64,
    nonce: String,
    signature: String,
}

impl ReportBody {
    /// The bytes the reporter signs (layout in the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + 16 * self.route.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.reporter.0.to_be_bytes());
        out.extend_from_slice(&self.subject.0.to_be_bytes());
        out.push(outcome_code(self.outcome));
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        // Bodies built by `parse_report` or `decode_canonical` have at most 32 hops; a
        // longer locally built route is truncated in the count byte and will not verify.
        out.push(u8::try_from(self.route.len()).unwrap_or(u8::MAX));
        for hop in &self.route {
            out.extend_from_slice(&hop.0.to_be_bytes());
        }
        out
    }

    /// Check the invariants the server relies on.
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.route.len() > MAX_ROUTE_HOPS {
            return Err(ReportError::RouteTooLong);
        }
        if self.reporter == self.subject {
            return Err(ReportError::SelfReport);
        }
        Ok(())
    }
}

/// Decode canonical bytes back into a body (the inverse of
/// [`ReportBody::canonical_bytes`]); never panics.
pub fn decode_canonical(bytes: &[u8]) -> Result<ReportBody, ReportError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(ReportError::BadCanonical)?;
    let (reporter, rest) = take_u128(rest)?;
    let (subject, rest) = take_u128(rest)?;
    let (&code, rest) = rest.split_first().ok_or(ReportError::BadCanonical)?;
    let outcome = outcome_from_code(code).ok_or(ReportError::BadCanonical)?;
    let (ts, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(ReportError::BadCanonical)?;
    let (nonce, rest) = rest
        .split_first_chunk::<16>()
        .ok_or(ReportError::BadCanonical)?;
    let (&n, mut rest) = rest.split_first().ok_or(ReportError::BadCanonical)?;
    let n = usize::from(n);
    if n > MAX_ROUTE_HOPS || rest.len() != 16 * n {
        return Err(ReportError::BadCanonical);
    }
    let mut route = Vec::with_capacity(n);
    for _ in 0..n {
        let (hop, r) = take_u128(rest)?;
        route.push(PeerId(hop));
        rest = r;
    }
    let body = ReportBody {
        reporter: PeerId(reporter),
        subject: PeerId(subject),
        outcome,
        route,
        timestamp_ms: u64::from_be_bytes(*ts),
        nonce: *nonce,
    };
    body.validate()?;
    Ok(body)
}

fn take_u128(b: &[u8]) -> Result<(u128, &[u8]), ReportError> {
    let (head, rest) = b
        .split_first_chunk::<16>()
        .ok_or(ReportError::BadCanonical)?;
    Ok((u128::from_be_bytes(*head), rest))
}

/// Most reports in one `POST /v1/reports/batch`.
pub const MAX_BATCH: usize = 64;

/// Parse a JSON report as posted to `POST /v1/reports`; never panics on any input.
pub fn parse_report(json: &[u8]) -> Result<SignedReport, ReportError> {
    let wire: WireReport =
        serde_json::from_slice(json).map_err(|e| ReportError::Malformed(e.to_string()))?;
    from_wire(wire)
}

/// Domain-separation prefix of a batch's canonical bytes (never the prefix of a single
/// report's, so a batch signature cannot pass for a report's or the other way round).
const BATCH_MAGIC: &[u8; 20] = b"p2psip-sos-batch-v1\0";

/// Reports of one reporter under one signature: what `POST /v1/reports/batch` takes. A
/// callee reports every hop of every route a call took at once; one signature for all of
/// them instead of one each halves what reporting costs a peer and the SOS.
///
/// The signature covers [`SignedBatch::canonical_bytes`]: [`BATCH_MAGIC`], the reporter
/// (u128 big-endian), the number of reports (u16 big-endian), then each report's
/// [`ReportBody::canonical_bytes`] in order (each delimits itself: its route count comes
/// before its hops).
///
/// JSON form (unknown fields rejected; the reporter is named once, for every report):
///
/// ```json
/// {"reporter":"1618","reports":[{"subject":"1609","outcome":"delivered","route":[],
///  "timestamp_ms":1700000000000,"nonce":"00112233445566778899aabbccddeeff"}],
///  "signature":"<hex>"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBatch {
    /// Who saw it all (must hold a registered key); every report's reporter.
    pub reporter: PeerId,
    /// 1 to [`MAX_BATCH`] reports, each with its own nonce and timestamp.
    pub reports: Vec<ReportBody>,
    /// Signature by the reporter's key over [`SignedBatch::canonical_bytes`].
    pub signature: Vec<u8>,
}

impl SignedBatch {
    /// The bytes the reporter signs for `reports` (layout in the type's docs).
    pub fn canonical_bytes(reporter: PeerId, reports: &[ReportBody]) -> Vec<u8> {
        let mut out = Vec::with_capacity(38 + reports.len() * FIXED_LEN);
        out.extend_from_slice(BATCH_MAGIC);
        out.extend_from_slice(&reporter.0.to_be_bytes());
        // Parsed batches hold at most MAX_BATCH reports; a longer locally built one is
        // truncated in the count and will not verify.
        out.extend_from_slice(
            &u16::try_from(reports.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for r in reports {
            out.extend_from_slice(&r.canonical_bytes());
        }
        out
    }

    /// The JSON form accepted by [`parse_batch`].
    pub fn to_json(&self) -> String {
        let wire = WireBatch {
            reporter: self.reporter,
            reports: self
                .reports
                .iter()
                .map(|b| WireBatchReport {
                    subject: b.subject,
                    outcome: b.outcome,
                    route: b.route.clone(),
                    timestamp_ms: b.timestamp_ms,
                    nonce: crate::hex::encode(&b.nonce),
                })
                .collect(),
            signature: crate::hex::encode(&self.signature),
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBatch {
    reporter: PeerId,
    reports: Vec<WireBatchReport>,
    signature: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBatchReport {
    subject: PeerId,
    outcome: Outcome,
    route: Vec<PeerId>,
    timestamp_ms: u64,
    nonce: String,
}

/// Parse a batch as posted to `POST /v1/reports/batch`: the JSON must parse, hold 1 to
/// [`MAX_BATCH`] reports, and every report must be well formed (one signature covers them
/// all, so one bad report spoils the batch). Whether each report may be stored (its own
/// subject, timestamp and nonce) is the server's check, report by report. Never panics on
/// any input.
pub fn parse_batch(json: &[u8]) -> Result<SignedBatch, ReportError> {
    let wire: WireBatch =
        serde_json::from_slice(json).map_err(|e| ReportError::Malformed(e.to_string()))?;
    if wire.reports.is_empty() || wire.reports.len() > MAX_BATCH {
        return Err(ReportError::Malformed(format!(
            "a batch holds 1 to {MAX_BATCH} reports, not {}",
            wire.reports.len()
        )));
    }
    let signature = decode_signature(&wire.signature)?;
    let reports = wire
        .reports
        .into_iter()
        .map(|r| {
            check_route_len(&r.route)?;
            let nonce = decode_nonce(&r.nonce)?;
            Ok(ReportBody {
                reporter: wire.reporter,
                subject: r.subject,
                outcome: r.outcome,
                route: r.route,
                timestamp_ms: r.timestamp_ms,
                nonce,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SignedBatch {
        reporter: wire.reporter,
        reports,
        signature,
    })
}

/// A route of at most [`MAX_ROUTE_HOPS`] hops, as a report or a batch's report carries it.
fn check_route_len(route: &[PeerId]) -> Result<(), ReportError> {
    if route.len() > MAX_ROUTE_HOPS {
        return Err(ReportError::RouteTooLong);
    }
    Ok(())
}

/// A report's nonce from its wire form: 16 bytes in hex.
fn decode_nonce(hex: &str) -> Result<[u8; 16], ReportError> {
    crate::hex::decode(hex)
        .and_then(|v| v.try_into().ok())
        .ok_or(ReportError::BadNonce)
}

/// A signature from its wire form: hex of at most [`MAX_SIGNATURE_BYTES`] bytes (checked
/// before decoding, so an oversized string is refused without allocating for it).
fn decode_signature(hex: &str) -> Result<Vec<u8>, ReportError> {
    if hex.len() > 2 * MAX_SIGNATURE_BYTES {
        return Err(ReportError::BadSignatureEncoding);
    }
    crate::hex::decode(hex).ok_or(ReportError::BadSignatureEncoding)
}

fn from_wire(wire: WireReport) -> Result<SignedReport, ReportError> {
    check_route_len(&wire.route)?;
    let nonce = decode_nonce(&wire.nonce)?;
    let signature = decode_signature(&wire.signature)?;
    let body = ReportBody {
        reporter: wire.reporter,
        subject: wire.subject,
        outcome: wire.outcome,
        route: wire.route,
        timestamp_ms: wire.timestamp_ms,
        nonce,
    };
    body.validate()?;
    Ok(SignedReport { body, signature })
}

impl SignedReport {
    /// The JSON form accepted by [`parse_report`].
    pub fn to_json(&self) -> String {
        let wire = WireReport {
            reporter: self.body.reporter,
            subject: self.body.subject,
            outcome: self.body.outcome,
            route: self.body.route.clone(),
            timestamp_ms: self.body.timestamp_ms,
            nonce: crate::hex::encode(&self.body.nonce),
            signature: crate::hex::encode(&self.signature),
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = ReportBody> {
        (
            any::<u128>(),
            any::<u128>(),
            1u8..=5,
            proptest::collection::vec(any::<u128>(), 0..=MAX_ROUTE_HOPS),
            any::<u64>(),
            any::<[u8; 16]>(),
        )
            .prop_filter("self report", |(r, s, ..)| r != s)
            .prop_map(|(r, s, o, route, ts, nonce)| ReportBody {
                reporter: PeerId(r),
                subject: PeerId(s),
                outcome: outcome_from_code(o).unwrap_or(Outcome::Dropped),
                route: route.into_iter().map(PeerId).collect(),
                timestamp_ms: ts,
                nonce,
            })
    }

    /// The exact bytes a reporter signs (the layout of the module doc): a change breaks every
    /// reporter of an older or newer build.
    #[test]
    fn canonical_bytes_are_pinned() {
        let body = ReportBody {
            reporter: PeerId(1618),
            subject: PeerId(1609),
            outcome: Outcome::Misrouted,
            route: vec![PeerId(1593), PeerId(1609), PeerId(1618)],
            timestamp_ms: 1_700_000_000_000,
            nonce: [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ],
        };
        assert_eq!(
            crate::hex::encode(&body.canonical_bytes()),
            concat!(
                "7032707369702d736f732d7265706f72742d763100", // "p2psip-sos-report-v1\0"
                "00000000000000000000000000000652",           // reporter 1618
                "00000000000000000000000000000649",           // subject 1609
                "04",                                         // misrouted
                "0000018bcfe56800",                           // timestamp_ms
                "00112233445566778899aabbccddeeff",           // nonce
                "03",                                         // three hops
                "00000000000000000000000000000639",
                "00000000000000000000000000000649",
                "00000000000000000000000000000652",
            )
        );
    }

    #[test]
    fn json_example_parses() {
        let json = br#"{"reporter":"1618","subject":"1609","outcome":"delivered",
            "route":["1593","1609","1618"],"timestamp_ms":1700000000000,
            "nonce":"00112233445566778899aabbccddeeff","signature":"abcd"}"#;
        let r = parse_report(json).expect("valid");
        assert_eq!(r.body.subject, PeerId(1609));
        assert_eq!(r.signature, vec![0xab, 0xcd]);
        let again = parse_report(r.to_json().as_bytes()).expect("roundtrip");
        assert_eq!(again, r);
    }

    #[test]
    fn rejects_bad_fields() {
        let base = r#"{"reporter":"1","subject":"2","outcome":"dropped","route":[],"timestamp_ms":1,"nonce":"00112233445566778899aabbccddeeff","signature":""}"#;
        assert!(parse_report(base.as_bytes()).is_ok());
        let cases = [
            base.replace(r#""outcome":"dropped""#, r#""outcome":"eaten""#),
            base.replace(r#""reporter":"1""#, r#""reporter":1"#),
            base.replace(
                r#""nonce":"00112233445566778899aabbccddeeff""#,
                r#""nonce":"00""#,
            ),
            base.replace(r#""signature":"""#, r#""signature":"xyz""#),
            base.replace(r#""subject":"2""#, r#""subject":"1""#),
            base.replace('}', r#","extra":true}"#),
            base.replace(r#""timestamp_ms":1"#, r#""timestamp_ms":-1"#),
        ];
        for c in cases {
            assert!(parse_report(c.as_bytes()).is_err(), "{c}");
        }
    }

    /// The exact bytes a reporter signs for a batch: a change breaks every reporter of an
    /// older or newer build.
    #[test]
    fn batch_canonical_bytes_are_pinned() {
        let body = ReportBody {
            reporter: PeerId(1618),
            subject: PeerId(1609),
            outcome: Outcome::Delivered,
            route: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
            nonce: [0x5a; 16],
        };
        assert_eq!(
            crate::hex::encode(&SignedBatch::canonical_bytes(
                PeerId(1618),
                std::slice::from_ref(&body)
            )),
            concat!(
                "7032707369702d736f732d62617463682d763100", // "p2psip-sos-batch-v1\0"
                "00000000000000000000000000000652",         // reporter 1618
                "0001",                                     // one report
                "7032707369702d736f732d7265706f72742d763100", // the report's own bytes
                "00000000000000000000000000000652",
                "00000000000000000000000000000649",
                "01",
                "0000018bcfe56800",
                "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
                "00",
            )
        );
        // Not the bytes of the report alone: a batch signature is no report's signature.
        assert_ne!(
            SignedBatch::canonical_bytes(PeerId(1618), std::slice::from_ref(&body)),
            body.canonical_bytes()
        );
    }

    #[test]
    fn batch_json_example_parses_and_round_trips() {
        let json = br#"{"reporter":"1618","reports":[{"subject":"1609","outcome":"delivered",
            "route":[],"timestamp_ms":1700000000000,"nonce":"00112233445566778899aabbccddeeff"},
            {"subject":"1593","outcome":"dropped","route":["1593"],"timestamp_ms":1700000000001,
            "nonce":"ffeeddccbbaa99887766554433221100"}],"signature":"abcd"}"#;
        let b = parse_batch(json).expect("valid");
        assert_eq!(b.reporter, PeerId(1618));
        assert_eq!(b.reports.len(), 2);
        assert!(b.reports.iter().all(|r| r.reporter == PeerId(1618)));
        assert_eq!(b.reports[1].outcome, Outcome::Dropped);
        assert_eq!(b.signature, vec![0xab, 0xcd]);
        assert_eq!(parse_batch(b.to_json().as_bytes()), Ok(b));
    }

    #[test]
    fn batch_rejects_bad_shapes() {
        let one = r#"{"subject":"2","outcome":"dropped","route":[],"timestamp_ms":1,"nonce":"00112233445566778899aabbccddeeff"}"#;
        let batch =
            |reports: &str| format!(r#"{{"reporter":"1","reports":[{reports}],"signature":""}}"#);
        assert!(parse_batch(batch(one).as_bytes()).is_ok());
        let many = vec![one; MAX_BATCH + 1].join(",");
        let long_route = format!(
            r#""route":[{}]"#,
            vec![r#""3""#; MAX_ROUTE_HOPS + 1].join(",")
        );
        let cases = [
            batch(""),
            batch(&many),
            batch(&one.replace(
                r#""nonce":"00112233445566778899aabbccddeeff""#,
                r#""nonce":"00""#,
            )),
            batch(&one.replace(r#""route":[]"#, &long_route)),
            batch(&one.replace('}', r#","reporter":"1"}"#)),
            batch(one).replace(r#""signature":"""#, r#""signature":"xyz""#),
            format!("[{one}]"),
        ];
        for c in cases {
            assert!(parse_batch(c.as_bytes()).is_err(), "{c}");
        }
    }

    proptest! {
        #[test]
        fn canonical_roundtrip(b in body()) {
            prop_assert_eq!(decode_canonical(&b.canonical_bytes()), Ok(b));
        }

        #[test]
        fn decode_canonical_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = decode_canonical(&bytes);
        }

        #[test]
        fn decode_canonical_never_panics_near_valid(b in body(), cut in 0usize..700, flip in any::<(usize, u8)>()) {
            let mut bytes = b.canonical_bytes();
            if !bytes.is_empty() {
                let i = flip.0 % bytes.len();
                bytes[i] ^= flip.1;
            }
            bytes.truncate(cut);
            let _ = decode_canonical(&bytes);
        }

        #[test]
        fn parse_batch_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_batch(&bytes);
        }

        #[test]
        fn parse_report_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_report(&bytes);
        }

        #[test]
        fn parse_report_never_panics_on_jsonish(s in r#"\{("[a-z_]{1,12}":("[0-9a-f]{0,40}"|-?[0-9]{1,25}|\[("[0-9]{1,40}",?){0,40}\]|null|true),?){0,8}\}"#) {
            let _ = parse_report(s.as_bytes());
        }
    }
}
