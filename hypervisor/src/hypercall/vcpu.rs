//! `vcpu_op`: timers, vcpu_info and runstate registration, runstate queries.

use super::{Action, Ctx, HResult};
use crate::arch::x86::time;
use crate::domain::{pvclock, RunstateArea, VcpuState};
use crate::mm::PAGE_SIZE;
use core::sync::atomic::Ordering;
use keel_abi::hypercall::{errno::*, vcpuop, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer};
use keel_abi::shared_info::VcpuRegisterVcpuInfo;

/// Shortest period VCPUOP_set_periodic_timer accepts (1 ms, as Xen).
pub const MIN_PERIOD_NS: u64 = 1_000_000;

/// Longest period, and in general the longest time delta Xen's timers take (`STIME_DELTA_MAX`, 2^62 - 1 ns).
pub const STIME_DELTA_MAX: u64 = u64::MAX >> 2;

/// The deadline a single-shot timer at `timeout_abs_ns` gets: system time is signed in Xen, so a value with bit
/// 63 set lies in the past and fires at once, like 0 (Keel's 0 means "no timer", so 1 stands for it).
pub fn singleshot_deadline(timeout_abs_ns: u64) -> u64 {
    if (timeout_abs_ns as i64) < 0 {
        1
    } else {
        timeout_abs_ns.max(1)
    }
}

/// How long VCPUOP_down waits for the vCPU it takes down to leave its CPU.
const DOWN_WAIT_NS: u64 = 10_000_000;

