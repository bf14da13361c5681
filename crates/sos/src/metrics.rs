//! Prometheus text exposition for `GET /metrics`, written by hand (atomics, fixed buckets).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the rank-latency histogram buckets.
const BUCKETS: [f64; 10] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1,
];

/// Why a report was rejected, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectReason {
    Malformed,
    Timestamp,
    UnknownReporter,
    BadSignature,
    RateLimited,
    Replay,
    TooManyPeers,
    Storage,
}

impl RejectReason {
    const ALL: [RejectReason; 8] = [
        RejectReason::Malformed,
        RejectReason::Timestamp,
        RejectReason::UnknownReporter,
        RejectReason::BadSignature,
        RejectReason::RateLimited,
        RejectReason::Replay,
        RejectReason::TooManyPeers,
        RejectReason::Storage,
    ];

    fn label(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Timestamp => "timestamp",
            RejectReason::UnknownReporter => "unknown_reporter",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Replay => "replay",
            RejectReason::TooManyPeers => "too_many_peers",
            RejectReason::Storage => "storage",
        }
    }
}

/// Endpoints counted in `sos_requests_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Rank,
    Report,
    GetOpinion,
    PutOpinion,
    DeleteOpinion,
    Health,
    Metrics,
    Other,
}

const ENDPOINTS: [(Endpoint, &str); 8] = [
    (Endpoint::Rank, "rank"),
    (Endpoint::Report, "report"),
    (Endpoint::GetOpinion, "get_opinion"),
    (Endpoint::PutOpinion, "put_opinion"),
    (Endpoint::DeleteOpinion, "delete_opinion"),
    (Endpoint::Health, "health"),
    (Endpoint::Metrics, "metrics"),
    (Endpoint::Other, "other"),
];

/// All counters the server exports.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: [AtomicU64; 8],
    reports_accepted: AtomicU64,
    reports_rejected: [AtomicU64; 8],
    rank_buckets: [AtomicU64; BUCKETS.len()],
    rank_count: AtomicU64,
    rank_sum_ns: AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self, e: Endpoint) {
        self.requests[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.reports_accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, r: RejectReason) {
        self.reports_rejected[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rank_latency(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.rank_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.rank_count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.rank_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Render the text exposition format (version 0.0.4).
    pub(crate) fn render(&self, peers: usize) -> String {
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP sos_requests_total HTTP requests by endpoint.");
        let _ = writeln!(out, "# TYPE sos_requests_total counter");
        for (e, name) in ENDPOINTS {
            let _ = writeln!(
                out,
                "sos_requests_total{{endpoint=\"{name}\"}} {}",
                get(&self.requests[e as usize])
            );
        }
        let _ = writeln!(out, "# HELP sos_reports_accepted_total Reports stored.");
        let _ = writeln!(out, "# TYPE sos_reports_accepted_total counter");
        let _ = writeln!(
            out,
            "sos_reports_accepted_total {}",
            get(&self.reports_accepted)
        );
        let _ = writeln!(
            out,
            "# HELP sos_reports_rejected_total Reports refused, by reason."
        );
        let _ = writeln!(out, "# TYPE sos_reports_rejected_total counter");
        for r in RejectReason::ALL {
            let _ = writeln!(
                out,
                "sos_reports_rejected_total{{reason=\"{}\"}} {}",
                r.label(),
                get(&self.reports_rejected[r as usize])
            );
        }
        let _ = writeln!(
            out,
            "# HELP sos_rank_duration_seconds Time to rank one request's routes."
        );
        let _ = writeln!(out, "# TYPE sos_rank_duration_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += get(&self.rank_buckets[i]);
            let _ = writeln!(
                out,
                "sos_rank_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = get(&self.rank_count);
        let _ = writeln!(
            out,
            "sos_rank_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "sos_rank_duration_seconds_sum {}",
            get(&self.rank_sum_ns) as f64 / 1e9
        );
        let _ = writeln!(out, "sos_rank_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP sos_peers Peers with an admin opinion or evidence."
        );
        let _ = writeln!(out, "# TYPE sos_peers gauge");
        let _ = writeln!(out, "sos_peers {peers}");
        out
    }
}
