//! What the SIP front-end needs from the overlay: store and find signed registrations, carry
//! an INVITE through the secure call flow, and carry in-dialog messages both ways afterwards.
//!
//! The front-end calls [`Overlay`]; answers and arrivals come back as [`OverlayEvent`]s that
//! the driver feeds to [`crate::FrontEnd::handle_overlay_event`].

use crate::registration::SignedRegistration;
use overlay::secure::CallFailure;
use overlay::{NodeId, Time};

/// Handle of one call on one overlay instance; unique across calls it placed and calls it
/// received.
pub type OverlayCall = u64;

/// Handle of one store or find request.
pub type OverlayQuery = u64;

/// The overlay as the front-end sees it.
pub trait Overlay {
    /// Store (or refresh, or remove with `expires_unix_ms == 0`) a signed registration at
    /// hash(AoR) and its successors. Answered by [`OverlayEvent::Stored`].
    fn store_registration(&mut self, now: Time, reg: SignedRegistration) -> OverlayQuery;
    /// Find the registration of `aor`. Answered by [`OverlayEvent::Found`].
    fn find_registration(&mut self, now: Time, aor: &str) -> OverlayQuery;
    /// Carry `invite` (SIP bytes) to `callee` through the secure call flow; the callee's
    /// front-end gets [`OverlayEvent::IncomingCall`]. Failure: [`OverlayEvent::CallFailed`].
    fn send_call(&mut self, now: Time, callee: NodeId, invite: Vec<u8>) -> OverlayCall;
    /// Carry one SIP message (response or in-dialog request) to the other end of `call`;
    /// it arrives there as [`OverlayEvent::InDialog`].
    fn send_in_dialog(&mut self, now: Time, call: OverlayCall, sip: Vec<u8>);
    /// This front-end is done with `call` (BYE answered, call failed, idle): the overlay may
    /// forget its state for it.
    fn end_call(&mut self, now: Time, call: OverlayCall);
}

/// What the overlay tells the front-end.
#[derive(Clone, Debug, PartialEq)]
pub enum OverlayEvent {
    /// A store finished (`Err` carries the storing peer's reason, e.g. not the owner).
    Stored {
        /// From [`Overlay::store_registration`].
        query: OverlayQuery,
        /// Outcome.
        result: Result<(), String>,
    },
    /// A find finished (`None`: no registration, or no answer).
    Found {
        /// From [`Overlay::find_registration`].
        query: OverlayQuery,
        /// What the responsible peer holds.
        registration: Option<SignedRegistration>,
    },
    /// An INVITE for one of our registered users.
    IncomingCall {
        /// Our handle for answering ([`Overlay::send_in_dialog`]).
        call: OverlayCall,
        /// The calling peer.
        caller: NodeId,
        /// The INVITE, unchanged.
        invite: Vec<u8>,
    },
    /// A SIP message from the other end of a call.
    InDialog {
        /// The call.
        call: OverlayCall,
        /// The SIP message.
        sip: Vec<u8>,
    },
    /// A call we placed could not be delivered.
    CallFailed {
        /// From [`Overlay::send_call`].
        call: OverlayCall,
        /// Why.
        reason: CallFailure,
    },
}
