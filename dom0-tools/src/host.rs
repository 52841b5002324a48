//! The `<Host>` argument of `migrate`: where a domain is sent.

use std::fmt;
use std::str::FromStr;

/// A migration target: a host name or address, optionally with a port
/// (`host`, `host:8002`, `192.0.2.7`, `[2001:db8::1]:8002`). Only its
/// shape is checked here: it must be non-empty and free of whitespace
/// and control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host(String);

impl Host {
    /// The host as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Host {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(HostError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(HostError::BadChar(s.to_owned()));
        }
        Ok(Host(s.to_owned()))
    }
}

/// Why a host was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// An empty host.
    Empty,
    /// A host with whitespace or a control character in it (holds it).
    BadChar(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Empty => f.write_str("a host name or address is required"),
            HostError::BadChar(s) => {
                write!(f, "{s:?} is not a host name or address (it holds whitespace or a control character)")
            }
        }
    }
}

impl std::error::Error for HostError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for host in ["dest", "dest.example:8002", "192.0.2.7", "[2001:db8::1]:8002"] {
            assert_eq!(host.parse::<Host>().map(|h| h.as_str().to_owned()), Ok(host.to_owned()));
        }
        assert_eq!("".parse::<Host>(), Err(HostError::Empty));
        assert_eq!("a b".parse::<Host>(), Err(HostError::BadChar("a b".into())));
        assert_eq!("a\n".parse::<Host>(), Err(HostError::BadChar("a\n".into())));
    }
}
