//! SIP digest authentication for the front-end (RFC 3261 §22, RFC 8760, RFC 7616 digest
//! computation), so operators can keep strangers from registering or calling through a
//! peer's local registrar. Sans-IO: [`DigestAuth::check`] takes `now` and the request's
//! Authorization header and says accept / challenge / refuse.
//!
//! Nonces are stateless: `hex(seconds) ‖ hex(HMAC-SHA-256(secret, seconds))` with a
//! per-process random secret, so nothing is stored per challenge and a nonce expires after
//! [`DigestAuth::nonce_ttl`] (then the answer is a challenge with `stale=true`). The nonce
//! count is not tracked (no per-nonce state), so a captured Authorization can be replayed
//! within the nonce lifetime; keep the lifetime short.
//!
//! Credentials file format (one user per line, `#` comments and blank lines ignored):
//! `user:password`, or `user:HA1` where HA1 = H(user:realm:password) in lowercase hex —
//! 32 hex digits for MD5, 64 for SHA-256 (a password that is exactly 32 or 64 hex digits is
//! therefore read as an HA1). A user given by HA1 can only answer that algorithm.

use md5::Digest as _;
use overlay::Time;
use ring::hmac;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Longest Authorization header we parse.
pub const MAX_AUTH_HEADER: usize = 2048;
/// Longest user name, password or parameter value we accept.
pub const MAX_FIELD: usize = 256;
/// Most users in one credentials file.
pub const MAX_USERS: usize = 100_000;

/// Errors loading credentials or building the authenticator.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A credentials line that is not `user:secret`.
    #[error("credentials line {line}: {why}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// More users than [`MAX_USERS`].
    #[error("more than {MAX_USERS} users in the credentials file")]
    TooMany,
    /// No user at all.
    #[error("the credentials file has no user")]
    Empty,
    /// The system RNG failed.
    #[error("no randomness for the nonce secret")]
    Rng,
    /// The credentials file could not be read.
    #[error("reading credentials file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An algorithm list with an unknown or repeated name, or empty.
    #[error("digest algorithms {0:?}: expected a comma list of SHA-256 and/or MD5")]
    BadAlgorithms(String),
    /// The credentials file is larger than [`MAX_FILE`].
    #[error("credentials file {0} is larger than {MAX_FILE} bytes")]
    TooBig(String),
}

/// Largest credentials file read.
pub const MAX_FILE: u64 = 16 << 20;

/// Digest hash algorithms we offer (RFC 8760).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 2617; kept for old phones).
    Md5,
    /// SHA-256 (RFC 7616 / RFC 8760; preferred).
    Sha256,
}

impl Algorithm {
    /// The token in `algorithm=`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Lowercase hex of H(data).
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&md5::Md5::digest(data)),
            Algorithm::Sha256 => hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref()),
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }
}

/// Lower-case hex of `b`, as digest hashes and nonces are written; public so the tools
/// around the SIP side write bytes the one way.
pub fn hex(b: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// The bytes of hex text `s` (either case), or `None` when it is not hex pairs.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// HA1 = H(user:realm:password).
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(format!("{user}:{realm}:{password}").as_bytes())
}

/// The digest `response` for qop=auth: H(HA1:nonce:nc:cnonce:auth:H(method:uri)).
pub fn response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hash_hex(format!("{method}:{uri}").as_bytes());
    alg.hash_hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes())
}

/// What a UA sends back (for `p2psip call` and tests): an Authorization value answering
/// `nonce` with qop=auth.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    alg: Algorithm,
    user: &str,
    password: &str,
    realm: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let nc = format!("{nc:08x}");
    let h = ha1(alg, user, realm, password);
    let r = response(alg, &h, nonce, &nc, cnonce, method, uri);
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{r}\", algorithm={}, cnonce=\"{cnonce}\", qop=auth, nc={nc}",
        alg.name()
    )
}

#[derive(Clone)]
enum Secret {
    Password(String),
    Ha1(Algorithm, String),
}

