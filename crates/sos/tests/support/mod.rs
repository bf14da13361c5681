//! What the SOS's HTTP tests share: starting a server on a loopback port.
#![allow(dead_code)]

use sos::{RunningServer, ServerConfig};
use testkit::https::LoopbackHttps;

/// An SOS with `cfg` on a free loopback port, over `https`'s transport.
pub async fn start_loopback(cfg: ServerConfig, https: &LoopbackHttps) -> RunningServer {
    RunningServer::start(
        cfg,
        "127.0.0.1:0".parse().expect("addr"),
        https.transport.clone(),
    )
    .await
    .expect("server starts")
}
