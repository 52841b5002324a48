//! Judging xtask/assets/checks/domu-dumpcore.sh: `xm dump-core` of create.sh's tiny PVH guest and of a Debian
//! domU, read back in dom0 with readelf, od and dd.

use super::domu::check;
use keel_tests::Run;

/// The tiny guest's RAM (16 MiB) and where its code lies (its one PT_LOAD: 0x100000, 0xc2 bytes).
const TINY_RAM: u64 = 16 << 20;
const TINY_CODE: std::ops::Range<u64> = 0x10_0000..0x10_00c2;
/// The Debian domU's RAM: memory = 128.
const DEBIAN_RAM: u64 = 128 << 20;

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// `bytes=N segments=M` of a `dumpcore-*-load` line.
fn load_bytes(v: &str) -> Option<u64> {
    v.split_whitespace().find_map(|w| w.strip_prefix("bytes="))?.parse().ok()
}

/// The facts `dumpcore_facts` printed for `tag`: ELF type, PT_LOAD bytes within `ram` (all of it, or, for Linux,
/// all but the few frames it gave back or swapped for shared_info/grant pages), `vcpus` NT_PRSTATUS notes, and
/// each RIP inside `rip_ok`.
fn facts(run: &Run, tag: &str, ram: u64, exact: bool, vcpus: usize, rip_ok: &dyn Fn(u64) -> bool) -> Vec<String> {
    let mut p = Vec::new();
    let c = |what: &str| check(run, &format!("dumpcore-{tag}-{what}"));
    if !c("run").is_some_and(|v| v.starts_with("rc=0 Dumped core of domain ")) {
        p.push(format!("xm dump-core of the {tag} domU: {:?}", c("run")));
        return p;
    }
    if c("type").as_deref() != Some("CORE (Core file)") {
        p.push(format!("{tag} core's ELF type: {:?}", c("type")));
    }
    let bytes = c("load").as_deref().and_then(load_bytes);
    let covered = bytes.is_some_and(|b| if exact { b == ram } else { b <= ram && b >= ram - ram / 64 });
    if !covered {
        p.push(format!("{tag} core's PT_LOADs hold {:?} bytes of {ram} bytes of RAM ({:?})", bytes, c("load")));
    }
    if c("prstatus").and_then(|v| v.parse::<usize>().ok()) != Some(vcpus) {
        p.push(format!("{tag} core's NT_PRSTATUS notes: {:?}, want {vcpus}", c("prstatus")));
    }
    let rips: Vec<Option<u64>> = c("rip").unwrap_or_default().split_whitespace().map(hex).collect();
    if rips.len() != vcpus || !rips.iter().all(|r| r.is_some_and(rip_ok)) {
        p.push(format!("{tag} core's vCPU RIPs: {:?}", c("rip")));
    }
    p
}

/// The dump-core area's problems.
pub fn problems(run: &Run) -> Vec<String> {
    let mut p = facts(run, "tiny", TINY_RAM, true, 1, &|rip| TINY_CODE.contains(&rip));
    let c = |what: &str| check(run, &format!("dumpcore-{what}"));
    // xm list's state letters (r b p s c d, '-' where not set).
    let state = c("tiny-state").unwrap_or_default();
    if state.len() != 6 || state.contains('p') || !(state.contains('b') || state.contains('r')) {
        p.push(format!("the tiny domU after its dump (running or blocked, not paused): {state:?}"));
    }
    if c("tiny-message").as_deref() != Some("keel-tiny-guest: running") {
        p.push(format!("the tiny domU's message at 0x10008c in its core: {:?}", c("tiny-message")));
    }
    if !c("tiny-paused").is_some_and(|v| v.starts_with("rc=0 state=") && v.contains('p')) {
        p.push(format!("dump-core of a paused domU leaves it paused: {:?}", c("tiny-paused")));
    }
    let bad = c("bad-path").unwrap_or_default();
    if !(bad.starts_with("rc=1 xm: 'dump-core' failed: cannot create /nonexistent/dir/core")
        && bad.ends_with(" left=0"))
    {
        p.push(format!("dump-core to a missing directory: {bad:?}"));
    }
    if c("tiny-destroyed").as_deref() != Some("free-returned=yes") {
        p.push(format!("the tiny domU's memory after xm destroy: {:?}", c("tiny-destroyed")));
    }
    // Linux's vCPUs are in kernel text (idle, or wherever the pause found them).
    p.extend(facts(run, "debian", DEBIAN_RAM, false, 2, &|rip| rip >= 0xffff_ffff_8000_0000));
    if c("debian-runs-on").as_deref() != Some("yes") {
        p.push(format!("the Debian domU after its dump (its tick goes on): {:?}", c("debian-runs-on")));
    }
    if c("debian-destroyed").as_deref() != Some("free-returned=yes") {
        p.push(format!("the Debian domU's memory after xm destroy: {:?}", c("debian-destroyed")));
    }
    p
}
