//! How a secure peer carries records: store and fetch through the responsible peer, which
//! checks each store with the application's [`RecordValidator`] and copies it to its
//! successors.

use super::SecureNode;
use crate::secure::event::SecureEvent;
use crate::secure::records::{RecordAction, RecordOp, RecordValidator};
use crate::wire::Message;
use crate::{Contact, Event, NodeId, Time};

impl SecureNode {
    /// Install the validator the responsible peer runs on every store. Without one, stores
    /// from other peers are refused.
    pub fn set_record_validator(&mut self, v: std::sync::Arc<dyn RecordValidator>) {
        self.validator = Some(v);
    }

    /// Store `value` under `key` at the responsible peer; answered by
    /// [`SecureEvent::Stored`] with the returned handle.
    pub fn put(&mut self, now: Time, key: NodeId, value: Vec<u8>) -> u64 {
        self.start_record_op(now, key, Some(value))
    }

    /// Fetch the record under `key`; answered by [`SecureEvent::Fetched`].
    pub fn get(&mut self, now: Time, key: NodeId) -> u64 {
        self.start_record_op(now, key, None)
    }

    fn start_record_op(&mut self, now: Time, key: NodeId, value: Option<Vec<u8>>) -> u64 {
        let query = self.id();
        let too_big = value
            .as_ref()
            .is_some_and(|v| v.len() > self.ctx.cfg.max_record_bytes);
        if too_big || self.record_ops.len() >= self.ctx.cfg.max_pending {
            let why = if too_big {
                "record too large"
            } else {
                "too many record operations in flight"
            };
            self.finish_record_op(query, value.is_some(), Err(why.into()));
            return query;
        }
        let deadline = now + self.chord.config().lookup_timeout + self.chord.config().rpc_timeout;
        let lookup = self.chord.lookup(now, key);
        self.record_ops.push(RecordOp {
            query,
            lookup: Some(lookup),
            key,
            value,
            deadline,
        });
        self.pump_chord_events(now);
        query
    }

    fn finish_record_op(
        &mut self,
        query: u64,
        store: bool,
        result: Result<Option<Vec<u8>>, String>,
    ) {
        let ev = if store {
            SecureEvent::Stored {
                query,
                result: result.map(|_| ()),
            }
        } else {
            SecureEvent::Fetched {
                query,
                value: result.ok().flatten(),
            }
        };
        self.events.push_back(ev);
    }

    /// A Chord event for one of our record operations: send the store/fetch to the owner.
    /// Returns the event back when it is not ours.
    pub(super) fn record_lookup_event(&mut self, now: Time, ev: Event) -> Option<Event> {
        let lookup = match &ev {
            Event::LookupDone { lookup, .. } | Event::LookupFailed { lookup, .. } => *lookup,
            _ => return Some(ev),
        };
        let Some(pos) = self
            .record_ops
            .iter()
            .position(|o| o.lookup == Some(lookup))
        else {
            return Some(ev);
        };
        match ev {
            Event::LookupDone { owner, .. } => {
                let op = &mut self.record_ops[pos];
                op.lookup = None;
                let (query, key, value) = (op.query, op.key, op.value.clone());
                let msg = match value {
                    Some(value) => Message::Put {
                        query,
                        key,
                        value,
                        replica: false,
                    },
                    None => Message::Get { query, key },
                };
                let me = self.chord.contact();
                if owner.id == me.id {
                    self.handle_record_message(now, me, msg);
                } else {
                    self.send(owner, msg);
                }
            }
            _ => {
                let op = self.record_ops.swap_remove(pos);
                self.finish_record_op(op.query, op.value.is_some(), Err("lookup failed".into()));
            }
        }
        None
    }

    /// Send `reply` to `to`, who asked; a request of this peer's own is answered here.
    fn answer_record(&mut self, now: Time, to: Contact, reply: Message) {
        if to.id == self.chord.id() {
            self.handle_record_message(now, to, reply);
        } else {
            self.send(to, reply);
        }
    }

