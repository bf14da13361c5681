//! TURN long-term credentials: static users and the TURN REST convention.
//!
//! The TURN REST convention (draft-uberti-behave-turn-rest, also what coturn's
//! `--use-auth-secret` implements) lets a server that shares a secret with the enrollment
//! service hand out time-limited credentials without any per-user state:
//!
//! - username = `<expiry-unix-seconds>:<node-id>`
//! - password = base64(HMAC-SHA1(shared secret, username))
//!
//! For p2psip the node id is the peer's enrolled Node-ID, so a TURN allocation can be traced
//! back to the enrolled peer that made it, and the per-user quota is a per-peer quota.

use std::collections::BTreeMap;

use base64::Engine as _;

/// A username/password pair for TURN long-term authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The STUN USERNAME.
    pub username: String,
    /// The password (never logged).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Plain static credentials.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Parse `name:pass` (as given on the command line). The password may contain `:`.
    pub fn parse_user_pass(s: &str) -> Option<Self> {
        let (user, pass) = s.split_once(':')?;
        if user.is_empty() {
            return None;
        }
        Some(Self::new(user, pass))
    }

    /// The TURN REST shared secret in the file at `path` (`--secret-file`), without
    /// trailing white space; an empty secret is refused.
    pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        let raw = std::fs::read(path)?;
        let trimmed = raw.trim_ascii_end();
        if trimmed.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the secret file is empty",
            ));
        }
        Ok(trimmed.to_vec())
    }

    /// TURN REST credentials for `node_id`, valid until `now_unix + ttl_secs`.
    pub fn rest(secret: &[u8], node_id: &str, now_unix: u64, ttl_secs: u64) -> Self {
        let username = rest_username(now_unix.saturating_add(ttl_secs), node_id);
        let password = rest_password(secret, &username);
        Self { username, password }
    }
}

/// The TURN REST username `<expiry>:<node-id>`.
pub fn rest_username(expiry_unix: u64, node_id: &str) -> String {
    format!("{expiry_unix}:{node_id}")
}

/// The TURN REST password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// Why a username was not accepted by [`CredentialStore::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Not a static user and not of the REST form `<expiry>:<node-id>` (or no secret configured).
    #[error("unknown user")]
    Unknown,
    /// A REST username whose expiry time has passed.
    #[error("REST credentials expired {0} s ago")]
    Expired(u64),
}

/// Where the server finds passwords: static users plus, optionally, a REST shared secret.
#[derive(Clone, Default)]
pub struct CredentialStore {
    users: BTreeMap<String, String>,
    rest_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialStore")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("rest_secret", &self.rest_secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl CredentialStore {
    /// An empty store: every authenticated request is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a static user.
    pub fn add_user(&mut self, creds: Credentials) {
        self.users.insert(creds.username, creds.password);
    }

    /// Accept TURN REST usernames signed with this shared secret.
    pub fn set_rest_secret(&mut self, secret: Vec<u8>) {
        self.rest_secret = Some(secret);
    }

    /// Whether any credentials at all are configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.rest_secret.is_none()
    }

    /// The static user whose RFC 8489 USERHASH (SHA-256 of `username:realm`) is `hash`.
    pub fn user_for_hash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        self.users
            .keys()
            .find(|u| {
                let d =
                    ring::digest::digest(&ring::digest::SHA256, format!("{u}:{realm}").as_bytes());
                d.as_ref() == hash.as_slice()
            })
            .cloned()
    }

    /// The password for `username` at wall-clock time `now_unix`.
    pub fn lookup(&self, username: &str, now_unix: u64) -> Result<String, LookupError> {
        if let Some(p) = self.users.get(username) {
            return Ok(p.clone());
        }
        let secret = self.rest_secret.as_ref().ok_or(LookupError::Unknown)?;
        let (expiry, node) = username.split_once(':').ok_or(LookupError::Unknown)?;
        let expiry: u64 = expiry.parse().map_err(|_| LookupError::Unknown)?;
        if node.is_empty() {
            return Err(LookupError::Unknown);
        }
        if expiry < now_unix {
            return Err(LookupError::Expired(now_unix - expiry));
        }
        Ok(rest_password(secret, username))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_is_hmac_sha1_base64() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog")
        // = de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9 (RFC 2104 test vector widely used).
        let p = rest_password(b"key", "The quick brown fox jumps over the lazy dog");
        assert_eq!(p, "3nybhbi3iqa8ino29wqQcBydtNk=");
    }

    #[test]
    fn store_accepts_static_and_fresh_rest_users() {
        let mut s = CredentialStore::new();
        s.add_user(Credentials::new("test", "pw"));
        s.set_rest_secret(b"s3cret".to_vec());
        assert_eq!(s.lookup("test", 0), Ok("pw".into()));
        let c = Credentials::rest(b"s3cret", "1593", 1000, 60);
        assert_eq!(c.username, "1060:1593");
        assert_eq!(s.lookup(&c.username, 1000), Ok(c.password.clone()));
        assert_eq!(s.lookup(&c.username, 1061), Err(LookupError::Expired(1)));
        assert_eq!(s.lookup("nobody", 0), Err(LookupError::Unknown));
        assert_eq!(s.lookup("x:1593", 0), Err(LookupError::Unknown));
        assert_eq!(s.lookup("99999:", 0), Err(LookupError::Unknown));
    }

    #[test]
    fn parse_user_pass() {
        assert_eq!(
            Credentials::parse_user_pass("a:b:c"),
            Some(Credentials::new("a", "b:c"))
        );
        assert_eq!(Credentials::parse_user_pass(":b"), None);
        assert_eq!(Credentials::parse_user_pass("ab"), None);
    }
}
