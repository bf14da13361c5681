//! Media anchoring for a peer's local phones: the front-end rewrites the SDP it carries so
//! each phone sends its RTP/RTCP to its own peer, and the peer's relay carries it to the
//! other peer (whose address the rewritten SDP names towards the far end). Two homes behind
//! NAT then hear each other although neither phone can reach the other's LAN address.
//!
//! [`sdp`] finds and rewrites the addresses and ports, [`relay`] is the sans-IO relay state
//! (ports, latching, forwarding, bounds), [`ice`] runs ICE and consent freshness on the legs
//! between the two peers' relays. [`MediaAnchor`] is what the front-end calls: the
//! relay behind a lock in tests, a shell that shares the relay with its sockets in a
//! deployment.

pub mod ice;
pub mod quality;
pub mod relay;
pub mod sdp;

pub use ice::{CandidateKind, IcePair};
pub use relay::{
    DirectionReport, Forward, MediaCommand, MediaError, MediaPath, MediaRelay, Origin, RelayBounds,
    RelayConfig, RelayStats, Rewritten, StreamReport, Transmit,
};
pub use sdp::{IceAttributes, Sdp, SdpError, Stream, Target};

use crate::msg::{SipRequest, SipResponse};
use overlay::Time;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What the front-end asks of the media relay while it carries a call.
pub trait MediaAnchor: Send {
    /// An SDP body of call `call_id` from `origin`: the body to pass on instead.
    fn rewrite(&mut self, now: Time, call_id: &str, origin: Origin, sdp: &[u8]) -> Rewritten;

    /// The dialog of `call_id` ended: free what it held.
    fn end_call(&mut self, call_id: &str);
}

/// The relay shared with whoever else reads it while the front-end anchors media with it
/// (a test looking at its streams, say): each call holds the lock for its length.
impl MediaAnchor for Arc<Mutex<MediaRelay>> {
    fn rewrite(&mut self, now: Time, call_id: &str, origin: Origin, sdp: &[u8]) -> Rewritten {
        lock(self).rewrite(now, call_id, origin, sdp)
    }

    fn end_call(&mut self, call_id: &str) {
        lock(self).end_call(call_id)
    }
}

/// The relay behind `shared`; a poisoned lock is taken as it is, as the media shell does.
fn lock(shared: &Mutex<MediaRelay>) -> MutexGuard<'_, MediaRelay> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The front-end's optional anchor, applied to the messages it forwards. Without an anchor
/// every call leaves SDP untouched.
#[derive(Default)]
pub(crate) struct Anchoring {
    anchor: Option<Box<dyn MediaAnchor>>,
    /// Bodies passed on unchanged because the anchor refused them.
    pub(crate) refused: u64,
}

const SDP: &str = "application/sdp";

fn is_sdp(content_type: Option<String>) -> bool {
    content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(SDP))
    })
}

impl Anchoring {
    /// Anchor media with `anchor` from now on.
    pub(crate) fn set(&mut self, anchor: Box<dyn MediaAnchor>) {
        self.anchor = Some(anchor);
    }

    fn rewritten(
        &mut self,
        now: Time,
        call_id: Option<String>,
        origin: Origin,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let anchor = self.anchor.as_mut()?;
        let call_id = call_id?;
        if body.is_empty() {
            return None;
        }
        match anchor.rewrite(now, &call_id, origin, body) {
            Ok(b) => Some(b),
            Err(e) => {
                self.refused += 1;
                tracing::info!(call = %call_id, "media not anchored, SDP passed on unchanged: {e}");
                None
            }
        }
    }

    /// Anchor the SDP of a request the front-end forwards.
    pub(crate) fn request(&mut self, now: Time, origin: Origin, req: &mut SipRequest) {
        if self.anchor.is_none() || !is_sdp(req.header("Content-Type")) {
            return;
        }
        if let Some(body) = self.rewritten(now, req.call_id(), origin, req.body()) {
            let _ = req.set_body(SDP, body);
        }
    }

    /// Anchor the SDP of a response the front-end forwards.
    pub(crate) fn response(&mut self, now: Time, origin: Origin, resp: &mut SipResponse) {
        if self.anchor.is_none() || !is_sdp(resp.header("Content-Type")) {
            return;
        }
        if let Some(body) = self.rewritten(now, resp.call_id(), origin, resp.body()) {
            let _ = resp.set_body(SDP, body);
        }
    }

    /// The dialog of `call_id` ended.
    pub(crate) fn end(&mut self, call_id: &str) {
        if let Some(a) = self.anchor.as_mut() {
            a.end_call(call_id);
        }
    }
}
