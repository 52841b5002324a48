//! `memory_op`: mapping shared_info and grant-table frames into the guest's physical address space (the checks —
//! GFN range, pinned frames, the p2m's table cap — and the deferred free of replaced RAM are
//! [`crate::domain::Domain::map_foreign_frame`]'s), the memory map, and for the hardware domain the foreign
//! mappings privcmd makes: XENMEM_add_to_physmap_batch with gmfn_foreign, XENMEM_remove_from_physmap and
//! XENMEM_acquire_resource (the mapped frames are borrowed, with a reference: see [`crate::domain::Memory`]);
//! and the reservation calls: populate_physmap, increase_reservation and decrease_reservation for the caller
//! itself (ballooning) or, for the toolstack, another domain, and current/maximum_reservation.

use super::{Action, Ctx, HResult};
use crate::domain::{self, grant, Borrowed, Domain};
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{
    xenmem, XenAddToPhysmap, XenAddToPhysmapBatch, XenForeignMemoryMap, XenMemAcquireResource, XenMemoryMap,
    XenMemoryReservation, XenRemoveFromPhysmap,
};
use keel_abi::start_info::HvmMemmapEntry;
use keel_abi::DOMID_SELF;

pub fn memory_op(c: &mut Ctx) -> HResult {
    let (cmd, arg) = (c.args[0], c.args[1]);
    let (op, start) = (cmd & xenmem::CMD_MASK, cmd >> xenmem::EXTENT_SHIFT);
    match cmd {
        xenmem::ADD_TO_PHYSMAP => {
            let a: XenAddToPhysmap = c.read(arg)?;
            if a.space == xenmem::SPACE_GMFN_FOREIGN {
                return Err(ENOSYS); // only through the batch call, which names the foreign domain
            }
            if a.domid != DOMID_SELF && a.domid != c.dom.id {
                return Err(EPERM);
            }
            let dom = c.dom.clone();
            add_one(c, &dom, a.space, a.idx, a.gpfn, 0)?;
            Ok(Action::Return(0))
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
        xenmem::SET_MEMORY_MAP => set_memory_map(c, arg),
        _ => match op {
            xenmem::POPULATE_PHYSMAP | xenmem::INCREASE_RESERVATION | xenmem::DECREASE_RESERVATION => {
                reservation(c, op, arg, start)
            }
            xenmem::CURRENT_RESERVATION | xenmem::MAXIMUM_RESERVATION => {
                if start != 0 {
                    return Err(EINVAL);
                }
                let domid: u16 = c.read(arg)?;
                let dom = target(c, domid)?;
                let mem = dom.mem.lock();
                Ok(Action::Return(if op == xenmem::CURRENT_RESERVATION { mem.tot_pages } else { mem.max_pages }))
            }
            xenmem::ADD_TO_PHYSMAP_BATCH => add_to_physmap_batch(c, arg, start),
            xenmem::REMOVE_FROM_PHYSMAP => {
                if start != 0 {
                    return Err(EINVAL);
                }
                let r: XenRemoveFromPhysmap = c.read(arg)?;
                let dom = target(c, r.domid)?;
                dom.remove_from_physmap(r.gpfn)?;
                Ok(Action::Return(0))
            }
            xenmem::ACQUIRE_RESOURCE => acquire_resource(c, arg, start),
            _ => Err(ENOSYS),
        },
    }
}

/// Entries a domain's memory map may hold (XENMEM_set_memory_map; Keel's bound).
pub const MAX_MEMMAP_ENTRIES: u32 = 128;

/// XENMEM_set_memory_map: the toolstack sets another domain's E820 map, which that domain's XENMEM_memory_map
/// then returns. A privileged caller only, for another domain (-EPERM; -ESRCH for none); more than
/// [`MAX_MEMMAP_ENTRIES`] entries is -EINVAL.
fn set_memory_map(c: &Ctx, arg: u64) -> HResult {
    let f: XenForeignMemoryMap = c.read(arg)?;
    let dom = target(c, f.domid)?;
    if Arc::ptr_eq(&dom, c.dom) {
        return Err(EPERM);
    }
    if f.map.nr_entries > MAX_MEMMAP_ENTRIES {
        return Err(EINVAL);
    }
    let mut map = alloc::vec::Vec::with_capacity(f.map.nr_entries as usize);
    for i in 0..u64::from(f.map.nr_entries) {
        let mut raw = [0u8; 20];
        c.read_bytes(f.map.buffer.wrapping_add(i * 20), &mut raw)?;
        let word = |r: core::ops::Range<usize>| raw[r].iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b));
        map.push(HvmMemmapEntry { addr: word(0..8), size: word(8..16), typ: word(16..20) as u32, reserved: 0 });
    }
    *dom.memmap.lock() = map;
    Ok(Action::Return(0))
}

/// The largest extent order an ordinary domain may use in a reservation call (Xen's CONFIG_DOMU_MAX_ORDER on
/// x86: 2 MiB); the privileged domain (Xen's control and hardware domain) may go to
/// [`domain::MAX_EXTENT_ORDER`].
pub const DOMU_MAX_ORDER: u32 = 9;

/// Xen's max_order(current->domain).
fn max_order(caller: &Domain) -> u32 {
    if caller.is_privileged() {
        domain::MAX_EXTENT_ORDER
    } else {
        DOMU_MAX_ORDER
    }
}

