//! The paper's scenario on real TLS peers: peer 80 calls peer 1618 while 1617 drops what it
//! forwards, over plain Chord (a flat ring of the same peers, started for this call) and
//! over the secure overlay (CSP multicast of PingRequests, SOS ranking).

use super::calls::invite;
use super::cluster::{self, Launch, chord_timing, converge, launch};
use super::{Args, Cluster};
use crate::LabError;
use net::{CallOutcome, SecureCore};
use overlay::NodeId;
use sim::paper;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// What the scenario showed.
#[derive(Default, Clone, serde::Serialize)]
pub(crate) struct Scenario {
    chord_delivered: Option<bool>,
    chord_path: Vec<u128>,
    secure_delivered: bool,
    secure_srd_ms: f64,
    routes: Vec<Vec<u128>>,
    chosen_route: Vec<u128>,
    chosen_expectation: Option<f64>,
    invite_receivers: Vec<u128>,
    ping_carriers: Vec<u128>,
    /// Successors and fingers of the CSP and the peers of the paper's routes when the call
    /// was placed: (peer, successors, fingers). Printed when a route is missing.
    neighbours: Vec<(u128, Vec<u128>, Vec<u128>)>,
}

/// The CSP of 1618 and the peers between it and 1618: whose tables decide the routes.
const ROUTE_PEERS: [u128; 5] = [1536, 1593, 1597, 1600, 1609];

fn note(quiet: bool, s: &str) {
    if !quiet {
        say!("{s}");
    }
}

impl Scenario {
    /// Over plain Chord: a flat ring of the members launched with `l`, converged, then the
    /// call, and the ring shut down again.
    pub(crate) async fn plain_chord(
        &mut self,
        l: Launch<'_>,
        args: &Args,
        quiet: bool,
    ) -> Result<(), LabError> {
        let t = Instant::now();
        let flat = launch(l, quiet).await?;
        let _ = converge(
            &flat,
            t,
            Duration::from_secs(args.converge_timeout_s),
            2 * 11 * chord_timing().fix_fingers,
            quiet,
        )
        .await?;
        // The paper's attack is on a converged Chord: the lookup from 80 follows the true
        // fingers of the peers on its way (80 → 1104 → 1617). Right after the successors
        // converge some fingers are still being fixed (and backing off once the ring is
        // quiet), most of all on a loaded machine: wait for the path's own.
        let Some(caller) = flat.handle(80) else {
            return Err(LabError::Args("the paper's scenario needs peer 80".into()));
        };
        let span = caller
            .call(|n, _| n.node().chord().config().span())
            .await
            .map_err(LabError::request("peer 80: the span of its ring"))?;
        let path = cluster::true_path(&flat.ids, span, NodeId(80), NodeId(1618));
        let on_way = &path[..path.len().saturating_sub(1)];
        if !flat
            .await_true_fingers(on_way, 0, Duration::from_secs(30))
            .await
        {
            note(
                quiet,
                "  (the fingers on the way from 80 to 1618 were not all settled after 30 s)",
            );
        }
        flat.log.set_tracing(true);
        if let Some(out) = call_1618(&flat, 1, "over plain Chord").await? {
            self.chord_delivered = Some(matches!(out, CallOutcome::Ringing { .. }));
        }
        self.chord_path = std::iter::once(80)
            .chain(
                flat.log
                    .trace()
                    .iter()
                    .filter(|(_, k)| *k == "plain-invite")
                    .map(|(p, _)| p.0),
            )
            .collect();
        flat.shutdown().await;
        Ok(())
    }

    /// Over the converged secure overlay, whose peers rank routes at `sos`.
    pub(crate) async fn secure(
        &mut self,
        secure: &Cluster,
        sos: &sos::SosClient,
    ) -> Result<(), LabError> {
        // The routes the copies take are decided by the tables of the CSP and the peers
        // between it and 1618: the paper's are those of a converged ring. Right after the
        // successors converge, a finger may still be the one a peer found when it joined
        // (quiet maintenance refreshes fingers seconds apart), and a copy then goes
        // elsewhere (to 1617, which drops it).
        let route_peers = ROUTE_PEERS.map(NodeId);
        if !secure
            .await_true_fingers(
                &route_peers,
                cluster::chord_timing().successors,
                Duration::from_secs(30),
            )
            .await
        {
            tracing::warn!(
                "the tables of the peers between 1618's CSP and 1618 were not all settled after 30 s"
            );
        }
        self.neighbours.clear();
        for id in ROUTE_PEERS {
            let Some(h) = secure.handle(id) else { continue };
            if let Ok((succ, fingers)) = h
                .call(|n, _| {
                    let c = n.node().chord();
                    let succ: Vec<u128> = c.successors().map(|c| c.id.0).collect();
                    (succ, c.fingers().map(|c| c.id.0).collect::<Vec<u128>>())
                })
                .await
            {
                self.neighbours.push((id, succ, fingers));
            }
        }
        secure.log.set_tracing(true);
        secure.log.clear();
        if let Some(CallOutcome::Ringing { srd, route, .. }) =
            call_1618(secure, 2, "over the secure overlay").await?
        {
            self.secure_delivered = true;
            self.secure_srd_ms = srd.as_secs_f64() * 1e3;
            self.chosen_route = route.iter().map(|n| n.0).collect();
        }
        if let Some((_, routes)) = secure.log.rankings().into_iter().find(|(p, _)| p.0 == 1618) {
            self.routes = routes
                .iter()
                .map(|r| r.iter().map(|n| n.0).collect())
                .collect();
            let ids: Vec<Vec<sos::PeerId>> = routes
                .iter()
                .map(|r| r.iter().map(|n| sos::PeerId(n.0)).collect())
                .collect();
            if let Ok(r) = sos.rank(ids).await {
                self.chosen_expectation = r.ranked.first().map(|x| x.expectation);
            }
        }
        self.invite_receivers = ["call", "deliver"]
            .iter()
            .flat_map(|k| secure.log.receivers(k))
            .map(|p| p.0)
            .collect::<BTreeSet<u128>>()
            .into_iter()
            .collect();
        self.ping_carriers = secure
            .log
            .receivers("ping-request")
            .into_iter()
            .map(|p| p.0)
            .filter(|p| *p != 1618)
            .collect();
        secure.log.set_tracing(false);
        Ok(())
    }

