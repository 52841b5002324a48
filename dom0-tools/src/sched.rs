//! Credit scheduler parameters (`sched-credit -w WEIGHT -c CAP`).
//!
//! As in Xen's credit scheduler, a domain's weight is its relative share
//! of CPU time (1 to 65535, 256 by default) and its cap is the most CPU it
//! may use, in percent of one physical CPU (0 meaning no cap).

use std::fmt;
use std::str::FromStr;

/// A credit scheduler weight, from 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CreditWeight(u16);

impl CreditWeight {
    /// The weight a new domain gets.
    pub const DEFAULT: CreditWeight = CreditWeight(256);

    /// The weight as a number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for CreditWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for CreditWeight {
    type Err = SchedParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_u16(s) {
            Some(Ok(0)) | Some(Err(())) => Err(SchedParamError::WeightOutOfRange(s.to_owned())),
            Some(Ok(w)) => Ok(CreditWeight(w)),
            None => Err(SchedParamError::NotANumber { what: "weight", value: s.to_owned() }),
        }
    }
}

/// A credit scheduler cap in percent of one CPU, 0 meaning no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CreditCap(u16);

impl CreditCap {
    /// No cap.
    pub const NONE: CreditCap = CreditCap(0);

    /// The cap as a number (0 for none).
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for CreditCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for CreditCap {
    type Err = SchedParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_u16(s) {
            Some(Ok(c)) => Ok(CreditCap(c)),
            Some(Err(())) => Err(SchedParamError::CapOutOfRange(s.to_owned())),
            None => Err(SchedParamError::NotANumber { what: "cap", value: s.to_owned() }),
        }
    }
}

/// `None` when `s` is not a plain decimal number, `Some(Err)` when it is
/// one but does not fit in a `u16`.
fn parse_u16(s: &str) -> Option<Result<u16, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().map_err(|_| ()))
}

/// Why a scheduler parameter was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedParamError {
    /// Not a plain decimal number.
    NotANumber {
        /// Which parameter.
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// A weight of zero or above 65535.
    WeightOutOfRange(String),
    /// A cap above 65535.
    CapOutOfRange(String),
}

impl fmt::Display for SchedParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedParamError::NotANumber { what, value } => {
                write!(f, "'{value}' is not a {what} (expected a decimal number)")
            }
            SchedParamError::WeightOutOfRange(s) => {
                write!(f, "weight {s} is out of range (1 to 65535 allowed)")
            }
            SchedParamError::CapOutOfRange(s) => {
                write!(f, "cap {s} is out of range (0 to 65535 percent of one CPU, 0 for no cap)")
            }
        }
    }
}

impl std::error::Error for SchedParamError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        assert_eq!("1".parse::<CreditWeight>().map(CreditWeight::get), Ok(1));
        assert_eq!("256".parse::<CreditWeight>(), Ok(CreditWeight::DEFAULT));
        assert_eq!("65535".parse::<CreditWeight>().map(CreditWeight::get), Ok(65535));
        assert_eq!("0".parse::<CreditWeight>(), Err(SchedParamError::WeightOutOfRange("0".into())));
        assert_eq!("65536".parse::<CreditWeight>(), Err(SchedParamError::WeightOutOfRange("65536".into())));
        for bad in ["", "-1", "1.5", "high", " 1"] {
            assert_eq!(
                bad.parse::<CreditWeight>(),
                Err(SchedParamError::NotANumber { what: "weight", value: bad.into() })
            );
        }
    }

    #[test]
    fn caps() {
        assert_eq!("0".parse::<CreditCap>(), Ok(CreditCap::NONE));
        assert_eq!("50".parse::<CreditCap>().map(CreditCap::get), Ok(50));
        assert_eq!("400".parse::<CreditCap>().map(CreditCap::get), Ok(400));
        assert_eq!("70000".parse::<CreditCap>(), Err(SchedParamError::CapOutOfRange("70000".into())));
        assert_eq!("50%".parse::<CreditCap>(), Err(SchedParamError::NotANumber { what: "cap", value: "50%".into() }));
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(
            "0".parse::<CreditWeight>().unwrap_err().to_string(),
            "weight 0 is out of range (1 to 65535 allowed)"
        );
    }
}
