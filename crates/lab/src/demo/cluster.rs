//! The running peers of one overlay: every member started on 127.0.0.1 as every peer
//! starts ([`node::Node::start`], with its enrollment in memory and no control endpoint or
//! database), its rings created and joined by the demo, and the wait until they converge.
//! The demo, its churn run and its soak run all drive a [`Cluster`].

use super::members::Enrolled;
use crate::LabError;
use crate::progress::bar;
use net::{Handle, KindLog, Limits, Membership, SecureCore, SosCounters, Trust};
use overlay::secure::{LayerArcs, Routing, SecureConfig};
use overlay::{NodeId, RingSpan};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The running peers of one overlay.
pub(crate) struct Cluster {
    /// The running peers, in member order.
    nodes: Vec<node::Node>,
    /// One runtime handle per member, in member order.
    pub(crate) handles: Vec<Handle<DemoPeer>>,
    /// The members' Node-IDs, in member order.
    pub(crate) ids: Vec<NodeId>,
    /// Rings: member indices, sorted by ID.
    pub(crate) rings: Vec<Vec<usize>>,
    /// Message kinds every peer received (and, while tracing, who received them).
    pub(crate) log: Arc<KindLog>,
    /// Members that serve a SIP front-end for phones.
    pub(crate) frontends: Vec<usize>,
    /// Seconds the members took to start listening, and then to join their rings.
    pub(crate) started_s: (f64, f64),
}

/// A demo peer's core: every peer's ([`node::NodeCore`]), whose message-kind log the demo
/// shares among its peers and whose malicious forwarder it turns on for the paper's 1617.
pub(crate) type DemoPeer = node::NodeCore;

impl Cluster {
    pub(crate) fn handle(&self, id: u128) -> Option<&Handle<DemoPeer>> {
        self.ids
            .iter()
            .position(|i| i.0 == id)
            .map(|p| &self.handles[p])
    }

    /// Peers whose successor and predecessor are the true ones.
    async fn converged(&self) -> usize {
        let mut ring_ok = 0;
        for ring in &self.rings {
            let n = ring.len();
            let sorted: Vec<NodeId> = ring.iter().map(|i| self.ids[*i]).collect();
            for (pos, idx) in ring.iter().enumerate() {
                let want_succ = sorted[(pos + 1) % n];
                let want_pred = sorted[(pos + n - 1) % n];
                let Ok((succ, pred)) = self.handles[*idx]
                    .call(|c, _| {
                        let ch = c.node().chord();
                        (ch.successor().map(|s| s.id), ch.predecessor().map(|p| p.id))
                    })
                    .await
                else {
                    continue;
                };
                if n == 1 || (succ == Some(want_succ) && pred == Some(want_pred)) {
                    ring_ok += 1;
                } else {
                    tracing::debug!(
                        "{}: succ {succ:?} want {want_succ}, pred {pred:?} want {want_pred}",
                        sorted[pos]
                    );
                }
            }
        }
        ring_ok
    }