    /// The two routes the paper's PingRequest copies take to 1618 (after the CSP).
    pub(crate) const PAPER_ROUTES: [&[u128]; 2] = [&[1600, 1618], &[1593, 1609, 1618]];

    /// Which of the paper's two routes the copies did not show (empty when both came in).
    pub(crate) fn missing_routes(&self) -> Vec<&'static [u128]> {
        Self::PAPER_ROUTES
            .into_iter()
            .filter(|want| !self.routes.iter().any(|r| r.as_slice() == *want))
            .collect()
    }

    /// The paper's outcome: plain Chord loses the call; over the secure overlay the copies
    /// reach 1618 over both of the paper's routes, the SOS chooses 1600 → 1618 between them,
    /// and the INVITE is seen only by the CSPGs, CSPs and the callee.
    pub(crate) fn reproduced(&self) -> bool {
        let invite_only_at_infra = self
            .invite_receivers
            .iter()
            .all(|p| *p == 1618 || paper::CSPS.contains(p) || paper::CSPGS.contains(p));
        self.chord_delivered != Some(true)
            && self.secure_delivered
            && self.chosen_route == vec![1600, 1618]
            && self.missing_routes().is_empty()
            && invite_only_at_infra
    }

    /// The scenario's lines for the operator.
    pub(crate) fn print(&self, peers: usize) {
        say!();
        say!("  Paper scenario: peer 80 calls peer 1618; peer 1617 drops what it forwards.");
        match self.chord_delivered {
            Some(d) => say!(
                "  plain Chord   {:<9}  INVITE path {} (flat TLS ring of the same peers)",
                if d { "DELIVERED" } else { "FAILED" },
                path_text(&self.chord_path)
            ),
            None => say!("  plain Chord   skipped (--no-baseline)"),
        }
        say!(
            "  secure        {:<9}  SRD {:.1} ms; INVITE seen only by {} (CSPGs/CSP and the callee)",
            if self.secure_delivered {
                "RINGING"
            } else {
                "FAILED"
            },
            self.secure_srd_ms,
            path_text(&self.invite_receivers)
        );
        say!(
            "                PingRequest copies reached 1618 over {} routes:",
            self.routes.len()
        );
        for r in &self.routes {
            say!("                  {}", path_text(r));
        }
        for r in self.missing_routes() {
            say!(
                "                  (missing: the paper's route {})",
                path_text(r)
            );
        }
        if !self.missing_routes().is_empty() {
            say!(
                "                PingRequest carried by {}; tables when the call was placed:",
                path_text(&self.ping_carriers)
            );
            for (id, succ, fingers) in &self.neighbours {
                say!(
                    "                  {id}: successors {} fingers {}",
                    path_text(succ),
                    path_text(fingers)
                );
            }
        }
        say!(
            "  SOS chose     {}  E = {:.5}",
            path_text(&self.chosen_route),
            self.chosen_expectation.unwrap_or(0.0)
        );
        say!(
            "  scenario      {}{}",
            if self.reproduced() { "PASS" } else { "FAIL" },
            if peers < 512 {
                " (the paper's exact paths need its 512 peers)"
            } else {
                ""
            }
        );
        say!();
    }
}

/// Peer 80 calls peer 1618 on `overlay` (the `seq`th call of the run, `over` naming the
/// overlay in errors); `None` when 80 is not among the members.
async fn call_1618(
    overlay: &Cluster,
    seq: u64,
    over: &str,
) -> Result<Option<CallOutcome>, LabError> {
    let Some(h) = overlay.handle(80) else {
        return Ok(None);
    };
    let inv = invite(NodeId(80), NodeId(1618), h.local_addr(), seq)
        .map_err(LabError::setup("building the scenario's INVITE"))?;
    let out = h
        .place_call(NodeId(1618), inv)
        .await
        .map_err(LabError::request(format!("peer 80 calling 1618 {over}")))?;
    Ok(Some(out))
}

/// A path as the operator reads it: `80 → 1104 → 1617`.
fn path_text(p: &[u128]) -> String {
    p.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" → ")
}
