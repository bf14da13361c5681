//! The peer's database (`store::PeerStore`, `peer.db` in the node directory) wired into the
//! running peer: warm start (contact cache, records, a CSP's held requests), the call
//! history, a periodic sync of the node's state, and the last writes at shutdown.

use crate::NodeCore;
use crate::error::NodeError;
use net::Handle;
use overlay::secure::{ContactCache, LayerArcs, SecureEvent, SecureNode};
use overlay::{Message, Time};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::{info, warn};

/// The database, shared by the event loop, the control endpoint and the periodic sync.
pub(crate) type Db = Arc<Mutex<Option<store::PeerStore>>>;

fn lock(db: &Db) -> MutexGuard<'_, Option<store::PeerStore>> {
    service::sync::lock(db)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// No database: a peer without a node directory keeps its state in memory only.
pub(crate) fn none() -> Db {
    Arc::new(Mutex::new(None))
}

/// What the warm start put back, for the log and `/status`.
#[derive(Clone, Debug, Default)]
pub(crate) struct WarmReport {
    pub contacts: usize,
    pub records: usize,
    pub requests: usize,
    pub calls_in_history: usize,
    pub moved_aside: Option<String>,
}

/// Open `dir/peer.db` and put its state back into the running (not yet joined) node.
pub(crate) async fn open_and_warm(
    h: &Handle<NodeCore>,
    dir: &Path,
    arcs: LayerArcs,
    identity: &net::Identity,
) -> Result<(Db, WarmReport), NodeError> {
    // The loop's Time::ZERO in Unix ms.
    let now = h
        .call(|_, now| now)
        .await
        .map_err(NodeError::net("warming the node"))?;
    let epoch = service::time::unix_ms().saturating_sub(now.as_micros() / 1000);
    let dir2 = dir.to_path_buf();
    let opening = tokio::task::spawn_blocking(move || {
        store::PeerStore::open(
            &dir2,
            store::StoreConfig::default(),
            store::WriterConfig::default(),
            epoch,
            service::time::unix_ms(),
            arcs,
        )
    })
    .await
    .map_err(|e| NodeError::Store {
        what: format!("opening the peer database in {}", dir.display()),
        why: e.to_string(),
    })?
    .map_err(|e| NodeError::Store {
        what: format!("opening the peer database in {}", dir.display()),
        why: e.to_string(),
    })?;
    let mut report = WarmReport {
        moved_aside: opening
            .moved_aside
            .as_ref()
            .map(|p| p.display().to_string()),
        calls_in_history: opening.snapshot.calls.len(),
        ..WarmReport::default()
    };
    if let Some(p) = &report.moved_aside {
        warn!("peer.db was damaged; moved to {p}, starting empty");
    }
    let snap = opening.snapshot;
    let mut db = opening.store;
    let me = identity.node_id;
    let same_identity = snap.identity.as_ref().is_none_or(|i| i.node_id == me);
    if same_identity {
        let (db_back, warmed) = h
            .call(move |n, now| {
                let n = n.node_at(now);
                // Restore into a scratch cache of the node's size, then into the node's
                // (the node's cache and Chord node cannot be borrowed at once).
                let (cap, ttl) = (n.contact_cache().capacity(), n.contact_cache().ttl());
                let mut scratch = ContactCache::new(cap, ttl);
                let w = db.warm(&snap, now, &mut scratch, n.chord_mut());
                let entries: Vec<_> = scratch.entries(now).collect();
                n.contact_cache_mut().restore(now, entries);
                for req in w.requests.iter().cloned() {
                    let from = req.caller;
                    n.handle_message(now, from, Message::Call(req));
                }
                (db, w)
            })
            .await
            .map_err(NodeError::net("warming the node"))?;
        db = db_back;
        report.contacts = warmed.contacts;
        report.records = warmed.records;
        report.requests = warmed.requests.len();
    } else {
        warn!("peer.db belongs to another Node-ID: its cache and records are not reused");
        db.records_handed_over().map_err(|e| NodeError::Store {
            what: "clearing old records".into(),
            why: e.to_string(),
        })?;
    }
    db.set_identity(store::Identity {
        node_id: me,
        layer: identity.binding.layer,
        role: identity.binding.role,
        cert_fingerprint: sha256(&[identity.chain.first().map_or(&[][..], |c| c.as_ref())]),
        chain_fingerprint: sha256(
            &identity
                .chain
                .iter()
                .skip(1)
                .map(|c| c.as_ref())
                .collect::<Vec<_>>(),
        ),
    })
    .map_err(|e| NodeError::Store {
        what: "storing the identity".into(),
        why: e.to_string(),
    })?;
    info!(
        contacts = report.contacts,
        records = report.records,
        held_requests = report.requests,
        calls = report.calls_in_history,
        "warm start from peer.db"
    );
    Ok((Arc::new(Mutex::new(Some(db))), report))
}

/// A call this peer placed: remember its start and Call-ID (inside the loop).
pub(crate) fn call_placed(db: &Db, now: Time, handle: u64, call_id: &str) {
    if let Some(d) = lock(db).as_mut() {
        d.call_placed_as(now, handle, call_id.to_owned());
    }
}

/// An event of the node that ends up in the call history.
pub(crate) fn on_event(db: &Db, now: Time, ev: &SecureEvent) {
    if let Some(d) = lock(db).as_mut() {
        d.on_event(now, ev);
    }
}

/// Bring the database up to the node's state (inside the loop; never blocks).
pub(crate) fn sync(db: &Db, n: &SecureNode, now: Time) {
    if let Some(d) = lock(db).as_mut() {
        d.sync(
            now,
            n.contact_cache(),
            n.chord().records(),
            n.held_requests(),
        );
    }
}

/// Shutdown, after the graceful leave. `handed_over`: the node had a successor to hand its
/// records to (a peer alone on its ring keeps them for its next start).
pub(crate) async fn close(db: Db, handed_over: bool) {
    let taken = lock(&db).take();
    let Some(mut d) = taken else { return };
    if handed_over && let Err(e) = d.records_handed_over() {
        warn!("peer.db: {e}");
    }
    match tokio::task::spawn_blocking(move || d.shutdown()).await {
        Ok(Ok(())) => info!("peer.db flushed"),
        Ok(Err(e)) => warn!("peer.db at shutdown: {e}"),
        Err(e) => warn!("peer.db at shutdown: {e}"),
    }
}

/// The database as `/status` shows it.
pub(crate) fn status(db: &Db, warm: &WarmReport) -> Value {
    let stats = lock(db).as_ref().map(|d| d.stats());
    json!({
        "file": store::DB_FILE,
        "warm_start": {
            "contacts": warm.contacts,
            "records": warm.records,
            "held_requests": warm.requests,
            "calls_in_history": warm.calls_in_history,
            "moved_aside": warm.moved_aside,
        },
        "writer": stats.map(|s| json!({
            "submitted": s.submitted,
            "committed": s.committed,
            "dropped_full": s.dropped_full,
            "rejected": s.rejected,
            "batches": s.batches,
        })),
    })
}
