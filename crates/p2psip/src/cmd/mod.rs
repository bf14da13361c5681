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
/// says which on the log. The handlers are installed when this is called, not when the
/// future is first polled, so call it before telling anyone the service is ready: a SIGTERM
/// that follows READY=1 at once is then a clean stop, not a kill. Must run inside the
/// runtime. Where a handler cannot be installed, only the other signal stops the service.
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate())
        .inspect_err(|e| tracing::warn!("no SIGTERM handler ({e}); stopping on SIGINT only"));
    let int = signal(SignalKind::interrupt())
        .inspect_err(|e| tracing::warn!("no SIGINT handler ({e}); stopping on SIGTERM only"));
    async move {
        let term = async {
            match term {
                Ok(mut s) => s.recv().await,
                Err(_) => std::future::pending().await,
            }
        };
        let int = async {
            match int {
                Ok(mut s) => s.recv().await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int => tracing::info!("SIGINT"),
            _ = term => tracing::info!("SIGTERM"),
        }
    }
}
