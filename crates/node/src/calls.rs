//! Calls a `p2psip peer` places and answers itself (paper Figures 3–4). The SIP is the
//! peer core's own user agent ([`sip::PeerCore::place_call`]): its INVITE travels the secure
//! call flow (CSP, PingRequest multicast, SOS-ranked route) and the overlay's Ringing comes
//! back; the callee's `180 Ringing` and `200 OK`, the caller's `ACK` and `BYE`, and the
//! `200 OK` to the BYE go straight between the two peers as dialog messages over their TLS
//! link. The callee's user agent answers at once, or, with ICE, once this module has
//! gathered candidates for the answer. A peer with a SIP front-end hands calls to its phones
//! instead.

use crate::NodeCore;
use net::Handle;
use overlay::NodeId;
use overlay::secure::SecureEvent;
use serde::{Deserialize, Serialize};
use service::output::say;
use service::sync::lock;
use sip::CallEvent;
use sip::ua::UaEvent;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Calls placed through the control endpoint at once.
pub(crate) const MAX_OUTGOING: usize = 256;
/// Chord lookups through the control endpoint at once.
pub(crate) const MAX_LOOKUPS: usize = 256;
/// Incoming calls whose ICE answer is being prepared at once; beyond it calls are answered
/// without ICE.
const MAX_ANSWERING: usize = 64;
/// Finished calls kept for `/status`.
const HISTORY: usize = 64;
/// How long the caller's ICE session keeps answering checks after the call.
const ICE_LINGER: Duration = Duration::from_secs(5);
/// Progress reports queued per outgoing call.
const SINK: usize = 32;

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

/// What an outgoing call hears while it runs.
#[derive(Debug)]
pub(crate) enum Progress {
    /// The overlay's answer to the INVITE: Ringing (with the route) or failure.
    Overlay(SecureEvent),
    /// The user agent's view of the dialog.
    Ua(UaEvent),
    /// A SIP message went out or came in (its first line).
    Sip { sent: bool, line: String },
}

/// State shared by the control endpoint and the event loop of one peer.
#[derive(Default)]
pub(crate) struct Shared {
    /// The peer's database (call history).
    pub db: crate::db::Db,
    /// Lookups in flight: Chord lookup handle → who waits.
    pub lookups: Mutex<HashMap<u64, oneshot::Sender<overlay::Event>>>,
    /// Outgoing calls: the secure node's call handle and the Call-ID → where their progress
    /// goes.
    sinks: Mutex<Sinks>,
    history: Mutex<VecDeque<HistoryEntry>>,
    /// Incoming calls whose ICE answer is being prepared.
    answering: AtomicUsize,
    /// Calls answered here.
    pub answered_total: AtomicU64,
    /// Calls placed here that completed (200 OK to INVITE and to BYE).
    pub completed_total: AtomicU64,
    /// Calls placed here that failed.
    pub failed_total: AtomicU64,
    /// Run ICE for each call (candidates in the SDP of the INVITE and the 200 OK), with
    /// these options (`controlling` is set per side); `None`: no ICE.
    pub ice: Option<nat::IceOptions>,
    /// What only the metrics count (SRD, failures by reason).
    pub metrics: crate::metrics::PeerMetrics,
    /// The media relay for local phones, once the SIP front-end runs with one (its
    /// counters are in the metrics).
    pub media: std::sync::OnceLock<crate::media::MediaPlane>,
}

/// Where the progress of each outgoing call goes, by the node's handle and by Call-ID.
#[derive(Default)]
struct Sinks {
    by_handle: HashMap<u64, mpsc::Sender<Progress>>,
    by_call: HashMap<String, u64>,
    /// Calls in flight, counted from before their ICE gathering ([`OutgoingSlot`]).
    in_flight: usize,
}

/// One of the [`MAX_OUTGOING`] places for a call in flight; dropping it frees the place and
/// the call's progress sink.
struct OutgoingSlot {
    shared: Arc<Shared>,
    call: Arc<Mutex<Option<(u64, String)>>>,
}

impl OutgoingSlot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let mut s = lock(&shared.sinks);
        if s.in_flight >= MAX_OUTGOING {
            return None;
        }
        s.in_flight += 1;
        Some(OutgoingSlot {
            shared: shared.clone(),
            call: Arc::new(Mutex::new(None)),
        })
    }

    /// Where the peer's loop records the call this place holds, as it registers its sink
    /// (so a call abandoned while that answer is on its way is still cleaned up).
    fn holder(&self) -> Arc<Mutex<Option<(u64, String)>>> {
        self.call.clone()
    }
}