    /// Record traffic: Put, PutReply, Get, GetReply.
    pub(super) fn handle_record_message(&mut self, now: Time, from: Contact, msg: Message) {
        match msg {
            Message::Put {
                query,
                key,
                value,
                replica,
            } => {
                let result = self.accept_record(now, from, key, value, replica);
                if !replica {
                    let reply = Message::PutReply {
                        query,
                        error: result.err(),
                    };
                    self.answer_record(now, from, reply);
                }
            }
            Message::PutReply { query, error } => {
                self.owner_answered(query, true, error.map_or(Ok(None), Err));
            }
            Message::Get { query, key } => {
                let value = self.chord.records().get(&key).cloned();
                let reply = Message::GetReply { query, value };
                self.answer_record(now, from, reply);
            }
            Message::GetReply { query, value } => self.owner_answered(query, false, Ok(value)),
            _ => {}
        }
    }

    /// The owner answered `query`: finish the put (`put`) or get that waits for it (its
    /// lookup done) with `result`; an answer nothing waits for is dropped.
    fn owner_answered(&mut self, query: u64, put: bool, result: Result<Option<Vec<u8>>, String>) {
        let pos = self
            .record_ops
            .iter()
            .position(|o| o.query == query && o.lookup.is_none() && o.value.is_some() == put);
        if let Some(p) = pos {
            self.record_ops.swap_remove(p);
            self.finish_record_op(query, put, result);
        }
    }

    /// Validate and keep (or remove) a record; the responsible peer copies it on.
    fn accept_record(
        &mut self,
        now: Time,
        from: Contact,
        key: NodeId,
        value: Vec<u8>,
        replica: bool,
    ) -> Result<(), String> {
        if value.len() > self.ctx.cfg.max_record_bytes {
            return Err("record too large".into());
        }
        if !replica && !self.chord.owns(key) {
            return Err("not responsible for this key".into());
        }
        // A copy comes from the responsible peer, which lies between the key and us on the
        // ring; anyone else pushing "replicas" is refused (it would bypass responsibility).
        let space = self.ctx.arcs.space();
        if replica && space.distance(key, from.id) >= space.distance(key, self.chord.id()) {
            return Err("replica not from the responsible peer".into());
        }
        let Some(v) = self.validator.clone() else {
            return Err("this peer stores no records".into());
        };
        let now_ms = self.unix_ms(now);
        let old = self.chord.records().get(&key).map(Vec::as_slice);
        let action = v.validate(key, old, &value, now_ms)?;
        match action {
            RecordAction::Store => {
                if !self.chord.put_local(key, value.clone()) {
                    return Err("record table full".into());
                }
            }
            RecordAction::Remove => {
                self.chord.remove_local(key);
            }
            RecordAction::Replace(merged) => {
                if merged.len() > self.ctx.cfg.max_record_bytes {
                    return Err("record too large".into());
                }
                if !self.chord.put_local(key, merged) {
                    return Err("record table full".into());
                }
            }
        }
        // Replicas get the offered record, not a merged value: each merges it the same way.
        if !replica {
            let succs: Vec<Contact> = self
                .chord
                .successors()
                .filter(|c| c.id != self.chord.id())
                .take(self.ctx.cfg.record_replicas)
                .collect();
            for s in succs {
                self.send(
                    s,
                    Message::Put {
                        query: 0,
                        key,
                        value: value.clone(),
                        replica: true,
                    },
                );
            }
        }
        Ok(())
    }

    /// Fail record operations past their deadline.
    pub(super) fn expire_record_ops(&mut self, now: Time) {
        let mut i = 0;
        while i < self.record_ops.len() {
            if self.record_ops[i].deadline <= now {
                let op = self.record_ops.swap_remove(i);
                self.finish_record_op(op.query, op.value.is_some(), Err("timed out".into()));
            } else {
                i += 1;
            }
        }
    }
}
