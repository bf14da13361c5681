//! The answers p2psip gives `rice-proto`'s sans-IO ICE agent (RFC 8445), in one place for
//! the two that drive one: the ICE session between two peers (`nat::IceSession`, a tokio
//! shell over UDP sockets) and the ICE on a media relay's far leg (`sip::media`, sans-IO).
//!
//! Both offer UDP candidates only, so every request the agent makes for a (TCP) socket is
//! refused ([`refuse_socket`]); and both store the pair the agent selects on its component
//! ([`keep_selected_pair`]), which rice-proto 0.4 reports but leaves to the caller.
//! Everything else of driving an agent (when to poll it, where its datagrams go, what a
//! selected pair means to the driver) stays with each driver.

#![warn(missing_docs, unreachable_pub)]

use rice_proto::agent::{Agent, AgentSelectedPair, AgentSocket};
use rice_proto::candidate::CandidatePair;
use stun_proto::Instant;
use tracing::warn;

/// Answer the agent's [`AgentPoll::AllocateSocket`](rice_proto::agent::AgentPoll) request
/// with "no such resource": only TCP candidates ask for sockets, and p2psip offers UDP
/// only. A request for a stream the agent no longer has is dropped.
pub fn refuse_socket(agent: &mut Agent, req: &AgentSocket, now: Instant) {
    if let Some(mut stream) = agent.mut_stream(req.stream_id) {
        stream.allocated_socket(
            req.component_id,
            req.transport,
            req.from,
            req.to,
            Err(stun_proto::agent::StunError::ResourceNotFound),
            now,
        );
    }
}

/// Store the pair of an [`AgentPoll::SelectedPair`](rice_proto::agent::AgentPoll) on its
/// component (what the component sends on), and return it. A pair the component cannot
/// take is logged and returned all the same: the checks did succeed on it.
pub fn keep_selected_pair(agent: &mut Agent, selected: &AgentSelectedPair) -> CandidatePair {
    let pair = selected.selected.candidate_pair().clone();
    if let Some(mut stream) = agent.mut_stream(selected.stream_id)
        && let Some(mut component) = stream.mut_component(selected.component_id)
        && let Err(e) = component.set_selected_pair(pair.clone())
    {
        warn!(error = %e, "could not store the selected ICE pair");
    }
    pair
}
