//! The STUN/TURN server's metrics in the OpenMetrics text format (prometheus-client, names
//! `p2psip_stun_*`), for `p2psip stun-server --metrics-listen`: Binding requests,
//! allocations active and created, relayed datagrams and bytes each way, refusals by
//! reason, dropped peer datagrams. Everything is read at scrape time from the loop's
//! [`Snapshot`] and the [`ServerCounters`].

use crate::server::{ServerCounters, Snapshot};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    from: String,
}

fn family<L, F>(values: &[(&str, u64)], label: F) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    F: Fn(&str) -> L,
{
    let f = Family::<L, Counter>::default();
    for (name, v) in values {
        f.get_or_create(&label(name)).inc_by(*v);
    }
    f
}

fn reason(r: &str) -> Reason {
    Reason { reason: r.into() }
}

/// The text of one scrape.
pub fn render(s: &Snapshot, c: &ServerCounters) -> Result<String, std::fmt::Error> {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let n = |v: usize| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    let mut root = Registry::default();
    let r = root.sub_registry_with_prefix("p2psip_stun");
    let g = &s.gate;
    r.register(
        "binding_requests",
        "STUN Binding requests received",
        ConstCounter::new(g.binding_requests),
    );
    r.register(
        "allocations_active",
        "TURN allocations holding a relay socket now",
        n(s.active_allocations),
    );
    r.register(
        "allocations_max",
        "The most TURN allocations the server holds (--max-allocations)",
        n(s.max_allocations),
    );
    r.register(
        "allocation_users",
        "Users (enrolled peers) with an allocation now",
        n(s.active_users),
    );
    r.register(
        "allocations_created",
        "TURN allocations that got a relay socket",
        ConstCounter::new(g.allocations_created),
    );
    r.register(
        "allocations_closed",
        "TURN allocations released (deleted, expired)",
        ConstCounter::new(g.allocations_closed),
    );
    let to = |d: &str| Direction {
        direction: d.into(),
    };
    r.register(
        "relayed_packets",
        "Datagrams relayed, to peers (out of relay sockets) and to clients",
        family(
            &[
                ("to_peer", get(&c.relayed_to_peers)),
                ("to_client", get(&c.relayed_to_clients)),
            ],
            to,
        ),
    );
    r.register(
        "relayed_bytes",
        "Bytes of the datagrams relayed, as sent (to clients with their ChannelData or Data framing)",
        family(
            &[
                ("to_peer", get(&c.relayed_to_peers_bytes)),
                ("to_client", get(&c.relayed_to_clients_bytes)),
            ],
            to,
        ),
    );
    r.register(
        "refusals",
        "Requests refused, by reason: quota (486), allocations_full, permissions_full, \
         channels_full (508), expired_credentials (401), relay_ports (no relay socket could be bound)",
        family(
            &[
                ("quota", g.quota_rejects),
                ("allocations_full", g.allocations_full),
                ("permissions_full", g.permissions_full),
                ("channels_full", g.channels_full),
                ("expired_credentials", g.expired_credentials),
                ("relay_ports", get(&c.relay_bind_failures)),
            ],
            reason,
        ),
    );
    r.register(
        "peer_datagrams_dropped",
        "Datagrams from peers not relayed: no_permission, queue_full (the loop was behind)",
        family(
            &[
                ("no_permission", get(&c.peer_unpermitted)),
                ("queue_full", get(&c.peer_drops)),
            ],
            reason,
        ),
    );
    r.register(
        "datagrams_received",
        "Datagrams received from clients (listening socket) and peers (relay sockets)",
        family(
            &[
                ("client", get(&c.client_datagrams)),
                ("peer", get(&c.peer_datagrams)),
            ],
            |f: &str| Source { from: f.into() },
        ),
    );
    r.register(
        "datagrams_sent",
        "Datagrams sent to clients and peers",
        ConstCounter::new(get(&c.sent)),
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &root)?;
    Ok(text)
}