/// The users allowed to use a front-end.
#[derive(Clone, Default)]
pub struct Credentials {
    users: BTreeMap<String, Secret>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({} users)", self.users.len())
    }
}

impl Credentials {
    /// Parse a credentials file (format in the module doc).
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut users = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why| AuthError::BadLine { line: line_no, why };
            let (user, secret) = line.split_once(':').ok_or(bad("expected user:password"))?;
            if user.is_empty() || user.len() > MAX_FIELD || secret.len() > MAX_FIELD {
                return Err(bad("user or password empty or too long"));
            }
            if user
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
            {
                return Err(bad("user name has a space, quote or backslash"));
            }
            if secret.is_empty() {
                return Err(bad("empty password"));
            }
            let is_hex = secret.bytes().all(|b| b.is_ascii_hexdigit());
            let s = match secret.len() {
                32 if is_hex => Secret::Ha1(Algorithm::Md5, secret.to_ascii_lowercase()),
                64 if is_hex => Secret::Ha1(Algorithm::Sha256, secret.to_ascii_lowercase()),
                _ => Secret::Password(secret.to_string()),
            };
            if users.len() >= MAX_USERS {
                return Err(AuthError::TooMany);
            }
            users.insert(user.to_string(), s);
        }
        if users.is_empty() {
            return Err(AuthError::Empty);
        }
        Ok(Credentials { users })
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn ha1(&self, user: &str, realm: &str, alg: Algorithm) -> Option<String> {
        match self.users.get(user)? {
            Secret::Password(p) => Some(ha1(alg, user, realm, p)),
            Secret::Ha1(a, h) if *a == alg => Some(h.clone()),
            Secret::Ha1(..) => None,
        }
    }
}

/// The answer to a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials of this user.
    Accept(String),
    /// No, wrong or unknown credentials: answer 401 with fresh challenges
    /// (`stale`: the credentials were right but the nonce expired).
    Challenge {
        /// Send `stale=true`.
        stale: bool,
    },
    /// An Authorization we cannot parse or that does not match the request: 400.
    BadRequest(&'static str),
}

/// The authenticator of one front-end: realm, users and the nonce secret.
#[derive(Clone)]
pub struct DigestAuth {
    realm: String,
    creds: Credentials,
    key: hmac::Key,
    /// How long a nonce is good for.
    pub nonce_ttl: Duration,
    /// Algorithms offered, most preferred first (one WWW-Authenticate each).
    pub algorithms: Vec<Algorithm>,
}

impl fmt::Debug for DigestAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestAuth")
            .field("realm", &self.realm)
            .field("creds", &self.creds)
            .field("nonce_ttl", &self.nonce_ttl)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes for [`DigestAuth::new`] from the system RNG.
pub fn random_secret() -> Result<[u8; 32], AuthError> {
    use ring::rand::SecureRandom;
    let mut s = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut s)
        .map_err(|_| AuthError::Rng)?;
    Ok(s)
}

