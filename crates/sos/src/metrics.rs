//! The SOS's metrics for `GET /metrics` (OpenMetrics text through prometheus-client, names
//! `p2psip_sos_*`): requests by route and their durations, rankings and reports by outcome,
//! evidence by kind, the peer table, and the store (commits, errors, reloads, reachable).
//! What the handlers count lives here; the peer table and the store's counters are read at
//! scrape time.

use crate::Outcome as Evidence;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use service::monitor::HttpMetrics;

/// Why a report was rejected, as the `outcome` label of `p2psip_sos_reports_total`.
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

fn outcome(s: &str) -> Outcome {
    Outcome { outcome: s.into() }
}

/// The store's state at a scrape (see `Store::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoreStats {
    /// Write batches committed.
    pub(crate) commits: u64,
    /// Write batches that failed (their callers were told the storage is unavailable).
    pub(crate) commit_errors: u64,
    /// PostgreSQL: batches tried again after a conflict or a lost connection.
    pub(crate) retries: u64,
    /// PostgreSQL: reloads of other instances' writes, done and failed.
    pub(crate) reloads: u64,
    pub(crate) reload_errors: u64,
    /// The store can commit (and, on PostgreSQL, its last reload succeeded).
    pub(crate) reachable: bool,
}

/// What the handlers count.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) http: HttpMetrics,
    rankings: Family<Outcome, Counter>,
    reports: Family<Outcome, Counter>,
    evidence: Family<Outcome, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            http: HttpMetrics::default(),
            rankings: Family::default(),
            reports: Family::default(),
            evidence: Family::default(),
        };
        // Every outcome shows from the first scrape, at zero: a rate over a series that
        // does not exist yet is no rate at all.
        for o in ["ok", "refused"] {
            let _ = m.rankings.get_or_create(&outcome(o));
        }
        let _ = m.reports.get_or_create(&outcome("accepted"));
        for r in RejectReason::ALL {
            let _ = m.reports.get_or_create(&outcome(r.label()));
        }
        for e in [
            Evidence::Delivered,
            Evidence::Dropped,
            Evidence::Modified,
            Evidence::Misrouted,
            Evidence::Replayed,
        ] {
            let _ = m.evidence.get_or_create(&outcome(e.as_str()));
        }
        m
    }
}

impl Metrics {
    /// A rank request answered with a ranking (`true`) or refused.
    pub(crate) fn ranked(&self, ok: bool) {
        let o = if ok { "ok" } else { "refused" };
        self.rankings.get_or_create(&outcome(o)).inc();
    }

    /// A report stored: its evidence counts.
    pub(crate) fn accepted(&self, evidence: Evidence) {
        self.reports.get_or_create(&outcome("accepted")).inc();
        self.evidence
            .get_or_create(&outcome(evidence.as_str()))
            .inc();
    }

    pub(crate) fn rejected(&self, r: RejectReason) {
        self.reports.get_or_create(&outcome(r.label())).inc();
    }

    /// The text of one scrape.
    pub(crate) fn render(&self, peers: usize, store: StoreStats) -> Result<String, String> {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("p2psip_sos");
        self.http.register(r);
        r.register(
            "rankings",
            "Route rankings asked for, by outcome (ok, refused)",
            self.rankings.clone(),
        );
        r.register(
            "reports",
            "Evidence reports received, by outcome (accepted, or why refused)",
            self.reports.clone(),
        );
        r.register(
            "evidence",
            "Evidence stored from accepted reports, by what the reporter saw",
            self.evidence.clone(),
        );
        r.register(
            "peers",
            "Peers with an administrator's opinion or evidence",
            ConstGauge::new(i64::try_from(peers).unwrap_or(i64::MAX)),
        );
        r.register(
            "store_commits",
            "Write batches the store committed",
            ConstCounter::new(store.commits),
        );
        let errors = Family::<Op, Counter>::default();
        for (op, n) in [
            ("commit", store.commit_errors),
            ("reload", store.reload_errors),
        ] {
            errors.get_or_create(&Op { op: op.into() }).inc_by(n);
        }
        r.register(
            "store_errors",
            "Store operations that failed: a write batch (commit), a reload of other instances' writes (reload)",
            errors,
        );
        r.register(
            "store_retries",
            "Write batches tried again after a conflict or a lost database connection (PostgreSQL)",
            ConstCounter::new(store.retries),
        );
        r.register(
            "store_reloads",
            "Reloads of other instances' writes (PostgreSQL)",
            ConstCounter::new(store.reloads),
        );
        r.register(
            "store_reachable",
            "1 while the store can commit (and its last reload succeeded)",
            ConstGauge::new(i64::from(store.reachable)),
        );
        service::monitor::encode(&root)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: String,
}
