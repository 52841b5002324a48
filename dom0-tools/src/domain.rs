//! Domain identifiers as written on the `xm` command line.
//!
//! Like Xen's `xm`, every `<Domain>` argument can be either a numeric
//! domain id or a domain name. A string made only of ASCII digits is
//! always read as an id, which is why a domain name may not be all digits.

use keel_abi::{DomId, DOMID_FIRST_RESERVED};
use std::fmt;
use std::str::FromStr;

/// The longest domain name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Characters, besides ASCII letters and digits, allowed in a domain name.
pub const NAME_PUNCTUATION: &[char] = &['-', '_', '.', ':', '+'];

/// A numeric domain id (`0` is dom0): a Xen `domid_t` below `DOMID_FIRST_RESERVED` (keel-abi).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(DomId);

impl DomainId {
    /// dom0, the control domain.
    pub const DOM0: DomainId = DomainId(0);

    /// The id as a number.
    pub fn get(self) -> DomId {
        self.0
    }
}

impl TryFrom<u32> for DomainId {
    type Error = DomainError;

    fn try_from(id: u32) -> Result<Self, Self::Error> {
        match DomId::try_from(id) {
            Ok(id) if id < DOMID_FIRST_RESERVED => Ok(DomainId(id)),
            _ => Err(DomainError::IdOutOfRange(id.to_string())),
        }
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for DomainId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DomainError::EmptyId);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::NotAnId(s.to_owned()));
        }
        match s.parse::<DomId>() {
            Ok(id) if id < DOMID_FIRST_RESERVED => Ok(DomainId(id)),
            _ => Err(DomainError::IdOutOfRange(s.to_owned())),
        }
    }
}

/// A validated domain name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DomainName {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DomainError::EmptyName);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(DomainError::NameTooLong(s.len()));
        }
        if let Some(c) = s.chars().find(|&c| !(c.is_ascii_alphanumeric() || NAME_PUNCTUATION.contains(&c))) {
            return Err(DomainError::BadNameChar(c));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::NumericName(s.to_owned()));
        }
        Ok(DomainName(s.to_owned()))
    }
}

/// A `<Domain>` argument: a domain id or a domain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainRef {
    /// A numeric domain id.
    Id(DomainId),
    /// A domain name.
    Name(DomainName),
}

impl fmt::Display for DomainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainRef::Id(id) => id.fmt(f),
            DomainRef::Name(name) => name.fmt(f),
        }
    }
}

impl FromStr for DomainRef {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().map(DomainRef::Id)
        } else {
            s.parse().map(DomainRef::Name)
        }
    }
}

/// Why a domain id or name was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// An empty `<Domain>` argument.
    Empty,
    /// An empty domain id.
    EmptyId,
    /// An empty domain name.
    EmptyName,
    /// A domain id that is not a plain decimal number.
    NotAnId(String),
    /// A domain id at or above `DOMID_FIRST_RESERVED`.
    IdOutOfRange(String),
    /// A domain name longer than [`MAX_NAME_LEN`] bytes (holds the length).
    NameTooLong(usize),
    /// A character not allowed in a domain name.
    BadNameChar(char),
    /// A name made only of digits, which would read as a domain id.
    NumericName(String),
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainError::Empty => f.write_str("a domain id or name is required"),
            DomainError::EmptyId => f.write_str("a domain id is required"),
            DomainError::EmptyName => f.write_str("a domain name is required"),
            DomainError::NotAnId(s) => {
                write!(f, "'{s}' is not a domain id (expected a decimal number)")
            }
            DomainError::IdOutOfRange(s) => {
                write!(f, "domain id {s} is out of range (domain ids are 0 to {})", DOMID_FIRST_RESERVED - 1)
            }
            DomainError::NameTooLong(len) => {
                write!(f, "domain name is {len} bytes long (at most {MAX_NAME_LEN} allowed)")
            }
            DomainError::BadNameChar(c) => write!(
                f,
                "{c:?} is not allowed in a domain name \
                 (use ASCII letters, digits and any of - _ . : +)"
            ),
            DomainError::NumericName(s) => {
                write!(f, "'{s}' cannot be a domain name: a name made only of digits reads as a domain id")
            }
        }
    }
}