/// The front-end authenticator for `--sip-credentials FILE`: realm `domain`, users from the
/// file, a fresh random nonce secret (so nonces die with the process).
pub fn load(path: &std::path::Path, domain: &str) -> Result<DigestAuth, AuthError> {
    use std::io::Read;
    let name = path.display().to_string();
    let io = |source| AuthError::Io {
        path: name.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    f.take(MAX_FILE + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > MAX_FILE {
        return Err(AuthError::TooBig(name));
    }
    let creds = Credentials::parse(&text)?;
    Ok(DigestAuth::new(domain, creds, random_secret()?))
}

/// Parse `--sip-digest` (`SHA-256,MD5`: the challenges offered, most preferred first).
/// Old UAs such as SIPp 3.6 read only the first challenge and know only MD5: list MD5
/// first for them.
pub fn parse_algorithms(s: &str) -> Result<Vec<Algorithm>, AuthError> {
    let mut out = Vec::new();
    for part in s.split(',') {
        match Algorithm::parse(part.trim()) {
            Some(a) if !out.contains(&a) => out.push(a),
            _ => return Err(AuthError::BadAlgorithms(s.to_string())),
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Params<'a> {
    username: Option<&'a str>,
    realm: Option<&'a str>,
    nonce: Option<&'a str>,
    uri: Option<&'a str>,
    response: Option<&'a str>,
    algorithm: Option<&'a str>,
    cnonce: Option<&'a str>,
    qop: Option<&'a str>,
    nc: Option<&'a str>,
}

/// Split `Digest k=v, k="v", ...` (no escapes inside quotes are needed by any field we
/// read; a backslash is refused).
fn parse_params(h: &str) -> Result<Params<'_>, &'static str> {
    let h = h.trim();
    let rest = match h.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("Digest") => rest,
        _ => return Err("not a Digest Authorization"),
    };
    let mut p = Params::default();
    let mut s = rest.trim_start();
    let mut n = 0;
    while !s.is_empty() {
        n += 1;
        if n > 32 {
            return Err("too many parameters");
        }
        let (name, after) = s.split_once('=').ok_or("parameter without =")?;
        let name = name.trim();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').ok_or("unterminated quote")?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        if value.len() > MAX_FIELD || value.contains('\\') {
            return Err("parameter too long or escaped");
        }
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => &mut p.username,
            "realm" => &mut p.realm,
            "nonce" => &mut p.nonce,
            "uri" => &mut p.uri,
            "response" => &mut p.response,
            "algorithm" => &mut p.algorithm,
            "cnonce" => &mut p.cnonce,
            "qop" => &mut p.qop,
            "nc" => &mut p.nc,
            _ => &mut None,
        };
        *slot = Some(value);
        let next = next.trim_start();
        s = match next.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if next.is_empty() => next,
            None => return Err("expected , between parameters"),
        };
    }
    Ok(p)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl DigestAuth {
    /// An authenticator for `realm` (the SIP domain) with `secret` keying its nonces.
    pub fn new(realm: &str, creds: Credentials, secret: [u8; 32]) -> Self {
        DigestAuth {
            realm: realm.to_string(),
            creds,
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            nonce_ttl: Duration::from_secs(300),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// How many users.
    pub fn users(&self) -> usize {
        self.creds.len()
    }

    /// A fresh nonce for `now`.
    pub fn nonce(&self, now: Time) -> String {
        let secs = now.as_micros() / 1_000_000;
        let tag = hmac::sign(&self.key, &secs.to_be_bytes());
        format!("{secs:016x}{}", hex(tag.as_ref()))
    }

    /// Some(stale?) for a nonce we issued, None for a forged or garbled one.
    fn nonce_stale(&self, now: Time, nonce: &str) -> Option<bool> {
        if nonce.len() != 16 + 64 {
            return None;
        }
        let secs = u64::from_str_radix(nonce.get(..16)?, 16).ok()?;
        let tag = unhex(nonce.get(16..)?)?;
        hmac::verify(&self.key, &secs.to_be_bytes(), &tag).ok()?;
        let now_s = now.as_micros() / 1_000_000;
        if secs > now_s {
            return None;
        }
        Some(now_s - secs > self.nonce_ttl.as_secs())
    }

    /// The WWW-Authenticate values for a 401, one per algorithm.
    pub fn challenges(&self, now: Time, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now);
        self.algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
                    self.realm,
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Judge a request's Authorization (`None` when it has none) for `method`.
    pub fn check(&self, now: Time, method: &str, auth: Option<&str>) -> Verdict {
        let Some(h) = auth else {
            return Verdict::Challenge { stale: false };
        };
        if h.len() > MAX_AUTH_HEADER {
            return Verdict::BadRequest("Authorization too long");
        }
        let p = match parse_params(h) {
            Ok(p) => p,
            Err(e) => return Verdict::BadRequest(e),
        };
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(resp)) =
            (p.username, p.realm, p.nonce, p.uri, p.response)
        else {
            return Verdict::BadRequest("Authorization lacks a field");
        };
        if realm != self.realm {
            return Verdict::Challenge { stale: false };
        }
        let Some(alg) = Algorithm::parse(p.algorithm.unwrap_or("MD5")) else {
            return Verdict::Challenge { stale: false };
        };
        if !self.algorithms.contains(&alg) {
            return Verdict::Challenge { stale: false };
        }
        if !p.qop.is_some_and(|q| q.eq_ignore_ascii_case("auth")) {
            return Verdict::BadRequest("qop=auth required");
        }
        let (Some(nc), Some(cnonce)) = (p.nc, p.cnonce) else {
            return Verdict::BadRequest("nc and cnonce required");
        };
        if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Verdict::BadRequest("bad nc");
        }
        // RFC 7616 §3.4.6 wants uri = Request-URI; SIPp and some phones put the
        // front-end's own address there instead, so any SIP URI is taken (the response
        // still covers the uri as sent). So the Request-URI is not an input here.
        let lower = uri.to_ascii_lowercase();
        if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
            return Verdict::BadRequest("digest uri is not a SIP URI");
        }
        let Some(stale) = self.nonce_stale(now, nonce) else {
            return Verdict::Challenge { stale: false };
        };
        let Some(h1) = self.creds.ha1(user, &self.realm, alg) else {
            return Verdict::Challenge { stale: false };
        };
        let want = response(alg, &h1, nonce, nc, cnonce, method, uri);
        if resp.len() != alg.hex_len()
            || !ct_eq(want.as_bytes(), resp.to_ascii_lowercase().as_bytes())
        {
            return Verdict::Challenge { stale: false };
        }
        if stale {
            return Verdict::Challenge { stale: true };
        }
        Verdict::Accept(user.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rfc2617_md5_example() {
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let r = response(
            Algorithm::Md5,
            &h,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_sha256_and_md5_example() {
        let realm = "http-auth@example.org";
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let run = |alg| {
            let h = ha1(alg, "Mufasa", realm, "Circle of Life");
            response(alg, &h, nonce, "00000001", cnonce, "GET", "/dir/index.html")
        };
        assert_eq!(
            run(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert_eq!(run(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
    }

    fn auth() -> DigestAuth {
        let creds = Credentials::parse(&format!(
            "# users\nalice:wonderland\n\nbob:{}\n",
            ha1(Algorithm::Md5, "bob", "p2psip.test", "builder")
        ))
        .unwrap();
        DigestAuth::new("p2psip.test", creds, [7; 32])
    }

    const URI: &str = "sip:p2psip.test";

    /// The verdict on a REGISTER that carries `authorization`.
    fn register(a: &DigestAuth, now: Time, authorization: &str) -> Verdict {
        a.check(now, "REGISTER", Some(authorization))
    }

    fn answer(a: &DigestAuth, now: Time, alg: Algorithm, user: &str, pw: &str) -> String {
        let nonce = a.nonce(now);
        authorization(
            alg,
            user,
            pw,
            "p2psip.test",
            &nonce,
            "REGISTER",
            URI,
            "c0ffee",
            1,
        )
    }

    #[test]
    fn challenge_accept_reject() {
        let a = auth();
        let now = Time::from_millis((1000) * 1000);
        assert_eq!(
            a.check(now, "REGISTER", None),
            Verdict::Challenge { stale: false }
        );
        let ch = a.challenges(now, false);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("algorithm=SHA-256") && ch[0].contains("qop=\"auth\""));
        assert!(ch[1].contains("algorithm=MD5") && ch[1].contains("realm=\"p2psip.test\""));
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let h = answer(&a, now, alg, "alice", "wonderland");
            assert_eq!(register(&a, now, &h), Verdict::Accept("alice".into()));
            // Same answer for another method does not verify.
            assert_eq!(
                a.check(now, "INVITE", Some(&h)),
                Verdict::Challenge { stale: false }
            );
            let wrong = answer(&a, now, alg, "alice", "wonderLand");
            assert_eq!(
                register(&a, now, &wrong),
                Verdict::Challenge { stale: false }
            );
            let unknown = answer(&a, now, alg, "mallory", "wonderland");
            assert_eq!(
                register(&a, now, &unknown),
                Verdict::Challenge { stale: false }
            );
        }
        // bob is given by MD5 HA1: MD5 works, SHA-256 cannot.
        let h = answer(&a, now, Algorithm::Md5, "bob", "builder");
        assert_eq!(register(&a, now, &h), Verdict::Accept("bob".into()));
        let h = answer(&a, now, Algorithm::Sha256, "bob", "builder");
        assert_eq!(register(&a, now, &h), Verdict::Challenge { stale: false });
    }

    #[test]
    fn stale_forged_and_foreign_nonces() {
        let a = auth();
        let t0 = Time::from_millis((1000) * 1000);
        let h = answer(&a, t0, Algorithm::Sha256, "alice", "wonderland");
        let later = Time::from_millis((1000 + 301) * 1000);
        assert_eq!(register(&a, later, &h), Verdict::Challenge { stale: true });
        assert!(a.challenges(later, true)[0].contains("stale=true"));
        // Another process (other secret) issued the nonce: not ours.
        let other = DigestAuth::new(
            "p2psip.test",
            Credentials::parse("alice:wonderland").unwrap(),
            [8; 32],
        );
        let h = answer(&other, t0, Algorithm::Md5, "alice", "wonderland");
        assert_eq!(register(&a, t0, &h), Verdict::Challenge { stale: false });
        // A nonce from the future is refused.
        let h = answer(
            &a,
            Time::from_millis((2000) * 1000),
            Algorithm::Md5,
            "alice",
            "wonderland",
        );
        assert_eq!(register(&a, t0, &h), Verdict::Challenge { stale: false });
    }

    #[test]
    fn malformed_authorization() {
        let a = auth();
        let now = Time::from_millis((10) * 1000);
        for bad in [
            "Basic YWxpY2U6d29uZGVybGFuZA==",
            "Digest username=\"alice",
            "Digest username=\"alice\" realm=\"x\"",
            "Digest username=\"alice\", realm=\"p2psip.test\"",
        ] {
            assert!(matches!(
                a.check(now, "REGISTER", Some(bad)),
                Verdict::BadRequest(_)
            ));
        }
        let long = format!("Digest username=\"{}\"", "a".repeat(MAX_AUTH_HEADER));
        assert!(matches!(register(&a, now, &long), Verdict::BadRequest(_)));
        let nonce = a.nonce(now);
        // alice's MD5 answer, for the digest uri `uri`.
        let with_uri = |uri: &str| {
            authorization(
                Algorithm::Md5,
                "alice",
                "wonderland",
                "p2psip.test",
                &nonce,
                "REGISTER",
                uri,
                "c",
                1,
            )
        };
        let h = with_uri("/dir/index.html");
        assert!(matches!(register(&a, now, &h), Verdict::BadRequest(_)));
        // The front-end's address as digest uri (what SIPp sends) is accepted.
        let h = with_uri("sip:127.0.0.1:5060");
        assert_eq!(register(&a, now, &h), Verdict::Accept("alice".into()));
    }

    #[test]
    fn algorithm_lists() {
        assert_eq!(
            parse_algorithms("MD5, sha-256").unwrap(),
            vec![Algorithm::Md5, Algorithm::Sha256]
        );
        assert!(parse_algorithms("").is_err());
        assert!(parse_algorithms("MD5,MD5").is_err());
        assert!(parse_algorithms("SHA-512-256").is_err());
    }

    #[test]
    fn credentials_file_errors() {
        assert!(matches!(
            Credentials::parse("# nobody\n"),
            Err(AuthError::Empty)
        ));
        assert!(matches!(
            Credentials::parse("alice\n"),
            Err(AuthError::BadLine { line: 1, .. })
        ));
        assert!(matches!(
            Credentials::parse("ok:pw\nbad user:pw\n"),
            Err(AuthError::BadLine { line: 2, .. })
        ));
        assert!(matches!(
            Credentials::parse("alice:\n"),
            Err(AuthError::BadLine { line: 1, .. })
        ));
    }
}
