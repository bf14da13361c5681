//! Calls a `p2psip peer` places and answers itself (paper Figures 3–4), as real SIP
//! messages: the caller's INVITE travels the secure call flow (CSP, PingRequest multicast,
//! SOS-ranked route) and the overlay's Ringing comes back; then the callee's `180 Ringing`
//! and `200 OK`, the caller's `ACK` and `BYE`, and the `200 OK` to the BYE go straight
//! between the two peers as in-dialog messages over their TLS link
//! ([`overlay::secure::SecureNode::send_dialog`]). The callee answers every call at once
//! (an automatic user agent); a peer with a SIP front-end hands calls to its phones instead.

use crate::output::say;
use net::Handle;
use overlay::secure::SecureEvent;
use overlay::{Contact, NodeId};
use serde::Serialize;
use sip::PeerCore;
use sip::msg::{RequestParts, SipMethod, build_request, parse_frame};
use sip::{SipMessage, SipRequest};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Domain of the SIP URIs peers use among themselves (Node-IDs as user parts).
const DOMAIN: &str = "p2psip.invalid";
/// Calls placed through the control endpoint at once.
pub(crate) const MAX_OUTGOING: usize = 256;
/// Chord lookups through the control endpoint at once.
pub(crate) const MAX_LOOKUPS: usize = 256;
/// Incoming calls answered at once off the event loop (ICE gathering takes seconds);
/// beyond this many the event loop answers inline, which slows the intake instead.
pub(crate) const MAX_ANSWERING: usize = 64;
/// Answered calls remembered (for their ACK and BYE).
const MAX_ANSWERED: usize = 4096;
/// Finished calls kept for `/status`.
const HISTORY: usize = 64;
/// How long the caller's ICE session keeps answering checks after the call.
const ICE_LINGER: Duration = Duration::from_secs(5);
/// In-dialog messages queued per outgoing call.
const SINK: usize = 16;

/// Lock `m`; a poisoned lock still gives its data, so the peer keeps serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One finished call, as `/status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    /// `out` (placed here) or `in` (answered here).
    pub direction: &'static str,
    /// The other end.
    pub peer: String,
    /// SIP Call-ID.
    pub call_id: String,
    /// `completed`, `ringing`, `failed: …`, `answered`, `ended`.
    pub result: String,
}

#[derive(Debug)]
struct Answered {
    call_id: String,
    to_tag: String,
}

/// Calls answered here, by (caller, caller's handle), and their order (oldest first).
type AnsweredCalls = (HashMap<(NodeId, u64), Answered>, VecDeque<(NodeId, u64)>);

/// State shared by the control endpoint and the event loop of one peer.
#[derive(Default)]
pub(crate) struct Shared {
    /// The peer's database (call history).
    pub db: crate::db::Db,
    /// Lookups in flight: Chord lookup handle → who waits.
    pub lookups: Mutex<HashMap<u64, oneshot::Sender<overlay::Event>>>,
    /// Outgoing calls: the secure node's call handle → where their in-dialog messages go.
    sinks: Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>,
    answered: Mutex<AnsweredCalls>,
    history: Mutex<VecDeque<HistoryEntry>>,
    /// Incoming calls being answered off the event loop.
    pub answering: std::sync::atomic::AtomicUsize,
    /// Calls answered here.
    pub answered_total: std::sync::atomic::AtomicU64,
    /// Calls placed here that completed (200 OK to INVITE and to BYE).
    pub completed_total: std::sync::atomic::AtomicU64,
    /// Calls placed here that failed.
    pub failed_total: std::sync::atomic::AtomicU64,
    /// Run ICE for each call (candidates in the SDP of the INVITE and the 200 OK), with
    /// these options (`controlling` is set per side); `None`: no ICE.
    pub ice: Option<nat::IceOptions>,
}

impl Shared {
    /// Empty state over the peer's database.
    pub(crate) fn new(db: crate::db::Db) -> Self {
        Shared {
            db,
            ..Shared::default()
        }
    }

