//! Tunables of a Chord node.

use super::span::{RingArc, RingSpan};
use crate::IdSpace;
use std::time::Duration;

/// Chord parameters. Defaults follow Stoica et al. with intervals suited to VoIP call set-up.
#[derive(Clone, Debug)]
pub struct ChordConfig {
    /// The identifier circle.
    pub space: IdSpace,
    /// The arc of the circle this ring's members occupy (a layer's), over which the fingers
    /// are spread; `None` (the default): the whole circle. See [`RingSpan`].
    pub arc: Option<RingArc>,
    /// Successor-list length r: a lookup survives r − 1 consecutive failed peers.
    pub successors: usize,
    /// How often stabilize runs.
    pub stabilize_every: Duration,
    /// How often one finger is refreshed.
    pub fix_fingers_every: Duration,
    /// Longest stabilize interval while the ring around a peer is quiet. Each stabilize
    /// round that finds the successor list unchanged doubles the interval, up to this; any
    /// change near the peer (a new successor or predecessor, a failed or leaving neighbour)
    /// drops it back to `stabilize_every` at once. `None` (the default): no back-off, classic
    /// Chord.
    pub stabilize_max: Option<Duration>,
    /// Longest finger-refresh interval while the fingers are quiet: each refresh that finds
    /// its finger unchanged doubles `fix_fingers_every`, up to this; a changed or failed
    /// finger (or any change near the peer) drops it back. `None` (the default): no back-off.
    pub fix_fingers_max: Option<Duration>,
    /// How often the predecessor is probed. A predecessor heard from within the interval
    /// (its stabilize requests reach us anyway) is not probed; with `stabilize_max` set the
    /// interval backs off with stabilize, up to twice `stabilize_max`, so a quiet
    /// predecessor's own stabilize traffic is all the liveness evidence needed.
    pub check_predecessor_every: Duration,
    /// How often a peer asks the ring, through a bootstrap peer, who its successor is
    /// (heals partitions).
    pub ring_check_every: Duration,
    /// Longest ring-check interval while the ring agrees with us: each check that confirms
    /// our successor doubles the interval up to this; a change near the peer or a check
    /// that goes unanswered (we may be cut off) drops it back to `ring_check_every`, so a
    /// partition heals within about one base interval of the cut healing. `None` (the
    /// default): no back-off.
    pub ring_check_max: Option<Duration>,
    /// Send straight to the owner when it is anywhere in the successor list (not only the
    /// first successor). Shortens paths below Chord's ½·log2 N; off by default so plain
    /// lookups measure classic Chord, on for call routing to peer IDs.
    pub successor_shortcut: bool,
    /// Keep the successor list at `successors` even when the successor's own list is
    /// shorter, by asking the last peer named for more (a CSP that must know its arc beyond
    /// an eclipse of its first successors is configured with a longer list than its
    /// neighbours). Off by default: where every peer keeps lists of the same length the
    /// extension only fires while the ring forms, and then it costs extra links and slows
    /// convergence.
    pub extend_successors: bool,
    /// How long to wait for a hop acknowledgement or an RPC answer before declaring a peer dead.
    pub rpc_timeout: Duration,
    /// How long an originated lookup may take per attempt.
    pub lookup_timeout: Duration,
    /// Extra attempts after a lookup times out.
    pub lookup_retries: u8,
    /// Re-forward attempts when a next hop does not acknowledge.
    pub forward_retries: u8,
    /// Cap on concurrently originated lookups (excess lookups fail at once).
    pub max_lookups: usize,
    /// Cap on routed messages awaiting a hop acknowledgement (excess are dropped).
    pub max_pending_forwards: usize,
    /// Longest accepted hop path; longer routes are dropped as loops or attacks.
    pub max_path: usize,
    /// Cap on stored records.
    pub max_records: usize,
    /// Cap on one record's payload, in bytes.
    pub max_record_len: usize,
}

impl ChordConfig {
    /// The stretch of the circle the fingers span.
    pub fn span(&self) -> RingSpan {
        RingSpan::new(self.space, self.arc)
    }

    /// Defaults for an ID space of `space` bits.
    pub fn new(space: IdSpace) -> Self {
        ChordConfig {
            space,
            arc: None,
            successors: 8,
            stabilize_every: Duration::from_secs(2),
            fix_fingers_every: Duration::from_secs(4),
            stabilize_max: None,
            fix_fingers_max: None,
            check_predecessor_every: Duration::from_secs(5),
            ring_check_every: Duration::from_secs(30),
            ring_check_max: None,
            successor_shortcut: false,
            extend_successors: false,
            rpc_timeout: Duration::from_millis(500),
            lookup_timeout: Duration::from_secs(5),
            lookup_retries: 2,
            forward_retries: 3,
            max_lookups: 4096,
            max_pending_forwards: 4096,
            max_path: 64,
            max_records: 65_536,
            max_record_len: 4096,
        }
    }
}