pub fn vcpu_op(c: &mut Ctx) -> HResult {
    let (cmd, id, arg) = (c.args[0], c.args[1], c.args[2]);
    let target = c.dom.vcpus.get(usize::try_from(id).map_err(|_| EINVAL)?).cloned().ok_or(ENOENT)?;
    let is_self = target.id == c.v.id;
    match cmd {
        vcpuop::SET_SINGLESHOT_TIMER => {
            if !is_self {
                return Err(EINVAL);
            }
            let t: VcpuSetSingleshotTimer = c.read(arg)?;
            if t.flags & vcpuop::SSHOTTMR_FUTURE != 0 && t.timeout_abs_ns < time::now_ns() {
                return Err(ETIME);
            }
            c.v.timer_deadline.store(singleshot_deadline(t.timeout_abs_ns), Ordering::Release);
            Ok(Action::Return(0))
        }
        vcpuop::STOP_SINGLESHOT_TIMER => {
            if !is_self {
                return Err(EINVAL);
            }
            c.v.timer_deadline.store(0, Ordering::Release);
            Ok(Action::Return(0))
        }
        vcpuop::SET_PERIODIC_TIMER => {
            let t: VcpuSetPeriodicTimer = c.read(arg)?;
            if !(MIN_PERIOD_NS..=STIME_DELTA_MAX).contains(&t.period_ns) {
                return Err(EINVAL);
            }
            target.periodic_next.store(time::now_ns().saturating_add(t.period_ns), Ordering::Release);
            target.periodic_period.store(t.period_ns, Ordering::Release);
            Ok(Action::Return(0))
        }
        vcpuop::STOP_PERIODIC_TIMER => {
            target.periodic_period.store(0, Ordering::Release);
            Ok(Action::Return(0))
        }
        vcpuop::REGISTER_VCPU_INFO => {
            // The frame is pinned for good (vcpu_info cannot be unregistered): its mapping cannot be replaced, so
            // the cached host address stays the domain's frame for the domain's life.
            let r: VcpuRegisterVcpuInfo = c.read(arg)?;
            let size = core::mem::size_of::<keel_abi::shared_info::VcpuInfo>() as u64;
            if r.offset as u64 + size > PAGE_SIZE || !r.offset.is_multiple_of(8) {
                return Err(EINVAL);
            }
            let mut mem = c.dom.mem.lock();
            if target.vcpu_info_hpa.load(Ordering::Acquire) != 0 {
                return Err(EINVAL);
            }
            mem.gfn_to_gpa(r.mfn)?;
            let hpa = mem.pin(r.mfn)? + r.offset as u64;
            // Carry over what the shared_info slot held (pending upcall, selector, time).
            if let Some(old) = pvclock::vcpu_info_ptr(c.dom, &target) {
                // SAFETY: both areas are 64-byte vcpu_info structures in frames mapped to this domain.
                unsafe { core::ptr::copy(old.cast::<u8>(), hpa as *mut u8, size as usize) };
            }
            target.vcpu_info_hpa.store(hpa, Ordering::Release);
            drop(mem);
            pvclock::update(c.dom, &target);
            Ok(Action::Return(0))
        }
        vcpuop::REGISTER_RUNSTATE_MEMORY_AREA => {
            // The area is given by guest-virtual address; it is translated once, now (with page-table
            // isolation the user CR3 of a later exit may not map it), and its frames are pinned until the area is
            // replaced or unregistered, so that the cached host addresses stay the domain's frames.
            let addr: u64 = c.read(arg)?;
            let mut mem = c.dom.mem.lock();
            let mut new = RunstateArea::default();
            if addr != 0 {
                let size = core::mem::size_of::<keel_abi::shared_info::VcpuRunstateInfo>() as u64;
                let last = addr.checked_add(size - 1).ok_or(EFAULT)?;
                let paging = c.paging;
                let gfn = |lin: u64| -> Result<u64, Errno> {
                    let gpa = crate::hvm::walk::translate(&paging, lin, crate::hvm::walk::Access::Write, |g| {
                        mem.read_val::<u64>(g).ok()
                    })
                    .map_err(|_| EFAULT)?;
                    mem.translate(gpa, true).map_err(|_| EFAULT)?;
                    Ok(gpa >> 12)
                };
                new.gfn[0] = gfn(addr)?;
                let crosses = last >> 12 != addr >> 12;
                if crosses {
                    new.gfn[1] = gfn(last & !0xfff)?;
                }
                new.hpa[0] = mem.pin(new.gfn[0]).map_err(|_| EFAULT)? + (addr & 0xfff);
                if crosses {
                    match mem.pin(new.gfn[1]) {
                        Ok(h) => new.hpa[1] = h,
                        Err(_) => {
                            mem.unpin(new.gfn[0]);
                            return Err(EFAULT);
                        }
                    }
                }
            }
            let old = core::mem::replace(&mut *target.runstate_area.lock(), new);
            for i in 0..2 {
                if old.hpa[i] != 0 {
                    mem.unpin(old.gfn[i]);
                }
            }
            drop(mem);
            target.publish_runstate();
            Ok(Action::Return(0))
        }
        vcpuop::GET_RUNSTATE_INFO => {
            c.write(arg, &target.runstate())?;
            Ok(Action::Return(0))
        }
        vcpuop::IS_UP => Ok(Action::Return(u64::from(!matches!(target.state(), VcpuState::Offline | VcpuState::Dead)))),
        // As Xen's: the vCPU stops where it is, its state kept, until VCPUOP_up (Linux takes its other vCPUs down
        // and up again around re-registering their vcpu_info when it resumes from a save).
        vcpuop::DOWN if is_self => Ok(Action::Down),
        vcpuop::DOWN => {
            for from in [VcpuState::Running, VcpuState::Runnable, VcpuState::Blocked] {
                if target.transition(from, VcpuState::Offline) {
                    // A running one leaves its CPU at the kick; a queued one is dropped when picked.
                    crate::sched::kick(&target);
                    break;
                }
            }
            // As Xen's vcpu_sleep_sync: it has left its CPU when this returns (its context is free), so that a
            // VCPUOP_up right after cannot find it still in its run loop. Bounded, as the toolstack's pause is.
            let deadline = time::now_ns().saturating_add(DOWN_WAIT_NS);
            while target.hw.try_lock().is_none() && time::now_ns() < deadline {
                core::hint::spin_loop();
            }
            Ok(Action::Return(0))
        }
        // -EINVAL for a vCPU that never started (Xen: not initialised); a vCPU that is up stays as it is.
        vcpuop::UP => {
            if target.hw.lock().is_none() {
                return Err(EINVAL);
            }
            if target.transition(VcpuState::Offline, VcpuState::Runnable) {
                crate::sched::wake(&target);
            }
            Ok(Action::Return(0))
        }
        _ => Err(ENOSYS),
    }
}
