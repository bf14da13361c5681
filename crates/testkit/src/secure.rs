//! Shorthands for the secure call flow on a [`Network`] of [`SecureNode`]s.

use crate::network::Network;
use overlay::NodeId;
use overlay::secure::{Outcome, SecureEvent, SecureNode};
use std::time::Duration;

/// How long [`Network::call`] lets a call run: past one retry of the caller (the call
/// timeout is 3 s).
pub const CALL_RUN: Duration = Duration::from_secs(5);

/// The INVITE a test call carries.
pub const TEST_INVITE: &[u8] = b"INVITE sip:bob SIP/2.0";

impl Network<SecureNode> {
    /// `caller` calls `callee` with [`TEST_INVITE`]; the network runs for [`CALL_RUN`].
    pub fn call(&mut self, caller: NodeId, callee: NodeId) {
        self.act(caller, |n, now| n.call(now, callee, TEST_INVITE.to_vec()));
        self.run_for(CALL_RUN);
    }

    /// How often `caller` heard its callee ring.
    pub fn rang(&self, caller: NodeId) -> usize {
        self.count(caller, |e| matches!(e, SecureEvent::CallRinging { .. }))
    }

    /// How many calls reached `callee`.
    pub fn incoming(&self, callee: NodeId) -> usize {
        self.count(callee, |e| matches!(e, SecureEvent::IncomingCall { .. }))
    }

    /// Evidence for the SOS reported since event index `since`: (reporter, subject, outcome).
    pub fn reports_since(&self, since: usize) -> Vec<(NodeId, NodeId, Outcome)> {
        self.events()
            .get(since..)
            .unwrap_or_default()
            .iter()
            .filter_map(|(by, e)| match e {
                SecureEvent::Report { subject, outcome } => Some((*by, *subject, *outcome)),
                _ => None,
            })
            .collect()
    }

    /// The subjects of every report of one kind so far.
    pub fn reported(&self, kind: Outcome) -> Vec<NodeId> {
        self.reports_since(0)
            .into_iter()
            .filter_map(|(_, subject, outcome)| (outcome == kind).then_some(subject))
            .collect()
    }

    fn count(&self, peer: NodeId, what: impl Fn(&SecureEvent) -> bool) -> usize {
        self.events()
            .iter()
            .filter(|(id, e)| *id == peer && what(e))
            .count()
    }
}
