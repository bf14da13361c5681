//! Enrollment tokens: random bearer secrets the operator hands out; the server keeps only
//! their SHA-256, with role, uses left, expiry and an optional pinned layer.

use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of every token, so a token is recognisable in logs and configs.
pub const TOKEN_PREFIX: &str = "p2pt_";

/// Errors from token handling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The system RNG failed.
    #[error("system random number generator failed")]
    Rng,
    /// A duration string could not be read.
    #[error("bad duration {0:?} (use e.g. 30s, 15m, 24h, 7d)")]
    Duration(String),
}

/// A fresh token: prefix + 32 random bytes in hex.
pub fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Rng)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// The stored form of a token: SHA-256 of its text, hex.
pub fn hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Read a duration such as `90s`, `15m`, `24h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, TokenError> {
    let s = s.trim();
    let bad = || TokenError::Duration(s.to_string());
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .map(std::time::Duration::from_secs)
        .ok_or_else(bad)
}

/// `d` the way [`parse_duration`] reads it back (`24h`, `90d`, `30m`, `45s`): in the
/// largest unit that divides it, so a default shown on a command line looks like what an
/// operator would type.
pub fn format_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match [(86_400, 'd'), (3600, 'h'), (60, 'm')]
        .into_iter()
        .find(|(unit, _)| s > 0 && s.is_multiple_of(*unit))
    {
        Some((unit, c)) => format!("{}{c}", s / unit),
        None => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    /// Durations are shown the way the flags take them, and read back the same.
    #[test]
    fn format_duration_reads_back() {
        for secs in [1, 59, 60, 3600, 5400, 86_400, 90 * 86_400] {
            let d = std::time::Duration::from_secs(secs);
            let text = format_duration(d);
            assert_eq!(parse_duration(&text).unwrap(), d, "{text}");
        }
        assert_eq!(
            format_duration(std::time::Duration::from_secs(24 * 3600)),
            "1d"
        );
        assert_eq!(format_duration(std::time::Duration::from_secs(3600)), "1h");
    }
}
