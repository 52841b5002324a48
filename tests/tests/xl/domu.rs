//! Judging the domU checks (xtask/assets/checks/domu-*.sh) of the xl test's run: each area adds its function to
//! [`problems`].

use keel_tests::Run;

/// The value of the first `KEEL-CHECK: <what> <value>` line, if any.
pub fn check(run: &Run, what: &str) -> Option<String> {
    let tag = format!("KEEL-CHECK: {what} ");
    run.lines().find_map(|l| l.split_once(tag.as_str()).map(|(_, v)| v.trim_end().to_string()))
}

/// Every domU area's problems.
pub fn problems(run: &Run) -> Vec<String> {
    let areas: [fn(&Run) -> Vec<String>; 7] = [
        super::ops::problems,
        super::balloon::problems,
        super::dumpcore::problems,
        super::lifecycle::problems,
        super::disk::problems,
        super::net::problems,
        super::hostile::problems,
    ];
    areas.iter().flat_map(|area| area(run)).collect()
}