impl std::error::Error for DomainError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse() {
        assert_eq!("0".parse::<DomainId>(), Ok(DomainId::DOM0));
        assert_eq!("17".parse::<DomainId>().map(DomainId::get), Ok(17));
        assert_eq!("007".parse::<DomainId>().map(DomainId::get), Ok(7));
        assert_eq!("32751".parse::<DomainId>().map(DomainId::get), Ok(DOMID_FIRST_RESERVED - 1));
    }

    #[test]
    fn bad_ids_are_rejected() {
        assert_eq!("".parse::<DomainId>(), Err(DomainError::EmptyId));
        assert_eq!("-1".parse::<DomainId>(), Err(DomainError::NotAnId("-1".into())));
        assert_eq!("+1".parse::<DomainId>(), Err(DomainError::NotAnId("+1".into())));
        assert_eq!(" 1".parse::<DomainId>(), Err(DomainError::NotAnId(" 1".into())));
        assert_eq!("guest".parse::<DomainId>(), Err(DomainError::NotAnId("guest".into())));
        assert_eq!("32752".parse::<DomainId>(), Err(DomainError::IdOutOfRange("32752".into())));
        assert_eq!(
            "99999999999999999999".parse::<DomainId>(),
            Err(DomainError::IdOutOfRange("99999999999999999999".into()))
        );
        assert!(DomainId::try_from(u32::from(DOMID_FIRST_RESERVED)).is_err());
        assert!(DomainId::try_from(u32::from(keel_abi::DOMID_SELF)).is_err());
        // Above u16: no wrap-around onto a real domain (65536 + 5 is not domain 5).
        assert!(DomainId::try_from(0x1_0005).is_err());
        assert_eq!("65541".parse::<DomainId>(), Err(DomainError::IdOutOfRange("65541".into())));
        assert_eq!(DomainId::try_from(5).map(DomainId::get), Ok(5));
    }

    #[test]
    fn names_parse() {
        for name in ["Domain-0", "guest1", "web.example:2", "a_b+c", "x"] {
            assert_eq!(name.parse::<DomainName>().map(|n| n.to_string()), Ok(name.to_owned()));
        }
        let longest = "n".repeat(MAX_NAME_LEN);
        assert!(longest.parse::<DomainName>().is_ok());
    }

    #[test]
    fn bad_names_are_rejected() {
        assert_eq!("".parse::<DomainName>(), Err(DomainError::EmptyName));
        assert_eq!("my guest".parse::<DomainName>(), Err(DomainError::BadNameChar(' ')));
        assert_eq!("a/b".parse::<DomainName>(), Err(DomainError::BadNameChar('/')));
        assert_eq!("héllo".parse::<DomainName>(), Err(DomainError::BadNameChar('é')));
        assert_eq!("123".parse::<DomainName>(), Err(DomainError::NumericName("123".into())));
        let too_long = "n".repeat(MAX_NAME_LEN + 1);
        assert_eq!(too_long.parse::<DomainName>(), Err(DomainError::NameTooLong(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn domain_refs_pick_id_or_name() {
        assert_eq!("3".parse::<DomainRef>(), Ok(DomainRef::Id(DomainId::try_from(3).unwrap())));
        assert!(matches!(
            "Domain-0".parse::<DomainRef>(),
            Ok(DomainRef::Name(n)) if n.as_str() == "Domain-0"
        ));
        // Mixed digits and letters is a name, not an id.
        assert!(matches!("3a".parse::<DomainRef>(), Ok(DomainRef::Name(_))));
        assert_eq!("".parse::<DomainRef>(), Err(DomainError::Empty));
        assert_eq!("40000".parse::<DomainRef>(), Err(DomainError::IdOutOfRange("40000".into())));
        assert_eq!("bad name".parse::<DomainRef>(), Err(DomainError::BadNameChar(' ')));
        assert_eq!("12".parse::<DomainRef>().unwrap().to_string(), "12");
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(
            DomainError::IdOutOfRange("40000".into()).to_string(),
            "domain id 40000 is out of range (domain ids are 0 to 32751)"
        );
        assert!(DomainError::BadNameChar(' ').to_string().contains("not allowed in a domain name"));
    }
}
