//! Start of day, the result report and shutdown.

use crate::hypercall::{self, Insn};
use crate::{arch, smp, traps, xen, Outcome, TestResult};
use core::sync::atomic::{AtomicU32, Ordering};
use keel_abi::hypercall::ShutdownReason;
use keel_abi::start_info::{HvmStartInfo, HVM_START_MAGIC};

#[cfg(target_os = "none")]
core::arch::global_asm!(
    include_str!("entry.S"),
    xen_elfnote_phys32_entry = const keel_abi::elfnote::PHYS32_ENTRY,
    xen_cpuid_base = const keel_abi::cpuid::BASE,
    xen_cpuid_hvm = const keel_abi::cpuid::BASE + 4,
    xen_sig_ebx = const keel_abi::cpuid::SIGNATURE[0],
    xen_sig_ecx = const keel_abi::cpuid::SIGNATURE[1],
    xen_sig_edx = const keel_abi::cpuid::SIGNATURE[2],
    vcpu_id_present = const keel_abi::cpuid::hvm_flags::VCPU_ID_PRESENT,
    max_vcpus = const crate::MAX_VCPUS,
    stack_size = const crate::STACK_SIZE,
    stacks = sym smp::STACKS,
    rust_start = sym rust_start,
    trap_dispatch = sym traps::dispatch,
    options(att_syntax)
);

/// Guest-physical address of `hvm_start_info` (EBX at entry).
static START_INFO: AtomicU32 = AtomicU32::new(0);

/// Every vCPU arrives here from src/entry.S, in long mode on its own stack.
#[cfg(target_os = "none")]
extern "C" fn rust_start(vcpu: u32, start_info: u32) -> ! {
    extern "C" {
        /// Defined by [`crate::guest!`] in the test binary.
        fn xtf_guest_main() -> !;
    }
    if vcpu != 0 {
        smp::ap_main(vcpu);
    }
    traps::init();
    traps::load();
    START_INFO.store(start_info, Ordering::Relaxed);
    // Settle these before anyone else can ask.
    xen::under_xen();
    hypercall::insn();
    smp::RUNTIME_READY.store(true, Ordering::Release);
    // SAFETY: `guest!` defines it with this signature; every test binary uses `guest!`.
    unsafe { xtf_guest_main() }
}

/// A copy of `hvm_start_info`, if EBX pointed at one.
pub fn start_info() -> Option<HvmStartInfo> {
    let addr = START_INFO.load(Ordering::Relaxed) as usize;
    if addr == 0 {
        return None;
    }
    // SAFETY: the loader put the structure at this guest-physical (= identity-mapped) address; a bad address
    // gives junk, which the magic check rejects.
    let si = unsafe { core::ptr::read_volatile(addr as *const HvmStartInfo) };
    (si.magic == HVM_START_MAGIC).then_some(si)
}

/// The guest's command line (`guest.<key>=<value>` in its module string becomes `<key>=<value>` here), or "".
/// The runtime itself reads `start_ms=` (see [`run`]); the rest is the test's.
pub fn cmdline() -> &'static str {
    let Some(si) = start_info() else { return "" };
    if si.cmdline_paddr == 0 || si.cmdline_paddr >= 1 << 32 {
        return "";
    }
    let base = si.cmdline_paddr as usize as *const u8;
    let mut len = 0;
    // SAFETY: the loader wrote a NUL-terminated string at this identity-mapped address, below 4 GiB (checked);
    // the scan stops at 4 KiB whatever it finds.
    while len < 4096 && unsafe { core::ptr::read_volatile(base.add(len)) } != 0 {
        len += 1;
    }
    // SAFETY: `len` bytes from `base` were just read; they are never written again.
    let bytes = unsafe { core::slice::from_raw_parts(base, len) };
    core::str::from_utf8(bytes).unwrap_or("")
}

