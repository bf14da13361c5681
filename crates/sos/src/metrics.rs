//! The SOS's metrics for `GET /metrics` (OpenMetrics text through prometheus-client, names
//! `p2psip_sos_*`): requests by route and their durations, rankings and reports by outcome,
//! evidence by kind, the peer table, and the store (commits, errors, reloads, reachable).
//! What the handlers count lives here; the peer table and the store's counters are read at
//! scrape time.

use crate::Outcome as Evidence;
use crate::store_pg::PgStats;
use service::metrics::CounterBy;
use service::monitor::HttpMetrics;
use service::sqlite::WriterStats;

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

/// The store's state at a scrape (see `Store::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoreStats {
    /// The writer's counters: write batches committed (`batches`) and failed
    /// (`failed_batches`: their callers were told the storage is unavailable).
    pub(crate) writer: WriterStats,
    /// PostgreSQL: batches tried again, reloads of other instances' writes (zero on SQLite).
    pub(crate) postgres: PgStats,
    /// The store can commit (and, on PostgreSQL, its last reload succeeded).
    pub(crate) reachable: bool,
}

/// What the handlers count.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) http: HttpMetrics,
    rankings: CounterBy,
    reports: CounterBy,
    evidence: CounterBy,
}

impl Default for Metrics {
    fn default() -> Self {
        // Every outcome shows from the first scrape, at zero.
        let reports = std::iter::once("accepted").chain(RejectReason::ALL.map(RejectReason::label));
        let evidence = [
            Evidence::Delivered,
            Evidence::Dropped,
            Evidence::Modified,
            Evidence::Misrouted,
            Evidence::Replayed,
        ];
        Metrics {
            http: HttpMetrics::default(),
            rankings: CounterBy::new("outcome", ["ok", "refused"]),
            reports: CounterBy::new("outcome", reports),
            evidence: CounterBy::new("outcome", evidence.map(Evidence::as_str)),
        }
    }
}

impl Metrics {
    /// A rank request answered with a ranking (`true`) or refused.
    pub(crate) fn ranked(&self, ok: bool) {
        self.rankings.inc(if ok { "ok" } else { "refused" });
    }

    /// A report stored: its evidence counts.
    pub(crate) fn accepted(&self, evidence: Evidence) {
        self.reports.inc("accepted");
        self.evidence.inc(evidence.as_str());
    }

    pub(crate) fn rejected(&self, r: RejectReason) {
        self.reports.inc(r.label());
    }

    /// The text of one scrape.
    pub(crate) fn render(&self, peers: usize, store: StoreStats) -> Result<String, String> {
        let mut s = self.http.scrape("p2psip_sos");
        s.family(
            "rankings",
            "Route rankings asked for, by outcome (ok, refused)",
            &self.rankings,
        )
        .family(
            "reports",
            "Evidence reports received, by outcome (accepted, or why refused)",
            &self.reports,
        )
        .family(
            "evidence",
            "Evidence stored from accepted reports, by what the reporter saw",
            &self.evidence,
        )
        .gauge(
            "peers",
            "Peers with an administrator's opinion or evidence",
            peers,
        )
        .counter(
            "store_commits",
            "Write batches the store committed",
            store.writer.batches,
        )
        .counts(
            "store_errors",
            "Store operations that failed: a write batch (commit), a reload of other instances' writes (reload)",
            "op",
            [
                ("commit", store.writer.failed_batches),
                ("reload", store.postgres.reload_errors),
            ],
        )
        .counter(
            "store_retries",
            "Write batches tried again after a conflict or a lost database connection (PostgreSQL)",
            store.postgres.retries,
        )
        .counter(
            "store_reloads",
            "Reloads of other instances' writes (PostgreSQL)",
            store.postgres.reloads,
        )
        .gauge(
            "store_reachable",
            "1 while the store can commit (and its last reload succeeded)",
            store.reachable,
        );
        s.encode().map_err(|e| format!("encoding the metrics: {e}"))
    }
}