/// XENMEM_populate_physmap, increase_reservation and decrease_reservation (`op`), as Xen's do_memory_op and
/// its helpers: the domain is the caller itself (a balloon driver giving memory back or taking it again) or, for
/// the privileged domain, another one (the toolstack building it; -ESRCH for none, -EPERM for an unprivileged
/// caller). Each extent is 2^extent_order pages at the GFN the caller lists:
/// - populate_physmap: fresh zeroed RAM there ([`Domain::populate_extent`]: within max_pages, at free GFNs);
/// - decrease_reservation: the RAM there leaves the domain and is freed once no vCPU can reach it (and no other
///   domain maps it: a foreign or grant mapping keeps the frame until unmapped) ([`Domain::decrease_extent`]);
/// - increase_reservation: frames the domain owns without a GFN, as Xen gives a translated domain
///   ([`Domain::increase_extent`]; the list is not read).
///
/// Returns the number of extents done (counting from `start`, the continuation's first extent), stopping at the
/// first extent that fails; as Xen, a request it cannot take returns `start`: an unreadable argument, more than
/// `u32::MAX >> 6` extents, an extent order above the caller's limit ([`max_order`]), address bits of 12 or less,
/// or populate-on-demand (Keel has none). Every call is bounded by the domain's memory: populate and increase stop
/// at max_pages, and decrease at the first GFN without RAM.
fn reservation(c: &Ctx, op: u64, arg: u64, start: u64) -> HResult {
    let Ok(r) = c.read::<XenMemoryReservation>(arg) else { return Ok(Action::Return(start)) };
    if r.nr_extents > u64::from(u32::MAX >> xenmem::EXTENT_SHIFT) || start >= r.nr_extents {
        return Ok(Action::Return(start));
    }
    let dom = target(c, r.domid)?;
    let bits = r.mem_flags & xenmem::MEMF_ADDRESS_BITS_MASK;
    if (bits != 0 && bits <= 12) || r.extent_order > max_order(c.dom) {
        return Ok(Action::Return(start));
    }
    if op == xenmem::POPULATE_PHYSMAP && r.mem_flags & xenmem::MEMF_POPULATE_ON_DEMAND != 0 {
        return Ok(Action::Return(start));
    }
    let mut removed = alloc::vec::Vec::new();
    let mut done = start;
    while done < r.nr_extents {
        let gfn = if op == xenmem::INCREASE_RESERVATION {
            0
        } else {
            let Some(at) = done.checked_mul(8).and_then(|o| r.extent_start.checked_add(o)) else { break };
            let Ok(gfn) = c.read::<u64>(at) else { break };
            gfn
        };
        let result = match op {
            xenmem::POPULATE_PHYSMAP => dom.populate_extent(gfn, r.extent_order),
            xenmem::DECREASE_RESERVATION => dom.decrease_extent(gfn, r.extent_order, &mut removed),
            _ => dom.increase_extent(r.extent_order),
        };
        if let Err(e) = result {
            crate::debug!("memory_op {op} d{}: extent {done} (gfn {gfn:#x}): {}", dom.id, e.negated());
            break;
        }
        done += 1;
    }
    dom.release_removed(removed);
    Ok(Action::Return(done))
}

/// The domain a physmap call names (Xen's rcu_lock_domain_by_any_id and XSM_TARGET check): the caller itself
/// (DOMID_SELF or its id), or, for a privileged caller, any live domain. -ESRCH for none, -EPERM otherwise.
fn target(c: &Ctx, domid: u16) -> Result<Arc<Domain>, Errno> {
    if domid == DOMID_SELF || domid == c.dom.id {
        return Ok(c.dom.clone());
    }
    let d = domain::get(domid).ok_or(ESRCH)?;
    if !c.dom.is_privileged() {
        return Err(EPERM);
    }
    Ok(d)
}

/// Maps frame `idx` of `space` at `gpfn` in `dom` (Xen's xenmem_add_to_physmap_one).
fn add_one(c: &Ctx, dom: &Arc<Domain>, space: u32, idx: u64, gpfn: u64, foreign_domid: u16) -> Result<(), Errno> {
    match space {
        xenmem::SPACE_SHARED_INFO => {
            if idx != 0 {
                return Err(EINVAL);
            }
            dom.map_foreign_frame(gpfn, dom.shared_info)?;
            dom.shared_info_gfn.store(gpfn, Ordering::Release);
            for v in &dom.vcpus {
                crate::domain::pvclock::update(dom, v);
            }
            Ok(())
        }
        xenmem::SPACE_GRANT_TABLE => {
            if idx & (1 << 31) != 0 {
                return Err(EINVAL); // status frames exist only with grant table v2
            }
            let idx = usize::try_from(idx).map_err(|_| EINVAL)?;
            if idx >= dom.config.limits.max_grant_frames as usize {
                return Err(EINVAL);
            }
            dom.mem.lock().gfn_to_gpa(gpfn)?;
            let frame = grant::table_frame(dom, idx)?;
            dom.map_foreign_frame(gpfn, frame)?;
            dom.grant_frames.lock().set_gfn(idx, gpfn);
            crate::debug!("d{}: grant-table frame {idx} at gfn {:#x}", dom.id, gpfn);
            Ok(())
        }
        xenmem::SPACE_GMFN_FOREIGN => add_foreign(c, dom, idx, gpfn, foreign_domid),
        _ => Err(ENOSYS),
    }
}

/// gmfn_foreign (Xen's p2m_add_foreign): maps frame `fgfn` of domain `foreign_domid` at `gpfn` of `tdom`, with a
/// reference on it. Only the hardware domain may hold foreign mappings (-EPERM); the foreign domain must exist
/// (-ESRCH) and not be the caller (-EPERM) or the target (-EINVAL); its frame must be RAM (-EINVAL). RAM at
/// `gpfn` is freed; a foreign or grant mapping there is kept (-ENXIO).
fn add_foreign(c: &Ctx, tdom: &Arc<Domain>, fgfn: u64, gpfn: u64, foreign_domid: u16) -> Result<(), Errno> {
    if !tdom.is_privileged() {
        return Err(EPERM);
    }
    let fdom = domain::get(foreign_domid).ok_or(ESRCH)?;
    if Arc::ptr_eq(&fdom, c.dom) {
        return Err(EPERM);
    }
    if Arc::ptr_eq(&fdom, tdom) {
        return Err(EINVAL);
    }
    // The reference is taken while the frame is still the foreign domain's (under its memory lock), so that it
    // cannot be freed between the look-up and the mapping.
    let hpa = {
        let mem = fdom.mem.lock();
        let hpa = mem.ram_frame(fgfn).ok_or(EINVAL)?;
        crate::mm::get_frame_ref(hpa);
        hpa
    };
    let r = tdom.map_borrowed(gpfn, Borrowed::Foreign(hpa), true);
    crate::mm::put_frame_ref(hpa);
    r
}