    fn remember(&self, e: HistoryEntry) {
        let mut h = lock(&self.history);
        if h.len() >= HISTORY {
            h.pop_front();
        }
        h.push_back(e);
    }

    /// Recent calls, oldest first.
    pub(crate) fn history(&self) -> Vec<HistoryEntry> {
        lock(&self.history).iter().cloned().collect()
    }
}

/// What `POST /call` asks for.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The callee: a Node-ID (decimal), or an AoR `sip:user@domain` registered through a
    /// peer's SIP front-end (its registration is fetched from the overlay).
    pub to: String,
    /// Time between ACK and BYE, ms.
    #[serde(default)]
    pub hold_ms: u64,
}

/// What `POST /call` answers (and `p2psip call --json` prints).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallReport {
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// The AoR called, when the call was to one.
    pub aor: Option<String>,
    /// `completed` (INVITE/180/200/ACK/BYE/200), `ringing` (rang but the dialog did not
    /// finish), or `failed`.
    pub result: String,
    /// Why it failed or did not complete.
    pub reason: Option<String>,
    /// SIP Call-ID.
    pub call_id: String,
    /// INVITE sent → Ringing received, ms (RFC 6076 SRD), as the caller's node measured it.
    pub srd_ms: Option<f64>,
    /// INVITE sent → 200 OK received, ms.
    pub answer_ms: Option<f64>,
    /// The path of the PingRequest copy the callee chose, from the callee's layer CSP:
    /// carriers, then the callee (`[callee]` when served from the contact cache).
    pub route: Vec<String>,
    /// Overlay hops (route length).
    pub hops: usize,
    /// Served from the contact cache (no CSP).
    pub cached: bool,
    /// The SIP messages of the call in order, `>` sent, `<` received.
    pub sip: Vec<String>,
    /// ICE (with `p2psip peer --ice`): the pair chosen for the media path after the 200 OK,
    /// or why there is none.
    pub ice: Option<String>,
}

fn rand_hex() -> String {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    format!("{:016x}", u64::from_be_bytes(b))
}