impl Drop for OutgoingSlot {
    fn drop(&mut self) {
        let held = lock(&self.call).take();
        let mut s = lock(&self.shared.sinks);
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some((handle, call)) = held {
            s.by_handle.remove(&handle);
            s.by_call.remove(&call);
        }
    }
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

    fn progress(&self, handle: u64, p: Progress) {
        if let Some(tx) = lock(&self.sinks).by_handle.get(&handle)
            && tx.try_send(p).is_err()
        {
            warn!(
                call = handle,
                "call progress dropped: the call's queue is full"
            );
        }
    }

    /// The overlay's Ringing or failure for a call placed here, to its waiting [`place`].
    pub(crate) fn on_overlay_answer(&self, ev: SecureEvent) {
        if let SecureEvent::CallRinging { call, .. } | SecureEvent::CallFailed { call, .. } = ev {
            self.progress(call, Progress::Overlay(ev));
        }
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

/// What `POST /call` answers (and `p2psip call --json` prints); read back by `p2psip
/// call`, which shows it as text ([`Display`](fmt::Display)).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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

/// The report as a few lines of text: who called whom and how it ended, the Ringing's
/// route and timing, the Call-ID and the SIP messages.
impl fmt::Display for CallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.aor {
            Some(aor) => write!(f, "call {} -> {aor} (peer {})", self.from, self.to)?,
            None => write!(f, "call {} -> {}", self.from, self.to)?,
        }
        write!(f, ": {}", self.result)?;
        if let Some(r) = &self.reason {
            write!(f, " ({r})")?;
        }
        writeln!(f)?;
        if let Some(ice) = &self.ice {
            writeln!(f, "  ice: {ice}")?;
        }
        if let Some(srd) = self.srd_ms {
            writeln!(
                f,
                "  ringing after {srd:.1} ms (SRD), route {} -> {} ({} hops)",
                if self.cached { "contact cache" } else { "CSP" },
                self.route.join(" -> "),
                self.hops,
            )?;
        }
        if let Some(ans) = self.answer_ms {
            writeln!(f, "  answered after {ans:.1} ms")?;
        }
        writeln!(f, "  Call-ID {}", self.call_id)?;
        for m in &self.sip {
            writeln!(f, "  {m}")?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Place a call from this peer to `to` and run it to its end: INVITE, wait for Ringing,
/// 180 and 200 (the user agent ACKs), hold, BYE, wait for its 200.
pub(crate) async fn place(
    h: &Handle<NodeCore>,
    shared: &Arc<Shared>,
    to: NodeId,
    aor: Option<String>,
    hold: Duration,
    dialog_timeout: Duration,
) -> CallReport {
    let me = h.contact();
    let mut report = CallReport {
        from: me.id.to_string(),
        to: to.to_string(),
        aor: aor.clone(),
        ..CallReport::default()
    };
    // A place among the calls in flight before any work (ICE gathering binds sockets);
    // it is given back, with the call's progress sink, however this call ends, even when
    // whoever waits for it goes away.
    let Some(slot) = OutgoingSlot::take(shared) else {
        return failed(report, "too many calls in flight on this peer".into());
    };
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
    let (tx, mut rx) = mpsc::channel(SINK);
    let local_description = ice.as_ref().map(|s| s.local_description().to_sdp());
    let sinks = shared.clone();
    let holder = slot.holder();
    let t0 = Instant::now();
    // The sink is registered inside the loop, before any answer can be dispatched.
    let placed = h
        .call(move |core, now| {
            let mut offer = core.plain_sdp();
            if let Some(d) = &local_description {
                offer.extend_from_slice(d.as_bytes());
            }
            let (call, handle) = core.place_call(now, to, aor.as_deref(), &offer)?;
            crate::db::call_placed(&sinks.db, now, handle, &call);
            let mut s = lock(&sinks.sinks);
            s.by_handle.insert(handle, tx);
            s.by_call.insert(call.clone(), handle);
            *lock(&holder) = Some((handle, call.clone()));
            Ok::<_, sip::CallError>(call)
        })
        .await;
    let call = match placed {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return failed(report, e.to_string()),
        Err(e) => return failed(report, e.to_string()),
    };
    report.call_id = call.clone();
    let outcome = follow(
        h,
        &mut rx,
        &mut report,
        &call,
        (hold, dialog_timeout),
        t0,
        &mut ice,
    )
    .await;
    drop(slot);
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
            shared.completed_total.fetch_add(1, Ordering::Relaxed);
        }
        Err(why) => {
            if report.result.is_empty() {
                report.result = "failed".into();
            }
            report.reason = Some(why);
            shared.failed_total.fetch_add(1, Ordering::Relaxed);
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

fn failed(mut r: CallReport, why: String) -> CallReport {
    r.result = "failed".into();
    r.reason = Some(why);
    r
}

/// Follow a placed call: the overlay's Ringing (route, SRD), the callee's answer, ICE,
/// hold, BYE and its answer.
async fn follow(
    h: &Handle<NodeCore>,
    rx: &mut mpsc::Receiver<Progress>,
    report: &mut CallReport,
    call: &str,
    (hold, wait): (Duration, Duration),
    t0: Instant,
    ice: &mut Option<nat::IceSession>,
) -> Result<(), String> {
    // 1. Ringing from the overlay, then the callee's answer.
    let mut deadline = tokio::time::Instant::now() + wait;
    let answer = loop {
        match next(rx, deadline, report).await? {
            Progress::Overlay(SecureEvent::CallRinging {
                setup,
                route,
                cached,
                ..
            }) => {
                report.srd_ms = Some(ms(setup));
                report.hops = route.len();
                report.route = route.iter().map(|n| n.to_string()).collect();
                report.cached = cached;
                report.result = "ringing".into();
                deadline = tokio::time::Instant::now() + wait;
            }
            Progress::Overlay(SecureEvent::CallFailed { reason, .. }) => {
                return Err(format!("{reason:?}"));
            }
            Progress::Ua(UaEvent::Answered { sdp, .. }) => break sdp,
            Progress::Ua(UaEvent::Failed { code, .. }) => {
                return Err(format!("callee answered {code}"));
            }
            _ => {}
        }
    };
    report.answer_ms = Some(ms(t0.elapsed()));
    if let Some(s) = ice.as_mut() {
        let other = report.to.clone();
        report.ice = Some(run_ice(s, ice_of(&answer), &other).await);
    }
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    // 2. BYE and its answer.
    let bye = call.to_owned();
    match h.call(move |core, now| core.hang_up(now, &bye)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot hang up: {e}")),
        Err(e) => return Err(e.to_string()),
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match next(rx, deadline, report).await? {
            Progress::Ua(UaEvent::Ended { .. }) => return Ok(()),
            Progress::Ua(UaEvent::Failed { code, .. }) => {
                return Err(format!("callee answered the BYE with {code}"));
            }
            _ => {}
        }
    }
}

/// The next progress report of a call, recording SIP lines on the way.
async fn next(
    rx: &mut mpsc::Receiver<Progress>,
    deadline: tokio::time::Instant,
    report: &mut CallReport,
) -> Result<Progress, String> {
    loop {
        let p = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err("the call's progress queue closed".into()),
            Err(_) => {
                return Err(if report.result == "ringing" {
                    "no answer from the callee in the dialog".into()
                } else {
                    "no answer from the overlay".into()
                });
            }
        };
        match p {
            Progress::Sip { sent, line } => {
                report
                    .sip
                    .push(format!("{} {line}", if sent { ">" } else { "<" }));
            }
            other => return Ok(other),
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
    other: &str,
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

/// What the peer's own user agent reports: progress of calls placed here, and the calls it
/// answers (with ICE, the answer is prepared here).
pub(crate) async fn on_call_event(h: &Handle<NodeCore>, shared: &Arc<Shared>, ev: CallEvent) {
    match ev {
        CallEvent::Sip { call, sent, line } => {
            let handle = lock(&shared.sinks).by_call.get(&call).copied();
            if let Some(handle) = handle {
                shared.progress(handle, Progress::Sip { sent, line });
            }
        }
        CallEvent::Ua { peer, event } => {
            let Some(call) = event.call().map(str::to_owned) else {
                return;
            };
            let handle = lock(&shared.sinks).by_call.get(&call).copied();
            if let Some(handle) = handle {
                shared.progress(handle, Progress::Ua(event));
                return;
            }
            // A call answered here.
            match event {
                UaEvent::Incoming { sdp, .. } => {
                    info!(caller = %peer, %call, "incoming call: answering");
                    say(format_args!("incoming call from {peer} Call-ID {call}"));
                    shared.answered_total.fetch_add(1, Ordering::Relaxed);
                    if shared.ice.is_some() {
                        answer_with_ice(h, shared, peer, call, sdp);
                    }
                }
                UaEvent::Ended { .. } => {
                    info!(caller = %peer, %call, "call ended (BYE)");
                    say(format_args!("call ended from {peer} Call-ID {call}"));
                    shared.remember(HistoryEntry {
                        direction: "in",
                        peer: peer.to_string(),
                        call_id: call,
                        result: "ended".into(),
                    });
                }
                _ => {}
            }
        }
    }
}

/// Gather ICE candidates for an incoming call and answer with them (off the event loop:
/// gathering takes seconds); the checks then run while the caller runs its own.
fn answer_with_ice(
    h: &Handle<NodeCore>,
    shared: &Arc<Shared>,
    caller: NodeId,
    call: String,
    offer: Vec<u8>,
) {
    let Some(o) = shared.ice.clone() else {
        return;
    };
    let remote = ice_of(&offer);
    if shared.answering.fetch_add(1, Ordering::Relaxed) >= MAX_ANSWERING || remote.is_none() {
        shared.answering.fetch_sub(1, Ordering::Relaxed);
        let h = h.clone();
        tokio::spawn(async move {
            let _ = h
                .call(move |core, now| {
                    let sdp = core.plain_sdp();
                    core.answer_call(now, &call, sdp);
                })
                .await;
        });
        return;
    }
    let (h, shared) = (h.clone(), shared.clone());
    tokio::spawn(async move {
        let opts = nat::IceOptions {
            controlling: false,
            ..o.clone()
        };
        let session = match nat::IceSession::gather(opts).await {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(%caller, "ICE gathering failed ({e}): answering without ICE");
                None
            }
        };
        let description = session.as_ref().map(|s| s.local_description().to_sdp());
        let id = call.clone();
        let _ = h
            .call(move |core, now| {
                let mut sdp = core.plain_sdp();
                if let Some(d) = &description {
                    sdp.extend_from_slice(d.as_bytes());
                }
                core.answer_call(now, &id, sdp);
            })
            .await;
        shared.answering.fetch_sub(1, Ordering::Relaxed);
        if let Some(mut s) = session {
            let r = run_ice(&mut s, remote, &caller.to_string()).await;
            say(format_args!("ice {r} (call from {caller} Call-ID {call})"));
            tokio::time::sleep(o.connect_timeout).await;
        }
    });
}

/// The Node-ID whose front-end holds `aor`'s registration, fetched from the overlay and
/// checked (owner's signature, not expired).
pub(crate) async fn resolve_aor(
    h: &Handle<NodeCore>,
    space: overlay::IdSpace,
    aor: &str,
) -> Result<NodeId, String> {
    let key = sip::aor_key(space, aor);
    let answer = h
        .request(move |n, now| n.node_at(now).get(now, key))
        .await
        .map(<NodeCore as net::SecureCore>::split);
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
    if !reg.is_live(service::time::unix_ms()) || reg.record.aor != aor {
        return Err(format!("the registration for {aor} has lapsed"));
    }
    Ok(reg.record.node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completed call through a CSP reads as its outcome, the Ringing's route and
    /// timing, the Call-ID and the SIP messages, one per line.
    #[test]
    fn a_report_reads_as_lines() {
        let r = CallReport {
            from: "5".into(),
            to: "9".into(),
            aor: Some("sip:bob@p2psip.test".into()),
            result: "completed".into(),
            call_id: "c1".into(),
            srd_ms: Some(12.34),
            answer_ms: Some(20.0),
            route: vec!["3".into(), "9".into()],
            hops: 2,
            sip: vec!["> INVITE".into(), "< 180".into()],
            ..CallReport::default()
        };
        assert_eq!(
            r.to_string(),
            "call 5 -> sip:bob@p2psip.test (peer 9): completed\n  \
             ringing after 12.3 ms (SRD), route CSP -> 3 -> 9 (2 hops)\n  \
             answered after 20.0 ms\n  Call-ID c1\n  > INVITE\n  < 180\n"
        );
        let failed = CallReport {
            result: "failed".into(),
            reason: Some("no route".into()),
            ..r
        };
        assert!(
            failed
                .to_string()
                .starts_with("call 5 -> sip:bob@p2psip.test (peer 9): failed (no route)\n")
        );
    }
}
