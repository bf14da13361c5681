//! Every table round-trips, survives a reopen, and stays within its bound.
#![allow(clippy::unwrap_used)]

use overlay::secure::{CallFailure, Layer, Role};
use overlay::{Contact, NodeId};
use proptest::prelude::*;
use std::time::Duration;
use store::{
    CallEntry, CallOutcome, ContactEntry, Direction, Identity, Op, PendingRequest, Store,
    StoreConfig, StoredRecord, Writer, WriterConfig,
};
use tempfile::TempDir;

const NOW: u64 = 1_700_000_000_000;

fn identity() -> Identity {
    Identity {
        node_id: NodeId(u128::MAX - 7),
        layer: Layer::TWO,
        role: Role::Csp,
        cert_fingerprint: [0xab; 32],
        chain_fingerprint: [0x11; 32],
    }
}

fn contact(i: u128) -> ContactEntry {
    ContactEntry {
        contact: Contact::new(
            NodeId(i),
            format!("127.0.0.1:{}", 10_000 + i).parse().unwrap(),
        ),
        layer: Layer::ONE,
        last_seen_unix_ms: NOW - 1000 + i as u64,
        ttl_ms: 600_000,
    }
}

fn record(i: u128, len: usize) -> StoredRecord {
    StoredRecord {
        key: NodeId(i << 100 | i),
        value: vec![i as u8; len],
        owner: Some(NodeId(i + 1)),
        signature: Some(vec![7; 64]),
        expires_unix_ms: Some(NOW + 3_600_000),
    }
}

fn pending(h: u64) -> PendingRequest {
    PendingRequest {
        handle: h,
        call: u64::MAX - h, // above i64::MAX: must round-trip
        caller: Contact::new(NodeId(9), "[::1]:5061".parse().unwrap()),
        callee: NodeId(10),
        invite: b"INVITE sip:bob@p2psip SIP/2.0\r\n\r\n".to_vec(),
        deadline_unix_ms: NOW + 3000,
    }
}

fn call(i: u64) -> CallEntry {
    CallEntry {
        call_id: format!("call-{i}@p2psip"),
        direction: if i.is_multiple_of(2) {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        peer: NodeId(u128::from(i) * 3),
        started_unix_ms: NOW + i,
        setup_ms: (!i.is_multiple_of(3)).then_some(i as u32),
        outcome: [
            CallOutcome::Ringing,
            CallOutcome::Failed(CallFailure::TimedOut),
            CallOutcome::Failed(CallFailure::Tampered),
            CallOutcome::Failed(CallFailure::NoRoute),
            CallOutcome::Failed(CallFailure::Overloaded),
        ][i as usize % 5],
    }
}

#[test]
fn every_table_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let contacts: Vec<_> = (1..=5).map(contact).collect();
    let records: Vec<_> = (1..=4).map(|i| record(i, 100 * i as usize)).collect();
    let mut plain = StoredRecord::plain(NodeId(0), Vec::new());
    plain.key = NodeId(0); // empty value, no owner/signature/expiry
    let pend = vec![pending(1), pending(u64::MAX)];
    let calls: Vec<_> = (0..7).map(call).collect();

    let mut ops = vec![Op::SetIdentity(identity())];
    ops.extend(contacts.iter().copied().map(Op::TouchContact));
    ops.extend(records.iter().cloned().map(Op::PutRecord));
    ops.push(Op::PutRecord(plain.clone()));
    ops.extend(pend.iter().cloned().map(Op::PutPending));
    ops.extend(calls.iter().cloned().map(Op::AddCall));
    {
        let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let report = s.apply(&ops).unwrap();
        assert_eq!(report.applied, ops.len() as u64);
        assert_eq!(report.rejected, 0);
    }
    let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
    for f in [store::DB_FILE, "peer.db-wal", "peer.db-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let snap = s.load_snapshot(NOW).unwrap();
    assert_eq!(snap.identity, Some(identity()));
    assert_eq!(snap.contacts, contacts);
    let mut want = records.clone();
    want.push(plain);
    want.sort_by_key(|r| r.key);
    assert_eq!(snap.records, want);
    assert_eq!(snap.pending, pend);
    assert_eq!(snap.calls, calls);
}

#[test]
fn removals_and_replacements() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
    s.apply(&[
        Op::TouchContact(contact(1)),
        Op::TouchContact(contact(2)),
        Op::TouchContact(contact(3)),
        Op::TouchContact(contact(1)), // 1 is now most recent
        Op::RemoveContact(NodeId(2)),
        Op::PutRecord(record(1, 10)),
        Op::PutRecord(record(2, 10)),
        Op::RemoveRecord(record(1, 0).key),
        Op::PutPending(pending(5)),
        Op::PutPending(pending(6)),
        Op::RemovePending(5),
    ])
    .unwrap();
    let snap = s.load_snapshot(NOW).unwrap();
    let ids: Vec<_> = snap.contacts.iter().map(|c| c.contact.id.0).collect();
    assert_eq!(ids, vec![3, 1]);
    assert_eq!(snap.records, vec![record(2, 10)]);
    assert_eq!(snap.pending, vec![pending(6)]);
    s.apply(&[
        Op::ReplaceContacts(vec![contact(7), contact(8)]),
        Op::ClearRecords,
    ])
    .unwrap();
    let snap = s.load_snapshot(NOW).unwrap();
    let ids: Vec<_> = snap.contacts.iter().map(|c| c.contact.id.0).collect();
    assert_eq!(ids, vec![7, 8]);
    assert!(snap.records.is_empty());
    let counts = s.counts().unwrap();
    assert_eq!((counts.records, counts.record_bytes), (0, 0));
}

