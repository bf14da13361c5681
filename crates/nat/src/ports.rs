//! UDP port ranges as operators write them (`FIRST-LAST`): the TURN server's relay ports
//! (`p2psip stun-server --relay-ports`) and a peer's media relay ports (`p2psip peer
//! --media-ports`), parsed by one rule.

use std::fmt;

/// A range of UDP ports as an operator writes it, `FIRST-LAST`: shown in the form
/// [`PortRange::parse`] reads back, so a flag's default looks like a value it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (in the range).
    pub last: u16,
}

impl PortRange {
    /// `FIRST-LAST` by the rule of [`parse_port_range`].
    pub fn parse(s: &str, min_ports: u16) -> Result<Self, String> {
        let (first, last) = parse_port_range(s, min_ports)?;
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// `FIRST-LAST` (spaces allowed around each number): a range of at least `min_ports` ports
/// that does not start at port 0.
pub fn parse_port_range(s: &str, min_ports: u16) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: want FIRST-LAST, e.g. 20000-29999"))?;
    let first: u16 = a
        .trim()
        .parse()
        .map_err(|e| format!("first port {a:?}: {e}"))?;
    let last: u16 = b
        .trim()
        .parse()
        .map_err(|e| format!("last port {b:?}: {e}"))?;
    if first == 0 || u32::from(last) + 1 < u32::from(first) + u32::from(min_ports.max(1)) {
        return Err(format!(
            "{s:?}: want 1 <= FIRST and at least {min_ports} port(s) from FIRST to LAST"
        ));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_short_or_broken_ones_are_refused() {
        assert_eq!(parse_port_range("20000-29999", 4), Ok((20000, 29999)));
        assert_eq!(parse_port_range(" 5 - 8 ", 4), Ok((5, 8)));
        assert_eq!(parse_port_range("5-5", 1), Ok((5, 5)));
        for (bad, min) in [
            ("5-7", 4),
            ("6-5", 1),
            ("0-10", 1),
            ("10", 1),
            ("a-10", 1),
            ("1-70000", 1),
        ] {
            assert!(parse_port_range(bad, min).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_range_reads_back_as_shown() {
        let r = PortRange {
            first: 20000,
            last: 29999,
        };
        assert_eq!(r.to_string(), "20000-29999");
        assert_eq!(PortRange::parse(&r.to_string(), 4), Ok(r));
    }
}
