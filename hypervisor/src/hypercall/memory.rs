//! `memory_op`: mapping shared_info into the guest's physical address space.

use super::{Action, Ctx, HResult};
use core::sync::atomic::Ordering;
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{xenmem, XenAddToPhysmap};

pub fn memory_op(c: &mut Ctx) -> HResult {
    let (cmd, arg) = (c.args[0], c.args[1]);
    match cmd {
        xenmem::ADD_TO_PHYSMAP => {
            let a: XenAddToPhysmap = c.read(arg)?;
            if a.domid != keel_abi::DOMID_SELF && a.domid != c.dom.id {
                return Err(EPERM);
            }
            match a.space {
                xenmem::SPACE_SHARED_INFO => {
                    if a.idx != 0 {
                        return Err(EINVAL);
                    }
                    let gpa = a.gpfn.checked_mul(4096).filter(|g| *g < 1 << 52).ok_or(EINVAL)?;
                    c.dom.mem.lock().map_foreign_frame(gpa, c.dom.shared_info).map_err(|_| EINVAL)?;
                    c.dom.shared_info_gfn.store(a.gpfn, Ordering::Release);
                    c.hw.flush_tlb();
                    for v in &c.dom.vcpus {
                        crate::domain::pvclock::update(c.dom, v);
                    }
                    Ok(Action::Return(0))
                }
                _ => Err(ENOSYS),
            }
        }
        _ => Err(ENOSYS),
    }
}
