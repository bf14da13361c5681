//! Chord conveniences on a plain Chord node's [`Handle`]; its
//! [`Core`](overlay::driver::Core) implementation lives with the node in `overlay`.

use crate::runtime::{Handle, NetError};
use overlay::{ChordNode, Contact, Event, LookupFailure, NodeId};
use serde::Serialize;
use std::time::Duration;

/// A successful lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The key.
    pub key: NodeId,
    /// The peer responsible for it.
    pub owner: Contact,
    /// Hop path, origin first, owner last.
    pub path: Vec<NodeId>,
    /// Time from start to answer, as the core measured it.
    pub latency: Duration,
    /// Attempts used.
    pub attempts: u8,
}

/// Why a lookup through the runtime gave no owner.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The overlay gave up.
    #[error("lookup failed: {0:?}")]
    Failed(LookupFailure),
    /// The runtime is gone or overloaded.
    #[error(transparent)]
    Runtime(#[from] NetError),
}

/// A snapshot of a peer's routing state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RingStatus {
    /// This peer.
    pub me: Contact,
    /// Part of a ring?
    pub active: bool,
    /// Predecessor.
    pub predecessor: Option<Contact>,
    /// Successor list.
    pub successors: Vec<Contact>,
    /// Distinct fingers, nearest first.
    pub fingers: Vec<Contact>,
    /// Records held.
    pub records: usize,
}

impl Handle<ChordNode> {
    /// Look up the owner of `key` through the overlay.
    pub async fn lookup(&self, key: NodeId) -> Result<Found, LookupError> {
        match self.request(move |n, now| n.lookup(now, key)).await? {
            Event::LookupDone {
                key,
                owner,
                path,
                latency,
                attempts,
                ..
            } => Ok(Found {
                key,
                owner,
                path,
                latency,
                attempts,
            }),
            Event::LookupFailed { reason, .. } => Err(LookupError::Failed(reason)),
            _ => Err(LookupError::Failed(LookupFailure::TimedOut)),
        }
    }

    /// The routing state right now.
    pub async fn ring_status(&self) -> Result<RingStatus, NetError> {
        self.call(|n, _| RingStatus {
            me: n.contact(),
            active: n.is_active(),
            predecessor: n.predecessor(),
            successors: n.successors().collect(),
            fingers: n.fingers().collect(),
            records: n.records().len(),
        })
        .await
    }
}
