//! Lines on stdout for the operator (a service's banner, a call's result). A closed or full
//! stdout never stops a running service: `writeln!(..)?` would end it and `println!` would
//! panic when whoever started it stopped reading (a test that read only the first line,
//! `| head -1`). Either way the service keeps running and says so on stderr once.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Print one line for the operator; never fails, never panics.
pub fn say(text: std::fmt::Arguments<'_>) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let mut out = std::io::stdout().lock();
    let result = writeln!(out, "{text}").and_then(|()| out.flush());
    if let Err(e) = result
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        eprintln!("warning: stdout is not writable ({e}); carrying on without it");
    }
}

/// [`say`] with `println!` syntax: `service::say!("peer {id} listening on {addr}")`.
#[macro_export]
macro_rules! say {
    () => {
        $crate::output::say(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::say(format_args!($($arg)*))
    };
}

/// `error` and every cause under it, `: `-separated: one line for a log, where `{:#}`
/// is not available (typed errors keep their causes in `source()`, not in their text).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
