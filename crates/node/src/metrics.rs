//! A running peer's metrics in the Prometheus (OpenMetrics) text format, for `GET /metrics`
//! on the control endpoint: calls and their session request delay (RFC 6076 SRD), ring
//! health, links and TLS handshakes, overlay messages by kind, the SOS link. Counters that
//! the runtime, the SOS link and the calls keep anyway are read at scrape time; only what
//! nothing else keeps (the SRD histogram, failures by reason) lives here.

use overlay::secure::{CallFailure, SecureEvent};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// SRD buckets, seconds: a cached contact answers in a few ms, a loaded overlay in a few
/// hundred; the secure layer's call timeout is 3 s.
const SRD_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A label with one value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Path {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

/// What the peer counts for its metrics alone, updated by its event loop.
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    srd: Histogram,
    rang: Counter,
    failed: Family<Reason, Counter>,
}

/// Why a call placed here failed, as the `reason` label.
fn failure_reason(f: &CallFailure) -> &'static str {
    match f {
        CallFailure::TimedOut => "timed_out",
        CallFailure::Tampered => "tampered",
        CallFailure::NoRoute => "no_route",
        CallFailure::Overloaded => "overloaded",
    }
}

impl Default for PeerMetrics {
    fn default() -> Self {
        let m = PeerMetrics {
            srd: Histogram::new(SRD_BUCKETS),
            rang: Counter::default(),
            failed: Family::default(),
        };
        // Every reason shows from the first scrape, at zero: an empty family is not
        // exported at all, and a rate over a series that does not exist is no rate.
        for f in [
            CallFailure::TimedOut,
            CallFailure::Tampered,
            CallFailure::NoRoute,
            CallFailure::Overloaded,
        ] {
            let _ = m.failed.get_or_create(&Reason {
                reason: failure_reason(&f).into(),
            });
        }
        m
    }
}

