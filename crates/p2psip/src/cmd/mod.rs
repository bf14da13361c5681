//! One module per subcommand: its clap `Args` and a `run` function.

pub(crate) mod call;
pub(crate) mod ctl;
pub(crate) mod demo;
pub(crate) mod demo_churn;
pub(crate) mod demo_soak;
pub(crate) mod enroll;
pub(crate) mod enroll_server;
pub(crate) mod eval;
pub(crate) mod ice;
pub(crate) mod locality_sim;
pub(crate) mod peer;
pub(crate) mod sim;
pub(crate) mod sip_frontends;
pub(crate) mod sos;
pub(crate) mod stun_client;
pub(crate) mod stun_server;

/// Lines on stdout for the operator (a service's banner, a call's result). A closed or full
/// stdout never stops a running service: `writeln!(..)?` would end it and `println!` would
/// panic when whoever started it stopped reading (a test that read only the first line,
/// `| head -1`). Either way the service keeps running and says so on stderr once.
pub(crate) fn say(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    let mut out = std::io::stdout().lock();
    let result = writeln!(out, "{text}").and_then(|()| out.flush());
    if let Err(e) = result
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!("stdout is not writable ({e}); carrying on without it");
    }
}