    /// Wait until each of `peers` holds every one of its true fingers and its first
    /// `successors` true successors (in its finger table or its successor list) on its own
    /// ring, at most `timeout`; whether they all do.
    pub(crate) async fn await_true_fingers(
        &self,
        peers: &[NodeId],
        successors: usize,
        timeout: Duration,
    ) -> bool {
        // What each peer must hold does not change while we wait: worked out once.
        let mut wants: Vec<(&Handle<DemoPeer>, BTreeSet<NodeId>)> = Vec::new();
        for id in peers {
            let Some(h) = self.handle(id.0) else { continue };
            let Ok(span) = h.call(|n, _| n.node().chord().config().span()).await else {
                continue;
            };
            let ring = sorted_ids(&self.ring_of(*id));
            let mut want = true_fingers(&ring, span, *id);
            want.extend(true_successors(&ring, *id, successors));
            wants.push((h, want));
        }
        let t0 = Instant::now();
        loop {
            let mut all = true;
            for (h, want) in &wants {
                let held = h
                    .call(|n, _| {
                        // Fingers the successor list covers are not kept twice.
                        let c = n.node().chord();
                        c.fingers()
                            .chain(c.successors())
                            .map(|c| c.id)
                            .collect::<BTreeSet<_>>()
                    })
                    .await
                    .unwrap_or_default();
                all &= want.is_subset(&held);
            }
            if all || t0.elapsed() > timeout {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The members of `id`'s ring (all members when `id` is on none).
    fn ring_of(&self, id: NodeId) -> Vec<NodeId> {
        let Some(me) = self.ids.iter().position(|i| *i == id) else {
            return self.ids.clone();
        };
        self.rings
            .iter()
            .find(|r| r.contains(&me))
            .map(|r| r.iter().map(|i| self.ids[*i]).collect())
            .unwrap_or_else(|| self.ids.clone())
    }

    /// Peers that lost every successor (a timeout under load) join again through a member
    /// of their ring, as `p2psip peer` does after a failed join.
    async fn rejoin_lost(&self) {
        for (r, ring) in self.rings.iter().enumerate() {
            for (k, idx) in ring.iter().enumerate() {
                let Ok(lost) = self.handles[*idx]
                    .call(|n, _| !n.node().chord().is_active())
                    .await
                else {
                    continue;
                };
                if lost && ring.len() > 1 {
                    let via = self.handles[ring[(k + 1 + r) % ring.len()]].contact();
                    let _ = self.handles[*idx]
                        .call(move |n, now| n.node().chord_mut().join(now, via))
                        .await;
                }
            }
        }
    }

    /// The SIP front-ends' addresses: (member index, address).
    pub(crate) fn frontend_addrs(&self) -> Vec<(usize, SocketAddr)> {
        self.frontends
            .iter()
            .filter_map(|i| Some((*i, self.nodes[*i].info().sip.as_ref()?.0)))
            .collect()
    }

    /// Stop every peer, all at once, as every peer stops ([`node::Node::stop`]).
    pub(crate) async fn shutdown(self) {
        let mut set = JoinSet::new();
        for n in self.nodes {
            set.spawn(async move {
                if let Err(e) = n.stop().await {
                    tracing::warn!("stopping a peer: {}", service::output::error_chain(&e));
                }
            });
        }
        while set.join_next().await.is_some() {}
    }
}

/// How to start one overlay of the demo's members.
pub(crate) struct Launch<'a> {
    /// Who runs, with their certificates.
    pub(crate) members: &'a [Enrolled],
    /// The CA and CRLs every TLS link is checked against.
    pub(crate) trust: &'a Trust,
    /// The paper's layer arcs.
    pub(crate) arcs: LayerArcs,
    /// The members' membership, checked once ([`membership`]).
    pub(crate) membership: &'a Membership,
    /// The secure layer's settings (fan-out, first hops, call timeout).
    pub(crate) secure: Arc<SecureConfig>,
    /// Chord's timers and successor list.
    pub(crate) chord: node::ChordTiming,
    /// The paper's secure routing or plain Chord.
    pub(crate) routing: Routing,
    /// One flat ring (plain Chord) or one ring per layer.
    pub(crate) flat: bool,
    /// The peer that drops what it forwards (the paper's 1617).
    pub(crate) malicious: NodeId,
    /// Where the peers rank routes and report evidence, if anywhere.
    pub(crate) sos: Option<(sos::SosClient, Arc<SosCounters>)>,
    /// Ordinary peers that serve a SIP front-end (the first this many).
    pub(crate) frontends: usize,
    /// Whether those front-ends anchor their phones' media (else SDP passes untouched).
    pub(crate) media_relay: bool,
    /// The SIP domain of their front-ends.
    pub(crate) sip_domain: String,
    /// An ordinary peer's share of the links ([`super::host::peer_links`] by default).
    pub(crate) peer_links: usize,
    /// The links the ordinary peers may hold together.
    pub(crate) link_budget: Arc<net::LinkBudget>,
}

/// The runtime limits of a demo peer; an ordinary one holds its share `peer_links` of
/// `budget`, more while others hold less.
fn limits(role: enroll::Role, peer_links: usize, budget: &Arc<net::LinkBudget>) -> Limits {
    Limits {
        // As a deployed peer's: a front-end's or CSP's link carries hundreds of calls a
        // second, and a frame dropped here is a SIP message lost (the channel allocates
        // its slots as they fill, so an idle link costs nothing for them).
        send_queue: Limits::default().send_queue,
        inbound_queue: 256,
        event_queue: 256,
        command_queue: 64,
        // 512 peers share one process's descriptors, and every link holds one at each end:
        // the ordinary peers' links together stay under their shares of the limit (a peer
        // over its share closes its least recently used link first, so links opened for
        // joins and one-off lookups go before its fingers), while the few CSPs and CSPGs,
        // which every caller and callee talks to, may hold many more. Shares below what the
        // ring needs (the hard limit of an unprivileged run) close needed links to open
        // others, over and over. A link idle longer than the slowest quiet maintenance
        // cycle (2 s per finger, a dozen fingers) closes. A short idle timeout instead
        // closed finger links between two uses and kept the process busy with TLS
        // handshakes.
        max_links: match role {
            enroll::Role::Peer => peer_links.max(super::host::MAX_PEER_LINKS),
            enroll::Role::Csp | enroll::Role::Cspg => 512,
        },
        // A peer right after a wide gap between the IDs is a finger of many: it may hold
        // more than its share while quieter peers hold less. The CSPs' and CSPGs' links
        // come on top (the share leaves headroom for them).
        shared_links: (role == enroll::Role::Peer).then(|| budget.clone()),
        idle_timeout: Duration::from_secs(30),
        // Every peer connects from 127.0.0.1: the per-source share of set-up slots (a
        // slow-loris guard between hosts) would throttle the join burst here.
        max_setups_per_source: usize::MAX,
        ..Limits::default()
    }
}

/// The membership (key book, CSP/CSPG directory) of `members`, every chain checked
/// against the CA and CRL of `trust`, once: the overlays of a run share it.
pub(crate) fn membership(
    members: &[Enrolled],
    trust: &Trust,
    arcs: LayerArcs,
) -> Result<Membership, LabError> {
    let mut m = Membership::new(arcs);
    for e in members {
        m.add(trust, &e.identity.chain, None)
            .map_err(LabError::peer(
                e.id,
                "joining the membership (its chain against the CA and CRL)",
            ))?;
    }
    Ok(m)
}

/// Start every member of `l` as a TLS peer, publish the directory, and create and join
/// the rings (converging is [`converge`]'s job).
pub(crate) async fn launch(l: Launch<'_>, quiet: bool) -> Result<Cluster, LabError> {
    let m = l.membership;
    let overlay = enroll::api::OverlayParams::new(&l.arcs, enroll::IdScheme::default());
    let log = Arc::new(KindLog::default());
    let t0 = Instant::now();
    let mut nodes = Vec::with_capacity(l.members.len());
    let mut frontends = Vec::new();
    let pb = bar(l.members.len() as u64, "listening", quiet);
    for (index, e) in l.members.iter().enumerate() {
        let nd = net::NodeDir::in_memory(e.identity.clone(), l.trust.clone(), overlay.clone());
        let mut c = node::Config::loaded(nd);
        c.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        // The demo forms the rings itself (and measures them); callers ask the peers
        // through their handles.
        c.join = node::JoinMode::Manual;
        c.control = None;
        c.membership = Some(m.clone());
        c.chord = l.chord.clone();
        c.limits = limits(e.role, l.peer_links, &l.link_budget);
        c.secure = (*l.secure).clone();
        c.routing = l.routing;
        // The paper's prototype measures Ringing and hangs up at the overlay level: its
        // callees leave the call to the demo rather than answer it with SIP.
        c.answer_calls = false;
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(&e.id.0.to_le_bytes());
        seed[16] = u8::from(l.flat);
        c.seed = Some(seed);
        c.kind_log = Some(log.clone());
        c.drop_forwarded = e.id == l.malicious;
        c.sos = match &l.sos {
            Some((client, counters)) => node::SosChoice::Client(client.clone(), counters.clone()),
            None => node::SosChoice::Off,
        };
        if frontends.len() < l.frontends && e.role == enroll::Role::Peer && e.id != l.malicious {
            let mut sip =
                node::SipConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), l.sip_domain.clone());
            // The front-ends share one host: each relays media on its own slice of the
            // port range, so no two try the same ports.
            if !l.media_relay {
                sip.media = None;
            }
            if let Some(m) = sip.media.as_mut() {
                let b = &mut m.bounds;
                (b.first_port, b.last_port) =
                    port_slice((b.first_port, b.last_port), frontends.len(), l.frontends);
            }
            c.sip = Some(sip);
            frontends.push(index);
        }
        let n = node::Node::start(c)
            .await
            .map_err(LabError::peer(e.id, "starting as a peer"))?;
        nodes.push(n);
        pb.inc(1);
    }
    let handles: Vec<Handle<DemoPeer>> = nodes.iter().map(|n| n.handle().clone()).collect();
    pb.finish_and_clear();
    // Every address is known now: publish the directory with CSP/CSPG addresses.
    let addrs: Vec<SocketAddr> = handles.iter().map(|h| h.local_addr()).collect();
    let mut with_addrs = l.membership.clone();
    for (e, addr) in l.members.iter().zip(&addrs) {
        with_addrs.set_address(e.id, *addr);
    }
    let ctx = with_addrs.context(l.secure.clone());
    for (h, e) in handles.iter().zip(l.members) {
        let ctx = ctx.clone();
        h.call(move |n, _| n.node().set_context(ctx))
            .await
            .map_err(LabError::request(format!(
                "peer {}: taking the directory with CSP/CSPG addresses",
                e.id
            )))?;
    }
    // Rings: per layer (secure) or flat (plain Chord); the first member of each ring is its
    // CSPG (or the lowest ID), which creates it.
    let ids: Vec<NodeId> = l.members.iter().map(|e| e.id).collect();
    let mut rings: Vec<Vec<usize>> = if l.flat {
        vec![(0..ids.len()).collect()]
    } else {
        let mut r = vec![Vec::new(); 3];
        for (i, id) in ids.iter().enumerate() {
            r[l.arcs.layer_of(*id).index()].push(i);
        }
        r.retain(|x| !x.is_empty());
        r
    };
    for r in &mut rings {
        r.sort_by_key(|i| ids[*i]);
    }
    let listening = t0.elapsed().as_secs_f64();
    let mut cluster = Cluster {
        nodes,
        handles,
        ids,
        rings,
        log,
        frontends,
        started_s: (listening, 0.0),
    };
    join_rings(&cluster, &l, quiet).await?;
    cluster.started_s.1 = t0.elapsed().as_secs_f64() - listening;
    Ok(cluster)
}

