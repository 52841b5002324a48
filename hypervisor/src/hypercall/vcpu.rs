//! `vcpu_op`: timers, vcpu_info and runstate registration, runstate queries.

use super::{Action, Ctx, HResult};
use crate::arch::x86::time;
use crate::domain::{pvclock, VcpuState};
use core::sync::atomic::Ordering;
use keel_abi::hypercall::{errno::*, vcpuop, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer};
use keel_abi::shared_info::VcpuRegisterVcpuInfo;

/// Xen's -ETIME.
const ETIME: i64 = 62;

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
            c.v.timer_deadline.store(t.timeout_abs_ns.max(1), Ordering::Release);
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
            if t.period_ns < 1_000_000 {
                return Err(EINVAL);
            }
            target.periodic_next.store(time::now_ns() + t.period_ns, Ordering::Release);
            target.periodic_period.store(t.period_ns, Ordering::Release);
            Ok(Action::Return(0))
        }
        vcpuop::STOP_PERIODIC_TIMER => {
            target.periodic_period.store(0, Ordering::Release);
            Ok(Action::Return(0))
        }
        vcpuop::REGISTER_VCPU_INFO => {
            let r: VcpuRegisterVcpuInfo = c.read(arg)?;
            if r.offset as u64 + 64 > 4096 {
                return Err(EINVAL);
            }
            if target.vcpu_info_hpa.load(Ordering::Acquire) != 0 {
                return Err(EINVAL);
            }
            let gpa = (r.mfn << 12) + r.offset as u64;
            let hpa = c.dom.mem.lock().translate(gpa, true).map_err(|_| EINVAL)?;
            // Carry over what the shared_info slot held (pending upcall, selector, time).
            if let Some(old) = pvclock::vcpu_info_ptr(c.dom, &target) {
                // SAFETY: both areas are 64-byte vcpu_info structures in frames mapped to this domain.
                unsafe { core::ptr::copy(old.cast::<u8>(), hpa as *mut u8, 64) };
            }
            target.vcpu_info_hpa.store(hpa, Ordering::Release);
            pvclock::update(c.dom, &target);
            Ok(Action::Return(0))
        }
        vcpuop::REGISTER_RUNSTATE_MEMORY_AREA => {
            // The area is given by guest-virtual address; it is translated once, now (with page-table
            // isolation the user CR3 of a later exit may not map it).
            let addr: u64 = c.read(arg)?;
            if addr == 0 {
                target.runstate_hpa[0].store(0, Ordering::Release);
                return Ok(Action::Return(0));
            }
            let size = core::mem::size_of::<keel_abi::shared_info::VcpuRunstateInfo>() as u64;
            let last = addr.checked_add(size - 1).ok_or(EFAULT)?;
            let paging = c.hw.paging();
            let (first_hpa, second_hpa) = {
                let mem = c.dom.mem.lock();
                let tr = |lin: u64| -> Result<u64, i64> {
                    let gpa = crate::hvm::walk::translate(&paging, lin, crate::hvm::walk::Access::Write, |g| {
                        mem.read_val::<u64>(g).ok()
                    })
                    .map_err(|_| EFAULT)?;
                    mem.translate(gpa, true).map_err(|_| EFAULT)
                };
                let first = tr(addr)?;
                let second = if last >> 12 != addr >> 12 { tr(last & !0xfff)? } else { 0 };
                (first, second)
            };
            target.runstate_hpa[1].store(second_hpa, Ordering::Release);
            target.runstate_hpa[0].store(first_hpa, Ordering::Release);
            target.publish_runstate();
            Ok(Action::Return(0))
        }
        vcpuop::GET_RUNSTATE_INFO => {
            c.write(arg, &target.runstate())?;
            Ok(Action::Return(0))
        }
        vcpuop::IS_UP => Ok(Action::Return(u64::from(!matches!(target.state(), VcpuState::Offline | VcpuState::Dead)))),
        _ => Err(ENOSYS),
    }
}
