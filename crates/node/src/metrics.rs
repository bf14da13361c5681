//! A running peer's metrics in the Prometheus (OpenMetrics) text format, for `GET /metrics`
//! on the control endpoint: calls and their session request delay (RFC 6076 SRD), ring
//! health, links and TLS handshakes, overlay messages by kind, the SOS link. Counters that
//! the runtime, the SOS link and the calls keep anyway are read at scrape time; only what
//! nothing else keeps (the SRD histogram, failures by reason) lives here.

use overlay::secure::{CallFailure, SecureEvent};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use service::metrics::{CounterBy, level};

/// SRD buckets, seconds: a cached contact answers in a few ms, a loaded overlay in a few
/// hundred; the secure layer's call timeout is 3 s.
const SRD_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// What the peer counts for its metrics alone, updated by its event loop.
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    srd: Histogram,
    rang: Counter,
    failed: CounterBy,
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
        // Every reason shows from the first scrape, at zero: an empty family is not
        // exported at all, and a rate over a series that does not exist is no rate.
        let reasons = [
            CallFailure::TimedOut,
            CallFailure::Tampered,
            CallFailure::NoRoute,
            CallFailure::Overloaded,
        ];
        PeerMetrics {
            srd: Histogram::new(SRD_BUCKETS),
            rang: Counter::default(),
            failed: CounterBy::new("reason", reasons.iter().map(failure_reason)),
        }
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
            SecureEvent::CallFailed { reason, .. } => self.failed.inc(failure_reason(reason)),
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
    /// SOS rankings (ok, failed), reports (ok, failed, dropped) and reports waiting for a
    /// request slot now; `None`: no SOS.
    pub sos: Option<[u64; 6]>,
    /// The media relay's counters; `None`: no relay.
    pub media: Option<sip::media::RelayStats>,
}

/// The text the scraper reads.
pub(crate) fn render(m: &PeerMetrics, s: &Scrape) -> Result<String, std::fmt::Error> {
    #[rustfmt::skip]
    let gauges = [
        ("ring_active", "1 while the peer is on its layer's ring", level(s.active)),
        ("ring_successors", "Successors known", level(s.successors)),
        ("ring_predecessor_known", "1 while the predecessor is known", level(s.predecessor_known)),
        ("ring_fingers", "Distinct finger peers", level(s.fingers)),
        ("records", "Overlay records held (SIP registrations)", level(s.records)),
        ("contact_cache_entries", "Callee contacts cached", level(s.contact_cache)),
        ("dialogs", "Calls with a dialog open", level(s.dialogs)),
        ("held_requests", "Requests a CSP holds for callees", level(s.held_requests)),
        ("members", "Members in the E&A directory", level(s.members)),
    ];
    #[rustfmt::skip]
    let counters = [
        ("calls_rang", "Calls placed here that rang (phones and the control endpoint)",
            m.rang.get()),
        ("control_calls_completed", "Calls placed through the control endpoint that completed",
            s.calls_completed),
        ("control_calls_failed", "Calls placed through the control endpoint that failed",
            s.calls_failed),
        ("calls_answered", "Calls answered by the peer's own user agent", s.calls_answered),
    ];
    let mut r = service::metrics::Scrape::new("p2psip_peer");
    for (name, help, value) in gauges {
        r.gauge(name, help, value);
    }
    for (name, help, value) in counters {
        r.counter(name, help, value);
    }
    r.family(
        "calls_failed",
        "Calls placed here that failed, by reason",
        &m.failed,
    )
    .metric(
        "srd_seconds",
        "Session request delay (INVITE sent to Ringing, RFC 6076) of calls placed here",
        m.srd.clone(),
    );
    if let Some(stats) = s.net.as_object() {
        for (name, v) in stats {
            let Some(v) = v.as_u64() else { continue };
            let name = format!("net_{name}");
            let help = format!("Runtime counter {name}");
            if name.ends_with("_max") {
                r.gauge(&name, &help, v);
            } else {
                r.counter(&name, &help, v);
            }
        }
    }
    r.counts(
        "messages_received",
        "Overlay messages received, by kind",
        "kind",
        s.kinds.iter().map(|(kind, v)| (*kind, *v)),
    );
    if let Some(
        [
            rank_ok,
            rank_failed,
            rep_ok,
            rep_failed,
            rep_dropped,
            rep_waiting,
        ],
    ) = s.sos
    {
        r.counts(
            "sos_rankings",
            "Route rankings asked of the SOS",
            "outcome",
            [("ok", rank_ok), ("failed", rank_failed)],
        )
        .counts(
            "sos_reports",
            "Evidence reports sent to the SOS",
            "outcome",
            [
                ("ok", rep_ok),
                ("failed", rep_failed),
                ("dropped", rep_dropped),
            ],
        )
        .gauge(
            "sos_reports_waiting",
            "Evidence reports waiting for a free request to the SOS (one that answers slowly)",
            rep_waiting,
        );
    }
    if let Some(m) = &s.media {
        #[rustfmt::skip]
        let counters = [
            ("media_rtp_packets",
                "RTP packets the relay received on ended streams, both directions", m.rtp_packets),
            ("media_rtp_lost",
                "RTP packets lost (expected minus received) on ended streams, both directions",
                m.rtp_lost),
            ("media_forwarded", "Datagrams the relay forwarded", m.forwarded),
            ("media_turn_failed", "TURN allocations for far legs that failed", m.turn_failed),
            ("media_turn_short", "Streams that went direct because no TURN allocation was ready",
                m.turn_short),
            ("media_ice_selected",
                "Far legs whose ICE with the other peer's relay selected a pair",
                m.ice_selected),
            ("media_ice_failed", "Far legs whose ICE found no working pair", m.ice_failed),
            ("media_consent_lost",
                "Far-leg components that stopped sending because consent expired (RFC 7675)",
                m.consent_lost),
        ];
        let paths = [
            sip::media::MediaPath::Direct,
            sip::media::MediaPath::ServerReflexive,
            sip::media::MediaPath::Relayed,
        ];
        r.counts(
            "media_streams_ended",
            "Media streams the relay carried for local phones, ended, by the far leg's path",
            "path",
            paths.iter().map(|p| p.as_str()).zip(m.ended_by_path),
        );
        for (name, help, value) in counters {
            r.counter(name, help, value);
        }
        r.counts(
            "media_dropped",
            "Datagrams the relay dropped, by reason",
            "reason",
            [
                ("foreign_source", m.foreign),
                ("no_destination", m.no_destination),
                ("over_limit", m.over_limit),
                ("stray", m.stray),
                ("stun_without_ice", m.stun_dropped),
                ("no_consent", m.no_consent),
            ],
        );
    }
    r.encode()
}