/// Each ring's gateway creates it; the others join one after another through members that
/// are already in (a join is a lookup of the new peer's successor), the rings in parallel.
async fn join_rings(c: &Cluster, l: &Launch<'_>, quiet: bool) -> Result<(), LabError> {
    let pb = bar(c.ids.len() as u64, "joining", quiet);
    let mut set = JoinSet::new();
    for ring in &c.rings {
        let gateway = ring
            .iter()
            .copied()
            .find(|i| l.members[*i].role == enroll::Role::Cspg || (l.flat && c.ids[*i].0 == 1))
            .unwrap_or(ring[0]);
        let mut order: Vec<usize> = ring.iter().copied().filter(|i| *i != gateway).collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(c.ids[gateway].0 as u64);
        super::members::seeded_shuffle(&mut rng, &mut order);
        let handles: Vec<Handle<DemoPeer>> = c.handles.clone();
        let ids = c.ids.clone();
        let pb = pb.clone();
        set.spawn(async move {
            let joining =
                |idx: usize| LabError::request(format!("peer {}: joining its ring", ids[idx]));
            handles[gateway]
                .call(|n, now| n.node().chord_mut().create(now))
                .await
                .map_err(LabError::request(format!(
                    "peer {}: creating its ring",
                    ids[gateway]
                )))?;
            pb.inc(1);
            let mut inside = vec![gateway];
            for idx in order {
                let mut attempt = 0u64;
                loop {
                    let via = handles[inside[rng.random_range(0..inside.len())]].contact();
                    handles[idx]
                        .call(move |n, now| {
                            n.node().chord_mut().add_bootstrap(via);
                            n.node().chord_mut().join(now, via)
                        })
                        .await
                        .map_err(joining(idx))?;
                    let t0 = Instant::now();
                    let mut active = false;
                    while t0.elapsed() < Duration::from_secs(5) {
                        let (on, joined) = handles[idx]
                            .call(|n, _| {
                                let c = n.node().chord();
                                (c.is_active(), c.successor().is_some())
                            })
                            .await
                            .map_err(joining(idx))?;
                        if joined {
                            active = true;
                            break;
                        }
                        if !on {
                            break; // the join failed: try through another member
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    attempt += 1;
                    if active || attempt >= 5 {
                        break;
                    }
                }
                inside.push(idx);
                pb.inc(1);
            }
            Ok::<(), LabError>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    pb.finish_and_clear();
    Ok(())
}

/// Wait until every peer's successor and predecessor are the true ones, then one more
/// finger-refresh round (m fix-fingers periods, twice) so the fingers catch up. Returns the
/// time it took.
pub(crate) async fn converge(
    c: &Cluster,
    started: Instant,
    timeout: Duration,
    fingers_round: Duration,
    quiet: bool,
) -> Result<f64, LabError> {
    let n = c.ids.len();
    let pb = bar(n as u64, "converging", quiet);
    loop {
        c.rejoin_lost().await;
        let ring_ok = c.converged().await;
        pb.set_position(ring_ok as u64);
        tracing::debug!(
            correct = ring_ok,
            peers = n,
            secs = started.elapsed().as_secs_f64(),
            "converging"
        );
        if ring_ok == n {
            pb.finish_and_clear();
            tokio::time::sleep(fingers_round).await;
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > timeout {
            pb.finish_and_clear();
            return Err(LabError::NotConverged {
                timeout,
                correct: ring_ok,
                peers: n,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sorted_ids(ids: &[NodeId]) -> Vec<NodeId> {
    let mut ring = ids.to_vec();
    ring.sort_unstable();
    ring
}

/// `id`'s true fingers on `ring`, which spans `span`: the successor of each finger start.
fn true_fingers(ring: &[NodeId], span: RingSpan, id: NodeId) -> BTreeSet<NodeId> {
    (0..span.bits())
        .filter_map(|k| span.finger_start(id, k).owner_in(ring))
        .filter(|f| *f != id)
        .collect()
}

/// The first `n` peers after `id` on `ring` (sorted), around the ring.
fn true_successors(ring: &[NodeId], id: NodeId, n: usize) -> Vec<NodeId> {
    let after = ring.iter().filter(|x| x.0 > id.0);
    let before = ring.iter().filter(|x| x.0 < id.0);
    after.chain(before).copied().take(n).collect()
}

/// The peers a plain Chord lookup from `from` for `key` visits when every finger is the
/// true one (each hop the closest finger preceding the key), `from` first, the key's owner
/// last.
pub(crate) fn true_path(ids: &[NodeId], span: RingSpan, from: NodeId, key: NodeId) -> Vec<NodeId> {
    let ring = sorted_ids(ids);
    let dist = |a: NodeId, b: NodeId| span.distance(a, b);
    let owner = key.owner_in(&ring).unwrap_or(key);
    let mut path = vec![from];
    let mut at = from;
    while at != owner && path.len() <= ring.len() {
        let next = true_fingers(&ring, span, at)
            .into_iter()
            .filter(|f| dist(at, *f) <= dist(at, key))
            .max_by_key(|f| dist(at, *f))
            .unwrap_or(owner);
        at = if next == at { owner } else { next };
        path.push(at);
    }
    path
}

/// Chord's timers for the demo: quick while the rings form, backing off once quiet.
pub(crate) fn chord_timing() -> node::ChordTiming {
    node::ChordTiming {
        successors: 3,
        // The paper's scenario as the demo has always run it: CSPs keep the same lists.
        csp_successors: 3,
        successor_shortcut: true,
        stabilize: Duration::from_millis(250),
        fix_fingers: Duration::from_millis(60),
        // Fast while the rings form or change, then slower once a peer's neighbourhood is
        // quiet: at the base pace 512 peers' maintenance alone kept both cores busy and
        // every call queued behind it. A crashed neighbour shows itself at once through its
        // closed links, so a quiet peer can wait long between rounds.
        quiet_maintenance_max: Some(Duration::from_secs(16)),
        check_predecessor: Duration::from_millis(1000),
        ring_check: Duration::from_secs(5),
        quiet_ring_check_max: Some(Duration::from_secs(64)),
        rpc_timeout: Duration::from_millis(1500),
        lookup_timeout: Duration::from_secs(4),
    }
}

/// The runtime counters of every peer, added up.
pub(crate) fn sum_stats(handles: &[Handle<DemoPeer>]) -> net::Stats {
    let mut total = net::Stats::default();
    for h in handles {
        let s = h.stats();
        total.dials_ok += s.dials_ok;
        total.accepts_ok += s.accepts_ok;
        total.dropped_queue_full += s.dropped_queue_full;
        total.dropped_backoff += s.dropped_backoff;
        total.dropped_no_addr += s.dropped_no_addr;
        total.idle_closed += s.idle_closed;
        total.links_evicted += s.links_evicted;
        total.dropped_events += s.dropped_events;
        total.links_open += s.links_open;
    }
    total
}

/// Slice `k` of `n` of the port range `(first, last)`, whole pairs, in order.
fn port_slice((first, last): (u16, u16), k: usize, n: usize) -> (u16, u16) {
    let span = usize::from(last.saturating_sub(first)) + 1;
    let each = (span / n.max(1)) & !1;
    let start = usize::from(first) + each * k;
    let to_u16 = |x: usize| u16::try_from(x).unwrap_or(last);
    (to_u16(start), to_u16(start + each.max(2) - 1).min(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_ends_get_disjoint_even_port_slices() {
        assert_eq!(port_slice((20000, 29999), 0, 1), (20000, 29999));
        assert_eq!(port_slice((20000, 29999), 0, 2), (20000, 24999));
        assert_eq!(port_slice((20000, 29999), 1, 2), (25000, 29999));
        assert_eq!(port_slice((20000, 29999), 2, 3), (26664, 29995));
    }

    #[test]
    fn the_true_path_is_the_papers_on_its_peers() {
        let ids: Vec<NodeId> = [1618, 80, 1104, 1617, 600].map(NodeId).to_vec();
        let whole = RingSpan::whole(overlay::IdSpace::new(11).unwrap());
        assert_eq!(
            true_path(&ids, whole, NodeId(80), NodeId(1618)),
            [80, 1104, 1617, 1618].map(NodeId).to_vec()
        );
        // The caller's successor owns the key: one hop.
        assert_eq!(
            true_path(&ids, whole, NodeId(80), NodeId(500)),
            [80, 600].map(NodeId).to_vec()
        );
        assert_eq!(
            true_fingers(&sorted_ids(&ids), whole, NodeId(1104)),
            [1617, 80].map(NodeId).into_iter().collect()
        );
    }
}
