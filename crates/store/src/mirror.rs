//! [`RecordMirror`] and [`PendingMirror`]: turn the node's records and a CSP's held
//! requests into the few [`Op`]s that changed since the last sync.
//!
//! `ChordNode` raises no event when records arrive (hand-over at join or leave, `put_local`)
//! or leave (moved to a new predecessor), so the driver compares its map with what was last
//! persisted, every few seconds and at shutdown. The mirror keeps a 64-bit digest per key,
//! not the values, so it costs 24 bytes per record, and bounds the hashing per diff.

use crate::model::{Op, PendingRequest, StoredRecord};
use overlay::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Bound;

/// Value bytes a diff re-hashes to look for changed records, by default: a full table is
/// 65 536 × 4 KiB = 256 MiB, far too much to hash on the event loop every few seconds.
pub const DEFAULT_HASH_BUDGET: usize = 256 << 10;

/// What the database holds of the node's records, as digests.
///
/// Each [`RecordMirror::diff`] finds every new and every vanished key (a walk over the
/// keys, no hashing), but re-hashes existing values only up to a byte budget, resuming
/// where the previous diff stopped. A value changed in place is therefore persisted within
/// `total value bytes / budget` diffs; below the budget, at once.
#[derive(Clone, Debug)]
pub struct RecordMirror {
    persisted: BTreeMap<NodeId, u64>,
    budget: usize,
    cursor: Option<NodeId>,
}

impl Default for RecordMirror {
    fn default() -> Self {
        RecordMirror::with_budget(DEFAULT_HASH_BUDGET)
    }
}

impl RecordMirror {
    /// A mirror of an empty database.
    pub fn new() -> Self {
        RecordMirror::default()
    }

    /// A mirror of an empty database that re-hashes at most `budget` value bytes per diff
    /// (at least one record).
    pub fn with_budget(budget: usize) -> Self {
        RecordMirror {
            persisted: BTreeMap::new(),
            budget,
            cursor: None,
        }
    }

    /// A mirror of what a snapshot loaded (call after putting the records back in the node).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a StoredRecord>) -> Self {
        RecordMirror {
            persisted: records
                .into_iter()
                .map(|r| (r.key, digest(&r.value)))
                .collect(),
            ..RecordMirror::default()
        }
    }

    /// The operations that bring the database to `current` (`ChordNode::records()`):
    /// removes for records gone, then puts (by key) for new records and for changed ones
    /// found within the hash budget. Assumes they will be applied; hand a dropped one to
    /// [`RecordMirror::retry`].
    pub fn diff(&mut self, current: &BTreeMap<NodeId, Vec<u8>>) -> Vec<Op> {
        // One merge walk over both sorted maps finds vanished and new keys in O(n).
        let mut removed = Vec::new();
        let mut added = Vec::new();
        {
            let mut p = self.persisted.keys().peekable();
            let mut c = current.iter().peekable();
            loop {
                match (p.peek(), c.peek()) {
                    (Some(pk), Some((ck, _))) if pk < ck => {
                        removed.push(**pk);
                        p.next();
                    }
                    (Some(pk), Some((ck, _))) if pk > ck => {
                        added.extend(c.next());
                    }
                    (Some(_), Some(_)) => {
                        p.next();
                        c.next();
                    }
                    (Some(pk), None) => {
                        removed.push(**pk);
                        p.next();
                    }
                    (None, Some(_)) => added.extend(c.next()),
                    (None, None) => break,
                }
            }
        }
        let mut ops: Vec<Op> = removed
            .into_iter()
            .map(|k| {
                self.persisted.remove(&k);
                Op::RemoveRecord(k)
            })
            .collect();
        let mut puts: BTreeMap<NodeId, &Vec<u8>> = BTreeMap::new();
        for (key, value) in added {
            self.persisted.insert(*key, digest(value));
            puts.insert(*key, value);
        }
        // Changed values: a budgeted round-robin over the keys, after the cursor.
        let mut spent = 0usize;
        let after = match self.cursor {
            Some(c) => current.range((Bound::Excluded(c), Bound::Unbounded)),
            None => current.range(..),
        };
        let before = match self.cursor {
            Some(c) => current.range(..=c),
            None => current.range(..NodeId(0)),
        };
        for (key, value) in after.chain(before) {
            if spent >= self.budget.max(1) {
                break;
            }
            spent += value.len().max(1);
            self.cursor = Some(*key);
            if puts.contains_key(key) {
                continue;
            }
            let d = digest(value);
            if self.persisted.insert(*key, d) != Some(d) {
                puts.insert(*key, value);
            }
        }
        ops.extend(
            puts.into_iter()
                .map(|(k, v)| Op::PutRecord(StoredRecord::plain(k, v.clone()))),
        );
        ops
    }

    /// An operation from [`RecordMirror::diff`] was not applied (queue full): make the
    /// next diff emit it again.
    pub fn retry(&mut self, op: &Op) {
        match op {
            Op::PutRecord(r) => {
                self.persisted.remove(&r.key);
            }
            Op::RemoveRecord(key) => {
                // Any digest: the key is absent from the node, so the next diff removes it.
                self.persisted.insert(*key, 0);
            }
            _ => {}
        }
    }

    /// Records the mirror believes are persisted.
    pub fn len(&self) -> usize {
        self.persisted.len()
    }

    /// Nothing persisted.
    pub fn is_empty(&self) -> bool {
        self.persisted.is_empty()
    }
}

/// Which held CSP requests the database has, by handle. Held requests never change once
/// held, so a handle set is enough.
#[derive(Clone, Debug, Default)]
pub struct PendingMirror {
    persisted: BTreeSet<u64>,
}

