//! The front-end's [`Overlay`] over a real [`SecureNode`]: registrations are records at
//! hash(AoR) (checked there by [`crate::RegistrationValidator`]), calls go through the secure
//! call flow, and in-dialog SIP travels as the node's dialog messages between the two ends.

use crate::overlay_api::{Overlay, OverlayCall, OverlayEvent, OverlayQuery};
use crate::registration::{SignedRegistration, aor_key, registration_in_value};
use overlay::secure::{SecureEvent, SecureNode};
use overlay::{IdSpace, NodeId, Time};
use std::collections::{BTreeMap, BTreeSet};

/// Maps the front-end's call handles to the node's (caller, caller's handle) pairs.
#[derive(Debug)]
pub struct SecureAdapter {
    me: NodeId,
    space: IdSpace,
    calls: BTreeMap<OverlayCall, (NodeId, u64)>,
    by_node: BTreeMap<(NodeId, u64), OverlayCall>,
    /// Fetches in flight: the AoR each looks for (others may share its key).
    finds: BTreeMap<OverlayQuery, String>,
    /// Stores in flight (their answers are the front-end's, not the application's).
    stores: BTreeSet<OverlayQuery>,
    next: u64,
}

impl SecureAdapter {
    /// For peer `me` in ID space `space`.
    pub fn new(me: NodeId, space: IdSpace) -> Self {
        SecureAdapter {
            me,
            space,
            calls: BTreeMap::new(),
            by_node: BTreeMap::new(),
            finds: BTreeMap::new(),
            stores: BTreeSet::new(),
            next: 0,
        }
    }

    fn bind(&mut self, caller: NodeId, call: u64) -> OverlayCall {
        if let Some(c) = self.by_node.get(&(caller, call)) {
            return *c;
        }
        self.next += 1;
        self.calls.insert(self.next, (caller, call));
        self.by_node.insert((caller, call), self.next);
        self.next
    }

    /// Borrow `node` as the front-end's overlay.
    pub fn with<'a>(&'a mut self, node: &'a mut SecureNode) -> SecureOverlay<'a> {
        SecureOverlay {
            node,
            adapter: self,
        }
    }

    /// Take the node events that answer or concern the front-end (its stores and finds,
    /// calls for its phones, in-dialog messages and failures of its calls) as front-end
    /// events; give every other event back untouched, for whoever else drives the node.
    pub fn take(&mut self, ev: SecureEvent) -> Taken {
        match ev {
            SecureEvent::Stored { query, result } if self.stores.remove(&query) => {
                Taken::FrontEnd(OverlayEvent::Stored { query, result })
            }
            SecureEvent::Fetched { query, value } => match self.finds.remove(&query) {
                Some(aor) => Taken::FrontEnd(OverlayEvent::Found {
                    query,
                    registration: value.and_then(|v| registration_in_value(&v, &aor)),
                }),
                None => Taken::Other(SecureEvent::Fetched { query, value }),
            },
            SecureEvent::IncomingCall {
                caller,
                call,
                invite,
            } => Taken::FrontEnd(OverlayEvent::IncomingCall {
                call: self.bind(caller.id, call),
                caller: caller.id,
                invite,
            }),
            SecureEvent::Dialog { caller, call, body } => match self.by_node.get(&(caller, call)) {
                Some(c) => Taken::FrontEnd(OverlayEvent::InDialog {
                    call: *c,
                    sip: body,
                }),
                None => Taken::Other(SecureEvent::Dialog { caller, call, body }),
            },
            SecureEvent::CallFailed {
                call,
                callee,
                reason,
            } => match self.by_node.get(&(self.me, call)) {
                Some(c) => Taken::FrontEnd(OverlayEvent::CallFailed { call: *c, reason }),
                None => Taken::Other(SecureEvent::CallFailed {
                    call,
                    callee,
                    reason,
                }),
            },
            other => Taken::Other(other),
        }
    }
}

/// Whose business a node event is ([`SecureAdapter::take`]).
#[derive(Debug)]
pub enum Taken {
    /// The front-end's, in its terms.
    FrontEnd(OverlayEvent),
    /// Not the front-end's: for whoever else drives the node.
    Other(SecureEvent),
}

/// A [`SecureNode`] seen as the front-end's [`Overlay`] (see [`SecureAdapter::with`]).
pub struct SecureOverlay<'a> {
    node: &'a mut SecureNode,
    adapter: &'a mut SecureAdapter,
}

impl Overlay for SecureOverlay<'_> {
    fn store_registration(&mut self, now: Time, reg: SignedRegistration) -> OverlayQuery {
        let key = reg.record.key(self.adapter.space);
        let q = self.node.put(now, key, reg.to_bytes());
        self.adapter.stores.insert(q);
        q
    }

    fn find_registration(&mut self, now: Time, aor: &str) -> OverlayQuery {
        let q = self.node.get(now, aor_key(self.adapter.space, aor));
        self.adapter.finds.insert(q, aor.to_owned());
        q
    }

    fn send_call(&mut self, now: Time, callee: NodeId, invite: Vec<u8>) -> OverlayCall {
        let h = self.node.call(now, callee, invite);
        let me = self.adapter.me;
        self.adapter.bind(me, h)
    }

    fn send_in_dialog(&mut self, _now: Time, call: OverlayCall, sip: Vec<u8>) {
        if let Some(&(caller, h)) = self.adapter.calls.get(&call) {
            self.node.send_dialog(caller, h, sip);
        }
    }

    fn end_call(&mut self, _now: Time, call: OverlayCall) {
        if let Some((caller, h)) = self.adapter.calls.remove(&call) {
            self.adapter.by_node.remove(&(caller, h));
            self.node.end_dialog(caller, h);
        }
    }
}
