//! Crashes, damaged files and restarts: acknowledged writes survive `kill -9`, a damaged
//! or foreign file is a typed error (never a panic), a newer schema is refused, and a
//! restarted peer gets its cache and records back.
#![allow(clippy::unwrap_used)]

use overlay::secure::{ContactCache, Layer, Role};
use overlay::{ChordConfig, ChordNode, Contact, IdSpace, NodeId, Time};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use store::{
    CallEntry, CallOutcome, ContactEntry, DB_FILE, Direction, Identity, Op, OpenError,
    RecordMirror, Store, StoreConfig, StoreError, StoredRecord, Writer, WriterConfig,
};

const NOW: u64 = 1_700_000_000_000;
const CHILD_ENV: &str = "STORE_KILL9_CHILD_DIR";

fn rec(i: u64) -> StoredRecord {
    StoredRecord::plain(NodeId(u128::from(i)), i.to_be_bytes().repeat(16))
}

fn call(i: u64) -> CallEntry {
    CallEntry {
        call_id: format!("c{i}"),
        direction: Direction::Outgoing,
        peer: NodeId(u128::from(i)),
        started_unix_ms: NOW + i,
        setup_ms: Some(12),
        outcome: CallOutcome::Ringing,
    }
}

fn big_config() -> StoreConfig {
    StoreConfig {
        max_records: 1 << 20,
        max_calls: 1 << 20,
        ..StoreConfig::default()
    }
}

/// The child half of `kill_9_keeps_every_acknowledged_write`: writes through the batched
/// writer and prints `ACK n` after each flush that covered writes 0..=n, until killed.
#[test]
#[ignore = "child process of kill_9_keeps_every_acknowledged_write, not a test by itself"]
fn kill9_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        println!(
            "NOT A TEST: kill9_child only runs as the child of kill_9_keeps_every_acknowledged_write"
        );
        return;
    };
    let store = Store::open(Path::new(&dir), big_config()).unwrap();
    let w = Writer::spawn(
        store,
        WriterConfig {
            max_batch_delay: Duration::from_millis(3),
            ..WriterConfig::default()
        },
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        w.submit_blocking(Op::PutRecord(rec(i))).unwrap();
        w.submit_blocking(Op::AddCall(call(i))).unwrap();
        if i % 25 == 24 {
            w.flush().unwrap();
            writeln!(out, "ACK {i}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn kill_9_keeps_every_acknowledged_write() {
    // Kill right after an acknowledgement and at two points inside later batches.
    for delay_ms in [0, 3, 17] {
        kill_9_round(Duration::from_millis(delay_ms));
    }
}

fn kill_9_round(delay: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "kill9_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last_ack: Option<u64> = None;
    // Let it run for 40 acknowledged flushes (1000 writes), then SIGKILL after `delay`:
    // it keeps writing between flushes, so the kill lands inside a batch.
    let mut acks = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            last_ack = Some(n.parse().unwrap());
            acks += 1;
            if acks == 40 {
                break;
            }
        }
    }
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL on Unix
    // Acks printed before the kill are still in the pipe.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("ACK ") {
            last_ack = Some(n.parse().unwrap());
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "child did not die by SIGKILL: {status:?}"
    );
    let last_ack = last_ack.expect("child acknowledged nothing before the kill");
    assert!(last_ack >= 999);

    let mut s = Store::open(dir.path(), big_config()).unwrap(); // integrity check included
    let snap = s.load_snapshot(NOW).unwrap();
    let have: std::collections::BTreeSet<u128> = snap.records.iter().map(|r| r.key.0).collect();
    for i in 0..=last_ack {
        assert!(
            have.contains(&u128::from(i)),
            "acknowledged record {i} lost"
        );
    }
    for r in &snap.records {
        assert_eq!(r, &rec(r.key.0 as u64), "record damaged");
    }
    assert!(snap.calls.len() as u64 > last_ack);
    for (i, c) in snap.calls.iter().enumerate() {
        assert_eq!(c, &call(i as u64), "call history out of order or damaged");
    }
    println!(
        "kill -9 after {delay:?}: last acknowledged write {last_ack}, {} records on disk",
        snap.records.len()
    );
}