impl PendingMirror {
    /// A mirror of an empty table.
    pub fn new() -> Self {
        PendingMirror::default()
    }

    /// A mirror of the handles a snapshot loaded (re-injected requests get new handles,
    /// so the next diff removes these rows).
    pub fn from_handles(handles: impl IntoIterator<Item = u64>) -> Self {
        PendingMirror {
            persisted: handles.into_iter().collect(),
        }
    }

    /// The operations that bring the table to the requests held now: `held` lists their
    /// handles; `build` makes the row for a handle not yet persisted (so INVITEs are only
    /// copied once). A handle `build` returns `None` for is skipped this time.
    pub fn diff(
        &mut self,
        held: impl IntoIterator<Item = u64>,
        mut build: impl FnMut(u64) -> Option<PendingRequest>,
    ) -> Vec<Op> {
        let now: BTreeSet<u64> = held.into_iter().collect();
        let mut ops: Vec<Op> = self
            .persisted
            .difference(&now)
            .map(|h| Op::RemovePending(*h))
            .collect();
        self.persisted.retain(|h| now.contains(h));
        for h in now {
            if !self.persisted.contains(&h)
                && let Some(p) = build(h)
            {
                self.persisted.insert(h);
                ops.push(Op::PutPending(p));
            }
        }
        ops
    }

    /// An operation from [`PendingMirror::diff`] was not applied (queue full): make the
    /// next diff emit it again.
    pub fn retry(&mut self, op: &Op) {
        match op {
            Op::PutPending(p) => {
                self.persisted.remove(&p.handle);
            }
            Op::RemovePending(h) => {
                self.persisted.insert(*h);
            }
            _ => {}
        }
    }
}

fn digest(value: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_emits_only_changes() {
        let mut m = RecordMirror::new();
        let mut cur = BTreeMap::new();
        cur.insert(NodeId(1), b"a".to_vec());
        cur.insert(NodeId(2), b"b".to_vec());
        assert_eq!(m.diff(&cur).len(), 2);
        assert!(m.diff(&cur).is_empty());
        cur.insert(NodeId(2), b"B".to_vec());
        cur.remove(&NodeId(1));
        cur.insert(NodeId(3), b"c".to_vec());
        let ops = m.diff(&cur);
        assert_eq!(
            ops,
            vec![
                Op::RemoveRecord(NodeId(1)),
                Op::PutRecord(StoredRecord::plain(NodeId(2), b"B".to_vec())),
                Op::PutRecord(StoredRecord::plain(NodeId(3), b"c".to_vec())),
            ]
        );
        assert_eq!(m.len(), 2);
        // A dropped put and a dropped remove come back on the next diff.
        m.retry(&ops[1]);
        m.retry(&ops[0]);
        assert_eq!(m.diff(&cur), vec![ops[0].clone(), ops[1].clone()]);
        assert!(m.diff(&cur).is_empty());
    }

    #[test]
    fn changes_in_place_are_found_within_the_budget() {
        let mut m = RecordMirror::with_budget(250);
        let mut cur: BTreeMap<NodeId, Vec<u8>> = (0..10u128)
            .map(|i| (NodeId(i), vec![i as u8; 100]))
            .collect();
        assert_eq!(m.diff(&cur).len(), 10); // new keys: always, whatever the budget
        assert!(m.diff(&cur).is_empty());
        cur.insert(NodeId(7), vec![0xee; 100]); // same length, new content
        // 3 records (300 B) per diff at most: found within ceil(10 / 3) = 4 diffs.
        let mut found = None;
        for round in 1..=4 {
            let ops = m.diff(&cur);
            if !ops.is_empty() {
                assert_eq!(
                    ops,
                    vec![Op::PutRecord(StoredRecord::plain(
                        NodeId(7),
                        vec![0xee; 100]
                    ))]
                );
                found = Some(round);
                break;
            }
        }
        assert!(found.is_some(), "in-place change never found");
        for _ in 0..8 {
            assert!(m.diff(&cur).is_empty());
        }
        // New and removed keys are seen at once even with a tiny budget.
        let mut tiny = RecordMirror::with_budget(1);
        tiny.diff(&cur);
        cur.remove(&NodeId(0));
        cur.insert(NodeId(99), vec![1]);
        assert_eq!(
            tiny.diff(&cur),
            vec![
                Op::RemoveRecord(NodeId(0)),
                Op::PutRecord(StoredRecord::plain(NodeId(99), vec![1])),
            ]
        );
    }

    #[test]
    fn pending_diff_adds_new_and_removes_gone_handles() {
        let req = |h| PendingRequest {
            handle: h,
            call: h + 100,
            caller: overlay::Contact::id_only(NodeId(1)),
            callee: NodeId(2),
            invite: vec![1, 2, 3],
            deadline_unix_ms: 5,
        };
        let mut m = PendingMirror::new();
        let ops = m.diff([1, 2], |h| Some(req(h)));
        assert_eq!(ops, vec![Op::PutPending(req(1)), Op::PutPending(req(2))]);
        let mut built = Vec::new();
        let ops = m.diff([2, 3], |h| {
            built.push(h);
            Some(req(h))
        });
        assert_eq!(built, vec![3]); // 2 is not rebuilt
        assert_eq!(ops, vec![Op::RemovePending(1), Op::PutPending(req(3))]);
        m.retry(&ops[0]);
        m.retry(&ops[1]);
        assert_eq!(m.diff([2, 3], |h| Some(req(h))), ops);
    }
}
