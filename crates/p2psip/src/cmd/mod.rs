//! One module per subcommand: its clap `Args` and a `run` function.

pub(crate) mod demo;
pub(crate) mod sos;
