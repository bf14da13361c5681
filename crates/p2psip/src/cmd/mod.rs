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
