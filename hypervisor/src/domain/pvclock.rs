//! Time as guests see it: the pvclock in each vcpu_info (version protocol), and the wall clock in shared_info.

use super::{Domain, Vcpu};
use crate::arch::x86::{cpu, time};
use core::sync::atomic::{AtomicU32, Ordering};
use keel_abi::shared_info::{self as si, VcpuInfo, VcpuTimeInfo};

/// TSC → ns scale in pvclock form: ns = ((tsc_delta << shift) or >> -shift) * mul >> 32.
pub fn scale(tsc_hz: u64) -> (u32, i8) {
    if tsc_hz == 0 {
        return (0, 0);
    }
    let mut shift: i8 = 0;
    let mut hz = tsc_hz as u128;
    // Bring 1e9 / hz into [0.5, 1) so that the 32.32 multiplier fits in 32 bits.
    while hz <= 1_000_000_000 {
        hz *= 2;
        shift += 1;
    }
    while hz > 2_000_000_000 {
        hz /= 2;
        shift -= 1;
    }
    let mul = (1_000_000_000u128 << 32) / hz;
    (mul as u32, shift)
}

/// Applies a pvclock scale to a TSC delta (the guest's computation).
pub fn apply(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 { delta << shift } else { delta >> -shift };
    ((d as u128 * mul as u128) >> 32) as u64
}

/// Host pointer to the vcpu_info of `v`, if it has one.
pub fn vcpu_info_ptr(dom: &Domain, v: &Vcpu) -> Option<*mut VcpuInfo> {
    let hpa = v.vcpu_info_hpa.load(Ordering::Acquire);
    if hpa != 0 {
        return Some(hpa as *mut VcpuInfo);
    }
    if (v.id as usize) < si::LEGACY_VCPUS && dom.shared_info_gfn.load(Ordering::Acquire) != u64::MAX {
        // SAFETY: shared_info is a whole page owned by the domain; slot `id` (< 32) lies inside it.
        return Some(unsafe { dom.shared_info_ptr().add(v.id as usize * 64) }.cast::<VcpuInfo>());
    }
    None
}

/// Writes the current time into the vCPU's pvclock with the version protocol (odd while updating).
pub fn update(dom: &Domain, v: &Vcpu) {
    let Some(p) = vcpu_info_ptr(dom, v) else {
        return;
    };
    // The TSC frequency is fixed after boot calibration: compute the scale once.
    static SCALE: spin::Once<(u32, i8)> = spin::Once::new();
    let &(mul, shift) = SCALE.call_once(|| scale(time::tsc_hz()));
    let tsc = cpu::rdtsc();
    let now = time::tsc_to_ns(tsc);
    // SAFETY: `p` points at a 64-byte vcpu_info inside a frame mapped to this domain (checked at registration
    // not to cross a page); the version field is updated atomically and the fields between the two version
    // writes are plain stores, which is the pvclock protocol guests expect.
    unsafe {
        let t = core::ptr::addr_of_mut!((*p).time);
        let version = &*(core::ptr::addr_of_mut!((*t).version) as *const AtomicU32);
        let ver = version.load(Ordering::Relaxed);
        version.store(ver.wrapping_add(1) | 1, Ordering::Release);
        core::sync::atomic::fence(Ordering::SeqCst);
        let new = VcpuTimeInfo {
            version: ver.wrapping_add(1) | 1,
            pad0: 0,
            tsc_timestamp: tsc,
            system_time: now,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            flags: si::PVCLOCK_TSC_STABLE,
            pad1: [0; 2],
        };
        core::ptr::write_volatile(t, new);
        core::sync::atomic::fence(Ordering::SeqCst);
        version.store((ver | 1).wrapping_add(1), Ordering::Release);
    }
}

/// Fills the wall clock of a fresh shared_info (seconds since the epoch at system time 0).
pub fn init_shared_info(dom: &Domain) {
    write_wallclock(dom);
}

/// Writes the domain's wall clock into its shared_info: the epoch time at system time 0, moved by the domain's
/// time offset (XEN_DOMCTL_settimeoffset), under the version protocol (odd while it changes).
pub fn write_wallclock(dom: &Domain) {
    let base = dom.shared_info_ptr();
    let offset = dom.time_offset.load(Ordering::Relaxed);
    let boot_epoch_ns = crate::arch::x86::rtc::boot_epoch_ns() as i128 + i128::from(offset) * 1_000_000_000;
    let boot_epoch_ns = boot_epoch_ns.max(0) as u64;
    let (sec, nsec) = (boot_epoch_ns / 1_000_000_000, (boot_epoch_ns % 1_000_000_000) as u32);
    // SAFETY: shared_info is a page owned by the domain for its lifetime; the offsets are inside it.
    unsafe {
        let ver = &*(base.add(si::WC_VERSION_OFFSET) as *const AtomicU32);
        let v = ver.load(Ordering::Acquire) | 1;
        ver.store(v, Ordering::Release);
        core::ptr::write_volatile(base.add(si::WC_SEC_OFFSET).cast::<u32>(), sec as u32);
        core::ptr::write_volatile(base.add(si::WC_NSEC_OFFSET).cast::<u32>(), nsec);
        core::ptr::write_volatile(base.add(si::WC_SEC_HI_OFFSET).cast::<u32>(), (sec >> 32) as u32);
        ver.store(v.wrapping_add(1), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_matches_division() {
        for hz in [1_000_000u64, 999_999_999, 1_000_000_000, 2_441_064_000, 3_999_999_999, 10_000_000_000] {
            let (mul, shift) = scale(hz);
            let one_second = apply(hz, mul, shift);
            assert!((999_999_000..=1_000_000_000).contains(&one_second), "hz {hz}: {one_second} (shift {shift})");
        }
    }
}
