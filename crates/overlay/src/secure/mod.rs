//! The paper's secure layer on top of Chord: three layers, CSP and CSPG roles, PingRequest
//! multicast with signed hop records, SOS-ranked route choice, the contact cache, and the
//! plain-Chord baseline it is measured against.

mod cache;
mod config;
mod dialog;
mod event;
mod layers;
mod node;
mod records;
mod role;
mod sign;

pub use cache::ContactCache;
pub use config::{FirstHops, OverlayContext, Routing, SecureConfig};
pub use event::{CallFailure, Outcome, SecureEvent};
pub use layers::{Directory, Layer, LayerArc, LayerArcs, LayerArcsError, LayerError};
pub use node::{SecureNode, invite_digest};
pub use records::{RecordAction, RecordValidator, Verdict};
pub use role::{Role, UnknownRole};
pub use sign::{
    Ed25519PublicKey, Ed25519Registry, Ed25519Signer, KeyRejected, SigVerifier, Signer, ack_bytes,
    body_bytes, record_bytes, ringing_bytes,
};
