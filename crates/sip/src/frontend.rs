//! The local SIP front-end of a peer (sans-IO): registrar and proxy for the UAs on this
//! machine. REGISTER becomes a signed registration in the overlay; an INVITE to an AoR is
//! looked up in the overlay and carried by the secure call flow to the callee's peer, whose
//! front-end hands it to the registered UA; responses and in-dialog requests (ACK, BYE,
//! CANCEL) flow back the same way. SDP passes untouched unless a media anchor is set
//! ([`FrontEnd::with_media`]); then each phone is pointed at its own peer's relay.
//!
//! State lives as long as the call needs it and no longer: a call leaves the table when its
//! BYE is answered (either way) or 64·T1 after an unanswered BYE, when its INVITE ends with
//! a non-2xx (CANCEL's 487 included), or when no ACK follows its 2xx within 64·T1; a UA that
//! vanishes mid-call is caught by the session timer (RFC 4028) where the call set one up,
//! else by `call_idle`; an INVITE that never gets a final answer, by Timer C (408 one way,
//! CANCEL the other).
//! Transactions free their slots as soon as their work is done (see [`crate::txn`]). The
//! tables' default caps are memory budgets over the measured bytes per entry.

use crate::deadlines::Deadlines;
use crate::digest::{DigestAuth, Verdict};
use crate::media::{Anchoring, MediaAnchor, Origin};
use crate::msg::{self, MsgError, SipMessage, SipMethod, SipRequest, SipResponse};
use crate::overlay_api::{Overlay, OverlayCall, OverlayEvent, OverlayQuery};
use crate::registration::{Registration, SignedRegistration, normalize_aor};
use crate::txn::{
    Peer, SipTransmit, TOMBSTONE_BYTES, TRANSACTION_BYTES, Transactions, Transport, TxEvent, TxKey,
};
use overlay::secure::{CallFailure, SigVerifier, Signer};
use overlay::{NodeId, Time};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Memory the default caps give each of a front-end's tables (transactions in flight,
/// calls, tombstones of finished UDP transactions).
pub const TABLE_MEMORY: usize = 64 << 20;

/// Heap bytes one call takes in a front-end besides its INVITE transaction (the call entry
/// with its INVITE, kept to answer for the UA, and its indexes) with SIPp-sized messages:
/// about 5 000 measured on the heap by `tests/table_memory.rs`, which fails if a ringing
/// call grows past this plus [`TRANSACTION_BYTES`].
pub const CALL_BYTES: usize = 6144;

/// How long a registration whose signature checked out is taken as checked when it is
/// found again (a callee called again and again costs one Ed25519 verification per this,
/// not one per call).
const VERIFIED_FOR: Duration = Duration::from_secs(10);

/// Most registrations remembered as checked (the oldest is forgotten first).
const MAX_VERIFIED: usize = 1024;

/// How long a registration found in the overlay is used again for further calls to its AoR:
/// a callee called again and again costs one overlay lookup (a Chord lookup and a record
/// fetch over several peers) per this, not one per call. A callee that moved meanwhile is
/// looked up afresh at once: a call that the far side answers as not there (404, 410, 480)
/// or that the overlay cannot deliver forgets what was found.
const FOUND_FOR: Duration = Duration::from_secs(10);

/// Most found registrations remembered at once; beyond it new ones are not kept (each is a
/// few hundred bytes: the AoR, contact and signature).
const MAX_FOUND: usize = 4096;

/// Bytes a tombstone may keep to resend (a final response to a non-INVITE request, an ACK).
const TOMBSTONE_MESSAGE_BYTES: usize = 512;

/// Front-end settings.
#[derive(Clone, Debug)]
pub struct FrontEndConfig {
    /// The SIP domain of the AoRs we serve (`sip:user@DOMAIN`).
    pub domain: String,
    /// Our SIP address (Via sent-by for requests we forward to UAs).
    pub local: SocketAddr,
    /// Most transactions in flight at once; new requests beyond get 503.
    pub max_transactions: usize,
    /// Most finished UDP transactions kept absorbing retransmissions (beyond it the oldest
    /// goes; never refuses a request).
    pub max_tombstones: usize,
    /// Most calls at once; new INVITEs beyond get 503.
    pub max_calls: usize,
    /// Most local bindings (registered UAs).
    pub max_bindings: usize,
    /// Longest registration granted (a longer Expires is shortened).
    pub max_expires: Duration,
    /// Registration lifetime when the UA asks for none.
    pub default_expires: Duration,
    /// How long to wait for the overlay's answer to a store or find.
    pub overlay_timeout: Duration,
    /// A call with no traffic this long is forgotten (unless it set up a session timer,
    /// RFC 4028: then its session interval without a refresh).
    pub call_idle: Duration,
    /// Timer C (RFC 3261 §16.6 item 11, more than 3 minutes): an INVITE with no final
    /// answer this long after its last provisional is given up: 408 to the caller, CANCEL
    /// to the callee.
    pub timer_c: Duration,
    /// Maps driver time to Unix milliseconds (registration expiry is absolute).
    pub unix_offset_ms: u64,
    /// RFC 3261 T1/T2/T4.
    pub timers: sipx_sip::Timers,
    /// Digest authentication of local UAs (REGISTER and new INVITEs); `None`: anyone on
    /// the listening address may register and call.
    pub auth: Option<Arc<DigestAuth>>,
}

impl FrontEndConfig {
    /// Defaults for `domain` at `local`: each table capped at [`TABLE_MEMORY`] (14 563
    /// transactions, 10 922 calls, 87 381 tombstones).
    pub fn new(domain: &str, local: SocketAddr) -> Self {
        FrontEndConfig {
            domain: domain.to_ascii_lowercase(),
            local,
            max_transactions: TABLE_MEMORY / TRANSACTION_BYTES,
            max_tombstones: TABLE_MEMORY / (TOMBSTONE_BYTES + TOMBSTONE_MESSAGE_BYTES),
            max_calls: TABLE_MEMORY / CALL_BYTES,
            max_bindings: 4096,
            max_expires: Duration::from_secs(3600),
            default_expires: Duration::from_secs(3600),
            overlay_timeout: Duration::from_secs(8),
            call_idle: Duration::from_secs(3600),
            timer_c: Duration::from_secs(181),
            unix_offset_ms: 0,
            timers: sipx_sip::Timers::default(),
            auth: None,
        }
    }
}

/// Counters for tests, logs and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontEndStats {
    /// Requests answered 400 (malformed).
    pub bad_requests: u64,
    /// Messages that did not parse at all (dropped).
    pub unparseable: u64,
    /// Requests answered 503 (overloaded).
    pub overloaded: u64,
    /// REGISTERs accepted.
    pub registered: u64,
    /// INVITEs answered 404.
    pub not_found: u64,
    /// Calls handed to the overlay.
    pub calls_out: u64,
    /// Calls received from the overlay and forwarded to a UA.
    pub calls_in: u64,
    /// Requests answered 401 (no, wrong or stale credentials).
    pub auth_challenged: u64,
    /// REGISTERs answered 403 (authenticated user registering another user's AoR).
    pub auth_forbidden: u64,
}

/// How many entries each table of a front-end holds: what tests and soak runs watch to see
/// state end with the calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontEndTables {
    /// Transactions in flight.
    pub transactions: usize,
    /// Finished UDP transactions absorbing retransmissions.
    pub tombstones: usize,
    /// Calls.
    pub calls: usize,
    /// Client transactions toward local UAs, by call.
    pub call_transactions: usize,
    /// Overlay queries awaiting an answer.
    pub pending: usize,
    /// Registered UAs.
    pub bindings: usize,
    /// Registrations found in the overlay, kept for further calls to the same AoR.
    pub found: usize,
}

/// One line of a front-end's tables and counters, `key value` pairs: what `sip-frontends
/// --stats-every` and `demo --serve --stats-every` print and `scripts/soak-sip` reads.
pub fn stats_line(t: &FrontEndTables, s: &FrontEndStats) -> String {
    format!(
        "transactions {} tombstones {} calls {} call_transactions {} pending {} bindings {} found {} registered {} calls_out {} calls_in {} not_found {} overloaded {}",
        t.transactions,
        t.tombstones,
        t.calls,
        t.call_transactions,
        t.pending,
        t.bindings,
        t.found,
        s.registered,
        s.calls_out,
        s.calls_in,
        s.not_found,
        s.overloaded
    )
}

#[derive(Debug)]
struct Binding {
    contact: String,
    ua: Peer,
    expires: Time,
    /// Until when the overlay holds this binding's signed record (Unix ms; 0 while the
    /// first store is under way). A refresh that changes nothing is answered from here
    /// while the record has more than [`REPUBLISH_AHEAD`] left.
    published_until: u64,
}

/// How long before a binding's overlay record lapses the front-end publishes a fresh one
/// (when the phone refreshed the binding meanwhile without changing it); also the least a
/// record must have left for a refresh to be answered without a new store.
const REPUBLISH_AHEAD: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Pending {
    Store {
        key: TxKey,
        req: SipRequest,
        contact: Option<String>,
        expires_s: u64,
        /// The stored record's expiry (Unix ms).
        until: u64,
    },
    /// A fresh record for a binding its phone refreshed without changing it: no
    /// transaction waits for it.
    Republish {
        aor: String,
        contact: String,
        until: u64,
    },
    Find {
        key: TxKey,
        req: SipRequest,
        /// The AoR looked for (the overlay's answer must be its registration).
        aor: String,
    },
}

/// A local UA's in-dialog request passed to the far end, waiting for its response.
#[derive(Clone, Debug)]
struct Waiting {
    cseq: u32,
    method: SipMethod,
    key: TxKey,
    /// What the UA is told if the far end never answers (RFC 3261 §16.8: a proxy whose
    /// next hop times out answers 408), built when the request came.
    timeout: Option<SipResponse>,
}

#[derive(Debug)]
struct Call {
    ocall: OverlayCall,
    /// The local UA of this call (caller's UA on the calling side, callee's on the other).
    ua: Peer,
    /// Calling side: the INVITE's server transaction.
    invite_server: Option<TxKey>,
    /// Called side: the INVITE as we forwarded it (for CANCEL) and its client transaction.
    invite_client: Option<(TxKey, SipRequest)>,
    /// The INVITE as it arrived (to answer on the UA's behalf).
    invite: SipRequest,
    /// Local in-dialog requests waiting for the far end's response.
    waiting: Vec<Waiting>,
    /// Client transactions toward the local UA still open (their entries in `client_of`).
    clients: Vec<TxKey>,
    /// Where the call stands, for how long it may stay.
    phase: Phase,
    /// The session interval (RFC 4028) its last refresh set, if any.
    session: Option<Duration>,
}

