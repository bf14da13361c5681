//! The rest of a call after it rang: SIP responses and in-dialog requests (180/200, ACK,
//! BYE, CANCEL) go straight between caller and callee over their authenticated link, as in
//! the paper's Figure 4 — intermediate peers never see them either. Each end remembers the
//! other for a bounded number of calls.

use crate::{Contact, NodeId};
use std::collections::{BTreeMap, VecDeque};

/// The other end of a call, and at the callee the digest of the INVITE delivered.
type End = (Contact, Option<[u8; 32]>);

/// The two ends of calls that rang, oldest first; bounded. The callee's end also keeps the
/// digest of the INVITE it was delivered, to tell a caller's retry of the same call from a
/// new one.
#[derive(Debug, Default)]
pub(super) struct Dialogs {
    peers: BTreeMap<(NodeId, u64), End>,
    order: VecDeque<(NodeId, u64)>,
}

impl Dialogs {
    /// Remember the other end of call (`caller`, `call`) (and, at the callee, the digest of
    /// the INVITE delivered), forgetting the oldest over `cap`.
    pub(super) fn insert(
        &mut self,
        caller: NodeId,
        call: u64,
        peer: Contact,
        invite: Option<[u8; 32]>,
        cap: usize,
    ) {
        if self.peers.insert((caller, call), (peer, invite)).is_none() {
            self.order.push_back((caller, call));
        }
        while self.order.len() > cap.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.peers.remove(&old);
            }
        }
    }

    /// The other end of call (`caller`, `call`), if remembered.
    pub(super) fn get(&self, caller: NodeId, call: u64) -> Option<Contact> {
        self.peers.get(&(caller, call)).map(|(peer, _)| *peer)
    }

    /// Was this very INVITE of call (`caller`, `call`) delivered here already? A caller that
    /// saw no Ringing in time sends the same request again, over another CSP.
    pub(super) fn delivered(&self, caller: NodeId, call: u64, invite: &[u8; 32]) -> bool {
        self.peers
            .get(&(caller, call))
            .is_some_and(|(_, d)| d.as_ref() == Some(invite))
    }

    /// Forget call (`caller`, `call`).
    pub(super) fn remove(&mut self, caller: NodeId, call: u64) {
        if self.peers.remove(&(caller, call)).is_some() {
            self.order.retain(|k| *k != (caller, call));
        }
    }

    /// May `from` send in-dialog messages of call (`caller`, `call`)? Only its other end.
    pub(super) fn accepts(&self, from: NodeId, caller: NodeId, call: u64) -> bool {
        self.get(caller, call).is_some_and(|peer| peer.id == from)
    }

    /// Calls remembered.
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }
}
