//! One way for every p2psip service to write its `GET /metrics` scrape (OpenMetrics text
//! through prometheus-client): a [`Scrape`] under the service's prefix, with counters and
//! gauges read at scrape time, families split by one label ([`CounterBy`] for what a
//! service counts as it goes, [`Scrape::counts`] for counts read at scrape time), and any
//! other prometheus-client metric.
//!
//! Before it, each service declared its own one-field label structs, its own saturating
//! `usize`→gauge conversions and its own registration blocks; now a metric is one call.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};

/// The label set of a family split one way: `{outcome="ok"}`.
pub type Label = [(&'static str, String); 1];

/// A counter family split by one label (`outcome`, `reason`, …) that a service counts into
/// as it goes; cloning shares the counts.
#[derive(Clone, Debug)]
pub struct CounterBy {
    label: &'static str,
    family: Family<Label, Counter>,
}

impl CounterBy {
    /// A family split by `label` in which each of `values` shows from the first scrape, at
    /// zero: a rate over a series that does not exist yet is no rate at all.
    pub fn new<'a>(label: &'static str, values: impl IntoIterator<Item = &'a str>) -> Self {
        let c = CounterBy {
            label,
            family: Family::default(),
        };
        for v in values {
            c.inc_by(v, 0);
        }
        c
    }

    /// Count one under `value`.
    pub fn inc(&self, value: &str) {
        self.inc_by(value, 1);
    }

    /// Count `n` under `value`.
    pub fn inc_by(&self, value: &str, n: u64) {
        self.family
            .get_or_create(&[(self.label, value.to_owned())])
            .inc_by(n);
    }

    /// The count under `value` (0 when nothing was counted there).
    pub fn get(&self, value: &str) -> u64 {
        self.family
            .get_or_create(&[(self.label, value.to_owned())])
            .get()
    }
}

/// A gauge's value from a count, a size or a flag (saturating at `i64::MAX`).
pub fn level(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// One scrape being written: the registry of a service's metrics, every name under the
/// service's prefix (`p2psip_sos` → `p2psip_sos_reports_total`).
#[derive(Debug)]
pub struct Scrape {
    registry: Registry,
}

impl Scrape {
    /// An empty scrape whose names start with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Scrape {
            registry: Registry::with_prefix(prefix),
        }
    }

    /// The registry, for metrics that register themselves
    /// ([`HttpMetrics::register`](crate::monitor::HttpMetrics::register)).
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A counter whose value was read at scrape time.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.metric(name, help, ConstCounter::new(value))
    }

    /// A gauge whose value was read at scrape time (saturating at `i64::MAX`).
    pub fn gauge(&mut self, name: &str, help: &str, value: impl TryInto<i64>) -> &mut Self {
        self.metric(name, help, ConstGauge::new(level(value)))
    }

    /// A family the service counts into ([`CounterBy`]).
    pub fn family(&mut self, name: &str, help: &str, family: &CounterBy) -> &mut Self {
        self.metric(name, help, family.family.clone())
    }

    /// A family split by `label` whose counts were read at scrape time: one series per
    /// `(value, count)`.
    pub fn counts<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> &mut Self {
        let family = CounterBy::new(label, []);
        for (v, n) in values {
            family.inc_by(v, n);
        }
        self.family(name, help, &family)
    }

    /// Any other metric (a histogram, a family with more labels).
    pub fn metric(&mut self, name: &str, help: &str, metric: impl Metric) -> &mut Self {
        self.registry.register(name, help, metric);
        self
    }

    /// The OpenMetrics text of the scrape.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_writes_counters_gauges_and_families_under_its_prefix() {
        let outcomes = CounterBy::new("outcome", ["ok", "refused"]);
        outcomes.inc("ok");
        outcomes.inc_by("refused", 3);
        let mut s = Scrape::new("p2psip_test");
        s.counter("commits", "Commits", 7)
            .gauge("peers", "Peers", usize::MAX)
            .gauge("up", "Up", true)
            .family("answers", "Answers", &outcomes)
            .counts("errors", "Errors", "op", [("commit", 2), ("reload", 0)]);
        let text = s.encode().expect("encodes");
        for line in [
            "p2psip_test_commits_total 7",
            &format!("p2psip_test_peers {}", i64::MAX),
            "p2psip_test_up 1",
            "p2psip_test_answers_total{outcome=\"ok\"} 1",
            "p2psip_test_answers_total{outcome=\"refused\"} 3",
            "p2psip_test_errors_total{op=\"commit\"} 2",
            "p2psip_test_errors_total{op=\"reload\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert_eq!((outcomes.get("ok"), outcomes.get("never")), (1, 0));
    }
}