impl Call {
    /// A call whose INVITE has just been passed on, no transaction of it tracked yet.
    fn new(ocall: OverlayCall, ua: Peer, invite: SipRequest) -> Self {
        Call {
            ocall,
            ua,
            invite_server: None,
            invite_client: None,
            invite,
            waiting: Vec::new(),
            clients: Vec::new(),
            phase: Phase::Setup,
            session: None,
        }
    }
}

/// How far a call has come, which decides its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// INVITE sent, no final answer yet: Timer C after its last traffic.
    Setup,
    /// 2xx passed, waiting for the ACK: 64·T1 after the 2xx.
    Answered,
    /// ACKed: its session interval after the ACK or the last refresh, else `call_idle`
    /// after its last traffic.
    Confirmed,
    /// A BYE passed, either way: over when it is answered, or 64·T1 after it if it never is
    /// (RFC 3261 §15.1.1: a BYE that times out ends the dialog too).
    Ending,
}

/// The registrar + proxy core of one peer's front-end.
pub struct FrontEnd {
    cfg: FrontEndConfig,
    node: NodeId,
    signer: Box<dyn Signer>,
    verifier: Arc<dyn SigVerifier>,
    tx: Transactions,
    bindings: BTreeMap<String, Binding>,
    /// When each binding lapses (by AoR).
    binding_expiry: Deadlines<String>,
    /// When each binding's overlay record must be published again (by AoR): refreshes the
    /// phone sent meanwhile were answered locally.
    republish: Deadlines<String>,
    pending: BTreeMap<OverlayQuery, Pending>,
    /// When the overlay's answer to each pending query is overdue.
    pending_expiry: Deadlines<OverlayQuery>,
    /// Registrations found in the overlay and checked, by AoR, used again for
    /// [`FOUND_FOR`].
    found: BTreeMap<String, SignedRegistration>,
    /// When each found registration is to be looked up afresh.
    found_expiry: Deadlines<String>,
    calls: BTreeMap<String, Call>,
    /// When each call (by Call-ID) has been idle too long: its last traffic + `call_idle`.
    call_expiry: Deadlines<String>,
    by_ocall: BTreeMap<OverlayCall, String>,
    /// Client transactions we opened toward a local UA → the call they belong to.
    client_of: BTreeMap<TxKey, String>,
    /// Overlay calls we finished with, to tell the overlay on the next drain.
    ended: Vec<OverlayCall>,
    /// Registrations found lately whose signatures checked out: digest of the signed bytes
    /// and signature → when.
    verified: BTreeMap<[u8; 32], Time>,
    /// The keys of `verified`, oldest first.
    verified_order: VecDeque<[u8; 32]>,
    seq: u64,
    next: u64,
    stats: FrontEndStats,
    /// Media anchoring of the SDP carried (none: SDP passes untouched).
    media: Anchoring,
}

fn status_for(reason: CallFailure) -> (u16, &'static str) {
    match reason {
        CallFailure::TimedOut => (408, "Request Timeout"),
        CallFailure::NoRoute => (480, "Temporarily Unavailable"),
        CallFailure::Overloaded => (503, "Service Unavailable"),
        CallFailure::Tampered => (502, "Bad Gateway"),
    }
}

impl FrontEnd {
    /// A front-end for peer `node`, signing registrations with `signer` and checking those
    /// it finds with `verifier`.
    pub fn new(
        cfg: FrontEndConfig,
        node: NodeId,
        signer: Box<dyn Signer>,
        verifier: Arc<dyn SigVerifier>,
    ) -> Self {
        let tx = Transactions::new(cfg.timers, cfg.max_transactions, cfg.max_tombstones);
        FrontEnd {
            cfg,
            node,
            signer,
            verifier,
            tx,
            bindings: BTreeMap::new(),
            binding_expiry: Deadlines::default(),
            republish: Deadlines::default(),
            pending: BTreeMap::new(),
            pending_expiry: Deadlines::default(),
            found: BTreeMap::new(),
            found_expiry: Deadlines::default(),
            calls: BTreeMap::new(),
            call_expiry: Deadlines::default(),
            by_ocall: BTreeMap::new(),
            client_of: BTreeMap::new(),
            ended: Vec::new(),
            verified: BTreeMap::new(),
            verified_order: VecDeque::new(),
            seq: 0,
            next: 1,
            stats: FrontEndStats::default(),
            media: Anchoring::default(),
        }
    }

    /// Anchor the media of the calls carried with `anchor` (see [`crate::media`]).
    pub fn with_media(mut self, anchor: Box<dyn MediaAnchor>) -> Self {
        self.media.set(anchor);
        self
    }

    /// SDP bodies passed on unchanged because the media anchor refused them.
    pub fn media_refused(&self) -> u64 {
        self.media.refused
    }

    /// Counters.
    pub fn stats(&self) -> &FrontEndStats {
        &self.stats
    }

    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The sizes of the front-end's tables.
    pub fn tables(&self) -> FrontEndTables {
        FrontEndTables {
            transactions: self.tx.len(),
            tombstones: self.tx.tombstones(),
            calls: self.calls.len(),
            call_transactions: self.client_of.len(),
            pending: self.pending.len(),
            bindings: self.bindings.len(),
            found: self.found.len(),
        }
    }

    /// The address phones reach this front-end at.
    pub fn local(&self) -> SocketAddr {
        self.cfg.local
    }

    /// The SIP domain served.
    pub fn domain(&self) -> &str {
        &self.cfg.domain
    }

    fn unix_ms(&self, now: Time) -> u64 {
        self.cfg.unix_offset_ms + now.as_micros() / 1000
    }

    fn token(&mut self) -> String {
        self.next += 1;
        format!("{:x}-{:x}", self.node.0, self.next)
    }

