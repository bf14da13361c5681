//! Real tools a test needs (SIPp, coturn, …): what a test does when one is missing.

/// Say that `tool` (Debian package `package`) is missing. Under CI (`CI=true`), where
/// `./scripts/test` installs it, that is a failure: the test panics. Elsewhere the test
/// skips, saying so loudly on stdout and stderr.
pub fn tool_missing(tool: &str, package: &str) {
    let text = format!(
        "{tool} is not installed (Debian package {package}); ./scripts/test run as root installs it"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {text}");
    }
    println!("SKIPPED: {text}");
    eprintln!("SKIPPED: {text}");
}
