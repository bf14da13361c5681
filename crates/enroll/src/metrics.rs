//! The E&A server's metrics for `GET /metrics` (OpenMetrics text through prometheus-client,
//! names `p2psip_enroll_*`): requests by route and their durations, enrollments and
//! renewals by outcome, token uses and refusals — counted by this instance — and what the
//! database holds (tokens, certificates, CRL entries, members), read at scrape time and the
//! same on every instance of one PostgreSQL database.

use crate::store::StoreCounts;
use prometheus_client::metrics::counter::Counter;
use service::metrics::CounterBy;
use service::monitor::HttpMetrics;

/// The error codes that refuse a token, and the `reason` each is counted under.
const TOKEN_REFUSALS: [(&str, &str); 4] = [
    ("token_unknown", "unknown"),
    ("token_expired", "expired"),
    ("token_used_up", "used_up"),
    ("wrong_role", "wrong_role"),
];

/// What this instance counts.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) http: HttpMetrics,
    enrollments: CounterBy,
    renewals: CounterBy,
    tokens_used: Counter,
    tokens_refused: CounterBy,
}

impl Default for Metrics {
    fn default() -> Self {
        // The outcomes a dashboard plots show from the first scrape, at zero.
        let codes = std::iter::once("ok").chain(TOKEN_REFUSALS.iter().map(|(code, _)| *code));
        Metrics {
            http: HttpMetrics::default(),
            enrollments: CounterBy::new("outcome", codes),
            renewals: CounterBy::new("outcome", ["ok"]),
            tokens_used: Counter::default(),
            tokens_refused: CounterBy::new("reason", TOKEN_REFUSALS.map(|(_, reason)| reason)),
        }
    }
}

impl Metrics {
    /// An enrollment answered: `Ok`, or refused with this error code (a bounded set of
    /// `&'static str`s).
    pub(crate) fn enrollment(&self, result: Result<(), &'static str>) {
        let outcome = match result {
            Ok(()) => {
                self.tokens_used.inc();
                "ok"
            }
            Err(code) => {
                if let Some((_, reason)) = TOKEN_REFUSALS.iter().find(|(c, _)| *c == code) {
                    self.tokens_refused.inc(reason);
                }
                code
            }
        };
        self.enrollments.inc(outcome);
    }

    /// A renewal answered: `Ok`, or refused with this error code.
    pub(crate) fn renewal(&self, result: Result<(), &'static str>) {
        self.renewals.inc(result.err().unwrap_or("ok"));
    }

    /// The text of one scrape; `db` is `None` when the database did not answer.
    pub(crate) fn render(&self, db: Option<StoreCounts>) -> Result<String, String> {
        let mut s = self.http.scrape("p2psip_enroll");
        s.family(
            "enrollments",
            "Enrollments answered by this instance, by outcome (ok, or the error code)",
            &self.enrollments,
        )
        .family(
            "renewals",
            "Certificate renewals answered by this instance, by outcome (ok, or the error code)",
            &self.renewals,
        )
        .metric(
            "tokens_used",
            "Token uses taken by enrollments this instance committed",
            self.tokens_used.clone(),
        )
        .family(
            "tokens_refused",
            "Enrollments refused for their token (unknown, expired, used_up, wrong_role)",
            &self.tokens_refused,
        )
        .gauge(
            "store_reachable",
            "1 while the database answers",
            db.is_some(),
        );
        if let Some(db) = db {
            s.counter(
                "tokens_issued",
                "Enrollment tokens ever created, in the database",
                db.tokens,
            )
            .gauge(
                "tokens_usable",
                "Tokens in the database with a use left that have not expired",
                db.tokens_usable,
            )
            .counter(
                "certificates_issued",
                "Certificates ever issued (enrollments and renewals), in the database",
                db.certificates,
            )
            .gauge(
                "crl_entries",
                "Revoked certificates still within their validity: the entries of the CRL",
                db.crl_entries,
            )
            .gauge("members", "Enrolled nodes not revoked", db.members);
        }
        s.encode().map_err(|e| format!("encoding the metrics: {e}"))
    }
}