#[test]
fn expired_rows_are_dropped_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let mut old = contact(1);
    old.last_seen_unix_ms = NOW - 700_000; // ttl 600 s: expired
    let mut lapsed = record(1, 5);
    lapsed.expires_unix_ms = Some(NOW - 1);
    let mut late = pending(1);
    late.deadline_unix_ms = NOW - 1;
    s.apply(&[
        Op::TouchContact(old),
        Op::TouchContact(contact(2)),
        Op::PutRecord(lapsed),
        Op::PutRecord(record(2, 5)),
        Op::PutPending(late),
        Op::PutPending(pending(2)),
    ])
    .unwrap();
    let snap = s.load_snapshot(NOW).unwrap();
    assert_eq!(snap.contacts, vec![contact(2)]);
    assert_eq!(snap.records, vec![record(2, 5)]);
    assert_eq!(snap.pending, vec![pending(2)]);
    let c = s.counts().unwrap();
    assert_eq!((c.contacts, c.records, c.pending), (1, 1, 1));
}

#[test]
fn contacts_evict_least_recently_used_like_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_contacts: 3,
        ..StoreConfig::default()
    };
    let mut s = Store::open(dir.path(), cfg.clone()).unwrap();
    // Same sequence as overlay's ContactCache of capacity 3.
    let mut cache = overlay::secure::ContactCache::new(3, Duration::from_secs(600));
    let seq = [1u128, 2, 3, 1, 4, 5, 1, 6];
    for &i in &seq {
        s.apply(&[Op::TouchContact(contact(i))]).unwrap();
        cache.insert(overlay::Time::ZERO, contact(i).contact);
    }
    let snap = s.load_snapshot(NOW).unwrap();
    let stored: Vec<_> = snap.contacts.iter().map(|c| c.contact).collect();
    let mem: Vec<_> = cache.entries(overlay::Time::ZERO).map(|(c, _)| c).collect();
    assert_eq!(stored, mem);
    assert_eq!(stored.len(), 3);
    // The bound also holds across a reopen and within one batch.
    drop(s);
    let mut s = Store::open(dir.path(), cfg).unwrap();
    let report = s
        .apply(
            &(10..20)
                .map(|i| Op::TouchContact(contact(i)))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(report.evicted, 10);
    let ids: Vec<_> = s
        .load_snapshot(NOW)
        .unwrap()
        .contacts
        .iter()
        .map(|c| c.contact.id.0)
        .collect();
    assert_eq!(ids, vec![17, 18, 19]);
}

#[test]
fn records_are_bounded_by_count_size_and_total_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_records: 3,
        max_record_len: 100,
        max_record_bytes: 250 + 3 * 64,
        ..StoreConfig::default()
    };
    let mut s = Store::open(dir.path(), cfg.clone()).unwrap();
    let r = s
        .apply(&[
            Op::PutRecord(record(1, 100)),
            Op::PutRecord(record(2, 101)), // too long
            Op::PutRecord(record(3, 100)),
            Op::PutRecord(record(4, 100)), // 300 bytes > 250
            Op::PutRecord(record(5, 50)),
            Op::PutRecord(record(6, 1)), // fourth record
        ])
        .unwrap();
    assert_eq!((r.applied, r.rejected), (3, 3));
    // Replacing an existing key is allowed while the total stays under the bound.
    let r = s
        .apply(&[Op::PutRecord(record(5, 40)), Op::PutRecord(record(5, 60))])
        .unwrap();
    assert_eq!((r.applied, r.rejected), (1, 1));
    let c = s.counts().unwrap();
    assert_eq!((c.records, c.record_bytes), (3, 240 + 3 * 64));
    // Counters are rebuilt from the file after a reopen.
    drop(s);
    let mut s = Store::open(dir.path(), cfg).unwrap();
    let r = s.apply(&[Op::PutRecord(record(7, 1))]).unwrap();
    assert_eq!(r.rejected, 1);
    s.apply(&[Op::RemoveRecord(record(1, 0).key)]).unwrap();
    let r = s.apply(&[Op::PutRecord(record(7, 1))]).unwrap();
    assert_eq!(r.applied, 1);
}

