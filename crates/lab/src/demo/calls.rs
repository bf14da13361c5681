//! The demo's calls: the INVITE a peer sends, one call rung and hung up, and the seeded
//! choices of who calls whom and who is killed.

use super::cluster::{Cluster, DemoPeer, sum_stats};
use super::host::process_cpu;
use super::{Args, pct, share};
use crate::LabError;
use crate::progress::bar;
use net::{CallOutcome, Handle};
use overlay::NodeId;
use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use sip::PEER_DOMAIN;
use sip::msg::{RequestParts, SipMethod, build_request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::task::JoinSet;

/// The peers of a churn or soak run: `handles[i]` runs `ids[i]`; `callers[i]` says whether
/// it places and takes calls, `killable[i]` whether it may be killed.
pub(crate) struct Parties<'a> {
    pub(crate) handles: &'a [Handle<DemoPeer>],
    pub(crate) ids: &'a [NodeId],
    pub(crate) callers: Vec<bool>,
    pub(crate) killable: Vec<bool>,
}

/// The call workload of the churn and soak runs: calls between pairs of parties, at most
/// `concurrency` at once, each rung and hung up ([`ring_and_hang_up`]).
pub(crate) struct Workload<'a> {
    parties: &'a Parties<'a>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The INVITE tag of the last call placed (every call's is new).
    seq: u64,
}

impl<'a> Workload<'a> {
    /// Calls among `parties`; their INVITE tags count up from `after_seq`.
    pub(crate) fn new(parties: &'a Parties<'a>, concurrency: usize, after_seq: u64) -> Self {
        Workload {
            parties,
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            seq: after_seq,
        }
    }

    /// A free call slot, held until the call ends; `None` when none came free within 50 ms,
    /// so that the run can look at its clock.
    pub(crate) async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            // The semaphore is never closed.
            p = self.slots.clone().acquire_owned() => p.ok(),
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => None,
        }
    }

    /// The call from party `a` to party `b`, for the run to spawn: it rings, hangs up and
    /// then frees `slot`.
    pub(crate) fn call(
        &mut self,
        (a, b): (usize, usize),
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> impl Future<Output = Result<CallOutcome, LabError>> + Send + 'static {
        self.seq += 1;
        let seq = self.seq;
        let (from, to) = (
            self.parties.handles[a].clone(),
            self.parties.handles[b].clone(),
        );
        let (caller, callee) = (self.parties.ids[a], self.parties.ids[b]);
        async move {
            let out = ring_and_hang_up(&from, Some(&to), caller, callee, seq).await;
            drop(slot);
            out
        }
    }
}

/// The peers to kill, in kill order: a seeded shuffle of the `killable` ones, cut to
/// `count(how many are killable)`.
pub(crate) fn pick_victims(
    rng: &mut Xoshiro256PlusPlus,
    killable: &[bool],
    count: impl FnOnce(usize) -> usize,
) -> Vec<usize> {
    let mut victims: Vec<usize> = (0..killable.len()).filter(|i| killable[*i]).collect();
    let n = count(victims.len());
    super::members::seeded_shuffle(rng, &mut victims);
    victims.truncate(n);
    victims
}

/// Call `callee` from the peer behind `from` and, once it rang, hang up at both ends (`to`:
/// the callee's handle, if it still runs). The demo's calls stop at Ringing and carry no BYE;
/// without the hang-up every peer would remember each of its calls until its dialog cap.
pub(crate) async fn ring_and_hang_up(
    from: &Handle<DemoPeer>,
    to: Option<&Handle<DemoPeer>>,
    caller: NodeId,
    callee: NodeId,
    seq: u64,
) -> Result<CallOutcome, LabError> {
    let inv = invite(caller, callee, from.local_addr(), seq)
        .map_err(LabError::setup("building the demo's INVITE"))?;
    let out = from
        .place_call(callee, inv)
        .await
        .map_err(LabError::request("placing a call"))?;
    if let CallOutcome::Ringing { call, .. } = out {
        from.end_call(caller, call)
            .await
            .map_err(LabError::request("hanging up a call that rang"))?;
        if let Some(to) = to {
            // A callee killed meanwhile has nothing left to forget.
            let _ = to.end_call(caller, call).await;
        }
    }
    Ok(out)
}

