//! The secure overlay node ([`SecureNode`]) on the runtime: the [`Core`] implementation, the
//! membership a real peer builds its overlay context from, and the link to the SOS.
//!
//! **Membership.** A peer needs the layer arcs (from `node.json`), the directory of CSPs
//! and CSPGs per layer with their addresses, and the public keys of the peers whose
//! signatures it checks. All of it comes from E&A certificates: a [`Membership`] is built
//! from certificate chains (each checked against the E&A CA and the CRL, see
//! [`KeyBook::insert_verified`]), so the role and layer of a CSP or CSPG are the ones its
//! certificate binds, and a key is the one E&A bound to the Node-ID. Addresses are claims;
//! dialling a wrong one fails the TLS Node-ID check. The membership travels as a
//! [`DirectoryFile`] (JSON: certificate chains and addresses).
//!
//! **SOS.** [`run_events`] consumes the node's events off the loop task: on
//! [`SecureEvent::RankRoutes`] it asks the SOS over HTTP ([`sos::SosClient`]) in a separate
//! task and feeds the answer back with [`SecureNode::handle_ranking`] (the node falls back
//! to the shortest route after its own SOS timeout); [`SecureEvent::Report`] evidence is
//! signed with the certificate key ([`sos::ReportSigner`]) and posted. Both are bounded:
//! at most a few HTTP requests per peer in flight, the rest dropped and counted.

use crate::keys::{CertSigner, KeyBook, KeyError};
use crate::runtime::{Core, Handle, NetError, Peer};
use crate::tls::{Identity, Trust};
use overlay::secure::{
    CallFailure, Directory, LayerArcs, OverlayContext, Role, Routing, SecureConfig, SecureEvent,
    SecureNode,
};
use overlay::{ChordConfig, ChordNode, Contact, Message, NodeId, Time, Transmit};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use service::time::unix_ms;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

pub use overlay::driver::SecureCore;

