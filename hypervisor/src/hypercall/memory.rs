//! `memory_op`: mapping shared_info and grant-table frames into the guest's physical address space (the checks —
//! GFN range, pinned frames, the p2m's table cap — and the deferred free of replaced RAM are
//! [`crate::domain::Domain::map_foreign_frame`]'s), and the memory map.

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
                    c.dom.map_foreign_frame(a.gpfn, c.dom.shared_info)?;
                    c.dom.shared_info_gfn.store(a.gpfn, Ordering::Release);
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
                    c.dom.mem.lock().gfn_to_gpa(a.gpfn)?;
                    let frame = {
                        let mut frames = c.dom.grant_frames.lock();
                        while frames.len() <= idx {
                            frames.push(crate::mm::alloc_frame().map_err(|_| ENOMEM)?);
                        }
                        frames[idx]
                    };
                    c.dom.map_foreign_frame(a.gpfn, frame)?;
                    crate::debug!("d{}: grant-table frame {idx} at gfn {:#x}", c.dom.id, a.gpfn);
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

#[cfg(test)]
mod tests {
    use crate::domain::{Domain, VcpuState, P2M_EXTRA_TABLES};
    use crate::mm::{host_frames, p2m};
    use crate::testing::{self, get, put};
    use alloc::sync::Arc;
    use keel_abi::hypercall::{errno::*, nr, vcpuop};
    use keel_abi::shared_info::{xenmem, VcpuInfo, VcpuRegisterVcpuInfo, XenAddToPhysmap};

    const ARG: u64 = 0x1000;
    const SHARED_INFO: u32 = xenmem::SPACE_SHARED_INFO;
    const GRANT: u32 = xenmem::SPACE_GRANT_TABLE;

    /// XENMEM_add_to_physmap of `space`/`idx` at `gpfn`, from vCPU 0.
    fn add(dom: &Arc<Domain>, space: u32, idx: u64, gpfn: u64) -> i64 {
        put(dom, ARG, &XenAddToPhysmap { domid: keel_abi::DOMID_SELF, size: 0, space, idx, gpfn });
        testing::hypercall(dom, 0, nr::MEMORY_OP, [xenmem::ADD_TO_PHYSMAP, ARG, 0, 0, 0])
    }

    fn vcpu_op(dom: &Arc<Domain>, cmd: u64, vcpu: u64) -> i64 {
        testing::hypercall(dom, 0, nr::VCPU_OP, [cmd, vcpu, ARG, 0, 0])
    }

    /// Host frame behind guest frame `gfn`.
    fn hpa(dom: &Domain, gfn: u64) -> u64 {
        dom.mem.lock().translate(gfn << 12, false).expect("mapped")
    }

    /// Defect 1: shared_info or a grant frame mapped over a registered vcpu_info frame freed that RAM frame while
    /// Keel kept writing pvclock and upcall bits into it. The frame is pinned now: -EBUSY, and it stays live.
    #[test]
    fn registered_vcpu_info_frame_is_not_replaced() {
        let dom = testing::domain(2, 4);
        let frame = hpa(&dom, 0x10);
        put(&dom, ARG, &VcpuRegisterVcpuInfo { mfn: 0x10, offset: 0x40, rsvd: 0 });
        assert_eq!(vcpu_op(&dom, vcpuop::REGISTER_VCPU_INFO, 0), 0);
        assert_eq!(dom.vcpus[0].vcpu_info_hpa.load(core::sync::atomic::Ordering::Acquire), frame + 0x40);
        assert_eq!(add(&dom, SHARED_INFO, 0, 0x10), EBUSY.negated());
        assert_eq!(add(&dom, GRANT, 0, 0x10), EBUSY.negated());
        assert!(host_frames::is_live(frame), "the registered frame was freed");
        assert_eq!(hpa(&dom, 0x10), frame, "the registered frame left the guest");
        // Keel's pvclock writes land in the guest's own frame.
        let info: VcpuInfo = get(&dom, 0x10040);
        assert!(info.time.version != 0 && info.time.version.is_multiple_of(2), "pvclock written: {:?}", info.time);
        // A frame number with bits above the address width used to wrap onto a low GFN (here 0x11).
        put(&dom, ARG, &VcpuRegisterVcpuInfo { mfn: 1 << 52 | 0x11, offset: 0, rsvd: 0 });
        assert_eq!(vcpu_op(&dom, vcpuop::REGISTER_VCPU_INFO, 1), EINVAL.negated());
        put(&dom, ARG, &VcpuRegisterVcpuInfo { mfn: 0x11, offset: 4, rsvd: 0 });
        assert_eq!(vcpu_op(&dom, vcpuop::REGISTER_VCPU_INFO, 1), EINVAL.negated(), "misaligned");
        assert_eq!(dom.vcpus[1].vcpu_info_hpa.load(core::sync::atomic::Ordering::Acquire), 0);
        // Other frames can still be replaced.
        assert_eq!(add(&dom, SHARED_INFO, 0, 0x12), 0);
        crate::domain::destroy(&dom);
    }

