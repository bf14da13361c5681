//! The E&A server's metrics for `GET /metrics` (OpenMetrics text through prometheus-client,
//! names `p2psip_enroll_*`): requests by route and their durations, enrollments and
//! renewals by outcome, token uses and refusals — counted by this instance — and what the
//! database holds (tokens, certificates, CRL entries, members), read at scrape time and the
//! same on every instance of one PostgreSQL database.

use crate::store::StoreCounts;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use service::monitor::HttpMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

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
    enrollments: Family<Outcome, Counter>,
    renewals: Family<Outcome, Counter>,
    tokens_used: Counter,
    tokens_refused: Family<Reason, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            http: HttpMetrics::default(),
            enrollments: Family::default(),
            renewals: Family::default(),
            tokens_used: Counter::default(),
            tokens_refused: Family::default(),
        };
        // The outcomes a dashboard plots show from the first scrape, at zero.
        for (code, _) in std::iter::once(&("ok", "")).chain(TOKEN_REFUSALS.iter()) {
            let _ = m.enrollments.get_or_create(&Outcome {
                outcome: (*code).into(),
            });
        }
        let _ = m.renewals.get_or_create(&Outcome {
            outcome: "ok".into(),
        });
        for (_, reason) in TOKEN_REFUSALS {
            let _ = m.tokens_refused.get_or_create(&Reason {
                reason: reason.into(),
            });
        }
        m
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
                    self.tokens_refused
                        .get_or_create(&Reason {
                            reason: (*reason).into(),
                        })
                        .inc();
                }
                code
            }
        };
        self.enrollments
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A renewal answered: `Ok`, or refused with this error code.
    pub(crate) fn renewal(&self, result: Result<(), &'static str>) {
        self.renewals
            .get_or_create(&Outcome {
                outcome: result.err().unwrap_or("ok").into(),
            })
            .inc();
    }

    /// The text of one scrape; `db` is `None` when the database did not answer.
    pub(crate) fn render(&self, db: Option<StoreCounts>) -> Result<String, String> {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("p2psip_enroll");
        self.http.register(r);
        r.register(
            "enrollments",
            "Enrollments answered by this instance, by outcome (ok, or the error code)",
            self.enrollments.clone(),
        );
        r.register(
            "renewals",
            "Certificate renewals answered by this instance, by outcome (ok, or the error code)",
            self.renewals.clone(),
        );
        r.register(
            "tokens_used",
            "Token uses taken by enrollments this instance committed",
            self.tokens_used.clone(),
        );
        r.register(
            "tokens_refused",
            "Enrollments refused for their token (unknown, expired, used_up, wrong_role)",
            self.tokens_refused.clone(),
        );
        r.register(
            "store_reachable",
            "1 while the database answers",
            ConstGauge::new(i64::from(db.is_some())),
        );
        if let Some(db) = db {
            let g = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            r.register(
                "tokens_issued",
                "Enrollment tokens ever created, in the database",
                ConstCounter::new(db.tokens),
            );
            r.register(
                "tokens_usable",
                "Tokens in the database with a use left that have not expired",
                g(db.tokens_usable),
            );
            r.register(
                "certificates_issued",
                "Certificates ever issued (enrollments and renewals), in the database",
                ConstCounter::new(db.certificates),
            );
            r.register(
                "crl_entries",
                "Revoked certificates still within their validity: the entries of the CRL",
                g(db.crl_entries),
            );
            r.register("members", "Enrolled nodes not revoked", g(db.members));
        }
        service::monitor::encode(&root)
    }
}
