//! One module per subcommand: its clap `Args` and a `run` function.

pub(crate) mod call;
pub(crate) mod config;
pub(crate) mod ctl;
pub(crate) mod enroll;
pub(crate) mod enroll_server;
pub(crate) mod ice;
pub(crate) mod man;
pub(crate) mod peer;
pub(crate) mod sip_auth;
pub(crate) mod sip_frontends;
pub(crate) mod sos;
pub(crate) mod stun_client;
pub(crate) mod stun_server;

/// Resolves when the service is asked to stop: SIGINT (Ctrl-C) or SIGTERM (systemd, kill);
/// says which on the log. The handlers are installed by this call, not when the future is
/// first polled: call it before telling the manager the service is ready, so a SIGTERM
/// right after READY=1 is a graceful stop and not the default death. Without a SIGTERM
/// handler (it could not be installed) only SIGINT. Call it inside the tokio runtime.
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT"),
                _ = term.recv() => tracing::info!("SIGTERM"),
            },
            (term, _) => {
                if let Err(e) = term {
                    tracing::warn!("no SIGTERM handler ({e}); stopping on SIGINT only");
                }
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("SIGINT");
            }
        }
    }
}

/// A subcommand's options from `argv` (the subcommand's name first) the way the binary
/// parses them, or clap's message: for the tests of one subcommand.
#[cfg(test)]
pub(crate) fn parse<A: clap::Args + clap::FromArgMatches>(argv: &[&str]) -> Result<A, String> {
    let command = A::augment_args(clap::Command::new("p2psip"));
    command
        .try_get_matches_from(argv)
        .and_then(|m| A::from_arg_matches(&m))
        .map_err(|e| e.to_string())
}
