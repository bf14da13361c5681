//! The rest of a call after it rang: SIP responses and in-dialog requests (180/200, ACK,
//! BYE, CANCEL) go straight between caller and callee over their authenticated link, as in
//! the paper's Figure 4 — intermediate peers never see them either. Each end remembers the
//! other for a bounded number of calls.

use crate::{Contact, NodeId};
use std::collections::BTreeMap;

/// The other end of a call, and at the callee the digest of the INVITE delivered.
type End = (Contact, Option<[u8; 32]>);

/// The two ends of calls that rang, oldest first; bounded. The callee's end also keeps the
/// digest of the INVITE it was delivered, to tell a caller's retry of the same call from a
/// new one.
#[derive(Debug, Default)]
pub(super) struct Dialogs {
    /// Each call's other end and the number it was remembered under.
    peers: BTreeMap<(NodeId, u64), (End, u64)>,
    /// The calls by the number they were remembered under: the first is the oldest. A map
    /// rather than a queue, so that a call that ends leaves in O(log n) at carrier rates.
    order: BTreeMap<u64, (NodeId, u64)>,
    /// The number the next call is remembered under.
    next: u64,
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
        match self.peers.get_mut(&(caller, call)) {
            Some((end, _)) => *end = (peer, invite),
            None => {
                let seq = self.next;
                self.next += 1;
                self.peers.insert((caller, call), ((peer, invite), seq));
                self.order.insert(seq, (caller, call));
            }
        }
        while self.order.len() > cap.max(1) {
            if let Some((_, old)) = self.order.pop_first() {
                self.peers.remove(&old);
            }
        }
    }

    /// The other end of call (`caller`, `call`), if remembered.
    pub(super) fn get(&self, caller: NodeId, call: u64) -> Option<Contact> {
        self.peers.get(&(caller, call)).map(|((peer, _), _)| *peer)
    }

    /// Was this very INVITE of call (`caller`, `call`) delivered here already? A caller that
    /// saw no Ringing in time sends the same request again, over another CSP.
    pub(super) fn delivered(&self, caller: NodeId, call: u64, invite: &[u8; 32]) -> bool {
        self.peers
            .get(&(caller, call))
            .is_some_and(|((_, d), _)| d.as_ref() == Some(invite))
    }

    /// Forget call (`caller`, `call`).
    pub(super) fn remove(&mut self, caller: NodeId, call: u64) {
        if let Some((_, seq)) = self.peers.remove(&(caller, call)) {
            self.order.remove(&seq);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn end(id: u128) -> Contact {
        Contact {
            id: NodeId(id),
            addr: None,
        }
    }

    #[test]
    fn ended_calls_leave_and_the_oldest_remembered_go_first_over_the_cap() {
        let mut d = Dialogs::default();
        for call in 0..4 {
            d.insert(NodeId(1), call, end(2), None, 4);
        }
        d.remove(NodeId(1), 1);
        assert_eq!(d.len(), 3);
        assert!(d.get(NodeId(1), 1).is_none());
        // Room for one more without forgetting anyone; then the oldest (call 0) goes.
        d.insert(NodeId(1), 4, end(2), None, 4);
        assert_eq!(d.len(), 4);
        assert!(d.get(NodeId(1), 0).is_some());
        d.insert(NodeId(1), 5, end(3), None, 4);
        assert_eq!(d.len(), 4);
        assert!(d.get(NodeId(1), 0).is_none());
        assert_eq!(d.get(NodeId(1), 5), Some(end(3)));
        // Remembering a call again updates it in place and keeps its age.
        d.insert(NodeId(1), 2, end(9), Some([7; 32]), 4);
        assert!(d.delivered(NodeId(1), 2, &[7; 32]));
        d.insert(NodeId(1), 6, end(2), None, 4);
        assert!(d.get(NodeId(1), 2).is_none(), "call 2 was the oldest left");
        assert!(d.accepts(NodeId(3), NodeId(1), 5));
        assert!(!d.accepts(NodeId(2), NodeId(1), 5));
    }
}
