//! The front-end's [`Overlay`] over a real [`SecureNode`]: registrations are records at
//! hash(AoR) (checked there by [`crate::RegistrationValidator`]), calls go through the secure
//! call flow, and in-dialog SIP travels as the node's dialog messages between the two ends.

use crate::overlay_api::{Overlay, OverlayCall, OverlayEvent, OverlayQuery};
use crate::registration::{SignedRegistration, aor_key, registration_in_value};
use overlay::secure::{SecureEvent, SecureNode};
use overlay::{IdSpace, NodeId, Time};
use std::collections::BTreeMap;

/// Maps the front-end's call handles to the node's (caller, caller's handle) pairs.
#[derive(Debug)]
pub struct SecureAdapter {
    me: NodeId,
    space: IdSpace,
    calls: BTreeMap<OverlayCall, (NodeId, u64)>,
    by_node: BTreeMap<(NodeId, u64), OverlayCall>,
    /// Fetches in flight: the AoR each looks for (others may share its key).
    finds: BTreeMap<OverlayQuery, String>,
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

    /// Turn a node event into a front-end event (`None`: not the front-end's business, e.g.
    /// Chord events, route ranking, SOS evidence, overlay-level Ringing).
    pub fn translate(&mut self, ev: SecureEvent) -> Option<OverlayEvent> {
        match ev {
            SecureEvent::Stored { query, result } => Some(OverlayEvent::Stored { query, result }),
            SecureEvent::Fetched { query, value } => {
                let aor = self.finds.remove(&query)?;
                Some(OverlayEvent::Found {
                    query,
                    registration: value.and_then(|v| registration_in_value(&v, &aor)),
                })
            }
            SecureEvent::IncomingCall {
                caller,
                call,
                invite,
            } => Some(OverlayEvent::IncomingCall {
                call: self.bind(caller.id, call),
                caller: caller.id,
                invite,
            }),
            SecureEvent::Dialog { caller, call, body } => {
                let c = *self.by_node.get(&(caller, call))?;
                Some(OverlayEvent::InDialog { call: c, sip: body })
            }
            SecureEvent::CallFailed { call, reason, .. } => {
                let c = *self.by_node.get(&(self.me, call))?;
                Some(OverlayEvent::CallFailed { call: c, reason })
            }
            _ => None,
        }
    }
}

/// A [`SecureNode`] seen as the front-end's [`Overlay`] (see [`SecureAdapter::with`]).
pub struct SecureOverlay<'a> {
    node: &'a mut SecureNode,
    adapter: &'a mut SecureAdapter,
}

impl Overlay for SecureOverlay<'_> {
    fn store_registration(&mut self, now: Time, reg: SignedRegistration) -> OverlayQuery {
        let key = reg.record.key(self.adapter.space);
        self.node.put(now, key, reg.to_bytes())
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
