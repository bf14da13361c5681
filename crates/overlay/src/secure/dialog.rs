//! The rest of a call after it rang: SIP responses and in-dialog requests (180/200, ACK,
//! BYE, CANCEL) go straight between caller and callee over their authenticated link, as in
//! the paper's Figure 4 — intermediate peers never see them either. Each end remembers the
//! other for a bounded number of calls.

use crate::{Contact, NodeId};
use std::collections::{BTreeMap, VecDeque};

/// The two ends of calls that rang, oldest first; bounded.
#[derive(Debug, Default)]
pub(super) struct Dialogs {
    peers: BTreeMap<(NodeId, u64), Contact>,
    order: VecDeque<(NodeId, u64)>,
}

impl Dialogs {
    /// Remember the other end of call (`caller`, `call`), forgetting the oldest over `cap`.
    pub(super) fn insert(&mut self, caller: NodeId, call: u64, peer: Contact, cap: usize) {
        if self.peers.insert((caller, call), peer).is_none() {
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
        self.peers.get(&(caller, call)).copied()
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
