//! The STUN/TURN server's message path: nat's admission gate in front of the
//! `turn-server-proto` machine, as the `MessagePath` that `nat::server`'s loop drives,
//! with relay sockets simulated by the gate tests' rig. All three are compiled from the
//! server's own source files (`crates/nat/src/gate.rs`, `path.rs` and `rig.rs`, which are
//! crate-private). A real signed session (401 challenge, Allocate, CreatePermission,
//! ChannelBind, Send, ChannelData, Refresh) runs first, so fuzzed datagrams meet a live
//! allocation.
//!
//! Input: a sequence of `[who u8][len u16 BE][bytes]` datagrams; `who` picks the authenticated
//! client, a stranger, or a peer on the relay side.
#![no_main]
#![allow(dead_code, unreachable_pub)]

mod credentials {
    pub use nat::{CredentialStore, Credentials, LookupError};
}
mod datagrams;
#[path = "../../crates/nat/src/gate.rs"]
mod gate;
#[path = "../../crates/nat/src/path.rs"]
mod path;
#[path = "../../crates/nat/src/rig.rs"]
mod rig;

use datagrams::datagrams;
use libfuzzer_sys::fuzz_target;
use rig::{Rig, client, peer, session};
use std::net::SocketAddr;
use std::time::Duration;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fuzz_target!(|data: &[u8]| {
    let (client, peer) = (client(), peer());
    let mut rig = Rig::new();
    let _ = session(&mut rig);
    for (who, dgram) in datagrams(data) {
        match who % 4 {
            0 => drop(rig.client(client, dgram)),
            1 => drop(rig.client(addr("10.0.0.1:1"), dgram)),
            2 => drop(rig.peer(peer, dgram)),
            _ => {
                // Time passes: lifetimes expire, the gate and machine must agree.
                rig.now += Duration::from_secs(u64::from(who) * 4);
                rig.drive(None);
            }
        }
        assert!(
            rig.path.gate.active_allocations() <= 4,
            "allocation cap held"
        );
    }
});
