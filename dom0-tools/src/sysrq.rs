//! The `<letter>` argument of `sysrq`: one magic SysRq key for a guest.

use std::fmt;
use std::str::FromStr;

/// A SysRq key: exactly one printable, non-space ASCII character
/// (e.g. `s` to sync, `b` to reboot, `0`-`9` for the log level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SysrqKey(char);

impl SysrqKey {
    /// The key as a character.
    pub fn get(self) -> char {
        self.0
    }
}

impl fmt::Display for SysrqKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SysrqKey {
    type Err = SysrqKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_graphic() => Ok(SysrqKey(c)),
            _ => Err(SysrqKeyError(s.to_owned())),
        }
    }
}

/// A SysRq key that is not one printable ASCII character (holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysrqKeyError(pub String);

impl fmt::Display for SysrqKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a SysRq key (expected one printable ASCII character, e.g. s)", self.0)
    }
}

impl std::error::Error for SysrqKeyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_printable_characters_are_keys() {
        for key in ["s", "b", "0", "9", "T", "?"] {
            assert_eq!(key.parse::<SysrqKey>().map(|k| k.to_string()), Ok(key.to_owned()));
        }
        assert_eq!("h".parse::<SysrqKey>().map(SysrqKey::get), Ok('h'));
    }

    #[test]
    fn anything_else_is_rejected() {
        for bad in ["", "sb", " ", "\t", "é", "\u{7f}"] {
            assert_eq!(bad.parse::<SysrqKey>(), Err(SysrqKeyError(bad.to_owned())), "{bad:?}");
        }
    }
}
