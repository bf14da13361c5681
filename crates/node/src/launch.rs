//! Starting a peer's runtime: from a peer's parts (TLS settings, its core, its SOS link) to
//! a running peer, for [`crate::Node::start`].

use net::{Handle, NetConfig, NetError, PeerRuntime, SecureCore, SosLink};
use overlay::Contact;
use overlay::secure::SecureEvent;
use sip::{PeerCore, PeerEvent};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events a running peer queues for its application before dropping (a slow reader must
/// not stall the peer's loop).
const APP_QUEUE: usize = 4096;

/// A peer's parts, ready to start.
#[derive(Debug)]
pub(crate) struct Launch {
    /// TLS listener, identity, trust, limits.
    pub(crate) net: NetConfig,
    /// Outbound-only (behind NAT): reachable through this public peer, with a keepalive
    /// on the link to it at this interval.
    pub(crate) relay: Option<(Contact, Duration)>,
    /// The SOS for route rankings and evidence; `None`: callees take the shortest route
    /// and evidence is dropped.
    pub(crate) sos: Option<SosLink>,
}

/// A started peer.
#[derive(Debug)]
pub(crate) struct Running<N: SecureCore<Event = SecureEvent>> {
    /// Runs work on the peer's core.
    pub(crate) handle: Handle<PeerCore<N>>,
    /// The events for the application (SOS rankings and evidence are taken care of).
    pub(crate) events: mpsc::Receiver<Box<PeerEvent>>,
    /// The runtime's loop; it ends after [`Handle::shutdown`].
    pub(crate) task: JoinHandle<()>,
}

/// Start the runtime with the core `make` builds for this peer's contact, and the task
/// that answers its SOS rankings and posts its evidence.
pub(crate) async fn launch<N>(
    parts: Launch,
    make: impl FnOnce(Contact) -> PeerCore<N>,
) -> Result<Running<N>, NetError>
where
    N: SecureCore<Event = SecureEvent>,
{
    let PeerRuntime {
        handle,
        events,
        task,
    } = match parts.relay {
        Some((relay, every)) => {
            PeerRuntime::start_outbound_only(parts.net, relay, every, make).await?
        }
        None => PeerRuntime::start(parts.net, make).await?,
    };
    let (app_tx, app_rx) = mpsc::channel(APP_QUEUE);
    tokio::spawn(net::run_events(
        handle.clone(),
        events,
        parts.sos,
        Some(app_tx),
    ));
    Ok(Running {
        handle,
        events: app_rx,
        task,
    })
}
