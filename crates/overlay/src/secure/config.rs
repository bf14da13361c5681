//! Parameters of the secure layer and the context all peers of one overlay share.

use super::layers::{Directory, LayerArcs};
use super::sign::SigVerifier;
use crate::Contact;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How calls are routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Routing {
    /// The paper's system: CSP/CSPG, PingRequest multicast, SOS-ranked route, fetch from CSP.
    Secure,
    /// Plain Chord: the INVITE itself routed hop by hop (the baseline).
    Chord,
}

/// Where a CSP sends its PingRequest copies first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FirstHops {
    /// Its first successors (the paper's mechanism).
    Successors,
    /// Spread over the ring: alternately its successors and the fingers that precede the
    /// target, farthest first, so copies take disjoint paths.
    Diverse,
}

/// Parameters of the secure layer.
#[derive(Clone, Debug)]
pub struct SecureConfig {
    /// PingRequest copies per request.
    pub fanout: usize,
    /// Where the copies go first.
    pub first_hops: FirstHops,
    /// How long a peer waits for the next hop to acknowledge a copy before it reports that
    /// hop and passes the copy to another.
    pub ack_timeout: Duration,
    /// Next hops a peer tries for one copy after the first stayed silent.
    pub reroutes: u8,
    /// How long the CSP waits without a hand-over of any copy (and none at the target)
    /// before it takes the copies for stalled and sends a new round around the peers that
    /// last held them.
    pub stall_timeout: Duration,
    /// New rounds the CSP may send for one request.
    pub rescue_rounds: u8,
    /// Longest the target waits for more copies after the first. It waits as long again as
    /// the first copy took from the CSP, within [`collect_min`](Self::collect_min) and this,
    /// and asks the SOS at once when every copy is in.
    pub collect_window: Duration,
    /// Shortest the target waits for more copies after the first (scheduling jitter on a
    /// fast first copy must not cut the others out).
    pub collect_min: Duration,
    /// How long the target waits for the SOS before taking the shortest route.
    pub sos_timeout: Duration,
    /// Caller's wait for Ringing before retrying, then failing.
    pub call_timeout: Duration,
    /// How far a PingRequest's timestamp may be from the hop's clock, either way, in
    /// milliseconds: the replay window, and the clock skew allowed between a CSP and the
    /// peers on its routes.
    pub timestamp_window_ms: u64,
    /// Longest accepted PingRequest path.
    pub max_path: usize,
    /// Cap on held requests, collections, calls and remembered nonces, each.
    pub max_pending: usize,
    /// Contact-cache size (layers 1 and 2).
    pub cache_capacity: usize,
    /// Contact-cache entry lifetime.
    pub cache_ttl: Duration,
    /// Use the contact cache at all.
    pub cache_enabled: bool,
    /// Calls whose other end each peer remembers for in-dialog messages: as many as a SIP
    /// front-end may hold calls and more, since a call forgotten here while it lasts loses
    /// its 200, ACK and BYE (the oldest is forgotten first).
    pub max_dialogs: usize,
    /// Largest record a peer stores for others.
    pub max_record_bytes: usize,
    /// Successors the responsible peer copies each record to.
    pub record_replicas: usize,
}

/// Memory one peer's dialog table may take: 65 536 calls. At 4 096 calls the table was
/// smaller than a SIP front-end's call table (10 922 calls), and under 4 000 calls/s, with
/// set-up latency grown to a second, it forgot calls still in progress: their 200s and BYEs
/// were refused, the calls hung, and the front-ends' tables filled.
const DIALOG_MEMORY: usize = 16 << 20;

/// What one remembered call costs in the dialog table (its two ordered-map entries, the
/// other end's contact and the INVITE digest, with the maps' node overhead), rounded up.
const DIALOG_BYTES: usize = 256;

impl Default for SecureConfig {
    fn default() -> Self {
        SecureConfig {
            fanout: 4,
            first_hops: FirstHops::Diverse,
            ack_timeout: Duration::from_millis(800),
            reroutes: 2,
            stall_timeout: Duration::from_millis(900),
            rescue_rounds: 2,
            collect_window: Duration::from_millis(150),
            collect_min: Duration::from_millis(30),
            sos_timeout: Duration::from_millis(500),
            call_timeout: Duration::from_secs(3),
            timestamp_window_ms: 30_000,
            max_path: 48,
            max_pending: 1024,
            cache_capacity: 256,
            cache_ttl: Duration::from_secs(600),
            cache_enabled: true,
            max_dialogs: DIALOG_MEMORY / DIALOG_BYTES,
            max_record_bytes: 4096,
            record_replicas: 2,
        }
    }
}

/// Shared, read-only context of all peers of one overlay.
#[derive(Clone)]
pub struct OverlayContext {
    /// Secure-layer parameters.
    pub cfg: Arc<SecureConfig>,
    /// Layer arcs.
    pub arcs: LayerArcs,
    /// CSPs and CSPGs per layer, with their contacts.
    pub directory: Arc<Directory>,
    /// Contacts of the directory's CSPs/CSPGs (how to reach them).
    pub infrastructure: Arc<Vec<Contact>>,
    /// Verifies everyone's signatures.
    pub verifier: Arc<dyn SigVerifier>,
}
