//! CPU and vCPU arguments: `vcpu-pin` CPU lists, vCPU numbers, vCPU counts.
//!
//! A CPU list is a comma-separated list of items, each a CPU number `N`
//! or an inclusive range `N-M`, optionally preceded by `^` to remove
//! those CPUs instead of adding them. Items apply from left to right, as
//! in Xen's `xm`/`xl`: `0-3,^2` is CPUs 0, 1 and 3. The word `all` on its
//! own stands for every CPU of the host.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// CPU and vCPU numbers are below this, and vCPU counts at most this
/// (Xen's largest `NR_CPUS` is in the same range).
pub const MAX_CPUS: u32 = 4096;

/// A non-empty set of physical CPU numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuSet(BTreeSet<u32>);

impl CpuSet {
    /// The CPUs, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    /// How many CPUs the set holds (never zero).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `CpuSet` is never empty. (Here for clippy's sake.)
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for CpuSet {
    /// Writes the set in canonical form, merging runs into ranges: `0-1,3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.iter().peekable();
        let mut first = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                cpus.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

fn parse_cpu_number(s: &str, item: &str) -> Result<u32, CpuListError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CpuListError::BadItem(item.to_owned()));
    }
    match s.parse::<u32>() {
        Ok(n) if n < MAX_CPUS => Ok(n),
        _ => Err(CpuListError::OutOfRange(s.to_owned())),
    }
}

impl FromStr for CpuSet {
    type Err = CpuListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(CpuListError::Empty);
        }
        let mut set = BTreeSet::new();
        for item in s.split(',') {
            if item.is_empty() {
                return Err(CpuListError::EmptyItem(s.to_owned()));
            }
            if item == "all" || item == "^all" {
                return Err(CpuListError::AllInList);
            }
            let (remove, range) = match item.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let (first, last) = match range.split_once('-') {
                Some((a, b)) => (parse_cpu_number(a, item)?, parse_cpu_number(b, item)?),
                None => {
                    let n = parse_cpu_number(range, item)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(CpuListError::ReversedRange(item.to_owned()));
            }
            for cpu in first..=last {
                if remove {
                    set.remove(&cpu);
                } else {
                    set.insert(cpu);
                }
            }
        }
        if set.is_empty() {
            return Err(CpuListError::SelectsNothing(s.to_owned()));
        }
        Ok(CpuSet(set))
    }
}

/// The `<CPUs|all>` argument of `vcpu-pin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CpuSelection {
    /// Every CPU of the host.
    All,
    /// The CPUs of a list.
    Set(CpuSet),
}

impl fmt::Display for CpuSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuSelection::All => f.write_str("all"),
            CpuSelection::Set(set) => set.fmt(f),
        }
    }
}

impl FromStr for CpuSelection {
    type Err = CpuListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "all" {
            Ok(CpuSelection::All)
        } else {
            s.parse().map(CpuSelection::Set)
        }
    }
}

impl CpuSelection {
    /// The selection as a Xen CPU bitmap of `bytes` bytes (bit N of byte N/8 is CPU N); `all` sets every bit,
    /// leaving it to the hypervisor to keep the CPUs that exist, as libxl does. CPUs past the map are dropped.
    pub fn to_bitmap(&self, bytes: usize) -> Vec<u8> {
        match self {
            CpuSelection::All => vec![0xff; bytes],
            CpuSelection::Set(set) => {
                let mut map = vec![0u8; bytes];
                for cpu in set.iter().filter(|&c| (c as usize) < bytes * 8) {
                    map[cpu as usize / 8] |= 1 << (cpu % 8);
                }
                map
            }
        }
    }
}

/// A hard or soft affinity argument of `vcpu-pin`: a CPU selection, or `-` to leave that affinity as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CpuPin {
    /// `-`: keep the current affinity.
    Keep,
    /// The CPUs to allow (hard) or prefer (soft).
    Cpus(CpuSelection),
}

