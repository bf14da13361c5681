//! SIP for p2psip peers: the local front-end (registrar + proxy) that lets ordinary SIP
//! phones and tools use the overlay, the user agent a peer places and answers its own calls
//! with, and [`PeerCore`], the one core of a peer that joins them to the secure node.
//!
//! Sans-IO like the overlay: every type here takes `now` and messages and returns what to
//! send. The tokio driver for the front-end's UDP and TCP listeners (module `driver`) is
//! behind the `tokio` feature, off by default so the protocol logic builds without a
//! runtime; the runtime crates (`node`, `p2psip`) turn it on. SIP parsing and RFC 3261
//! transactions come from `sipx-sip`, wrapped behind our own types ([`msg`], [`txn`]).

mod deadlines;
pub mod digest;
pub mod frontend;
pub mod loopback;
pub mod media;
pub mod msg;
pub mod overlay_api;
pub mod own_ua;
pub mod peer;
pub mod registration;
pub mod secure_overlay;
pub mod txn;
pub mod ua;

#[cfg(feature = "tokio")]
pub mod driver;

pub use digest::{Credentials, DigestAuth};
pub use frontend::{FrontEnd, FrontEndConfig, FrontEndStats, FrontEndTables, stats_line};
pub use loopback::{LoopbackNet, LoopbackOverlay};
pub use msg::{MsgError, SipMessage, SipRequest, SipResponse};
pub use overlay_api::{Overlay, OverlayCall, OverlayEvent, OverlayQuery};
pub use own_ua::{CallError, CallEvent, PEER_DOMAIN};
pub use peer::{PeerCore, PeerEvent, SipInbound};
pub use registration::{
    RegError, Registration, RegistrationStore, RegistrationValidator, SignedRegistration, aor_key,
    normalize_aor, registration_in_value, registrations_in_value,
};
pub use txn::{Peer, SipTransmit, Transport};
