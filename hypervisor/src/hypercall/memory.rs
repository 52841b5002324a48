//! `memory_op`: mapping shared_info into the guest's physical address space.

use super::{Action, Ctx, HResult};
use core::sync::atomic::Ordering;
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{gnttab, xenmem, XenAddToPhysmap, XenMemoryMap};

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
                    c.dom.p2m_changed();
                    for v in &c.dom.vcpus {
                        crate::domain::pvclock::update(c.dom, v);
                    }
                    Ok(Action::Return(0))
                }
                xenmem::SPACE_GRANT_TABLE => {
                    if a.idx & (1 << 31) != 0 {
                        return Err(EINVAL); // status frames exist only with grant table v2
                    }
                    let idx = usize::try_from(a.idx).map_err(|_| EINVAL)?;
                    if idx >= gnttab::MAX_FRAMES as usize {
                        return Err(EINVAL);
                    }
                    let gpa = a.gpfn.checked_mul(4096).filter(|g| *g < 1 << 52).ok_or(EINVAL)?;
                    let frame = {
                        let mut frames = c.dom.grant_frames.lock();
                        while frames.len() <= idx {
                            frames.push(crate::mm::alloc_frame().map_err(|_| ENOMEM)?);
                        }
                        frames[idx]
                    };
                    c.dom.mem.lock().map_foreign_frame(gpa, frame).map_err(|_| EINVAL)?;
                    crate::debug!("d{}: grant-table frame {idx} at gfn {:#x}", c.dom.id, a.gpfn);
                    c.dom.p2m_changed();
                    Ok(Action::Return(0))
                }
                _ => Err(ENOSYS),
            }
        }
        xenmem::MEMORY_MAP => {
            let mut m: XenMemoryMap = c.read(arg)?;
            let map = c.dom.memmap.lock().clone();
            if (m.nr_entries as usize) < map.len() {
                return Err(EINVAL);
            }
            for (i, e) in map.iter().enumerate() {
                let mut raw = [0u8; 20];
                raw[..8].copy_from_slice(&e.addr.to_le_bytes());
                raw[8..16].copy_from_slice(&e.size.to_le_bytes());
                raw[16..].copy_from_slice(&e.typ.to_le_bytes());
                c.write_bytes(m.buffer.wrapping_add(i as u64 * 20), &raw)?;
            }
            m.nr_entries = map.len() as u32;
            c.write(arg, &m)?;
            Ok(Action::Return(0))
        }
        _ => Err(ENOSYS),
    }
}