fn filled_db(dir: &Path, n: u64) {
    let mut s = Store::open(dir, big_config()).unwrap();
    s.apply(&(0..n).map(|i| Op::PutRecord(rec(i))).collect::<Vec<_>>())
        .unwrap();
    // Dropping the last connection checkpoints the WAL into peer.db.
}

#[test]
fn garbage_file_is_a_typed_error_and_can_be_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    std::fs::write(
        &path,
        b"this is not a database, just text that someone put here\n".repeat(100),
    )
    .unwrap();
    match Store::open(dir.path(), StoreConfig::default()) {
        Err(OpenError::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Corrupt, got {:?}", other.err()),
    }
    let opened = Store::open_or_reset(dir.path(), StoreConfig::default()).unwrap();
    let aside = opened.moved_aside.clone().unwrap();
    assert!(aside.exists());
    assert!(
        std::fs::read(&aside)
            .unwrap()
            .starts_with(b"this is not a database")
    );
    let mut s = opened.store;
    s.apply(&[Op::PutRecord(rec(1))]).unwrap();
    assert_eq!(s.load_snapshot(NOW).unwrap().records, vec![rec(1)]);
}

#[test]
fn truncated_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    filled_db(dir.path(), 3000);
    let path = dir.path().join(DB_FILE);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 100_000, "db unexpectedly small: {len}");
    for cut in [len / 2 + 1234, len / 2, 4096, 50] {
        let bytes = std::fs::read(&path).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(d2.path().join(DB_FILE), &bytes[..cut as usize]).unwrap();
        match Store::open(d2.path(), big_config()) {
            Err(OpenError::Corrupt { .. }) => {}
            Err(e) => panic!("cut at {cut}: expected Corrupt, got {e}"),
            Ok(mut s) => {
                // SQLite may accept a cut at a page boundary; then reads must still be
                // errors or short, never a panic.
                match s.load_snapshot(NOW) {
                    Err(StoreError::Corrupt(_)) => {}
                    Ok(snap) => panic!(
                        "cut at {cut}: truncated db read as {} records",
                        snap.records.len()
                    ),
                    Err(e) => panic!("cut at {cut}: expected Corrupt, got {e}"),
                }
            }
        }
    }
}

#[test]
fn overwritten_pages_are_caught_by_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    filled_db(dir.path(), 3000);
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8192] {
        *b = 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Store::open(dir.path(), big_config()),
        Err(OpenError::Corrupt { .. })
    ));
}

#[test]
fn newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    filled_db(dir.path(), 3);
    {
        let c = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
    }
    for res in [
        Store::open(dir.path(), StoreConfig::default()).err(),
        Store::open_or_reset(dir.path(), StoreConfig::default()).err(),
    ] {
        match res {
            Some(OpenError::NewerSchema {
                found: 99,
                supported: 1,
                ..
            }) => {}
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
}

#[test]
fn foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.execute("CREATE TABLE songs (title TEXT)", []).unwrap();
    }
    assert!(matches!(
        Store::open(dir.path(), StoreConfig::default()),
        Err(OpenError::Foreign { .. })
    ));
}

#[test]
fn bad_rows_are_typed_errors() {
    let cases = [
        "UPDATE contacts SET layer = 9",
        "UPDATE contacts SET addr = 'not an address'",
        "UPDATE contacts SET node_id = x'0102'",
        "UPDATE identity SET role = 'king'",
        "UPDATE identity SET cert_fp = x'00'",
        "UPDATE calls SET outcome = 'exploded'",
        "UPDATE calls SET setup_ms = 99999999999",
    ];
    for sql in cases {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
            s.apply(&[
                Op::SetIdentity(Identity {
                    node_id: NodeId(1),
                    layer: Layer::ONE,
                    role: Role::Peer,
                    cert_fingerprint: [1; 32],
                    chain_fingerprint: [2; 32],
                }),
                Op::TouchContact(ContactEntry {
                    contact: Contact::new(NodeId(2), "127.0.0.1:1".parse().unwrap()),
                    layer: Layer::ONE,
                    last_seen_unix_ms: NOW,
                    ttl_ms: 1000,
                }),
                Op::AddCall(call(1)),
            ])
            .unwrap();
        }
        {
            let c = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
            c.execute(sql, []).unwrap();
        }
        let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
        match s.load_snapshot(NOW) {
            Err(StoreError::BadRow { .. }) => {}
            other => panic!("{sql}: expected BadRow, got {other:?}"),
        }
    }
}

