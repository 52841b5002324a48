//! Judging the domU checks (xtask/assets/checks/domu-*.sh) of the xl test's run: each area adds its function to
//! [`problems`].

use keel_tests::Run;

/// The value of the first `KEEL-CHECK: <what> <value>` line, if any.
pub fn check(run: &Run, what: &str) -> Option<String> {
    let tag = format!("KEEL-CHECK: {what} ");
    run.lines().find_map(|l| l.split_once(tag.as_str()).map(|(_, v)| v.trim_end().to_string()))
}

/// `key=<integer>` in a check's value.
pub fn num(value: &str, key: &str) -> Option<i64> {
    value.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Page-table frames dom0's p2m may gain, once, for the range its backends map grants into (kept, as Xen keeps a
/// domain's p2m tables): a check's first use of a backend may cost that much, its repeats nothing.
pub const P2M_TABLES: i64 = 4;

/// Every domU area's problems.
pub fn problems(run: &Run) -> Vec<String> {
    let areas: [fn(&Run) -> Vec<String>; 8] = [
        super::ops::problems,
        super::balloon::problems,
        super::dumpcore::problems,
        super::lifecycle::problems,
        super::disk::problems,
        super::net::problems,
        super::hostile::problems,
        super::hostnet::problems,
    ];
    areas.iter().flat_map(|area| area(run)).collect()
}
