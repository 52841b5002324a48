//! `cpus = "CPULIST"` and `cpus = ["CPULIST", ...]`: the host CPUs a
//! guest's vCPUs may run on, in xl's notation (xl.cfg(5)).
//!
//! A CPU list is comma-separated items, applied left to right: `N`,
//! `N-M`, `all`, `node:N` / `nodes:N-M` (the CPUs of NUMA nodes), each
//! optionally preceded by `^` to remove those CPUs instead of adding them.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, Serializer};

/// CPU and node numbers are below this.
pub const MAX_CPUS: u32 = 4096;

/// What one item names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every CPU of the host.
    All,
    /// CPUs `first..=last`.
    Cpus(u32, u32),
    /// The CPUs of NUMA nodes `first..=last`.
    Nodes(u32, u32),
}

/// One item of a CPU list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// `^`: remove these CPUs.
    pub remove: bool,
    /// The CPUs it names.
    pub target: Target,
}

/// A validated CPU list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<Item>);

fn range(a: u32, b: u32) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if item.remove {
                f.write_str("^")?;
            }
            match item.target {
                Target::All => f.write_str("all")?,
                Target::Cpus(a, b) => f.write_str(&range(a, b))?,
                Target::Nodes(a, b) => write!(f, "node:{}", range(a, b))?,
            }
        }
        Ok(())
    }
}

impl Serialize for CpuList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn number(s: &str, item: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{item:?} is not a CPU list item (N, N-M, all, node:N, each optionally after ^)"));
    }
    match s.parse::<u32>() {
        Ok(n) if n < MAX_CPUS => Ok(n),
        _ => Err(format!("{s} is out of range (CPU and node numbers are below {MAX_CPUS})")),
    }
}

fn parse_range(s: &str, item: &str) -> Result<(u32, u32), String> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (number(a, item)?, number(b, item)?),
        None => {
            let n = number(s, item)?;
            (n, n)
        }
    };
    if a > b {
        return Err(format!("{item:?} ends before it starts"));
    }
    Ok((a, b))
}

impl CpuList {
    /// Parses and checks a CPU list.
    pub fn parse(s: &str) -> Result<CpuList, String> {
        if s.trim().is_empty() {
            return Err("an empty CPU list (use \"all\" for every CPU)".into());
        }
        let mut items = Vec::new();
        for raw in s.split(',') {
            let raw = raw.trim();
            let (remove, body) = match raw.strip_prefix('^') {
                Some(b) => (true, b),
                None => (false, raw),
            };
            let target = if body == "all" {
                Target::All
            } else if let Some(nodes) = body.strip_prefix("nodes:").or_else(|| body.strip_prefix("node:")) {
                let (a, b) = parse_range(nodes, raw)?;
                Target::Nodes(a, b)
            } else {
                let (a, b) = parse_range(body, raw)?;
                Target::Cpus(a, b)
            };
            items.push(Item { remove, target });
        }
        // With only CPU numbers the result is known here: it must not be empty.
        if items.iter().all(|i| matches!(i.target, Target::Cpus(..))) {
            let mut set = BTreeSet::new();
            for item in &items {
                let Target::Cpus(a, b) = item.target else { continue };
                for cpu in a..=b {
                    if item.remove {
                        set.remove(&cpu);
                    } else {
                        set.insert(cpu);
                    }
                }
            }
            if set.is_empty() {
                return Err(format!("{s:?} selects no CPU"));
            }
        } else if items.iter().all(|i| i.remove) {
            return Err(format!("{s:?} selects no CPU (it only removes CPUs)"));
        }
        Ok(CpuList(items))
    }
}

/// The `cpus` setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Cpus {
    /// One list for every vCPU (`cpus = "0-3"`).
    All(CpuList),
    /// A list per vCPU, vCPU 0 first (`cpus = ["2", "3-8,^5"]`).
    PerVcpu(Vec<CpuList>),
}