#[test]
fn pending_and_calls_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_pending: 2,
        max_invite_len: 64,
        max_calls: 5,
        ..StoreConfig::default()
    };
    let mut s = Store::open(dir.path(), cfg).unwrap();
    let mut big = pending(9);
    big.invite = vec![0; 65];
    let r = s
        .apply(&[
            Op::PutPending(pending(1)),
            Op::PutPending(pending(2)),
            Op::PutPending(pending(3)), // full
            Op::PutPending(pending(2)), // replace is fine
            Op::PutPending(big),        // too large
        ])
        .unwrap();
    assert_eq!((r.applied, r.rejected), (3, 2));
    let mut long = call(0);
    long.call_id = "x".repeat(store::MAX_CALL_ID_LEN + 1);
    let r = s.apply(&[Op::AddCall(long)]).unwrap();
    assert_eq!(r.rejected, 1);
    for batch in (0..12).collect::<Vec<u64>>().chunks(5) {
        s.apply(
            &batch
                .iter()
                .map(|&i| Op::AddCall(call(i)))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    }
    let snap = s.load_snapshot(NOW).unwrap();
    assert_eq!(snap.calls, (7..12).map(call).collect::<Vec<_>>());
}

/// A writer over a new store in a temporary directory (kept alive by the caller).
fn writer(queue: usize, max_batch_ops: usize, max_batch_delay: Duration) -> (TempDir, Writer) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let config = WriterConfig {
        queue,
        max_batch_ops,
        max_batch_delay,
    };
    (dir, Writer::spawn(s, config).unwrap())
}

#[test]
fn writer_batches_and_flush_acknowledges() {
    // Only size or a flush closes a batch.
    let (dir, w) = writer(10_000, 100, Duration::from_secs(60));
    for i in 0..1000u128 {
        w.submit(Op::PutRecord(record(i, 8))).unwrap();
    }
    w.flush().unwrap();
    let st = w.stats();
    assert_eq!(st.submitted, 1000);
    assert_eq!(st.committed, 1000);
    assert!(st.batches >= 10 && st.batches <= 11, "{st:?}");
    // Reading from another connection while the writer owns the store (WAL readers).
    let mut other = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(other.load_snapshot(NOW).unwrap().records.len(), 1000);
    let mut s = w.close().unwrap();
    assert_eq!(s.load_snapshot(NOW).unwrap().records.len(), 1000);
}

#[test]
fn full_queue_drops_and_counts_instead_of_blocking() {
    let (_dir, w) = writer(4, 1, Duration::ZERO);
    let mut dropped = 0u64;
    for i in 0..2000u128 {
        if w.submit(Op::PutRecord(record(i, 8))) == Err(store::SubmitError::Full) {
            dropped += 1;
        }
    }
    w.flush().unwrap();
    let st = w.stats();
    assert!(
        dropped > 0,
        "a 4-slot queue fed 2000 ops without pause never filled"
    );
    assert_eq!(st.dropped_full, dropped);
    assert_eq!(st.submitted + dropped, 2000);
    assert_eq!(st.committed, st.submitted);
    let mut s = w.close().unwrap();
    assert_eq!(
        s.load_snapshot(NOW).unwrap().records.len() as u64,
        st.submitted
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn records_round_trip(recs in proptest::collection::btree_map(
        any::<u128>(),
        (
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::option::of(any::<u128>()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..128)),
            proptest::option::of(NOW..u64::MAX),
        ),
        0..24,
    )) {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<StoredRecord> = recs
            .into_iter()
            .map(|(k, (value, owner, signature, expires))| StoredRecord {
                key: NodeId(k),
                value,
                owner: owner.map(NodeId),
                signature,
                // The file stores i64: later times saturate (still "far future").
                expires_unix_ms: expires.map(|e| e.min(i64::MAX as u64)),
            })
            .collect();
        {
            let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
            s.apply(&want.iter().cloned().map(Op::PutRecord).collect::<Vec<_>>()).unwrap();
        }
        let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let got = s.load_snapshot(NOW).unwrap().records;
        prop_assert_eq!(got, want);
    }
}
