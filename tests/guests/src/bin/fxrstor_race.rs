//! Not a Keel test: the reproducer of the QEMU TCG defect in docs/testing.md ("A QEMU defect"), run by
//! `cargo xtask qemu-defect`. Every vCPU loops over FXRSTOR (which makes QEMU rewrite CPU 0's `hflags2` from the
//! running CPU's thread) and CPUID (an exit, so a world switch on whichever CPU runs the vCPU) for `spin_ms`
//! (default 20,000) of Xen system time, then vCPU 0 prints the loop counts. `fxrstor=0` leaves FXRSTOR out, as the
//! control. On a correct CPU or emulator it always succeeds.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use xtf::arch::cpuid;
use xtf::time::{xen_system_time_ns, SECOND};
use xtf::{error, smp};

xtf::guest!(test_main);

/// An FXSAVE area (512 bytes, 16-byte aligned).
#[repr(C, align(16))]
struct FxArea([u8; 512]);

/// One FXSAVE area per vCPU, each used by its own vCPU only.
struct Areas([core::cell::UnsafeCell<FxArea>; xtf::MAX_VCPUS]);
// SAFETY: vCPU n touches only element n.
unsafe impl Sync for Areas {}

static AREAS: Areas = Areas([const { core::cell::UnsafeCell::new(FxArea([0; 512])) }; xtf::MAX_VCPUS]);
static WITH_FXRSTOR: AtomicBool = AtomicBool::new(true);
static DEADLINE: AtomicU64 = AtomicU64::new(0);
static LOOPS: [AtomicU64; xtf::MAX_VCPUS] = [const { AtomicU64::new(0) }; xtf::MAX_VCPUS];

fn race(vcpu: u32) {
    let area = AREAS.0[vcpu as usize].get();
    // SAFETY: the area is this vCPU's own, 16-byte aligned and 512 bytes long; FXSAVE/FXRSTOR of the vCPU's own
    // state change nothing else.
    unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) area, options(nostack)) };
    let with_fxrstor = WITH_FXRSTOR.load(Ordering::Relaxed);
    let deadline = DEADLINE.load(Ordering::Acquire);
    let mut n: u64 = 0;
    while xen_system_time_ns() < deadline {
        for _ in 0..64 {
            if with_fxrstor {
                // SAFETY: as above; the area holds the state just saved.
                unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) area, options(nostack)) };
            }
            core::hint::black_box(cpuid(0, 0));
            n += 1;
        }
    }
    LOOPS[vcpu as usize].store(n, Ordering::Release);
}

fn test_main() -> xtf::TestResult {
    let vcpus = smp::vcpu_count().map_err(|e| error!("counting vCPUs with VCPUOP_get_runstate_info: {e}"))?;
    let spin_ms = xtf::rt::arg_u64("spin_ms", 20_000);
    WITH_FXRSTOR.store(xtf::rt::arg_u64("fxrstor", 1) != 0, Ordering::Relaxed);
    DEADLINE.store(xen_system_time_ns() + spin_ms * 1_000_000, Ordering::Release);
    smp::start_aps(race);
    race(0);
    if let Err(done) = smp::wait_aps(vcpus - 1, 30 * SECOND) {
        return Err(error!("only {done} of {} other vCPUs finished", vcpus - 1));
    }
    for v in 0..vcpus {
        xtf::println!("vCPU {v}: {} loops", LOOPS[v as usize].load(Ordering::Acquire));
    }
    Ok(())
}
