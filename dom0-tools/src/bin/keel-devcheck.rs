//! keel-devcheck: exercises dom0's Xen devices against Keel and prints one `KEEL-CHECK:` line per fact, for the
//! boot test (xtask/assets/checks/devices.sh runs it; tests/tests/linux.rs asserts the lines).
//!
//! - gntalloc + gntdev: dom0 grants one of its pages to itself (gntalloc writes the entry in its own grant table),
//!   maps that grant through gntdev (GNTTABOP_map_grant_ref), and the two mappings show each other's writes.
//! - privcmd IOCTL_PRIVCMD_MMAP_RESOURCE: the grant table's size query for dom0 itself (Xen 4.17 refuses a domain
//!   its own resources: -EPERM) and for a domain that does not exist (-ESRCH).
//! - privcmd IOCTL_PRIVCMD_MMAPBATCH_V2: gmfn_foreign against a domain that does not exist and against dom0
//!   itself; Xen's per-page errors come back in the err array.
//! - /dev/xen/evtchn: an unbound port for dom0, bound again from dom0 (interdomain loopback), notified through the
//!   second port; the event arrives on the first.
//!
//! - A guest built from dom0 (issue 12): createdomain (empty, paused), max_mem, populate_physmap of a few pages,
//!   one mapped through MMAPBATCH_V2 (written and read back), the boot vCPU's PVH state through
//!   get/sethvmcontext; in the second cycle a tiny program written at the entry runs once the domain is unpaused
//!   and shuts it down (SCHEDOP_shutdown, reason reboot), which getdomaininfo then reports; destroydomain;
//!   physinfo's free pages come back to what they were (measured around the second cycle, so that dom0's own p2m
//!   tables for the mapping window exist already). Then a guest spinning on a counter is paused (the counter
//!   stands still), unpaused (it moves again) and destroyed while it runs, its page still mapped here.
//!
//! Ioctl numbers and structures follow Linux's include/uapi/xen/{privcmd,gntdev,gntalloc}.h.

use std::fs::OpenOptions;
use std::io::Error;
use std::os::fd::AsRawFd;

const PAGE: usize = 4096;

use keel_xenctrl::devices::{
    GntallocAllocGref, GntdevMapGrantRef, PrivcmdMmapResource, PrivcmdMmapbatchV2, GNTALLOC_FLAG_WRITABLE,
    IOCTL_EVTCHN_BIND_INTERDOMAIN, IOCTL_EVTCHN_BIND_UNBOUND_PORT, IOCTL_EVTCHN_NOTIFY, IOCTL_GNTALLOC_ALLOC_GREF,
    IOCTL_GNTDEV_MAP_GRANT_REF, IOCTL_PRIVCMD_MMAPBATCH_V2, IOCTL_PRIVCMD_MMAP_RESOURCE,
};

