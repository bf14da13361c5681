//! The one place rustls' crypto provider is chosen.
//!
//! The workspace builds rustls with `ring` only, and reqwest with `rustls-no-provider`:
//! reqwest then refuses to build a client ("No rustls crypto provider is configured") until
//! a process-wide default provider is installed. Every binary, test and client constructor
//! calls [`install_provider`] first; a second call is a no-op.

/// Install ring as rustls' process-wide crypto provider, unless one is installed already.
/// Idempotent and cheap; safe to call from every constructor that builds TLS or HTTP
/// clients and from every test (nextest runs each test in its own process).
pub fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing the same provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_and_stays() {
        install_provider();
        let first = rustls::crypto::CryptoProvider::get_default().map(|p| p.cipher_suites.len());
        assert!(first.is_some_and(|n| n > 0), "no provider after install");
        install_provider();
        let again = rustls::crypto::CryptoProvider::get_default().map(|p| p.cipher_suites.len());
        assert_eq!(first, again);
    }
}
