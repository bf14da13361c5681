//! What a secure peer reports to its driver: call results, incoming calls, requests to the
//! SOS, record results and evidence.

use crate::{Contact, Event, NodeId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a peer did with a message: the evidence a peer reports to the SOS about another.
/// Named in snake_case (`delivered`, …) in the SOS's JSON and database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Carried a copy that arrived intact.
    Delivered,
    /// A copy vanished at or right after this peer.
    Dropped,
    /// Forwarded a copy with a broken signature chain.
    Modified,
    /// Forwarded a copy away from the target.
    Misrouted,
    /// Forwarded a stale or duplicate copy.
    Replayed,
}

impl Outcome {
    /// Is this positive evidence?
    pub fn is_positive(self) -> bool {
        self == Outcome::Delivered
    }

    /// The name used in the SOS's JSON and database.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Dropped => "dropped",
            Outcome::Modified => "modified",
            Outcome::Misrouted => "misrouted",
            Outcome::Replayed => "replayed",
        }
    }
}

/// Why a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallFailure {
    /// No Ringing within the call timeout (after the retry).
    TimedOut,
    /// The callee rang, but for a request that was altered on the way.
    Tampered,
    /// Nowhere to send it (no CSP/CSPG known for the layer, or no ring).
    NoRoute,
    /// Too many calls in flight.
    Overloaded,
}

/// What a secure peer reports to its driver.
#[derive(Clone, Debug, PartialEq)]
pub enum SecureEvent {
    /// Something from the Chord layer.
    Chord(Event),
    /// A call we placed rang.
    CallRinging {
        /// The handle from [`SecureNode::call`].
        call: u64,
        /// The callee.
        callee: NodeId,
        /// Session request delay: request sent → Ringing received.
        setup: Duration,
        /// Route the request took (hops then callee; `[callee]` for a cached contact).
        route: Vec<NodeId>,
        /// Served from the contact cache.
        cached: bool,
    },
    /// A call we placed failed.
    CallFailed {
        /// The handle from [`SecureNode::call`].
        call: u64,
        /// The callee.
        callee: NodeId,
        /// Why.
        reason: CallFailure,
    },
    /// A call for us arrived (we answered Ringing).
    IncomingCall {
        /// The caller.
        caller: Contact,
        /// The caller's handle (with the caller's Node-ID, names the call for
        /// [`SecureNode::send_dialog`]).
        call: u64,
        /// The original request.
        invite: Vec<u8>,
    },
    /// Ask the SOS which route is most trusted; answer with [`SecureNode::handle_ranking`].
    RankRoutes {
        /// Handle for the answer.
        query: u64,
        /// Candidate routes (hops then target).
        routes: Vec<Vec<NodeId>>,
    },
    /// An in-dialog message from the other end of call (`caller`, `call`).
    Dialog {
        /// The caller's Node-ID.
        caller: NodeId,
        /// The caller's handle.
        call: u64,
        /// The message.
        body: Vec<u8>,
    },
    /// A [`SecureNode::put`] finished.
    Stored {
        /// The handle from `put`.
        query: u64,
        /// `Err` carries the reason the responsible peer (or this one) gave.
        result: Result<(), String>,
    },
    /// A [`SecureNode::get`] finished.
    Fetched {
        /// The handle from `get`.
        query: u64,
        /// The record, if the responsible peer had one (`None` also on failure).
        value: Option<Vec<u8>>,
    },
    /// Evidence for the SOS.
    Report {
        /// The peer it is about.
        subject: NodeId,
        /// What it did.
        outcome: Outcome,
    },
}
