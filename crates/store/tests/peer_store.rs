//! `PeerStore` end to end with the real overlay pieces: a first run syncs its cache,
//! records, held requests and call events; a second run opens, warms a fresh node and finds
//! them; damaged rows are moved aside instead of stopping the peer.
#![allow(clippy::unwrap_used)]

use overlay::secure::{CallFailure, ContactCache, LayerArcs, SecureEvent};
use overlay::wire::CallRequest;
use overlay::{ChordConfig, ChordNode, Contact, IdSpace, NodeId, Time};
use std::sync::Arc;
use std::time::Duration;
use store::{CallOutcome, Direction, PeerStore, StoreConfig, WriterConfig};

const EPOCH1: u64 = 1_700_000_000_000;

fn space() -> IdSpace {
    IdSpace::new(32).unwrap()
}

fn node(seed: u8) -> ChordNode {
    let me = Contact::new(NodeId(1000), "127.0.0.1:7000".parse().unwrap());
    let mut c = ChordNode::new(Arc::new(ChordConfig::new(space())), me, [seed; 32]);
    c.create(Time::ZERO);
    c
}

fn req(call: u64) -> CallRequest {
    CallRequest {
        call,
        caller: Contact::new(NodeId(77), "127.0.0.1:7077".parse().unwrap()),
        callee: NodeId(4000),
        invite: format!("INVITE sip:x SIP/2.0\r\nCall-ID: held-{call}\r\n\r\n").into_bytes(),
        direct: false,
    }
}

/// The peer database in `dir` with default settings, opened at `epoch_ms` by both clocks.
fn open_at(dir: &std::path::Path, epoch_ms: u64, arcs: LayerArcs) -> store::Opening {
    PeerStore::open(
        dir,
        StoreConfig::default(),
        WriterConfig::default(),
        epoch_ms,
        epoch_ms,
        arcs,
    )
    .unwrap()
}