/// Two different peers of `parties` (at least two distinct), caller first.
pub(crate) fn pick_pair<T: Copy + PartialEq>(
    rng: &mut Xoshiro256PlusPlus,
    parties: &[T],
) -> (T, T) {
    let a = parties[rng.random_range(0..parties.len())];
    let mut b = parties[rng.random_range(0..parties.len())];
    while b == a {
        b = parties[rng.random_range(0..parties.len())];
    }
    (a, b)
}

/// The INVITE peer `caller` sends to peer `callee`, built with the sip crate's request
/// builder, with an SDP offer for one audio stream. `contact` is where the caller listens;
/// `tag` makes the Call-ID, From tag and Via branch unique.
pub(crate) fn invite(
    caller: NodeId,
    callee: NodeId,
    contact: SocketAddr,
    tag: u64,
) -> Result<Vec<u8>, sip::MsgError> {
    let ip = contact.ip();
    let sdp = format!(
        "v=0\r\no={caller} {tag} 1 IN IP4 {ip}\r\ns=p2psip\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let callee_uri = format!("sip:{callee}@{PEER_DOMAIN}");
    let request = build_request(RequestParts {
        method: SipMethod::Invite,
        uri: &callee_uri,
        via: &format!("SIP/2.0/TLS {contact};branch=z9hG4bK{tag:016x}"),
        from: &format!("<sip:{caller}@{PEER_DOMAIN}>;tag={tag:x}"),
        to: &format!("<{callee_uri}>"),
        call_id: &format!("{tag:016x}-{caller}@{PEER_DOMAIN}"),
        cseq: 1,
        contact: Some(&format!("<sip:{caller}@{contact};transport=tls>")),
        sdp: Some(sdp.as_bytes()),
    })?;
    Ok(request.to_bytes())
}

/// What the random calls measured.
pub(crate) struct RandomCalls {
    /// SRD of every call that rang, ms, sorted.
    pub(crate) srd: Vec<f64>,
    /// Mean route length of the calls that rang.
    pub(crate) hops_mean: f64,
    /// Calls that rang, and calls that failed.
    pub(crate) ringing: u64,
    pub(crate) failed: u64,
    /// Calls whose route came from the contact cache.
    pub(crate) cached: u64,
    /// Wall time of the calls, s.
    pub(crate) calls_s: f64,
    /// Call traffic per call: messages and bytes.
    pub(crate) msgs: f64,
    pub(crate) bytes: f64,
    /// What a call cost this process (every peer, the SOS and the E&A in it): CPU time
    /// in ms and TLS connections dialled, per call.
    pub(crate) cpu_ms: f64,
    pub(crate) dials: f64,
}

impl RandomCalls {
    fn attempted(&self) -> u64 {
        self.ringing + self.failed
    }

    fn ring_rate(&self) -> f64 {
        share(self.ringing, self.attempted())
    }

    fn per_s(&self) -> f64 {
        if self.calls_s > 0.0 {
            self.attempted() as f64 / self.calls_s
        } else {
            0.0
        }
    }

    /// The calls' part of the demo's JSON report.
    pub(crate) fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let srd = &self.srd;
        let v = serde_json::json!({
            "calls_attempted": self.attempted(),
            "calls_ringing": self.ringing,
            "ring_rate": self.ring_rate(),
            "srd_ms_p50": pct(srd, 50.0),
            "srd_ms_p95": pct(srd, 95.0),
            "srd_ms_p99": pct(srd, 99.0),
            "srd_ms_max": srd.last().copied().unwrap_or(0.0),
            // Every ringing call's SRD, sorted (what `p2psip eval --demo-report` plots as a CDF).
            "srd_ms": srd,
            "hops_mean": self.hops_mean,
            "cache_hits": self.cached,
            "call_messages_per_call": self.msgs,
            "call_bytes_per_call": self.bytes,
            "cpu_ms_per_call": self.cpu_ms,
            "tls_dials_per_call": self.dials,
            "calls_per_s": self.per_s(),
        });
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// The calls' lines for the operator (`concurrency` calls were in flight at once).
    pub(crate) fn print(&self, concurrency: usize) {
        say!(
            "  {} random calls: {} ringing ({:.2}%), {} failed; {:.0} calls/s with {concurrency} in flight",
            self.attempted(),
            self.ringing,
            100.0 * self.ring_rate(),
            self.failed,
            self.per_s(),
        );
        let srd = &self.srd;
        say!(
            "  SRD (INVITE sent → 180 Ringing)  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            pct(srd, 50.0),
            pct(srd, 95.0),
            pct(srd, 99.0),
            srd.last().copied().unwrap_or(0.0)
        );
        say!(
            "  hops {:.2} mean ({} from the contact cache); per call {:.1} messages, {:.0} bytes, {:.2} TLS dials, {:.1} ms CPU (all peers and servers)",
            self.hops_mean,
            self.cached,
            self.msgs,
            self.bytes,
            self.dials,
            self.cpu_ms
        );
    }
}

/// `args.calls` calls between random pairs of `ordinary` peers, `args.concurrency` at once,
/// each rung and hung up (the pairs drawn from `args.seed`).
pub(crate) async fn random(
    secure: &Cluster,
    ordinary: &[NodeId],
    args: &Args,
    quiet: bool,
) -> Result<RandomCalls, LabError> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed ^ 0xCA11);
    let msgs0 = secure.log.call_messages.load(Ordering::Relaxed);
    let bytes0 = secure.log.call_bytes.load(Ordering::Relaxed);
    let (cpu0, dials0) = (process_cpu(), sum_stats(&secure.handles).dials_ok);
    let pb = bar(args.calls, "calls", quiet);
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut set = JoinSet::new();
    let tc = Instant::now();
    for k in 0..args.calls {
        let (caller, callee) = pick_pair(&mut rng, ordinary);
        let Some(h) = secure.handle(caller.0).cloned() else {
            continue;
        };
        let to = secure.handle(callee.0).cloned();
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break; // the semaphore is never closed
        };
        let pb = pb.clone();
        set.spawn(async move {
            let out = ring_and_hang_up(&h, to.as_ref(), caller, callee, 1000 + k).await;
            drop(permit);
            pb.inc(1);
            out
        });
    }
    let mut srd = Vec::new();
    let mut hops = Vec::new();
    let (mut ringing, mut failed, mut cached) = (0u64, 0u64, 0u64);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(CallOutcome::Ringing {
                srd: d,
                route,
                cached: c,
                ..
            }) => {
                ringing += 1;
                srd.push(d.as_secs_f64() * 1e3);
                hops.push(route.len() as f64);
                cached += u64::from(c);
            }
            _ => failed += 1,
        }
    }
    pb.finish_and_clear();
    let calls_s = tc.elapsed().as_secs_f64();
    srd.sort_by(f64::total_cmp);
    let attempted = ringing + failed;
    let per_call = |v: u64| share(v, attempted);
    let msgs = per_call(secure.log.call_messages.load(Ordering::Relaxed) - msgs0);
    let bytes = per_call(secure.log.call_bytes.load(Ordering::Relaxed) - bytes0);
    let dials = per_call(sum_stats(&secure.handles).dials_ok.saturating_sub(dials0));
    let cpu_ms = (process_cpu().saturating_sub(cpu0)).as_secs_f64() * 1e3 / attempted.max(1) as f64;
    let hops_mean = if hops.is_empty() {
        0.0
    } else {
        hops.iter().sum::<f64>() / hops.len() as f64
    };
    Ok(RandomCalls {
        srd,
        hops_mean,
        ringing,
        failed,
        cached,
        calls_s,
        msgs,
        bytes,
        cpu_ms,
        dials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip::SipMessage;

    #[test]
    fn invite_parses_as_an_rfc3261_invite_with_an_sdp_offer() {
        let contact = SocketAddr::from(([127, 0, 0, 1], 5061));
        let bytes = invite(NodeId(80), NodeId(1618), contact, 7).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("INVITE sip:1618@p2psip.invalid SIP/2.0\r\n"),
            "{text}"
        );
        let Ok(SipMessage::Request(r)) = sip::msg::parse_frame(&bytes) else {
            panic!("not a SIP request: {text}");
        };
        assert_eq!(r.uri_user().as_deref(), Some("1618"));
        assert_eq!(r.to_user().as_deref(), Some("1618"));
        assert_eq!(r.from_tag().as_deref(), Some("7"));
        assert_eq!(r.cseq(), Some((1, SipMethod::Invite)));
        assert_eq!(
            r.call_id().as_deref(),
            Some("0000000000000007-80@p2psip.invalid")
        );
        assert_eq!(r.top_branch().as_deref(), Some("z9hG4bK0000000000000007"));
        assert!(
            r.body()
                .starts_with(b"v=0\r\no=80 7 1 IN IP4 127.0.0.1\r\n")
        );
        assert!(r.validate().is_ok());
    }
}