    /// Defect 1, runstate: its frames (two when the area crosses a page) are pinned while registered, released
    /// when the area moves or is unregistered.
    #[test]
    fn runstate_frames_are_pinned_while_registered() {
        let dom = testing::domain(1, 4);
        let (f20, f21, f30) = (hpa(&dom, 0x20), hpa(&dom, 0x21), hpa(&dom, 0x30));
        let pages = dom.mem.lock().tot_pages;
        put(&dom, ARG, &0x20ff0u64);
        assert_eq!(vcpu_op(&dom, vcpuop::REGISTER_RUNSTATE_MEMORY_AREA, 0), 0);
        assert_eq!(add(&dom, GRANT, 0, 0x20), EBUSY.negated());
        assert_eq!(add(&dom, GRANT, 0, 0x21), EBUSY.negated());
        assert!(host_frames::is_live(f20) && host_frames::is_live(f21));
        // Moving the area releases the old frames.
        put(&dom, ARG, &0x30000u64);
        assert_eq!(vcpu_op(&dom, vcpuop::REGISTER_RUNSTATE_MEMORY_AREA, 0), 0);
        assert_eq!(add(&dom, GRANT, 0, 0x21), 0);
        assert!(!host_frames::is_live(f21), "a replaced frame no vCPU runs on is freed");
        assert_eq!(dom.mem.lock().tot_pages, pages - 1);
        assert_eq!(add(&dom, SHARED_INFO, 0, 0x30), EBUSY.negated());
        // Unregistering releases it.
        put(&dom, ARG, &0u64);
        assert_eq!(vcpu_op(&dom, vcpuop::REGISTER_RUNSTATE_MEMORY_AREA, 0), 0);
        assert_eq!(add(&dom, SHARED_INFO, 0, 0x30), 0);
        assert!(!host_frames::is_live(f30));
        assert!(host_frames::is_live(f20));
        crate::domain::destroy(&dom);
    }

