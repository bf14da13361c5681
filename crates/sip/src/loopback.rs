//! An in-process overlay for tests and the SIPp benchmark, until the TLS overlay carries
//! registrations and in-dialog messages (see the lead's API notes for issue 7).
//!
//! Everything except the network is real: registrations are verified and owner-checked by
//! the same [`RegistrationStore`] a responsible peer runs, with the peers' real signatures;
//! a call reaches only the peer named in the registration. What it leaves out is the ring:
//! one store stands for the peers responsible for hash(AoR), and messages go straight to
//! the other front-end instead of through CSP, PingRequest multicast and TLS hops.

use crate::overlay_api::{Overlay, OverlayCall, OverlayEvent, OverlayQuery};
use crate::registration::{RegistrationStore, SignedRegistration};
use overlay::secure::{CallFailure, SigVerifier};
use overlay::{NodeId, Time};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Most events queued for one front-end (a flood is dropped, not buffered).
pub const MAX_QUEUE: usize = 65_536;
/// Most calls the hub tracks.
pub const MAX_CALLS: usize = 65_536;

type Waker = Arc<dyn Fn() + Send + Sync>;

struct Hub {
    store: RegistrationStore,
    verifier: Arc<dyn SigVerifier>,
    queues: BTreeMap<NodeId, VecDeque<OverlayEvent>>,
    wakers: BTreeMap<NodeId, Waker>,
    /// handle → (node holding it, the other end's node and handle)
    ends: BTreeMap<OverlayCall, (NodeId, NodeId, OverlayCall)>,
    next: u64,
    unix_offset_ms: u64,
    dropped: u64,
}

impl Hub {
    fn push(&mut self, to: NodeId, ev: OverlayEvent) -> bool {
        let Some(q) = self.queues.get_mut(&to) else {
            return false;
        };
        if q.len() >= MAX_QUEUE {
            self.dropped += 1;
            return true;
        }
        q.push_back(ev);
        if let Some(w) = self.wakers.get(&to) {
            w();
        }
        true
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// The shared in-process overlay; [`LoopbackNet::join`] gives each front-end its handle.
#[derive(Clone)]
pub struct LoopbackNet {
    hub: Arc<Mutex<Hub>>,
}

impl LoopbackNet {
    /// A net whose registration store verifies with `verifier`. `unix_offset_ms` maps the
    /// drivers' time to Unix milliseconds (as [`crate::FrontEndConfig::unix_offset_ms`]).
    pub fn new(verifier: Arc<dyn SigVerifier>, unix_offset_ms: u64) -> Self {
        LoopbackNet {
            hub: Arc::new(Mutex::new(Hub {
                store: RegistrationStore::new(100_000),
                verifier,
                queues: BTreeMap::new(),
                wakers: BTreeMap::new(),
                ends: BTreeMap::new(),
                next: 0,
                unix_offset_ms,
                dropped: 0,
            })),
        }
    }

    /// Attach peer `node`.
    pub fn join(&self, node: NodeId) -> LoopbackOverlay {
        if let Ok(mut h) = self.hub.lock() {
            h.queues.entry(node).or_default();
        }
        LoopbackOverlay {
            hub: self.hub.clone(),
            node,
        }
    }
}

/// One peer's view of the [`LoopbackNet`].
#[derive(Clone)]
pub struct LoopbackOverlay {
    hub: Arc<Mutex<Hub>>,
    node: NodeId,
}

impl LoopbackOverlay {
    /// Call `waker` whenever an event is queued for this peer (drivers use it to wake up).
    pub fn set_waker(&self, waker: Arc<dyn Fn() + Send + Sync>) {
        if let Ok(mut h) = self.hub.lock() {
            h.wakers.insert(self.node, waker);
        }
    }

    /// Take the next event for this peer.
    pub fn poll_event(&self) -> Option<OverlayEvent> {
        self.hub
            .lock()
            .ok()
            .and_then(|mut h| h.queues.get_mut(&self.node).and_then(|q| q.pop_front()))
    }

    /// Remove this peer (calls to it fail with NoRoute).
    pub fn leave(&self) {
        if let Ok(mut h) = self.hub.lock() {
            h.queues.remove(&self.node);
            h.wakers.remove(&self.node);
        }
    }
}

impl Overlay for LoopbackOverlay {
    fn store_registration(&mut self, now: Time, reg: SignedRegistration) -> OverlayQuery {
        let Ok(mut h) = self.hub.lock() else {
            return 0;
        };
        let q = h.id();
        let unix = h.unix_offset_ms + now.as_micros() / 1000;
        let verifier = h.verifier.clone();
        let result = h
            .store
            .put(unix, reg, verifier.as_ref())
            .map_err(|e| e.to_string());
        let me = self.node;
        h.push(me, OverlayEvent::Stored { query: q, result });
        q
    }

    fn find_registration(&mut self, now: Time, aor: &str) -> OverlayQuery {
        let Ok(mut h) = self.hub.lock() else {
            return 0;
        };
        let q = h.id();
        let unix = h.unix_offset_ms + now.as_micros() / 1000;
        let registration = h.store.get(unix, aor).cloned();
        let me = self.node;
        h.push(
            me,
            OverlayEvent::Found {
                query: q,
                registration,
            },
        );
        q
    }

    fn send_call(&mut self, _now: Time, callee: NodeId, invite: Vec<u8>) -> OverlayCall {
        let Ok(mut h) = self.hub.lock() else {
            return 0;
        };
        let mine = h.id();
        let theirs = h.id();
        let me = self.node;
        if h.ends.len() + 2 > MAX_CALLS {
            h.push(
                me,
                OverlayEvent::CallFailed {
                    call: mine,
                    reason: CallFailure::Overloaded,
                },
            );
            return mine;
        }
        h.ends.insert(mine, (me, callee, theirs));
        h.ends.insert(theirs, (callee, me, mine));
        let ev = OverlayEvent::IncomingCall {
            call: theirs,
            caller: me,
            invite,
        };
        if !h.push(callee, ev) {
            h.ends.remove(&mine);
            h.ends.remove(&theirs);
            h.push(
                me,
                OverlayEvent::CallFailed {
                    call: mine,
                    reason: CallFailure::NoRoute,
                },
            );
        }
        mine
    }

    fn send_in_dialog(&mut self, _now: Time, call: OverlayCall, sip: Vec<u8>) {
        let Ok(mut h) = self.hub.lock() else {
            return;
        };
        let Some(&(holder, other, their)) = h.ends.get(&call) else {
            return;
        };
        if holder != self.node {
            return;
        }
        h.push(other, OverlayEvent::InDialog { call: their, sip });
    }

    fn end_call(&mut self, _now: Time, call: OverlayCall) {
        if let Ok(mut h) = self.hub.lock()
            && h.ends.get(&call).is_some_and(|e| e.0 == self.node)
            && let Some((_, _, their)) = h.ends.remove(&call)
        {
            h.ends.remove(&their);
        }
    }
}

impl LoopbackNet {
    /// Events dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.hub.lock().map(|h| h.dropped).unwrap_or(0)
    }

    /// Calls whose ends the hub still tracks (both ends count).
    pub fn tracked_call_ends(&self) -> usize {
        self.hub.lock().map(|h| h.ends.len()).unwrap_or(0)
    }
}