fn ioctl<T>(fd: i32, req: u64, arg: &mut T) -> Result<i32, Error> {
    // SAFETY: `arg` is a live, exclusively borrowed structure of the size the request number encodes.
    let rc = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if rc < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A shared mapping of `pages` pages of `fd` at `offset`.
fn map(fd: i32, pages: usize, offset: u64) -> Result<*mut u64, Error> {
    // SAFETY: a new mapping chosen by the kernel; nothing else is at that address.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            pages * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

fn unmap(p: *mut u64, pages: usize) {
    // SAFETY: `p` came from `map` with this many pages and is not used afterwards.
    unsafe { libc::munmap(p.cast(), pages * PAGE) };
}

fn errno_of(e: &Error) -> i32 {
    -e.raw_os_error().unwrap_or(0)
}

/// gntalloc a page granted to dom0, map it through gntdev, and check both ways.
fn grants() -> Result<String, String> {
    let ga = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/xen/gntalloc")
        .map_err(|e| format!("open gntalloc: {e}"))?;
    let mut a = GntallocAllocGref { domid: 0, flags: GNTALLOC_FLAG_WRITABLE, count: 1, index: 0, gref: 0 };
    ioctl(ga.as_raw_fd(), IOCTL_GNTALLOC_ALLOC_GREF, &mut a).map_err(|e| format!("alloc_gref: {e}"))?;
    let gref = a.gref;
    let mine = map(ga.as_raw_fd(), 1, a.index).map_err(|e| format!("mmap gntalloc: {e}"))?;
    // "KEELGRNT".
    const PATTERN: u64 = 0x4b45_454c_4752_4e54;
    // SAFETY: `mine` maps one writable page.
    unsafe { mine.write_volatile(PATTERN) };

    let gd =
        OpenOptions::new().read(true).write(true).open("/dev/xen/gntdev").map_err(|e| format!("open gntdev: {e}"))?;
    let mut m = GntdevMapGrantRef { count: 1, pad: 0, index: 0, domid: 0, gref };
    ioctl(gd.as_raw_fd(), IOCTL_GNTDEV_MAP_GRANT_REF, &mut m).map_err(|e| format!("map_grant_ref: {e}"))?;
    let theirs = map(gd.as_raw_fd(), 1, m.index).map_err(|e| format!("mmap gntdev (gref {gref}): {e}"))?;
    // SAFETY: `theirs` and `mine` each map one writable page (the same frame, if all is well).
    let (read, back) = unsafe {
        let read = theirs.read_volatile();
        theirs.add(1).write_volatile(!PATTERN);
        (read, mine.add(1).read_volatile())
    };
    unmap(theirs, 1);
    unmap(mine, 1);
    if read != PATTERN {
        return Err(format!("gref {gref}: gntdev read {read:#x}, gntalloc wrote {PATTERN:#x}"));
    }
    if back != !PATTERN {
        return Err(format!("gref {gref}: gntalloc read {back:#x} after gntdev wrote {:#x}", !PATTERN));
    }
    Ok(format!("gref={gref} read=ok write-back=ok"))
}

/// The grant table's size through IOCTL_PRIVCMD_MMAP_RESOURCE's query (addr and num 0): frames, or the errno.
fn resource_size(pc: i32, dom: u16) -> String {
    let mut r = PrivcmdMmapResource { dom, typ: 1, id: 0, idx: 0, num: 0, addr: 0 };
    match ioctl(pc, IOCTL_PRIVCMD_MMAP_RESOURCE, &mut r) {
        Ok(_) => format!("frames={}", r.num),
        Err(e) => format!("errno={}", errno_of(&e)),
    }
}

/// One page of domain `dom`'s frame 0 through IOCTL_PRIVCMD_MMAPBATCH_V2: the ioctl's result and the page's error.
fn mmapbatch(pc: i32, dom: u16) -> String {
    let p = match map(pc, 1, 0) {
        Ok(p) => p,
        Err(e) => return format!("mmap-errno={}", errno_of(&e)),
    };
    let arr = [0u64];
    let mut err = [0x5555i32];
    let mut b = PrivcmdMmapbatchV2 { num: 1, dom, addr: p as u64, arr: arr.as_ptr(), err: err.as_mut_ptr() };
    let rc = match ioctl(pc, IOCTL_PRIVCMD_MMAPBATCH_V2, &mut b) {
        Ok(rc) => rc,
        Err(e) => errno_of(&e),
    };
    unmap(p, 1);
    format!("rc={rc} err={}", err[0])
}

/// Event-channel loopback inside dom0: the event sent on one end is read on the other.
fn evtchn() -> Result<String, String> {
    let f = OpenOptions::new().read(true).write(true).open("/dev/xen/evtchn").map_err(|e| format!("open: {e}"))?;
    let fd = f.as_raw_fd();
    let mut remote = 0u32;
    let a = ioctl(fd, IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut remote).map_err(|e| format!("bind_unbound_port: {e}"))?;
    let mut bind = [0u32, a as u32];
    let b = ioctl(fd, IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut bind).map_err(|e| format!("bind_interdomain: {e}"))?;
    let mut port = b as u32;
    ioctl(fd, IOCTL_EVTCHN_NOTIFY, &mut port).map_err(|e| format!("notify {b}: {e}"))?;
    // The bind itself raises the new port once (as Xen does, so that both ends notice the connection): read
    // until the notified end's port shows up.
    let mut seen = Vec::new();
    while !seen.contains(&(a as u32)) {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 5000) } != 1 || seen.len() > 8 {
            return Err(format!("ports {a}/{b}: no event on {a} within 5 s (events on {seen:?})"));
        }
        let mut got = [0u32; 4];
        // SAFETY: reads at most 16 bytes into `got`.
        let n = unsafe { libc::read(fd, got.as_mut_ptr().cast(), 16) };
        if n <= 0 || n % 4 != 0 {
            return Err(format!("ports {a}/{b}: read gave {n}"));
        }
        seen.extend_from_slice(&got[..n as usize / 4]);
    }
    Ok(format!("ports={a}/{b} event=ok"))
}

