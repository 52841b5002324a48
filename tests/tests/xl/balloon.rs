//! Ballooning a Debian PVH domU with `xm mem-set` (xtask/assets/checks/domu-balloon.sh): the guest's stock balloon
//! driver gives 128 MiB back and takes it again, and its own MemTotal, `xm list` and the hypervisor's free pages
//! all follow; destroyed, it leaves free memory exactly as before.

use super::domu::{check, num};
use keel_tests::Run;

/// 128 MiB in kB and in 4 KiB pages.
const HALF_KB: i64 = 128 << 10;
const HALF_PAGES: i64 = HALF_KB / 4;
/// Slack for the guest's MemTotal (kB): the balloon moves exactly the difference, but allow a few pages either way.
const MEM_SLACK_KB: i64 = 4096;
/// Slack for the hypervisor's free pages: splitting 2 MiB mappings costs the p2m up to one table per 2 MiB of the
/// 128 MiB (64 frames), and Keel's heap may take or give a few frames meanwhile.
const FREE_SLACK_PAGES: i64 = 512;

fn near(v: Option<i64>, want: i64, slack: i64) -> bool {
    v.is_some_and(|v| (v - want).abs() <= slack)
}

/// What the balloon checks got wrong.
pub fn problems(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    let c = |what: &str| check(run, what).unwrap_or_default();
    let create = c("balloon-create");
    if !create.starts_with("Started domain balloon (id=") {
        return vec![format!("balloon: xm create: {create:?} (no balloon check ran? {:?})", c("balloon-start"))];
    }
    let start = c("balloon-start");
    if num(&start, "list") != Some(256) || num(&start, "mem").is_none_or(|m| m < 200_000) {
        p.push(format!("balloon: at the start want list=256 and MemTotal above 200000 kB: {start:?}"));
    }
    if !start.contains("target=262144") || !start.contains("static-max=262144") {
        p.push(format!("balloon: memory/target and static-max at the start: {start:?}"));
    }
    if !c("balloon-mem-set-128").ends_with("rc=0") {
        p.push(format!("balloon: xm mem-set 128: {:?}", c("balloon-mem-set-128")));
    }
    let down = c("balloon-down");
    if !near(num(&down, "drop-kb"), HALF_KB, MEM_SLACK_KB) {
        p.push(format!("balloon: the guest's MemTotal should drop by {HALF_KB} kB: {down:?}"));
    }
    if !near(num(&down, "list"), 128, 1) {
        p.push(format!("balloon: xm list should show 128 MiB after mem-set 128: {down:?}"));
    }
    if !near(num(&down, "free-rise"), HALF_PAGES, FREE_SLACK_PAGES) {
        p.push(format!("balloon: the hypervisor's free pages should rise by {HALF_PAGES}: {down:?}"));
    }
    if !near(num(&down, "info-free-rise"), 128, 3) {
        p.push(format!("balloon: xm info free_memory should rise by 128 MiB: {down:?}"));
    }
    if !down.contains("target=131072") {
        p.push(format!("balloon: memory/target after mem-set 128: {down:?}"));
    }
    if !c("balloon-mem-set-256").ends_with("rc=0") {
        p.push(format!("balloon: xm mem-set 256: {:?}", c("balloon-mem-set-256")));
    }
    let up = c("balloon-up");
    if !near(num(&up, "rise-kb"), HALF_KB, MEM_SLACK_KB) || !near(num(&up, "vs-start-kb"), 0, MEM_SLACK_KB) {
        p.push(format!("balloon: the guest's MemTotal should come back up by {HALF_KB} kB: {up:?}"));
    }
    if num(&up, "list") != Some(256) {
        p.push(format!("balloon: xm list should show 256 MiB after mem-set 256: {up:?}"));
    }
    if !near(num(&up, "free-drop"), HALF_PAGES, FREE_SLACK_PAGES)
        || !near(num(&up, "vs-start-pages"), 0, FREE_SLACK_PAGES)
    {
        p.push(format!("balloon: the hypervisor's free pages should fall back by {HALF_PAGES}: {up:?}"));
    }
    let above = c("balloon-above-max");
    if !above.contains("above the domain's maximum memory") {
        p.push(format!("balloon: xm mem-set above static-max should be refused: {above:?}"));
    }
    if !c("balloon-alive").starts_with("up=") {
        p.push(format!("balloon: the guest should still tick after ballooning: {:?}", c("balloon-alive")));
    }
    if c("balloon-destroyed") != "free-returned=yes" {
        p.push(format!("balloon: xm destroy should give every page back: {:?}", c("balloon-destroyed")));
    }
    p
}
