//! Hostile hypercalls, and the exits around them. Every error must come back negative and in Xen's errno range
//! (-1..-4095); a value ≥ 0 must be a documented success (0, a version, a page size, an IS_UP answer, a count);
//! the registers outside the argument set (RCX, R9, R11-R15) must survive each call. Wants 2 vCPUs.
//!
//! 1. `calls=` (default [`CALLS`]) inline hypercalls with a pseudo-random number in 0..64. The first argument is
//!    half the time a small sub-command; each other argument is a small number, a vCPU id, a pointer into a
//!    scratch buffer of random bytes (for event-channel calls sometimes a structure of small numbers: ports,
//!    vCPUs, our domid), a pointer that straddles into a page the guest's page tables leave out, or into the
//!    first GFN past RAM, one into a read-only page, one on an MMIO or unmapped GFN (0xa0000, the LAPIC page,
//!    3.99 GiB...), or garbage with bits 63 and 31 set. Only what would stop, re-time or re-plumb the guest is
//!    left out (sched_op, set_timer_op, vCPU up/down/initialise/NMI, vcpu_info and periodic-timer registration,
//!    EVTCHNOP_reset/init_control/expand_array, console writes of scratch bytes; grant map/unmap/swap get one op);
//!    those are exercised below, one at a time, with their results checked.
//! 2. Struct-aware sequences: event channels (IPI bind, send, mask/unmask, BIND_VCPU, close, loopback
//!    interdomain), both vCPUs racing on the same ports, and rounds in which both vCPUs bind the same unbound port.
//! 3. XENMEM_add_to_physmap of grant frames and of shared_info over scratch GFNs (shared_info goes back to its
//!    frame afterwards), bad frame indexes, a GFN with bit 36 set (it must not alias the GFN without it).
//! 4. sched_op: yield, poll (timeouts, a pending port, too many ports, an unmapped port array, two ports ≥ 64 of
//!    which the other vCPU raises one), block; timers: single-shot in the past, the future and at the end of
//!    time, set_timer_op, periodic with periods too small, huge and 1 ms.
//! 5. Exits: RDMSR/WRMSR of indexes no CPU defines (#GP), IN/OUT/INS on random ports (all-ones, nothing
//!    happens), x2APIC self-IPIs (delivered), ICR vectors 0-15 (not delivered), broadcast and logical
//!    destinations, random ICR writes with the APIC disabled.
//! 6. Runstate areas (straddling two pages, replaced, unregistered), vcpu_info registration (vCPU 1 moves its own,
//!    a second registration is refused), and a grant frame mapped over the registered vcpu_info page: the
//!    hypervisor must not go on writing into the freed frame.
//!
//! The scratch region is the top MiB of RAM (found with XENMEM_memory_map); nothing else of the guest lives
//! there, so GFNs given away by add_to_physmap cost nothing. Checks that fail because of Keel defects being fixed
//! under issue 10 print `Known defect [<tag>]` (see keel_tests::xtf::KNOWN_DEFECTS) and the test goes on.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use keel_abi::hypercall::{nr, schedop, vcpuop, xenver, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer};
use keel_abi::shared_info::{
    evtchnop, evtchnstat, gnttab, virq, xenmem, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi,
    EvtchnBindVcpu, EvtchnBindVirq, EvtchnStatus, SchedPoll, VcpuRegisterVcpuInfo, VcpuRunstateInfo, XenAddToPhysmap,
    XenMemoryMap, EVTCHN_2L_PORTS, EVTCHN_PENDING_OFFSET,
};
use keel_abi::{Errno, DOMID_SELF};
use xtf::exinfo::{self, Fault};
use xtf::hypercall::{self, evtchn_op, Insn};
use xtf::time::{xen_system_time_ns, MS};
use xtf::{arch, ensure, error, evtchn, failure, known_defect, smp, Outcome, TestResult};

xtf::guest!(test_main);

/// Random hypercalls by default (each one is a VM exit: about 0.03 ms under QEMU TCG, 0.2 ms under Bochs); the
/// module string's `guest.calls=N` changes it, `guest.rounds=N` the length of the structured phases.
const CALLS: u64 = 1_000_000;
const ROUNDS: u64 = 200;
/// A progress line every this many calls.
const PROGRESS_EVERY: u64 = 100_000;
const SEED: u64 = 0x853c_49e6_748f_ea9b;
/// Never a guest address, vCPU id or port: bits 31 and 63 set.
const HIGH_BITS: u64 = 1 << 63 | 1 << 31;
const CANARY: u64 = 0x5eed_cafe_f00d_0000;
const PAGE: u64 = 4096;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The scratch region: the top MiB of RAM, split into 4 KiB pages in the guest's page tables.

/// Pages in the scratch region.
const SCRATCH_PAGES: u64 = 256;
/// Pages 0..=15: buffers of random bytes (a pointer into them has ≥ 1 KiB of buffer after it: XENVER_capabilities
/// writes 1 KiB).
const BUF_PAGES: u64 = 16;
/// Not present in the guest's page tables (RAM in the p2m): a structure at the end of page 15 straddles into it.
const HOLE: u64 = 16;
/// Mapped read-only.
const READ_ONLY: u64 = 17;
/// Targets of add_to_physmap (grant frames, shared_info): pages 32..64.
const PHYSMAP_FIRST: u64 = 32;
/// Its GFN + 1 << 36 is given a grant frame: the page itself must keep its bytes.
const ALIAS: u64 = 70;
/// Runstate areas: pages 80..84.
const RUNSTATE: u64 = 80;
/// vCPU 1's registered vcpu_info, and the grant frames mapped over it.
const VCPU_INFO: u64 = 90;
const UAF_GRANT: u64 = 91;
/// The last page: a structure at its end straddles into the first GFN past RAM.
const LAST: u64 = SCRATCH_PAGES - 1;

#[derive(Clone, Copy)]
struct Scratch {
    /// Guest-physical (= linear) address of page 0.
    base: u64,
    /// End of RAM.
    ram_end: u64,
}

impl Scratch {
    fn page(self, i: u64) -> u64 {
        self.base + i * PAGE
    }

    fn bytes(self, i: u64) -> &'static mut [u8; 4096] {
        // SAFETY: scratch pages below HOLE and from PHYSMAP_FIRST on are RAM mapped read-write that nothing else in
        // the guest uses; callers only pass such pages while they are still RAM.
        unsafe { &mut *(self.page(i) as *mut [u8; 4096]) }
    }

    fn read_u64(self, addr: u64) -> u64 {
        // SAFETY: `addr` is an 8-byte aligned address in a mapped scratch page (callers' choice), read volatile
        // because the hypervisor may write it.
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    }
}

/// A 4 KiB page table for the 2 MiB region that holds the scratch pages.
#[repr(C, align(4096))]
struct PageTable([AtomicU64; 512]);

static SCRATCH_PT: PageTable = PageTable([const { AtomicU64::new(0) }; 512]);

fn cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Finds the end of RAM (XENMEM_memory_map), checks that the top MiB is free, and maps its 2 MiB region with 4 KiB
/// pages: HOLE not present, READ_ONLY read-only, everything else as before (identity, read-write).
fn setup_scratch() -> Result<Scratch, Outcome> {
    let mut entries = [0u8; 20 * 8];
    let mut map = XenMemoryMap { nr_entries: 8, pad: 0, buffer: entries.as_mut_ptr() as u64 };
    // SAFETY: XENMEM_memory_map only writes `map` and up to 8 entries into `entries`.
    let rc = unsafe { hypercall::op_raw(nr::MEMORY_OP, xenmem::MEMORY_MAP, &mut map) };
    ensure!(rc == 0, "XENMEM_memory_map returned {rc}");
    let mut ram_end = 0;
    for e in entries.chunks(20).take(map.nr_entries.min(8) as usize) {
        let addr = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default());
        if u32::from_le_bytes(e[16..20].try_into().unwrap_or_default()) == 1 {
            ram_end = ram_end.max(addr + size);
        }
    }
    ensure!(ram_end % (2 << 20) == 0 && ram_end >= 8 << 20, "RAM ends at {ram_end:#x}: want a 2 MiB multiple ≥ 8 MiB");
    extern "C" {
        static __bss_end: u8;
    }
    let image_end = (&raw const __bss_end) as u64;
    let region = ram_end - (2 << 20);
    ensure!(image_end <= region, "the guest image ends at {image_end:#x}, inside the scratch region at {region:#x}");
    let s = Scratch { base: ram_end - SCRATCH_PAGES * PAGE, ram_end };
    // Fill the pages that will be read-only or unmapped while they still can be written.
    s.bytes(READ_ONLY).fill(0x5a);
    s.bytes(HOLE).fill(0x3c);
    for i in 0..512u64 {
        let addr = region + i * PAGE;
        let flags = if addr == s.page(HOLE) {
            0
        } else if addr == s.page(READ_ONLY) {
            1
        } else {
            3
        };
        SCRATCH_PT.0[i as usize].store(if flags == 0 { 0 } else { addr | flags }, Ordering::Relaxed);
    }
    // The PD entry for `region`, through PML4[0] and PDPT[region >> 30] (all identity-mapped below 4 GiB).
    let pml4 = cr3() & !0xfff;
    let read = |a: u64| -> u64 {
        // SAFETY: page-table entries of our own tables, in identity-mapped RAM.
        unsafe { core::ptr::read_volatile(a as *const u64) }
    };
    let pdpt = read(pml4) & 0x000f_ffff_ffff_f000;
    let pd = read(pdpt + (region >> 30) * 8) & 0x000f_ffff_ffff_f000;
    let pde = pd + ((region >> 21) & 511) * 8;
    ensure!(read(pde) & 0x81 == 0x81, "the PD entry for {region:#x} is not a present 2 MiB page");
    // SAFETY: replaces a 2 MiB identity mapping of RAM nothing but the scratch pages uses by a table that maps the
    // same addresses the same way, except the two pages above; the CR3 reload flushes the old translation (the
    // other vCPUs never touched the region).
    unsafe {
        core::ptr::write_volatile(pde as *mut u64, SCRATCH_PT.0.as_ptr() as u64 | 3);
        asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags));
    }
    ensure!(exinfo::read_u64(s.page(HOLE)).is_err(), "the scratch hole at {:#x} is still mapped", s.page(HOLE));
    Ok(s)
}