/// Maps frame `gfn` of domain `dom` here through MMAPBATCH_V2 and runs `f` on the page.
fn with_guest_page<R>(pc: i32, dom: u16, gfn: u64, f: impl FnOnce(*mut u8) -> R) -> Result<R, String> {
    let p = map(pc, 1, 0).map_err(|e| format!("mmap: {e}"))?;
    let arr = [gfn];
    let mut err = [0x5555i32];
    let mut b = PrivcmdMmapbatchV2 { num: 1, dom, addr: p as u64, arr: arr.as_ptr(), err: err.as_mut_ptr() };
    let rc = ioctl(pc, IOCTL_PRIVCMD_MMAPBATCH_V2, &mut b);
    let r = if rc.is_ok() && err[0] == 0 {
        Ok(f(p.cast()))
    } else {
        Err(format!("mmapbatch gfn {gfn:#x}: rc={rc:?} err={}", err[0]))
    };
    unmap(p, 1);
    r
}

/// The guest's whole program, at its PVH entry (0x100000, 32-bit protected mode, paging off): SCHEDOP_shutdown
/// with the reason stored at 0x100800 (Keel's hypercall registers: eax, then edi, esi), then a spin.
const GUEST_CODE: [u8; 20] = [
    0xb8, 29, 0, 0, 0, // mov eax, 29 (sched_op)
    0xbf, 2, 0, 0, 0, // mov edi, 2 (SCHEDOP_shutdown)
    0xbe, 0x00, 0x08, 0x10, 0x00, // mov esi, 0x100800
    0x0f, 0x01, 0xd9, // vmmcall (Keel takes vmcall too)
    0xeb, 0xfe, // jmp $
];
/// The shutdown reason the guest reports: SHUTDOWN_reboot.
const GUEST_REASON: u32 = 1;