/// XENMEM_add_to_physmap_batch: each entry's result goes to `errs[]`; the call itself fails only for a bad
/// request (space gmfn_range: -EOPNOTSUPP; unknown domain: -ESRCH; a start extent beyond the size: -EILSEQ;
/// unreadable arrays: -EFAULT; an INVALID_GFN target: -EINVAL).
fn add_to_physmap_batch(c: &Ctx, arg: u64, start: u64) -> HResult {
    if start > u64::from(u16::MAX) {
        return Err(EDOM);
    }
    let b: XenAddToPhysmapBatch = c.read(arg)?;
    let space = u32::from(b.space);
    if space == xenmem::SPACE_GMFN_RANGE {
        return Err(EOPNOTSUPP);
    }
    let dom = target(c, b.domid)?;
    let size = u64::from(b.size);
    if size < start || (size == start && start != 0) {
        return Err(EILSEQ);
    }
    if space == xenmem::SPACE_DEV_MMIO && b.foreign_domid != 0 {
        return Err(EOPNOTSUPP);
    }
    for i in start..size {
        let idx: u64 = c.read(b.idxs.wrapping_add(8 * i))?;
        let gpfn: u64 = c.read(b.gpfns.wrapping_add(8 * i))?;
        if gpfn == u64::MAX {
            return Err(EINVAL);
        }
        let rc = match add_one(c, &dom, space, idx, gpfn, b.foreign_domid) {
            Ok(()) => 0i32,
            Err(e) => -i32::from(e.get()),
        };
        c.write(b.errs.wrapping_add(4 * i), &rc)?;
    }
    Ok(Action::Return(0))
}

/// Frames of a resource of `dom` (Xen's resource_max_frames): its `max_grant_frames` shared grant-table frames;
/// nothing for the status frames (grant table v1 only), the ioreq server and vmtrace buffers (Keel has neither).
/// Xen answers an unknown type with -EOPNOTSUPP in an unsigned count, so the size query reports that value.
fn resource_max_frames(dom: &Domain, typ: u16, id: u32) -> u32 {
    match (typ, id) {
        (xenmem::RESOURCE_GRANT_TABLE, xenmem::RESOURCE_GRANT_TABLE_SHARED) => dom.config.limits.max_grant_frames,
        (xenmem::RESOURCE_GRANT_TABLE | xenmem::RESOURCE_IOREQ_SERVER | xenmem::RESOURCE_VMTRACE_BUF, _) => 0,
        _ => EOPNOTSUPP.negated() as u32,
    }
}