/// The promise: a restarted peer comes back with its cache warm and its records
/// intact, through the real overlay types and the batched writer.
#[test]
fn restarted_peer_comes_back_warm_with_records_intact() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(600);
    let space = IdSpace::new(32).unwrap();
    let me = Contact::new(NodeId(1000), "127.0.0.1:7000".parse().unwrap());
    let epoch1 = NOW; // first run's Time::ZERO in Unix ms

    // First run: a cache with three entries and a node with records.
    let mut cache = ContactCache::new(256, ttl);
    for i in 1..=3u128 {
        let c = Contact::new(
            NodeId(i),
            format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
        );
        cache.insert(Time::from_millis(i as u64 * 1000), c);
    }
    let mut chord = ChordNode::new(Arc::new(ChordConfig::new(space)), me, [7; 32]);
    chord.create(Time::ZERO);
    for k in [5u128, 600, 999] {
        assert!(chord.put_local(NodeId(k), format!("aor-{k}").into_bytes()));
    }
    let now1 = Time::from_millis(60_000);
    let w = Writer::spawn(
        Store::open(dir.path(), StoreConfig::default()).unwrap(),
        WriterConfig::default(),
    )
    .unwrap();
    let mut mirror = RecordMirror::new();
    for op in mirror.diff(chord.records()) {
        w.submit(op).unwrap();
    }
    let entries: Vec<_> = cache
        .entries(now1)
        .map(|(c, left)| {
            ContactEntry::from_cache(c, Layer::ONE, store::unix_ms(now1, epoch1), left, ttl)
        })
        .collect();
    w.submit(Op::ReplaceContacts(entries)).unwrap();
    w.flush().unwrap();
    // A record moves away (a new predecessor took it): only that removal is written.
    let mut moved = chord.records().clone();
    moved.remove(&NodeId(5));
    let ops = mirror.diff(&moved);
    assert_eq!(ops, vec![Op::RemoveRecord(NodeId(5))]);
    for op in ops {
        w.submit(op).unwrap();
    }
    drop(w); // shutdown commits the queue

    // Second run, 30 s later by the wall clock; its driver clock starts at zero again.
    let epoch2 = epoch1 + 90_000;
    let mut s = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let snap = s.load_snapshot(epoch2).unwrap();
    let mut cache2 = ContactCache::new(256, ttl);
    cache2.restore(
        Time::ZERO,
        snap.contacts
            .iter()
            .filter_map(|e| Some((e.contact, e.remaining(epoch2)?))),
    );
    assert_eq!(cache2.len(), 3);
    for i in 1..=3u128 {
        let got = cache2.get(Time::from_millis(1), NodeId(i)).unwrap();
        assert_eq!(got.addr.unwrap().port(), 7000 + i as u16);
    }
    // Entry 1 was cached at 1 s of a 600 s life; 90 s have passed: 511 s are left.
    assert!(cache2.get(Time::from_millis(511_000), NodeId(1)).is_some());
    assert!(cache2.get(Time::from_millis(511_001), NodeId(1)).is_none());

    let mut chord2 = ChordNode::new(Arc::new(ChordConfig::new(space)), me, [8; 32]);
    chord2.create(Time::ZERO);
    for r in &snap.records {
        assert!(chord2.put_local(r.key, r.value.clone()));
    }
    let want: Vec<_> = [600u128, 999].iter().map(|k| NodeId(*k)).collect();
    assert_eq!(chord2.records().keys().copied().collect::<Vec<_>>(), want);
    assert_eq!(chord2.records()[&NodeId(600)], b"aor-600");
    assert!(
        RecordMirror::from_records(&snap.records)
            .diff(chord2.records())
            .is_empty()
    );
}
