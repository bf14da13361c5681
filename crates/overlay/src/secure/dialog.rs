//! The rest of a call after it rang: SIP responses and in-dialog requests (180/200, ACK,
//! BYE, CANCEL) go straight between caller and callee over their authenticated link, as in
//! the paper's Figure 4 — intermediate peers never see them either. Each end remembers the
//! other for a bounded number of calls.

use super::node::{SecureEvent, SecureNode};
use crate::wire::Message;
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

    fn get(&self, caller: NodeId, call: u64) -> Option<Contact> {
        self.peers.get(&(caller, call)).copied()
    }

    fn remove(&mut self, caller: NodeId, call: u64) {
        if self.peers.remove(&(caller, call)).is_some() {
            self.order.retain(|k| *k != (caller, call));
        }
    }

    /// Calls remembered.
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }
}

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

    /// Calls whose other end is remembered.
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// An in-dialog message arrived: only the call's other end may send it.
    pub(super) fn on_dialog(&mut self, from: Contact, caller: NodeId, call: u64, body: Vec<u8>) {
        match self.dialogs.get(caller, call) {
            Some(peer) if peer.id == from.id => {
                self.events
                    .push_back(SecureEvent::Dialog { caller, call, body });
            }
            _ => {
                self.dialog_refused += 1;
            }
        }
    }
}
