//! The shell side of a peer's SIP front-end: the sockets phones talk to, feeding the
//! front-end inside the peer's [`NodeCore`] and sending what it answers. The front-end's
//! logic runs in the core; this module only moves datagrams.

use crate::NodeCore;
use net::{Handle, SecureCore};
use sip::driver::{DriverLimits, SipInbound, SipSender, SipSockets};
use sip::{FrontEnd, PeerEvent};
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// Datagrams from phones handed to the core per turn of the peer's loop.
const INTAKE_BATCH: usize = 64;

/// Bind the SIP sockets on `listen`, put the front-end `make(config)` into the running peer
/// `h`, and feed it what phones send. `config` is the front-end's configuration for
/// `domain` at the bound address, on the peer's clock (its Unix offset set); `make` adds
/// what else it needs (authentication) and builds the front-end. The front-end's messages
/// for phones come out of the peer's event channel as [`PeerEvent::SipOut`]; hand them to
/// the returned sockets' [`SipSockets::sender`] (see [`send_to_phones`]).
pub(crate) async fn serve_frontend(
    h: &Handle<NodeCore>,
    listen: SocketAddr,
    domain: &str,
    limits: DriverLimits,
    make: impl FnOnce(sip::FrontEndConfig) -> FrontEnd + Send + 'static,
) -> std::io::Result<SipSockets> {
    let (sockets, inbound) = SipSockets::bind(listen, limits).await?;
    let mut cfg = sip::FrontEndConfig::new(domain, sockets.local);
    h.call(move |core, now| {
        // The front-end runs on the peer's clock: Unix time at the loop's start.
        cfg.unix_offset_ms = service::time::unix_ms().saturating_sub(now.as_micros() / 1000);
        core.set_frontend(make(cfg));
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio::spawn(intake(h.clone(), inbound));
    Ok(sockets)
}

/// Phones' datagrams and messages into the core, a batch per turn of the peer's loop,
/// until the sockets or the peer stop.
async fn intake(h: Handle<NodeCore>, mut inbound: mpsc::Receiver<SipInbound>) {
    while let Some(first) = inbound.recv().await {
        let mut batch = vec![first];
        while batch.len() < INTAKE_BATCH {
            match inbound.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let fed = h
            .call(move |core, now| {
                for m in batch {
                    core.handle_sip(now, m);
                }
            })
            .await;
        if fed.is_err() {
            return;
        }
    }
}

/// Send the core's SIP messages among `events` to the phones; every other event is given
/// back.
pub(crate) fn send_to_phones(ev: PeerEvent, out: &SipSender) -> Option<PeerEvent> {
    match ev {
        PeerEvent::SipOut(t) => {
            out.send(t);
            None
        }
        other => Some(other),
    }
}

/// Make `handle`'s peer check SIP registrations stored with it (signature by the named
/// peer's certificate key, owner rule, freshness): without a validator a peer stores nothing
/// for others.
pub(crate) async fn install_registration_validator(
    handle: &Handle<NodeCore>,
) -> Result<(), net::NetError> {
    handle
        .call(|n, _| {
            let node = n.node();
            let space = node.chord().config().space;
            let verifier = node.context().verifier.clone();
            node.set_record_validator(std::sync::Arc::new(sip::RegistrationValidator {
                verifier,
                space,
            }));
        })
        .await
}
