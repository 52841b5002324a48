//! Round-trip costs, measured inside a guest: a null hypercall (`xen_version(XENVER_version)`) and a CPUID
//! exit, each `iterations=` (default ITERATIONS) times per run, `RUNS` runs; prints the median per-call cost in guest TSC cycles and
//! in ns of Xen system time. `cargo xtask bench` reads the `BENCH:` lines; as a test it only has to finish.
#![cfg_attr(target_os = "none", no_std, no_main)]

use xtf::arch::{cpuid, rdtsc};
use xtf::ensure;
use xtf::hypercall;
use xtf::time::xen_system_time_ns;

xtf::guest!(test_main);

/// Calls per run by default; the module string's `guest.iterations=N` changes it.
const ITERATIONS: u64 = 100_000;
/// Runs; the median is reported.
const RUNS: usize = 3;

fn median(v: &mut [(u64, u64)]) -> (u64, u64) {
    v.sort_unstable_by_key(|x| x.0);
    v[v.len() / 2]
}

/// Runs `op` `iterations` times, RUNS times; returns the median (cycles, ns) per call.
fn measure(iterations: u64, mut op: impl FnMut()) -> (u64, u64) {
    let mut runs = [(0u64, 0u64); RUNS];
    for r in runs.iter_mut() {
        let (t0, n0) = (rdtsc(), xen_system_time_ns());
        for _ in 0..iterations {
            op();
        }
        let (t1, n1) = (rdtsc(), xen_system_time_ns());
        *r = ((t1 - t0) / iterations, (n1 - n0) / iterations);
    }
    median(&mut runs)
}

fn test_main() -> xtf::TestResult {
    let version = hypercall::xen_version();
    ensure!(version > 0, "xen_version returned {version}");
    let iterations = xtf::rt::arg_u64("iterations", ITERATIONS).max(1);
    let (hc_cycles, hc_ns) = measure(iterations, || {
        core::hint::black_box(hypercall::xen_version());
    });
    xtf::println!("BENCH: null-hypercall cycles={hc_cycles} ns={hc_ns} iterations={iterations} runs={RUNS}");
    let (id_cycles, id_ns) = measure(iterations, || {
        core::hint::black_box(cpuid(0, 0));
    });
    xtf::println!("BENCH: cpuid-exit cycles={id_cycles} ns={id_ns} iterations={iterations} runs={RUNS}");
    Ok(())
}