/// What the [`Instrumented`] peers of one process saw: message kinds received per peer
/// (bounded: peers × kinds), call-traffic totals, and, while tracing is on, the order of
/// call-traffic receipts and the route sets callees asked the SOS to rank (both capped).
#[derive(Debug, Default)]
pub struct KindLog {
    kinds: std::sync::Mutex<std::collections::BTreeMap<(NodeId, &'static str), u64>>,
    trace_on: std::sync::atomic::AtomicBool,
    trace: std::sync::Mutex<std::collections::VecDeque<(NodeId, &'static str)>>,
    rankings: std::sync::Mutex<Vec<(NodeId, Vec<Vec<NodeId>>)>>,
    /// Call-traffic messages received (CSP/CSPG requests, PingRequests, receipts, fetches,
    /// deliveries, Ringing, plain INVITEs).
    pub call_messages: AtomicU64,
    /// Their encoded size in bytes (frame header included).
    pub call_bytes: AtomicU64,
}

const TRACE_CAP: usize = 4096;

impl KindLog {
    fn add(&self, peer: NodeId, msg: &Message) {
        let kind = msg.name();
        if let Ok(mut g) = self.kinds.lock() {
            *g.entry((peer, kind)).or_default() += 1;
        }
        if msg.is_call_traffic() {
            self.call_messages.fetch_add(1, Ordering::Relaxed);
            let len = overlay::wire::HEADER_LEN + overlay::wire::body_len(msg);
            self.call_bytes.fetch_add(len as u64, Ordering::Relaxed);
            if self.trace_on.load(Ordering::Relaxed)
                && let Ok(mut t) = self.trace.lock()
                && t.len() < TRACE_CAP
            {
                t.push_back((peer, kind));
            }
        }
    }

    fn ranking(&self, peer: NodeId, routes: &[Vec<NodeId>]) {
        if self.trace_on.load(Ordering::Relaxed)
            && let Ok(mut r) = self.rankings.lock()
            && r.len() < 64
        {
            r.push((peer, routes.to_vec()));
        }
    }

    /// Start or stop tracing (clears the trace and the rankings).
    pub fn set_tracing(&self, on: bool) {
        if let Ok(mut t) = self.trace.lock() {
            t.clear();
        }
        if let Ok(mut r) = self.rankings.lock() {
            r.clear();
        }
        self.trace_on.store(on, Ordering::Relaxed);
    }

    /// Call-traffic receipts in order, while tracing.
    pub fn trace(&self) -> Vec<(NodeId, &'static str)> {
        self.trace
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Route sets callees asked the SOS to rank, while tracing.
    pub fn rankings(&self) -> Vec<(NodeId, Vec<Vec<NodeId>>)> {
        self.rankings.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Messages received by every peer together, per kind.
    pub fn totals_by_kind(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut totals = std::collections::BTreeMap::new();
        if let Ok(g) = self.kinds.lock() {
            for ((_, kind), n) in g.iter() {
                *totals.entry(*kind).or_default() += *n;
            }
        }
        totals
    }

    /// How many `kind` messages `peer` received.
    pub fn count(&self, peer: NodeId, kind: &str) -> u64 {
        self.kinds
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|((p, k), _)| *p == peer && *k == kind)
                    .map(|(_, n)| *n)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Every peer that received a `kind` message.
    pub fn receivers(&self, kind: &str) -> Vec<NodeId> {
        self.kinds
            .lock()
            .map(|g| {
                g.keys()
                    .filter(|(_, k)| *k == kind)
                    .map(|(p, _)| *p)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forget the per-peer kinds.
    pub fn clear(&self) {
        if let Ok(mut g) = self.kinds.lock() {
            g.clear();
        }
    }
}

/// A secure node with instruments for demonstrations and tests: it logs the kinds of
/// messages it receives (to show who saw an INVITE), and it can play the paper's malicious
/// peer, which silently drops the PingRequests and plain-Chord INVITEs it should forward.
pub struct Instrumented {
    /// The node.
    pub node: SecureNode,
    /// Drop what it forwards (malicious).
    pub drop_forwarded: bool,
    /// Where received kinds are logged.
    pub log: Arc<KindLog>,
}

impl Core for Instrumented {
    type Event = SecureEvent;

    fn handle_message(&mut self, now: Time, from: &Peer, msg: Message) {
        self.log.add(self.node.chord().id(), &msg);
        Core::handle_message(&mut self.node, now, from, msg);
    }

    fn handle_timeout(&mut self, now: Time) {
        self.node.handle_timeout(now);
    }

    fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message) {
        self.node.handle_not_sent(now, to, msg);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        let me = self.node.chord().id();
        loop {
            let t = self.node.poll_transmit()?;
            let forwarded = match &t.msg {
                Message::PingRequest(p) => p.hops.last().is_some_and(|h| h.hop == me),
                Message::PlainInvite(inv) => inv.path.len() > 1 && inv.path.last() == Some(&me),
                _ => false,
            };
            if !(self.drop_forwarded && forwarded) {
                return Some(t);
            }
        }
    }

    fn poll_event(&mut self) -> Option<SecureEvent> {
        let ev = self.node.poll_event()?;
        if let SecureEvent::RankRoutes { routes, .. } = &ev {
            self.log.ranking(self.node.chord().id(), routes);
        }
        Some(ev)
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.node.poll_timeout()
    }

    fn leave(&mut self, now: Time) {
        self.node.chord_mut().leave(now);
    }

    fn handle_link_down(&mut self, now: Time, peer: NodeId, unreachable: bool) {
        Core::handle_link_down(&mut self.node, now, peer, unreachable);
    }

    fn keeps_link(&self, peer: NodeId) -> bool {
        Core::keeps_link(&self.node, peer)
    }

    fn standing_links(&self) -> Vec<Contact> {
        Core::standing_links(&self.node)
    }

    fn request_token(event: &SecureEvent) -> Option<u64> {
        <SecureNode as Core>::request_token(event)
    }

    fn failed_peer(event: &SecureEvent) -> Option<NodeId> {
        <SecureNode as Core>::failed_peer(event)
    }
}

impl SecureCore for Instrumented {
    fn node(&mut self) -> &mut SecureNode {
        &mut self.node
    }

    fn node_ref(&self) -> &SecureNode {
        &self.node
    }

    fn split(event: SecureEvent) -> Result<SecureEvent, SecureEvent> {
        Ok(event)
    }

    fn wrap(event: SecureEvent) -> SecureEvent {
        event
    }
}

/// One member as published: its certificate chain (PEM, end entity first) and where it
/// listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    /// Overlay listen address (needed for CSPs and CSPGs).
    pub addr: Option<SocketAddr>,
    /// Certificate chain, PEM.
    pub chain: String,
}

/// The published membership: what E&A (or the operator) hands to every peer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    /// The members.
    pub members: Vec<MemberEntry>,
}

/// Why a membership could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A certificate chain is not PEM.
    #[error("member {index}: bad PEM: {reason}")]
    Pem {
        /// Position in the list.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The certificate failed the E&A check (listed in [`Membership::refused`]).
    #[error(transparent)]
    Refused(KeyError),
    /// The certificate's layer is not the layer whose arc holds its Node-ID.
    #[error("node {node}: certificate says layer {cert} but its ID lies in layer {arc}")]
    LayerMismatch {
        /// The node.
        node: NodeId,
        /// Layer in the certificate.
        cert: u8,
        /// Layer of the arc.
        arc: u8,
    },
}

/// What a peer knows about the overlay's members: the CSP/CSPG directory with addresses and
/// the verified keys of everyone listed.
#[derive(Clone, Debug)]
pub struct Membership {
    /// Layer arcs.
    pub arcs: LayerArcs,
    /// CSPs and CSPGs per layer.
    pub directory: Directory,
    /// Contacts of the CSPs and CSPGs.
    pub infrastructure: Vec<Contact>,
    /// Verified public keys.
    pub keys: Arc<KeyBook>,
    /// Members refused (bad chain, revoked, …), with the reason; logged, not fatal.
    pub refused: Vec<(usize, String)>,
}

impl Membership {
    /// An empty membership over `arcs` (add members with [`add`](Self::add)).
    pub fn new(arcs: LayerArcs) -> Self {
        Membership {
            arcs,
            directory: Directory::default(),
            infrastructure: Vec::new(),
            keys: KeyBook::new(),
            refused: Vec::new(),
        }
    }

    /// Check and add one member (chain end entity first).
    pub fn add(
        &mut self,
        trust: &Trust,
        chain: &[CertificateDer<'_>],
        addr: Option<SocketAddr>,
    ) -> Result<NodeId, MembershipError> {
        let id = match self.keys.insert_verified(trust, chain) {
            Ok(id) => id,
            Err(e) => {
                let idx = self.refused.len();
                warn!("member refused: {e}");
                self.refused.push((idx, e.to_string()));
                return Err(MembershipError::Refused(e));
            }
        };
        let arc_layer = self.arcs.layer_of(id.node_id);
        if arc_layer != id.layer {
            return Err(MembershipError::LayerMismatch {
                node: id.node_id,
                cert: id.layer.get(),
                arc: arc_layer.get(),
            });
        }
        let l = arc_layer.index();
        match id.role {
            enroll::Role::Peer => {}
            enroll::Role::Csp => {
                if !self.directory.csps[l].contains(&id.node_id) {
                    self.directory.csps[l].push(id.node_id);
                    self.directory.csps[l].sort();
                }
            }
            enroll::Role::Cspg => {
                if !self.directory.cspgs[l].contains(&id.node_id) {
                    self.directory.cspgs[l].push(id.node_id);
                }
            }
        }
        if id.role != enroll::Role::Peer {
            self.infrastructure.retain(|c| c.id != id.node_id);
            self.infrastructure.push(Contact {
                id: id.node_id,
                addr,
            });
        }
        Ok(id.node_id)
    }

    /// Where the CSP or CSPG `id` listens, learnt after it was checked and added (a
    /// program that starts its members after enrolling them); no effect for others.
    pub fn set_address(&mut self, id: NodeId, addr: SocketAddr) {
        if let Some(c) = self.infrastructure.iter_mut().find(|c| c.id == id) {
            c.addr = Some(addr);
        }
    }

    /// Build from a published directory file; members that fail the check are skipped and
    /// listed in [`refused`](Self::refused).
    pub fn from_file(
        trust: &Trust,
        arcs: LayerArcs,
        file: &DirectoryFile,
    ) -> Result<Self, MembershipError> {
        let mut m = Membership::new(arcs);
        for (index, e) in file.members.iter().enumerate() {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(e.chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|err| MembershipError::Pem {
                        index,
                        reason: err.to_string(),
                    })?;
            match m.add(trust, &chain, e.addr) {
                Ok(_) | Err(MembershipError::Refused(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(m)
    }

    /// The overlay context for the peers of this membership.
    pub fn context(&self, cfg: Arc<SecureConfig>) -> OverlayContext {
        OverlayContext {
            cfg,
            arcs: self.arcs,
            directory: Arc::new(self.directory.clone()),
            infrastructure: Arc::new(self.infrastructure.clone()),
            verifier: self.keys.clone(),
        }
    }
}

/// Build this peer's secure node: Chord for its layer, the role its certificate binds,
/// signing with its certificate key (`CertSigner::from_identity`).
pub fn secure_node(
    signer: CertSigner,
    role: Role,
    me: Contact,
    chord: Arc<ChordConfig>,
    ctx: OverlayContext,
    routing: Routing,
    seed: [u8; 32],
) -> SecureNode {
    let chord = ChordNode::new(chord, me, seed);
    SecureNode::new(chord, ctx, role, routing, Box::new(signer), unix_ms(), seed)
}

/// Counters of the SOS link.
#[derive(Debug, Default)]
pub struct SosCounters {
    /// Rankings answered by the SOS.
    pub rank_ok: AtomicU64,
    /// Rankings that failed (the node took the shortest route).
    pub rank_failed: AtomicU64,
    /// Reports accepted by the SOS.
    pub reports_ok: AtomicU64,
    /// Reports refused or not delivered.
    pub reports_failed: AtomicU64,
    /// Reports dropped because 16 384 already waited for a free slot (an SOS unreachable
    /// for long).
    pub reports_dropped: AtomicU64,
    /// Reports waiting now for a free slot (a gauge: an SOS slow to answer shows here
    /// first).
    pub reports_waiting: AtomicU64,
    /// Report deliveries tried again after a transient failure (SOS down, 5xx, 429).
    pub report_retries: AtomicU64,
    /// Ranking requests tried again after a transient failure.
    pub rank_retries: AtomicU64,
}

/// Report batches a peer has in flight to the SOS at once.
const REPORT_SLOTS: usize = 32;
/// Reports that may wait while every slot is busy (an SOS slow to make reports durable):
/// the busy slots send them as they finish. A peer whose SOS stays unreachable drops what
/// comes beyond this (counted in [`SosCounters::reports_dropped`]).
const MAX_WAITING_REPORTS: usize = 16 * 1024;

/// Report deliveries: tries, first back-off (doubled each time, with jitter). About 6 s in
/// all: an SOS restart within that loses no report.
const REPORT_TRIES: u32 = 7;
const REPORT_BACKOFF: Duration = Duration::from_millis(100);
/// Rankings are only useful within the node's SOS timeout: one quick retry.
const RANK_TRIES: u32 = 2;
const RANK_BACKOFF: Duration = Duration::from_millis(50);

/// Whether a failed SOS request may succeed if sent again (transport error, timeout,
/// server error, rate limit) rather than being refused for what it says.
fn sos_transient(e: &sos::ClientError) -> bool {
    match e {
        sos::ClientError::Server { status, .. } => *status >= 500 || *status == 429,
        sos::ClientError::Build(_) => false,
        _ => true,
    }
}

/// The back-off before try `n` (1-based) with up to 50 % jitter from `salt`.
fn sos_backoff(first: Duration, n: u32, salt: u8) -> Duration {
    let base = first.saturating_mul(1u32 << n.saturating_sub(1).min(10));
    base + base.mul_f64(f64::from(salt) / 510.0)
}

/// A peer's connection to the SOS: the HTTP client, its certificate key for reports, and a
/// bound on requests in flight.
#[derive(Clone)]
pub struct SosLink {
    client: sos::SosClient,
    signer: Arc<sos::ReportSigner>,
    rank_slots: Arc<Semaphore>,
    report_slots: Arc<Semaphore>,
    /// Reports waiting for a slot: (subject, outcome), oldest first; the reporter is the
    /// signer's peer.
    waiting: Arc<std::sync::Mutex<std::collections::VecDeque<Report>>>,
    /// Counters (shareable between peers).
    pub counters: Arc<SosCounters>,
}

impl std::fmt::Debug for SosLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SosLink").finish_non_exhaustive()
    }
}

impl SosLink {
    /// A link for `identity` to the SOS behind `client` (clone one client to share its
    /// connection pool among peers in one process).
    pub fn new(
        client: sos::SosClient,
        identity: &Identity,
        counters: Arc<SosCounters>,
    ) -> Result<Self, KeyError> {
        let alg = CertSigner::from_identity(identity)?.alg();
        let signer = sos::ReportSigner::from_pkcs8(
            sos::PeerId(identity.node_id.0),
            alg.sos(),
            identity.key_der(),
        )
        .map_err(|_| KeyError::UnsupportedKey)?;
        Ok(SosLink {
            client,
            signer: Arc::new(signer),
            rank_slots: Arc::new(Semaphore::new(16)),
            report_slots: Arc::new(Semaphore::new(REPORT_SLOTS)),
            waiting: Arc::default(),
            counters,
        })
    }

    fn rank<C: SecureCore>(&self, h: &Handle<C>, query: u64, routes: Vec<Vec<NodeId>>) {
        let Ok(permit) = self.rank_slots.clone().try_acquire_owned() else {
            // The node falls back to the shortest route after its SOS timeout.
            self.counters.rank_failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (client, h, counters) = (self.client.clone(), h.clone(), self.counters.clone());
        tokio::spawn(async move {
            let ids: Vec<Vec<sos::PeerId>> = routes
                .iter()
                .map(|r| r.iter().map(|n| sos::PeerId(n.0)).collect())
                .collect();
            let mut answer = client.rank(ids.clone()).await;
            for n in 1..RANK_TRIES {
                match &answer {
                    Err(e) if sos_transient(e) => {
                        counters.rank_retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(sos_backoff(RANK_BACKOFF, n, 0)).await;
                        answer = client.rank(ids.clone()).await;
                    }
                    _ => break,
                }
            }
            let best = match answer {
                Ok(r) => {
                    counters.rank_ok.fetch_add(1, Ordering::Relaxed);
                    r.ranked
                        .first()
                        .and_then(|best| ids.iter().position(|r| *r == best.route))
                }
                Err(e) => {
                    counters.rank_failed.fetch_add(1, Ordering::Relaxed);
                    debug!("SOS ranking failed: {e}");
                    None
                }
            };
            drop(permit);
            let _ = h
                .call(move |n, now| n.node().handle_ranking(now, query, best))
                .await;
        });
    }

    /// Sign and deliver a report as `me` about `subject` in the background (see
    /// [`send_reports`](Self::send_reports)).
    pub fn send_report(&self, me: NodeId, subject: NodeId, outcome: overlay::secure::Outcome) {
        self.send_reports(me, vec![(subject, outcome)]);
    }

    /// Sign and deliver reports as `me` (subject, outcome) in the background, in one
    /// request per [`sos::MAX_BATCH`] (a callee reports every hop of every route at once:
    /// one request instead of a dozen), at most [`REPORT_SLOTS`] requests at once, retrying
    /// what the SOS did not store while it is unreachable or busy; reports wait for a slot
    /// (up to [`MAX_WAITING_REPORTS`]). The outcomes land in the counters. This is what
    /// [`run_events`] does with the `SecureEvent::Report`s a peer emits together.
    pub fn send_reports(&self, me: NodeId, reports: Vec<(NodeId, overlay::secure::Outcome)>) {
        let added = {
            let mut waiting = service::sync::lock(&self.waiting);
            let mut added = 0usize;
            for (subject, outcome) in reports.into_iter().filter(|(s, _)| *s != me) {
                if waiting.len() >= MAX_WAITING_REPORTS {
                    self.counters
                        .reports_dropped
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    waiting.push_back((subject, outcome));
                    added += 1;
                }
            }
            self.counters
                .reports_waiting
                .store(waiting.len() as u64, Ordering::Relaxed);
            added
        };
        // A sender per batch added, while slots are free; busy senders take the rest.
        for _ in 0..added.div_ceil(sos::MAX_BATCH) {
            let Ok(permit) = self.report_slots.clone().try_acquire_owned() else {
                break;
            };
            tokio::spawn(self.clone().send_waiting(permit));
        }
    }

    /// Send waiting reports, a batch at a time, until none is left; then give the slot
    /// back (and take it again if a report came in meanwhile and found no slot free).
    async fn send_waiting(self, mut permit: tokio::sync::OwnedSemaphorePermit) {
        loop {
            let batch: Vec<Report> = {
                let mut waiting = service::sync::lock(&self.waiting);
                let n = waiting.len().min(sos::MAX_BATCH);
                let batch = waiting.drain(..n).collect();
                self.counters
                    .reports_waiting
                    .store(waiting.len() as u64, Ordering::Relaxed);
                batch
            };
            if batch.is_empty() {
                drop(permit);
                if service::sync::lock(&self.waiting).is_empty() {
                    return;
                }
                match self.report_slots.clone().try_acquire_owned() {
                    Ok(p) => permit = p,
                    // Another sender holds a slot and takes them.
                    Err(_) => return,
                }
                continue;
            }
            let timestamp_ms = unix_ms();
            let mut bodies = Vec::with_capacity(batch.len());
            for (subject, outcome) in batch {
                match self
                    .signer
                    .body(sos::PeerId(subject.0), outcome, Vec::new(), timestamp_ms)
                {
                    Ok(b) => bodies.push(b),
                    Err(e) => {
                        warn!("an SOS report not made: {e}");
                        self.counters.reports_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let (ok, failed) =
                deliver_reports(&self.client, &self.signer, &self.counters, bodies).await;
            self.counters.reports_ok.fetch_add(ok, Ordering::Relaxed);
            self.counters
                .reports_failed
                .fetch_add(failed, Ordering::Relaxed);
        }
    }
}

/// A report waiting to be signed and sent: (subject, outcome).
type Report = (NodeId, overlay::secure::Outcome);

/// Sign `pending` as one batch and post it until each report is stored or refused for
/// good, at most [`REPORT_TRIES`] times with back-off: (stored, failed). The reports the SOS
/// did not store for a transient reason are signed again as a smaller batch with the same
/// nonces; if an earlier try was stored but its answer lost, the SOS refuses the copy as a
/// replayed nonce, which means it has the report.
async fn deliver_reports(
    client: &sos::SosClient,
    signer: &sos::ReportSigner,
    counters: &SosCounters,
    mut pending: Vec<sos::ReportBody>,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0u64, 0u64);
    let jitter = pending.first().map_or(0, |r| r.nonce[0]);
    for n in 1..=REPORT_TRIES {
        if pending.is_empty() {
            break;
        }
        let last = n == REPORT_TRIES;
        let sent = pending.len() as u64;
        let batch = match signer.sign_batch(std::mem::take(&mut pending)) {
            Ok(b) => b,
            Err(e) => {
                warn!("{sent} SOS reports not signed: {e}");
                return (ok, failed + sent);
            }
        };
        match client.post_reports(&batch).await {
            Ok(items) if items.len() == batch.reports.len() => {
                let mut again = Vec::new();
                for (r, item) in batch.reports.into_iter().zip(items) {
                    let replayed = item
                        .error
                        .as_ref()
                        .is_some_and(|e| e.error == "replayed_nonce");
                    if item.status == 200 || (n > 1 && item.status == 409 && replayed) {
                        ok += 1;
                    } else if !last && matches!(item.status, 429 | 503) {
                        again.push(r);
                    } else {
                        failed += 1;
                        let why = item.error.map(|e| e.message).unwrap_or_default();
                        warn!(status = item.status, "SOS refused a report: {why}");
                    }
                }
                pending = again;
            }
            Ok(items) => {
                warn!(
                    sent,
                    answered = items.len(),
                    "SOS answered a report batch with the wrong number of items"
                );
                return (ok, failed + sent);
            }
            Err(e) if !last && sos_transient(&e) => {
                debug!("SOS reports failed (try {n}), retrying: {e}");
                pending = batch.reports;
            }
            Err(e) => {
                warn!("{sent} SOS reports not delivered after {n} tries: {e}");
                return (ok, failed + sent);
            }
        }
        if !pending.is_empty() {
            counters.report_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(sos_backoff(REPORT_BACKOFF, n, jitter)).await;
        }
    }
    (ok, failed + pending.len() as u64)
}

/// How long a peer's reports wait for more to join their batch before they go to the SOS. A
/// CSP reports every hop of every copy of each call it carries, a few times a second each
/// when busy: one signed request for the calls of a tenth of a second instead of one per
/// call, for evidence that counts in rankings a tenth of a second later.
const REPORT_LINGER: Duration = Duration::from_millis(100);

/// Consume a secure peer's events until the runtime stops: SOS rankings and reports through
/// `sos` (without one, rankings are answered "unranked" at once: shortest route), everything
/// else to `app` (dropped when `app` is full or closed). Reports go in batches: what came
/// within a tenth of a second of a batch's first report, or [`sos::MAX_BATCH`] of them; what
/// is gathered when the runtime stops is sent then.
pub async fn run_events<C: SecureCore>(
    h: Handle<C>,
    mut events: mpsc::Receiver<Box<C::Event>>,
    sos: Option<SosLink>,
    app: Option<mpsc::Sender<Box<C::Event>>>,
) {
    let me = h.contact().id;
    let mut evidence_log = crate::budget::RateLog::new(Duration::from_secs(5));
    let mut reports = Vec::new();
    // When the batch gathered in `reports` goes out.
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let first = match due {
            Some(at) => tokio::select! {
                ev = events.recv() => ev,
                () = tokio::time::sleep_until(at) => {
                    flush_reports(sos.as_ref(), me, &mut reports);
                    due = None;
                    continue;
                }
            },
            None => events.recv().await,
        };
        let Some(first) = first else { break };
        // The events already queued with it.
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            handle_event::<C>(
                *ev,
                &h,
                me,
                sos.as_ref(),
                app.as_ref(),
                &mut evidence_log,
                &mut reports,
            );
            if reports.len() < sos::MAX_BATCH {
                next = events.try_recv().ok();
            }
        }
        if reports.len() >= sos::MAX_BATCH {
            flush_reports(sos.as_ref(), me, &mut reports);
            due = None;
        } else if !reports.is_empty() && due.is_none() {
            due = Some(tokio::time::Instant::now() + REPORT_LINGER);
        }
    }
    flush_reports(sos.as_ref(), me, &mut reports);
}

/// Hand the gathered reports to the SOS link (signed and sent in the background).
fn flush_reports(sos: Option<&SosLink>, me: NodeId, reports: &mut Vec<Report>) {
    if let Some(s) = sos
        && !reports.is_empty()
    {
        s.send_reports(me, std::mem::take(reports));
    }
}

/// One event of a secure peer: a ranking asked of the SOS, a report added to `reports`
/// (the SOS batch), anything else handed to the application.
fn handle_event<C: SecureCore>(
    ev: C::Event,
    h: &Handle<C>,
    me: NodeId,
    sos: Option<&SosLink>,
    app: Option<&mpsc::Sender<Box<C::Event>>>,
    evidence_log: &mut crate::budget::RateLog,
    reports: &mut Vec<(NodeId, overlay::secure::Outcome)>,
) {
    let ev = match C::split(ev) {
        Ok(ev) => ev,
        Err(own) => {
            if let Some(a) = app {
                let _ = a.try_send(Box::new(own));
            }
            return;
        }
    };
    match ev {
        SecureEvent::RankRoutes { query, routes } => match sos {
            Some(s) => s.rank(h, query, routes),
            None => {
                let h = h.clone();
                tokio::spawn(async move {
                    let _ = h
                        .call(move |n, now| n.node().handle_ranking(now, query, None))
                        .await;
                });
            }
        },
        SecureEvent::Report { subject, outcome } => {
            use overlay::secure::Outcome as O;
            if outcome != O::Delivered
                && let Some(held) = evidence_log.allow(tokio::time::Instant::now())
            {
                let why = match outcome {
                    O::Replayed => {
                        "a PingRequest copy seen before, or timestamped more than the \
                         replay window away from this peer's clock (a replay, or a CSP \
                         clock skewed beyond the window)"
                    }
                    O::Modified => "a PingRequest whose signatures do not verify",
                    O::Misrouted => "a PingRequest that looped or ran too long",
                    O::Dropped | O::Delivered => "a request it did not deliver",
                };
                warn!(peer = %me, %subject, ?outcome, "negative evidence: {why} ({held} more since the last warning)");
            }
            if sos.is_some() {
                reports.push((subject, outcome));
            }
        }
        other => {
            if let Some(a) = app {
                let _ = a.try_send(Box::new(C::wrap(other)));
            }
        }
    }
}

/// A call through the runtime: what came back.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    /// 180 Ringing received.
    Ringing {
        /// The call's handle at the caller (with the caller's Node-ID, its key at both ends).
        call: u64,
        /// INVITE sent → Ringing received, as the node measured it (RFC 6076 SRD).
        srd: Duration,
        /// The route the request took (hops then callee).
        route: Vec<NodeId>,
        /// Served from the contact cache.
        cached: bool,
    },
    /// The call failed.
    Failed(CallFailure),
}

impl<C: SecureCore> Handle<C> {
    /// Place a call to `callee` carrying `invite` (the SIP INVITE text) and wait for Ringing
    /// or failure.
    pub async fn place_call(
        &self,
        callee: NodeId,
        invite: Vec<u8>,
    ) -> Result<CallOutcome, NetError> {
        match C::split(
            self.request(move |n, now| n.node().call(now, callee, invite))
                .await?,
        ) {
            Ok(SecureEvent::CallRinging {
                call,
                setup,
                route,
                cached,
                ..
            }) => Ok(CallOutcome::Ringing {
                call,
                srd: setup,
                route,
                cached,
            }),
            Ok(SecureEvent::CallFailed { reason, .. }) => Ok(CallOutcome::Failed(reason)),
            _ => Ok(CallOutcome::Failed(CallFailure::TimedOut)),
        }
    }

    /// Forget call `call` placed by `caller` at this end (the user hung up): in-dialog
    /// messages for it are refused from now on. An application that carries no BYE (a call
    /// that only rings) ends its calls this way at both ends; otherwise each end remembers
    /// them until its dialog cap pushes them out.
    pub async fn end_call(&self, caller: NodeId, call: u64) -> Result<(), NetError> {
        self.call(move |n, _| n.node().end_dialog(caller, call))
            .await
    }
}