    fn via(&mut self, transport: Transport) -> String {
        let t = self.token();
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK-p2p-{t}",
            transport.via_name(),
            self.cfg.local
        )
    }

    /// Our Record-Route: keeps the UAs' in-dialog requests coming through us, hence
    /// through the overlay, instead of straight to the other UA's Contact.
    fn record_route(&self, transport: Transport) -> String {
        let t = match transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        format!("<sip:{};lr;transport={t}>", self.cfg.local)
    }

    // ---------- input from the UA side ----------

    /// A UDP datagram from a UA.
    pub fn handle_datagram(
        &mut self,
        now: Time,
        from: SocketAddr,
        bytes: &[u8],
        ov: &mut dyn Overlay,
    ) {
        let peer = Peer {
            transport: Transport::Udp,
            addr: from,
        };
        match msg::parse_datagram(bytes) {
            Ok(m) => self.handle_message(now, peer, m, ov),
            Err(_) => self.stats.unparseable += 1,
        }
    }

    /// A message framed from a UA's stream (or datagram).
    pub fn handle_message(&mut self, now: Time, from: Peer, m: SipMessage, ov: &mut dyn Overlay) {
        if let SipMessage::Request(req) = &m {
            if let Err(e) = req.validate() {
                self.stats.bad_requests += 1;
                let reason = match e {
                    MsgError::Header(h) => format!("Bad {h}"),
                    _ => "Bad Request".into(),
                };
                if *req.method() != SipMethod::Ack
                    && let Ok(r) = req.response(400, &reason, None)
                {
                    self.tx.send_stateless(from, r.to_bytes());
                }
                return;
            }
            if *req.method() != SipMethod::Ack && self.tx.is_full() {
                self.stats.overloaded += 1;
                if let Ok(r) = req.response(503, "Service Unavailable", None) {
                    self.tx.send_stateless(from, r.to_bytes());
                }
                return;
            }
        }
        self.tx.receive(now, from, m);
        self.drain_tx(now, ov);
    }

    fn drain_tx(&mut self, now: Time, ov: &mut dyn Overlay) {
        while let Some(ev) = self.tx.poll_event() {
            match ev {
                TxEvent::Request { key, req, from } if *req.method() == SipMethod::Register => {
                    self.on_register(now, key, req, from, ov)
                }
                TxEvent::Request { key, req, .. } => self.on_request(now, key, req, ov),
                TxEvent::Response { key, resp } => self.on_ua_response(now, key, resp, ov),
                TxEvent::Unmatched { msg, .. } => self.on_unmatched(now, msg, ov),
                TxEvent::Timeout { key } => self.on_client_timeout(now, key, ov),
            }
        }
        for c in self.ended.drain(..) {
            ov.end_call(now, c);
        }
    }

    fn reply(&mut self, now: Time, key: &TxKey, req: &SipRequest, code: u16, reason: &str) {
        self.reply_with(now, key, req, code, reason, &[]);
    }

    /// [`reply`](Self::reply) with extra headers (name, value) after the copied ones.
    fn reply_with(
        &mut self,
        now: Time,
        key: &TxKey,
        req: &SipRequest,
        code: u16,
        reason: &str,
        headers: &[(&str, String)],
    ) {
        let tag = self.token();
        if let Ok(mut r) = req.response(code, reason, Some(&tag)) {
            for (name, value) in headers {
                let _ = r.push_header(name, value);
            }
            self.tx.send_response(now, key, r);
        }
    }

    /// A new request other than a REGISTER from a local UA or the overlay.
    fn on_request(&mut self, now: Time, key: TxKey, req: SipRequest, ov: &mut dyn Overlay) {
        let call_id = req.call_id().unwrap_or_default();
        match req.method() {
            SipMethod::Invite if req.to_tag().is_none() => {
                if self.calls.contains_key(&call_id) {
                    self.reply(now, &key, &req, 482, "Loop Detected");
                } else if self.authorize(now, &key, &req) {
                    self.on_invite(now, key, req, ov);
                }
            }
            SipMethod::Options if !self.calls.contains_key(&call_id) => {
                self.reply(now, &key, &req, 200, "OK")
            }
            _ => self.on_local_in_dialog(now, key, req, ov),
        }
    }

    /// Digest authentication (RFC 3261 §22) of a REGISTER or new INVITE from a local UA.
    /// True: go on. False: answered here (401 challenge, 403 for a REGISTER of another
    /// user's AoR, 400 for a garbled Authorization).
    fn authorize(&mut self, now: Time, key: &TxKey, req: &SipRequest) -> bool {
        let Some(auth) = self.cfg.auth.clone() else {
            return true;
        };
        let method = req.method().to_string();
        let header = req.header("Authorization");
        match auth.check(now, &method, header.as_deref()) {
            Verdict::Accept(user) => {
                if *req.method() == SipMethod::Register {
                    let own = normalize_aor(&user, &self.cfg.domain);
                    let target = req.to_user().map(|u| normalize_aor(&u, &self.cfg.domain));
                    if target.as_deref() != Some(own.as_str()) {
                        self.stats.auth_forbidden += 1;
                        self.reply(now, key, req, 403, "Forbidden");
                        return false;
                    }
                }
                true
            }
            Verdict::Challenge { stale } => {
                self.stats.auth_challenged += 1;
                let challenges: Vec<_> = auth
                    .challenges(now, stale)
                    .into_iter()
                    .map(|c| ("WWW-Authenticate", c))
                    .collect();
                self.reply_with(now, key, req, 401, "Unauthorized", &challenges);
                false
            }
            Verdict::BadRequest(why) => {
                self.stats.bad_requests += 1;
                self.reply(now, key, req, 400, why);
                false
            }
        }
    }

    fn on_register(
        &mut self,
        now: Time,
        key: TxKey,
        req: SipRequest,
        from: Peer,
        ov: &mut dyn Overlay,
    ) {
        if !self.authorize(now, &key, &req) {
            return;
        }
        let Some(user) = req.to_user() else {
            self.reply(now, &key, &req, 400, "Missing AoR user");
            return;
        };
        let aor = normalize_aor(&user, &self.cfg.domain);
        let asked = req.expires().map(u64::from);
        let contact = req.contact_uri();
        if contact.is_none() && !req.contact_is_star() {
            // A query: answer with the current binding.
            let binding: Vec<_> = self
                .bindings
                .get(&aor)
                .map(|b| {
                    let left = b.expires.saturating_since(now).as_secs();
                    ("Contact", format!("<{}>;expires={left}", b.contact))
                })
                .into_iter()
                .collect();
            self.reply_with(now, &key, &req, 200, "OK", &binding);
            return;
        }
        let expires_s = if req.contact_is_star() {
            0
        } else {
            asked
                .unwrap_or(self.cfg.default_expires.as_secs())
                .min(self.cfg.max_expires.as_secs())
        };
        if expires_s == 0 {
            self.unbind(&aor);
        } else {
            if !self.bindings.contains_key(&aor) && self.bindings.len() >= self.cfg.max_bindings {
                self.stats.overloaded += 1;
                self.reply(now, &key, &req, 503, "Too Many Registrations");
                return;
            }
            let contact = contact.clone().unwrap_or_default();
            let ua = contact_peer(&contact, from);
            if self.refresh_locally(now, &aor, &contact, ua, expires_s) {
                self.registered(now, &key, &req, Some(&contact), expires_s);
                return;
            }
            let expires = now + Duration::from_secs(expires_s);
            self.binding_expiry.set(aor.clone(), expires);
            self.republish.remove(&aor);
            self.bindings.insert(
                aor.clone(),
                Binding {
                    contact,
                    ua,
                    expires,
                    published_until: 0,
                },
            );
        }
        let unix = self.unix_ms(now);
        self.seq = (self.seq + 1).max(unix);
        let until = if expires_s == 0 {
            0
        } else {
            unix + expires_s * 1000
        };
        let record = Registration {
            aor,
            node: self.node,
            contact: contact.clone().unwrap_or_default(),
            expires_unix_ms: until,
            seq: self.seq,
        };
        let signed = record.sign(self.signer.as_ref());
        let q = ov.store_registration(now, signed);
        self.await_overlay(
            now,
            q,
            Pending::Store {
                key,
                req,
                contact,
                expires_s,
                until,
            },
        );
    }

    fn on_invite(&mut self, now: Time, key: TxKey, req: SipRequest, ov: &mut dyn Overlay) {
        if self.calls.len() >= self.cfg.max_calls {
            self.stats.overloaded += 1;
            self.reply(now, &key, &req, 503, "Service Unavailable");
            return;
        }
        let Some(aor) = self.callee_aor(&req) else {
            self.stats.not_found += 1;
            self.reply(now, &key, &req, 404, "Not Found");
            return;
        };
        if let Ok(r) = req.response(100, "Trying", None) {
            self.tx.send_response(now, &key, r);
        }
        let unix = self.unix_ms(now);
        if let Some(reg) = self.found.get(&aor).filter(|r| r.is_live(unix)).cloned() {
            self.place_call(now, key, req, &reg, ov);
            return;
        }
        let q = ov.find_registration(now, &aor);
        self.await_overlay(now, q, Pending::Find { key, req, aor });
    }

    /// Keep `reg`, found for `aor`, for further calls (up to [`MAX_FOUND`] AoRs).
    fn remember_found(&mut self, now: Time, aor: String, reg: &SignedRegistration) {
        if self.found.len() >= MAX_FOUND && !self.found.contains_key(&aor) {
            return;
        }
        self.found_expiry.set(aor.clone(), now + FOUND_FOR);
        self.found.insert(aor, reg.clone());
    }

    /// Look the callee of `invite` up afresh next time: the registration found for it led
    /// nowhere.
    fn forget_found(&mut self, invite: &SipRequest) {
        if let Some(aor) = self.callee_aor(invite) {
            self.found_expiry.remove(&aor);
            self.found.remove(&aor);
        }
    }

    /// The AoR an INVITE calls: its Request-URI's user (else the To user) in our domain.
    fn callee_aor(&self, invite: &SipRequest) -> Option<String> {
        let user = invite.uri_user().or_else(|| invite.to_user())?;
        Some(normalize_aor(&user, &self.cfg.domain))
    }

    /// Wait up to `overlay_timeout` for the overlay's answer to `q`.
    fn await_overlay(&mut self, now: Time, q: OverlayQuery, p: Pending) {
        self.pending_expiry.set(q, now + self.cfg.overlay_timeout);
        self.pending.insert(q, p);
    }

    /// The overlay's answer to `q` came: stop waiting for it.
    fn take_pending(&mut self, q: OverlayQuery) -> Option<Pending> {
        self.pending_expiry.remove(&q);
        self.pending.remove(&q)
    }

    fn unbind(&mut self, aor: &str) {
        self.binding_expiry.remove(&aor.to_owned());
        self.republish.remove(&aor.to_owned());
        self.bindings.remove(aor);
    }

    /// A refresh of `aor`'s binding that changes neither its contact nor where the phone
    /// is: the binding's overlay record, stored when it last changed, still names the same
    /// contact, so the refresh is answered here (as a registrar answers from its location
    /// table) and a fresh record is published [`REPUBLISH_AHEAD`] before the stored one
    /// lapses. `false` when the refresh must go to the overlay.
    fn refresh_locally(
        &mut self,
        now: Time,
        aor: &str,
        contact: &str,
        ua: Peer,
        expires_s: u64,
    ) -> bool {
        let unix = self.unix_ms(now);
        let ahead = u64::try_from(REPUBLISH_AHEAD.as_millis()).unwrap_or(u64::MAX);
        let Some(b) = self.bindings.get_mut(aor) else {
            return false;
        };
        if b.contact != contact || b.ua != ua || b.published_until <= unix.saturating_add(ahead) {
            return false;
        }
        let expires = now + Duration::from_secs(expires_s);
        b.expires = expires;
        let lapses = b.published_until;
        self.binding_expiry.set(aor.to_owned(), expires);
        if lapses < unix.saturating_add(expires_s.saturating_mul(1000)) {
            let at = now + Duration::from_millis(lapses - unix - ahead);
            self.republish.set(aor.to_owned(), at);
        }
        true
    }

    /// Publish a fresh record for `aor`'s binding, still alive past its stored record.
    fn republish(&mut self, now: Time, aor: String, ov: &mut dyn Overlay) {
        let unix = self.unix_ms(now);
        let Some(b) = self.bindings.get(&aor) else {
            return;
        };
        let until = unix + b.expires.saturating_since(now).as_millis() as u64;
        if until <= b.published_until {
            return;
        }
        let contact = b.contact.clone();
        self.seq = (self.seq + 1).max(unix);
        let record = Registration {
            aor: aor.clone(),
            node: self.node,
            contact: contact.clone(),
            expires_unix_ms: until,
            seq: self.seq,
        };
        let q = ov.store_registration(now, record.sign(self.signer.as_ref()));
        self.await_overlay(
            now,
            q,
            Pending::Republish {
                aor,
                contact,
                until,
            },
        );
    }

    /// The answer to a REGISTER the binding table accepted.
    fn registered(
        &mut self,
        now: Time,
        key: &TxKey,
        req: &SipRequest,
        contact: Option<&str>,
        expires_s: u64,
    ) {
        self.stats.registered += 1;
        let mut headers = Vec::with_capacity(2);
        if let Some(c) = contact
            && expires_s > 0
        {
            headers.push(("Contact", format!("<{c}>;expires={expires_s}")));
        }
        headers.push(("Expires", expires_s.to_string()));
        self.reply_with(now, key, req, 200, "OK", &headers);
    }

    /// An in-dialog request from a local UA (ACK comes through `on_unmatched`).
    fn on_local_in_dialog(&mut self, now: Time, key: TxKey, req: SipRequest, ov: &mut dyn Overlay) {
        let call_id = req.call_id().unwrap_or_default();
        let Some(call) = self.live_call(now, &call_id) else {
            self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let ocall = call.ocall;
        if *req.method() == SipMethod::Cancel {
            // CANCEL is hop by hop: answer it here, then cancel on the far side.
            if let Ok(r) = req.response(200, "OK", None) {
                self.tx.send_response(now, &key, r);
            }
            ov.send_in_dialog(now, ocall, req.to_bytes());
            return;
        }
        if let Some((cseq, method)) = req.cseq()
            && call.waiting.len() < 16
        {
            call.waiting.push(Waiting {
                cseq,
                method,
                key,
                timeout: req.response(408, "Request Timeout", None).ok(),
            });
        }
        if *req.method() == SipMethod::Bye {
            self.ending(now, &call_id);
        }
        let mut fwd = req;
        if !fwd.decrement_max_forwards() {
            return;
        }
        self.media.request(now, Origin::Phone, &mut fwd);
        ov.send_in_dialog(now, ocall, fwd.to_bytes());
    }

    fn on_unmatched(&mut self, now: Time, m: SipMessage, ov: &mut dyn Overlay) {
        let call_id = m.call_id().unwrap_or_default();
        let Some(call) = self.live_call(now, &call_id) else {
            return;
        };
        let ocall = call.ocall;
        match m {
            // ACK for a 2xx: end to end, no transaction.
            SipMessage::Request(mut req) if *req.method() == SipMethod::Ack => {
                self.media.request(now, Origin::Phone, &mut req);
                ov.send_in_dialog(now, ocall, req.to_bytes());
                self.acked(now, &call_id);
            }
            // A 2xx to the INVITE retransmitted by the called UA (its client transaction
            // ended with the first one).
            SipMessage::Response(mut resp)
                if call.invite_client.is_some()
                    && resp.code() / 100 == 2
                    && resp.cseq().is_some_and(|(_, m)| m == SipMethod::Invite) =>
            {
                resp.pop_via();
                self.media.response(now, Origin::Phone, &mut resp);
                ov.send_in_dialog(now, ocall, resp.to_bytes());
            }
            _ => {}
        }
    }

    /// A local UA answered a request we forwarded to it: pass it to the far end.
    fn on_ua_response(
        &mut self,
        now: Time,
        key: TxKey,
        mut resp: SipResponse,
        ov: &mut dyn Overlay,
    ) {
        let Some(call_id) = self.client_of.get(&key).cloned() else {
            return;
        };
        let Some(call) = self.live_call(now, &call_id) else {
            return;
        };
        let ocall = call.ocall;
        let code = resp.code();
        let method = resp.cseq().map(|c| c.1);
        resp.pop_via();
        self.media.response(now, Origin::Phone, &mut resp);
        ov.send_in_dialog(now, ocall, resp.to_bytes());
        if code >= 200 {
            self.client_of.remove(&key);
            if let Some(call) = self.calls.get_mut(&call_id) {
                call.clients.retain(|k| *k != key);
            }
            match method {
                Some(SipMethod::Invite) if code >= 300 => self.end_call(now, &call_id),
                Some(SipMethod::Bye) => self.end_call(now, &call_id),
                Some(m) if code < 300 => self.answered(now, &call_id, &m, &resp),
                _ => {}
            }
        }
    }

    fn on_client_timeout(&mut self, now: Time, key: TxKey, ov: &mut dyn Overlay) {
        let Some(call_id) = self.client_of.remove(&key) else {
            return;
        };
        let Some(call) = self.live_call(now, &call_id) else {
            return;
        };
        call.clients.retain(|k| *k != key);
        // Answer the far end for the UA that did not.
        let is_invite = call.invite_client.as_ref().is_some_and(|(k, _)| *k == key);
        if is_invite && let Ok(r) = call.invite.response(408, "Request Timeout", None) {
            ov.send_in_dialog(now, call.ocall, r.to_bytes());
            self.end_call(now, &call_id);
        }
    }

    /// Call `call_id`, its idle deadline pushed on: any message of a call in set-up or
    /// confirmed without a session interval shows it is still alive.
    fn live_call(&mut self, now: Time, call_id: &str) -> Option<&mut Call> {
        let call = self.calls.get_mut(call_id)?;
        let keep = match call.phase {
            Phase::Setup => Some(self.cfg.timer_c),
            Phase::Confirmed if call.session.is_none() => Some(self.cfg.call_idle),
            _ => None,
        };
        if let Some(keep) = keep {
            self.call_expiry.set(call_id.to_owned(), now + keep);
        }
        Some(call)
    }

    /// Timer C fired on call `call_id` still in set-up: answer the caller's INVITE 408 and
    /// cancel the callee's, on whichever side of the overlay this front-end is, then forget
    /// the call.
    fn give_up_setup(&mut self, now: Time, call_id: &str, ov: &mut dyn Overlay) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        tracing::info!(call = %call_id, "no final answer within Timer C: call given up");
        let (ocall, ua, invite) = (call.ocall, call.ua, call.invite.clone());
        let server = call.invite_server.clone();
        let client = call.invite_client.as_ref().map(|(_, inv)| inv.clone());
        if let Some(k) = server {
            // Calling side: our phone hears 408, the far end a CANCEL.
            self.reply(now, &k, &invite, 408, "Request Timeout");
            if let Some(c) = msg::cancel_for(&invite) {
                ov.send_in_dialog(now, ocall, c.to_bytes());
            }
        } else {
            // Called side: our phone gets a CANCEL, the far end a 408.
            if let Some(inv) = client
                && let Some(c) = msg::cancel_for(&inv)
            {
                let _ = self.tx.send_request(now, ua, c);
            }
            if let Ok(r) = invite.response(408, "Request Timeout", None) {
                ov.send_in_dialog(now, ocall, r.to_bytes());
            }
        }
        self.end_call(now, call_id);
    }

    /// Client transaction `k` toward the local UA belongs to call `call_id`.
    fn track_client(&mut self, call_id: &str, k: TxKey) {
        if let Some(call) = self.calls.get_mut(call_id) {
            self.client_of.insert(k.clone(), call_id.to_owned());
            call.clients.push(k);
        }
    }

    /// A 2xx to `method` passed on call `call_id`: the call's first INVITE now waits for its
    /// ACK (64·T1); a refresh (INVITE or UPDATE) carrying Session-Expires restarts the
    /// session interval (RFC 4028).
    fn answered(&mut self, now: Time, call_id: &str, method: &SipMethod, resp: &SipResponse) {
        if !matches!(method, SipMethod::Invite | SipMethod::Update) {
            return;
        }
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.phase == Phase::Ending {
            return;
        }
        if let Some(interval) = resp.session_expires() {
            call.session = Some(interval);
        }
        let deadline = if call.phase == Phase::Confirmed {
            call.session.map(|s| now + s)
        } else {
            call.phase = Phase::Answered;
            Some(now + self.cfg.timers.t1 * 64)
        };
        if let Some(at) = deadline {
            self.call_expiry.set(call_id.to_owned(), at);
        }
    }

    /// The ACK to call `call_id`'s 2xx passed: the call stays its session interval, else
    /// `call_idle`.
    fn acked(&mut self, now: Time, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.phase != Phase::Answered {
            return;
        }
        call.phase = Phase::Confirmed;
        let keep = call.session.unwrap_or(self.cfg.call_idle);
        self.call_expiry.set(call_id.to_owned(), now + keep);
    }

    /// A BYE passed on call `call_id`: it ends when the BYE is answered, or 64·T1 from now.
    fn ending(&mut self, now: Time, call_id: &str) {
        if let Some(call) = self.calls.get_mut(call_id) {
            call.phase = Phase::Ending;
            self.call_expiry
                .set(call_id.to_owned(), now + self.cfg.timers.t1 * 64);
        }
    }

    fn end_call(&mut self, now: Time, call_id: &str) {
        self.media.end(call_id);
        if let Some(c) = self.calls.remove(call_id) {
            self.call_expiry.remove(&call_id.to_owned());
            self.by_ocall.remove(&c.ocall);
            self.ended.push(c.ocall);
            for w in c.waiting {
                // Still open: the far end never answered (its BYE or re-INVITE lost, or
                // the far peer gone); the UA hears 408 rather than waiting for ever.
                match w.timeout {
                    Some(r) if self.tx.is_open(&w.key) => self.tx.send_response(now, &w.key, r),
                    _ => self.tx.abandon(&w.key),
                }
            }
            for k in &c.clients {
                self.client_of.remove(k);
            }
        }
    }

    // ---------- input from the overlay ----------

    /// Feed an overlay event.
    pub fn handle_overlay_event(&mut self, now: Time, ev: OverlayEvent, ov: &mut dyn Overlay) {
        match ev {
            OverlayEvent::Stored { query, result } => self.on_stored(now, query, result),
            OverlayEvent::Found {
                query,
                registration,
            } => self.on_found(now, query, registration, ov),
            OverlayEvent::IncomingCall { call, invite, .. } => {
                self.on_incoming(now, call, &invite, ov)
            }
            OverlayEvent::InDialog { call, sip } => self.on_remote(now, call, &sip),
            OverlayEvent::CallFailed { call, reason } => {
                if let Some(id) = self.by_ocall.get(&call).cloned()
                    && let Some(c) = self.calls.get(&id)
                    && let Some(k) = c.invite_server.clone()
                {
                    let (code, text) = status_for(reason);
                    let req = c.invite.clone();
                    self.forget_found(&req);
                    tracing::info!(call_id = %id, callee = req.uri_user().unwrap_or_default(), ?reason, code, "call failed in the overlay; the caller is answered {code} {text}");
                    self.reply(now, &k, &req, code, text);
                    self.end_call(now, &id);
                }
            }
        }
        self.drain_tx(now, ov);
    }

    fn on_stored(&mut self, now: Time, query: OverlayQuery, result: Result<(), String>) {
        let (key, req, contact, expires_s, until) = match self.take_pending(query) {
            Some(Pending::Store {
                key,
                req,
                contact,
                expires_s,
                until,
            }) => (key, req, contact, expires_s, until),
            Some(Pending::Republish {
                aor,
                contact,
                until,
            }) => {
                self.republished(&aor, &contact, until, result);
                return;
            }
            _ => return,
        };
        match result {
            Ok(()) => {
                if let Some(c) = &contact
                    && let Some(user) = req.to_user()
                    && let Some(b) = self
                        .bindings
                        .get_mut(&normalize_aor(&user, &self.cfg.domain))
                    && b.contact == *c
                {
                    b.published_until = b.published_until.max(until);
                }
                self.registered(now, &key, &req, contact.as_deref(), expires_s);
            }
            Err(why) => {
                if let Some(user) = req.to_user() {
                    let aor = normalize_aor(&user, &self.cfg.domain);
                    self.unbind(&aor);
                }
                tracing::info!("registration refused by the overlay: {why}");
                self.reply(now, &key, &req, 403, "Forbidden");
            }
        }
    }

    /// The overlay's answer to a [`Pending::Republish`]: the binding's record now lasts
    /// until `until`, or (refused) the binding is dropped, as a refused REGISTER's is.
    fn republished(&mut self, aor: &str, contact: &str, until: u64, result: Result<(), String>) {
        let Some(b) = self.bindings.get_mut(aor) else {
            return;
        };
        if b.contact != contact {
            return;
        }
        match result {
            Ok(()) => b.published_until = b.published_until.max(until),
            Err(why) => {
                tracing::warn!(%aor, "the overlay refused a binding's fresh record: {why}");
                self.unbind(aor);
            }
        }
    }

    fn on_found(
        &mut self,
        now: Time,
        query: OverlayQuery,
        reg: Option<SignedRegistration>,
        ov: &mut dyn Overlay,
    ) {
        let Some(Pending::Find { key, req, aor }) = self.take_pending(query) else {
            return;
        };
        let unix = self.unix_ms(now);
        let reg = reg.filter(|r| r.record.aor == aor && r.is_live(unix) && self.verify(now, r));
        let Some(reg) = reg else {
            self.stats.not_found += 1;
            self.reply(now, &key, &req, 404, "Not Found");
            return;
        };
        self.remember_found(now, aor, &reg);
        self.place_call(now, key, req, &reg, ov);
    }

    /// Pass `req` (server transaction `key`) on over the overlay to the peer `reg` names.
    fn place_call(
        &mut self,
        now: Time,
        key: TxKey,
        req: SipRequest,
        reg: &SignedRegistration,
        ov: &mut dyn Overlay,
    ) {
        let call_id = req.call_id().unwrap_or_default();
        if self.calls.len() >= self.cfg.max_calls || self.calls.contains_key(&call_id) {
            self.stats.overloaded += 1;
            self.reply(now, &key, &req, 503, "Service Unavailable");
            return;
        }
        let mut fwd = req.clone();
        if !fwd.decrement_max_forwards() {
            self.reply(now, &key, &req, 483, "Too Many Hops");
            return;
        }
        let Some(ua) = self.tx.peer_of(&key) else {
            return;
        };
        let _ = fwd.push_header_front("Record-Route", &self.record_route(ua.transport));
        self.media.request(now, Origin::Phone, &mut fwd);
        self.stats.calls_out += 1;
        let ocall = ov.send_call(now, reg.record.node, fwd.to_bytes());
        self.track_call(
            now,
            call_id,
            Call {
                invite_server: Some(key),
                ..Call::new(ocall, ua, req)
            },
        );
    }

    /// Does `reg`'s signature check out? Remembered for [`VERIFIED_FOR`].
    fn verify(&mut self, now: Time, reg: &SignedRegistration) -> bool {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let signed = reg.record.signed_bytes();
        ctx.update(&(signed.len() as u64).to_be_bytes());
        ctx.update(&signed);
        ctx.update(&reg.sig);
        let mut digest = [0; 32];
        digest.copy_from_slice(ctx.finish().as_ref());
        if self
            .verified
            .get(&digest)
            .is_some_and(|at| now < *at + VERIFIED_FOR)
        {
            return true;
        }
        if reg.verify(self.verifier.as_ref()).is_err() {
            return false;
        }
        if self.verified.insert(digest, now).is_none() {
            self.verified_order.push_back(digest);
        }
        while self.verified_order.len() > MAX_VERIFIED {
            if let Some(old) = self.verified_order.pop_front() {
                self.verified.remove(&old);
            }
        }
        true
    }

    /// Keep `call` under its Call-ID and its overlay call until it ends, or Timer C gives up
    /// its set-up.
    fn track_call(&mut self, now: Time, call_id: String, call: Call) {
        self.by_ocall.insert(call.ocall, call_id.clone());
        self.call_expiry
            .set(call_id.clone(), now + self.cfg.timer_c);
        self.calls.insert(call_id, call);
    }

    /// A call from the overlay: forward its INVITE to the registered UA, or refuse it
    /// (and tell the overlay the call is over, so nothing is kept for it).
    fn on_incoming(&mut self, now: Time, ocall: OverlayCall, invite: &[u8], ov: &mut dyn Overlay) {
        let Ok(SipMessage::Request(req)) = msg::parse_frame(invite) else {
            self.ended.push(ocall);
            return;
        };
        if let Err((code, text)) = self.accept_incoming(now, ocall, &req) {
            if let Ok(r) = req.response(code, text, None) {
                ov.send_in_dialog(now, ocall, r.to_bytes());
            }
            self.ended.push(ocall);
        }
    }

    /// Open the call toward the local UA, or say how to refuse it.
    fn accept_incoming(
        &mut self,
        now: Time,
        ocall: OverlayCall,
        req: &SipRequest,
    ) -> Result<(), (u16, &'static str)> {
        if req.validate().is_err() || *req.method() != SipMethod::Invite {
            return Err((400, "Bad Request"));
        }
        let call_id = req.call_id().unwrap_or_default();
        if self.calls.len() >= self.cfg.max_calls || self.tx.is_full() {
            self.stats.overloaded += 1;
            return Err((503, "Service Unavailable"));
        }
        if self.calls.contains_key(&call_id) {
            return Err((482, "Loop Detected"));
        }
        let aor = self.callee_aor(req).unwrap_or_default();
        let Some(b) = self.bindings.get(&aor).filter(|b| b.expires > now) else {
            return Err((480, "Temporarily Unavailable"));
        };
        let ua = b.ua;
        let contact = b.contact.clone();
        let mut fwd = req.clone();
        let via = self.via(ua.transport);
        let rr = self.record_route(ua.transport);
        if fwd.set_uri(&contact).is_err()
            || fwd.push_header_front("Record-Route", &rr).is_err()
            || fwd.push_via(&via).is_err()
        {
            return Err((500, "Server Internal Error"));
        }
        self.media.request(now, Origin::FarEnd, &mut fwd);
        let Some(key) = self.tx.send_request(now, ua, fwd.clone()) else {
            return Err((500, "Server Internal Error"));
        };
        self.stats.calls_in += 1;
        self.client_of.insert(key.clone(), call_id.clone());
        self.track_call(
            now,
            call_id,
            Call {
                invite_client: Some((key.clone(), fwd)),
                clients: vec![key],
                ..Call::new(ocall, ua, req.clone())
            },
        );
        Ok(())
    }

    /// A SIP message from the far end of a call.
    fn on_remote(&mut self, now: Time, ocall: OverlayCall, sip: &[u8]) {
        let Some(call_id) = self.by_ocall.get(&ocall).cloned() else {
            return;
        };
        let Ok(m) = msg::parse_frame(sip) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let ua = call.ua;
        match m {
            SipMessage::Response(mut resp) => {
                let Some((cseq, method)) = resp.cseq() else {
                    return;
                };
                self.media.response(now, Origin::FarEnd, &mut resp);
                let code = resp.code();
                // A response to an in-dialog request from our UA (re-INVITE included)...
                if let Some(pos) = call
                    .waiting
                    .iter()
                    .position(|w| w.cseq == cseq && w.method == method)
                {
                    let k = if code >= 200 {
                        call.waiting.swap_remove(pos).key
                    } else {
                        call.waiting[pos].key.clone()
                    };
                    if code / 100 == 2 {
                        self.answered(now, &call_id, &method, &resp);
                    }
                    self.tx.send_response(now, &k, resp);
                    if code >= 200 && method == SipMethod::Bye {
                        self.end_call(now, &call_id);
                    }
                    return;
                }
                // ...or to the INVITE that set the call up.
                if method == SipMethod::Invite
                    && let Some(k) = call.invite_server.clone()
                {
                    let moved = matches!(code, 404 | 410 | 480).then(|| call.invite.clone());
                    if code / 100 == 2 {
                        self.answered(now, &call_id, &method, &resp);
                    }
                    if self.tx.is_open(&k) {
                        self.tx.send_response(now, &k, resp);
                    } else if code / 100 == 2 {
                        // The called UA retransmits its 2xx until the ACK: the server
                        // transaction ended with the first, so these go statelessly
                        // (RFC 3261 §16.7 item 10 as amended by RFC 6026).
                        self.tx.send_stateless(ua, resp.to_bytes());
                    }
                    if let Some(invite) = moved {
                        self.forget_found(&invite);
                    }
                    if code >= 300 {
                        self.end_call(now, &call_id);
                    }
                }
            }
            SipMessage::Request(mut req) => {
                // The Route set named the two front-ends; it ends here.
                req.remove_header("Route");
                self.media.request(now, Origin::FarEnd, &mut req);
                match req.method().clone() {
                    SipMethod::Ack => {
                        let via = self.via(ua.transport);
                        if req.push_via(&via).is_ok() {
                            self.tx.send_stateless(ua, req.to_bytes());
                        }
                        self.acked(now, &call_id);
                    }
                    SipMethod::Cancel => {
                        // Cancel our INVITE toward the called UA (same Via branch).
                        if let Some((_, inv)) = &call.invite_client
                            && let Some(c) = msg::cancel_for(inv)
                            && let Some(k) = self.tx.send_request(now, ua, c)
                        {
                            self.track_client(&call_id, k);
                        }
                    }
                    method => {
                        let via = self.via(ua.transport);
                        if req.push_via(&via).is_ok()
                            && let Some(k) = self.tx.send_request(now, ua, req)
                        {
                            self.track_client(&call_id, k);
                        }
                        if method == SipMethod::Bye {
                            self.ending(now, &call_id);
                        }
                    }
                }
            }
        }
    }

    // ---------- time ----------

    /// Run timers due at `now`: transaction timers, overdue overlay answers, lapsed
    /// bindings, idle calls.
    pub fn handle_timeout(&mut self, now: Time, ov: &mut dyn Overlay) {
        self.tx.handle_timeout(now);
        while let Some(q) = self.pending_expiry.pop_due(now) {
            match self.pending.remove(&q) {
                Some(Pending::Store { key, req, .. }) => {
                    self.reply(now, &key, &req, 500, "Overlay Store Timed Out")
                }
                Some(Pending::Find { key, req, .. }) => {
                    self.reply(now, &key, &req, 408, "Request Timeout")
                }
                // Tried again while the stored record lasts (it still has
                // REPUBLISH_AHEAD less the overlay timeout), then left to lapse.
                Some(Pending::Republish { aor, until, .. }) => {
                    let unix = self.unix_ms(now);
                    tracing::warn!(%aor, "the overlay did not store a binding's fresh record in time");
                    if self
                        .bindings
                        .get(&aor)
                        .is_some_and(|b| b.published_until > unix && until > b.published_until)
                    {
                        self.republish.set(aor, now);
                    }
                }
                None => {}
            }
        }
        while let Some(aor) = self.binding_expiry.pop_due(now) {
            self.unbind(&aor);
        }
        while let Some(aor) = self.republish.pop_due(now) {
            self.republish(now, aor, ov);
        }
        while let Some(aor) = self.found_expiry.pop_due(now) {
            self.found.remove(&aor);
        }
        while let Some(id) = self.call_expiry.pop_due(now) {
            if self.calls.get(&id).is_some_and(|c| c.phase == Phase::Setup) {
                self.give_up_setup(now, &id, ov);
            } else {
                self.end_call(now, &id);
            }
        }
        self.drain_tx(now, ov);
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Time> {
        [
            self.tx.poll_timeout(),
            self.pending_expiry.next(),
            self.found_expiry.next(),
            self.binding_expiry.next(),
            self.republish.next(),
            self.call_expiry.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Next SIP message to send to a UA.
    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.tx.poll_transmit()
    }
}

/// Where to reach a registered UA: its Contact when that names an IP address (transport
/// from `;transport=`, else the one it registered over), otherwise where the REGISTER came
/// from.
fn contact_peer(contact: &str, from: Peer) -> Peer {
    let Ok(uri) = sipx_sip::Uri::parse(bytes::Bytes::copy_from_slice(contact.as_bytes())) else {
        return from;
    };
    let Some(sipx_sip::Host::Ip(ip)) = uri.host() else {
        return from;
    };
    let transport = match uri.transport().map(|t| t.to_ascii_lowercase()) {
        Some(t) if t == b"tcp" => Transport::Tcp,
        Some(t) if t == b"udp" => Transport::Udp,
        _ => from.transport,
    };
    Peer {
        transport,
        addr: SocketAddr::new(*ip, uri.port().unwrap_or(5060)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback::LoopbackNet;
    use overlay::secure::{Ed25519Registry, Ed25519Signer};
    use proptest::prelude::*;

    fn invite(n: u32) -> Vec<u8> {
        format!(
            "INVITE sip:bob@p2psip.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5170;branch=z9hG4bK-{n}\r\n\
             From: <sip:alice@p2psip.test>;tag=a{n}\r\n\
             To: <sip:bob@p2psip.test>\r\n\
             Call-ID: c{n}@x\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// A front-end for peer 1 allowing `max_tx` transactions, its overlay, and the address
    /// the tests' phone sends from.
    fn setup(max_tx: usize) -> (FrontEnd, crate::loopback::LoopbackOverlay, SocketAddr) {
        let (s, _) = Ed25519Signer::generate().unwrap();
        let mut keys = Ed25519Registry::default();
        keys.insert(NodeId(1), s.public_key());
        let keys = Arc::new(keys);
        let mut cfg = FrontEndConfig::new("p2psip.test", "127.0.0.1:5060".parse().unwrap());
        cfg.max_transactions = max_tx;
        let net = LoopbackNet::new(keys.clone(), 0);
        (
            FrontEnd::new(cfg, NodeId(1), Box::new(s), keys),
            net.join(NodeId(1)),
            "127.0.0.1:5170".parse().unwrap(),
        )
    }

    fn codes(fe: &mut FrontEnd) -> Vec<u16> {
        std::iter::from_fn(|| fe.poll_transmit())
            .filter_map(|t| match msg::parse_datagram(&t.bytes) {
                Ok(SipMessage::Response(r)) => Some(r.code()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn full_transaction_table_answers_503_and_silent_overlay_408() {
        let (mut fe, mut ov, ua) = setup(2);
        let now = Time::from_millis(1);
        // The overlay's answers are never fed back: the INVITEs wait.
        for n in 0..3 {
            fe.handle_datagram(now, ua, &invite(n), &mut ov);
        }
        assert_eq!(codes(&mut fe), vec![100, 100, 503]);
        assert_eq!(fe.stats().overloaded, 1);
        // No answer from the overlay within its timeout: 408, never a hang.
        let later = now + Duration::from_secs(9);
        fe.handle_timeout(later, &mut ov);
        assert_eq!(codes(&mut fe), vec![408, 408]);
    }

    /// Overlay answers overdue together time out in the order they were asked, the same on
    /// every run.
    #[test]
    fn overdue_lookups_answer_in_arrival_order() {
        let run = || {
            let (mut fe, mut ov, _) = setup(1000);
            let now = Time::from_millis(1);
            for n in 0..300u16 {
                let ua = SocketAddr::from(([127, 0, 0, 1], 20000 + n));
                fe.handle_datagram(now, ua, &invite(n.into()), &mut ov);
            }
            while fe.poll_transmit().is_some() {}
            fe.handle_timeout(now + Duration::from_secs(9), &mut ov);
            std::iter::from_fn(|| fe.poll_transmit())
                .filter_map(|t| match msg::parse_datagram(&t.bytes) {
                    Ok(SipMessage::Response(r)) if r.code() == 408 => r.call_id(),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let answered = run();
        let asked: Vec<String> = (0..300).map(|n| format!("c{n}@x")).collect();
        assert_eq!(answered, asked);
        assert_eq!(answered, run());
    }

    #[test]
    fn refused_incoming_call_is_ended_in_the_overlay() {
        let (s, _) = Ed25519Signer::generate().unwrap();
        let keys = Arc::new(Ed25519Registry::default());
        let net = LoopbackNet::new(keys.clone(), 0);
        let mut caller = net.join(NodeId(2));
        let mut ov = net.join(NodeId(1));
        let cfg = FrontEndConfig::new("p2psip.test", "127.0.0.1:5060".parse().unwrap());
        let mut fe = FrontEnd::new(cfg, NodeId(1), Box::new(s), keys);
        let now = Time::from_millis(1);
        // Nobody is registered here (480), and garbage is no INVITE at all.
        caller.send_call(now, NodeId(1), invite(1));
        caller.send_call(now, NodeId(1), b"garbage".to_vec());
        assert_eq!(net.tracked_call_ends(), 4);
        while let Some(ev) = ov.poll_event() {
            fe.handle_overlay_event(now, ev, &mut ov);
        }
        assert_eq!(fe.calls(), 0);
        assert_eq!(net.tracked_call_ends(), 0, "refused calls were not ended");
        let refused = std::iter::from_fn(|| caller.poll_event())
            .filter(|e| matches!(e, OverlayEvent::InDialog { .. }))
            .count();
        assert_eq!(refused, 1, "the INVITE got its 480");
    }

    /// A callee called again is not looked up again for [`FOUND_FOR`], and is looked up
    /// afresh once that is over or once its peer answers it is not there.
    #[test]
    fn a_found_registration_serves_further_calls_until_it_lapses_or_leads_nowhere() {
        let (s1, _) = Ed25519Signer::generate().unwrap();
        let (s2, _) = Ed25519Signer::generate().unwrap();
        let mut keys = Ed25519Registry::default();
        keys.insert(NodeId(1), s1.public_key());
        keys.insert(NodeId(2), s2.public_key());
        let keys = Arc::new(keys);
        let net = LoopbackNet::new(keys.clone(), 0);
        let (mut ov1, mut ov2) = (net.join(NodeId(1)), net.join(NodeId(2)));
        let cfg =
            |port| FrontEndConfig::new("p2psip.test", SocketAddr::from(([127, 0, 0, 1], port)));
        let mut fe1 = FrontEnd::new(cfg(5060), NodeId(1), Box::new(s1), keys.clone());
        let mut fe2 = FrontEnd::new(cfg(5062), NodeId(2), Box::new(s2), keys);
        let (alice, bob): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5170".parse().unwrap(),
            "127.0.0.1:5172".parse().unwrap(),
        );
        // Both front-ends take what the overlay brings until it is quiet; the INVITEs that
        // reach bob's phone come back.
        let pump = |now,
                    fe1: &mut FrontEnd,
                    ov1: &mut crate::loopback::LoopbackOverlay,
                    fe2: &mut FrontEnd,
                    ov2: &mut crate::loopback::LoopbackOverlay| {
            let mut to_bob = Vec::new();
            loop {
                let mut moved = false;
                while let Some(ev) = ov1.poll_event() {
                    fe1.handle_overlay_event(now, ev, ov1);
                    moved = true;
                }
                while let Some(ev) = ov2.poll_event() {
                    fe2.handle_overlay_event(now, ev, ov2);
                    moved = true;
                }
                while fe1.poll_transmit().is_some() {}
                while let Some(t) = fe2.poll_transmit() {
                    if let Ok(SipMessage::Request(r)) = msg::parse_datagram(&t.bytes) {
                        to_bob.push(r);
                    }
                }
                if !moved {
                    return to_bob;
                }
            }
        };
        let now = Time::from_millis(1);
        fe2.handle_datagram(now, bob, &register(1, "bob", None), &mut ov2);
        pump(now, &mut fe1, &mut ov1, &mut fe2, &mut ov2);
        assert_eq!(fe2.tables().bindings, 1);

        // The first call looks bob up; the second, at once, does not.
        fe1.handle_datagram(now, alice, &invite(1), &mut ov1);
        assert_eq!(
            fe1.tables().pending,
            1,
            "the first call looks the callee up"
        );
        assert_eq!(pump(now, &mut fe1, &mut ov1, &mut fe2, &mut ov2).len(), 1);
        assert_eq!(fe1.tables().found, 1);
        fe1.handle_datagram(now, alice, &invite(2), &mut ov1);
        assert_eq!(fe1.tables().pending, 0, "a repeat call used what was found");
        let to_bob = pump(now, &mut fe1, &mut ov1, &mut fe2, &mut ov2);
        assert_eq!((to_bob.len(), fe1.calls()), (1, 2));

        // Bob's peer answers the second call "not here": the next call looks bob up again.
        let gone = to_bob[0]
            .response(480, "Temporarily Unavailable", Some("b2"))
            .unwrap();
        fe2.handle_datagram(now, bob, &gone.to_bytes(), &mut ov2);
        pump(now, &mut fe1, &mut ov1, &mut fe2, &mut ov2);
        assert_eq!(
            fe1.tables().found,
            0,
            "a 480 from the far end forgets the callee"
        );
        fe1.handle_datagram(now, alice, &invite(3), &mut ov1);
        assert_eq!(fe1.tables().pending, 1);
        pump(now, &mut fe1, &mut ov1, &mut fe2, &mut ov2);

        // Found again, then kept for FOUND_FOR only.
        fe1.handle_timeout(now + FOUND_FOR, &mut ov1);
        assert_eq!(fe1.tables().found, 0, "kept past FOUND_FOR");
        fe1.handle_datagram(now + FOUND_FOR, alice, &invite(4), &mut ov1);
        assert_eq!(fe1.tables().pending, 1);
    }

    fn register(n: u32, user: &str, auth: Option<&str>) -> Vec<u8> {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:p2psip.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5170;branch=z9hG4bK-r{n}\r\n\
             From: <sip:{user}@p2psip.test>;tag=r{n}\r\n\
             To: <sip:{user}@p2psip.test>\r\n\
             Call-ID: r{n}@x\r\n\
             CSeq: {n} REGISTER\r\n\
             Contact: <sip:{user}@127.0.0.1:5170>\r\n\
             Expires: 300\r\n{auth}\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// Responses as (code, WWW-Authenticate values).
    fn answers(fe: &mut FrontEnd) -> Vec<(u16, Vec<String>)> {
        std::iter::from_fn(|| fe.poll_transmit())
            .filter_map(|t| {
                let text = String::from_utf8_lossy(&t.bytes).to_string();
                match msg::parse_datagram(&t.bytes) {
                    Ok(SipMessage::Response(r)) => Some((
                        r.code(),
                        text.lines()
                            .filter_map(|l| l.strip_prefix("WWW-Authenticate: "))
                            .map(str::to_string)
                            .collect(),
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// A phone refreshing an unchanged binding is answered from the binding table, with
    /// nothing asked of the overlay; the overlay's record is published again before it
    /// lapses, so the AoR stays reachable for as long as the refreshed binding; a refresh
    /// that moves the contact goes to the overlay again.
    #[test]
    fn unchanged_refreshes_are_answered_locally_and_the_record_published_again() {
        let (mut fe, mut ov, ua) = setup(64);
        let aor = normalize_aor("alice", "p2psip.test");
        let secs = |s: u64| Duration::from_secs(s);
        let t0 = Time::from_millis(1_000);
        fe.handle_datagram(t0, ua, &register(1, "alice", None), &mut ov);
        let stored = std::iter::from_fn(|| ov.poll_event()).collect::<Vec<_>>();
        assert_eq!(stored.len(), 1);
        for ev in stored {
            fe.handle_overlay_event(t0, ev, &mut ov);
        }
        assert_eq!(codes(&mut fe), vec![200]);
        // 100 s later the phone refreshes (Expires 300): 200 at once, no store.
        let t1 = t0 + secs(100);
        fe.handle_datagram(t1, ua, &register(2, "alice", None), &mut ov);
        assert!(
            ov.poll_event().is_none(),
            "an unchanged refresh went to the overlay"
        );
        assert_eq!(codes(&mut fe), vec![200]);
        assert_eq!(fe.stats().registered, 2);
        // The first record lapses at t0 + 300 s: a fresh one is stored 30 s before.
        fe.handle_timeout(t0 + secs(269), &mut ov);
        assert!(ov.poll_event().is_none(), "published again too early");
        let due = t0 + secs(270);
        fe.handle_timeout(due, &mut ov);
        let ev = ov.poll_event().expect("a fresh record stored");
        assert!(
            matches!(ev, OverlayEvent::Stored { result: Ok(()), .. }),
            "{ev:?}"
        );
        fe.handle_overlay_event(due, ev, &mut ov);
        // Past the first record's lifetime the overlay still has alice, until t1 + 300 s.
        let found = |ov: &mut crate::loopback::LoopbackOverlay, at: Time| {
            ov.find_registration(at, &aor);
            match ov.poll_event() {
                Some(OverlayEvent::Found { registration, .. }) => registration,
                other => panic!("{other:?}"),
            }
        };
        let r = found(&mut ov, t0 + secs(350)).expect("alice reachable past the first record");
        assert_eq!(
            r.record.expires_unix_ms,
            (t1 + secs(300)).as_micros() / 1000
        );
        assert!(found(&mut ov, t1 + secs(301)).is_none());
        // A refresh from another contact is a change: stored before it is answered.
        let moved = String::from_utf8(register(3, "alice", None))
            .unwrap()
            .replace("127.0.0.1:5170>", "127.0.0.1:5171>");
        fe.handle_datagram(due, ua, moved.as_bytes(), &mut ov);
        assert!(
            codes(&mut fe).is_empty(),
            "a moved contact was answered before its store"
        );
        let ev = ov.poll_event().expect("the moved contact stored");
        fe.handle_overlay_event(due, ev, &mut ov);
        assert_eq!(codes(&mut fe), vec![200]);
    }

    #[test]
    fn digest_challenge_accept_and_reject() {
        use crate::digest::{Algorithm, Credentials, authorization};
        let (mut fe, mut ov, _) = setup(64);
        let creds = Credentials::parse("alice:wonderland\nbob:builder\n").unwrap();
        let auth = Arc::new(DigestAuth::new("p2psip.test", creds, [3; 32]));
        fe.cfg.auth = Some(auth.clone());
        let ua: SocketAddr = "127.0.0.1:5170".parse().unwrap();
        let now = Time::from_millis(5_000_000);
        let pump = |fe: &mut FrontEnd, ov: &mut crate::loopback::LoopbackOverlay, bytes: &[u8]| {
            fe.handle_datagram(now, ua, bytes, ov);
            while let Some(ev) = ov.poll_event() {
                fe.handle_overlay_event(now, ev, ov);
            }
            answers(fe)
        };
        // No credentials: 401 with a SHA-256 and an MD5 challenge.
        let a = pump(&mut fe, &mut ov, &register(1, "alice", None));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, 401);
        assert_eq!(a[0].1.len(), 2, "{a:?}");
        assert!(a[0].1[0].contains("algorithm=SHA-256"));
        assert!(a[0].1[1].contains("algorithm=MD5"));
        let nonce = auth.nonce(now);
        let answer = |user: &str, pw: &str, alg, method: &str, uri: &str| {
            authorization(alg, user, pw, "p2psip.test", &nonce, method, uri, "cn", 1)
        };
        // REGISTER `n` of `aor_user`'s AoR answering as `user` (password `pw`, `alg`).
        let reg = |n, aor_user, user, pw, alg| {
            let h = answer(user, pw, alg, "REGISTER", "sip:p2psip.test");
            register(n, aor_user, Some(&h))
        };
        // Valid credentials (either algorithm): registered.
        let r = reg(2, "alice", "alice", "wonderland", Algorithm::Sha256);
        assert_eq!(pump(&mut fe, &mut ov, &r)[0].0, 200);
        let r = reg(3, "bob", "bob", "builder", Algorithm::Md5);
        assert_eq!(pump(&mut fe, &mut ov, &r)[0].0, 200);
        assert_eq!(fe.stats().registered, 2);
        // Wrong password and unknown user: challenged again.
        let r = reg(4, "alice", "alice", "nope", Algorithm::Md5);
        assert_eq!(pump(&mut fe, &mut ov, &r)[0].0, 401);
        let r = reg(5, "eve", "eve", "wonderland", Algorithm::Md5);
        assert_eq!(pump(&mut fe, &mut ov, &r)[0].0, 401);
        // alice registering bob's AoR: 403.
        let r = reg(6, "bob", "alice", "wonderland", Algorithm::Md5);
        assert_eq!(pump(&mut fe, &mut ov, &r)[0].0, 403);
        assert_eq!(fe.stats().auth_forbidden, 1);
        assert_eq!(fe.stats().registered, 2);
        // INVITE from a local UA: 401 without credentials, 100 Trying with them.
        assert_eq!(pump(&mut fe, &mut ov, &invite(7))[0].0, 401);
        let h = answer(
            "alice",
            "wonderland",
            Algorithm::Md5,
            "INVITE",
            "sip:bob@p2psip.test",
        );
        let mut inv = String::from_utf8(invite(8)).unwrap();
        inv = inv.replace(
            "Content-Length",
            &format!("Authorization: {h}\r\nContent-Length"),
        );
        assert_eq!(pump(&mut fe, &mut ov, inv.as_bytes())[0].0, 100);
        // The same nonce much later: stale=true.
        let late = now + Duration::from_secs(600);
        let r = reg(9, "alice", "alice", "wonderland", Algorithm::Md5);
        fe.handle_datagram(late, ua, &r, &mut ov);
        let a = answers(&mut fe);
        assert_eq!(a[0].0, 401);
        assert!(a[0].1.iter().all(|c| c.contains("stale=true")), "{a:?}");
        assert_eq!(fe.stats().auth_challenged, 5);
    }

    /// A call ends `call_idle` after its last traffic, not after it began; a binding lapses
    /// at its expiry, and calls to its AoR are refused from then on.
    #[test]
    fn idle_calls_and_lapsed_bindings_expire_on_time() {
        let (s, _) = Ed25519Signer::generate().unwrap();
        let mut keys = Ed25519Registry::default();
        keys.insert(NodeId(1), s.public_key());
        let keys = Arc::new(keys);
        let net = LoopbackNet::new(keys.clone(), 0);
        let mut caller = net.join(NodeId(2));
        let mut ov = net.join(NodeId(1));
        let cfg = FrontEndConfig::new("p2psip.test", "127.0.0.1:5060".parse().unwrap());
        // A call in set-up lasts Timer C after its last traffic.
        let idle = cfg.timer_c;
        let mut fe = FrontEnd::new(cfg, NodeId(1), Box::new(s), keys);
        let ua: SocketAddr = "127.0.0.1:5170".parse().unwrap();
        let pump = |fe: &mut FrontEnd, ov: &mut crate::loopback::LoopbackOverlay, now| {
            while let Some(ev) = ov.poll_event() {
                fe.handle_overlay_event(now, ev, ov);
            }
        };
        // bob registers for 300 s; a call for him arrives and goes to his UA.
        let t0 = Time::from_millis(1);
        fe.handle_datagram(t0, ua, &register(1, "bob", None), &mut ov);
        pump(&mut fe, &mut ov, t0);
        assert_eq!(codes(&mut fe), vec![200]);
        caller.send_call(t0, NodeId(1), invite(1));
        pump(&mut fe, &mut ov, t0);
        assert_eq!(fe.calls(), 1);
        let forwarded = std::iter::from_fn(|| fe.poll_transmit())
            .find_map(|t| match msg::parse_datagram(&t.bytes) {
                Ok(SipMessage::Request(r)) if *r.method() == SipMethod::Invite => Some(r),
                _ => None,
            })
            .unwrap();
        // The UA rings 100 s later: Timer C starts again.
        let t1 = t0 + Duration::from_secs(100);
        let ringing = forwarded.response(180, "Ringing", Some("u")).unwrap();
        fe.handle_datagram(t1, ua, &ringing.to_bytes(), &mut ov);
        fe.handle_timeout(t0 + idle, &mut ov);
        assert_eq!(fe.calls(), 1, "the call ended counting from its start");
        assert_eq!(fe.poll_timeout(), Some(t1 + idle));
        fe.handle_timeout(t1 + idle, &mut ov);
        assert_eq!(fe.calls(), 0, "the idle call was kept");
        // Timer C: the UA's INVITE is cancelled and the caller hears 408.
        let cancelled = std::iter::from_fn(|| fe.poll_transmit()).any(|t| {
            matches!(msg::parse_datagram(&t.bytes),
                Ok(SipMessage::Request(r)) if *r.method() == SipMethod::Cancel)
        });
        assert!(cancelled, "Timer C did not cancel the UA's INVITE");
        let timed_out = std::iter::from_fn(|| caller.poll_event()).any(|e| match e {
            OverlayEvent::InDialog { sip, .. } => {
                matches!(msg::parse_frame(&sip), Ok(SipMessage::Response(r)) if r.code() == 408)
            }
            _ => false,
        });
        assert!(timed_out, "the caller was not answered 408");
        assert_eq!(
            net.tracked_call_ends(),
            0,
            "the idle call was not ended in the overlay"
        );
        // bob's binding lapsed at t0 + 300 s: a new call for him is refused.
        let t2 = t0 + Duration::from_secs(301);
        caller.send_call(t2, NodeId(1), invite(2));
        pump(&mut fe, &mut ov, t2);
        assert_eq!(fe.calls(), 0);
        assert_eq!(fe.stats().calls_in, 1);
        // The CANCEL's transaction (UDP: Timer F) is all that is left, then nothing.
        fe.handle_timeout(t2 + Duration::from_secs(64), &mut ov);
        assert_eq!(fe.poll_timeout(), None);
    }

    /// A called front-end with bob's UA registered, and the caller's overlay handle.
    fn called_side() -> (
        FrontEnd,
        crate::loopback::LoopbackOverlay,
        crate::loopback::LoopbackOverlay,
        crate::loopback::LoopbackNet,
    ) {
        let (s, _) = Ed25519Signer::generate().unwrap();
        let mut keys = Ed25519Registry::default();
        keys.insert(NodeId(1), s.public_key());
        let keys = Arc::new(keys);
        let net = LoopbackNet::new(keys.clone(), 0);
        let caller = net.join(NodeId(2));
        let mut ov = net.join(NodeId(1));
        let cfg = FrontEndConfig::new("p2psip.test", "127.0.0.1:5060".parse().unwrap());
        let mut fe = FrontEnd::new(cfg, NodeId(1), Box::new(s), keys);
        let t0 = Time::from_millis(1);
        fe.handle_datagram(
            t0,
            "127.0.0.1:5170".parse().unwrap(),
            &register(1, "bob", None),
            &mut ov,
        );
        while let Some(ev) = ov.poll_event() {
            fe.handle_overlay_event(t0, ev, &mut ov);
        }
        assert_eq!(codes(&mut fe), vec![200]);
        (fe, ov, caller, net)
    }

    /// Call `n` arrives from the overlay at `now` and bob's UA answers it with 200 carrying
    /// `session_expires` (RFC 4028) if given. Returns the overlay call.
    fn answered_call(
        fe: &mut FrontEnd,
        ov: &mut crate::loopback::LoopbackOverlay,
        caller: &mut crate::loopback::LoopbackOverlay,
        now: Time,
        n: u32,
        session_expires: Option<u32>,
    ) -> OverlayCall {
        let ocall = caller.send_call(now, NodeId(1), invite(n));
        while let Some(ev) = ov.poll_event() {
            fe.handle_overlay_event(now, ev, ov);
        }
        let forwarded = std::iter::from_fn(|| fe.poll_transmit())
            .find_map(|t| match msg::parse_datagram(&t.bytes) {
                Ok(SipMessage::Request(r)) if *r.method() == SipMethod::Invite => Some(r),
                _ => None,
            })
            .unwrap();
        let mut ok = forwarded.response(200, "OK", Some("u")).unwrap();
        if let Some(se) = session_expires {
            ok.push_header("Session-Expires", &format!("{se};refresher=uac"))
                .unwrap();
        }
        let ua: SocketAddr = "127.0.0.1:5170".parse().unwrap();
        fe.handle_datagram(now, ua, &ok.to_bytes(), ov);
        while fe.poll_transmit().is_some() {}
        ocall
    }

    /// The ACK for call `n`'s 2xx, arriving from the caller's side.
    fn ack_from_caller(
        fe: &mut FrontEnd,
        ov: &mut crate::loopback::LoopbackOverlay,
        caller: &mut crate::loopback::LoopbackOverlay,
        ocall: OverlayCall,
        now: Time,
        n: u32,
    ) {
        let ack = format!(
            "ACK sip:bob@127.0.0.1:5170 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5170;branch=z9hG4bK-ack{n}\r\n\
             From: <sip:alice@p2psip.test>;tag=a{n}\r\n\
             To: <sip:bob@p2psip.test>;tag=u\r\n\
             Call-ID: c{n}@x\r\n\
             CSeq: 1 ACK\r\n\
             Content-Length: 0\r\n\r\n"
        );
        caller.send_in_dialog(now, ocall, ack.into_bytes());
        while let Some(ev) = ov.poll_event() {
            fe.handle_overlay_event(now, ev, ov);
        }
        while fe.poll_transmit().is_some() {}
    }

    /// An answered call whose ACK never comes is dropped 64·T1 after its 2xx; one that is
    /// ACKed stays its session interval (RFC 4028) after the ACK, or `call_idle` without a
    /// session timer; one whose BYE is never answered is dropped 64·T1 after the BYE.
    #[test]
    fn answered_calls_end_on_ack_timeout_session_timer_or_idle() {
        let (mut fe, mut ov, mut caller, net) = called_side();
        let t0 = Time::from_millis(10);
        let ack_wait = Duration::from_secs(32);
        // 1: no ACK.
        answered_call(&mut fe, &mut ov, &mut caller, t0, 1, None);
        assert_eq!(fe.calls(), 1);
        fe.handle_timeout(t0 + (ack_wait - Duration::from_millis(1)), &mut ov);
        assert_eq!(fe.calls(), 1);
        fe.handle_timeout(t0 + ack_wait, &mut ov);
        assert_eq!(fe.calls(), 0, "the unacknowledged call was kept");
        // 2: ACKed, session interval 90 s; 3: ACKed, no session timer.
        let t1 = t0 + ack_wait;
        let c2 = answered_call(&mut fe, &mut ov, &mut caller, t1, 2, Some(90));
        let c3 = answered_call(&mut fe, &mut ov, &mut caller, t1, 3, None);
        let t2 = t1 + Duration::from_secs(1);
        ack_from_caller(&mut fe, &mut ov, &mut caller, c2, t2, 2);
        ack_from_caller(&mut fe, &mut ov, &mut caller, c3, t2, 3);
        fe.handle_timeout(t1 + ack_wait, &mut ov);
        assert_eq!(
            fe.calls(),
            2,
            "an acknowledged call ended at the ACK timeout"
        );
        fe.handle_timeout(t2 + Duration::from_secs(90), &mut ov);
        assert_eq!(fe.calls(), 1, "the session timer did not end call 2");
        // 4: ACKed, then a BYE from the caller that bob's UA never answers.
        let t3 = t2 + Duration::from_secs(100);
        let c4 = answered_call(&mut fe, &mut ov, &mut caller, t3, 4, None);
        ack_from_caller(&mut fe, &mut ov, &mut caller, c4, t3, 4);
        let bye = String::from_utf8(invite(4))
            .unwrap()
            .replace("INVITE sip", "BYE sip")
            .replace("1 INVITE", "2 BYE")
            .replace("z9hG4bK-4", "z9hG4bK-bye4")
            .replace(
                "To: <sip:bob@p2psip.test>",
                "To: <sip:bob@p2psip.test>;tag=u",
            );
        caller.send_in_dialog(t3, c4, bye.into_bytes());
        while let Some(ev) = ov.poll_event() {
            fe.handle_overlay_event(t3, ev, &mut ov);
        }
        assert_eq!(fe.calls(), 2);
        fe.handle_timeout(t3 + ack_wait, &mut ov);
        assert_eq!(fe.calls(), 1, "the call whose BYE went unanswered was kept");
        let idle = FrontEndConfig::new("x", fe.local()).call_idle;
        fe.handle_timeout(t2 + idle, &mut ov);
        assert_eq!(fe.calls(), 0, "the idle call 3 was kept");
        let t = fe.tables();
        assert_eq!((t.calls, t.transactions, t.call_transactions), (0, 0, 0));
        assert_eq!(
            net.tracked_call_ends(),
            0,
            "an ended call stayed in the overlay"
        );
    }

    proptest! {
        #[test]
        fn garbage_from_uas_never_panics(
            lines in proptest::collection::vec("[ -~]{0,60}", 0..14),
            method in prop_oneof![Just("INVITE"), Just("REGISTER"), Just("BYE"), Just("ACK"), Just("CANCEL"), Just("SIP/2.0")],
        ) {
            let (mut fe, mut ov, ua) = setup(16);
            let mut s = format!("{method} sip:bob@p2psip.test SIP/2.0\r\n");
            for l in lines {
                s.push_str(&l);
                s.push_str("\r\n");
            }
            s.push_str("\r\n");
            let now = Time::from_millis(1);
            fe.handle_datagram(now, ua, s.as_bytes(), &mut ov);
            while let Some(ev) = ov.poll_event() {
                fe.handle_overlay_event(now, ev, &mut ov);
            }
            fe.handle_timeout(now + Duration::from_secs(60), &mut ov);
            while fe.poll_transmit().is_some() {}
        }
    }
}