// ---------------------------------------------------------------------------------------------------------------
// Results.

/// `-N (ENAME)` for an errno return, the number otherwise.
struct Rc(i64);

impl core::fmt::Display for Rc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match Errno::from_return(self.0) {
            Some(e) => write!(f, "{} ({})", self.0, e.name()),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

/// Xen's version as `xen_version(XENVER_version)` gave it at the start.
static VERSION: AtomicI64 = AtomicI64::new(0);

/// Whether a return ≥ 0 of hypercall `nr` with first argument `a0` is documented. Xen truncates sub-commands to
/// 32 bits (memory_op to its low 6).
fn documented_success(nr: u64, a: &[u64; 5], rc: i64) -> bool {
    let cmd = a[0] as u32;
    rc == 0
        || match nr {
            nr::XEN_VERSION => match u64::from(cmd) {
                xenver::VERSION => rc == VERSION.load(Ordering::Relaxed),
                xenver::PAGESIZE => rc == 4096,
                // The build id's length.
                xenver::BUILD_ID => rc <= 4096,
                _ => false,
            },
            nr::VCPU_OP => u64::from(cmd) == vcpuop::IS_UP && rc == 1,
            // Reservation changes return extents done; the MAXIMUM_* / CURRENT_* queries return page counts.
            nr::MEMORY_OP => matches!(cmd & 0x3f, 0..=4 | 6 | 14),
            // CONSOLEIO_read: the bytes read.
            nr::CONSOLE_IO => cmd == 1 && rc as u64 <= a[1],
            _ => false,
        }
}

/// `Ok` for a documented success or an errno in -1..-4095.
fn check_rc(what: core::fmt::Arguments, nr: u64, a: &[u64; 5], rc: i64) -> TestResult {
    if rc < 0 {
        ensure!(rc >= -4095, "{what}: hypercall {nr} args {a:#x?} returned {rc:#x}, not an errno");
    } else {
        ensure!(
            documented_success(nr, a, rc),
            "{what}: hypercall {nr} args {a:#x?} returned {rc:#x} (> 0, unexpected)"
        );
    }
    Ok(())
}

/// The call returned exactly `want`.
fn expect(what: core::fmt::Arguments, got: i64, want: i64) -> TestResult {
    ensure!(got == want, "{what}: returned {}, want {}", Rc(got), Rc(want));
    Ok(())
}

/// The call returned 0 or an errno (the two hypervisors may differ; both are fine).
fn zero_or_errno(what: core::fmt::Arguments, got: i64) -> TestResult {
    ensure!(got == 0 || (-4095..0).contains(&got), "{what}: returned {}, want 0 or an errno", Rc(got));
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Phase 1: random hypercalls.

/// One hypercall; returns RAX and whether every canary register came back intact.
fn hostile_call(insn: Insn, nr: u64, a: [u64; 5]) -> (i64, bool) {
    let rc: i64;
    let c: [u64; 7] = core::array::from_fn(|i| CANARY + i as u64);
    let mut out = c;
    // SAFETY: `random_call` never builds a call that stops, blocks, re-times or re-plumbs the guest, and every
    // pointer it passes is garbage, unmapped or into the scratch region (see the module docs), so the hypervisor can
    // only fail the call or change scratch memory and event-channel state nothing else relies on. The canaries are
    // inputs and outputs so any change is seen rather than trusted away.
    unsafe {
        match insn {
            Insn::Vmmcall => asm!("vmmcall",
                inlateout("rax") nr => rc, inlateout("rdi") a[0] => _, inlateout("rsi") a[1] => _,
                inlateout("rdx") a[2] => _, inlateout("r10") a[3] => _, inlateout("r8") a[4] => _,
                inlateout("rcx") out[0], inlateout("r9") out[1], inlateout("r11") out[2],
                inlateout("r12") out[3], inlateout("r13") out[4], inlateout("r14") out[5],
                inlateout("r15") out[6], options(nostack)),
            Insn::Vmcall => asm!("vmcall",
                inlateout("rax") nr => rc, inlateout("rdi") a[0] => _, inlateout("rsi") a[1] => _,
                inlateout("rdx") a[2] => _, inlateout("r10") a[3] => _, inlateout("r8") a[4] => _,
                inlateout("rcx") out[0], inlateout("r9") out[1], inlateout("r11") out[2],
                inlateout("r12") out[3], inlateout("r13") out[4], inlateout("r14") out[5],
                inlateout("r15") out[6], options(nostack)),
        }
    }
    (rc, out == c)
}

/// Guest-physical addresses that are not RAM: legacy VGA, the IO-APIC and LAPIC pages, the GFN past RAM, just
/// below 4 GiB, beyond the guest's 4 GiB identity map, and a non-canonical one.
fn hole_address(rng: &mut Rng, s: Scratch) -> u64 {
    const HOLES: [u64; 6] = [0xa_0000, 0xfec0_0000, 0xfee0_0000, 0xffff_f000, 0x1_0000_0000, 0x8000_0000_0000_0000];
    let i = rng.below(HOLES.len() as u64 + 1) as usize;
    HOLES.get(i).copied().unwrap_or(s.ram_end) + rng.below(PAGE)
}

/// A pointer argument: into a buffer, straddling a page edge, read-only, a hole, or garbage.
fn pointer(rng: &mut Rng, s: Scratch) -> u64 {
    match rng.below(10) {
        0..=3 => s.page(rng.below(BUF_PAGES - 1)) + rng.below(PAGE),
        4 => s.page(HOLE) - 1 - rng.below(48),
        5 => s.page(LAST) + PAGE - 1 - rng.below(48),
        6 => s.page(READ_ONLY) + rng.below(PAGE),
        7 => hole_address(rng, s),
        _ => rng.next() | HIGH_BITS,
    }
}

/// An argument of a random kind.
fn argument(rng: &mut Rng, s: Scratch, vcpus: u32) -> u64 {
    match rng.below(6) {
        0 => rng.below(64),
        1 => rng.below(u64::from(vcpus) + 2),
        2 | 3 => pointer(rng, s),
        4 => rng.next(),
        _ => rng.next() | HIGH_BITS,
    }
}

/// Writes a structure of small numbers at `p` if it is in a buffer page: ports and vCPU ids (0..8), the first
/// half-word sometimes DOMID_SELF or our domid, so that event-channel calls get past their checks.
fn small_struct(rng: &mut Rng, s: Scratch, p: u64, domid: u16, first: Option<u32>) {
    let mut words = [0u32; 8];
    for w in &mut words {
        *w = rng.below(8) as u32;
    }
    words[0] = match (first, rng.below(4)) {
        (Some(w), _) => w,
        (None, 0) => u32::from(DOMID_SELF),
        (None, 1) => u32::from(domid),
        _ => words[0],
    };
    put_words(s, p, &words);
}

/// Writes 32 random bytes at `p` if it is in a buffer page.
fn random_struct(rng: &mut Rng, s: Scratch, p: u64) {
    let words: [u32; 8] = core::array::from_fn(|_| rng.next() as u32);
    put_words(s, p, &words);
}

fn put_words(s: Scratch, p: u64, words: &[u32; 8]) {
    // Buffer pages only (0..BUF_PAGES - 1): a pointer elsewhere is left alone.
    if p < s.base || p + 32 > s.page(BUF_PAGES - 1) {
        return;
    }
    for (i, w) in words.iter().enumerate() {
        // SAFETY: `p .. p + 32` lies in buffer pages (checked above), which are mapped read-write and ours.
        unsafe { core::ptr::write_unaligned((p as usize + i * 4) as *mut u32, *w) };
    }
}

/// Picks a call that cannot stop or re-plumb the guest (see the module docs), or `None` to draw again.
fn random_call(rng: &mut Rng, s: Scratch, vcpus: u32, domid: u16) -> Option<(u64, [u64; 5])> {
    let nr = rng.below(64);
    if [nr::SCHED_OP_COMPAT, nr::SET_TIMER_OP, nr::SCHED_OP].contains(&nr) {
        return None;
    }
    let r = rng.next();
    let cmd = if r & 1 == 0 { (r >> 1) % 64 } else { r | HIGH_BITS };
    let mut a = [cmd, 0, 0, 0, 0];
    for x in &mut a[1..] {
        *x = argument(rng, s, vcpus);
    }
    let cmd32 = u64::from(cmd as u32);
    match nr {
        // Never print scratch bytes: the count may be anything, the buffer is not.
        // (Not the non-canonical hole either: Keel's walker drops the high bits, which makes it GFN 0.)
        nr::CONSOLE_IO => a[2] = if rng.below(2) == 0 { s.ram_end + rng.below(PAGE) } else { rng.next() | HIGH_BITS },
        nr::VCPU_OP => {
            const KEPT_OUT: [u64; 8] = [
                vcpuop::INITIALISE,
                vcpuop::UP,
                vcpuop::DOWN,
                vcpuop::REGISTER_RUNSTATE_MEMORY_AREA,
                vcpuop::SET_PERIODIC_TIMER,
                vcpuop::REGISTER_VCPU_INFO,
                vcpuop::SEND_NMI,
                vcpuop::REGISTER_VCPU_TIME_MEMORY_AREA,
            ];
            if KEPT_OUT.contains(&cmd32) {
                a[0] = vcpuop::GET_RUNSTATE_INFO;
            }
        }
        // GNTTABOP_map/unmap_grant_ref and swap_grant_ref write each op's status back (as Xen does): one op only,
        // so that a count running past the scratch buffer does not write statuses over the guest's stack and page
        // tables.
        nr::GRANT_TABLE_OP if cmd32 <= 1 || cmd32 == gnttab::SWAP_GRANT_REF => a[2] = 1,
        nr::EVENT_CHANNEL_OP => {
            if (evtchnop::RESET..=evtchnop::INIT_CONTROL + 1).contains(&cmd32) || cmd32 == 15 {
                a[0] = evtchnop::STATUS;
            }
            if rng.below(2) == 0 {
                // Not VIRQ_TIMER: moved by BIND_VCPU and closed, it stays bound on Keel (the 7.10 defect, which
                // evtchn_errors checks), and the timer phase needs it.
                let virq = if a[0] == evtchnop::BIND_VIRQ { Some(1 + rng.below(7) as u32) } else { None };
                small_struct(rng, s, a[1], domid, virq);
            }
        }
        _ => {}
    }
    if nr != nr::EVENT_CHANNEL_OP {
        // Fresh random bytes behind every scratch pointer, so that no small numbers left there by an event-channel
        // call become a domid, a GFN or a callback for a call that would re-plumb the guest.
        for &p in &a[1..] {
            random_struct(rng, s, p);
        }
    }
    Some((nr, a))
}

fn random_phase(insn: Insn, rng: &mut Rng, s: Scratch, vcpus: u32, domid: u16, calls: u64) -> TestResult {
    let (mut ok, mut enosys, mut other_err) = (0u64, 0u64, 0u64);
    xtf::println!("[{} ms] phase 1: {calls} random hypercalls by {insn:?}, seed {SEED:#x}", xen_system_time_ns() / MS);
    let mut i = 0;
    while i < calls {
        if i % 16 == 0 {
            // Fresh random bytes in one buffer page.
            let page = s.bytes(rng.below(BUF_PAGES));
            for chunk in page.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
        }
        let Some((nr, a)) = random_call(rng, s, vcpus, domid) else { continue };
        let (rc, kept) = hostile_call(insn, nr, a);
        ensure!(kept, "call {i}: hypercall {nr} args {a:#x?} changed a register outside the argument set");
        check_rc(format_args!("call {i}"), nr, &a, rc)?;
        if rc >= 0 {
            ok += 1;
        } else if rc == Errno::ENOSYS.negated() {
            enosys += 1;
        } else {
            other_err += 1;
        }
        i += 1;
        if i % PROGRESS_EVERY.min(calls.div_ceil(10)) == 0 {
            xtf::println!("{i} calls done");
        }
    }
    xtf::println!("{calls} calls returned: {ok} >= 0, {enosys} -ENOSYS, {other_err} other errors");
    Ok(())
}

/// Closes every port (whatever the random calls bound) and stops every timer, so that the later phases start clean.
fn clean_up(vcpus: u32) -> TestResult {
    for port in 1..EVTCHN_2L_PORTS {
        let rc = port_op(evtchnop::CLOSE, port);
        ensure!(rc == 0 || rc == EINVAL, "CLOSE of port {port} while cleaning up: returned {}", Rc(rc));
    }
    for v in 0..vcpus {
        xtf::time::stop_periodic_timer(v).map_err(|e| failure!("VCPUOP_stop_periodic_timer({v}): {e}"))?;
    }
    xtf::time::set_timer_op(0).map_err(|e| failure!("set_timer_op(0): {e}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Event channels.

const EINVAL: i64 = Errno::EINVAL.negated();

fn port_op(cmd: u64, port: u32) -> i64 {
    let mut p = port;
    evtchn_op(cmd, &mut p)
}

fn bind_ipi(vcpu: u32) -> (i64, u32) {
    let mut b = EvtchnBindIpi { vcpu, port: 0 };
    (evtchn_op(evtchnop::BIND_IPI, &mut b), b.port)
}

fn bind_virq(v: u32, vcpu: u32) -> (i64, u32) {
    let mut b = EvtchnBindVirq { virq: v, vcpu, port: 0 };
    (evtchn_op(evtchnop::BIND_VIRQ, &mut b), b.port)
}

fn bind_vcpu(port: u32, vcpu: u32) -> i64 {
    evtchn_op(evtchnop::BIND_VCPU, &mut EvtchnBindVcpu { port, vcpu })
}

fn alloc_unbound() -> (i64, u32) {
    let mut a = EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_SELF, port: 0 };
    (evtchn_op(evtchnop::ALLOC_UNBOUND, &mut a), a.port)
}

fn bind_interdomain(remote_port: u32) -> (i64, u32) {
    let mut b = EvtchnBindInterdomain { remote_dom: DOMID_SELF, pad: 0, remote_port, local_port: 0 };
    (evtchn_op(evtchnop::BIND_INTERDOMAIN, &mut b), b.local_port)
}

fn status(port: u32) -> Result<EvtchnStatus, Outcome> {
    let mut s = EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() };
    let rc = evtchn_op(evtchnop::STATUS, &mut s);
    ensure!(rc == 0, "STATUS of port {port}: returned {}", Rc(rc));
    Ok(s)
}

fn ok_port(what: core::fmt::Arguments, (rc, port): (i64, u32)) -> Result<u32, Outcome> {
    ensure!(rc == 0, "{what}: returned {}, want 0", Rc(rc));
    ensure!(port != 0 && port < EVTCHN_2L_PORTS, "{what}: port {port} is not a 2-level port");
    Ok(port)
}

/// Events counted per port (ports below evtchn::MAX_PORTS).
static EVENTS: [AtomicU32; evtchn::MAX_PORTS as usize] = [const { AtomicU32::new(0) }; evtchn::MAX_PORTS as usize];

fn count_event(port: u32) {
    EVENTS[port as usize].fetch_add(1, Ordering::AcqRel);
}

fn events(port: u32) -> u32 {
    EVENTS[port as usize].load(Ordering::Acquire)
}

/// A port bound here, counted by [`count_event`].
fn counted(port: u32) -> Result<u32, Outcome> {
    ensure!(port < evtchn::MAX_PORTS, "port {port} is beyond the handler table");
    EVENTS[port as usize].store(0, Ordering::Release);
    evtchn::set_handler(port, count_event);
    // A new binding keeps the port's old mask bit (in Xen as here): the guest unmasks it. Keel also keeps a pending
    // bit across CLOSE (Xen clears it; evtchn_errors checks that), which would swallow every later event.
    let si = xtf::xen::shared_info().map_err(|e| error!("shared_info: {e}"))?;
    si.evtchn_pending(port as usize / 64).fetch_and(!(1 << (port % 64)), Ordering::AcqRel);
    evtchn::unmask(port).map_err(|e| failure!("UNMASK of new port {port}: {e}"))?;
    Ok(port)
}

/// Waits with interrupts enabled until `done()` holds or `timeout_ns` of system time passed; returns `done()`.
fn wait_for(timeout_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let give_up = xen_system_time_ns() + timeout_ns;
    arch::sti();
    let r = loop {
        if done() {
            break true;
        }
        if xen_system_time_ns() > give_up {
            break done();
        }
        core::hint::spin_loop();
    };
    arch::cli();
    r
}

/// Spins with interrupts enabled for `ns` of system time.
fn settle(ns: u64) {
    wait_for(ns, || false);
}

fn evtchn_sequences(vcpus: u32, rounds: u64) -> TestResult {
    xtf::println!("[{} ms] phase 2: event-channel sequences ({rounds} rounds)", xen_system_time_ns() / MS);
    for round in 0..rounds.min(50) {
        let p = counted(ok_port(format_args!("round {round}: BIND_IPI vcpu 0"), bind_ipi(0))?)?;
        let s = status(p)?;
        ensure!(s.status == evtchnstat::IPI && s.vcpu == 0, "STATUS of IPI port {p}: {} on vCPU {}", s.status, s.vcpu);
        expect(format_args!("SEND {p}"), port_op(evtchnop::SEND, p), 0)?;
        ensure!(wait_for(100 * MS, || events(p) >= 1), "round {round}: the IPI sent on port {p} did not arrive");
        // Masked: a SEND leaves it pending; UNMASK delivers it.
        evtchn::mask(p).map_err(|e| error!("mask: {e}"))?;
        expect(format_args!("SEND {p} (masked)"), port_op(evtchnop::SEND, p), 0)?;
        settle(MS);
        ensure!(events(p) == 1, "round {round}: a masked port's event was delivered");
        // Xen refuses to move an IPI (-EINVAL); moving it to the other vCPU is harmless too.
        let target = (round as u32 + 1) % vcpus;
        zero_or_errno(format_args!("BIND_VCPU({p}, {target})"), bind_vcpu(p, target))?;
        expect(format_args!("UNMASK {p}"), port_op(evtchnop::UNMASK, p), 0)?;
        ensure!(wait_for(100 * MS, || events(p) >= 2), "round {round}: unmasking pending port {p} delivered nothing");
        expect(format_args!("CLOSE {p}"), port_op(evtchnop::CLOSE, p), 0)?;
        expect(format_args!("SEND on closed {p}"), port_op(evtchnop::SEND, p), EINVAL)?;
        expect(format_args!("CLOSE of closed {p}"), port_op(evtchnop::CLOSE, p), EINVAL)?;
        ensure!(status(p)?.status == evtchnstat::CLOSED, "STATUS of closed port {p} is not closed");
        // Loopback interdomain: our unbound port, bound by ourselves.
        let u = counted(ok_port(format_args!("ALLOC_UNBOUND(self, self)"), alloc_unbound())?)?;
        let l = counted(ok_port(format_args!("BIND_INTERDOMAIN(self, {u})"), bind_interdomain(u))?)?;
        let (su, sl) = (status(u)?, status(l)?);
        ensure!(
            su.status == evtchnstat::INTERDOMAIN
                && su.u[1] == l
                && sl.status == evtchnstat::INTERDOMAIN
                && sl.u[1] == u,
            "loopback {u} <-> {l}: STATUS says {} -> {}, {} -> {}",
            su.status,
            su.u[1],
            sl.status,
            sl.u[1]
        );
        settle(MS); // the connection raises the local port once
        let (eu, el) = (events(u), events(l));
        expect(format_args!("SEND {l}"), port_op(evtchnop::SEND, l), 0)?;
        ensure!(wait_for(100 * MS, || events(u) > eu), "SEND on {l} did not raise its peer {u}");
        expect(format_args!("SEND {u}"), port_op(evtchnop::SEND, u), 0)?;
        ensure!(wait_for(100 * MS, || events(l) > el), "SEND on {u} did not raise its peer {l}");
        expect(format_args!("CLOSE {l}"), port_op(evtchnop::CLOSE, l), 0)?;
        ensure!(status(u)?.status == evtchnstat::UNBOUND, "closing {l} did not leave its peer {u} unbound");
        expect(format_args!("SEND on unbound {u}"), port_op(evtchnop::SEND, u), 0)?;
        expect(format_args!("CLOSE {u}"), port_op(evtchnop::CLOSE, u), 0)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Work for the other vCPUs.

/// What the APs do next: `seq << 8 | op`.
static COMMAND: AtomicU64 = AtomicU64::new(0);
/// APs that finished the current command.
static FINISHED: AtomicU32 = AtomicU32::new(0);
/// Whether idle APs run with interrupts enabled.
static IDLE_IRQ: AtomicBool = AtomicBool::new(true);
/// The first bad result an AP saw (a message id and the value), 0 = none.
static AP_FAILURE: AtomicU64 = AtomicU64::new(0);
static AP_FAILURE_CALL: AtomicU64 = AtomicU64::new(0);
static ROUNDS_SETTING: AtomicU64 = AtomicU64::new(ROUNDS);
static VCPUS: AtomicU32 = AtomicU32::new(1);

const OP_QUIET: u8 = 1;
const OP_RACE: u8 = 2;
const OP_BIND_SAME: u8 = 3;
const OP_POLL_SEND: u8 = 4;
const OP_VCPU_INFO: u8 = 5;
const OP_VCPU_INFO_AGAIN: u8 = 6;
const OP_EXIT: u8 = 7;

/// The APs' loop: run each new command once, then idle.
fn ap_worker(id: u32) {
    let mut seen = 0;
    loop {
        let c = COMMAND.load(Ordering::Acquire);
        if c >> 8 != seen {
            seen = c >> 8;
            let op = c as u8;
            match op {
                OP_QUIET => arch::cli(),
                OP_RACE => race(id),
                OP_BIND_SAME => bind_same(id),
                OP_POLL_SEND => poll_send(),
                OP_VCPU_INFO | OP_VCPU_INFO_AGAIN => register_own_vcpu_info(),
                _ => {}
            }
            FINISHED.fetch_add(1, Ordering::AcqRel);
            if op == OP_EXIT {
                // Off for good, interrupts off: after phase 6 this vCPU's events land in a vcpu_info the runtime
                // does not read.
                arch::halt_forever();
            }
        }
        if IDLE_IRQ.load(Ordering::Acquire) {
            // Sleep up to 1 ms (SCHEDOP_poll on the reserved port 0, never raised) instead of spinning, so that
            // vCPU 0 has the CPU; events are taken in between.
            arch::sti();
            let _ = poll(&[0], xen_system_time_ns() + MS);
        } else {
            // Quiet: interrupts off, no clock reads (shared_info may be elsewhere, or this vCPU's vcpu_info).
            arch::cli();
            core::hint::spin_loop();
        }
    }
}

/// Gives the APs `op`, runs `mine` here meanwhile, and waits (up to 10 s) for the APs to finish.
fn on_all(vcpus: u32, op: u8, mine: impl FnOnce() -> TestResult) -> TestResult {
    FINISHED.store(0, Ordering::Release);
    let seq = (COMMAND.load(Ordering::Acquire) >> 8) + 1;
    COMMAND.store(seq << 8 | u64::from(op), Ordering::Release);
    let mut result = mine();
    let give_up = xen_system_time_ns() + 10_000 * MS;
    while FINISHED.load(Ordering::Acquire) < vcpus - 1 {
        if xen_system_time_ns() > give_up {
            result = result.and(Err(error!("the other vCPUs did not finish command {op} within 10 s")));
            break;
        }
        core::hint::spin_loop();
    }
    let f = AP_FAILURE.swap(0, Ordering::AcqRel);
    if f != 0 {
        let call = AP_FAILURE_CALL.load(Ordering::Acquire);
        result = result.and(Err(failure!(
            "another vCPU: EVTCHNOP {} returned {} (not 0 and not an errno)",
            call,
            Rc(f as i64)
        )));
    }
    result
}

fn ap_check(cmd: u64, rc: i64) {
    if !(rc == 0 || (-4095..0).contains(&rc)) {
        AP_FAILURE_CALL.store(cmd, Ordering::Release);
        AP_FAILURE.store(rc as u64, Ordering::Release);
    }
}

/// Racing on ports 1..=16: every vCPU binds, moves, sends, unmasks, closes and connects them at random.
fn race(id: u32) {
    let mut rng = Rng(SEED ^ u64::from(id + 1) << 32);
    let rounds = ROUNDS_SETTING.load(Ordering::Relaxed) * 10;
    for _ in 0..rounds {
        let port = 1 + rng.below(16) as u32;
        let (cmd, rc) = match rng.below(8) {
            0 => (evtchnop::BIND_IPI, bind_ipi(id).0),
            1 => (evtchnop::CLOSE, port_op(evtchnop::CLOSE, port)),
            2 => (evtchnop::SEND, port_op(evtchnop::SEND, port)),
            3 => (evtchnop::UNMASK, port_op(evtchnop::UNMASK, port)),
            4 => (evtchnop::BIND_VCPU, bind_vcpu(port, rng.below(2) as u32)),
            5 => {
                let mut s = EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() };
                (evtchnop::STATUS, evtchn_op(evtchnop::STATUS, &mut s))
            }
            6 => (evtchnop::ALLOC_UNBOUND, alloc_unbound().0),
            _ => (evtchnop::BIND_INTERDOMAIN, bind_interdomain(port).0),
        };
        ap_check(cmd, rc);
    }
}

/// The unbound port of the current bind-the-same-port round, and each vCPU's result (local port, or 0).
static SAME_PORT: AtomicU32 = AtomicU32::new(0);
static SAME_RESULT: [AtomicU32; xtf::MAX_VCPUS] = [const { AtomicU32::new(0) }; xtf::MAX_VCPUS];
/// vCPUs that reached the start line of the round.
static SAME_READY: AtomicU32 = AtomicU32::new(0);

fn bind_same(id: u32) {
    SAME_READY.fetch_add(1, Ordering::AcqRel);
    while SAME_READY.load(Ordering::Acquire) < VCPUS.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let (rc, local) = bind_interdomain(SAME_PORT.load(Ordering::Acquire));
    ap_check(evtchnop::BIND_INTERDOMAIN, rc);
    SAME_RESULT[id as usize].store(if rc == 0 { local } else { 0 }, Ordering::Release);
}

fn racing(vcpus: u32, rounds: u64) -> TestResult {
    xtf::println!("[{} ms] phase 2: {vcpus} vCPUs racing on ports 1..=16", xen_system_time_ns() / MS);
    on_all(vcpus, OP_RACE, || {
        race(0);
        Ok(())
    })?;
    // The races may have bound ports anywhere in the table.
    for port in 1..EVTCHN_2L_PORTS {
        let rc = port_op(evtchnop::CLOSE, port);
        ensure!(rc == 0 || rc == EINVAL, "CLOSE of port {port} after the race: returned {}", Rc(rc));
    }
    // Both vCPUs bind the same unbound port at once: one may win. (Many short rounds: the window is narrow.)
    let same_rounds = rounds * 5;
    let mut doubled = 0;
    for round in 0..same_rounds {
        let u = ok_port(format_args!("ALLOC_UNBOUND(self, self)"), alloc_unbound())?;
        SAME_PORT.store(u, Ordering::Release);
        SAME_READY.store(0, Ordering::Release);
        for r in &SAME_RESULT {
            r.store(0, Ordering::Release);
        }
        on_all(vcpus, OP_BIND_SAME, || {
            bind_same(0);
            Ok(())
        })?;
        let winners = SAME_RESULT.iter().filter(|r| r.load(Ordering::Acquire) != 0).count();
        ensure!(winners >= 1, "round {round}: nobody could bind unbound port {u}");
        if winners > 1 {
            doubled += 1;
        }
        // The round's ports only: the local ends, then the unbound one (a close may already have freed it).
        for r in &SAME_RESULT {
            let l = r.load(Ordering::Acquire);
            if l != 0 {
                let rc = port_op(evtchnop::CLOSE, l);
                ensure!(rc == 0 || rc == EINVAL, "CLOSE of local port {l}: returned {}", Rc(rc));
            }
        }
        let rc = port_op(evtchnop::CLOSE, u);
        ensure!(rc == 0 || rc == EINVAL, "CLOSE of port {u}: returned {}", Rc(rc));
    }
    if doubled > 0 {
        known_defect!(
            "7.6-bind-interdomain-race",
            "in {doubled} of {same_rounds} rounds both vCPUs bound the same unbound port (BIND_INTERDOMAIN)"
        );
    }
    Ok(())
}

/// Closes ports 1..64 (those the sequences use).
fn clean_up_ports() -> TestResult {
    for port in 1..evtchn::MAX_PORTS {
        let rc = port_op(evtchnop::CLOSE, port);
        ensure!(rc == 0 || rc == EINVAL, "CLOSE of port {port}: returned {}", Rc(rc));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Phase 3: add_to_physmap.

fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> i64 {
    let mut a = XenAddToPhysmap { domid: DOMID_SELF, size: 0, space, idx, gpfn };
    // SAFETY: every caller passes a GFN in the scratch region (or one past RAM, or with high bits set), whose
    // old contents nothing relies on; the frame mapped there is a grant frame or shared_info.
    unsafe { hypercall::op_raw(nr::MEMORY_OP, xenmem::ADD_TO_PHYSMAP, &mut a) }
}

fn physmap(vcpus: u32, s: Scratch) -> TestResult {
    xtf::println!("[{} ms] phase 3: guest page walks, add_to_physmap over scratch GFNs", xen_system_time_ns() / MS);
    let extraversion = |addr: u64| -> i64 {
        // SAFETY: XENVER_extraversion writes 16 bytes at `addr`, a scratch page (or nothing: the call faults).
        unsafe { hypercall::call(nr::XEN_VERSION, [xenver::EXTRAVERSION, addr, 0, 0, 0]) }
    };
    let efault = Errno::EFAULT.negated();
    let rc = extraversion(s.page(READ_ONLY));
    if rc != efault {
        known_defect!(
            "7.12-walker-read-only",
            "XENVER_extraversion into a read-only page returned {}, want -14",
            Rc(rc)
        );
    }
    let rc = extraversion(1 << 63 | s.page(0));
    if rc != efault {
        known_defect!(
            "7.12-walker-canonical",
            "XENVER_extraversion to a non-canonical address returned {}, want -14",
            Rc(rc)
        );
    }
    let gfn = |i: u64| s.page(i) >> 12;
    for idx in 0..4 {
        expect(
            format_args!("grant frame {idx}"),
            add_to_physmap(xenmem::SPACE_GRANT_TABLE, idx, gfn(PHYSMAP_FIRST + idx)),
            0,
        )?;
    }
    // The same frame again, elsewhere (Xen moves it).
    zero_or_errno(
        format_args!("grant frame 0 again"),
        add_to_physmap(xenmem::SPACE_GRANT_TABLE, 0, gfn(PHYSMAP_FIRST + 4)),
    )?;
    for idx in [u64::from(gnttab::MAX_FRAMES), 1 << 31, 1 << 31 | 1, u64::MAX] {
        let rc = add_to_physmap(xenmem::SPACE_GRANT_TABLE, idx, gfn(PHYSMAP_FIRST + 5));
        ensure!((-4095..0).contains(&rc), "grant frame {idx:#x}: returned {}, want an errno", Rc(rc));
    }
    expect(
        format_args!("shared_info idx 1"),
        add_to_physmap(xenmem::SPACE_SHARED_INFO, 1, gfn(PHYSMAP_FIRST + 6)),
        EINVAL,
    )?;
    // XENMAPSPACE_gmfn(_range) move a RAM page (a scratch one here) in Xen; dev_mmio and unknown spaces fail.
    for space in [2, 3, 5, 0xffff_ffff] {
        let rc = add_to_physmap(space, gfn(PHYSMAP_FIRST + 8), gfn(PHYSMAP_FIRST + 7));
        zero_or_errno(format_args!("space {space}"), rc)?;
    }
    // A GFN far beyond RAM: refused or accepted; and one that differs from a scratch page only in bit 36 must
    // not land on that page.
    zero_or_errno(format_args!("grant frame at gfn 1 << 40"), add_to_physmap(xenmem::SPACE_GRANT_TABLE, 8, 1 << 40))?;
    s.bytes(ALIAS).fill(0xa5);
    let rc = add_to_physmap(xenmem::SPACE_GRANT_TABLE, 9, gfn(ALIAS) | 1 << 36);
    zero_or_errno(format_args!("grant frame at gfn {:#x}", gfn(ALIAS) | 1 << 36), rc)?;
    if s.bytes(ALIAS).iter().any(|&b| b != 0xa5) {
        known_defect!(
            "7.3-gfn-alias",
            "a grant frame mapped at gfn {:#x} replaced gfn {:#x} (bits 48-51 of the address were dropped)",
            gfn(ALIAS) | 1 << 36,
            gfn(ALIAS)
        );
    }
    // shared_info onto a scratch GFN and back, with every vCPU's interrupts off (nothing may read the old frame
    // meanwhile: Xen unmaps it).
    xtf::xen::shared_info().map_err(|e| error!("shared_info: {e}"))?;
    let home_gfn = shared_info_gfn();
    IDLE_IRQ.store(false, Ordering::Release);
    on_all(vcpus, OP_QUIET, || Ok(()))?;
    arch::cli();
    let away = gfn(PHYSMAP_FIRST + 10);
    let rc = add_to_physmap(xenmem::SPACE_SHARED_INFO, 0, away);
    // The wallclock and vCPU 0's system time are there (the page is shared_info).
    let seen = s.read_u64(s.page(PHYSMAP_FIRST + 10) + SYSTEM_TIME_OFFSET);
    let back = add_to_physmap(xenmem::SPACE_SHARED_INFO, 0, home_gfn);
    IDLE_IRQ.store(true, Ordering::Release);
    expect(format_args!("shared_info to scratch gfn {away:#x}"), rc, 0)?;
    ensure!(seen != 0, "after mapping shared_info at gfn {away:#x}, vCPU 0's system time there is 0");
    expect(format_args!("shared_info back to gfn {home_gfn:#x}"), back, 0)?;
    let t0 = xen_system_time_ns();
    settle(MS);
    ensure!(xen_system_time_ns() > t0, "the pvclock stopped after shared_info came back");
    Ok(())
}

/// vCPU 0's `vcpu_info.time.system_time` in shared_info (and in a registered vcpu_info).
const SYSTEM_TIME_OFFSET: u64 = (core::mem::offset_of!(keel_abi::shared_info::VcpuInfo, time)
    + core::mem::offset_of!(keel_abi::shared_info::VcpuTimeInfo, system_time)) as u64;

/// The GFN the runtime mapped shared_info at.
fn shared_info_gfn() -> u64 {
    let si = xtf::xen::shared_info_if_mapped().expect("shared_info is mapped");
    (si.evtchn_pending(0) as *const AtomicU64 as u64 - EVTCHN_PENDING_OFFSET as u64) >> 12
}

// ---------------------------------------------------------------------------------------------------------------
// Phase 4: sched_op and timers.

fn poll(ports: &[u32], timeout: u64) -> i64 {
    hypercall::sched_poll(ports, timeout)
}

fn poll_raw(ports: u64, nr_ports: u32, timeout: u64) -> i64 {
    let mut p = SchedPoll { ports, nr_ports, pad: 0, timeout };
    // SAFETY: SCHEDOP_poll only blocks this vCPU until an event on one of the ports or the timeout.
    unsafe { hypercall::op_raw(nr::SCHED_OP, schedop::POLL, &mut p) }
}

/// The port the other vCPU raises while vCPU 0 polls, and when (system time) vCPU 0 started polling.
static POLL_RAISE: AtomicU32 = AtomicU32::new(0);
static POLL_STARTED: AtomicU64 = AtomicU64::new(0);

fn poll_send() {
    while POLL_STARTED.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    xtf::time::spin_until(POLL_STARTED.load(Ordering::Acquire) + 5 * MS);
    ap_check(evtchnop::SEND, port_op(evtchnop::SEND, POLL_RAISE.load(Ordering::Acquire)));
}

fn sched_and_timers(vcpus: u32, s: Scratch) -> TestResult {
    xtf::println!("[{} ms] phase 4: sched_op and timers", xen_system_time_ns() / MS);
    expect(format_args!("SCHEDOP_yield"), hypercall::sched_yield(), 0)?;
    let p = counted(ok_port(format_args!("BIND_IPI"), bind_ipi(0))?)?;
    evtchn::mask(p).map_err(|e| error!("mask: {e}"))?;
    let t = xen_system_time_ns();
    expect(format_args!("poll with a 3 ms timeout"), poll(&[p], t + 3 * MS), 0)?;
    let took = xen_system_time_ns() - t;
    ensure!(took < 1000 * MS, "a poll with a 3 ms timeout took {} ms", took / MS);
    expect(format_args!("poll with a past timeout"), poll(&[p], 1), 0)?;
    expect(format_args!("SEND (masked)"), port_op(evtchnop::SEND, p), 0)?;
    let t = xen_system_time_ns();
    expect(format_args!("poll of a pending port"), poll(&[p], t + 10_000 * MS), 0)?;
    ensure!(xen_system_time_ns() - t < 1000 * MS, "a poll of a pending port blocked");
    let many = [p; 129];
    expect(format_args!("poll of 129 ports"), poll(&many, t + MS), EINVAL)?;
    expect(format_args!("poll of an unmapped port array"), poll_raw(s.page(HOLE), 1, t + MS), Errno::EFAULT.negated())?;
    expect(format_args!("CLOSE {p}"), port_op(evtchnop::CLOSE, p), 0)?;

    // Two ports ≥ 64; the other vCPU raises the first 5 ms into the poll.
    let mut high = [0u32; 2];
    let mut bound = 0;
    while high[1] == 0 {
        let q = ok_port(format_args!("BIND_IPI #{bound}"), bind_ipi(0))?;
        bound += 1;
        if q >= 64 {
            let _ = evtchn::mask(q);
            high[usize::from(high[0] != 0)] = q;
        }
        ensure!(bound < 200, "200 IPI binds gave no two ports ≥ 64");
    }
    POLL_RAISE.store(high[0], Ordering::Release);
    POLL_STARTED.store(0, Ordering::Release);
    let mut took = 0;
    on_all(vcpus, OP_POLL_SEND, || {
        let t = xen_system_time_ns();
        POLL_STARTED.store(t, Ordering::Release);
        let rc = poll(&high, t + 2000 * MS);
        took = xen_system_time_ns() - t;
        expect(format_args!("poll of ports {high:?}"), rc, 0)
    })?;
    if took >= 1000 * MS {
        known_defect!(
            "7.12-poll-many-ports",
            "SCHEDOP_poll on ports {high:?}: raising port {} woke nobody (the 2 s timeout did, after {} ms)",
            high[0],
            took / MS
        );
    }
    let si = xtf::xen::shared_info().map_err(|e| error!("shared_info: {e}"))?;
    for q in high {
        si.evtchn_pending(q as usize / 64).fetch_and(!(1 << (q % 64)), Ordering::AcqRel);
    }
    clean_up_ports()?;
    for q in 64..=high[1] {
        let _ = port_op(evtchnop::CLOSE, q);
    }

    xtf::println!("[{} ms] phase 4: timers", xen_system_time_ns() / MS);
    // Timers, counted on VIRQ_TIMER.
    let tp = counted(ok_port(format_args!("BIND_VIRQ(VIRQ_TIMER)"), bind_virq(virq::TIMER, 0))?)?;
    evtchn::unmask(tp).map_err(|e| error!("unmask: {e}"))?;
    let fired = |n: u32, ms: u64| wait_for(ms * MS, || events(tp) >= n);
    // Blocked until the timer's event.
    arch::cli();
    hypercall::set_singleshot_timer(0, xen_system_time_ns() + 2 * MS, 0)
        .map_err(|e| failure!("single-shot in 2 ms: {e}"))?;
    // SAFETY: SCHEDOP_block only sleeps until an event is pending (the timer's, in 2 ms).
    let rc = unsafe { hypercall::call(nr::SCHED_OP, [schedop::BLOCK, 0, 0, 0, 0]) };
    expect(format_args!("SCHEDOP_block"), rc, 0)?;
    ensure!(fired(1, 1000), "no VIRQ_TIMER after SCHEDOP_block woke");
    let single = |deadline: u64, flags: u32, vcpu: u32| -> i64 {
        let mut t = VcpuSetSingleshotTimer { timeout_abs_ns: deadline, flags, pad: 0 };
        // SAFETY: a single-shot timer only raises VIRQ_TIMER.
        unsafe { hypercall::call(nr::VCPU_OP, [vcpuop::SET_SINGLESHOT_TIMER, vcpu.into(), &raw mut t as u64, 0, 0]) }
    };
    let n = events(tp);
    expect(format_args!("single-shot in the past"), single(xen_system_time_ns().saturating_sub(MS), 0, 0), 0)?;
    ensure!(fired(n + 1, 1000), "a single-shot timer in the past did not fire");
    // Xen 4.17 ignores VCPU_SSHOTTMR_future (fires at once); older Xen said -ETIME.
    let rc = single(xen_system_time_ns().saturating_sub(MS), keel_abi::hypercall::vcpuop::SSHOTTMR_FUTURE, 0);
    ensure!(rc == 0 || rc == Errno::ETIME.negated(), "single-shot in the past, FUTURE flag: {}", Rc(rc));
    settle(2 * MS);
    let n = events(tp);
    // i64::MAX: Xen's timers are signed, u64::MAX would be in the past there.
    expect(format_args!("single-shot at the end of time"), single(i64::MAX as u64, 0, 0), 0)?;
    settle(20 * MS);
    ensure!(events(tp) == n, "a single-shot timer at i64::MAX fired");
    // SAFETY: stopping the single-shot timer only cancels VIRQ_TIMER events.
    let rc = unsafe { hypercall::call(nr::VCPU_OP, [vcpuop::STOP_SINGLESHOT_TIMER, 0, 0, 0, 0]) };
    expect(format_args!("stop single-shot"), rc, 0)?;
    if vcpus > 1 {
        expect(format_args!("single-shot for vCPU 1 (not us)"), single(xen_system_time_ns() + MS, 0, 1), EINVAL)?;
    }
    let n = events(tp);
    hypercall::set_timer_op(xen_system_time_ns() + MS).map_err(|e| failure!("set_timer_op(+1 ms): {e}"))?;
    ensure!(fired(n + 1, 1000), "set_timer_op(now + 1 ms) did not fire");
    hypercall::set_timer_op(u64::MAX).map_err(|e| failure!("set_timer_op(u64::MAX): {e}"))?;
    let n = events(tp);
    settle(20 * MS);
    ensure!(events(tp) == n, "set_timer_op(u64::MAX) fired");
    hypercall::set_timer_op(0).map_err(|e| failure!("set_timer_op(0): {e}"))?;

    xtf::println!("[{} ms] phase 4: periodic timers", xen_system_time_ns() / MS);
    let periodic = |period_ns: u64| -> i64 {
        let mut t = VcpuSetPeriodicTimer { period_ns };
        // SAFETY: a periodic timer only raises VIRQ_TIMER.
        unsafe { hypercall::call(nr::VCPU_OP, [vcpuop::SET_PERIODIC_TIMER, 0, &raw mut t as u64, 0, 0]) }
    };
    expect(format_args!("periodic 0 ns"), periodic(0), EINVAL)?;
    expect(format_args!("periodic 999999 ns"), periodic(999_999), EINVAL)?;
    let n = events(tp);
    let rc = periodic(u64::MAX);
    if rc != EINVAL {
        known_defect!(
            "7.8-periodic-limit",
            "periodic timer of u64::MAX ns: returned {}, Xen says -22 (EINVAL)",
            Rc(rc)
        );
    }
    settle(20 * MS);
    let extra = events(tp) - n;
    if extra > 1 {
        known_defect!("7.8-periodic-wrap", "a periodic timer of u64::MAX ns fired {extra} times in 20 ms");
    }
    xtf::time::stop_periodic_timer(0).map_err(|e| failure!("stop periodic: {e}"))?;
    settle(MS);
    let n = events(tp);
    expect(format_args!("periodic 2^61 ns"), periodic(1 << 61), 0)?;
    settle(20 * MS);
    ensure!(events(tp) - n <= 1, "a periodic timer of 2^61 ns fired {} times in 20 ms", events(tp) - n);
    let n = events(tp);
    expect(format_args!("periodic 1 ms"), periodic(MS), 0)?;
    ensure!(fired(n + 3, 1000), "a 1 ms periodic timer fired {} times in 1 s", events(tp) - n);
    xtf::time::stop_periodic_timer(0).map_err(|e| failure!("stop periodic: {e}"))?;
    settle(2 * MS);
    let n = events(tp);
    settle(10 * MS);
    ensure!(events(tp) == n, "the periodic timer fired after it was stopped");
    expect(format_args!("CLOSE VIRQ_TIMER"), port_op(evtchnop::CLOSE, tp), 0)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Phase 5: MSR, I/O and ICR exits.

/// An MSR index no CPU defines: outside the architectural, hypervisor (0x4000xxxx) and AMD (0xc001xxxx) ranges.
fn undefined_msr(rng: &mut Rng) -> u32 {
    let r = rng.next();
    (match r % 3 {
        0 => 0x0001_0000 + (r >> 8) % (0x4000_0000 - 0x0001_0000),
        1 => 0x4001_0000 + (r >> 8) % (0xc000_0000 - 0x4001_0000),
        _ => 0xc002_0000 + (r >> 8) % (0x1_0000_0000 - 0xc002_0000),
    }) as u32
}

const APIC_BASE: u32 = 0x1b;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_ICR: u32 = 0x830;

/// Vectors that arrived outside the callback vector, per vector (vCPU 0's view).
static STRAYS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];

fn count_stray(vector: u8) -> bool {
    STRAYS[vector as usize].fetch_add(1, Ordering::AcqRel);
    // SAFETY: an x2APIC EOI write only retires the interrupt in service.
    let _ = unsafe { exinfo::wrmsr(X2APIC_EOI, 0) };
    true
}

fn wrmsr(msr: u32, value: u64) -> Result<(), Fault> {
    // SAFETY: the callers write only APIC_BASE (to switch on x2APIC mode), the x2APIC SVR/ICR/EOI (interrupts this test expects and counts), MTRRs the
    // guest does not use (its memory types come from PAT), or MSRs no CPU defines (#GP).
    unsafe { exinfo::wrmsr(msr, value) }
}

fn icr_delivery() -> TestResult {
    xtf::traps::set_stray_handler(Some(count_stray));
    // x2APIC mode (Keel starts its vCPUs in it; Xen's start in xAPIC mode), then software-enabled.
    let base = exinfo::rdmsr(APIC_BASE).map_err(|f| failure!("rdmsr APIC_BASE: {f}"))?;
    wrmsr(APIC_BASE, base | 3 << 10).map_err(|f| failure!("wrmsr APIC_BASE (x2APIC on): {f}"))?;
    wrmsr(X2APIC_SVR, 0x1ff).map_err(|f| failure!("enable the x2APIC (SVR): {f}"))?;
    let arrived = |v: u8| STRAYS[v as usize].load(Ordering::Acquire);
    // A self-IPI (fixed, physical destination = our APIC id 0).
    wrmsr(X2APIC_ICR, 0x40).map_err(|f| failure!("ICR write: {f}"))?;
    ensure!(wait_for(100 * MS, || arrived(0x40) == 1), "a fixed self-IPI (vector 0x40) did not arrive");
    // Vectors 0-15 are illegal: the APIC reports a send error and delivers nothing. (Vector 5 has no error code,
    // so a wrongly delivered one does not upset the IDT stub.)
    wrmsr(X2APIC_ICR, 0x05).map_err(|f| failure!("ICR write: {f}"))?;
    settle(2 * MS);
    if arrived(0x05) != 0 {
        known_defect!("7.12-icr-low-vector", "an ICR write with vector 5 delivered vector 5");
    }
    // x2APIC broadcast (destination 0xffffffff) reaches us too.
    wrmsr(X2APIC_ICR, 0xffff_ffff_0000_0041).map_err(|f| failure!("ICR write: {f}"))?;
    if !wait_for(20 * MS, || arrived(0x41) == 1) {
        known_defect!("7.12-x2apic-broadcast", "an IPI to x2APIC destination 0xffffffff did not reach vCPU 0");
    }
    // Logical destination: cluster 0, bit 0 = vCPU 0 (LDR 1).
    wrmsr(X2APIC_ICR, 0x0000_0001_0000_0842).map_err(|f| failure!("ICR write: {f}"))?;
    if !wait_for(20 * MS, || arrived(0x42) == 1) {
        known_defect!("7.12-x2apic-logical", "an IPI to logical x2APIC destination 1 (vCPU 0) did not reach vCPU 0");
    }
    wrmsr(X2APIC_SVR, 0xff).map_err(|f| failure!("disable the x2APIC (SVR): {f}"))?;
    settle(MS);
    xtf::traps::set_stray_handler(None);
    Ok(())
}

fn exits(rng: &mut Rng, s: Scratch, vcpus: u32, rounds: u64) -> TestResult {
    xtf::println!("[{} ms] phase 5: MSR, I/O and ICR exits", xen_system_time_ns() / MS);
    icr_delivery()?;
    for _ in 0..rounds * 5 {
        let msr = undefined_msr(rng);
        match exinfo::rdmsr(msr) {
            Err(f) if f.vector == Fault::GP && f.error_code == 0 => {}
            other => return Err(failure!("rdmsr {msr:#x}: {other:x?}, want #GP(0)")),
        }
        let value = rng.next();
        match wrmsr(msr, value) {
            Err(f) if f.vector == Fault::GP && f.error_code == 0 => {}
            other => return Err(failure!("wrmsr {msr:#x} <- {value:#x}: {other:x?}, want #GP(0)")),
        }
    }
    // Ports: nothing is there (reads give all-ones); the ones that could reset or print are left alone.
    const KEPT_OUT: [(u16, u16); 9] = [
        (0x20, 0x21),
        (0x40, 0x43),
        (0x60, 0x64),
        (0x70, 0x71),
        (0x92, 0x92),
        (0xa0, 0xa1),
        (0xe9, 0xe9),
        (0xf4, 0xf4),
        (0xcf8, 0xcff),
    ];
    let mut done = 0;
    while done < rounds * 5 {
        let port = rng.below(0x1_0000) as u16;
        if KEPT_OUT.iter().any(|&(a, b)| (a..=b).contains(&port)) || (0x3f8..=0x3ff).contains(&port) {
            continue;
        }
        done += 1;
        let size = [1u8, 2, 4][rng.below(3) as usize];
        let all_ones = if size == 4 { u32::MAX } else { (1 << (8 * u32::from(size))) - 1 };
        match exinfo::inp(port, size) {
            Ok(v) if v == all_ones => {}
            other => return Err(failure!("in{size} from port {port:#x}: {other:x?}, want {all_ones:#x}")),
        }
        // SAFETY: no device behind the port (the ones that could reset the machine or print are kept out).
        unsafe { exinfo::outp(port, size, rng.next() as u32) }
            .map_err(|f| failure!("out{size} to port {port:#x}: {f}"))?;
        // REP INSB into a buffer: all-ones.
        let buf = s.page(rng.below(BUF_PAGES - 1));
        let count = 1 + rng.below(64);
        // SAFETY: writes `count` bytes at `buf`, a scratch buffer page; RDI/RCX are clobbered as declared.
        unsafe { asm!("rep insb", in("dx") port, inout("rdi") buf => _, inout("rcx") count => _, options(nostack)) };
        let got = &s.bytes((buf - s.base) / PAGE)[..count as usize];
        ensure!(
            got.iter().all(|&b| b == 0xff),
            "rep insb from port {port:#x}: {:x?}, want all 0xff",
            &got[..count.min(8) as usize]
        );
    }
    // Random ICR writes with the APIC disabled: nothing is delivered; NMI, INIT and SIPI go only to APIC ids the
    // domain does not have.
    for _ in 0..rounds * 5 {
        let vector = rng.below(256);
        let mode = [0u64, 1, 4, 5, 6][rng.below(5) as usize];
        let shorthand = if mode == 0 || mode == 1 { rng.below(4) } else { 0 };
        let dest = if shorthand == 0 { u64::from(vcpus) + rng.below(0xffff_0000) } else { 0 };
        let logical = rng.below(2) << 11;
        let level = (rng.below(2) << 14) | (rng.below(2) << 15);
        let icr = dest << 32 | shorthand << 18 | level | logical | mode << 8 | vector;
        let icr = if mode >= 4 { icr & !(1 << 11) } else { icr };
        wrmsr(X2APIC_ICR, icr).map_err(|f| failure!("ICR write {icr:#x}: {f}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Phase 6: runstate areas and vcpu_info.

fn register_runstate(vcpu: u32, addr: u64) -> i64 {
    let mut a = addr;
    // SAFETY: the area is in the scratch region (or 0, or unmapped): whatever the hypervisor writes there is ours
    // to lose.
    unsafe {
        hypercall::call(nr::VCPU_OP, [vcpuop::REGISTER_RUNSTATE_MEMORY_AREA, vcpu.into(), &raw mut a as u64, 0, 0])
    }
}

/// Where vCPU 1 registers its vcpu_info, and what it got (+1, so that 0 means "not yet").
static VCPU_INFO_AT: AtomicU64 = AtomicU64::new(0);
static VCPU_INFO_RC: AtomicI64 = AtomicI64::new(0);

fn register_own_vcpu_info() {
    let at = VCPU_INFO_AT.load(Ordering::Acquire);
    let mut r = VcpuRegisterVcpuInfo { mfn: at >> 12, offset: (at & 0xfff) as u32, rsvd: 0 };
    // SAFETY: the page is in the scratch region; from now on this vCPU's upcall flags and time live there and it
    // takes no more events (it idles with interrupts off: IDLE_IRQ is false).
    let rc = unsafe {
        hypercall::call(nr::VCPU_OP, [vcpuop::REGISTER_VCPU_INFO, smp::vcpu_id().into(), &raw mut r as u64, 0, 0])
    };
    VCPU_INFO_RC.store(rc, Ordering::Release);
}

fn vcpu_areas(vcpus: u32, s: Scratch) -> TestResult {
    xtf::println!("[{} ms] phase 6: runstate areas and vcpu_info", xen_system_time_ns() / MS);
    let size = size_of::<VcpuRunstateInfo>() as u64;
    // Straddling two pages.
    let area = s.page(RUNSTATE + 1) - size / 2;
    s.bytes(RUNSTATE).fill(0xee);
    s.bytes(RUNSTATE + 1).fill(0xee);
    expect(format_args!("runstate area across a page edge"), register_runstate(0, area), 0)?;
    settle(2 * MS);
    // SAFETY: `area` is in scratch pages RUNSTATE..=RUNSTATE+1, mapped and ours; read unaligned as one copy.
    let r = unsafe { core::ptr::read_volatile(area as *const VcpuRunstateInfo) };
    ensure!(
        (0..=3).contains(&r.state) && r.state_entry_time != 0xeeee_eeee_eeee_eeee && r.time[0] != 0xeeee_eeee_eeee_eeee,
        "the runstate area across the page edge holds {r:x?}"
    );
    // Replaced, then unregistered: the old one stops changing.
    let other = s.page(RUNSTATE + 2);
    expect(format_args!("runstate area replaced"), register_runstate(0, other), 0)?;
    expect(format_args!("runstate area unregistered"), register_runstate(0, 0), 0)?;
    zero_or_errno(format_args!("runstate area in the page-table hole"), register_runstate(0, s.page(HOLE)))?;
    zero_or_errno(format_args!("runstate area past RAM"), register_runstate(0, s.ram_end - size / 2))?;
    expect(format_args!("runstate area unregistered"), register_runstate(0, 0), 0)?;
    if vcpus > 1 {
        zero_or_errno(format_args!("vCPU 1's runstate area from vCPU 0"), register_runstate(1, s.page(RUNSTATE + 3)))?;
        expect(format_args!("vCPU 1's runstate area unregistered"), register_runstate(1, 0), 0)?;
    }
    let mut r = VcpuRegisterVcpuInfo { mfn: 0, offset: 4096 - 32, rsvd: 0 };
    // SAFETY: an offset past the page's last vcpu_info slot is refused before anything is mapped.
    let rc = unsafe { hypercall::call(nr::VCPU_OP, [vcpuop::REGISTER_VCPU_INFO, 0, &raw mut r as u64, 0, 0]) };
    ensure!((-4095..0).contains(&rc), "REGISTER_VCPU_INFO at offset 4064: {}, want an errno", Rc(rc));
    if vcpus < 2 {
        return Ok(());
    }
    // vCPU 1 moves its vcpu_info into the scratch region, then tries again.
    IDLE_IRQ.store(false, Ordering::Release);
    let at = s.page(VCPU_INFO) + 64;
    s.bytes(VCPU_INFO).fill(0);
    VCPU_INFO_AT.store(at, Ordering::Release);
    on_all(vcpus, OP_VCPU_INFO, || Ok(()))?;
    expect(format_args!("vCPU 1 registers its vcpu_info"), VCPU_INFO_RC.load(Ordering::Acquire), 0)?;
    let time_at = at + SYSTEM_TIME_OFFSET;
    ensure!(s.read_u64(time_at) != 0, "vCPU 1's new vcpu_info has no system time");
    on_all(vcpus, OP_VCPU_INFO_AGAIN, || Ok(()))?;
    expect(format_args!("vCPU 1 registers its vcpu_info again"), VCPU_INFO_RC.load(Ordering::Acquire), EINVAL)?;
    // Events for vCPU 1 now mark the new vcpu_info.
    let q = ok_port(format_args!("BIND_IPI vcpu 1"), bind_ipi(1))?;
    let si = xtf::xen::shared_info().map_err(|e| error!("shared_info: {e}"))?;
    // Whatever an earlier user of the port number left: not pending, not masked.
    si.evtchn_pending(q as usize / 64).fetch_and(!(1 << (q % 64)), Ordering::AcqRel);
    si.evtchn_mask(q as usize / 64).fetch_and(!(1 << (q % 64)), Ordering::AcqRel);
    expect(format_args!("SEND {q}"), port_op(evtchnop::SEND, q), 0)?;
    settle(MS);
    ensure!(s.bytes(VCPU_INFO)[64] == 1, "an event for vCPU 1 did not set upcall_pending in its new vcpu_info");
    // A grant frame over the registered page: the RAM behind it must not be freed while the hypervisor still
    // writes vCPU 1's flags and time into it. A second grant frame is where a freed frame would come back.
    let rc = add_to_physmap(xenmem::SPACE_GRANT_TABLE, 10, s.page(VCPU_INFO) >> 12);
    zero_or_errno(format_args!("grant frame over vCPU 1's vcpu_info page"), rc)?;
    if rc == 0 {
        let rc2 = add_to_physmap(xenmem::SPACE_GRANT_TABLE, 11, s.page(UAF_GRANT) >> 12);
        zero_or_errno(format_args!("another grant frame"), rc2)?;
        // Zeroes the page, raises an event for vCPU 1 (its pending bit cleared first, so that the flags are
        // written again), and says whether the page stayed zero.
        let stays_zero = |page: u64| -> bool {
            let bytes = s.bytes(page);
            bytes.fill(0);
            si.evtchn_pending(q as usize / 64).fetch_and(!(1 << (q % 64)), Ordering::AcqRel);
            let _ = port_op(evtchnop::SEND, q);
            settle(2 * MS);
            bytes.iter().all(|&b| b == 0)
        };
        if !(stays_zero(VCPU_INFO) && (rc2 != 0 || stays_zero(UAF_GRANT))) {
            known_defect!(
                "7.1-vcpu-info-use-after-free",
                "after a grant frame replaced vCPU 1's registered vcpu_info page, an event for vCPU 1 wrote into a \
                 grant frame"
            );
        }
    }
    let _ = port_op(evtchnop::CLOSE, q);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------

fn test_main() -> TestResult {
    let insn = hypercall::insn();
    let calls = xtf::rt::arg_u64("calls", CALLS);
    let rounds = xtf::rt::arg_u64("rounds", ROUNDS).max(1);
    ROUNDS_SETTING.store(rounds, Ordering::Relaxed);
    VERSION.store(hypercall::xen_version(), Ordering::Relaxed);
    let vcpus = smp::vcpu_count().map_err(|e| error!("counting vCPUs: {e}"))?;
    ensure!(vcpus >= 2, "this test wants 2 vCPUs (vcpus=2), the domain has {vcpus}");
    VCPUS.store(vcpus, Ordering::Release);
    let s = setup_scratch()?;
    evtchn::enable_upcalls().map_err(|e| error!("callback vector: {e}"))?;
    let domid = own_domid()?;
    xtf::println!("domain {domid}, {vcpus} vCPUs, scratch {:#x}..{:#x}, {rounds} rounds", s.base, s.ram_end);
    smp::start_aps(ap_worker);
    let mut rng = Rng(SEED);
    random_phase(insn, &mut rng, s, vcpus, domid, calls)?;
    clean_up(vcpus)?;
    evtchn_sequences(vcpus, rounds)?;
    racing(vcpus, rounds)?;
    physmap(vcpus, s)?;
    sched_and_timers(vcpus, s)?;
    exits(&mut rng, s, vcpus, rounds)?;
    vcpu_areas(vcpus, s)?;
    on_all(vcpus, OP_EXIT, || Ok(()))?;
    Ok(())
}

/// Our domid: the remote end of an unbound port allocated for DOMID_SELF.
fn own_domid() -> Result<u16, Outcome> {
    let port = ok_port(format_args!("ALLOC_UNBOUND(self, self)"), alloc_unbound())?;
    let s = status(port)?;
    expect(format_args!("CLOSE {port}"), port_op(evtchnop::CLOSE, port), 0)?;
    Ok(s.u[0] as u16)
}
