//! The SIP front-end's overlay, for real: a peer runtime's secure node behind the
//! [`sip::Overlay`] interface. Registrations become overlay records (checked by the
//! responsible peer with [`sip::RegistrationValidator`]), INVITEs go through the secure call
//! flow (CSP, PingRequest multicast, SOS-ranked route), and responses and in-dialog requests
//! travel between the caller's and the callee's peers directly over their TLS link.
//!
//! The front-end's calls are synchronous; each starts work on the peer's loop through its
//! [`Handle`] and returns a handle at once. Answers and arrivals are queued here and the
//! front-end's driver is woken to collect them.

use crate::{Handle, NetError, SecureCore};
use overlay::secure::SecureEvent;
use overlay::{IdSpace, NodeId, Time};
use sip::driver::OverlayPort;
use sip::{
    Overlay, OverlayCall, OverlayEvent, OverlayQuery, SignedRegistration, aor_key,
    registration_in_value,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Most calls tracked at once (the front-end ends them; this bounds a misbehaving one).
const MAX_CALLS: usize = 65_536;
/// Most events waiting for the front-end.
const MAX_EVENTS: usize = 65_536;
/// Most in-dialog messages queued for a call whose set-up has not returned yet.
const MAX_QUEUED_PER_CALL: usize = 16;
/// Most node events held back because their call's handle was not known yet.
const MAX_EARLY: usize = 256;

type Waker = Arc<dyn Fn() + Send + Sync>;

enum CallState {
    /// `send_call` returned; the node has not handed out its call handle yet.
    Placing { queued: Vec<Vec<u8>> },
    /// The call as the secure node names it: (caller's Node-ID, caller's handle).
    Known { caller: NodeId, call: u64 },
}

#[derive(Default)]
struct Shared {
    events: VecDeque<OverlayEvent>,
    waker: Option<Waker>,
    next: u64,
    calls: HashMap<OverlayCall, CallState>,
    by_key: HashMap<(NodeId, u64), OverlayCall>,
    early: VecDeque<SecureEvent>,
    dropped: u64,
}

impl Shared {
    fn push(&mut self, ev: OverlayEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.dropped += 1;
            return;
        }
        self.events.push_back(ev);
        if let Some(w) = &self.waker {
            w();
        }
    }

    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// [`sip::Overlay`] over one running secure peer.
pub struct RuntimeOverlay<C: SecureCore> {
    handle: Handle<C>,
    me: NodeId,
    space: IdSpace,
    shared: Arc<Mutex<Shared>>,
    outbox: mpsc::Sender<Outgoing>,
}

/// In-dialog work for the peer, in the order the front-end asked for it (an ACK must not be
/// overtaken by the BYE after it).
enum Outgoing {
    Dialog {
        caller: NodeId,
        call: u64,
        sip: Vec<u8>,
    },
    End {
        caller: NodeId,
        call: u64,
    },
}

/// Most in-dialog messages waiting for the peer's loop.
const OUTBOX: usize = 4096;

fn lock(s: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: SecureCore> RuntimeOverlay<C> {
    /// Serve the front-end from `handle`'s peer; `events` are the peer's application events
    /// (what [`crate::run_events`] passes on). Must run inside a tokio runtime.
    pub fn new(handle: Handle<C>, space: IdSpace, mut events: mpsc::Receiver<SecureEvent>) -> Self {
        let me = handle.contact().id;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s2 = shared.clone();
        let h2 = handle.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                on_node_event(&s2, &h2, me, ev);
            }
        });
        let (outbox, mut rx) = mpsc::channel::<Outgoing>(OUTBOX);
        let h3 = handle.clone();
        tokio::spawn(async move {
            while let Some(op) = rx.recv().await {
                let r = match op {
                    Outgoing::Dialog { caller, call, sip } => {
                        h3.call(move |n, _| {
                            n.node().send_dialog(caller, call, sip);
                        })
                        .await
                    }
                    Outgoing::End { caller, call } => {
                        h3.call(move |n, _| n.node().end_dialog(caller, call)).await
                    }
                };
                if r.is_err() {
                    return;
                }
            }
        });
        RuntimeOverlay {
            handle,
            me,
            space,
            shared,
            outbox,
        }
    }
}

/// Map one secure-node event to the front-end's terms.
fn on_node_event<C: SecureCore>(
    shared: &Arc<Mutex<Shared>>,
    handle: &Handle<C>,
    me: NodeId,
    ev: SecureEvent,
) {
    let mut s = lock(shared);
    match ev {
        SecureEvent::IncomingCall {
            caller,
            call,
            invite,
        } => {
            if s.calls.len() >= MAX_CALLS {
                s.dropped += 1;
                let h = handle.clone();
                tokio::spawn(async move {
                    let _ = h
                        .call(move |n, _| n.node().end_dialog(caller.id, call))
                        .await;
                });
                return;
            }
            let q = s.next();
            s.calls.insert(
                q,
                CallState::Known {
                    caller: caller.id,
                    call,
                },
            );
            s.by_key.insert((caller.id, call), q);
            s.push(OverlayEvent::IncomingCall {
                call: q,
                caller: caller.id,
                invite,
            });
        }
        SecureEvent::Dialog { caller, call, body } => match s.by_key.get(&(caller, call)) {
            Some(q) => {
                let q = *q;
                s.push(OverlayEvent::InDialog { call: q, sip: body });
            }
            None if caller == me => hold_early(&mut s, SecureEvent::Dialog { caller, call, body }),
            None => s.dropped += 1,
        },
        SecureEvent::CallFailed {
            call,
            callee,
            reason,
        } => match s.by_key.get(&(me, call)) {
            Some(q) => {
                let q = *q;
                s.push(OverlayEvent::CallFailed { call: q, reason });
            }
            None => hold_early(
                &mut s,
                SecureEvent::CallFailed {
                    call,
                    callee,
                    reason,
                },
            ),
        },
        _ => {}
    }
}

