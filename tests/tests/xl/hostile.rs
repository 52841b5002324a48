//! A hostile frontend cannot hurt dom0 or Keel (xtask/assets/checks/domu-hostile.sh): Keel's test guest
//! hostile_frontend, a deliberately bad blkfront, gets an error response from dom0's stock blkback for every bad
//! request and a good one for every good request (its `hostile: probe ... -> ok` lines and `Test result:
//! SUCCESS`); blkback refuses the bad rings it offers at connect time; its bogus producer index makes blkback stop
//! serving that ring (dom0 logs "bogus ring requests"); meanwhile a Debian domU keeps writing its own disk, dom0's
//! kernel logs no oops (and no WARNING but blkback's known one on a failed connect), its xenstored and xenconsoled
//! keep running, and nothing is left afterwards.

use super::domu::{check, test_guest_problems};
use keel_tests::Run;

/// Probes the guest must have run, each ending `-> ok`.
const PROBES: &[&str] = &[
    "good-read",
    "good-read-data",
    "good-write-ro-grant",
    "read-past-end",
    "read-straddling-end",
    "read-sector-wraps",
    "gref-beyond-table",
    "gref-not-granted",
    "gref-other-domain",
    "read-into-ro-grant",
    "gref-frame-not-ram",
    "segments-12",
    "segments-255",
    "segments-0",
    "first-after-last",
    "last-past-page",
    "unknown-operation",
    "good-read-after",
    "grants-released",
    "ro-disk-read",
    "ro-disk-write",
    "bad-ring-ref",
    "bad-event-channel",
    "prefilled-producer",
    "good-read-after-refusals",
    "good-read-after-flood",
    "bogus-producer",
];

/// The one WARNING dom0 may log: Linux's blkback WARN_ON in xen_blkif_disconnect after a connect that failed to
/// map the ring or bind its event channel (it counts request structures that were never allocated). The guest's
/// bad-ring probes meet it; it is Linux's, and shows under Xen as well.
const BLKBACK_CONNECT_WARN: &str = "xen_blkif_disconnect";

/// What the hostile-frontend check got wrong.
pub fn problems(run: &Run) -> Vec<String> {
    let c = |what: &str| check(run, what).unwrap_or_default();
    let mut p = match test_guest_problems(run, "hostile", "the hostile guest", PROBES) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    if c("hostile-dom0-bogus").parse::<u32>().unwrap_or(0) == 0 {
        p.push("hostile: dom0's blkback did not log \"bogus ring requests\" for the runaway producer".into());
    }
    if c("hostile-dom0-oops") != "0" {
        p.push(format!("hostile: dom0's kernel logged {} new BUG/Oops lines", c("hostile-dom0-oops")));
    }
    // `<count> <function>;` per function that WARNed; only blkback's own WARN_ON on a failed connect may appear.
    let warnings = check(run, "hostile-dom0-warnings");
    let unexpected: Vec<&str> = warnings
        .as_deref()
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|w| !w.is_empty() && w.split_whitespace().nth(1) != Some(BLKBACK_CONNECT_WARN))
        .collect();
    if warnings.is_none() || !unexpected.is_empty() {
        p.push(format!("hostile: dom0's kernel WARNed in: {warnings:?}"));
    }
    if c("hostile-daemons") != "xenstored=up xenconsoled=up xenstore=answers" {
        p.push(format!("hostile: dom0's daemons afterwards: {:?}", c("hostile-daemons")));
    }
    if c("hostile-disk-sector1") != "keel-hostile-wrote" {
        p.push(format!("hostile: the guest's good write, read back by dom0: {:?}", c("hostile-disk-sector1")));
    }
    if !c("hostile-bystander-create").starts_with("Started domain hbystander (id=") {
        p.push(format!("hostile: the bystander domU: {:?}", c("hostile-bystander-create")));
    }
    let io = c("hostile-bystander-io");
    let after = io.split_whitespace().find_map(|w| w.strip_prefix("after=")).and_then(|v| v.parse::<u32>().ok());
    if after.unwrap_or(0) < 5 || !io.ends_with("failed=0") {
        p.push(format!(
            "hostile: the bystander's disk writes after the hostile guest: {io:?}, want 5 or more, none failed"
        ));
    }
    let left = c("hostile-leftover");
    let loops_back = left
        .split_whitespace()
        .find_map(|w| w.strip_prefix("loops="))
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(now, before)| now == before);
    if !loops_back || !left.contains("backends=0") || !left.ends_with("free-returned=yes") {
        p.push(format!("hostile: afterwards: {left:?}, want the loop devices, backend directories and pages back"));
    }
    p
}
