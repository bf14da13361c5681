//! Counters of the runtime, readable at any time without a round trip through the loop.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many refusal reasons are kept for inspection.
const KEEP_REASONS: usize = 32;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters (atomics), shared by the loop and the connection tasks.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A snapshot of the runtime's counters.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct Stats {
            $($(#[$doc])* pub $name: u64,)*
            /// The most recent refusal reasons (oldest first), for logs and tests.
            pub recent_refusals: Vec<String>,
        }

        impl Counters {
            fn snapshot_counts(&self) -> Stats {
                Stats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    recent_refusals: Vec::new(),
                }
            }
        }
    };
}

counters! {
    /// Overlay frames received and handed to the core.
    frames_in,
    /// Overlay frames queued to connections.
    frames_out,
    /// Bytes of overlay frames received.
    bytes_in,
    /// Bytes of overlay frames written.
    bytes_out,
    /// Outbound connections established (TLS + hello).
    dials_ok,
    /// Sum of the set-up times (TCP connect + TLS 1.3 handshake + hello) of successful
    /// outbound connections, µs (divide by `dials_ok` for the mean).
    dial_setup_us_sum,
    /// Longest set-up time of a successful outbound connection, µs.
    dial_setup_us_max,
    /// Outbound connections that failed (connect, TLS, hello or timeout).
    dials_failed,
    /// Inbound connections established (TLS + hello).
    accepts_ok,
    /// Inbound connections refused during set-up (TLS, certificate, hello, ID mismatch).
    accepts_refused,
    /// Inbound connections closed because set-up took longer than the handshake timeout.
    handshake_timeouts,
    /// Inbound connections refused because the inbound cap was reached.
    refused_capacity,
    /// Inbound connections refused because their source IP already held
    /// `max_setups_per_source` unfinished set-ups.
    refused_source,
    /// Times a link's reader paused because the link exceeded its inbound frame budget.
    throttled_in,
    /// Total time links' readers spent paused over their frame budget, µs.
    throttled_us,
    /// Times a link's reader waited because `link_share` of its frames were already
    /// waiting for the loop.
    share_waits,
    /// Frames dropped because a connection's send queue was full.
    dropped_queue_full,
    /// Frames dropped because the destination had no address.
    dropped_no_addr,
    /// Frames dropped while a failed peer was in its redial back-off.
    dropped_backoff,
    /// Frames dropped because they could not be encoded within the frame limit.
    dropped_oversized_out,
    /// Connections closed because the peer sent a frame over the limit.
    oversized_in,
    /// Connections closed because the peer sent an undecodable frame.
    malformed_in,
    /// Connections closed after the idle timeout.
    idle_closed,
    /// Connections closed because a write could not finish within the idle timeout (the
    /// peer stopped reading).
    write_timeouts,
    /// Links closed to make room under `max_links`.
    links_evicted,
    /// Links closed because the core gave up on the peer at their far end (it stopped
    /// answering over them).
    failed_closed,
    /// Links open now (a gauge, not a count: the runtime's links and spares when its loop
    /// last turned).
    links_open,
    /// Events dropped because the application's event channel was full.
    dropped_events,
    /// Frames relayed to an outbound-only peer we are the relay of.
    frames_relayed,
    /// Frames for an outbound-only peer dropped (not ours, link gone, queue full).
    relay_dropped,
    /// CRLs loaded (initial and refreshes).
    crl_loads,
    /// Failed CRL refreshes.
    crl_failures,
}

/// Counters plus the recent refusal reasons.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) c: Counters,
    reasons: Mutex<VecDeque<String>>,
}

impl Shared {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn refusal(&self, reason: String) {
        if let Ok(mut r) = self.reasons.lock() {
            if r.len() >= KEEP_REASONS {
                r.pop_front();
            }
            r.push_back(reason);
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut s = self.c.snapshot_counts();
        if let Ok(r) = self.reasons.lock() {
            s.recent_refusals = r.iter().cloned().collect();
        }
        s
    }
}
