//! [`RecordMirror`]: turns the node's record map into the few [`Op`]s that changed.
//!
//! `ChordNode` raises no event when records arrive (hand-over at join or leave, `put_local`)
//! or leave (moved to a new predecessor), so the driver compares its map with what was last
//! persisted, every few seconds and at shutdown. The mirror keeps a 64-bit digest per key,
//! not the values, so it costs 24 bytes per record.

use crate::model::{Op, StoredRecord};
use overlay::NodeId;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// What the database holds of the node's records, as digests.
#[derive(Clone, Debug, Default)]
pub struct RecordMirror {
    persisted: BTreeMap<NodeId, u64>,
}

impl RecordMirror {
    /// A mirror of an empty database.
    pub fn new() -> Self {
        RecordMirror::default()
    }

    /// A mirror of what a snapshot loaded (call after putting the records back in the node).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a StoredRecord>) -> Self {
        RecordMirror {
            persisted: records
                .into_iter()
                .map(|r| (r.key, digest(&r.value)))
                .collect(),
        }
    }

    /// The operations that bring the database to `current` (`ChordNode::records()`):
    /// puts for new or changed records, removes for records gone. Assumes they will be
    /// applied; a dropped operation is retried on the next call only if the record
    /// changes again, so use [`crate::Writer::submit_blocking`] or re-sync after a drop
    /// (`RecordMirror::new()` makes the next diff rewrite everything).
    pub fn diff(&mut self, current: &BTreeMap<NodeId, Vec<u8>>) -> Vec<Op> {
        let mut ops = Vec::new();
        self.persisted.retain(|key, _| {
            let keep = current.contains_key(key);
            if !keep {
                ops.push(Op::RemoveRecord(*key));
            }
            keep
        });
        for (key, value) in current {
            let d = digest(value);
            if self.persisted.insert(*key, d) != Some(d) {
                ops.push(Op::PutRecord(StoredRecord::plain(*key, value.clone())));
            }
        }
        ops
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
    }
}