/// One build-and-destroy cycle of a PVH guest with a few pages: one mapped here and written, and, with `run`,
/// a tiny program at its entry that the boot vCPU runs once unpaused (it shuts the domain down). Returns what
/// it saw.
fn guest_cycle(xc: &keel_xenctrl::Xc, pc: i32, run: bool) -> Result<String, String> {
    use keel_abi::domctl::dominf;
    let id =
        xc.create_domain(0, &keel_xenctrl::pvh_domain_config(1, [0x4b; 16])).map_err(|e| format!("create: {e}"))?;
    let r = (|| {
        xc.set_max_mem(id, 64).map_err(|e| format!("max_mem: {e}"))?;
        xc.populate_physmap(id, &[0, 1, 2, 0x100], 0).map_err(|e| format!("populate: {e}"))?;
        let info = xc.domain_info(id).map_err(|e| format!("info: {e}"))?.ok_or("no domain info")?;
        if info.tot_pages != 4 || info.flags & dominf::PAUSED == 0 || info.nr_online_vcpus != 0 {
            return Err(format!(
                "info: tot_pages {} flags {:#x} online {}",
                info.tot_pages, info.flags, info.nr_online_vcpus
            ));
        }
        if xc.populate_physmap(id, &(4..17).collect::<Vec<u64>>(), 0).is_ok() {
            return Err("populate beyond max_mem succeeded".into());
        }
        let pattern = 0x6b65_656c_2d67_7374u64;
        let seen = with_guest_page(pc, id, 2, |p| {
            let p = p.cast::<u64>();
            // SAFETY: `p` maps one page of the guest's frame 2 for the duration of this closure.
            unsafe {
                let first = p.read_volatile();
                p.write_volatile(pattern);
                (first, p.read_volatile())
            }
        })?;
        if seen != (0, pattern) {
            return Err(format!("guest page: read {:#x}, then {:#x} after writing", seen.0, seen.1));
        }
        if !run {
            xc.set_pvh_boot_vcpu(id, 0, 0x10_0000, 0).map_err(|e| format!("sethvmcontext: {e}"))?;
            return Ok(String::new());
        }
        with_guest_page(pc, id, 0x100, |p| {
            // SAFETY: `p` maps one page of the guest's frame 0x100; both writes lie inside it.
            unsafe {
                core::ptr::copy_nonoverlapping(GUEST_CODE.as_ptr(), p, GUEST_CODE.len());
                p.add(0x800).cast::<u32>().write_volatile(GUEST_REASON);
            }
        })?;
        xc.set_pvh_boot_vcpu(id, 0, 0x10_0000, 0).map_err(|e| format!("sethvmcontext: {e}"))?;
        xc.unpause_domain(id).map_err(|e| format!("unpause: {e}"))?;
        for _ in 0..100 {
            let info = xc.domain_info(id).map_err(|e| format!("info: {e}"))?.ok_or("the domain vanished")?;
            if info.flags & dominf::SHUTDOWN != 0 {
                let code = info.flags >> dominf::SHUTDOWN_SHIFT & dominf::SHUTDOWN_MASK;
                return Ok(format!(" ran=yes shutdown-code={code}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err("the guest did not shut down within 5 s".into())
    })();
    let d = xc.destroy_domain(id).map_err(|e| format!("destroy: {e}"));
    let r = r?;
    d?;
    if xc.domain_info(id).map_err(|e| format!("info: {e}"))?.is_some() {
        return Err("the domain is still listed after destroy".into());
    }
    Ok(format!("id={id}{r}"))
}

/// The spinning guest: `inc dword [0x100900]` in a loop, at its PVH entry.
const COUNTER_CODE: [u8; 8] = [0xff, 0x05, 0x00, 0x09, 0x10, 0x00, 0xeb, 0xf8];

/// A running guest paused, unpaused and destroyed while it runs: the counter it increments stands still while
/// paused and moves again after; its frame, still mapped here when the domain is destroyed, stays readable until
/// unmapped; free memory comes back.
fn guest_pause(xc: &keel_xenctrl::Xc, pc: i32) -> Result<String, String> {
    let free = || xc.physinfo().map(|p| p.free_pages).map_err(|e| format!("physinfo: {e}"));
    let before = free()?;
    let id =
        xc.create_domain(0, &keel_xenctrl::pvh_domain_config(1, [0x50; 16])).map_err(|e| format!("create: {e}"))?;
    let run = |p: *mut u8| -> Result<String, String> {
        // SAFETY: `p` maps the guest's frame 0x100 while this closure runs; the counter lies inside it.
        let counter = || unsafe { p.add(0x900).cast::<u32>().read_volatile() };
        // SAFETY: as above; the code lies at the start of the page.
        unsafe { core::ptr::copy_nonoverlapping(COUNTER_CODE.as_ptr(), p, COUNTER_CODE.len()) };
        xc.set_pvh_boot_vcpu(id, 0, 0x10_0000, 0).map_err(|e| format!("sethvmcontext: {e}"))?;
        xc.unpause_domain(id).map_err(|e| format!("unpause: {e}"))?;
        let wait_moving = |from: u32| {
            for _ in 0..100 {
                if counter() != from {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            false
        };
        if !wait_moving(0) {
            return Err("the guest's counter never moved".into());
        }
        xc.pause_domain(id).map_err(|e| format!("pause: {e}"))?;
        std::thread::sleep(std::time::Duration::from_millis(100));
        let a = counter();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = counter();
        xc.unpause_domain(id).map_err(|e| format!("unpause: {e}"))?;
        let moved = wait_moving(b);
        xc.destroy_domain(id).map_err(|e| format!("destroy: {e}"))?;
        let still = counter();
        Ok(format!(
            "paused-still={} resumed={} destroyed-running=yes mapped-after-destroy={}",
            if a == b { "yes" } else { "no" },
            if moved { "yes" } else { "no" },
            if still != 0 { "readable" } else { "zero" }
        ))
    };
    let r = (|| {
        xc.set_max_mem(id, 64).map_err(|e| format!("max_mem: {e}"))?;
        xc.populate_physmap(id, &[0, 0x100], 0).map_err(|e| format!("populate: {e}"))?;
        with_guest_page(pc, id, 0x100, run)?
    })();
    if r.is_err() {
        let _ = xc.destroy_domain(id);
    }
    let r = r?;
    if xc.domain_info(id).map_err(|e| format!("info: {e}"))?.is_some() {
        return Err("the domain is still listed after destroy".into());
    }
    let mut after = free()?;
    for _ in 0..20 {
        if after == before {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = free()?;
    }
    Ok(format!("{r} returned={}", if after == before { "yes" } else { "no" }))
}

/// Two guest cycles; the free pages around the second must come back exactly (a moment is allowed for frames
/// that wait for dom0's vCPUs to flush their translations).
fn guest_build(pc: i32) -> Result<String, String> {
    let xc = keel_xenctrl::Xc::open().map_err(|e| format!("xc: {e}"))?;
    let free = || xc.physinfo().map(|p| p.free_pages).map_err(|e| format!("physinfo: {e}"));
    guest_cycle(&xc, pc, false)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = free()?;
    let id = guest_cycle(&xc, pc, true)?;
    let mut after = free()?;
    for _ in 0..20 {
        if after == before {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = free()?;
    }
    Ok(format!("{id} free-before={before} free-after={after} returned={}", if after == before { "yes" } else { "no" }))
}

fn main() {
    // Helpers for the `xm create` checks (xtask/assets/checks/create.sh): free pages, and destroydomain.
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["free"] => {
            let xc = keel_xenctrl::Xc::open().expect("privcmd");
            println!("{}", xc.physinfo().map(|p| p.free_pages).unwrap_or(0));
            return;
        }
        ["destroy", id] => {
            let xc = keel_xenctrl::Xc::open().expect("privcmd");
            let r = id.parse().map_err(|_| "not a domain id".to_string());
            match r.and_then(|id| xc.destroy_domain(id).map_err(|e| e.to_string())) {
                Ok(()) => println!("destroyed"),
                Err(e) => println!("destroy failed: {e}"),
            }
            return;
        }
        _ => {}
    }
    match evtchn() {
        Ok(s) => println!("KEEL-CHECK: evtchn-loopback {s}"),
        Err(s) => println!("KEEL-CHECK: evtchn-loopback failed: {s}"),
    }
    match grants() {
        Ok(s) => println!("KEEL-CHECK: gntdev-own-grant {s}"),
        Err(s) => println!("KEEL-CHECK: gntdev-own-grant failed: {s}"),
    }
    let pc = match OpenOptions::new().read(true).write(true).open("/dev/xen/privcmd") {
        Ok(f) => f,
        Err(e) => {
            println!("KEEL-CHECK: privcmd failed: {e}");
            return;
        }
    };
    let fd = pc.as_raw_fd();
    println!("KEEL-CHECK: mmap-resource-gnttab self {}", resource_size(fd, 0));
    println!("KEEL-CHECK: mmap-resource-gnttab nodomain {}", resource_size(fd, 0x7000));
    println!("KEEL-CHECK: mmapbatch nodomain {}", mmapbatch(fd, 0x7000));
    println!("KEEL-CHECK: mmapbatch self {}", mmapbatch(fd, 0));
    match guest_build(fd) {
        Ok(s) => println!("KEEL-CHECK: guest-build {s}"),
        Err(s) => println!("KEEL-CHECK: guest-build failed: {s}"),
    }
    match keel_xenctrl::Xc::open().map_err(|e| e.to_string()).and_then(|xc| guest_pause(&xc, fd)) {
        Ok(s) => println!("KEEL-CHECK: guest-pause {s}"),
        Err(s) => println!("KEEL-CHECK: guest-pause failed: {s}"),
    }
}
