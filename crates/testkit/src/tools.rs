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

/// Whether `tool` runs here (`tool --version` succeeds); when it does not, say so through
/// [`tool_missing`] (a failure under CI) and answer `false`, and the test returns.
pub fn have_tool(tool: &str, package: &str) -> bool {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        tool_missing(tool, package);
    }
    runs
}