fn sdp(me: NodeId, host: std::net::IpAddr) -> Vec<u8> {
    format!(
        "v=0\r\no={me} 1 1 IN IP4 {host}\r\ns=p2psip\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    .into_bytes()
}

fn first_line(b: &[u8]) -> String {
    let end = b
        .iter()
        .position(|c| *c == b'\r')
        .unwrap_or(b.len())
        .min(120);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Send in-dialog messages of call (`caller`, `call`) in order, then optionally forget it.
async fn send_dialog(
    h: &Handle<PeerCore>,
    caller: NodeId,
    call: u64,
    bodies: Vec<Vec<u8>>,
    end: bool,
) -> bool {
    h.call(move |n, now| {
        let n = n.node_at(now);
        let mut ok = true;
        for b in bodies {
            ok &= n.send_dialog(caller, call, b);
        }
        if end {
            n.end_dialog(caller, call);
        }
        ok
    })
    .await
    .unwrap_or(false)
}

/// Place a call from this peer to `to` and run it to its end: INVITE, wait for Ringing,
/// 180 and 200, send ACK, hold, BYE, wait for its 200.
pub(crate) async fn place(
    h: &Handle<PeerCore>,
    shared: &Arc<Shared>,
    to: NodeId,
    aor: Option<String>,
    hold: Duration,
    dialog_timeout: Duration,
) -> CallReport {
    let me = h.contact();
    let host = h.local_addr();
    let call_id = format!("{}-{}@{DOMAIN}", rand_hex(), me.id);
    let from_tag = rand_hex();
    let from = format!("<sip:{}@{DOMAIN}>;tag={from_tag}", me.id);
    let to_uri = aor.clone().unwrap_or_else(|| format!("sip:{to}@{DOMAIN}"));
    let mut report = CallReport {
        from: me.id.to_string(),
        to: to.to_string(),
        aor,
        call_id: call_id.clone(),
        ..CallReport::default()
    };
    let fail = |mut r: CallReport, why: String| {
        r.result = "failed".into();
        r.reason = Some(why);
        r
    };
    let via = |branch: &str| format!("SIP/2.0/TLS {host};branch=z9hG4bK{branch}");
    let mut ice = match &shared.ice {
        Some(o) => {
            let opts = nat::IceOptions {
                controlling: true,
                ..o.clone()
            };
            match nat::IceSession::gather(opts).await {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!("ICE gathering failed ({e}): calling without ICE");
                    report.ice = Some(format!("failed: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    let mut offer = sdp(me.id, host.ip());
    if let Some(s) = &ice {
        offer.extend_from_slice(s.local_description().to_sdp().as_bytes());
    }
    let invite = match build_request(RequestParts {
        method: SipMethod::Invite,
        uri: &to_uri,
        via: &via(&rand_hex()),
        from: &from,
        to: &format!("<{to_uri}>"),
        call_id: &call_id,
        cseq: 1,
        contact: Some(&format!("<sip:{}@{host};transport=tls>", me.id)),
        sdp: Some(&offer),
    }) {
        Ok(r) => r.to_bytes(),
        Err(e) => return fail(report, format!("building the INVITE: {e}")),
    };
    report.sip.push(format!("> {}", first_line(&invite)));

    let (tx, mut rx) = mpsc::channel(SINK);
    if lock(&shared.sinks).len() >= MAX_OUTGOING {
        return fail(report, "too many calls in flight on this peer".into());
    }
    let sinks = shared.clone();
    let t0 = Instant::now();
    // The sink is registered inside the loop, before any answer can be dispatched.
    let ev = h
        .request(move |n, now| {
            let n = n.node_at(now);
            let id = n.call(now, to, invite.clone());
            crate::db::call_placed(&sinks.db, now, id, &invite);
            lock(&sinks.sinks).insert(id, tx);
            id
        })
        .await;
    let ev = ev.map(<PeerCore as net::SecureCore>::split);
    if let Ok(Ok(ev)) = &ev {
        let (db, ev) = (shared.db.clone(), ev.clone());
        let _ = h
            .call(move |_, now| crate::db::on_event(&db, now, &ev))
            .await;
    }
    let call = match ev {
        Ok(Ok(SecureEvent::CallRinging {
            call,
            setup,
            route,
            cached,
            ..
        })) => {
            report.srd_ms = Some(ms(setup));
            report.hops = route.len();
            report.route = route.iter().map(|n| n.to_string()).collect();
            report.cached = cached;
            report.result = "ringing".into();
            call
        }
        Ok(Ok(SecureEvent::CallFailed { call, reason, .. })) => {
            lock(&shared.sinks).remove(&call);
            shared
                .failed_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let r = fail(report, format!("{reason:?}"));
            shared.remember(HistoryEntry {
                direction: "out",
                peer: to.to_string(),
                call_id,
                result: format!("failed: {reason:?}"),
            });
            return r;
        }
        Ok(Ok(other)) => return fail(report, format!("unexpected answer {other:?}")),
        Ok(Err(other)) => return fail(report, format!("unexpected answer {other:?}")),
        Err(e) => return fail(report, e.to_string()),
    };
    let outcome = dialog(
        h,
        &mut rx,
        &mut report,
        (me, &from),
        to,
        call,
        (hold, dialog_timeout),
        t0,
        &mut ice,
    )
    .await;
    lock(&shared.sinks).remove(&call);
    let _ = h
        .call(move |n, now| n.node_at(now).end_dialog(me.id, call))
        .await;
    if let Some(s) = ice {
        // The callee may still be checking (its pair is valid only once our answers to its
        // checks arrive): keep answering for a while, as a media session would.
        tokio::spawn(async move {
            tokio::time::sleep(ICE_LINGER).await;
            drop(s);
        });
    }
    match outcome {
        Ok(()) => {
            report.result = "completed".into();
            shared
                .completed_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(why) => {
            report.reason = Some(why);
            shared
                .failed_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    shared.remember(HistoryEntry {
        direction: "out",
        peer: to.to_string(),
        call_id: report.call_id.clone(),
        result: report.result.clone(),
    });
    report
}

/// After Ringing: the callee's responses, our ACK and BYE.
#[allow(clippy::too_many_arguments)]
async fn dialog(
    h: &Handle<PeerCore>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    report: &mut CallReport,
    (me, from): (Contact, &str),
    to: NodeId,
    call: u64,
    (hold, wait): (Duration, Duration),
    t0: Instant,
    ice: &mut Option<nat::IceSession>,
) -> Result<(), String> {
    let host = h.local_addr();
    let deadline = tokio::time::Instant::now() + wait;
    // 1. The callee's provisional and final responses to the INVITE.
    let ok = loop {
        let resp = next_response(rx, deadline, report).await?;
        match (resp.code(), resp.cseq()) {
            (100..=199, _) => {}
            (200..=299, Some((1, SipMethod::Invite))) => break resp,
            (code, _) => return Err(format!("callee answered {code}")),
        }
    };
    report.answer_ms = Some(ms(t0.elapsed()));
    let to_header = match ok.to_tag() {
        Some(t) => format!("<sip:{to}@{DOMAIN}>;tag={t}"),
        None => return Err("200 OK without a To tag".into()),
    };
    let target = ok
        .contact_uri()
        .unwrap_or_else(|| format!("sip:{to}@{DOMAIN}"));
    let req = |method: SipMethod, cseq: u32| {
        build_request(RequestParts {
            method,
            uri: &target,
            via: &format!("SIP/2.0/TLS {host};branch=z9hG4bK{}", rand_hex()),
            from,
            to: &to_header,
            call_id: &report.call_id,
            cseq,
            contact: None,
            sdp: None,
        })
        .map(|r| r.to_bytes())
        .map_err(|e| format!("building the request: {e}"))
    };
    // 2. ACK, hold, BYE.
    let ack = req(SipMethod::Ack, 1)?;
    let bye = req(SipMethod::Bye, 2)?;
    report.sip.push(format!("> {}", first_line(&ack)));
    if !send_dialog(h, me.id, call, vec![ack], false).await {
        return Err("the callee's link is gone (ACK not sent)".into());
    }
    if let Some(s) = ice.as_mut() {
        report.ice = Some(run_ice(s, ice_of(ok.body()), to).await);
    }
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    report.sip.push(format!("> {}", first_line(&bye)));
    if !send_dialog(h, me.id, call, vec![bye], false).await {
        return Err("the callee's link is gone (BYE not sent)".into());
    }
    // 3. The 200 OK to the BYE.
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let resp = next_response(rx, deadline, report).await?;
        match (resp.code(), resp.cseq()) {
            (200..=299, Some((2, SipMethod::Bye))) => return Ok(()),
            (200..=299, Some((1, SipMethod::Invite))) => {} // a retransmitted 200
            (code, _) => return Err(format!("callee answered the BYE with {code}")),
        }
    }
}

/// The ICE attributes of an SDP body, if any.
fn ice_of(sdp: &[u8]) -> Option<nat::IceDescription> {
    nat::IceDescription::from_sdp(&String::from_utf8_lossy(sdp))
}

/// Run the checks against the other side's ICE attributes; the chosen pair (or why none)
/// as text.
async fn run_ice(
    s: &mut nat::IceSession,
    remote: Option<nat::IceDescription>,
    other: NodeId,
) -> String {
    let Some(remote) = remote else {
        warn!(peer = %other, "no ICE attributes in the SDP: no ICE");
        return "failed: the other side's SDP has no ICE attributes".into();
    };
    match s.connect(&remote).await {
        Ok(pair) => {
            info!(peer = %other, "ICE selected {pair}");
            pair.to_string()
        }
        Err(e) => {
            warn!(peer = %other, "ICE failed: {e}");
            format!("failed: {e}")
        }
    }
}

async fn next_response(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    deadline: tokio::time::Instant,
    report: &mut CallReport,
) -> Result<sip::SipResponse, String> {
    loop {
        let body = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(b)) => b,
            Ok(None) => return Err("the call's message queue closed".into()),
            Err(_) => return Err("no answer from the callee in the dialog".into()),
        };
        report.sip.push(format!("< {}", first_line(&body)));
        match parse_frame(&body) {
            Ok(SipMessage::Response(r)) => return Ok(r),
            Ok(SipMessage::Request(r)) => warn!(method = %r, "unexpected request from the callee"),
            Err(e) => warn!("unparsable SIP from the callee: {e}"),
        }
    }
}

/// An in-dialog message for an outgoing call: to its waiting [`place`]. Gives it back when
/// the call is not one of ours (the SIP front-end's).
pub(crate) fn on_outgoing_dialog(shared: &Shared, call: u64, body: Vec<u8>) -> Option<Vec<u8>> {
    let sinks = lock(&shared.sinks);
    let Some(tx) = sinks.get(&call) else {
        return Some(body);
    };
    if tx.try_send(body).is_err() {
        warn!(call, "in-dialog message dropped: the call's queue is full");
    }
    None
}

/// A call for us: answer it at once (180 Ringing, 200 OK with an SDP answer).
pub(crate) async fn answer(
    h: &Handle<PeerCore>,
    shared: &Shared,
    caller: Contact,
    call: u64,
    invite: Vec<u8>,
) {
    let req = match parse_frame(&invite) {
        Ok(SipMessage::Request(r)) if *r.method() == SipMethod::Invite => r,
        Ok(_) | Err(_) => {
            warn!(caller = %caller.id, "incoming call without a valid SIP INVITE: refused");
            let _ = h
                .call(move |n, now| n.node_at(now).end_dialog(caller.id, call))
                .await;
            return;
        }
    };
    let call_id = req.call_id().unwrap_or_default();
    let to_tag = rand_hex();
    let me = h.contact().id;
    let host = h.local_addr();
    // ICE: when we run it and the caller offered candidates, answer with ours.
    let mut ice = None;
    if let Some(o) = &shared.ice
        && let Some(remote) = ice_of(req.body())
    {
        let opts = nat::IceOptions {
            controlling: false,
            ..o.clone()
        };
        match nat::IceSession::gather(opts).await {
            Ok(s) => ice = Some((s, remote, o.connect_timeout)),
            Err(e) => {
                warn!(caller = %caller.id, "ICE gathering failed ({e}): answering without ICE")
            }
        }
    }
    let mut answer_sdp = sdp(me, host.ip());
    if let Some((s, _, _)) = &ice {
        answer_sdp.extend_from_slice(s.local_description().to_sdp().as_bytes());
    }
    let responses = (|| -> Result<Vec<Vec<u8>>, sip::MsgError> {
        let ringing = req.response(180, "Ringing", Some(&to_tag))?;
        let mut ok = req.response(200, "OK", Some(&to_tag))?;
        ok.push_header("Contact", &format!("<sip:{me}@{host};transport=tls>"))?;
        ok.set_body("application/sdp", answer_sdp)?;
        Ok(vec![ringing.to_bytes(), ok.to_bytes()])
    })();
    let responses = match responses {
        Ok(r) => r,
        Err(e) => {
            warn!(caller = %caller.id, "cannot answer the INVITE: {e}");
            let _ = h
                .call(move |n, now| n.node_at(now).end_dialog(caller.id, call))
                .await;
            return;
        }
    };
    info!(caller = %caller.id, %call_id, "incoming call: answering (180 Ringing, 200 OK)");
    say(format_args!(
        "incoming call from {} Call-ID {call_id}",
        caller.id
    ));
    {
        let mut g = lock(&shared.answered);
        let (map, order) = &mut *g;
        if map.len() >= MAX_ANSWERED
            && let Some(old) = order.pop_front()
        {
            map.remove(&old);
        }
        map.insert(
            (caller.id, call),
            Answered {
                call_id: call_id.clone(),
                to_tag,
            },
        );
        order.push_back((caller.id, call));
    }
    shared
        .answered_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    send_dialog(h, caller.id, call, responses, false).await;
    if let Some((mut s, remote, keep)) = ice {
        // Checks run while the caller runs its own; the session then stays a while to keep
        // answering the caller's checks.
        let caller = caller.id;
        tokio::spawn(async move {
            let r = run_ice(&mut s, Some(remote), caller).await;
            say(format_args!(
                "ice {r} (call from {caller} Call-ID {call_id})"
            ));
            tokio::time::sleep(keep).await;
        });
    }
}

/// An in-dialog request for a call we answered: ACK (logged), BYE (200 OK, call ended),
/// anything else 501.
pub(crate) async fn on_incoming_dialog(
    h: &Handle<PeerCore>,
    shared: &Shared,
    caller: NodeId,
    call: u64,
    body: Vec<u8>,
) {
    let req: SipRequest = match parse_frame(&body) {
        Ok(SipMessage::Request(r)) => r,
        Ok(SipMessage::Response(_)) => return, // nothing we asked for
        Err(e) => {
            warn!(%caller, "unparsable in-dialog SIP: {e}");
            return;
        }
    };
    let known = lock(&shared.answered)
        .0
        .get(&(caller, call))
        .map(|a| (a.call_id.clone(), a.to_tag.clone()));
    let Some((call_id, _tag)) = known else {
        warn!(%caller, "in-dialog {} for a call we do not know", req);
        return;
    };
    match req.method() {
        SipMethod::Ack => info!(%caller, %call_id, "call established (ACK)"),
        SipMethod::Bye => {
            let ok = req.response(200, "OK", None).map(|r| r.to_bytes());
            if let Ok(ok) = ok {
                send_dialog(h, caller, call, vec![ok], true).await;
            }
            {
                let mut g = lock(&shared.answered);
                g.0.remove(&(caller, call));
                g.1.retain(|k| *k != (caller, call));
            }
            info!(%caller, %call_id, "call ended (BYE)");
            say(format_args!("call ended from {caller} Call-ID {call_id}"));
            shared.remember(HistoryEntry {
                direction: "in",
                peer: caller.to_string(),
                call_id,
                result: "ended".into(),
            });
        }
        _ => {
            if let Ok(r) = req.response(501, "Not Implemented", None) {
                send_dialog(h, caller, call, vec![r.to_bytes()], false).await;
            }
        }
    }
}

/// The Node-ID whose front-end holds `aor`'s registration, fetched from the overlay and
/// checked (owner's signature, not expired).
pub(crate) async fn resolve_aor(
    h: &Handle<PeerCore>,
    space: overlay::IdSpace,
    aor: &str,
) -> Result<NodeId, String> {
    let key = sip::aor_key(space, aor);
    let answer = h
        .request(move |n, now| n.node_at(now).get(now, key))
        .await
        .map(<PeerCore as net::SecureCore>::split);
    let value = match answer {
        Ok(Ok(SecureEvent::Fetched { value: Some(v), .. })) => v,
        Ok(Ok(SecureEvent::Fetched { value: None, .. })) => {
            return Err(format!("no registration for {aor} in the overlay"));
        }
        Ok(other) => return Err(format!("unexpected answer {other:?}")),
        Err(e) => return Err(e.to_string()),
    };
    let reg = sip::registration_in_value(&value, aor)
        .ok_or_else(|| format!("no registration for {aor} in the overlay"))?;
    let verifier = h
        .call(|n, now| n.node_at(now).context().verifier.clone())
        .await
        .map_err(|e| e.to_string())?;
    reg.verify(verifier.as_ref()).map_err(|e| e.to_string())?;
    if !reg.is_live(crate::db::unix_ms()) || reg.record.aor != aor {
        return Err(format!("the registration for {aor} has lapsed"));
    }
    Ok(reg.record.node)
}
