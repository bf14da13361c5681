//! Starting a peer's runtime: the one path from a peer's parts (TLS settings, its core, its
//! SOS link) to a running peer. [`crate::Node::start`] takes it after reading the node
//! directory; the lab's in-process peers take it with parts built in memory.

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
pub struct Launch {
    /// TLS listener, identity, trust, limits.
    pub net: NetConfig,
    /// Outbound-only (behind NAT): reachable through this public peer, with a keepalive
    /// on the link to it at this interval.
    pub relay: Option<(Contact, Duration)>,
    /// The SOS for route rankings and evidence; `None`: callees take the shortest route
    /// and evidence is dropped.
    pub sos: Option<SosLink>,
    /// Hand the peer's events to the application ([`Running::events`]); `false` for a peer
    /// nobody listens to (a lab's ordinary peers), whose events are dropped at once rather
    /// than queued.
    pub app_events: bool,
}

/// A started peer.
#[derive(Debug)]
pub struct Running<N: SecureCore<Event = SecureEvent>> {
    /// Runs work on the peer's core.
    pub handle: Handle<PeerCore<N>>,
    /// The events for the application (SOS rankings and evidence are taken care of);
    /// closed at once when [`Launch::app_events`] was off.
    pub events: mpsc::Receiver<PeerEvent>,
    /// The runtime's loop; it ends after [`Handle::shutdown`].
    pub task: JoinHandle<()>,
}

/// Start the runtime with the core `make` builds for this peer's contact, and the task
/// that answers its SOS rankings and posts its evidence.
pub async fn launch<N>(
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
    let (app_tx, app_rx) = mpsc::channel(if parts.app_events { APP_QUEUE } else { 1 });
    let app_tx = parts.app_events.then_some(app_tx);
    tokio::spawn(net::run_events(handle.clone(), events, parts.sos, app_tx));
    Ok(Running {
        handle,
        events: app_rx,
        task,
    })
}