impl fmt::Display for CpuPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuPin::Keep => f.write_str("-"),
            CpuPin::Cpus(sel) => sel.fmt(f),
        }
    }
}

impl FromStr for CpuPin {
    type Err = CpuListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "-" {
            Ok(CpuPin::Keep)
        } else {
            s.parse().map(CpuPin::Cpus)
        }
    }
}

/// A CPU bitmap as `xl` prints affinities: `all` when every one of the first `nr_cpus` CPUs is set, `none` when
/// none is, otherwise the set CPUs as ranges (`0-1,3`). Bits at or past `nr_cpus` are not looked at.
pub fn format_cpumap(map: &[u8], nr_cpus: u32) -> String {
    let set: BTreeSet<u32> =
        (0..nr_cpus).filter(|&c| map.get(c as usize / 8).is_some_and(|b| b & (1 << (c % 8)) != 0)).collect();
    if set.is_empty() {
        "none".into()
    } else if set.len() == nr_cpus as usize {
        "all".into()
    } else {
        CpuSet(set).to_string()
    }
}

/// Why a CPU list was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuListError {
    /// An empty list.
    Empty,
    /// A list with an empty item, e.g. `0,,2` or `0,` (holds the list).
    EmptyItem(String),
    /// An item that is not `N`, `N-M`, `^N` or `^N-M` (holds the item).
    BadItem(String),
    /// A CPU number at or above [`MAX_CPUS`] (holds the number).
    OutOfRange(String),
    /// A range whose end is below its start (holds the item).
    ReversedRange(String),
    /// `all` used as one item of a longer list.
    AllInList,
    /// A list that leaves no CPU selected, e.g. `^2` or `1,^1`.
    SelectsNothing(String),
}

impl fmt::Display for CpuListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuListError::Empty => f.write_str("a CPU list is required"),
            CpuListError::EmptyItem(list) => write!(f, "CPU list '{list}' has an empty item"),
            CpuListError::BadItem(item) => write!(
                f,
                "'{item}' is not a CPU list item (expected N, N-M, ^N or ^N-M, \
                 e.g. 0-3,^2)"
            ),
            CpuListError::OutOfRange(n) => write!(f, "CPU {n} is out of range (CPU numbers are 0 to {})", MAX_CPUS - 1),
            CpuListError::ReversedRange(item) => {
                write!(f, "CPU range '{item}' ends before it starts")
            }
            CpuListError::AllInList => f.write_str("'all' must be given on its own, not as part of a CPU list"),
            CpuListError::SelectsNothing(list) => {
                write!(f, "CPU list '{list}' selects no CPU")
            }
        }
    }
}

impl std::error::Error for CpuListError {}

/// The `<VCPU|all>` argument of `vcpu-pin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VcpuSelection {
    /// Every vCPU of the domain.
    All,
    /// One vCPU, by number.
    One(u32),
}

impl fmt::Display for VcpuSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuSelection::All => f.write_str("all"),
            VcpuSelection::One(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for VcpuSelection {
    type Err = VcpuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "all" {
            return Ok(VcpuSelection::All);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VcpuError::NotAVcpu(s.to_owned()));
        }
        match s.parse::<u32>() {
            Ok(n) if n < MAX_CPUS => Ok(VcpuSelection::One(n)),
            _ => Err(VcpuError::VcpuOutOfRange(s.to_owned())),
        }
    }
}

/// The `<vCPUs>` argument of `vcpu-set`: how many vCPUs a domain should
/// have online, from 1 to [`MAX_CPUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuCount(u32);

impl VcpuCount {
    /// The count as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for VcpuCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for VcpuCount {
    type Err = VcpuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VcpuError::NotACount(s.to_owned()));
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=MAX_CPUS).contains(&n) => Ok(VcpuCount(n)),
            _ => Err(VcpuError::CountOutOfRange(s.to_owned())),
        }
    }
}

