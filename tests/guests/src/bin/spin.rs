//! Scheduler load: every vCPU spins for the same 4 s (`spin_ms=` on the guest's command line) of Xen system time, counting loop iterations; vCPU 0 then
//! prints the totals. Keel logs the domain's CPU time when it ends, which the weight and cap tests compare.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU64, Ordering};
use xtf::time::{xen_system_time_ns, SECOND};
use xtf::{error, smp};

xtf::guest!(test_main);

const SPIN_NS: u64 = 4 * SECOND;
/// Iterations between clock reads.
const BATCH: u64 = 1024;

/// The common end of the spin, in system time.
static DEADLINE: AtomicU64 = AtomicU64::new(0);
static ITERATIONS: [AtomicU64; xtf::MAX_VCPUS] = [const { AtomicU64::new(0) }; xtf::MAX_VCPUS];

fn spin(vcpu: u32) {
    let deadline = DEADLINE.load(Ordering::Acquire);
    let mut n: u64 = 0;
    while xen_system_time_ns() < deadline {
        for _ in 0..BATCH {
            n = core::hint::black_box(n + 1);
        }
    }
    ITERATIONS[vcpu as usize].store(n, Ordering::Release);
}

fn test_main() -> xtf::TestResult {
    let vcpus = smp::vcpu_count().map_err(|e| error!("counting vCPUs with VCPUOP_get_runstate_info: {e}"))?;
    let spin_ns = xtf::rt::arg_u64("spin_ms", SPIN_NS / 1_000_000) * 1_000_000;
    let start = xen_system_time_ns();
    DEADLINE.store(start + spin_ns, Ordering::Release);
    xtf::println!("spinning on {vcpus} vCPUs for {} ms", spin_ns / 1_000_000);
    smp::start_aps(spin);
    spin(0);
    if let Err(done) = smp::wait_aps(vcpus - 1, 10 * SECOND) {
        return Err(error!("only {done} of {} other vCPUs finished", vcpus - 1));
    }
    let mut total = 0;
    for v in 0..vcpus {
        let n = ITERATIONS[v as usize].load(Ordering::Acquire);
        xtf::println!("vCPU {v}: {n} iterations");
        total += n;
    }
    xtf::println!(
        "spin: {total} iterations in total on {vcpus} vCPUs over {} ms",
        (xen_system_time_ns() - start) / 1_000_000
    );
    Ok(())
}