    /// Defect 2: a replaced RAM frame was freed while other vCPUs could still hold its translation. It is freed
    /// once every vCPU that may be in the guest has acknowledged the flush; blocked ones do not hold it up.
    #[test]
    fn replaced_frame_is_freed_after_every_running_vcpu_flushed() {
        let dom = testing::domain(2, 4);
        for v in &dom.vcpus {
            v.set_state(VcpuState::Running);
        }
        let old = hpa(&dom, 0x40);
        assert_eq!(add(&dom, SHARED_INFO, 0, 0x40), 0);
        assert_eq!(hpa(&dom, 0x40), dom.shared_info);
        assert!(host_frames::is_live(old), "freed before the other vCPUs flushed");
        assert_eq!(dom.mem.lock().deferred_frames(), 1);
        assert!(dom.vcpus.iter().all(|v| v.tlb_flush_pending.load(core::sync::atomic::Ordering::Acquire)));
        dom.vcpus[1].ack_flush(&dom);
        assert!(host_frames::is_live(old), "freed before vCPU 0 flushed");
        dom.vcpus[0].ack_flush(&dom);
        assert!(!host_frames::is_live(old), "never freed");
        assert_eq!(dom.mem.lock().deferred_frames(), 0);
        // A blocked vCPU is outside the guest and flushes before it enters again.
        dom.vcpus[1].set_state(VcpuState::Blocked);
        let old = hpa(&dom, 0x41);
        assert_eq!(add(&dom, GRANT, 0, 0x41), 0);
        assert!(host_frames::is_live(old));
        dom.vcpus[0].ack_flush(&dom);
        assert!(!host_frames::is_live(old));
        // Frames still waiting when the domain goes are freed with it.
        let old = hpa(&dom, 0x42);
        assert_eq!(add(&dom, GRANT, 1, 0x42), 0);
        assert!(host_frames::is_live(old));
        crate::domain::destroy(&dom);
        drop(dom);
        assert!(!host_frames::is_live(old));
    }

    /// Defect 3: add_to_physmap accepted any GFN below 2^52 and each new region took uncharged page-table frames
    /// (4,000 calls: 16 MiB). GFNs are bounded and the tables capped: past the cap, -ENOMEM.
    #[test]
    fn scattered_mappings_are_bounded() {
        let dom = testing::domain(1, 4);
        let (cap, max_gfn) = {
            let mem = dom.mem.lock();
            (mem.p2m.table_limit(), mem.max_gpa() >> 12)
        };
        assert_eq!(cap, p2m::tables_for(4 << 20) + P2M_EXTRA_TABLES);
        assert_eq!(add(&dom, SHARED_INFO, 0, max_gfn), EINVAL.negated());
        assert_eq!(add(&dom, SHARED_INFO, 0, u64::MAX), EINVAL.negated());
        let (mut ok, mut nomem) = (0, 0);
        for i in 0..4000u64 {
            // Scattered over the allowed range, above RAM.
            let gfn = 0x10_0000 + (i.wrapping_mul(2_654_435_761) % (max_gfn - 0x10_0000));
            let r = if i % 2 == 0 { add(&dom, SHARED_INFO, 0, gfn) } else { add(&dom, GRANT, i % 64, gfn) };
            match r {
                0 => ok += 1,
                e if e == ENOMEM.negated() => nomem += 1,
                e => panic!("call {i} (gfn {gfn:#x}): {e}"),
            }
        }
        let mem = dom.mem.lock();
        assert!(ok > 50, "{ok} calls succeeded");
        assert!(nomem > 3000, "{nomem} calls hit the cap");
        assert!(mem.p2m.table_frames() <= cap, "{} tables, cap {cap}", mem.p2m.table_frames());
        assert_eq!(mem.tot_pages, 1024);
        drop(mem);
        crate::domain::destroy(&dom);
    }

    /// Bits 48-51 of a GPA were ignored: GFN 1<<36 aliased GFN 0 and mapping shared_info there replaced (and
    /// freed) the guest's first RAM frame.
    #[test]
    fn gfn_beyond_48_bits_is_refused_not_aliased() {
        let dom = testing::domain(1, 4);
        let first = hpa(&dom, 0);
        assert_eq!(add(&dom, SHARED_INFO, 0, 1 << 36), EINVAL.negated());
        assert_eq!(add(&dom, GRANT, 0, 1 << 36), EINVAL.negated());
        assert_eq!(hpa(&dom, 0), first);
        assert!(host_frames::is_live(first));
        assert_eq!(dom.mem.lock().translate(1 << 48, false), Err(crate::domain::BadGpa(1 << 48)));
        crate::domain::destroy(&dom);
    }
}