impl CpuList {
    /// The CPUs the list selects on a host: `node_cpus(n)` gives the CPUs of NUMA node `n` (none for a node the host
    /// lacks), and `nr_cpus` bounds `all`. Items apply left to right; CPU numbers past the host are kept, as the
    /// hypervisor drops those from an affinity map.
    pub fn resolve(&self, nr_cpus: u32, node_cpus: impl Fn(u32) -> Vec<u32>) -> BTreeSet<u32> {
        let mut set = BTreeSet::new();
        for item in &self.0 {
            let cpus: Vec<u32> = match item.target {
                Target::All => (0..nr_cpus).collect(),
                Target::Cpus(a, b) => (a..=b).collect(),
                Target::Nodes(a, b) => (a..=b).flat_map(&node_cpus).collect(),
            };
            for cpu in cpus {
                if item.remove {
                    set.remove(&cpu);
                } else {
                    set.insert(cpu);
                }
            }
        }
        set
    }
}

impl Cpus {
    /// The list for vCPU `vcpu`: the one list of `cpus = "..."`, or that vCPU's entry of a per-vCPU list (`None`
    /// past its end: that vCPU is not pinned, as in xl).
    pub fn for_vcpu(&self, vcpu: u32) -> Option<&CpuList> {
        match self {
            Cpus::All(list) => Some(list),
            Cpus::PerVcpu(lists) => lists.get(vcpu as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        for (text, canonical) in [
            ("all", "all"),
            ("0-3,5,^1", "0-3,5,^1"),
            ("all,^7", "all,^7"),
            ("nodes:0-3,^node:2", "node:0-3,^node:2"),
            ("1,node:1,^6", "1,node:1,^6"),
            ("3-3", "3"),
            (" 1 , 2", "1,2"),
        ] {
            assert_eq!(CpuList::parse(text).map(|l| l.to_string()), Ok(canonical.to_owned()), "{text}");
        }
    }

    #[test]
    fn resolved_on_a_host() {
        let nodes = |n: u32| if n == 0 { vec![0, 1] } else { vec![] };
        let on = |text: &str| CpuList::parse(text).unwrap().resolve(2, nodes).into_iter().collect::<Vec<_>>();
        assert_eq!(on("all"), [0, 1]);
        assert_eq!(on("all,^0"), [1]);
        assert_eq!(on("1"), [1]);
        assert_eq!(on("node:0,^1"), [0]);
        assert_eq!(on("node:1,3"), [3]);
        let per = Cpus::PerVcpu(vec![CpuList::parse("0").unwrap(), CpuList::parse("1").unwrap()]);
        assert_eq!(per.for_vcpu(1).map(|l| l.to_string()), Some("1".into()));
        assert_eq!(per.for_vcpu(2), None);
        assert_eq!(Cpus::All(CpuList::parse("1").unwrap()).for_vcpu(7).map(|l| l.to_string()), Some("1".into()));
    }

    #[test]
    fn bad_lists() {
        assert_eq!(CpuList::parse(""), Err("an empty CPU list (use \"all\" for every CPU)".into()));
        assert_eq!(CpuList::parse("3-1"), Err("\"3-1\" ends before it starts".into()));
        assert_eq!(
            CpuList::parse("0-3,x"),
            Err("\"x\" is not a CPU list item (N, N-M, all, node:N, each optionally after ^)".into())
        );
        assert_eq!(
            CpuList::parse("1,,2").unwrap_err(),
            "\"\" is not a CPU list item (N, N-M, all, node:N, each optionally after ^)"
        );
        assert_eq!(CpuList::parse("5000"), Err("5000 is out of range (CPU and node numbers are below 4096)".into()));
        assert_eq!(CpuList::parse("1,^1"), Err("\"1,^1\" selects no CPU".into()));
        assert_eq!(CpuList::parse("^node:1"), Err("\"^node:1\" selects no CPU (it only removes CPUs)".into()));
        assert!(CpuList::parse("1-").is_err());
        assert!(CpuList::parse("node:").is_err());
    }
}