#[test]
fn second_run_finds_cache_records_requests_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let arcs = LayerArcs::thirds(space()).unwrap();
    let ttl = Duration::from_secs(600);

    // ---- first run ----
    let opening = open_at(dir.path(), EPOCH1, arcs);
    assert!(opening.moved_aside.is_none());
    assert_eq!(opening.snapshot, store::Snapshot::default());
    let mut ps = opening.store;
    let mut cache = ContactCache::new(256, ttl);
    let far = NodeId(space().max() - 5); // layer 3 by the thirds arcs
    cache.insert(
        Time::from_millis(1000),
        Contact::new(NodeId(5), "127.0.0.1:7005".parse().unwrap()),
    );
    cache.insert(
        Time::from_millis(2000),
        Contact::new(far, "127.0.0.1:7006".parse().unwrap()),
    );
    let mut chord = node(1);
    chord.put_local(NodeId(42), b"alice".to_vec());
    chord.put_local(NodeId(43), b"bob".to_vec());
    let (r1, r2) = (req(1), req(2));
    let deadline = Time::from_millis(100_000);
    ps.sync(
        Time::from_millis(3000),
        &cache,
        chord.records(),
        [(11, &r1, deadline), (12, &r2, deadline)],
    );
    // One request is fetched, one record moves away.
    chord.put_local(NodeId(44), b"carol".to_vec());
    let mut records = chord.records().clone();
    records.remove(&NodeId(43));
    ps.sync(
        Time::from_millis(4000),
        &cache,
        &records,
        [(12, &r2, deadline)],
    );
    // Calls.
    ps.call_placed(
        Time::from_millis(5000),
        1,
        b"INVITE sip:b SIP/2.0\r\nCall-ID: out-1@a\r\n\r\n",
    );
    ps.on_event(
        Time::from_millis(5040),
        &SecureEvent::CallRinging {
            call: 1,
            callee: NodeId(9),
            setup: Duration::from_millis(40),
            route: vec![NodeId(9)],
            cached: false,
        },
    );
    ps.call_placed(Time::from_millis(6000), 2, b"no sip here");
    ps.on_event(
        Time::from_millis(12_000),
        &SecureEvent::CallFailed {
            call: 2,
            callee: NodeId(10),
            reason: CallFailure::TimedOut,
        },
    );
    ps.on_event(
        Time::from_millis(13_000),
        &SecureEvent::IncomingCall {
            caller: Contact::id_only(NodeId(8)),
            call: 7,
            invite: b"INVITE sip:me SIP/2.0\r\ni: in-7@c\r\n\r\n".to_vec(),
        },
    );
    let st = ps.stats();
    assert_eq!(st.dropped_full, 0);
    ps.shutdown().unwrap();

    // ---- second run, 60 s later by the wall clock ----
    let epoch2 = EPOCH1 + 60_000;
    let opening = open_at(dir.path(), epoch2, arcs);
    let snap = opening.snapshot.clone();
    let mut ps = opening.store;
    assert_eq!(snap.contacts.len(), 2);
    assert_eq!(snap.contacts[1].layer, overlay::secure::Layer::THREE);
    let keys: Vec<u128> = snap.records.iter().map(|r| r.key.0).collect();
    assert_eq!(keys, vec![42, 44]);
    assert_eq!(snap.pending.len(), 1);
    assert_eq!(snap.pending[0].handle, 12);
    assert_eq!(snap.pending[0].deadline_unix_ms, EPOCH1 + 100_000);
    let calls: Vec<_> = snap
        .calls
        .iter()
        .map(|c| {
            (
                c.call_id.as_str(),
                c.direction,
                c.started_unix_ms,
                c.setup_ms,
                c.outcome,
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (
                "out-1@a",
                Direction::Outgoing,
                EPOCH1 + 5000,
                Some(40),
                CallOutcome::Ringing
            ),
            (
                "handle-2",
                Direction::Outgoing,
                EPOCH1 + 6000,
                None,
                CallOutcome::Failed(CallFailure::TimedOut)
            ),
            (
                "in-7@c",
                Direction::Incoming,
                EPOCH1 + 13_000,
                None,
                CallOutcome::Ringing
            ),
        ]
    );

    let mut cache2 = ContactCache::new(256, ttl);
    let mut chord2 = node(2);
    let warmed = ps.warm(&snap, Time::ZERO, &mut cache2, &mut chord2);
    assert_eq!(warmed.contacts, 2);
    assert_eq!(warmed.records, 2);
    assert_eq!(warmed.requests, vec![r2.clone()]);
    assert!(cache2.get(Time::from_millis(1), NodeId(5)).is_some());
    assert_eq!(chord2.records()[&NodeId(44)], b"carol");
    // Entry 5 was cached 1 s after epoch 1 with 600 s to live: 541 s are left at epoch 2
    // (and the get above made it the most recently used).
    let left: Vec<_> = cache2.entries(Time::ZERO).map(|(c, d)| (c.id, d)).collect();
    assert_eq!(
        left,
        vec![
            (far, Duration::from_secs(542)),
            (NodeId(5), Duration::from_secs(541))
        ]
    );

    // A sync right after warming writes nothing new for records.
    let before = ps.stats().submitted;
    ps.sync(Time::ZERO, &cache2, chord2.records(), std::iter::empty());
    let st = ps.stats();
    // Contacts rewrite once (new digest) and the held request is removed: 2 ops.
    assert_eq!(st.submitted - before, 2, "{st:?}");
    ps.records_handed_over().unwrap();
    ps.shutdown().unwrap();
    let mut s = store::Store::open(dir.path(), StoreConfig::default()).unwrap();
    let snap = s.load_snapshot(epoch2).unwrap();
    assert!(snap.records.is_empty());
    assert!(snap.pending.is_empty());
}

#[test]
fn undecodable_rows_are_moved_aside_and_the_peer_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let arcs = LayerArcs::thirds(space()).unwrap();
    {
        let mut s = store::Store::open(dir.path(), StoreConfig::default()).unwrap();
        s.apply(&[store::Op::AddCall(store::CallEntry {
            call_id: "x".into(),
            direction: Direction::Incoming,
            peer: NodeId(1),
            started_unix_ms: EPOCH1,
            setup_ms: None,
            outcome: CallOutcome::Ringing,
        })])
        .unwrap();
    }
    {
        let c = rusqlite::Connection::open(dir.path().join(store::DB_FILE)).unwrap();
        c.execute("UPDATE calls SET direction = 'sideways'", [])
            .unwrap();
    }
    let opening = open_at(dir.path(), EPOCH1, arcs);
    let aside = opening.moved_aside.clone().unwrap();
    assert!(aside.exists());
    assert_eq!(opening.snapshot, store::Snapshot::default());
    opening.store.shutdown().unwrap();
}
