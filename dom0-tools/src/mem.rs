//! Memory sizes as written on the `xm` command line (`mem-set`).
//!
//! Following Xen's `xm`, a bare number is in MiB and a one-letter suffix
//! picks another binary unit, `K`, `M`, `G` or `T` (either case):
//! `512`, `512M` and `524288k` all mean 512 MiB, and `1G` means 1 GiB.
//! Fractions, spaces, signs and longer suffixes (`MB`, `MiB`) are
//! rejected, and so is a size of zero.

use std::fmt;
use std::str::FromStr;

/// A memory size, held in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemSize {
    kib: u64,
}

/// The units a size may be written in, with their size in KiB.
const UNITS: [(char, u64); 4] = [('K', 1), ('M', 1 << 10), ('G', 1 << 20), ('T', 1 << 30)];

impl MemSize {
    /// A size of `kib` KiB, which must not be zero.
    pub fn from_kib(kib: u64) -> Option<MemSize> {
        (kib != 0).then_some(MemSize { kib })
    }

    /// The size in KiB.
    pub fn kib(self) -> u64 {
        self.kib
    }

    /// The size in MiB, rounded down (as `xm` does for a size in KiB).
    pub fn mib(self) -> u64 {
        self.kib >> 10
    }
}

impl fmt::Display for MemSize {
    /// Writes the size in the largest unit that holds it exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, per) =
            UNITS.iter().rev().copied().find(|&(_, per)| self.kib.is_multiple_of(per)).unwrap_or(UNITS[0]);
        write!(f, "{}{unit}", self.kib / per)
    }
}

impl FromStr for MemSize {
    type Err = MemSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(MemSizeError::Empty);
        }
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, suffix) = s.split_at(digits_end);
        if digits.is_empty() {
            return Err(MemSizeError::Malformed(s.to_owned()));
        }
        let per = match suffix {
            "" => UNITS[1].1,
            _ => {
                let mut chars = suffix.chars();
                let unit = chars.next().map(|c| c.to_ascii_uppercase());
                match (unit, chars.next()) {
                    (Some(unit), None) => UNITS
                        .iter()
                        .find(|&&(u, _)| u == unit)
                        .map(|&(_, per)| per)
                        .ok_or_else(|| MemSizeError::Malformed(s.to_owned()))?,
                    _ => return Err(MemSizeError::Malformed(s.to_owned())),
                }
            }
        };
        let count: u64 = digits.parse().map_err(|_| MemSizeError::TooLarge(s.to_owned()))?;
        let kib = count.checked_mul(per).ok_or_else(|| MemSizeError::TooLarge(s.to_owned()))?;
        MemSize::from_kib(kib).ok_or(MemSizeError::Zero)
    }
}

/// Why a memory size was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemSizeError {
    /// An empty size.
    Empty,
    /// Not a whole number with an optional K/M/G/T suffix.
    Malformed(String),
    /// A size of zero.
    Zero,
    /// A size too large to represent.
    TooLarge(String),
}

impl fmt::Display for MemSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemSizeError::Empty => f.write_str("a memory size is required"),
            MemSizeError::Malformed(s) => write!(
                f,
                "'{s}' is not a memory size (expected a whole number of MiB, \
                 or a number with a K, M, G or T suffix, e.g. 512, 512M, 1G)"
            ),
            MemSizeError::Zero => f.write_str("a memory size of zero is not allowed"),
            MemSizeError::TooLarge(s) => write!(f, "memory size '{s}' is too large"),
        }
    }
}

impl std::error::Error for MemSizeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn kib(s: &str) -> Result<u64, MemSizeError> {
        s.parse::<MemSize>().map(MemSize::kib)
    }

    #[test]
    fn bare_numbers_are_mib() {
        assert_eq!(kib("512"), Ok(512 * 1024));
        assert_eq!(kib("1"), Ok(1024));
        assert_eq!(kib("0512"), Ok(512 * 1024));
    }

    #[test]
    fn suffixes_pick_units_in_either_case() {
        assert_eq!(kib("512M"), Ok(512 * 1024));
        assert_eq!(kib("512m"), Ok(512 * 1024));
        assert_eq!(kib("1G"), Ok(1024 * 1024));
        assert_eq!(kib("2g"), Ok(2 * 1024 * 1024));
        assert_eq!(kib("1T"), Ok(1 << 30));
        assert_eq!(kib("4096K"), Ok(4096));
        assert_eq!(kib("4096k"), Ok(4096));
    }

    #[test]
    fn mib_rounds_down() {
        assert_eq!("1G".parse::<MemSize>().map(MemSize::mib), Ok(1024));
        assert_eq!("1536K".parse::<MemSize>().map(MemSize::mib), Ok(1));
    }

    #[test]
    fn malformed_sizes_are_rejected() {
        assert_eq!(kib(""), Err(MemSizeError::Empty));
        for bad in ["M", "abc", "-512", "+512", "1.5G", "512MB", "512MiB", "512 M", " 512", "512X", "1e3", "G1"] {
            assert_eq!(kib(bad), Err(MemSizeError::Malformed(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn zero_and_overflow_are_rejected() {
        assert_eq!(kib("0"), Err(MemSizeError::Zero));
        assert_eq!(kib("0G"), Err(MemSizeError::Zero));
        assert_eq!(kib("99999999999999999999"), Err(MemSizeError::TooLarge("99999999999999999999".into())));
        assert_eq!(kib("17179869184T"), Err(MemSizeError::TooLarge("17179869184T".into())));
    }

    #[test]
    fn display_uses_the_largest_exact_unit() {
        let show = |s: &str| s.parse::<MemSize>().unwrap().to_string();
        assert_eq!(show("512"), "512M");
        assert_eq!(show("1024"), "1G");
        assert_eq!(show("1536K"), "1536K");
        assert_eq!(show("2048G"), "2T");
    }

    #[test]
    fn errors_read_clearly() {
        let msg = kib("12X").unwrap_err().to_string();
        assert!(msg.contains("'12X' is not a memory size"), "{msg}");
        assert!(msg.contains("512M"), "{msg}");
    }
}
