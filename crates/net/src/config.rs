//! Runtime configuration: where to listen, who we are, whom we trust, and every bound.

use crate::tls::{Identity, Trust};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Bounds on memory and time. Every queue is bounded; every wait has a timeout.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest overlay frame (header + body) accepted or sent.
    pub max_frame: usize,
    /// Frames queued per connection before further frames are dropped (and counted).
    pub send_queue: usize,
    /// Bytes of frames queued per connection before further frames are dropped (and
    /// counted); an empty queue still takes one frame of up to `max_frame`.
    pub send_queue_bytes: usize,
    /// Frames and connection events queued from all connections to the loop; readers wait
    /// when it is full (TCP backpressure).
    pub inbound_queue: usize,
    /// Events queued for the application before further events are dropped (and counted).
    pub event_queue: usize,
    /// Commands queued from handles to the loop.
    pub command_queue: usize,
    /// Concurrent inbound connections (set-up and established).
    pub max_inbound: usize,
    /// Inbound connections still in set-up (TCP accepted, TLS + hello not finished) from one
    /// source IP at once; beyond it new connections from that IP are closed at once and
    /// counted (`refused_source`). Keeps one slow-loris host from holding every inbound slot.
    pub max_setups_per_source: usize,
    /// Inbound frames per second one link may hand to the loop on average while the loop is
    /// behind (its inbound channel more than half full; 0: no budget). A link over its
    /// budget is then read more slowly (counted in `throttled_in`), so the excess waits in
    /// the sender's TCP buffers and one flooding peer cannot take the loop from the other
    /// links. While the loop keeps up, no link is slowed.
    pub frames_per_sec: u32,
    /// Frames a link may send at once above `frames_per_sec` (the token bucket's depth).
    pub frame_burst: u32,
    /// Frames of one link waiting in the loop's inbound channel at once (its fair share of
    /// `inbound_queue`); a link at its share is read on only as the loop handles its frames
    /// (counted in `share_waits`), so a flooding link delays the others by at most this
    /// many frames.
    pub link_share: usize,
    /// Most peers with an open link at once; opening one more closes the least recently
    /// used (bounds descriptors when many peers share a host, e.g. the demo).
    pub max_links: usize,
    /// Descriptors this peer shares with other peers of the same process (`None`: it has
    /// the process to itself). With a budget a peer closes links to make room once it holds
    /// its share and the process holds its total, not before: a peer that many others need
    /// (one right after a wide gap in the IDs is a finger of many) may hold more than its
    /// share while quieter peers hold less, up to `max_links`.
    pub shared_links: Option<std::sync::Arc<LinkBudget>>,
    /// Requests waiting for a core event (e.g. lookups) at once.
    pub max_waiters: usize,
    /// TCP connect timeout for outbound connections.
    pub connect_timeout: Duration,
    /// Time allowed for TLS handshake plus hello, either direction (slow-loris guard).
    pub handshake_timeout: Duration,
    /// A connection with no frame in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// After a failed dial, frames to that peer are dropped for this long.
    pub redial_backoff: Duration,
    /// How long a graceful shutdown waits for connections to flush.
    pub shutdown_timeout: Duration,
    /// Refuse an inbound peer whose claimed listen IP differs from the connection's source
    /// IP (an unspecified claimed IP is always replaced by the source IP).
    pub require_same_ip: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: overlay::wire::DEFAULT_MAX_FRAME,
            // A link between two SIP front-ends carries about 12 000 frames a second at
            // 3 000 calls/s: 4 096 frames (at most 4 MiB) ride out a writer held up for
            // a third of a second, where 256 overflowed at a 20 ms stall of a busy machine
            // and lost in-dialog messages. The channel allocates only for frames waiting.
            send_queue: 4096,
            send_queue_bytes: 4 << 20,
            inbound_queue: 1024,
            event_queue: 1024,
            command_queue: 256,
            max_inbound: 1024,
            max_setups_per_source: 64,
            // A link between two SIP front-ends carries about four frames per call each way
            // (INVITE/ACK/BYE one way; 180, 200, 200 for the BYE the other): 20 000 frames/s
            // is 5 000 calls/s, what one peer's loop handles on a core here. At 5 000 the
            // budget, not the loop, capped such a link near 1 250 calls/s whenever a burst
            // put the loop behind, and the calls queued in TCP until they failed.
            frames_per_sec: 20_000,
            frame_burst: 5_000,
            link_share: 64,
            max_links: 4096,
            shared_links: None,
            max_waiters: 4096,
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            redial_backoff: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(3),
            require_same_ip: true,
        }
    }
}

/// The links that peers running in one process may hold together (each link holds a
/// descriptor at each end), and each peer's share of them.
#[derive(Debug)]
pub struct LinkBudget {
    open: AtomicUsize,
    total: usize,
    share: usize,
}

impl LinkBudget {
    /// `total` links among peers whose fair share is `share` each.
    pub fn new(total: usize, share: usize) -> Self {
        LinkBudget {
            open: AtomicUsize::new(0),
            total,
            share,
        }
    }

    /// Links open in the process, as last reported by its peers.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A peer's links went from `before` to `now`.
    pub(crate) fn moved(&self, before: usize, now: usize) {
        if now > before {
            self.open.fetch_add(now - before, Ordering::Relaxed);
        } else if before > now {
            self.open.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// A peer's share.
    pub fn share(&self) -> usize {
        self.share
    }

    /// Must a peer holding `own` links close one before it opens another?
    pub(crate) fn full_for(&self, own: usize) -> bool {
        own >= self.share && self.open() >= self.total
    }
}

/// Everything a [`PeerRuntime`](crate::PeerRuntime) needs.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Address to bind the TLS listener to (`127.0.0.1:0` picks a port).
    pub listen: SocketAddr,
    /// Address to announce in the hello; default: the bound address.
    pub advertise: Option<SocketAddr>,
    /// Own certificate chain and key.
    pub identity: Identity,
    /// CA and CRL.
    pub trust: Trust,
    /// Where to refresh the CRL from (`http(s)://…` or a file path), and how often.
    pub crl_refresh: Option<(String, Duration)>,
    /// Bounds.
    pub limits: Limits,
}