/// Why a vCPU number or count was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuError {
    /// Neither a number nor `all`.
    NotAVcpu(String),
    /// A vCPU number at or above [`MAX_CPUS`].
    VcpuOutOfRange(String),
    /// Not a plain decimal number.
    NotACount(String),
    /// A count of zero or above [`MAX_CPUS`].
    CountOutOfRange(String),
}

impl fmt::Display for VcpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuError::NotAVcpu(s) => {
                write!(f, "'{s}' is not a vCPU (expected a vCPU number or 'all')")
            }
            VcpuError::VcpuOutOfRange(s) => {
                write!(f, "vCPU {s} is out of range (vCPU numbers are 0 to {})", MAX_CPUS - 1)
            }
            VcpuError::NotACount(s) => {
                write!(f, "'{s}' is not a vCPU count (expected a decimal number)")
            }
            VcpuError::CountOutOfRange(s) => write!(f, "vCPU count {s} is out of range (1 to {MAX_CPUS} allowed)"),
        }
    }
}

impl std::error::Error for VcpuError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(s: &str) -> Result<Vec<u32>, CpuListError> {
        s.parse::<CpuSet>().map(|set| set.iter().collect())
    }

    #[test]
    fn single_cpus_and_ranges() {
        assert_eq!(cpus("0"), Ok(vec![0]));
        assert_eq!(cpus("3,1"), Ok(vec![1, 3]));
        assert_eq!(cpus("0-3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(cpus("2-2"), Ok(vec![2]));
        assert_eq!(cpus("0-1,4-5,1"), Ok(vec![0, 1, 4, 5]));
        assert_eq!(cpus("4095"), Ok(vec![MAX_CPUS - 1]));
    }

    #[test]
    fn exclusions_apply_in_order() {
        assert_eq!(cpus("0-3,^2"), Ok(vec![0, 1, 3]));
        assert_eq!(cpus("0-7,^2-5"), Ok(vec![0, 1, 6, 7]));
        assert_eq!(cpus("0-3,^2,2"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(cpus("^2,0-3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(cpus("0-3,^9"), Ok(vec![0, 1, 2, 3]));
    }

    #[test]
    fn malformed_lists_are_rejected() {
        assert_eq!(cpus(""), Err(CpuListError::Empty));
        assert_eq!(cpus("0,,2"), Err(CpuListError::EmptyItem("0,,2".into())));
        assert_eq!(cpus("0,"), Err(CpuListError::EmptyItem("0,".into())));
        assert_eq!(cpus(",0"), Err(CpuListError::EmptyItem(",0".into())));
        for (list, item) in [
            ("x", "x"),
            ("0-3,^", "^"),
            ("^^1", "^^1"),
            ("1-", "1-"),
            ("-1", "-1"),
            ("1-2-3", "1-2-3"),
            ("0-3, 5", " 5"),
            ("+1", "+1"),
            ("1.5", "1.5"),
        ] {
            assert_eq!(cpus(list), Err(CpuListError::BadItem(item.into())), "{list}");
        }
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(cpus("3-1"), Err(CpuListError::ReversedRange("3-1".into())));
        assert_eq!(cpus("4096"), Err(CpuListError::OutOfRange("4096".into())));
        assert_eq!(cpus("0-4294967295"), Err(CpuListError::OutOfRange("4294967295".into())));
        assert_eq!(cpus("0-99999999999"), Err(CpuListError::OutOfRange("99999999999".into())));
    }

    #[test]
    fn empty_results_and_stray_all_are_rejected() {
        assert_eq!(cpus("^2"), Err(CpuListError::SelectsNothing("^2".into())));
        assert_eq!(cpus("1,^0-3"), Err(CpuListError::SelectsNothing("1,^0-3".into())));
        assert_eq!(cpus("all"), Err(CpuListError::AllInList));
        assert_eq!(cpus("all,^0"), Err(CpuListError::AllInList));
    }

    #[test]
    fn display_is_canonical() {
        let show = |s: &str| s.parse::<CpuSet>().unwrap().to_string();
        assert_eq!(show("0-3,^2"), "0-1,3");
        assert_eq!(show("5,4,3,9"), "3-5,9");
        assert_eq!(show("7"), "7");
        let round_trip = show("0-2,8,10-12,^11");
        assert_eq!(show(&round_trip), round_trip);
    }

    #[test]
    fn cpu_selection() {
        assert_eq!("all".parse::<CpuSelection>(), Ok(CpuSelection::All));
        let set = "0-3,^2".parse::<CpuSelection>().unwrap();
        assert_eq!(set.to_string(), "0-1,3");
        assert!(matches!(&set, CpuSelection::Set(s) if s.len() == 3 && s.contains(3)));
        assert_eq!("ALL".parse::<CpuSelection>(), Err(CpuListError::BadItem("ALL".into())));
    }

    #[test]
    fn vcpu_selection() {
        assert_eq!("all".parse::<VcpuSelection>(), Ok(VcpuSelection::All));
        assert_eq!("0".parse::<VcpuSelection>(), Ok(VcpuSelection::One(0)));
        assert_eq!("12".parse::<VcpuSelection>(), Ok(VcpuSelection::One(12)));
        assert_eq!("x".parse::<VcpuSelection>(), Err(VcpuError::NotAVcpu("x".into())));
        assert_eq!("0-1".parse::<VcpuSelection>(), Err(VcpuError::NotAVcpu("0-1".into())));
        assert_eq!("4096".parse::<VcpuSelection>(), Err(VcpuError::VcpuOutOfRange("4096".into())));
    }

    #[test]
    fn vcpu_count() {
        assert_eq!("1".parse::<VcpuCount>().map(VcpuCount::get), Ok(1));
        assert_eq!("4096".parse::<VcpuCount>().map(VcpuCount::get), Ok(4096));
        assert_eq!("0".parse::<VcpuCount>(), Err(VcpuError::CountOutOfRange("0".into())));
        assert_eq!("4097".parse::<VcpuCount>(), Err(VcpuError::CountOutOfRange("4097".into())));
        assert_eq!("-1".parse::<VcpuCount>(), Err(VcpuError::NotACount("-1".into())));
        assert_eq!("".parse::<VcpuCount>(), Err(VcpuError::NotACount("".into())));
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(
            cpus("0-3,^").unwrap_err().to_string(),
            "'^' is not a CPU list item (expected N, N-M, ^N or ^N-M, e.g. 0-3,^2)"
        );
        assert_eq!(cpus("^2").unwrap_err().to_string(), "CPU list '^2' selects no CPU");
    }

    #[test]
    fn pins_keep_or_select() {
        assert_eq!("-".parse::<CpuPin>(), Ok(CpuPin::Keep));
        assert_eq!("all".parse::<CpuPin>(), Ok(CpuPin::Cpus(CpuSelection::All)));
        assert_eq!("0".parse::<CpuPin>().unwrap().to_string(), "0");
        assert!("--".parse::<CpuPin>().is_err());
    }

    #[test]
    fn selections_become_xen_bitmaps() {
        let sel: CpuSelection = "0,3,9".parse().unwrap();
        assert_eq!(sel.to_bitmap(2), vec![0b0000_1001, 0b0000_0010]);
        // CPUs past the map are dropped, not wrapped.
        assert_eq!("17".parse::<CpuSelection>().unwrap().to_bitmap(2), vec![0, 0]);
        assert_eq!(CpuSelection::All.to_bitmap(1), vec![0xff]);
    }

    #[test]
    fn cpumaps_print_as_xl() {
        assert_eq!(format_cpumap(&[0b11], 2), "all");
        assert_eq!(format_cpumap(&[0xff], 2), "all");
        assert_eq!(format_cpumap(&[0b01], 2), "0");
        assert_eq!(format_cpumap(&[0], 2), "none");
        assert_eq!(format_cpumap(&[0b1011], 8), "0-1,3");
        assert_eq!(format_cpumap(&[0b10], 4), "1");
        assert_eq!(format_cpumap(&[], 4), "none");
    }
}