fn hold_early(s: &mut Shared, ev: SecureEvent) {
    if s.early.len() >= MAX_EARLY {
        s.early.pop_front();
        s.dropped += 1;
    }
    s.early.push_back(ev);
}

impl<C: SecureCore> Overlay for RuntimeOverlay<C> {
    fn store_registration(&mut self, _now: Time, reg: SignedRegistration) -> OverlayQuery {
        let key = aor_key(self.space, &reg.record.aor);
        let value = reg.to_bytes();
        let q = lock(&self.shared).next();
        let (h, shared) = (self.handle.clone(), self.shared.clone());
        tokio::spawn(async move {
            let result = match h.request(move |n, now| n.node().put(now, key, value)).await {
                Ok(SecureEvent::Stored { result, .. }) => result,
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            lock(&shared).push(OverlayEvent::Stored { query: q, result });
        });
        q
    }

    fn find_registration(&mut self, _now: Time, aor: &str) -> OverlayQuery {
        let key = aor_key(self.space, aor);
        let aor = aor.to_owned();
        let q = lock(&self.shared).next();
        let (h, shared) = (self.handle.clone(), self.shared.clone());
        tokio::spawn(async move {
            let registration = match h.request(move |n, now| n.node().get(now, key)).await {
                // Other AoRs may share the key: take this one's.
                Ok(SecureEvent::Fetched { value: Some(v), .. }) => registration_in_value(&v, &aor),
                _ => None,
            };
            lock(&shared).push(OverlayEvent::Found {
                query: q,
                registration,
            });
        });
        q
    }

    fn send_call(&mut self, _now: Time, callee: NodeId, invite: Vec<u8>) -> OverlayCall {
        let mut s = lock(&self.shared);
        let q = s.next();
        if s.calls.len() >= MAX_CALLS {
            s.push(OverlayEvent::CallFailed {
                call: q,
                reason: overlay::secure::CallFailure::Overloaded,
            });
            return q;
        }
        s.calls.insert(q, CallState::Placing { queued: Vec::new() });
        drop(s);
        let (h, shared, me) = (self.handle.clone(), self.shared.clone(), self.me);
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let Ok(call) = h
                .call(move |n, now| n.node().call(now, callee, invite))
                .await
            else {
                let mut s = lock(&shared);
                s.calls.remove(&q);
                s.push(OverlayEvent::CallFailed {
                    call: q,
                    reason: overlay::secure::CallFailure::NoRoute,
                });
                return;
            };
            let early = {
                let mut s = lock(&shared);
                let queued = match s.calls.insert(q, CallState::Known { caller: me, call }) {
                    Some(CallState::Placing { queued }) => queued,
                    // Ended by the front-end meanwhile.
                    _ => {
                        s.calls.remove(&q);
                        return;
                    }
                };
                s.by_key.insert((me, call), q);
                let (mine, rest): (Vec<_>, Vec<_>) = s.early.drain(..).partition(|e| {
                    matches!(e, SecureEvent::Dialog { caller, call: c, .. } if *caller == me && *c == call)
                        || matches!(e, SecureEvent::CallFailed { call: c, .. } if *c == call)
                });
                s.early = rest.into();
                // Queued while placing: ahead of anything sent from now on.
                for sip in queued {
                    if outbox
                        .try_send(Outgoing::Dialog {
                            caller: me,
                            call,
                            sip,
                        })
                        .is_err()
                    {
                        s.dropped += 1;
                    }
                }
                mine
            };
            for ev in early {
                on_node_event(&shared, &h, me, ev);
            }
        });
        q
    }

    fn send_in_dialog(&mut self, _now: Time, call: OverlayCall, sip: Vec<u8>) {
        let mut s = lock(&self.shared);
        match s.calls.get_mut(&call) {
            Some(CallState::Placing { queued }) => {
                if queued.len() < MAX_QUEUED_PER_CALL {
                    queued.push(sip);
                } else {
                    s.dropped += 1;
                }
            }
            Some(CallState::Known { caller, call }) => {
                let (caller, call) = (*caller, *call);
                if self
                    .outbox
                    .try_send(Outgoing::Dialog { caller, call, sip })
                    .is_err()
                {
                    s.dropped += 1;
                }
            }
            None => s.dropped += 1,
        }
    }

    fn end_call(&mut self, _now: Time, call: OverlayCall) {
        let mut s = lock(&self.shared);
        if let Some(CallState::Known { caller, call: c }) = s.calls.remove(&call) {
            s.by_key.remove(&(caller, c));
            if self
                .outbox
                .try_send(Outgoing::End { caller, call: c })
                .is_err()
            {
                s.dropped += 1;
            }
        }
    }
}

impl<C: SecureCore> OverlayPort for RuntimeOverlay<C> {
    fn next_event(&mut self) -> Option<OverlayEvent> {
        lock(&self.shared).events.pop_front()
    }

    fn set_waker(&mut self, waker: Arc<dyn Fn() + Send + Sync>) {
        lock(&self.shared).waker = Some(waker);
    }
}

/// Make `handle`'s peer check SIP registrations stored with it (signature by the named
/// peer's certificate key, owner rule, freshness): without a validator a peer stores nothing
/// for others.
pub async fn install_registration_validator<C: SecureCore>(
    handle: &Handle<C>,
) -> Result<(), NetError> {
    handle
        .call(|n, _| {
            let node = n.node();
            let space = node.chord().config().space;
            let verifier = node.context().verifier.clone();
            node.set_record_validator(Arc::new(sip::RegistrationValidator { verifier, space }));
        })
        .await
}
