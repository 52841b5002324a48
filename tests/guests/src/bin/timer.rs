//! Timers: 100 wake-ups from HLT through VIRQ_TIMER on the callback vector, each armed at now + 0.5..3 ms,
//! alternately with `set_timer_op` and `VCPUOP_set_singleshot_timer`. No wake-up may come before its deadline
//! (pvclock system time at the event >= deadline), and the median lateness must be under 1 ms.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU64, Ordering};
use keel_abi::shared_info::virq;
use xtf::time::{self, xen_system_time_ns, MS};
use xtf::{arch, ensure, error, evtchn};

xtf::guest!(test_main);

const WAKEUPS: usize = 100;
const MIN_DELAY_NS: u64 = 500_000;
const MAX_DELAY_NS: u64 = 3 * MS;
const MEDIAN_LIMIT_NS: u64 = MS;

/// System time at the last timer event (0 = none since it was cleared).
static FIRED_AT: AtomicU64 = AtomicU64::new(0);

fn on_timer(_port: u32) {
    FIRED_AT.store(xen_system_time_ns(), Ordering::Release);
}

fn test_main() -> xtf::TestResult {
    // Xen vCPUs may start with a 10 ms periodic timer on VIRQ_TIMER: stop it, or it would look like an early
    // wake-up.
    time::stop_periodic_timer(0).map_err(|e| error!("VCPUOP_stop_periodic_timer: {e}"))?;
    xtf::xen::shared_info().map_err(|e| error!("mapping shared_info (XENMEM_add_to_physmap): {e}"))?;
    evtchn::enable_upcalls().map_err(|e| error!("callback vector: {e}"))?;
    let port = evtchn::bind_virq(virq::TIMER, 0).map_err(|e| error!("bind VIRQ_TIMER: {e}"))?;
    evtchn::set_handler(port, on_timer);
    evtchn::unmask(port).map_err(|e| error!("unmask port {port}: {e}"))?;
    xtf::println!("VIRQ_TIMER on port {port}, callback vector {:#x}", xtf::CALLBACK_VECTOR);

    let mut late = [0u64; WAKEUPS];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, late) in late.iter_mut().enumerate() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = MIN_DELAY_NS + seed % (MAX_DELAY_NS - MIN_DELAY_NS);
        FIRED_AT.store(0, Ordering::Release);
        let deadline = xen_system_time_ns() + delay;
        let (how, armed) = if i % 2 == 0 {
            ("set_timer_op", time::set_timer_op(deadline))
        } else {
            ("VCPUOP_set_singleshot_timer", time::set_singleshot_timer(0, deadline, 0))
        };
        armed.map_err(|e| error!("wake-up {i}: {how}: {e}"))?;
        arch::wait_until(|| FIRED_AT.load(Ordering::Acquire) != 0);
        let fired = FIRED_AT.load(Ordering::Acquire);
        ensure!(fired >= deadline, "wake-up {i} ({how}, {delay} ns ahead) came {} ns early", deadline - fired);
        *late = fired - deadline;
    }
    let _ = evtchn::close(port);

    late.sort_unstable();
    let median = (late[WAKEUPS / 2 - 1] + late[WAKEUPS / 2]) / 2;
    xtf::println!(
        "timer: {WAKEUPS} wake-ups, lateness median {} us, min {} us, max {} us",
        median / 1000,
        late[0] / 1000,
        late[WAKEUPS - 1] / 1000
    );
    ensure!(median < MEDIAN_LIMIT_NS, "median lateness {median} ns is not under {MEDIAN_LIMIT_NS} ns");
    Ok(())
}
