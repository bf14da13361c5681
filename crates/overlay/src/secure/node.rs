//! A peer of the secure overlay: Chord in its layer plus the call flow of the paper.

mod record_flow;

use super::cache::ContactCache;
use super::config::{FirstHops, OverlayContext, Routing};
use super::dialog::Dialogs;
use super::event::{CallFailure, Outcome, SecureEvent};
use super::layers::Layer;
use super::records::{RecordOp, RecordValidator};
use super::role::Role;
use super::sign::{Signer, ack_bytes, body_bytes, record_bytes, ringing_bytes};
use crate::wire::{CallRequest, HopRecord, Message, PingBody, PingRequest, PlainInvite, Ringing};
use crate::{ChordNode, Contact, NodeId, Time, Transmit};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

#[derive(Clone, Debug)]
struct OutCall {
    id: u64,
    callee: NodeId,
    invite: Vec<u8>,
    started: Time,
    deadline: Time,
    retried: bool,
    cached: Option<Contact>,
    /// The CSP the first attempt went through, passed over by the retry.
    first_csp: Option<NodeId>,
    /// In-dialog messages the callee sent before its Ringing came (it goes back along the
    /// request's path, they come straight): handed on after the Ringing, in order, at most
    /// [`MAX_EARLY_DIALOG`]; dropped with the call if it fails.
    early: Vec<Vec<u8>>,
}

/// In-dialog messages a caller keeps for a call whose Ringing has not come yet: a SIP
/// callee's 180 and 200 (and retransmissions of them) before the Ringing, with room to spare.
const MAX_EARLY_DIALOG: usize = 8;

#[derive(Clone, Debug)]
struct Held {
    handle: u64,
    nonce: u64,
    request: CallRequest,
    /// Copies sent so far (every round): their first hops, by copy index.
    first_hops: Vec<NodeId>,
    /// Acknowledged hand-overs: (copy, from, to); `to` signed that it holds the copy.
    receipts: Vec<(u8, NodeId, NodeId)>,
    deadline: Time,
    /// When to look whether every copy stalled (no hand-over for a while) without reaching
    /// the target, and send a new round around the peers they stalled at; `None` once the
    /// rounds are used up.
    rescue_at: Option<Time>,
    /// Rounds sent after the first.
    rescues: u8,
    /// Set once the target fetched: copies it had by then, and when to judge the rest
    /// (receipts and late copies still in flight get a grace period).
    fetched: Option<(Vec<u8>, Time)>,
}

/// A copy this peer passed on and whose next hop has not acknowledged it yet.
#[derive(Clone, Debug)]
struct Forward {
    ping: PingRequest,
    to: NodeId,
    /// Next hops tried for this copy, `to` last.
    tried: Vec<NodeId>,
    deadline: Time,
}

/// A call request this CSP or CSPG passed on: its Ringing, when it comes back from `next`,
/// goes on to `prev` (the way the request came).
#[derive(Clone, Debug)]
struct PassedCall {
    caller: NodeId,
    call: u64,
    prev: Contact,
    next: NodeId,
    until: Time,
}

#[derive(Clone, Debug)]
struct Collection {
    csp: Contact,
    handle: u64,
    nonce: u64,
    copies: u8,
    routes: Vec<(u8, Vec<NodeId>)>,
    deadline: Time,
    query: Option<u64>,
}

/// A peer of the secure overlay (sans-IO): a [`ChordNode`] for its layer plus its role in
/// the paper's call flow. Same driving contract as [`ChordNode`]: feed messages, timeouts and
/// the SOS's answers in; drain transmits and events; sleep until `poll_timeout`.
///
/// Flow (secure routing): caller → CSP of the callee's layer (via both layers' CSPGs when the
/// layers differ). The CSP keeps the request and sends signed PingRequest copies over
/// several first hops; each hop verifies the signature chain, acknowledges the copy to its
/// sender with a signature, appends its own signed record and routes it on by Chord (straight
/// to the callee when it knows it), avoiding peers the SOS distrusts and peers the CSP named
/// in the body. A sender whose next hop stays silent reports it and re-routes the copy; once
/// the next hop acknowledged, the sender tells the CSP (receipt, with the acknowledgement as
/// proof). When every copy stalls short of the callee, the CSP sends a new round around the
/// peers that last held them. The callee collects copies for a short window, asks the SOS to
/// rank the routes, fetches the request from the CSP and answers the caller with a signed
/// Ringing, directly and back along the request's path (whichever comes first). Broken
/// chains, stale or duplicate copies, detours and vanished copies become evidence; a
/// vanished copy names only the last peer that provably held it.
pub struct SecureNode {
    chord: ChordNode,
    ctx: OverlayContext,
    role: Role,
    layer: Layer,
    routing: Routing,
    signer: Box<dyn Signer>,
    unix_offset_ms: u64,
    distrusted: Arc<BTreeSet<NodeId>>,
    calls: Vec<OutCall>,
    held: Vec<Held>,
    collecting: Vec<Collection>,
    /// Requests this peer fetched as their target, newest last (CSP, handle, nonce): a copy
    /// of one that comes after the window closed is late, not a new request. Bounded by
    /// `max_pending`.
    finished: VecDeque<(NodeId, u64, u64)>,
    /// Copies passed on, awaiting the next hop's acknowledgement.
    forwards: Vec<Forward>,
    /// Call requests passed on as a CSP or CSPG, oldest first, for their Ringing's way
    /// back; bounded by `max_pending`, aged out after `call_timeout`.
    passed: VecDeque<PassedCall>,
    /// Copies handled, oldest first: (CSP, nonce, copy, timestamp); bounded, aged out.
    seen: VecDeque<(NodeId, u64, u8, u64)>,
    /// The same keys, for duplicate checks without scanning `seen`, with the hops the copy
    /// had passed when it first came.
    seen_set: BTreeMap<(NodeId, u64, u8), Vec<NodeId>>,
    cache: ContactCache,
    dialogs: Dialogs,
    dialog_refused: u64,
    validator: Option<Arc<dyn RecordValidator>>,
    record_ops: Vec<RecordOp>,
    out: VecDeque<Transmit>,
    events: VecDeque<SecureEvent>,
    next_id: u64,
    rng: Xoshiro256PlusPlus,
}

impl SecureNode {
    /// A secure peer around `chord` (already created/joined in its layer's ring).
    /// `unix_offset_ms` maps driver time to Unix milliseconds for PingRequest timestamps.
    pub fn new(
        chord: ChordNode,
        ctx: OverlayContext,
        role: Role,
        routing: Routing,
        signer: Box<dyn Signer>,
        unix_offset_ms: u64,
        seed: [u8; 32],
    ) -> Self {
        let layer = ctx.arcs.layer_of(chord.id());
        let cache = ContactCache::new(
            if ctx.cfg.cache_enabled && layer.caches_contacts() {
                ctx.cfg.cache_capacity
            } else {
                0
            },
            ctx.cfg.cache_ttl,
        );
        SecureNode {
            chord,
            ctx,
            role,
            layer,
            routing,
            signer,
            unix_offset_ms,
            distrusted: Arc::new(BTreeSet::new()),
            calls: Vec::new(),
            held: Vec::new(),
            collecting: Vec::new(),
            finished: VecDeque::new(),
            forwards: Vec::new(),
            passed: VecDeque::new(),
            seen: VecDeque::new(),
            seen_set: BTreeMap::new(),
            cache,
            dialogs: Dialogs::default(),
            dialog_refused: 0,
            validator: None,
            record_ops: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            rng: Xoshiro256PlusPlus::from_seed(expand_seed(&seed)),
        }
    }