/// `<key>=<number>` from the guest's command line, or `default` when it is absent or not a number.
pub fn arg_u64(key: &str, default: u64) -> u64 {
    cmdline()
        .split_ascii_whitespace()
        .filter_map(|w| w.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

/// The body of every guest (called by [`crate::guest!`] on vCPU 0): banner, Xen check, the test, the report.
pub fn run(name: &str, main: fn() -> TestResult) -> ! {
    crate::println!("--- Keel XTF guest: {name} ---");
    let Some(x) = xen::detect() else {
        report(Err(crate::skip!("not running under Xen")));
    };
    crate::println!(
        "Environment: PVH 64-bit, Xen {}.{} (max leaf {:#x}), {:?} CPU, hypercalls by {}, start_info {}",
        x.version >> 16,
        x.version & 0xffff,
        x.max_leaf,
        arch::vendor(),
        match hypercall::insn() {
            Insn::Vmcall => "VMCALL",
            Insn::Vmmcall => "VMMCALL",
        },
        if start_info().is_some() { "ok" } else { "missing" }
    );
    // `start_ms=<ms>`: sleep until that Xen system time first (Bochs runs every guest at once; the heavy ones wait
    // until the timing-sensitive ones are done).
    let start_ns = arg_u64("start_ms", 0).saturating_mul(crate::time::MS);
    if start_ns != 0 {
        crate::println!("waiting until system time {} ms (start_ms)", start_ns / crate::time::MS);
        while crate::time::xen_system_time_ns() < start_ns {
            hypercall::sched_poll(&[0], start_ns);
        }
    }
    report(main())
}

/// The value written to isa-debug-exit (port 0xf4) when there is no Xen to shut down through: 0 SUCCESS,
/// 1 SKIP, 2 ERROR, 3 FAILURE, 4 crash (QEMU then exits with `value << 1 | 1`).
pub fn debug_exit_value(result: &TestResult) -> u32 {
    match result {
        Ok(()) => 0,
        Err(Outcome::Skip(_)) => 1,
        Err(Outcome::Error(_)) => 2,
        Err(Outcome::Failure(_)) => 3,
    }
}

/// Known-defect checks that did not hold so far.
static KNOWN_DEFECTS: AtomicU32 = AtomicU32::new(0);

/// Records a check that failed because of a known hypervisor defect (one that is being fixed elsewhere): prints
/// `Known defect [<tag>]: <what>` and lets the test go on. The host side (keel_tests::xtf::KNOWN_DEFECTS) decides
/// which tags may still appear; a tag it does not list fails the boot test. Use [`crate::known_defect!`].
pub fn known_defect(tag: &str, what: core::fmt::Arguments) {
    KNOWN_DEFECTS.fetch_add(1, Ordering::Relaxed);
    crate::println!("Known defect [{tag}]: {what}");
}

/// How many known-defect checks did not hold.
pub fn known_defects() -> u32 {
    KNOWN_DEFECTS.load(Ordering::Relaxed)
}

/// Prints the detail line (if any) and `Test result: <WORD>`, then shuts the domain down (poweroff).
pub fn report(result: TestResult) -> ! {
    let known = known_defects();
    if known != 0 {
        crate::println!("{known} check(s) hit known defects (the \"Known defect [...]\" lines)");
    }
    match &result {
        Ok(()) => crate::println!("Test result: SUCCESS"),
        Err(o) => {
            let label = match o {
                Outcome::Skip(_) => "Skip",
                Outcome::Error(_) => "Error",
                Outcome::Failure(_) => "Failure",
            };
            crate::println!("{label}: {}", o.msg());
            crate::println!("Test result: {}", o.word());
        }
    }
    shutdown(ShutdownReason::Poweroff, debug_exit_value(&result))
}

/// Ends the domain: `SCHEDOP_shutdown(reason)` under Xen; otherwise (QEMU without a hypervisor) writes
/// `exit_value` to isa-debug-exit. Halts if neither takes effect.
pub fn shutdown(reason: ShutdownReason, exit_value: u32) -> ! {
    if xen::under_xen() {
        let rc = hypercall::sched_shutdown(reason);
        crate::println!("SCHEDOP_shutdown({}) returned {rc}", reason.name());
    } else {
        // SAFETY: port 0xf4 is QEMU's isa-debug-exit in the test set-up (nothing, otherwise).
        unsafe { arch::outl(0xf4, exit_value) };
    }
    arch::halt_forever()
}

/// Panics print `PANIC: …` and crash the domain (XTF's way; Keel reports it as CRASHED).
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    static PANICKING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !PANICKING.swap(true, Ordering::AcqRel) {
        crate::println!("PANIC on vCPU {}: {info}", smp::vcpu_id());
    }
    shutdown(ShutdownReason::Crash, 4)
}
