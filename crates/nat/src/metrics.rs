//! The STUN/TURN server's metrics in the OpenMetrics text format (prometheus-client, names
//! `p2psip_stun_*`), for `p2psip stun-server --metrics-listen`: Binding requests,
//! allocations active and created, relayed datagrams and bytes each way, refusals by
//! reason, dropped peer datagrams. Everything is read at scrape time from the loop's
//! [`Snapshot`] and the [`ServerCounters`].

use crate::server::{ServerCounters, Snapshot};
use service::metrics::{Scrape, level};
use std::sync::atomic::{AtomicU64, Ordering};

/// How long a monitoring request waits for the server's loop.
#[cfg(feature = "monitor")]
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The server's monitoring answers (`service::monitor::serve`), from its loop: metrics
/// from a [`Snapshot`], ready while the loop answers.
#[cfg(feature = "monitor")]
impl service::monitor::Probe for crate::Monitor {
    async fn metrics(&self) -> Result<String, String> {
        let snap = self
            .snapshot(PROBE_WAIT)
            .await
            .ok_or("the server's loop does not answer")?;
        render(&snap, &self.counters).map_err(|e| e.to_string())
    }

    async fn ready(&self) -> Result<(), String> {
        match self.snapshot(PROBE_WAIT).await {
            Some(_) => Ok(()),
            None => Err("the server's loop does not answer".into()),
        }
    }
}

/// A family of counts read at scrape time: name, help, the label that splits it and the
/// count under each of the label's values.
type Family<'a> = (&'a str, &'a str, &'static str, &'a [(&'a str, u64)]);

/// The text of one scrape.
pub fn render(s: &Snapshot, c: &ServerCounters) -> Result<String, std::fmt::Error> {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let g = &s.gate;
    #[rustfmt::skip]
    let gauges = [
        ("allocations_active", "TURN allocations holding a relay socket now",
            level(s.active_allocations)),
        ("allocations_max", "The most TURN allocations the server holds (--max-allocations)",
            level(s.max_allocations)),
        ("allocation_users", "Users (enrolled peers) with an allocation now",
            level(s.active_users)),
    ];
    #[rustfmt::skip]
    let counters = [
        ("binding_requests", "STUN Binding requests received", g.binding_requests),
        ("allocations_created", "TURN allocations that got a relay socket", g.allocations_created),
        ("allocations_closed", "TURN allocations released (deleted, expired)",
            g.allocations_closed),
        ("datagrams_sent", "Datagrams sent to clients and peers", get(&c.sent)),
    ];
    #[rustfmt::skip]
    let families: [Family; 5] = [
        ("relayed_packets", "Datagrams relayed, to peers (out of relay sockets) and to clients",
            "direction",
            &[("to_peer", get(&c.relayed_to_peers)), ("to_client", get(&c.relayed_to_clients))]),
        ("relayed_bytes",
            "Bytes of the datagrams relayed, as sent (to clients with their ChannelData or Data \
             framing)",
            "direction",
            &[("to_peer", get(&c.relayed_to_peers_bytes)),
              ("to_client", get(&c.relayed_to_clients_bytes))]),
        ("refusals",
            "Requests refused, by reason: quota (486), allocations_full, permissions_full, \
             channels_full (508), expired_credentials (401), relay_ports (no relay socket could \
             be bound)",
            "reason",
            &[("quota", g.quota_rejects), ("allocations_full", g.allocations_full),
              ("permissions_full", g.permissions_full), ("channels_full", g.channels_full),
              ("expired_credentials", g.expired_credentials),
              ("relay_ports", get(&c.relay_bind_failures))]),
        ("peer_datagrams_dropped",
            "Datagrams from peers not relayed: no_permission, queue_full (the loop was behind)",
            "reason",
            &[("no_permission", get(&c.peer_unpermitted)), ("queue_full", get(&c.peer_drops))]),
        ("datagrams_received",
            "Datagrams received from clients (listening socket) and peers (relay sockets)",
            "from",
            &[("client", get(&c.client_datagrams)), ("peer", get(&c.peer_datagrams))]),
    ];
    let mut r = Scrape::new("p2psip_stun");
    for (name, help, value) in gauges {
        r.gauge(name, help, value);
    }
    for (name, help, value) in counters {
        r.counter(name, help, value);
    }
    for (name, help, label, values) in families {
        r.counts(name, help, label, values.iter().copied());
    }
    r.encode()
}