impl PeerMetrics {
    /// Count an outcome of a call placed here (by the control endpoint or a phone).
    pub(crate) fn on_overlay(&self, ev: &SecureEvent) {
        match ev {
            SecureEvent::CallRinging { setup, .. } => {
                self.rang.inc();
                self.srd.observe(setup.as_secs_f64());
            }
            SecureEvent::CallFailed { reason, .. } => {
                let reason = failure_reason(reason);
                self.failed
                    .get_or_create(&Reason {
                        reason: reason.into(),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

/// The peer's state at one scrape, read from its loop and its counters.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// On a ring (created or joined, not left).
    pub active: bool,
    pub successors: usize,
    pub predecessor_known: bool,
    pub fingers: usize,
    pub records: usize,
    pub contact_cache: usize,
    pub dialogs: usize,
    pub held_requests: usize,
    pub members: usize,
    /// Calls placed here through the control endpoint that completed and failed; calls
    /// answered here.
    pub calls_completed: u64,
    pub calls_failed: u64,
    pub calls_answered: u64,
    /// The runtime's counters (`net::Stats` as JSON: every number a counter but `*_max`).
    pub net: serde_json::Value,
    /// Overlay messages received, by kind.
    pub kinds: std::collections::BTreeMap<&'static str, u64>,
    /// SOS rankings (ok, failed) and reports (ok, failed, dropped); `None`: no SOS.
    pub sos: Option<[u64; 5]>,
    /// The media relay's counters; `None`: no relay.
    pub media: Option<sip::media::RelayStats>,
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    r.register(name, help, ConstGauge::new(v));
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

/// The text the scraper reads.
pub(crate) fn render(m: &PeerMetrics, s: &Scrape) -> Result<String, std::fmt::Error> {
    let mut root = Registry::default();
    let r = root.sub_registry_with_prefix("p2psip_peer");
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    gauge(
        r,
        "ring_active",
        "1 while the peer is on its layer's ring",
        i64::from(s.active),
    );
    gauge(r, "ring_successors", "Successors known", n(s.successors));
    gauge(
        r,
        "ring_predecessor_known",
        "1 while the predecessor is known",
        i64::from(s.predecessor_known),
    );
    gauge(r, "ring_fingers", "Distinct finger peers", n(s.fingers));
    gauge(
        r,
        "records",
        "Overlay records held (SIP registrations)",
        n(s.records),
    );
    gauge(
        r,
        "contact_cache_entries",
        "Callee contacts cached",
        n(s.contact_cache),
    );
    gauge(r, "dialogs", "Calls with a dialog open", n(s.dialogs));
    gauge(
        r,
        "held_requests",
        "Requests a CSP holds for callees",
        n(s.held_requests),
    );
    gauge(r, "members", "Members in the E&A directory", n(s.members));
    counter(
        r,
        "calls_rang",
        "Calls placed here that rang (phones and the control endpoint)",
        m.rang.get(),
    );
    r.register(
        "calls_failed",
        "Calls placed here that failed, by reason",
        m.failed.clone(),
    );
    r.register(
        "srd_seconds",
        "Session request delay (INVITE sent to Ringing, RFC 6076) of calls placed here",
        m.srd.clone(),
    );
    counter(
        r,
        "control_calls_completed",
        "Calls placed through the control endpoint that completed",
        s.calls_completed,
    );
    counter(
        r,
        "control_calls_failed",
        "Calls placed through the control endpoint that failed",
        s.calls_failed,
    );
    counter(
        r,
        "calls_answered",
        "Calls answered by the peer's own user agent",
        s.calls_answered,
    );
    if let Some(stats) = s.net.as_object() {
        for (name, v) in stats {
            let Some(v) = v.as_u64() else { continue };
            let name = format!("net_{name}");
            let help = format!("Runtime counter {name}");
            if name.ends_with("_max") {
                gauge(r, &name, &help, i64::try_from(v).unwrap_or(i64::MAX));
            } else {
                counter(r, &name, &help, v);
            }
        }
    }
    let kinds = Family::<Kind, Counter>::default();
    for (kind, v) in &s.kinds {
        kinds
            .get_or_create(&Kind {
                kind: (*kind).into(),
            })
            .inc_by(*v);
    }
    r.register(
        "messages_received",
        "Overlay messages received, by kind",
        kinds,
    );
    if let Some([rank_ok, rank_failed, rep_ok, rep_failed, rep_dropped]) = s.sos {
        let rankings = Family::<Outcome, Counter>::default();
        let reports = Family::<Outcome, Counter>::default();
        for (f, outcome, v) in [
            (&rankings, "ok", rank_ok),
            (&rankings, "failed", rank_failed),
            (&reports, "ok", rep_ok),
            (&reports, "failed", rep_failed),
            (&reports, "dropped", rep_dropped),
        ] {
            f.get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc_by(v);
        }
        r.register("sos_rankings", "Route rankings asked of the SOS", rankings);
        r.register("sos_reports", "Evidence reports sent to the SOS", reports);
    }
    if let Some(m) = &s.media {
        let ended = Family::<Path, Counter>::default();
        for (path, v) in [
            sip::media::MediaPath::Direct,
            sip::media::MediaPath::ServerReflexive,
            sip::media::MediaPath::Relayed,
        ]
        .iter()
        .zip(m.ended_by_path)
        {
            ended
                .get_or_create(&Path {
                    path: path.as_str().into(),
                })
                .inc_by(v);
        }
        r.register(
            "media_streams_ended",
            "Media streams the relay carried for local phones, ended, by the far leg's path",
            ended,
        );
        counter(
            r,
            "media_rtp_packets",
            "RTP packets the relay received on ended streams, both directions",
            m.rtp_packets,
        );
        counter(
            r,
            "media_rtp_lost",
            "RTP packets lost (expected minus received) on ended streams, both directions",
            m.rtp_lost,
        );
        counter(
            r,
            "media_forwarded",
            "Datagrams the relay forwarded",
            m.forwarded,
        );
        let dropped = Family::<Reason, Counter>::default();
        for (reason, v) in [
            ("foreign_source", m.foreign),
            ("no_destination", m.no_destination),
            ("over_limit", m.over_limit),
            ("stray", m.stray),
            ("stun_without_ice", m.stun_dropped),
            ("no_consent", m.no_consent),
        ] {
            dropped
                .get_or_create(&Reason {
                    reason: reason.into(),
                })
                .inc_by(v);
        }
        r.register(
            "media_dropped",
            "Datagrams the relay dropped, by reason",
            dropped,
        );
        counter(
            r,
            "media_turn_failed",
            "TURN allocations for far legs that failed",
            m.turn_failed,
        );
        counter(
            r,
            "media_turn_short",
            "Streams that went direct because no TURN allocation was ready",
            m.turn_short,
        );
        counter(
            r,
            "media_ice_selected",
            "Far legs whose ICE with the other peer's relay selected a pair",
            m.ice_selected,
        );
        counter(
            r,
            "media_ice_failed",
            "Far legs whose ICE found no working pair",
            m.ice_failed,
        );
        counter(
            r,
            "media_consent_lost",
            "Far-leg components that stopped sending because consent expired (RFC 7675)",
            m.consent_lost,
        );
    }
    let mut text = String::new();
    encode(&mut text, &root)?;
    Ok(text)
}