    /// The Chord layer.
    pub fn chord(&self) -> &ChordNode {
        &self.chord
    }

    /// The Chord layer, for commands (join, leave, lookup).
    pub fn chord_mut(&mut self) -> &mut ChordNode {
        &mut self.chord
    }

    /// This peer's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This peer's layer.
    pub fn layer(&self) -> Layer {
        self.layer
    }

    /// Contacts cached.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// The contact cache, to persist its entries ([`ContactCache::entries`]).
    pub fn contact_cache(&self) -> &ContactCache {
        &self.cache
    }

    /// The contact cache, to put persisted entries back at start-up
    /// ([`ContactCache::restore`]).
    pub fn contact_cache_mut(&mut self) -> &mut ContactCache {
        &mut self.cache
    }

    /// Requests this CSP holds while its PingRequest copies are out: handle, the request,
    /// and when the CSP gives up on it.
    pub fn held_requests(&self) -> impl Iterator<Item = (u64, &CallRequest, Time)> + '_ {
        self.held.iter().map(|h| (h.handle, &h.request, h.deadline))
    }

    /// Replace the overlay context: a new directory of CSPs/CSPGs, their addresses, or
    /// newly learned keys (a running peer gets these from E&A after it started). The layer
    /// stays the one this peer was created in.
    pub fn set_context(&mut self, ctx: OverlayContext) {
        self.ctx = ctx;
    }

    /// The overlay context in use.
    pub fn context(&self) -> &OverlayContext {
        &self.ctx
    }

    /// Replace the set of peers the SOS distrusts (routing avoids them).
    pub fn set_distrusted(&mut self, distrusted: Arc<BTreeSet<NodeId>>) {
        self.distrusted = distrusted;
    }

    fn id(&mut self) -> u64 {
        let i = self.next_id;
        self.next_id += 1;
        i
    }

    fn unix_ms(&self, now: Time) -> u64 {
        self.unix_offset_ms + now.as_micros() / 1000
    }

    fn contact_of(&self, id: NodeId) -> Contact {
        self.ctx
            .infrastructure
            .iter()
            .find(|c| c.id == id)
            .copied()
            .unwrap_or(Contact::id_only(id))
    }

    fn send(&mut self, to: Contact, msg: Message) {
        self.out.push_back(Transmit { to, msg });
    }

    // ---- caller side ----

    /// Call `callee`, carrying `invite`; the outcome comes as [`SecureEvent::CallRinging`] or
    /// [`SecureEvent::CallFailed`] with the returned handle.
    pub fn call(&mut self, now: Time, callee: NodeId, invite: Vec<u8>) -> u64 {
        let id = self.id();
        if self.calls.len() >= self.ctx.cfg.max_pending {
            self.events.push_back(SecureEvent::CallFailed {
                call: id,
                callee,
                reason: CallFailure::Overloaded,
            });
            return id;
        }
        let cached = self.cache.get(now, callee);
        tracing::debug!(me = %self.chord.id(), call = id, %callee, cached = cached.is_some(), "placing call");
        self.calls.push(OutCall {
            id,
            callee,
            invite,
            started: now,
            deadline: now + self.ctx.cfg.call_timeout,
            retried: false,
            cached,
            first_csp: None,
            early: Vec::new(),
        });
        self.place(now, id);
        id
    }

    fn place(&mut self, now: Time, id: u64) {
        let Some(c) = self.calls.iter().find(|c| c.id == id).cloned() else {
            return;
        };
        let request = CallRequest {
            call: c.id,
            caller: self.chord.contact(),
            callee: c.callee,
            invite: c.invite.clone(),
            direct: c.cached.is_some(),
        };
        if let Some(contact) = c.cached {
            self.send(contact, Message::Call(request));
            return;
        }
        match self.routing {
            Routing::Chord => {
                let plain = PlainInvite {
                    call: c.id,
                    caller: self.chord.contact(),
                    callee: c.callee,
                    invite: c.invite,
                    path: Vec::new(),
                };
                self.forward_plain(now, plain);
            }
            Routing::Secure => {
                let space = self.ctx.arcs.space();
                let target_layer = self.ctx.arcs.layer_of(c.callee);
                let first = if target_layer == self.layer {
                    let csp = self.ctx.directory.csp_for_except(
                        space,
                        target_layer,
                        c.callee,
                        c.first_csp,
                    );
                    if let Some(out) = self.calls.iter_mut().find(|o| o.id == id) {
                        out.first_csp = out.first_csp.or(csp);
                    }
                    self.first_hop_to(csp, c.first_csp.is_none())
                } else {
                    self.ctx.directory.cspg(self.layer)
                };
                match first {
                    Some(f) if f == self.chord.id() => {
                        let me = self.chord.contact();
                        self.on_call(now, me, request);
                    }
                    Some(f) => {
                        let to = self.contact_of(f);
                        self.send(to, Message::Call(request));
                    }
                    None => self.fail_call(id, CallFailure::NoRoute),
                }
            }
        }
    }

    /// Where a call to a callee of this peer's own layer goes first, `csp` being the CSP of
    /// the callee's arc: to that CSP when this peer holds a standing link to it (its own
    /// arc's, or any of the layer's for the CSPG) or on a retry; else, on the first try, to
    /// the layer's CSPG, which holds standing links to all of the layer's CSPs. One more
    /// hop, over links that are open anyway, where a TLS handshake with the other arc's CSP
    /// sat on the call's path (a quarter of the demo's calls dialled it).
    fn first_hop_to(&self, csp: Option<NodeId>, first_try: bool) -> Option<NodeId> {
        let me = self.chord.id();
        let gateway = self.ctx.directory.cspg(self.layer);
        match (csp, gateway) {
            (Some(x), Some(g))
                if first_try && x != me && g != me && !self.call_path_ids().contains(&x) =>
            {
                Some(g)
            }
            _ => csp,
        }
    }

    fn fail_call(&mut self, id: u64, reason: CallFailure) {
        if let Some(pos) = self.calls.iter().position(|c| c.id == id) {
            let c = self.calls.swap_remove(pos);
            self.events.push_back(SecureEvent::CallFailed {
                call: id,
                callee: c.callee,
                reason,
            });
        }
    }

    fn on_ringing(&mut self, now: Time, from: Contact, ringing: Ringing) {
        let Ringing {
            call,
            callee,
            digest,
            route,
            ..
        } = ringing;
        let Some(pos) = self.calls.iter().position(|c| c.id == call) else {
            tracing::debug!(me = %self.chord.id(), call, "Ringing for a call not pending");
            return;
        };
        if self.calls[pos].callee != callee.id {
            return;
        }
        // Straight from the callee (its link is authenticated), or a copy the callee signed.
        let me = self.chord.id();
        if from.id != callee.id
            && !self.ctx.verifier.verify(
                callee.id,
                &ringing_bytes(me, call, &callee, &digest, &route),
                &ringing.sig,
            )
        {
            tracing::debug!(%me, from = %from.id, call, callee = %callee.id, "relayed Ringing with a bad signature");
            return;
        }
        let c = self.calls.swap_remove(pos);
        if digest != invite_digest(&c.invite) {
            self.events.push_back(SecureEvent::CallFailed {
                call,
                callee: c.callee,
                reason: CallFailure::Tampered,
            });
            return;
        }
        self.cache.insert(now, callee);
        tracing::debug!(%me, call, callee = %callee.id, relayed = from.id != callee.id, setup_us = (now - c.started).as_micros(), "call rang");
        self.dialogs
            .insert(me, call, callee, None, self.ctx.cfg.max_dialogs);
        self.events.push_back(SecureEvent::CallRinging {
            call,
            callee: c.callee,
            setup: now - c.started,
            route,
            cached: c.cached.is_some(),
        });
        for body in c.early {
            self.events.push_back(SecureEvent::Dialog {
                caller: me,
                call,
                body,
            });
        }
    }

    // ---- CSPG / CSP ----

    fn on_call(&mut self, now: Time, from: Contact, req: CallRequest) {
        tracing::debug!(me = %self.chord.id(), from = %from.id, call = req.call, callee = %req.callee, direct = req.direct, "call request");
        if req.direct {
            if req.callee == self.chord.id() && from.id == req.caller.id {
                self.ring(req, vec![self.chord.id()], None);
            }
            return;
        }
        let space = self.ctx.arcs.space();
        let target_layer = self.ctx.arcs.layer_of(req.callee);
        match self.role {
            Role::Peer => {}
            Role::Cspg => {
                let next = if target_layer == self.layer {
                    self.ctx.directory.csp_for(space, target_layer, req.callee)
                } else {
                    self.ctx.directory.cspg(target_layer)
                };
                if let Some(n) = next.filter(|n| *n != self.chord.id()) {
                    self.pass_call(now, from, &req, n);
                    let to = self.contact_of(n);
                    self.send(to, Message::Call(req));
                } else if next == Some(self.chord.id()) {
                    self.pass_call(now, from, &req, req.callee);
                    self.multicast(now, req);
                }
            }
            Role::Csp => {
                if target_layer == self.layer {
                    self.pass_call(now, from, &req, req.callee);
                    self.multicast(now, req);
                } else if let Some(g) = self.ctx.directory.cspg(self.layer) {
                    self.pass_call(now, from, &req, g);
                    let to = self.contact_of(g);
                    self.send(to, Message::Call(req));
                }
            }
        }
    }

    /// Remember that `req` came from `prev` and went on to `next`, for its Ringing's way
    /// back (nothing to remember when this peer placed the call itself).
    fn pass_call(&mut self, now: Time, prev: Contact, req: &CallRequest, next: NodeId) {
        if prev.id == self.chord.id() {
            return;
        }
        self.expire_passed(now);
        if self.passed.len() >= self.ctx.cfg.max_pending.max(1) {
            self.passed.pop_front();
        }
        self.passed.push_back(PassedCall {
            caller: req.caller.id,
            call: req.call,
            prev,
            next,
            until: now + self.ctx.cfg.call_timeout,
        });
    }

    fn expire_passed(&mut self, now: Time) {
        while self.passed.front().is_some_and(|p| p.until <= now) {
            self.passed.pop_front();
        }
    }

    /// A Ringing for another peer's call: pass it back the way the request came, if it
    /// comes from where this peer sent the request (once per request it passed).
    fn pass_ringing_back(&mut self, now: Time, from: Contact, ringing: Ringing) {
        self.expire_passed(now);
        let Some(pos) = self.passed.iter().position(|p| {
            p.caller == ringing.caller && p.call == ringing.call && p.next == from.id
        }) else {
            tracing::debug!(me = %self.chord.id(), from = %from.id, caller = %ringing.caller, call = ringing.call, "Ringing for a request not passed here");
            return;
        };
        let Some(p) = self.passed.remove(pos) else {
            return;
        };
        self.send(p.prev, Message::Ringing(ringing));
    }

    fn first_hops(&self, target: NodeId, avoid: &[NodeId]) -> Vec<Contact> {
        let fanout = self.ctx.cfg.fanout.max(1);
        let space = self.ctx.arcs.space();
        let me = self.chord.id();
        let kd = space.distance(me, target);
        // Only peers between us and the target: a copy handed to a successor past the
        // target would travel the whole ring and keep the target waiting out its window.
        let ok = |c: &Contact| {
            c.id != target
                && space.distance(me, c.id) < kd
                && !self.distrusted.contains(&c.id)
                && !avoid.contains(&c.id)
        };
        let succs: Vec<Contact> = self.chord.successors().filter(ok).collect();
        let mut picked: Vec<Contact> = Vec::with_capacity(fanout);
        match self.ctx.cfg.first_hops {
            FirstHops::Successors => picked.extend(succs.into_iter().take(fanout)),
            FirstHops::Diverse => {
                let mut fingers: Vec<Contact> = self.chord.fingers().filter(ok).collect();
                fingers.reverse(); // farthest (closest to the target) first
                let (mut s, mut f) = (succs.into_iter(), fingers.into_iter());
                while picked.len() < fanout {
                    let before = picked.len();
                    for c in [f.next(), s.next()].into_iter().flatten() {
                        if picked.len() < fanout && !picked.iter().any(|p| p.id == c.id) {
                            picked.push(c);
                        }
                    }
                    if picked.len() == before {
                        break;
                    }
                }
            }
        }
        let known = self
            .chord
            .successors()
            .chain(self.chord.fingers())
            .find(|c| c.id == target);
        if picked.is_empty() {
            // Nobody acceptable between us and the target (every peer there distrusted, or
            // named by an earlier round): straight to the target if we know it, so a callee
            // behind a run of droppers next to its CSP is still reached.
            picked.extend(known.or_else(|| self.chord.successor()));
        } else if !avoid.is_empty()
            && let Some(t) = known
        {
            // A new round after every copy stalled: one copy goes straight to the target
            // when we know it, so a callee behind a run of attackers next to its CSP (an
            // eclipse of the CSP's arc) is reached before the SOS has caught them.
            if picked.len() >= fanout {
                picked.pop();
            }
            picked.push(t);
        }
        picked
    }

    fn multicast(&mut self, now: Time, req: CallRequest) {
        if self.held.len() >= self.ctx.cfg.max_pending {
            return;
        }
        if req.callee == self.chord.id() {
            return;
        }
        let handle = self.id();
        let nonce: u64 = self.rng.random();
        let callee = req.callee;
        self.held.push(Held {
            handle,
            nonce,
            request: req,
            first_hops: Vec::new(),
            receipts: Vec::new(),
            deadline: now + self.ctx.cfg.call_timeout,
            rescue_at: None,
            rescues: 0,
            fetched: None,
        });
        let idx = self.held.len() - 1;
        self.send_round(now, idx, callee, Vec::new());
    }

    /// Send one round of PingRequest copies of held request `idx` over first hops that avoid
    /// `avoid` (the peers earlier rounds stalled at), which every hop of these copies avoids
    /// too: the CSP signs the list into each body.
    fn send_round(&mut self, now: Time, idx: usize, target: NodeId, avoid: Vec<NodeId>) {
        let hops = self.first_hops(target, &avoid);
        let Some(h) = self.held.get(idx) else {
            return;
        };
        let (handle, nonce, call, first) = (h.handle, h.nonce, h.request.call, h.first_hops.len());
        let caller = h.request.caller.id;
        tracing::debug!(me = %self.chord.id(), %caller, call, handle, callee = %target, round = h.rescues, first_hops = ?hops.iter().map(|c| c.id).collect::<Vec<_>>(), ?avoid, "multicasting PingRequest");
        let room = usize::from(u8::MAX).saturating_sub(first);
        let hops: Vec<Contact> = hops.into_iter().take(room).collect();
        let copies = (first + hops.len()) as u8;
        let ts = self.unix_ms(now);
        for (i, hop) in hops.iter().enumerate() {
            let body = PingBody {
                target,
                csp: self.chord.contact(),
                handle,
                nonce,
                timestamp_ms: ts,
                copy: (first + i) as u8,
                copies,
                avoid: avoid.clone(),
            };
            let csp_sig = self.signer.sign(&body_bytes(&body));
            let ping = PingRequest {
                body,
                csp_sig,
                hops: Vec::new(),
            };
            self.pass_copy(now, *hop, ping, Vec::new());
        }
        let stall = self.ctx.cfg.stall_timeout;
        let rounds = self.ctx.cfg.rescue_rounds;
        if let Some(h) = self.held.get_mut(idx) {
            h.first_hops.extend(hops.iter().map(|c| c.id));
            h.rescue_at = (h.rescues < rounds).then_some(now + stall);
        }
    }

    /// An acknowledged hand-over of copy `copy` from `from` to `next`; `ack` is `next`'s
    /// signature, checked here (a receipt without it proves nothing and is ignored).
    fn on_receipt(
        &mut self,
        now: Time,
        from: NodeId,
        (handle, nonce, copy): (u64, u64, u8),
        next: NodeId,
        ack: &[u8],
    ) {
        let me = self.chord.id();
        if from != me
            && !self
                .ctx
                .verifier
                .verify(next, &ack_bytes(me, handle, nonce, copy, next), ack)
        {
            tracing::debug!(%me, %from, handle, copy, %next, "receipt without a valid acknowledgement");
            return;
        }
        let stall = self.ctx.cfg.stall_timeout;
        let Some(h) = self
            .held
            .iter_mut()
            .find(|h| h.handle == handle && h.nonce == nonce)
        else {
            return;
        };
        if usize::from(copy) >= h.first_hops.len() {
            return;
        }
        if h.receipts.len() < 4 * self.ctx.cfg.max_path {
            h.receipts.push((copy, from, next));
        }
        // A copy moved: give the round time before judging it stalled.
        if let Some(at) = h.rescue_at.as_mut() {
            *at = (*at).max(now + stall);
        }
    }

    /// The chain of acknowledged hand-overs of one copy, CSP first, and the last peer that
    /// provably held it.
    fn copy_chain(&self, held: &Held, copy: u8) -> Vec<(NodeId, NodeId)> {
        let target = held.request.callee;
        let mut chain: Vec<(NodeId, NodeId)> = Vec::new();
        let mut at = self.chord.id();
        while chain.len() < self.ctx.cfg.max_path {
            // A hop's latest receipt: a hop that re-routed a copy (congested link, no
            // acknowledgement) names where the copy really went.
            let Some(&(_, hop, next)) = held
                .receipts
                .iter()
                .rfind(|(c, h, _)| *c == copy && *h == at)
            else {
                break;
            };
            if chain.iter().any(|(h, _)| *h == next) {
                break;
            }
            chain.push((hop, next));
            if next == target {
                break;
            }
            at = next;
        }
        chain
    }

    /// Every copy of held request `idx` stalled short of the target: send a new round that
    /// avoids the peers the copies stalled at.
    fn rescue(&mut self, now: Time, idx: usize) {
        let Some(h) = self.held.get(idx).cloned() else {
            return;
        };
        let target = h.request.callee;
        let me = self.chord.id();
        let mut avoid: Vec<NodeId> = Vec::new();
        for copy in 0..h.first_hops.len() {
            let chain = self.copy_chain(&h, copy as u8);
            match chain.last() {
                Some((_, next)) if *next == target => {
                    // One copy reached the target: no new round.
                    if let Some(h) = self.held.get_mut(idx) {
                        h.rescue_at = None;
                    }
                    return;
                }
                Some((_, holder)) => avoid.push(*holder),
                None => avoid.push(h.first_hops[copy]),
            }
        }
        avoid.retain(|p| *p != me);
        avoid.sort();
        avoid.dedup();
        avoid.truncate(self.ctx.cfg.max_path);
        let grace = self.ctx.cfg.call_timeout;
        if let Some(h) = self.held.get_mut(idx) {
            h.rescues += 1;
            h.deadline = h.deadline.max(now + grace);
        }
        self.send_round(now, idx, target, avoid);
    }

    fn on_fetch(
        &mut self,
        now: Time,
        from: Contact,
        handle: u64,
        nonce: u64,
        arrived: Vec<u8>,
        route: Vec<NodeId>,
    ) {
        let grace = self.ctx.cfg.call_timeout;
        let Some(h) = self
            .held
            .iter_mut()
            .find(|h| h.handle == handle && h.nonce == nonce && h.fetched.is_none())
        else {
            return;
        };
        if h.request.callee != from.id {
            self.events.push_back(SecureEvent::Report {
                subject: from.id,
                outcome: Outcome::Modified,
            });
            return;
        }
        h.fetched = Some((arrived, now + grace));
        let request = h.request.clone();
        // The target received copies and came for the request over its own authenticated
        // link: proven positive evidence about it, which holds against a hop that claims the
        // target dropped a copy handed to it.
        self.events.push_back(SecureEvent::Report {
            subject: from.id,
            outcome: Outcome::Delivered,
        });
        self.send(
            from,
            Message::Deliver {
                handle,
                request,
                route,
            },
        );
    }

    /// Turn receipts into evidence: a hop whose hand-over the next hop signed passed the copy
    /// on (delivered), unless away from the target (misrouted); a copy that did not arrive
    /// incriminates the last peer that provably held it (it signed an acknowledgement), and
    /// only that peer: the hop before it proved that it passed the copy on.
    fn judge_copies(&mut self, held: &Held, arrived: &[u8]) {
        let space = self.ctx.arcs.space();
        let target = held.request.callee;
        let me = self.chord.id();
        for copy in 0..held.first_hops.len() {
            let copy = copy as u8;
            let chain = self.copy_chain(held, copy);
            for (hop, next) in &chain {
                if *hop == me {
                    continue;
                }
                // A hop whose next hop signed for the copy provably passed it on: positive
                // evidence, unless it passed it away from the target.
                let outcome = if next != &target
                    && space.distance(*next, target) >= space.distance(*hop, target)
                {
                    Outcome::Misrouted
                } else {
                    Outcome::Delivered
                };
                self.events.push_back(SecureEvent::Report {
                    subject: *hop,
                    outcome,
                });
            }
            if arrived.contains(&copy) {
                continue;
            }
            match chain.last() {
                // Never acknowledged by a first hop: the CSP re-routed it and reported the
                // silent first hops when their acknowledgements did not come.
                None => {}
                // The target acknowledged it: late, or the target's own business.
                Some((_, next)) if *next == target => {}
                Some((_, holder)) => self.events.push_back(SecureEvent::Report {
                    subject: *holder,
                    outcome: Outcome::Dropped,
                }),
            }
        }
    }

    // ---- every hop ----

    fn on_ping(&mut self, now: Time, from: Contact, mut ping: PingRequest) {
        let body = ping.body.clone();
        let expected = ping.hops.last().map(|h| h.hop).unwrap_or(body.csp.id);
        let fault = if from.id != expected {
            Some(Outcome::Modified)
        } else if ping.hops.len() >= self.ctx.cfg.max_path {
            Some(Outcome::Misrouted)
        } else if self.unix_ms(now).abs_diff(body.timestamp_ms) > self.ctx.cfg.timestamp_window_ms {
            // Older than the window (a replay, or the CSP's clock is that far behind) or
            // newer than it (the CSP's clock is that far ahead: such a copy would stay
            // "fresh" long after the hops forgot its nonce, so it could be replayed).
            Some(Outcome::Replayed)
        } else if !self.chain_valid(&ping) {
            Some(Outcome::Modified)
        } else {
            None
        };
        if let Some(outcome) = fault {
            tracing::debug!(me = %self.chord.id(), from = %from.id, handle = body.handle, copy = body.copy, ?outcome, "PingRequest refused");
            self.events.push_back(SecureEvent::Report {
                subject: from.id,
                outcome,
            });
            return;
        }
        let me = self.chord.id();
        // Every hop, not only the target, remembers the copies it has handled. A copy seen
        // twice over the same signed path is a replay by the peer that sent it now (an
        // honest hop that forwarded the first one is not blamed for someone else's
        // duplicate). Over another path it is a fork: some hop before the paths part passed
        // the copy twice (a misrouter re-sending it, or a hop whose next hop forwarded but
        // never acknowledged), and the peer that sent it now is not to blame. Either way it
        // is acknowledged, so its honest sender does not take this peer for silent, and not
        // passed on.
        let key = (body.csp.id, body.nonce, body.copy);
        let path: Vec<NodeId> = ping.hops.iter().map(|h| h.hop).collect();
        let duplicate = match self.seen_set.get(&key) {
            Some(first) if *first == path => Some(true),
            Some(_) => Some(false),
            None => None,
        };
        if duplicate.is_none() {
            if self.seen.len() >= self.ctx.cfg.max_pending
                && let Some(old) = self.seen.pop_front()
            {
                self.seen_set.remove(&(old.0, old.1, old.2));
            }
            self.seen
                .push_back((key.0, key.1, key.2, body.timestamp_ms));
            self.seen_set.insert(key, path);
        }
        // Acknowledge: "I hold this copy", signed, for the sender to relay to the CSP.
        let sig = self.signer.sign(&ack_bytes(
            body.csp.id,
            body.handle,
            body.nonce,
            body.copy,
            me,
        ));
        self.send(
            from,
            Message::PingAck {
                csp: body.csp.id,
                handle: body.handle,
                nonce: body.nonce,
                copy: body.copy,
                sig,
            },
        );
        if let Some(replay) = duplicate {
            tracing::debug!(me = %me, from = %from.id, handle = body.handle, copy = body.copy, replay, "PingRequest seen before");
            if replay {
                self.events.push_back(SecureEvent::Report {
                    subject: from.id,
                    outcome: Outcome::Replayed,
                });
            }
            return;
        }
        if body.target == me {
            self.collect(now, ping);
            return;
        }
        if ping.hops.iter().any(|h| h.hop == me) {
            self.events.push_back(SecureEvent::Report {
                subject: from.id,
                outcome: Outcome::Misrouted,
            });
            return;
        }
        let prev_sig = ping
            .hops
            .last()
            .map(|h| h.sig.clone())
            .unwrap_or_else(|| ping.csp_sig.clone());
        let sig = self.signer.sign(&record_bytes(&body, &prev_sig, me));
        ping.hops.push(HopRecord { hop: me, sig });
        let Some(next) = self.copy_next_hop(&ping, &[]) else {
            tracing::debug!(me = %self.chord.id(), handle = body.handle, copy = body.copy, target = %body.target, "PingRequest has no next hop");
            return;
        };
        tracing::debug!(me = %self.chord.id(), from = %from.id, handle = body.handle, copy = body.copy, next = %next.id, "forwarding PingRequest");
        self.pass_copy(now, next, ping, Vec::new());
    }

    /// Where this hop passes a copy on: straight to the target when this peer knows it (a
    /// finger or successor: Halo's knuckle, one hop from the target), else Chord's next hop
    /// towards it, avoiding peers the SOS distrusts, peers the CSP named in the body, peers
    /// already on the copy's path and `also`.
    fn copy_next_hop(&self, ping: &PingRequest, also: &[NodeId]) -> Option<Contact> {
        let target = ping.body.target;
        if !also.contains(&target)
            && let Some(t) = self
                .chord
                .fingers()
                .chain(self.chord.successors())
                .find(|c| c.id == target)
        {
            return Some(t);
        }
        let distrusted = &self.distrusted;
        self.chord
            .next_hop_avoiding(target, |id| {
                also.contains(&id)
                    || distrusted.contains(&id)
                    || ping.body.avoid.contains(&id)
                    || ping.hops.iter().any(|h| h.hop == id)
            })
            .map(|(c, _)| c)
    }

    /// Hand a copy this peer signed (or, as the CSP, created) to `next` and wait for its
    /// acknowledgement; `tried` are next hops that already failed this copy.
    fn pass_copy(&mut self, now: Time, next: Contact, ping: PingRequest, mut tried: Vec<NodeId>) {
        tried.push(next.id);
        if self.forwards.len() >= self.ctx.cfg.max_pending {
            self.forwards.remove(0);
        }
        self.forwards.push(Forward {
            ping: ping.clone(),
            to: next.id,
            tried,
            deadline: now + self.ctx.cfg.ack_timeout,
        });
        self.send(next, Message::PingRequest(ping));
    }

    /// A next hop acknowledged a copy: tell the CSP (with the signature as proof), or, as
    /// the CSP, note the hand-over.
    fn on_ping_ack(
        &mut self,
        now: Time,
        from: Contact,
        (csp, handle, nonce, copy): (NodeId, u64, u64, u8),
        sig: Vec<u8>,
    ) {
        let Some(pos) = self.forwards.iter().position(|f| {
            let b = &f.ping.body;
            f.to == from.id
                && b.csp.id == csp
                && b.handle == handle
                && b.nonce == nonce
                && b.copy == copy
        }) else {
            return;
        };
        if !self
            .ctx
            .verifier
            .verify(from.id, &ack_bytes(csp, handle, nonce, copy, from.id), &sig)
        {
            tracing::debug!(me = %self.chord.id(), from = %from.id, handle, copy, "PingAck with a bad signature");
            return;
        }
        let f = self.forwards.swap_remove(pos);
        let me = self.chord.id();
        if csp == me {
            self.on_receipt(now, me, (handle, nonce, copy), from.id, &sig);
        } else {
            self.send(
                f.ping.body.csp,
                Message::HopReceipt {
                    handle,
                    nonce,
                    copy,
                    next: from.id,
                    ack: sig,
                },
            );
        }
    }

    /// Copies whose next hop did not acknowledge in time: report it and pass the copy to the
    /// next best hop, up to [`SecureConfig::reroutes`](super::SecureConfig) times.
    fn expire_forwards(&mut self, now: Time) {
        let (due, keep): (Vec<Forward>, Vec<Forward>) = std::mem::take(&mut self.forwards)
            .into_iter()
            .partition(|f| f.deadline <= now);
        self.forwards = keep;
        for f in due {
            tracing::debug!(me = %self.chord.id(), handle = f.ping.body.handle, copy = f.ping.body.copy, silent = %f.to, "PingRequest not acknowledged");
            self.events.push_back(SecureEvent::Report {
                subject: f.to,
                outcome: Outcome::Dropped,
            });
            if f.tried.len() > usize::from(self.ctx.cfg.reroutes) {
                continue;
            }
            if let Some(next) = self
                .copy_next_hop(&f.ping, &f.tried)
                .filter(|c| !f.tried.contains(&c.id))
            {
                self.pass_copy(now, next, f.ping, f.tried);
            }
        }
    }

    fn chain_valid(&self, ping: &PingRequest) -> bool {
        let v = &self.ctx.verifier;
        let bytes = body_bytes(&ping.body);
        if !v.verify(ping.body.csp.id, &bytes, &ping.csp_sig) {
            return false;
        }
        let mut prev = &ping.csp_sig;
        for h in &ping.hops {
            if !v.verify(h.hop, &record_bytes(&ping.body, prev, h.hop), &h.sig) {
                return false;
            }
            prev = &h.sig;
        }
        true
    }

    // ---- target ----

    fn collect(&mut self, now: Time, ping: PingRequest) {
        let b = &ping.body;
        let mut route: Vec<NodeId> = ping.hops.iter().map(|h| h.hop).collect();
        route.push(self.chord.id());
        // A detour shows in the signed path: every hop must bring the copy closer.
        let space = self.ctx.arcs.space();
        let me = self.chord.id();
        for w in route.windows(2) {
            if w[1] != me && space.distance(w[1], me) >= space.distance(w[0], me) {
                self.events.push_back(SecureEvent::Report {
                    subject: w[0],
                    outcome: Outcome::Misrouted,
                });
            }
        }
        let key = (b.csp.id, b.handle, b.nonce);
        if self.finished.contains(&key) {
            tracing::debug!(%me, csp = %b.csp.id, handle = b.handle, copy = b.copy, "PingRequest copy after the fetch");
            return;
        }
        let idx = match self
            .collecting
            .iter()
            .position(|c| c.csp.id == b.csp.id && c.handle == b.handle && c.nonce == b.nonce)
        {
            Some(i) => {
                let c = &mut self.collecting[i];
                if c.query.is_some() {
                    return;
                }
                if c.routes.len() < usize::from(u8::MAX) {
                    c.routes.push((b.copy, route));
                }
                i
            }
            None => {
                if self.collecting.len() >= self.ctx.cfg.max_pending {
                    return;
                }
                let wait = self.collect_wait(now, b.timestamp_ms);
                self.collecting.push(Collection {
                    csp: b.csp,
                    handle: b.handle,
                    nonce: b.nonce,
                    copies: b.copies,
                    routes: vec![(b.copy, route)],
                    deadline: now + wait,
                    query: None,
                });
                self.collecting.len() - 1
            }
        };
        let c = &self.collecting[idx];
        tracing::debug!(%me, csp = %c.csp.id, handle = c.handle, copy = b.copy, arrived = c.routes.len(), copies = c.copies, "PingRequest copy at target");
        // All copies in: ask the SOS now, not at the next timer tick.
        if c.routes.len() >= usize::from(c.copies) {
            self.ask_sos(now, idx);
        }
    }

    /// How long the target waits for the other copies after the first one came: as long
    /// again as the first took from the CSP (its signed timestamp) to here, within
    /// [`collect_min`, `collect_window`]. The copies travel routes of about the same length
    /// (each O(log N) Chord hops), so one that takes more than twice the first's time has
    /// stalled or was dropped, and waiting for it only delays the call; the floor covers
    /// scheduling jitter on a fast first copy, and the cap (and a CSP clock skewed either
    /// way) keeps the window of the paper's fixed one.
    fn collect_wait(&self, now: Time, sent_ms: u64) -> std::time::Duration {
        let cfg = &self.ctx.cfg;
        let transit = std::time::Duration::from_millis(self.unix_ms(now).saturating_sub(sent_ms));
        transit.max(cfg.collect_min).min(cfg.collect_window)
    }

    fn ask_sos(&mut self, now: Time, idx: usize) {
        let q = self.id();
        let c = &mut self.collecting[idx];
        tracing::debug!(me = %self.chord.id(), csp = %c.csp.id, handle = c.handle, copies = c.copies, arrived = c.routes.len(), "asking the SOS to rank");
        c.query = Some(q);
        c.deadline = now + self.ctx.cfg.sos_timeout;
        let routes: Vec<Vec<NodeId>> = c.routes.iter().map(|(_, r)| r.clone()).collect();
        self.events
            .push_back(SecureEvent::RankRoutes { query: q, routes });
    }

    /// The SOS's answer to [`SecureEvent::RankRoutes`]: the index of the most trusted route
    /// (`None` if the SOS could not rank; the shortest route is taken then).
    pub fn handle_ranking(&mut self, _now: Time, query: u64, best: Option<usize>) {
        let Some(pos) = self.collecting.iter().position(|c| c.query == Some(query)) else {
            return;
        };
        let c = self.collecting.swap_remove(pos);
        tracing::debug!(me = %self.chord.id(), csp = %c.csp.id, handle = c.handle, ranked = best.is_some(), "ranking from the SOS");
        self.fetch(c, best);
    }

    fn fetch(&mut self, c: Collection, best: Option<usize>) {
        tracing::debug!(me = %self.chord.id(), csp = %c.csp.id, handle = c.handle, ranked = best.is_some(), "fetching the held request");
        let chosen = best
            .and_then(|i| c.routes.get(i))
            .or_else(|| c.routes.iter().min_by_key(|(_, r)| r.len()))
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        for (_, r) in &c.routes {
            for hop in &r[..r.len().saturating_sub(1)] {
                self.events.push_back(SecureEvent::Report {
                    subject: *hop,
                    outcome: Outcome::Delivered,
                });
            }
        }
        let arrived: Vec<u8> = c.routes.iter().map(|(copy, _)| *copy).collect();
        if self.finished.len() >= self.ctx.cfg.max_pending {
            self.finished.pop_front();
        }
        self.finished.push_back((c.csp.id, c.handle, c.nonce));
        self.send(
            c.csp,
            Message::Fetch {
                handle: c.handle,
                nonce: c.nonce,
                arrived,
                route: chosen,
            },
        );
    }

    fn on_deliver(&mut self, from: Contact, request: CallRequest, route: Vec<NodeId>) {
        if request.callee != self.chord.id() || !self.ctx.directory.is_infrastructure(from.id) {
            tracing::debug!(me = %self.chord.id(), from = %from.id, call = request.call, "delivery refused: not for us or not from a CSP/CSPG");
            return;
        }
        tracing::debug!(me = %self.chord.id(), from = %from.id, caller = %request.caller.id, call = request.call, "request delivered");
        self.ring(request, route, Some(from));
    }

    /// Answer `request` with a signed Ringing through `back`, the CSP that delivered it, so
    /// it travels back along the request's path over links that carry calls anyway; straight
    /// to the caller only when there is no such path (the plain Chord baseline, a request
    /// the caller sent here itself). A copy straight to the caller would cost a TLS
    /// handshake on the call's critical path nearly every time (caller and callee rarely
    /// share a link) and reach the caller no sooner than the relayed one under load.
    fn ring(&mut self, request: CallRequest, route: Vec<NodeId>, back: Option<Contact>) {
        let digest = invite_digest(&request.invite);
        let callee = self.chord.contact();
        let sig = self.signer.sign(&ringing_bytes(
            request.caller.id,
            request.call,
            &callee,
            &digest,
            &route,
        ));
        let ringing = Ringing {
            call: request.call,
            caller: request.caller.id,
            callee,
            digest,
            route,
            sig,
        };
        let to = back
            .filter(|b| b.id != request.caller.id)
            .unwrap_or(request.caller);
        self.send(to, Message::Ringing(ringing));
        // The caller's retry of a call delivered here already (its Ringing was late or
        // lost): Ringing again, but the application has the INVITE and must not get it
        // twice (a SIP front-end would take it for a loop and refuse the call).
        if self
            .dialogs
            .delivered(request.caller.id, request.call, &digest)
        {
            tracing::debug!(me = %self.chord.id(), caller = %request.caller.id, call = request.call, "call delivered again (a retry): Ringing repeated");
            return;
        }
        self.dialogs.insert(
            request.caller.id,
            request.call,
            request.caller,
            Some(digest),
            self.ctx.cfg.max_dialogs,
        );
        self.events.push_back(SecureEvent::IncomingCall {
            caller: request.caller,
            call: request.call,
            invite: request.invite,
        });
    }

    // ---- plain Chord baseline ----

    fn forward_plain(&mut self, _now: Time, mut inv: PlainInvite) {
        let me = self.chord.id();
        inv.path.push(me);
        if inv.callee == me {
            let req = CallRequest {
                call: inv.call,
                caller: inv.caller,
                callee: me,
                invite: inv.invite,
                direct: false,
            };
            self.ring(req, inv.path, None);
            return;
        }
        if inv.path.len() > self.ctx.cfg.max_path {
            return;
        }
        if let Some((next, _)) = self.chord.next_hop(inv.callee) {
            self.send(next, Message::PlainInvite(inv));
        }
    }

    // ---- driving ----

    /// Feed a message from `from` (authenticated by the driver).
    pub fn handle_message(&mut self, now: Time, from: Contact, msg: Message) {
        match msg {
            Message::Call(req) => self.on_call(now, from, req),
            Message::PingRequest(p) => self.on_ping(now, from, p),
            Message::HopReceipt {
                handle,
                nonce,
                copy,
                next,
                ack,
            } => self.on_receipt(now, from.id, (handle, nonce, copy), next, &ack),
            Message::PingAck {
                csp,
                handle,
                nonce,
                copy,
                sig,
            } => self.on_ping_ack(now, from, (csp, handle, nonce, copy), sig),
            Message::Fetch {
                handle,
                nonce,
                arrived,
                route,
            } => self.on_fetch(now, from, handle, nonce, arrived, route),
            Message::Deliver { request, route, .. } => self.on_deliver(from, request, route),
            Message::Ringing(ringing) => {
                if ringing.caller == self.chord.id() {
                    self.on_ringing(now, from, ringing);
                } else {
                    self.pass_ringing_back(now, from, ringing);
                }
            }
            Message::PlainInvite(inv) => self.forward_plain(now, inv),
            Message::Dialog { caller, call, body } => self.on_dialog(from, caller, call, body),
            msg @ (Message::Put { .. }
            | Message::PutReply { .. }
            | Message::Get { .. }
            | Message::GetReply { .. }) => self.handle_record_message(now, from, msg),
            other => self.chord.handle_message(now, from, other),
        }
        self.pump_chord_events(now);
    }

    /// Move the Chord layer's events to ours, taking the lookups of record operations.
    fn pump_chord_events(&mut self, now: Time) {
        while let Some(ev) = self.chord.poll_event() {
            if let Some(ev) = self.record_lookup_event(now, ev) {
                self.events.push_back(SecureEvent::Chord(ev));
            }
        }
    }

    /// The driver could not queue `msg` for `to` (its own send queue was full): local
    /// congestion, not a fault of `to` (see [`ChordNode::handle_not_sent`]). A PingRequest
    /// copy this peer signed and meant for `to` goes to the next best hop instead, with a new
    /// receipt to the CSP, so the copy still arrives and neither this peer nor `to` is
    /// reported for a copy that never left.
    pub fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message) {
        if let Message::PingRequest(ping) = msg {
            self.reroute_copy(now, to, ping);
        }
        self.chord.handle_not_sent(now, to, msg);
    }

    /// Re-route a copy that could not be queued for `to`. Only a copy whose first choice was
    /// `to` moves, and never back to `to`: a second congested link drops it (bounded work;
    /// the CSP then judges the copy lost as usual).
    fn reroute_copy(&mut self, now: Time, to: NodeId, ping: &PingRequest) {
        let me = self.chord.id();
        let body = &ping.body;
        let Some(pos) = self.forwards.iter().position(|f| {
            let b = &f.ping.body;
            f.to == to
                && f.tried.len() == 1
                && b.csp.id == body.csp.id
                && b.nonce == body.nonce
                && b.copy == body.copy
        }) else {
            return;
        };
        if ping.hops.last().map(|h| h.hop) != Some(me) && body.csp.id != me {
            return;
        }
        let f = self.forwards.swap_remove(pos);
        let Some(next) = self.copy_next_hop(ping, &f.tried).filter(|c| c.id != to) else {
            return;
        };
        tracing::debug!(me = %me, handle = body.handle, copy = body.copy, congested = %to, next = %next.id, "PingRequest re-routed around a congested link");
        self.pass_copy(now, next, ping.clone(), f.tried);
    }

    /// Run timers due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.chord.handle_timeout(now);
        self.pump_chord_events(now);
        self.expire_record_ops(now);
        self.expire_forwards(now);
        self.expire_passed(now);
        // Held requests whose copies all stalled short of the target: a new round.
        let stalled: Vec<usize> = self
            .held
            .iter()
            .enumerate()
            .filter(|(_, h)| h.fetched.is_none() && h.rescue_at.is_some_and(|t| t <= now))
            .map(|(i, _)| i)
            .collect();
        for i in stalled {
            self.rescue(now, i);
        }
        // Collections whose window closed: ask the SOS; SOS answers that never came: fall back.
        let mut i = 0;
        while i < self.collecting.len() {
            if self.collecting[i].deadline > now {
                i += 1;
                continue;
            }
            if self.collecting[i].query.is_none() {
                self.ask_sos(now, i);
                i += 1;
            } else {
                let c = self.collecting.swap_remove(i);
                self.fetch(c, None);
            }
        }
        // Held requests: judge the copies once the grace after the fetch is over, or, if
        // nobody fetched, when the request expires (then every copy was lost).
        let (due, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| match &h.fetched {
                Some((_, judge_at)) => *judge_at <= now,
                None => h.deadline <= now,
            });
        self.held = keep;
        for h in due {
            let arrived = h
                .fetched
                .as_ref()
                .map(|(a, _)| a.clone())
                .unwrap_or_default();
            self.judge_copies(&h, &arrived);
        }
        // Calls without Ringing: retry once (a failed cached contact is forgotten), then fail.
        let due: Vec<u64> = self
            .calls
            .iter()
            .filter(|c| c.deadline <= now)
            .map(|c| c.id)
            .collect();
        for id in due {
            let Some(c) = self.calls.iter_mut().find(|c| c.id == id) else {
                continue;
            };
            if c.retried {
                self.fail_call(id, CallFailure::TimedOut);
                continue;
            }
            c.retried = true;
            tracing::debug!(me = %self.chord.id(), call = id, callee = %c.callee, cached = c.cached.is_some(), "no Ringing in time, retrying call");
            c.deadline = now + self.ctx.cfg.call_timeout;
            if let Some(stale) = c.cached.take() {
                self.cache.remove(stale.id);
            }
            self.place(now, id);
        }
        let ts_now = self.unix_ms(now);
        let window = self.ctx.cfg.timestamp_window_ms;
        while self
            .seen
            .front()
            .is_some_and(|s| ts_now.saturating_sub(s.3) > window)
        {
            if let Some(old) = self.seen.pop_front() {
                self.seen_set.remove(&(old.0, old.1, old.2));
            }
        }
    }

    /// Next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front().or_else(|| self.chord.poll_transmit())
    }

    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SecureEvent> {
        // Chord events are moved over after every input; this catches events from direct
        // use of `chord_mut()` (record lookups only start from our own inputs).
        self.events
            .pop_front()
            .or_else(|| self.chord.poll_event().map(SecureEvent::Chord))
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let mine = self
            .collecting
            .iter()
            .map(|c| c.deadline)
            .chain(
                self.held
                    .iter()
                    .map(|h| h.fetched.as_ref().map_or(h.deadline, |(_, t)| *t)),
            )
            .chain(
                self.held
                    .iter()
                    .filter(|h| h.fetched.is_none())
                    .filter_map(|h| h.rescue_at),
            )
            .chain(self.forwards.iter().map(|f| f.deadline))
            .chain(self.calls.iter().map(|c| c.deadline))
            .chain(self.record_ops.iter().map(|o| o.deadline))
            .min();
        match (self.chord.poll_timeout(), mine) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

// ---- in-dialog messages (Figure 4: straight between caller and callee) ----

impl SecureNode {
    /// Send one in-dialog message to the other end of call (`caller`, `call`) — a call this
    /// peer placed (`caller` is this peer) or answered. False if the call is unknown.
    pub fn send_dialog(&mut self, caller: NodeId, call: u64, body: Vec<u8>) -> bool {
        let Some(peer) = self.dialogs.get(caller, call) else {
            return false;
        };
        self.send(peer, Message::Dialog { caller, call, body });
        true
    }

    /// Forget a finished call.
    pub fn end_dialog(&mut self, caller: NodeId, call: u64) {
        self.dialogs.remove(caller, call);
    }

    /// Whether the link to `peer` carries an exchange still open, the secure layer's as well
    /// as Chord's: a PingRequest copy waiting for `peer`'s acknowledgement, or `peer` is a
    /// CSP this peer fetched a request from among its last `max_pending` fetches (its
    /// Deliver comes back on that link, and the next call through it most likely too). The
    /// runtime closes such links last: a link closed to make room 8 ms after the fetch
    /// went out lost the Deliver, and the call rang only on the caller's retry. Likewise the
    /// link back to whoever handed this CSP or CSPG a call request still ringing (its
    /// Ringing goes back that way).
    pub fn keeps_link(&self, peer: NodeId) -> bool {
        self.chord.keeps_link(peer)
            || self.forwards.iter().any(|f| f.to == peer)
            || self.finished.iter().any(|(csp, _, _)| *csp == peer)
            || self.passed.iter().any(|p| p.prev.id == peer)
            || self.on_call_path(peer)
    }

    /// The peers most calls through this one go by, once it is in its ring: a peer's
    /// layer CSPG (the first hop of its calls to other layers) and the CSP of its own arc
    /// (which multicasts the calls to it and hands them over); a CSP's CSPG; a CSPG's CSPs
    /// and the other layers' CSPGs. A runtime holds links to them open, so set-up delay
    /// does not include a TLS handshake on these legs (see
    /// [`Core::standing_links`](crate::driver::Core::standing_links)).
    pub fn standing_links(&self) -> Vec<Contact> {
        if !self.chord.is_active() || self.chord.successor().is_none() {
            return Vec::new();
        }
        let mut ids = self.call_path_ids();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter(|id| *id != self.chord.id())
            .map(|id| self.contact_of(id))
            .collect()
    }

    /// Asked for every link each second by the runtime: the ones not to a CSP or CSPG
    /// (nearly all) are answered without building the list.
    fn on_call_path(&self, peer: NodeId) -> bool {
        self.chord.is_active()
            && self.ctx.directory.is_infrastructure(peer)
            && self.call_path_ids().contains(&peer)
    }

    fn call_path_ids(&self) -> Vec<NodeId> {
        let dir = &self.ctx.directory;
        let gateway = dir.cspg(self.layer);
        match self.role {
            Role::Peer => {
                let space = self.ctx.arcs.space();
                let own_csp = dir.csp_for(space, self.layer, self.chord.id());
                gateway.into_iter().chain(own_csp).collect()
            }
            Role::Csp => gateway.into_iter().collect(),
            Role::Cspg => dir.csps[self.layer.index()]
                .iter()
                .copied()
                .chain(Layer::ALL.iter().filter_map(|l| dir.cspg(*l)))
                .collect(),
        }
    }

    /// Calls whose other end is remembered.
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// In-dialog messages refused so far: for no call this peer knows, or not from its
    /// other end.
    pub fn dialog_refused(&self) -> u64 {
        self.dialog_refused
    }

    /// An in-dialog message arrived: only the call's other end may send it.
    fn on_dialog(&mut self, from: Contact, caller: NodeId, call: u64, body: Vec<u8>) {
        if self.dialogs.accepts(from.id, caller, call) {
            self.events
                .push_back(SecureEvent::Dialog { caller, call, body });
            return;
        }
        // From the callee of a call of ours whose Ringing is still on its way back (through
        // the CSP, while this came straight): kept until it comes.
        let me = self.chord.id();
        if caller == me
            && let Some(c) = self
                .calls
                .iter_mut()
                .find(|c| c.id == call && c.callee == from.id)
            && c.early.len() < MAX_EARLY_DIALOG
        {
            c.early.push(body);
            return;
        }
        self.dialog_refused += 1;
    }
}

/// The RNG state for a caller-given seed. Seeds are often sparse (a Node-ID and zeros), and
/// xoshiro256++ seeded with such a state repeats its first output: two PingRequests of one CSP
/// got the same nonce and honest hops took the second for a replay. Hashing spreads any seed
/// over the whole state.
fn expand_seed(seed: &[u8; 32]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"p2psip secure-node rng");
    ctx.update(seed);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// SHA-256 of a request, so a caller can tell whether what rang is what it sent. The callee
/// sends it back in [`Message::Ringing`]; a collision-resistant hash means no peer on the way
/// can swap the request for another with the same digest.
pub fn invite_digest(invite: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, invite).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_digest_is_sha256() {
        // FIPS 180-2 test vector "abc".
        let want: [u8; 32] = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
            0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
            0xf2, 0x00, 0x15, 0xad,
        ];
        assert_eq!(invite_digest(b"abc"), want);
        assert_ne!(invite_digest(b"abc"), invite_digest(b"abd"));
    }
}
