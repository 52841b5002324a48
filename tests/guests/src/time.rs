//! Xen system time from the pvclock in this vCPU's `vcpu_info`, and the timer hypercalls.

use crate::{arch, smp, xen};
use keel_abi::shared_info::VcpuTimeInfo;

pub use crate::hypercall::{set_singleshot_timer, set_timer_op, stop_periodic_timer};

/// Nanoseconds per millisecond, for readable arithmetic.
pub const MS: u64 = 1_000_000;
/// Nanoseconds per second.
pub const SECOND: u64 = 1_000_000_000;

/// The pvclock formula: `system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32` (right shift for a
/// negative `tsc_shift`).
pub fn pvclock_ns(t: &VcpuTimeInfo, tsc: u64) -> u64 {
    // A TSC read before the timestamp (another CPU's update) counts as no time passed.
    let delta = tsc.saturating_sub(t.tsc_timestamp);
    let delta = if t.tsc_shift >= 0 { delta << t.tsc_shift } else { delta >> -t.tsc_shift };
    let scaled = (u128::from(delta) * u128::from(t.tsc_to_system_mul)) >> 32;
    t.system_time.wrapping_add(scaled as u64)
}

/// Xen system time in ns, from the calling vCPU's `vcpu_info` time in `shared_info` (mapped on first use).
///
/// Panics (so the guest crashes with a message) if `shared_info` cannot be mapped.
pub fn xen_system_time_ns() -> u64 {
    let si = match xen::shared_info() {
        Ok(si) => si,
        Err(e) => panic!("cannot map shared_info for the pvclock: {e}"),
    };
    let t = si.vcpu_time(smp::vcpu_id());
    pvclock_ns(&t, arch::rdtsc())
}

/// Spins (with `pause`) until system time reaches `deadline_ns`.
pub fn spin_until(deadline_ns: u64) {
    while xen_system_time_ns() < deadline_ns {
        core::hint::spin_loop();
    }
}
