//! Guest disks served by dom0's stock blkback (xtask/assets/checks/domu-disk.sh): a Debian PVH domU's stock blkfront
//! mounts a `file:` disk and a `phy:` disk, writes a random file on each, and dom0 reads the same SHA-256 from the
//! images after the guest powered off; a read-only disk refuses writes in the guest; nothing is left behind (no
//! loop device of xm's, no backend directory, no page).

use super::domu::{check, num, P2M_TABLES};
use keel_tests::Run;

/// The guest's `wrote xvdX <sha256>` checksum.
fn guest_sum(run: &Run, dev: &str) -> Option<String> {
    let head = format!("KEEL-CHECK: disk-guest wrote {dev} ");
    run.lines().find_map(|l| l.split_once(head.as_str()).map(|(_, v)| v.trim().to_string()))
}

/// What the disk checks got wrong.
pub fn problems(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    let c = |what: &str| check(run, what).unwrap_or_default();
    let create = c("disk-create");
    if !create.starts_with("Started domain disk (id=") {
        return vec![format!("disk: xm create with three disks: {create:?} (setup: {:?})", c("disk-setup"))];
    }
    let backend = c("disk-backend");
    if !backend.starts_with("/dev/loop") || !backend.ends_with("hotplug=connected") {
        p.push(format!("disk: the block script's loop device and hotplug-status: {backend:?}"));
    }
    let devices = c("disk-guest devices");
    if devices.split_whitespace().collect::<Vec<_>>() != ["xvda", "xvdb", "xvdc"] {
        p.push(format!("disk: the guest's block devices: {devices:?}, want xvda xvdb xvdc"));
    }
    // Sizes as dom0 made the images (16, 8 and 4 MiB); xvdc alone read-only.
    let sizes = c("disk-guest sizes");
    if sizes != "xvda=16777216 xvdb=8388608 xvdc=4194304 ro=001" {
        p.push(format!("disk: sizes and read-only flags in the guest: {sizes:?}"));
    }
    if c("disk-guest read xvdc") != "read-only disk" {
        p.push(format!("disk: the read-only disk's file: {:?}", c("disk-guest read xvdc")));
    }
    if c("disk-guest ro-write") != "remount=refused raw=refused" {
        p.push(format!("disk: writes to the read-only disk: {:?}", c("disk-guest ro-write")));
    }
    let sums = c("disk-dom0-sums");
    for dev in ["xvda", "xvdb"] {
        let key = if dev == "xvda" { "a=" } else { "b=" };
        let dom0 = sums.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or("");
        match guest_sum(run, dev) {
            Some(g) if g.len() == 64 && g == dom0 => {}
            g => p.push(format!("disk: {dev}: the guest wrote sha256 {g:?}, dom0 read {dom0:?} from its image")),
        }
    }
    // Hot-plug on the running guest: block-attach of an LVM logical volume (4 MiB) makes xvdd appear in it,
    // block-detach makes it go; the volume group is removed afterwards.
    if c("disk-lvm") != "/dev/keelvg/hot 4194304B" || c("disk-lvm-removed") != "yes" {
        p.push(format!("disk: the LVM volume: {:?}, removed: {:?}", c("disk-lvm"), c("disk-lvm-removed")));
    }
    if c("disk-block-attach") != "rc=0" || c("disk-guest hotplug xvdd") != "appeared 4194304" {
        p.push(format!(
            "disk: block-attach: {:?}, in the guest: {:?}",
            c("disk-block-attach"),
            c("disk-guest hotplug xvdd")
        ));
    }
    if c("disk-block-detach") != "rc=0"
        || c("disk-guest unplug xvdd") != "gone"
        || c("disk-detached") != "backend-gone frontend-gone"
    {
        p.push(format!(
            "disk: block-detach: {:?}, in the guest: {:?}, xenstore: {:?}",
            c("disk-block-detach"),
            c("disk-guest unplug xvdd"),
            c("disk-detached")
        ));
    }
    if !run.lines().any(|l| l.contains("KEEL-CHECK: disk-guest done")) {
        p.push("disk: the guest's disk task did not finish".into());
    }
    if !super::domu::said_yes(&c("disk-gone")) {
        p.push(format!("disk: the guest powered off but its domain stayed: {:?}", c("disk-gone")));
    }
    let left = c("disk-leftover");
    let loops_back = left
        .split_whitespace()
        .find_map(|w| w.strip_prefix("loops="))
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(now, before)| now == before);
    // The first grant mappings of dom0's backends may give dom0's p2m a page table or two for the range they map
    // into (kept, as Xen keeps a domain's p2m tables), and Keel's own heap may give a frame back meanwhile;
    // repeated rounds below must then cost nothing at all.
    let free_diff = num(&left, "free-diff");
    if !loops_back || !left.contains("backends=0") || !free_diff.is_some_and(|d| (-P2M_TABLES..=0).contains(&d)) {
        p.push(format!("disk: after the guest: {left:?}, want its loop devices, backend directories and pages back"));
    }
    // Bad disks: one line each, naming the disk and the block script's reason; nothing left.
    for (what, why) in
        [("disk-bad-file", "nosuch.img: no such image file"), ("disk-bad-phy", "/dev/null: not a block device")]
    {
        let got = c(what);
        if !got.starts_with("xm: 'create' failed: disk 'xvda': ") || !got.contains(why) {
            p.push(format!("disk: {what}: {got:?}, want xm create's one-line error with {why:?}"));
        }
    }
    let bad_left = c("disk-bad-left");
    if !bad_left.starts_with("domains=0 backends=0 loops=")
        || bad_left.rsplit_once("loops=").and_then(|(_, v)| v.split_once('/')).is_none_or(|(a, b)| a != b)
    {
        p.push(format!("disk: after the bad disks: {bad_left:?}"));
    }
    // Created, used (a ping over xenbr0, disk I/O) and destroyed with I/O in flight 20 times: every backend closed
    // at once (none waited out xm's timeout), nothing left (loop devices, vifs, backends), free pages after round 20
    // as after round 1 give or take one page table of dom0's p2m (a backend's grants may land in a new 2 MiB
    // range in a later round: one fresh-clone run read -1; a leak of a page a round would read -19), dom0's daemons
    // still there.
    let io = c("disk-io-destroyed");
    let io_loops = io.split_whitespace().find_map(|w| w.strip_prefix("loops=")).and_then(|v| v.split_once('/'));
    if !io.starts_with("20/20 pinged=20 slow-closes=0 ")
        || !io.contains("vifs=0")
        || io_loops.is_none_or(|(now, before)| now != before)
        || !io.contains("backends=0")
        || num(&io, "free-vs-round1").is_none_or(|d| !(-1..=0).contains(&d))
        || num(&io, "free-vs-start").is_none_or(|d| d.abs() > P2M_TABLES)
        || !io.contains("xenstored=running xenconsoled=running")
    {
        p.push(format!("disk: destroy with I/O in flight: {io:?} ({:?})", c("disk-io-round")));
    }
    p
}
