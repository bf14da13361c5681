//! Sustained writes/s into `peer.db`: the batched [`store::Writer`] (one transaction per
//! batch) against one transaction per write, both durabilities, side by side.
//!
//! `cargo bench -p store --bench writer`. The database lives under Cargo's target tmp dir
//! (same disk as the build), not a tmpfs, so fsync costs are real.
#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use overlay::NodeId;
use std::hint::black_box;
use std::time::Duration;
use store::{Durability, Op, Store, StoreConfig, StoredRecord, Writer, WriterConfig};

const OPS: u64 = 500;

fn op(i: u64) -> Op {
    // Keys wrap so the table stays within its bound however long the bench runs.
    Op::PutRecord(StoredRecord::plain(
        NodeId(u128::from(i % 50_000)),
        i.to_le_bytes().repeat(8),
    ))
}

fn cfg(durability: Durability) -> StoreConfig {
    StoreConfig {
        durability,
        ..StoreConfig::default()
    }
}

fn writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_writes");
    g.throughput(Throughput::Elements(OPS));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for (name, durability) in [("full", Durability::Full), ("normal", Durability::Normal)] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let w = Writer::spawn(
            Store::open(dir.path(), cfg(durability)).unwrap(),
            WriterConfig::default(),
        )
        .unwrap();
        let mut next = 0u64;
        g.bench_function(BenchmarkId::new("batched_writer", name), |b| {
            b.iter(|| {
                for _ in 0..OPS {
                    w.submit_blocking(op(next)).unwrap();
                    next += 1;
                }
                w.flush().unwrap();
            })
        });
        black_box(w.close().unwrap());

        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut s = Store::open(dir.path(), cfg(durability)).unwrap();
        let mut next = 0u64;
        g.bench_function(BenchmarkId::new("transaction_per_write", name), |b| {
            b.iter(|| {
                for _ in 0..OPS {
                    s.apply(&[op(next)]).unwrap();
                    next += 1;
                }
            })
        });
    }
    g.finish();
}

/// Start-up cost: reading a full records table (65 536 × 256 B, the default bound on
/// count) plus a full contact cache.
fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut s = Store::open(dir.path(), cfg(Durability::Normal)).unwrap();
    let ops: Vec<Op> = (0..65_536u64)
        .map(|i| Op::PutRecord(StoredRecord::plain(NodeId(u128::from(i)), vec![7; 256])))
        .collect();
    s.apply(&ops).unwrap();
    let mut g = c.benchmark_group("store_load");
    g.sample_size(10);
    g.throughput(Throughput::Elements(65_536));
    g.bench_function("load_snapshot_65536_records", |b| {
        b.iter(|| black_box(s.load_snapshot(1_700_000_000_000).unwrap().records.len()))
    });
    g.finish();
}

/// The driver's periodic sync: diffing a full records table that did not change
/// (key walk plus the default 256 KiB hash budget), on the event loop.
fn mirror(c: &mut Criterion) {
    let current: std::collections::BTreeMap<NodeId, Vec<u8>> =
        (0..65_536u128).map(|i| (NodeId(i), vec![7; 256])).collect();
    let mut m = store::RecordMirror::new();
    assert_eq!(m.diff(&current).len(), 65_536);
    c.bench_function("record_mirror_diff_65536_unchanged", |b| {
        b.iter(|| assert!(black_box(m.diff(&current)).is_empty()))
    });
}

criterion_group!(benches, writes, load, mirror);
criterion_main!(benches);