/// XENMEM_acquire_resource for a translated, hardware-domain caller: the size query (null `frame_list`), or the
/// resource's frames `frame..frame + nr_frames` mapped at the caller's GFNs in `frame_list`. Another domain's
/// resource only (Xen locks the domain as a remote one: the caller's own is -EPERM, DOMID_SELF -ESRCH).
fn acquire_resource(c: &Ctx, arg: u64, start: u64) -> HResult {
    if !c.dom.is_privileged() {
        return Err(EACCES);
    }
    let mut x: XenMemAcquireResource = c.read(arg)?;
    if x.pad != 0 || x.frame >> 32 != 0 || (x.frame + u64::from(x.nr_frames)) >> 32 != 0 {
        return Err(EINVAL);
    }
    let d = domain::get(x.domid).ok_or(ESRCH)?;
    if Arc::ptr_eq(&d, c.dom) {
        return Err(EPERM);
    }
    let max = resource_max_frames(&d, x.typ, x.id);
    if max == 0 {
        return Err(EINVAL);
    }
    if x.frame_list == 0 {
        if x.nr_frames != 0 || start != 0 {
            return Err(EINVAL);
        }
        x.nr_frames = max;
        c.write(arg + 8, &x.nr_frames)?;
        return Ok(Action::Return(0));
    }
    if start >= u64::from(x.nr_frames) || x.nr_frames > u32::MAX >> xenmem::EXTENT_SHIFT {
        return Err(EINVAL);
    }
    let (mut frame, mut left, mut list) = (x.frame + start, u64::from(x.nr_frames) - start, x.frame_list + 8 * start);
    while left > 0 {
        // Xen works in chunks of 32 frames; a failure after a chunk's first frame is -EIO.
        let todo = left.min(32);
        let mfns = match (x.typ, x.id) {
            (xenmem::RESOURCE_GRANT_TABLE, xenmem::RESOURCE_GRANT_TABLE_SHARED) => {
                let last = usize::try_from(frame + todo - 1).map_err(|_| EINVAL)?;
                grant::table_frame(&d, last)?;
                let frames = d.grant_frames.lock();
                frames.frames()[frame as usize..=last].to_vec()
            }
            (xenmem::RESOURCE_GRANT_TABLE, _) => return Err(EINVAL),
            _ => return Err(EOPNOTSUPP),
        };
        for (i, &mfn) in mfns.iter().enumerate() {
            let gfn: u64 = c.read(list + 8 * i as u64)?;
            if let Err(e) = c.dom.map_borrowed(gfn, Borrowed::Foreign(mfn), true) {
                return Err(if i == 0 { e } else { EIO });
            }
        }
        frame += todo;
        left -= todo;
        list += 8 * todo;
    }
    Ok(Action::Return(0))
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

    // ---- Foreign mappings (privcmd's MMAPBATCH_V2 and MMAP_RESOURCE) ----

    use keel_abi::shared_info::{XenAddToPhysmapBatch, XenMemAcquireResource, XenRemoveFromPhysmap};

    const IDXS: u64 = 0x2000;
    const GPFNS: u64 = 0x2100;
    const ERRS: u64 = 0x2200;

    /// A privileged domain (dom0's rights) and an ordinary one.
    fn pair() -> (Arc<Domain>, Arc<Domain>) {
        let d0 = testing::domain(1, 4);
        d0.privileged.store(true, core::sync::atomic::Ordering::Release);
        (d0, testing::domain(1, 4))
    }

    /// One gmfn_foreign entry, as Linux's privcmd sends it: (the call's value, errs[0]).
    fn foreign(dom: &Arc<Domain>, fdom: u16, fgfn: u64, gpfn: u64) -> (i64, i32) {
        foreign_space(dom, xenmem::SPACE_GMFN_FOREIGN as u16, fdom, fgfn, gpfn)
    }

    fn foreign_space(dom: &Arc<Domain>, space: u16, fdom: u16, fgfn: u64, gpfn: u64) -> (i64, i32) {
        put(dom, IDXS, &fgfn);
        put(dom, GPFNS, &gpfn);
        put(dom, ERRS, &0x5555_5555u32);
        let b = XenAddToPhysmapBatch {
            domid: keel_abi::DOMID_SELF,
            space,
            size: 1,
            foreign_domid: fdom,
            idxs: IDXS,
            gpfns: GPFNS,
            errs: ERRS,
        };
        put(dom, ARG, &b);
        let rc = testing::hypercall(dom, 0, nr::MEMORY_OP, [xenmem::ADD_TO_PHYSMAP_BATCH, ARG, 0, 0, 0]);
        (rc, get(dom, ERRS))
    }

    fn remove(dom: &Arc<Domain>, gpfn: u64) -> i64 {
        put(dom, ARG, &XenRemoveFromPhysmap { domid: keel_abi::DOMID_SELF, pad: [0; 3], gpfn });
        testing::hypercall(dom, 0, nr::MEMORY_OP, [xenmem::REMOVE_FROM_PHYSMAP, ARG, 0, 0, 0])
    }

    fn neg(e: keel_abi::hypercall::errno::Errno) -> i32 {
        e.negated() as i32
    }

    #[test]
    fn gmfn_foreign_errors_follow_xen() {
        let (d0, du) = pair();
        // Only the hardware domain may hold foreign mappings.
        assert_eq!(foreign(&du, d0.id, 0x10, 0x20), (0, neg(EPERM)));
        assert_eq!(foreign(&d0, 0x7000, 0x10, 0x20), (0, neg(ESRCH)), "no such domain");
        assert_eq!(foreign(&d0, keel_abi::DOMID_SELF, 0x10, 0x20), (0, neg(ESRCH)), "DOMID_SELF is no domain");
        assert_eq!(foreign(&d0, d0.id, 0x10, 0x20), (0, neg(EPERM)), "itself");
        assert_eq!(foreign(&d0, du.id, 0x10_0000, 0x20), (0, neg(EINVAL)), "not RAM of the foreign domain");
        assert_eq!(foreign(&d0, du.id, 0x10, 1 << 40), (0, neg(EINVAL)), "target GFN out of range");
        assert_eq!(foreign(&d0, du.id, 0x10, u64::MAX).0, EINVAL.negated(), "INVALID_GFN");
        assert_eq!(foreign_space(&d0, 3, du.id, 0x10, 0x20).0, EOPNOTSUPP.negated(), "gmfn_range");
        assert_eq!(foreign_space(&d0, 5, 1, 0x10, 0x20).0, EOPNOTSUPP.negated(), "dev_mmio with res0 set");
        // The single-entry call does not take gmfn_foreign.
        put(&d0, ARG, &XenAddToPhysmap { domid: keel_abi::DOMID_SELF, size: 0, space: 4, idx: 0x10, gpfn: 0x20 });
        assert_eq!(testing::hypercall(&d0, 0, nr::MEMORY_OP, [xenmem::ADD_TO_PHYSMAP, ARG, 0, 0, 0]), ENOSYS.negated());
        // Nothing changed on the failures.
        assert_eq!(d0.mem.lock().borrowed_count(), 0);
        assert_eq!(d0.mem.lock().tot_pages, 1024);
        assert_eq!(remove(&d0, 0x10_0000), ENOENT.negated(), "nothing mapped there");
        crate::domain::destroy(&d0);
        crate::domain::destroy(&du);
    }

    /// The foreign frame is shared (writes show on both sides), referenced while mapped (its owner's death does
    /// not free it), released by remove_from_physmap; dom0's RAM that the mapping replaced is freed.
    #[test]
    fn gmfn_foreign_maps_with_a_reference() {
        let (d0, du) = pair();
        let (theirs, mine) = (hpa(&du, 0x10), hpa(&d0, 0x20));
        assert_eq!(foreign(&d0, du.id, 0x10, 0x20), (0, 0));
        assert_eq!(hpa(&d0, 0x20), theirs);
        assert!(!host_frames::is_live(mine), "the replaced RAM frame is freed (no vCPU runs)");
        assert_eq!(d0.mem.lock().tot_pages, 1023);
        assert_eq!(host_frames_refs(theirs), 1);
        put(&du, 0x10008, &0xfeed_u64);
        assert_eq!(get::<u64>(&d0, 0x20008), 0xfeed);
        put(&d0, 0x20010, &0xbeef_u64);
        assert_eq!(get::<u64>(&du, 0x10010), 0xbeef);
        // A second mapping over the first is refused (Xen: -ENXIO), also for shared_info.
        assert_eq!(foreign(&d0, du.id, 0x11, 0x20), (0, neg(ENXIO)));
        assert_eq!(add(&d0, SHARED_INFO, 0, 0x20), ENXIO.negated());
        // Unmapped: the reference goes, the frame stays the foreign domain's.
        assert_eq!(remove(&d0, 0x20), 0);
        assert_eq!(host_frames_refs(theirs), 0);
        assert!(host_frames::is_live(theirs));
        assert!(d0.mem.lock().translate(0x20000, false).is_err());
        assert_eq!(remove(&d0, 0x20), ENOENT.negated());
        // Mapped again into the now empty slot, then the foreign domain dies: the frame outlives it until unmapped.
        assert_eq!(foreign(&d0, du.id, 0x10, 0x20), (0, 0));
        let ram = hpa(&du, 0x11);
        crate::domain::destroy(&du);
        drop(du);
        assert!(!host_frames::is_live(ram), "the dead domain's other RAM is freed");
        assert!(host_frames::is_live(theirs), "a mapped frame was freed with its domain");
        assert_eq!(get::<u64>(&d0, 0x20008), 0xfeed);
        assert_eq!(remove(&d0, 0x20), 0);
        assert!(!host_frames::is_live(theirs), "freed with the last reference");
        // remove_from_physmap of RAM frees it.
        let ram = hpa(&d0, 0x21);
        assert_eq!(remove(&d0, 0x21), 0);
        assert!(!host_frames::is_live(ram));
        assert_eq!(d0.mem.lock().tot_pages, 1022);
        crate::domain::destroy(&d0);
    }

    /// A mapping still in place when the mapper dies drops its reference then (no leak).
    #[test]
    fn foreign_mapping_is_released_with_the_mapper() {
        let (d0, du) = pair();
        let theirs = hpa(&du, 0x30);
        assert_eq!(foreign(&d0, du.id, 0x30, 0x40), (0, 0));
        crate::domain::destroy(&d0);
        drop(d0);
        assert_eq!(host_frames_refs(theirs), 0);
        crate::domain::destroy(&du);
        drop(du);
        assert!(!host_frames::is_live(theirs));
    }

    fn host_frames_refs(hpa: u64) -> u32 {
        crate::mm::frame_refs(hpa)
    }

    fn acquire(dom: &Arc<Domain>, x: XenMemAcquireResource) -> (i64, XenMemAcquireResource) {
        put(dom, ARG, &x);
        let rc = testing::hypercall(dom, 0, nr::MEMORY_OP, [xenmem::ACQUIRE_RESOURCE, ARG, 0, 0, 0]);
        (rc, get(dom, ARG))
    }

    fn gnttab_res(domid: u16, id: u32, frame: u64, nr_frames: u32, frame_list: u64) -> XenMemAcquireResource {
        XenMemAcquireResource { domid, typ: 1, id, nr_frames, pad: 0, frame, frame_list }
    }

    #[test]
    fn acquire_resource_grant_table() {
        let (d0, du) = pair();
        // Size query.
        assert_eq!(acquire(&du, gnttab_res(d0.id, 0, 0, 0, 0)).0, EACCES.negated(), "not the hardware domain");
        let (rc, x) = acquire(&d0, gnttab_res(du.id, 0, 0, 0, 0));
        assert_eq!((rc, x.nr_frames), (0, 64));
        assert_eq!(acquire(&d0, gnttab_res(du.id, 1, 0, 0, 0)).0, EINVAL.negated(), "status frames: v1 only");
        assert_eq!(acquire(&d0, gnttab_res(d0.id, 0, 0, 0, 0)).0, EPERM.negated(), "its own table");
        assert_eq!(acquire(&d0, gnttab_res(keel_abi::DOMID_SELF, 0, 0, 0, 0)).0, ESRCH.negated());
        assert_eq!(acquire(&d0, gnttab_res(0x7000, 0, 0, 0, 0)).0, ESRCH.negated());
        let mut odd = gnttab_res(du.id, 0, 0, 0, 0);
        odd.typ = 7;
        let (rc, x) = acquire(&d0, odd);
        assert_eq!((rc, x.nr_frames), (0, EOPNOTSUPP.negated() as u32), "Xen's unsigned -EOPNOTSUPP");
        odd.nr_frames = 1;
        odd.frame_list = GPFNS;
        assert_eq!(acquire(&d0, odd).0, EOPNOTSUPP.negated());
        odd.typ = 2;
        assert_eq!(acquire(&d0, odd).0, EINVAL.negated(), "no vmtrace buffers");
        let mut padded = gnttab_res(du.id, 0, 0, 0, 0);
        padded.pad = 1;
        assert_eq!(acquire(&d0, padded).0, EINVAL.negated());
        assert_eq!(acquire(&d0, gnttab_res(du.id, 0, 0, 0, GPFNS)).0, EINVAL.negated(), "no frames asked");
        assert_eq!(acquire(&d0, gnttab_res(du.id, 0, 1 << 32, 1, GPFNS)).0, EINVAL.negated());
        assert_eq!(acquire(&d0, gnttab_res(du.id, 0, 63, 2, GPFNS)).0, EINVAL.negated(), "beyond 64 frames");
        assert_eq!(acquire(&d0, gnttab_res(du.id, 1, 0, 1, GPFNS)).0, EINVAL.negated());
        // Two frames mapped at dom0's GFNs 0x50 and 0x51; the domain's table grows to them.
        put(&d0, GPFNS, &[0x50u64, 0x51]);
        assert_eq!(acquire(&d0, gnttab_res(du.id, 0, 0, 2, GPFNS)).0, 0);
        let frames = du.grant_frames.lock().frames().to_vec();
        assert_eq!(frames.len(), 2);
        assert_eq!((hpa(&d0, 0x50), hpa(&d0, 0x51)), (frames[0], frames[1]));
        // What the domain writes in its table (here its entry 1: permit_access to d0, frame 0x1234) shows in dom0.
        assert_eq!(add(&du, GRANT, 0, 0x80), 0);
        put(&du, 0x80008, &[1u16, d0.id]);
        put(&du, 0x8000c, &0x1234u32);
        assert_eq!(get::<[u16; 2]>(&d0, 0x50008), [1, d0.id]);
        assert_eq!(get::<u32>(&d0, 0x5000c), 0x1234);
        // The frames outlive their domain while mapped, and go with the last reference.
        crate::domain::destroy(&du);
        drop(du);
        assert!(host_frames::is_live(frames[0]) && host_frames::is_live(frames[1]));
        assert_eq!((remove(&d0, 0x50), remove(&d0, 0x51)), (0, 0));
        assert!(!host_frames::is_live(frames[0]) && !host_frames::is_live(frames[1]));
        crate::domain::destroy(&d0);
    }

    /// A foreign frame with a vcpu_info registered in it is pinned: remove_from_physmap refuses (-EBUSY) instead of
    /// dropping the reference while Keel still writes there; once the area moves, it goes.
    #[test]
    fn pinned_foreign_mapping_is_not_removed() {
        let (d0, du) = pair();
        let theirs = hpa(&du, 0x10);
        assert_eq!(foreign(&d0, du.id, 0x10, 0x20), (0, 0));
        put(&d0, ARG, &VcpuRegisterVcpuInfo { mfn: 0x20, offset: 0, rsvd: 0 });
        assert_eq!(vcpu_op(&d0, vcpuop::REGISTER_VCPU_INFO, 0), 0);
        assert_eq!(remove(&d0, 0x20), EBUSY.negated());
        assert_eq!(host_frames_refs(theirs), 1);
        assert_eq!(hpa(&d0, 0x20), theirs);
        crate::domain::destroy(&d0);
        drop(d0);
        assert_eq!(host_frames_refs(theirs), 0);
        crate::domain::destroy(&du);
    }

    // ---- Ballooning: the reservation calls for the caller itself ----

    use keel_abi::shared_info::XenMemoryReservation;

    const LIST: u64 = 0x3000;

    /// A reservation call (`op`) by `caller` for `domid` over `gfns` (extents of 2^order pages); its value.
    fn reserve(caller: &Arc<Domain>, op: u64, domid: u16, gfns: &[u64], order: u32) -> i64 {
        for (i, g) in gfns.iter().enumerate() {
            put(caller, LIST + 8 * i as u64, g);
        }
        let r = XenMemoryReservation {
            extent_start: LIST,
            nr_extents: gfns.len() as u64,
            extent_order: order,
            domid,
            ..Default::default()
        };
        put(caller, ARG, &r);
        testing::hypercall(caller, 0, nr::MEMORY_OP, [op, ARG, 0, 0, 0])
    }

    fn decrease(dom: &Arc<Domain>, gfns: &[u64], order: u32) -> i64 {
        reserve(dom, xenmem::DECREASE_RESERVATION, keel_abi::DOMID_SELF, gfns, order)
    }

    fn populate(dom: &Arc<Domain>, gfns: &[u64], order: u32) -> i64 {
        reserve(dom, xenmem::POPULATE_PHYSMAP, keel_abi::DOMID_SELF, gfns, order)
    }

    /// XENMEM_current_reservation (or maximum_reservation) of `domid`, asked by `caller`.
    fn stat(caller: &Arc<Domain>, op: u64, domid: u16) -> i64 {
        put(caller, ARG, &domid);
        testing::hypercall(caller, 0, nr::MEMORY_OP, [op, ARG, 0, 0, 0])
    }

    fn current(dom: &Arc<Domain>) -> i64 {
        stat(dom, xenmem::CURRENT_RESERVATION, keel_abi::DOMID_SELF)
    }

    /// What a balloon driver does: pages given back leave the domain and their frames are freed; populated
    /// again, they are fresh zeroed frames, up to max_pages and no further.
    #[test]
    fn balloon_down_and_up() {
        let dom = testing::domain(1, 4);
        assert_eq!(current(&dom), 1024);
        assert_eq!(stat(&dom, xenmem::MAXIMUM_RESERVATION, keel_abi::DOMID_SELF), 1024);
        let gfns: alloc::vec::Vec<u64> = (0x100..0x108).collect();
        let frames: alloc::vec::Vec<u64> = gfns.iter().map(|&g| hpa(&dom, g)).collect();
        for &g in &gfns {
            put(&dom, g << 12, &0xaaaa_5555_u64);
        }
        assert_eq!(decrease(&dom, &gfns, 0), 8);
        assert_eq!(current(&dom), 1016);
        assert_eq!(dom.mem.lock().tot_pages, 1016);
        for (&g, &f) in gfns.iter().zip(&frames) {
            assert!(dom.mem.lock().translate(g << 12, false).is_err(), "gfn {g:#x} still mapped");
            assert!(!host_frames::is_live(f), "frame of gfn {g:#x} not freed");
        }
        assert_eq!(dom.mem.lock().deferred_frames(), 0);
        // Given back twice: the second time there is nothing at the GFN.
        assert_eq!(decrease(&dom, &gfns[..1], 0), 0);
        // Back again: zeroed RAM, counted; a GFN that has RAM already is refused.
        assert_eq!(populate(&dom, &gfns, 0), 8);
        assert_eq!(current(&dom), 1024);
        for &g in &gfns {
            assert_eq!(get::<u64>(&dom, g << 12), 0, "gfn {g:#x} came back with old contents");
        }
        assert_eq!(populate(&dom, &[0x200], 0), 0, "RAM is there already");
        // max_pages bounds it: one page beyond RAM is refused until max_mem is raised.
        assert_eq!(populate(&dom, &[0x400], 0), 0, "past max_pages");
        assert_eq!(current(&dom), 1024);
        dom.set_max_pages(1025);
        assert_eq!(stat(&dom, xenmem::MAXIMUM_RESERVATION, keel_abi::DOMID_SELF), 1025);
        assert_eq!(populate(&dom, &[0x400, 0x401], 0), 1, "the second one is past max_pages");
        assert_eq!(current(&dom), 1025);
        let extra = hpa(&dom, 0x400);
        crate::domain::destroy(&dom);
        drop(dom);
        assert!(!host_frames::is_live(extra), "a populated frame outlived its domain");
    }

    /// Larger extents: aligned ones go whole; a misaligned one, or one above an ordinary domain's order 9, is
    /// refused before anything is removed; a list stops at its first bad extent and says how many went.
    #[test]
    fn decrease_extents_and_bad_requests() {
        let dom = testing::domain(1, 4);
        let four: alloc::vec::Vec<u64> = (0x10..0x14).map(|g| hpa(&dom, g)).collect();
        assert_eq!(decrease(&dom, &[0x10], 2), 1);
        assert!(four.iter().all(|&f| !host_frames::is_live(f)));
        assert_eq!(current(&dom), 1020);
        assert_eq!(decrease(&dom, &[0x21], 2), 0, "misaligned");
        assert_eq!(decrease(&dom, &[0], 10), 0, "order 10 from an ordinary domain");
        assert_eq!(decrease(&dom, &[0x200], 9), 1, "a 2 MiB extent");
        assert_eq!(current(&dom), 508);
        // GFNs past every limit.
        for bad in [1u64 << 40, 1 << 52, u64::MAX, u64::MAX - 3] {
            assert_eq!(decrease(&dom, &[bad], 0), 0, "gfn {bad:#x}");
            assert_eq!(decrease(&dom, &[bad & !3], 2), 0, "gfn {bad:#x}, order 2");
        }
        // Stops at the first failing extent: what follows stays.
        let (a, c) = (hpa(&dom, 0x30), hpa(&dom, 0x32));
        assert_eq!(decrease(&dom, &[0x30, 0x10, 0x32], 0), 1);
        assert!(!host_frames::is_live(a) && host_frames::is_live(c));
        assert_eq!(hpa(&dom, 0x32), c);
        // A 4-page extent with a hole in it: the pages before the hole go, the extent is not counted.
        let (p, q) = (hpa(&dom, 0x40), hpa(&dom, 0x42));
        assert_eq!(decrease(&dom, &[0x41], 0), 1);
        assert_eq!(decrease(&dom, &[0x40], 2), 0);
        assert!(!host_frames::is_live(p), "the page before the hole went");
        assert!(host_frames::is_live(q), "the page after the hole stays");
        assert_eq!(current(&dom), 505);
        // More extents than a continuation can encode, or an unreadable argument: nothing done.
        let huge = XenMemoryReservation { extent_start: LIST, nr_extents: 1 << 26, ..Default::default() };
        put(&dom, LIST, &0x50u64);
        put(&dom, ARG, &XenMemoryReservation { domid: keel_abi::DOMID_SELF, ..huge });
        assert_eq!(testing::hypercall(&dom, 0, nr::MEMORY_OP, [xenmem::DECREASE_RESERVATION, ARG, 0, 0, 0]), 0);
        assert_eq!(
            testing::hypercall(&dom, 0, nr::MEMORY_OP, [xenmem::DECREASE_RESERVATION, 0x8000_0000, 0, 0, 0]),
            0,
            "unreadable argument"
        );
        // A list that runs into memory the caller cannot read stops there; a long list of one GFN stops at the
        // second (the page is gone).
        let r = XenMemoryReservation {
            extent_start: (0x200 << 12) - 8,
            nr_extents: (u32::MAX >> 6).into(),
            domid: keel_abi::DOMID_SELF,
            ..Default::default()
        };
        put(&dom, (0x200 << 12) - 8, &0x50u64);
        put(&dom, ARG, &r);
        assert_eq!(testing::hypercall(&dom, 0, nr::MEMORY_OP, [xenmem::DECREASE_RESERVATION, ARG, 0, 0, 0]), 1);
        assert_eq!(current(&dom), 504);
        // A continuation's start extent: the extents before it are skipped; at or past the end, none is done.
        put(&dom, LIST, &[0x60u64, 0x61, 0x62]);
        put(&dom, ARG, &XenMemoryReservation { extent_start: LIST, nr_extents: 3, domid: keel_abi::DOMID_SELF, ..r });
        let cont = |start: u64| xenmem::DECREASE_RESERVATION | start << xenmem::EXTENT_SHIFT;
        assert_eq!(testing::hypercall(&dom, 0, nr::MEMORY_OP, [cont(2), ARG, 0, 0, 0]), 3);
        assert!(
            dom.mem.lock().translate(0x61 << 12, false).is_ok() && dom.mem.lock().translate(0x62 << 12, false).is_err()
        );
        assert_eq!(testing::hypercall(&dom, 0, nr::MEMORY_OP, [cont(5), ARG, 0, 0, 0]), 5);
        assert_eq!(current(&dom), 503);
        // Address bits of 12 or less, populate-on-demand: refused as Xen does.
        put(&dom, LIST, &0x62u64);
        for flags in [12u32, 1, xenmem::MEMF_POPULATE_ON_DEMAND] {
            put(&dom, ARG, &XenMemoryReservation { extent_start: LIST, nr_extents: 1, mem_flags: flags, ..r });
            assert_eq!(testing::hypercall(&dom, 0, nr::MEMORY_OP, [xenmem::POPULATE_PHYSMAP, ARG, 0, 0, 0]), 0);
        }
        assert_eq!(current(&dom), 503);
        assert_eq!(dom.mem.lock().unmapped_frames().len(), 0);
        crate::domain::destroy(&dom);
    }

    /// Frames the domain does not own, or that Keel writes through, are not given back: shared_info, a grant
    /// frame, a pinned vcpu_info frame (each -ENXIO/-EBUSY, so the call returns 0 and nothing moves).
    #[test]
    fn decrease_leaves_frames_it_does_not_own() {
        let dom = testing::domain(1, 4);
        assert_eq!(add(&dom, SHARED_INFO, 0, 0x20), 0);
        assert_eq!(add(&dom, GRANT, 0, 0x21), 0);
        let grant_frame = dom.grant_frames.lock().get(0).unwrap();
        put(&dom, ARG, &VcpuRegisterVcpuInfo { mfn: 0x22, offset: 0, rsvd: 0 });
        assert_eq!(vcpu_op(&dom, vcpuop::REGISTER_VCPU_INFO, 0), 0);
        let pinned = hpa(&dom, 0x22);
        let before = current(&dom);
        for g in [0x20, 0x21, 0x22] {
            assert_eq!(decrease(&dom, &[g], 0), 0, "gfn {g:#x}");
        }
        assert_eq!(hpa(&dom, 0x20), dom.shared_info);
        assert_eq!(hpa(&dom, 0x21), grant_frame);
        assert_eq!(hpa(&dom, 0x22), pinned);
        assert!(host_frames::is_live(pinned));
        assert_eq!(current(&dom), before);
        // Inside a larger extent the call stops there too; the pages before it are given back.
        let p = hpa(&dom, 0x23);
        assert_eq!(decrease(&dom, &[0x20], 2), 0);
        assert!(host_frames::is_live(p), "pages after the refused one stay");
        crate::domain::destroy(&dom);
    }

    /// A frame dom0 has foreign-mapped leaves the domU when ballooned out but stays allocated, and shared, until
    /// dom0 unmaps it; dom0 cannot give back the foreign frame in its own p2m (it is not dom0's).
    #[test]
    fn decreased_frame_mapped_by_dom0_lives_until_unmapped() {
        let (d0, du) = pair();
        let theirs = hpa(&du, 0x10);
        assert_eq!(foreign(&d0, du.id, 0x10, 0x20), (0, 0));
        put(&du, 0x10000, &0x1234_u64);
        assert_eq!(decrease(&du, &[0x10], 0), 1);
        assert_eq!(current(&du), 1023);
        assert!(du.mem.lock().translate(0x10000, false).is_err());
        assert!(host_frames::is_live(theirs), "freed while dom0 maps it");
        assert_eq!(get::<u64>(&d0, 0x20000), 0x1234);
        assert_eq!(decrease(&d0, &[0x20], 0), 0, "dom0 does not own the foreign frame");
        assert_eq!(host_frames_refs(theirs), 1);
        assert_eq!(remove(&d0, 0x20), 0);
        assert!(!host_frames::is_live(theirs), "not freed with the last reference");
        // Populated again, the GFN gets a fresh frame.
        assert_eq!(populate(&du, &[0x10], 0), 1);
        assert_eq!(get::<u64>(&du, 0x10000), 0);
        crate::domain::destroy(&d0);
        crate::domain::destroy(&du);
    }

    /// A vCPU that may be in the guest can still hold a given-back frame's translation: the frame is freed
    /// once every such vCPU has flushed (the deferred free of replaced frames), not at the call.
    #[test]
    fn decreased_frames_wait_for_the_flush() {
        let dom = testing::domain(2, 4);
        for v in &dom.vcpus {
            v.set_state(VcpuState::Running);
        }
        let f = [hpa(&dom, 0x70), hpa(&dom, 0x71)];
        assert_eq!(decrease(&dom, &[0x70, 0x71], 0), 2);
        assert_eq!(current(&dom), 1022, "accounted at once");
        assert!(f.iter().all(|&x| host_frames::is_live(x)));
        assert_eq!(dom.mem.lock().deferred_frames(), 2);
        dom.vcpus[0].ack_flush(&dom);
        assert!(f.iter().all(|&x| host_frames::is_live(x)), "freed before vCPU 1 flushed");
        dom.vcpus[1].ack_flush(&dom);
        assert!(f.iter().all(|&x| !host_frames::is_live(x)));
        crate::domain::destroy(&dom);
    }

    /// The toolstack's rights, as Xen's XSM_TARGET: an ordinary domain may not touch another's reservation
    /// (-EPERM), an unknown domain is -ESRCH; the privileged domain may balloon another and read its counts.
    #[test]
    fn reservation_permissions() {
        let (d0, du) = pair();
        assert_eq!(reserve(&du, xenmem::DECREASE_RESERVATION, d0.id, &[0x10], 0), EPERM.negated());
        assert_eq!(reserve(&du, xenmem::POPULATE_PHYSMAP, d0.id, &[0x400], 0), EPERM.negated());
        assert_eq!(reserve(&du, xenmem::DECREASE_RESERVATION, 0x7000, &[0x10], 0), ESRCH.negated());
        assert_eq!(stat(&du, xenmem::CURRENT_RESERVATION, d0.id), EPERM.negated());
        assert_eq!(stat(&du, xenmem::MAXIMUM_RESERVATION, 0x7000), ESRCH.negated());
        assert_eq!(current(&d0), 1024);
        // The privileged domain's order limit is above an ordinary one's.
        assert_eq!(reserve(&d0, xenmem::DECREASE_RESERVATION, du.id, &[0], 10), 1);
        assert_eq!(stat(&d0, xenmem::CURRENT_RESERVATION, du.id), 0);
        assert_eq!(stat(&d0, xenmem::MAXIMUM_RESERVATION, du.id), 1024);
        assert_eq!(stat(&d0, xenmem::CURRENT_RESERVATION, du.id), du.mem.lock().tot_pages as i64);
        // current/maximum_reservation take no continuation, and need a readable domid.
        put(&d0, ARG, &keel_abi::DOMID_SELF);
        let cont = xenmem::CURRENT_RESERVATION | 1 << xenmem::EXTENT_SHIFT;
        assert_eq!(testing::hypercall(&d0, 0, nr::MEMORY_OP, [cont, ARG, 0, 0, 0]), EINVAL.negated());
        assert_eq!(
            testing::hypercall(&d0, 0, nr::MEMORY_OP, [xenmem::CURRENT_RESERVATION, 0x8000_0000, 0, 0, 0]),
            EFAULT.negated()
        );
        crate::domain::destroy(&d0);
        crate::domain::destroy(&du);
    }

    /// increase_reservation on a translated domain: frames it owns without a GFN, counted up to max_pages and
    /// freed with the domain.
    #[test]
    fn increase_reservation_is_bounded_and_freed() {
        let dom = testing::domain(1, 4);
        assert_eq!(reserve(&dom, xenmem::INCREASE_RESERVATION, keel_abi::DOMID_SELF, &[0, 0], 0), 0, "at max_pages");
        dom.set_max_pages(1024 + 6);
        assert_eq!(reserve(&dom, xenmem::INCREASE_RESERVATION, keel_abi::DOMID_SELF, &[0, 0, 0], 1), 3);
        assert_eq!(current(&dom), 1030);
        assert_eq!(reserve(&dom, xenmem::INCREASE_RESERVATION, keel_abi::DOMID_SELF, &[0], 0), 0);
        assert_eq!(reserve(&dom, xenmem::INCREASE_RESERVATION, keel_abi::DOMID_SELF, &[0], 10), 0, "order 10");
        let frames = dom.mem.lock().unmapped_frames().to_vec();
        assert_eq!(frames.len(), 6);
        assert!(frames.iter().all(|&f| host_frames::is_live(f)));
        crate::domain::destroy(&dom);
        drop(dom);
        assert!(frames.iter().all(|&f| !host_frames::is_live(f)), "unmapped frames outlived their domain");
    }
}
