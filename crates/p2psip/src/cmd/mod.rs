//! One module per subcommand: its clap `Args` and a `run` function.

pub(crate) mod call;
pub(crate) mod config;
pub(crate) mod ctl;
pub(crate) mod enroll;
pub(crate) mod enroll_server;
pub(crate) mod ice;
pub(crate) mod peer;
pub(crate) mod sip_auth;
pub(crate) mod sip_frontends;
pub(crate) mod sos;
pub(crate) mod stun_client;
pub(crate) mod stun_server;

/// Resolves when the service is asked to stop: SIGINT (Ctrl-C) or SIGTERM (systemd, kill);
/// says which on the log. Without a SIGTERM handler (it could not be installed) only SIGINT.
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            _ = term.recv() => tracing::info!("SIGTERM"),
        },
        Err(e) => {
            tracing::warn!("no SIGTERM handler ({e}); stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("SIGINT");
        }
    }
}
