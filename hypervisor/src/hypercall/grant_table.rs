//! `grant_table_op`: grant table v1 set-up (size, growth, version), and mapping granted frames into the caller's
//! physical address space and out again (map/unmap_grant_ref; the bookkeeping is [`crate::domain::grant`]'s). The
//! table's frames themselves are mapped with XENMEM_add_to_physmap (see `memory`).

use super::{Action, Ctx, HResult};
use crate::domain::{grant, Domain};
use alloc::sync::Arc;
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{
    gnttab, GnttabCopy, GnttabMapGrantRef, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GnttabSwapGrantRef,
    GnttabUnmapGrantRef,
};

/// The most GNTTABOP_copy ops one call takes (-EINVAL above).
pub const COPY_MAX: u64 = 1024;

/// `GNTST_bad_domain`: the status QUERY_SIZE and SETUP_TABLE report for a domain that does not exist.
const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_permission_denied`: the status they report for another domain of an unprivileged caller.
const GNTST_PERMISSION_DENIED: i16 = -8;

/// The domain `domid` names, as Xen's rcu_lock_domain_by_any_id and its XSM_TARGET check (dummy policy) find it:
/// the caller (DOMID_SELF or its own id), or any live domain for a privileged (control) caller. Err(`bad`) when
/// no domain has the id, Err(`perm`) for another domain of an unprivileged caller.
fn target<E>(c: &Ctx, domid: u16, bad: E, perm: E) -> Result<Arc<Domain>, E> {
    if domid == keel_abi::DOMID_SELF || domid == c.dom.id {
        return Ok(c.dom.clone());
    }
    let d = crate::domain::get(domid).ok_or(bad)?;
    if c.dom.is_privileged() {
        Ok(d)
    } else {
        Err(perm)
    }
}

/// GNTTABOP_setup_table's status for `op` (Xen's gnttab_setup_table): the table of `op.dom` grows to
/// `op.nr_frames` frames (GNTST_general_error beyond its `max_grant_frames`, or when the machine has no frame),
/// and `frame_list` gets each frame's number: for a translated domain, which every Keel domain is, the GFN it is
/// mapped at or INVALID_GFN (x86's gnttab_shared_gfn reads the M2P). An entry that cannot be written makes the
/// status GNTST_bad_virt_addr; the others are written still.
fn setup_table(c: &Ctx, op: &GnttabSetupTable) -> i16 {
    let d = match target(c, op.dom, GNTST_BAD_DOMAIN, GNTST_PERMISSION_DENIED) {
        Ok(d) => d,
        Err(st) => return st,
    };
    if op.nr_frames > d.config.limits.max_grant_frames || grant::grow(&d, op.nr_frames as usize).is_err() {
        return grant::status::GENERAL_ERROR;
    }
    let mut status = grant::status::OKAY;
    for i in 0..op.nr_frames {
        let gfn = grant::frame_gfn(&d, i as usize).unwrap_or(gnttab::INVALID_GFN);
        if c.write(op.frame_list.wrapping_add(8 * u64::from(i)), &gfn).is_err() {
            status = grant::status::BAD_VIRT_ADDR;
        }
    }
    status
}

pub fn grant_table_op(c: &mut Ctx) -> HResult {
    // Xen takes the command and the count as 32-bit values.
    let (cmd, arg, count) = (c.args[0] as u32, c.args[1], c.args[2] as u32);
    match u64::from(cmd) {
        gnttab::MAP_GRANT_REF | gnttab::UNMAP_GRANT_REF | gnttab::COPY | gnttab::SWAP_GRANT_REF => {}
        gnttab::SETUP_TABLE | gnttab::QUERY_SIZE | gnttab::SET_VERSION | gnttab::GET_VERSION => {}
        // The rest (transfer, dump_table, unmap_and_replace, get_status_frames, cache_flush, unknown commands): Xen
        // 4.17's hvm_grant_table_op (arch/x86/hvm/hypercall.c) offers them no HVM/PVH caller and answers -ENOSYS.
        // It checks the whole command word, so one with continuation bits set is -ENOSYS too.
        _ => return Err(ENOSYS),
    }
    if (count as i32) < 0 {
        return Err(EINVAL);
    }
    match u64::from(cmd) {
        gnttab::MAP_GRANT_REF => {
            // Each op's status goes back in the op; a fault on the array ends the call with -EFAULT.
            for i in 0..u64::from(count) {
                let at = arg.wrapping_add(i * core::mem::size_of::<GnttabMapGrantRef>() as u64);
                let mut op: GnttabMapGrantRef = c.read(at)?;
                match grant::map(c.dom, op.host_addr, op.flags, op.gref, op.dom) {
                    Ok((handle, hpa)) => {
                        op.status = grant::status::OKAY;
                        op.handle = handle;
                        op.dev_bus_addr = hpa;
                    }
                    Err(st) => op.status = st,
                }
                c.write(at, &op)?;
            }
            Ok(Action::Return(0))
        }
        gnttab::UNMAP_GRANT_REF => {
            for i in 0..u64::from(count) {
                let at = arg.wrapping_add(i * core::mem::size_of::<GnttabUnmapGrantRef>() as u64);
                let mut op: GnttabUnmapGrantRef = c.read(at)?;
                op.status = match grant::unmap(c.dom, op.host_addr, op.handle) {
                    Ok(()) => grant::status::OKAY,
                    Err(st) => st,
                };
                c.write(at, &op)?;
            }
            Ok(Action::Return(0))
        }
        gnttab::COPY => {
            // Xen preempts a long batch with a continuation, which Keel has not: a bound instead, above what
            // Linux sends (netback: at most 2 x 256 ops a batch).
            if u64::from(count) > COPY_MAX {
                return Err(EINVAL);
            }
            for i in 0..u64::from(count) {
                let at = arg.wrapping_add(i * core::mem::size_of::<GnttabCopy>() as u64);
                let mut op: GnttabCopy = c.read(at)?;
                op.status = grant::copy(c.dom, &op);
                c.write(at, &op)?;
            }
            Ok(Action::Return(0))
        }
        gnttab::SWAP_GRANT_REF => {
            // Each op's status goes back in the op (that field only); a fault on the array ends the call.
            for i in 0..u64::from(count) {
                let at = arg.wrapping_add(i * core::mem::size_of::<GnttabSwapGrantRef>() as u64);
                let op: GnttabSwapGrantRef = c.read(at)?;
                let status = grant::swap(c.dom, op.ref_a, op.ref_b);
                c.write(at.wrapping_add(core::mem::offset_of!(GnttabSwapGrantRef, status) as u64), &status)?;
            }
            Ok(Action::Return(0))
        }
        gnttab::SETUP_TABLE => {
            if count != 1 {
                return Err(EINVAL);
            }
            let op: GnttabSetupTable = c.read(arg)?;
            let status = setup_table(c, &op);
            // Only the status goes back, as in Xen.
            c.write(arg.wrapping_add(core::mem::offset_of!(GnttabSetupTable, status) as u64), &status)?;
            Ok(Action::Return(0))
        }
        gnttab::QUERY_SIZE => {
            if count != 1 {
                return Err(EINVAL);
            }
            let mut q: GnttabQuerySize = c.read(arg)?;
            match target(c, q.dom, GNTST_BAD_DOMAIN, GNTST_PERMISSION_DENIED) {
                Err(status) => q.status = status,
                Ok(d) => {
                    q.nr_frames = d.grant_frames.lock().len() as u32;
                    q.max_nr_frames = d.config.limits.max_grant_frames;
                    q.status = 0;
                }
            }
            c.write(arg, &q)?;
            Ok(Action::Return(0))
        }
        gnttab::SET_VERSION => {
            let mut v: GnttabSetVersion = c.read(arg)?;
            // Only the v1 layout is offered (Xen with max_grant_version=1: v2 is -ENOSYS, anything else
            // -EINVAL); the guest is told which version is in force either way.
            let r = match v.version {
                1 => Ok(Action::Return(0)),
                2 => Err(ENOSYS),
                _ => Err(EINVAL),
            };
            v.version = 1;
            c.write(arg, &v)?;
            r
        }
        gnttab::GET_VERSION => {
            // `struct gnttab_get_version`: domid (u16), pad, version (u32, out).
            let dom: u16 = c.read(arg)?;
            target(c, dom, ESRCH, EPERM)?;
            c.write(arg.wrapping_add(4), &GnttabSetVersion { version: 1 })?;
            Ok(Action::Return(0))
        }
        _ => Err(ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, get, put};
    use keel_abi::hypercall::nr;
    use keel_abi::DOMID_SELF;

    const ARG: u64 = 0x1000;

    fn op(dom: &alloc::sync::Arc<crate::domain::Domain>, cmd: u64, count: u64) -> i64 {
        testing::hypercall(dom, 0, nr::GRANT_TABLE_OP, [cmd, ARG, count, 0, 0])
    }

    fn query(dom: &alloc::sync::Arc<crate::domain::Domain>, domid: u16) -> GnttabQuerySize {
        put(dom, ARG, &GnttabQuerySize { dom: domid, ..Default::default() });
        assert_eq!(op(dom, gnttab::QUERY_SIZE, 1), 0);
        get(dom, ARG)
    }

    #[test]
    fn grant_table_errors_follow_xen() {
        let dom = testing::domain(1, 4);
        let other = testing::domain(1, 4);
        // What Xen 4.17's hvm_grant_table_op refuses an HVM/PVH caller (transfer, dump_table, unmap_and_replace,
        // get_status_frames, cache_flush, unknown commands, and a command word with continuation bits, even one
        // it offers): -ENOSYS.
        for cmd in [4, gnttab::DUMP_TABLE, 7, gnttab::GET_STATUS_FRAMES, 12, 13, 99, 0x1006, 0x100b] {
            assert_eq!(op(&dom, cmd, 1), ENOSYS.negated(), "cmd {cmd}");
        }
        put(&dom, ARG, &GnttabQuerySize { dom: DOMID_SELF, ..Default::default() });
        assert_eq!(op(&dom, gnttab::QUERY_SIZE, 2), EINVAL.negated());
        assert_eq!(op(&dom, gnttab::QUERY_SIZE, 0), EINVAL.negated());
        assert_eq!(op(&dom, gnttab::SET_VERSION, 0x8000_0000), EINVAL.negated(), "a negative count");
        let q = query(&dom, DOMID_SELF);
        assert_eq!((q.status, q.nr_frames, q.max_nr_frames), (0, 0, gnttab::MAX_FRAMES));
        assert_eq!(query(&dom, 0x7000).status, GNTST_BAD_DOMAIN);
        assert_eq!(query(&dom, other.id).status, GNTST_PERMISSION_DENIED);
        assert_eq!(testing::hypercall(&dom, 0, nr::GRANT_TABLE_OP, [6, 0x4000_0000, 1, 0, 0]), EFAULT.negated());
        for (version, rc) in [(1, 0), (2, ENOSYS.negated()), (0, EINVAL.negated()), (3, EINVAL.negated())] {
            put(&dom, ARG, &GnttabSetVersion { version });
            assert_eq!(op(&dom, gnttab::SET_VERSION, 1), rc, "version {version}");
            assert_eq!(get::<GnttabSetVersion>(&dom, ARG).version, 1, "the version in force is reported");
        }
        for (domid, rc) in [(DOMID_SELF, 0), (dom.id, 0), (0x7000, ESRCH.negated()), (other.id, EPERM.negated())] {
            put(&dom, ARG, &[domid as u32, 0]);
            assert_eq!(op(&dom, gnttab::GET_VERSION, 1), rc, "domid {domid:#x}");
            assert_eq!(get::<[u32; 2]>(&dom, ARG)[1], if rc == 0 { 1 } else { 0 });
        }
        crate::domain::destroy(&dom);
        crate::domain::destroy(&other);
    }

    use crate::domain::grant::{gtf, map as gm, status as st};
    use crate::mm::host_frames;
    use keel_abi::shared_info::{xenmem, XenAddToPhysmap};

    /// Puts grant-table frame 0 of `dom` at GFN 0x50 and writes entry `gref` (flags, domid, frame).
    fn grant(dom: &alloc::sync::Arc<crate::domain::Domain>, gref: u64, flags: u16, domid: u16, frame: u32) {
        if dom.mem.lock().borrowed(0x50).is_none() && dom.grant_frames.lock().is_empty() {
            put(dom, ARG, &XenAddToPhysmap { domid: DOMID_SELF, size: 0, space: 1, idx: 0, gpfn: 0x50 });
            assert_eq!(testing::hypercall(dom, 0, nr::MEMORY_OP, [xenmem::ADD_TO_PHYSMAP, ARG, 0, 0, 0]), 0);
        }
        put(dom, 0x50000 + gref * 8, &[flags, domid]);
        put(dom, 0x50004 + gref * 8, &frame);
    }

    fn entry_flags(dom: &crate::domain::Domain, gref: u64) -> u16 {
        get(dom, 0x50000 + gref * 8)
    }

    fn map(
        dom: &alloc::sync::Arc<crate::domain::Domain>,
        host_addr: u64,
        flags: u32,
        gref: u32,
        d: u16,
    ) -> GnttabMapGrantRef {
        put(dom, ARG, &GnttabMapGrantRef { host_addr, flags, gref, dom: d, ..Default::default() });
        assert_eq!(op(dom, gnttab::MAP_GRANT_REF, 1), 0);
        get(dom, ARG)
    }

    fn unmap(dom: &alloc::sync::Arc<crate::domain::Domain>, host_addr: u64, handle: u32) -> i16 {
        put(dom, ARG, &GnttabUnmapGrantRef { host_addr, handle, ..Default::default() });
        assert_eq!(op(dom, gnttab::UNMAP_GRANT_REF, 1), 0);
        get::<GnttabUnmapGrantRef>(dom, ARG).status
    }

    fn hpa(dom: &crate::domain::Domain, gfn: u64) -> u64 {
        dom.mem.lock().translate(gfn << 12, false).expect("mapped")
    }

    /// What gntalloc + gntdev do in dom0: a domain grants one of its pages to itself and maps the grant at a
    /// scratch GFN; both GFNs show the same frame until unmapped.
    #[test]
    fn own_grant_maps_and_unmaps() {
        let dom = testing::domain(1, 4);
        grant(&dom, 10, gtf::PERMIT_ACCESS, dom.id, 0x60);
        put(&dom, 0x60000, &0x1122_3344_u64);
        let frame = hpa(&dom, 0x60);
        let m = map(&dom, 0x70000, gm::HOST_MAP, 10, dom.id);
        assert_eq!(m.status, st::OKAY);
        assert_eq!(m.dev_bus_addr, frame);
        assert_eq!(hpa(&dom, 0x70), frame);
        assert_eq!(get::<u64>(&dom, 0x70000), 0x1122_3344);
        put(&dom, 0x70008, &0x55_u64);
        assert_eq!(get::<u64>(&dom, 0x60008), 0x55);
        assert_eq!(entry_flags(&dom, 10), gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING);
        // A second, read-only mapping of the same grant; the read-only one cannot be written.
        let r = map(&dom, 0x71000, gm::HOST_MAP | gm::READONLY, 10, dom.id);
        assert_eq!(r.status, st::OKAY);
        assert!(dom.mem.lock().translate(0x71000, true).is_err());
        assert_eq!(dom.grants.lock().pins(10), Some((1, 1)));
        // Unmap needs the handle and the address it was mapped at; remove_from_physmap cannot take it.
        assert_eq!(unmap(&dom, 0x71000, m.handle), st::GENERAL_ERROR);
        assert_eq!(unmap(&dom, 0x70000, 999), st::BAD_HANDLE);
        assert_eq!(unmap(&dom, 0x70000, m.handle), st::OKAY);
        assert_eq!(entry_flags(&dom, 10), gtf::PERMIT_ACCESS | gtf::READING, "writing clears with the last rw map");
        assert!(dom.mem.lock().translate(0x70000, false).is_err());
        assert_eq!(unmap(&dom, 0x70000, m.handle), st::BAD_HANDLE, "unmapped already");
        assert_eq!(unmap(&dom, 0x71000, r.handle), st::OKAY);
        assert_eq!(entry_flags(&dom, 10), gtf::PERMIT_ACCESS);
        assert_eq!(dom.grants.lock().pins(10), None);
        assert_eq!(dom.grants.lock().mappings(), 0);
        assert_eq!(crate::mm::frame_refs(frame), 0);
        assert!(host_frames::is_live(frame));
        crate::domain::destroy(&dom);
    }

    #[test]
    fn grant_map_errors_follow_xen() {
        let dom = testing::domain(1, 4);
        let other = testing::domain(1, 4);
        grant(&dom, 1, gtf::PERMIT_ACCESS | gtf::READONLY, dom.id, 0x60);
        grant(&dom, 2, gtf::PERMIT_ACCESS, other.id, 0x60);
        grant(&dom, 3, 0, dom.id, 0x60);
        grant(&dom, 4, gtf::PERMIT_ACCESS, dom.id, 0x10_0000);
        let status = |flags, gref, d| map(&dom, 0x70000, flags, gref, d).status;
        assert_eq!(status(0, 1, dom.id), st::BAD_GNTREF, "neither host nor device map");
        assert_eq!(status(gm::HOST_MAP | gm::DEVICE_MAP, 1, dom.id), st::GENERAL_ERROR, "device map from HVM");
        assert_eq!(status(gm::HOST_MAP | gm::CONTAINS_PTE, 1, dom.id), st::GENERAL_ERROR);
        assert_eq!(status(gm::HOST_MAP, 1, 0x7000), st::BAD_DOMAIN);
        assert_eq!(status(gm::HOST_MAP, 1, DOMID_SELF), st::BAD_DOMAIN, "Xen looks the granter up by id");
        assert_eq!(status(gm::HOST_MAP, 512, dom.id), st::BAD_GNTREF, "beyond the table's one frame");
        assert_eq!(status(gm::HOST_MAP, 1, dom.id), st::GENERAL_ERROR, "writable map of a read-only grant");
        assert_eq!(status(gm::HOST_MAP, 2, dom.id), st::GENERAL_ERROR, "granted to another domain");
        assert_eq!(status(gm::HOST_MAP, 3, dom.id), st::GENERAL_ERROR, "not permit_access");
        assert_eq!(status(gm::HOST_MAP, 4, dom.id), st::BAD_PAGE, "not RAM");
        assert_eq!(entry_flags(&dom, 4), gtf::PERMIT_ACCESS, "flags restored");
        assert_eq!(map(&dom, 1 << 60, gm::HOST_MAP | gm::READONLY, 1, dom.id).status, st::GENERAL_ERROR, "bad GFN");
        assert_eq!(dom.grants.lock().mappings(), 0, "failed maps leave no handle");
        assert_eq!(dom.grants.lock().pins(1), None);
        assert_eq!(entry_flags(&dom, 1), gtf::PERMIT_ACCESS | gtf::READONLY);
        assert_eq!(crate::mm::frame_refs(hpa(&dom, 0x60)), 0);
        crate::domain::destroy(&dom);
        crate::domain::destroy(&other);
    }

    /// A domain's `max_grant_frames` bounds its table (QUERY_SIZE reports it, add_to_physmap and acquire_resource
    /// grow no further: -EINVAL), and its `max_maptrack_frames` the grants it may map at once (256 a frame;
    /// GNTST_no_space beyond, as Xen 4.16 and later; 0 frames: none).
    #[test]
    fn grant_limits_are_the_domains() {
        use crate::domain::{grant::MAPTRACK_PER_FRAME, Limits};
        let limits = Limits { max_evtchn_port: 1023, max_grant_frames: 2, max_maptrack_frames: 1 };
        let dom = testing::domain_with_limits(1, 4, limits);
        let q = query(&dom, DOMID_SELF);
        assert_eq!((q.status, q.nr_frames, q.max_nr_frames), (0, 0, 2));
        let add = |idx: u64, gpfn: u64| {
            put(&dom, ARG, &XenAddToPhysmap { domid: DOMID_SELF, size: 0, space: 1, idx, gpfn });
            testing::hypercall(&dom, 0, nr::MEMORY_OP, [xenmem::ADD_TO_PHYSMAP, ARG, 0, 0, 0])
        };
        grant(&dom, 3, gtf::PERMIT_ACCESS, dom.id, 0x60);
        assert_eq!(add(2, 0x51), EINVAL.negated(), "beyond max_grant_frames");
        assert_eq!(add(1, 0x51), 0);
        assert_eq!(query(&dom, DOMID_SELF).nr_frames, 2);
        // One maptrack frame: 256 mappings of the domain's own grant, then no more until one goes.
        let ro = gm::HOST_MAP | gm::READONLY;
        let handles: alloc::vec::Vec<u32> = (0..MAPTRACK_PER_FRAME as u64)
            .map(|i| {
                let m = map(&dom, (0x1000 + i) << 12, ro, 3, dom.id);
                assert_eq!(m.status, st::OKAY, "mapping {i}");
                m.handle
            })
            .collect();
        assert_eq!(map(&dom, 0x2000 << 12, ro, 3, dom.id).status, st::NO_SPACE);
        assert_eq!(unmap(&dom, 0x1005 << 12, handles[5]), st::OKAY);
        let again = map(&dom, 0x2000 << 12, ro, 3, dom.id);
        assert_eq!((again.status, again.handle), (st::OKAY, handles[5]), "the freed handle is reused");
        assert_eq!(dom.grants.lock().mappings(), MAPTRACK_PER_FRAME);
        crate::domain::destroy(&dom);
        // No maptrack frame at all: nothing maps.
        let dom = testing::domain_with_limits(1, 4, Limits { max_maptrack_frames: 0, ..Limits::DEFAULT });
        grant(&dom, 3, gtf::PERMIT_ACCESS, dom.id, 0x60);
        assert_eq!(map(&dom, 0x70000, ro, 3, dom.id).status, st::NO_SPACE);
        assert_eq!(entry_flags(&dom, 3), gtf::PERMIT_ACCESS, "untouched");
        crate::domain::destroy(&dom);
    }

    /// GNTTABOP_setup_table from a translated guest (Xen's gnttab_setup_table, with x86's gnttab_shared_gfn): the
    /// table grows to `nr_frames`, `frame_list` gets the GFN each frame is mapped at or INVALID_GFN, and only the
    /// status is written back; statuses and errnos as Xen's.
    #[test]
    fn setup_table_follows_xen() {
        use crate::domain::Limits;
        const LIST: u64 = 0x2000;
        const NONE: u64 = gnttab::INVALID_GFN;
        let dom = testing::domain_with_limits(1, 4, Limits { max_grant_frames: 4, ..Limits::DEFAULT });
        let other = testing::domain(1, 4);
        let setup = |d: &alloc::sync::Arc<crate::domain::Domain>, domid: u16, nr_frames: u32, frame_list: u64| {
            put(d, ARG, &GnttabSetupTable { dom: domid, nr_frames, status: 0x55, frame_list, ..Default::default() });
            assert_eq!(op(d, gnttab::SETUP_TABLE, 1), 0);
            let out: GnttabSetupTable = get(d, ARG);
            assert_eq!((out.dom, out.nr_frames, out.frame_list), (domid, nr_frames, frame_list), "only the status");
            out.status
        };
        let list = |d: &crate::domain::Domain| get::<[u64; 5]>(d, LIST);
        // Frame 0 mapped at GFN 0x50 (by `grant`); the table grows from 1 to 3 frames, the new ones mapped nowhere.
        grant(&dom, 0, gtf::PERMIT_ACCESS, dom.id, 0x60);
        put(&dom, LIST, &[0x1111_u64; 5]);
        assert_eq!(setup(&dom, DOMID_SELF, 3, LIST), st::OKAY);
        assert_eq!(list(&dom), [0x50, NONE, NONE, 0x1111, 0x1111]);
        assert_eq!(query(&dom, DOMID_SELF).nr_frames, 3);
        // Frame 2 mapped at 0x52 is reported there; a smaller request writes only its entries and shrinks nothing.
        put(&dom, ARG, &XenAddToPhysmap { domid: DOMID_SELF, size: 0, space: 1, idx: 2, gpfn: 0x52 });
        assert_eq!(testing::hypercall(&dom, 0, nr::MEMORY_OP, [xenmem::ADD_TO_PHYSMAP, ARG, 0, 0, 0]), 0);
        put(&dom, LIST, &[0x1111_u64; 5]);
        assert_eq!(setup(&dom, dom.id, 3, LIST), st::OKAY);
        assert_eq!(list(&dom), [0x50, NONE, 0x52, 0x1111, 0x1111]);
        put(&dom, LIST, &[0x1111_u64; 5]);
        assert_eq!(setup(&dom, DOMID_SELF, 0, LIST), st::OKAY);
        assert_eq!(list(&dom), [0x1111; 5], "nothing asked, nothing written");
        assert_eq!(query(&dom, DOMID_SELF).nr_frames, 3);
        // Something else mapped over GFN 0x50 (shared_info): frame 0 is mapped nowhere now.
        put(&dom, ARG, &XenAddToPhysmap { domid: DOMID_SELF, size: 0, space: 0, idx: 0, gpfn: 0x50 });
        assert_eq!(testing::hypercall(&dom, 0, nr::MEMORY_OP, [xenmem::ADD_TO_PHYSMAP, ARG, 0, 0, 0]), 0);
        assert_eq!(setup(&dom, DOMID_SELF, 1, LIST), st::OKAY);
        assert_eq!(list(&dom)[0], NONE);
        // Beyond max_grant_frames: GNTST_general_error, the table as it was.
        put(&dom, LIST, &[0x1111_u64; 5]);
        assert_eq!(setup(&dom, DOMID_SELF, 5, LIST), st::GENERAL_ERROR);
        assert_eq!((query(&dom, DOMID_SELF).nr_frames, list(&dom)), (3, [0x1111; 5]));
        // A frame list that cannot be written: GNTST_bad_virt_addr, and the table has grown.
        assert_eq!(setup(&dom, DOMID_SELF, 4, 0x4000_0000), st::BAD_VIRT_ADDR);
        assert_eq!(query(&dom, DOMID_SELF).nr_frames, 4);
        // Another domain: unknown, or not the unprivileged caller's; a privileged caller grows another's table and
        // is told its GFNs.
        assert_eq!(setup(&dom, 0x7000, 1, LIST), st::BAD_DOMAIN);
        assert_eq!(setup(&dom, other.id, 1, LIST), st::PERMISSION_DENIED);
        assert_eq!(other.grant_frames.lock().len(), 0);
        dom.privileged.store(true, core::sync::atomic::Ordering::Release);
        assert_eq!(setup(&dom, other.id, 2, LIST), st::OKAY);
        assert_eq!(&list(&dom)[..2], &[NONE, NONE]);
        let q = query(&dom, other.id);
        assert_eq!((q.status, q.nr_frames, q.max_nr_frames), (st::OKAY, 2, gnttab::MAX_FRAMES), "so does QUERY_SIZE");
        put(&dom, ARG, &[u32::from(other.id), 0]);
        assert_eq!(op(&dom, gnttab::GET_VERSION, 1), 0, "and GET_VERSION");
        // One op only (-EINVAL otherwise); an unreadable op is -EFAULT.
        assert_eq!(op(&dom, gnttab::SETUP_TABLE, 2), EINVAL.negated());
        assert_eq!(op(&dom, gnttab::SETUP_TABLE, 0), EINVAL.negated());
        assert_eq!(testing::hypercall(&dom, 0, nr::GRANT_TABLE_OP, [2, 0x4000_0000, 1, 0, 0]), EFAULT.negated());
        crate::domain::destroy(&dom);
        crate::domain::destroy(&other);
    }

    /// GNTTABOP_swap_grant_ref (Xen's swap_grant_ref, which Xen offers HVM guests): two of the caller's own v1
    /// entries trade places; GNTST_bad_gntref beyond the table, GNTST_eagain while either is mapped; a ref with
    /// itself is nothing to do; each op gets its status (that field only), a fault ends the call.
    #[test]
    fn swap_grant_ref_follows_xen() {
        let dom = testing::domain(1, 4);
        let other = testing::domain(1, 4);
        let swap = |d: &alloc::sync::Arc<crate::domain::Domain>, ref_a: u32, ref_b: u32| {
            put(d, ARG, &GnttabSwapGrantRef { ref_a, ref_b, status: 0x55, pad: 0x66 });
            assert_eq!(op(d, gnttab::SWAP_GRANT_REF, 1), 0);
            let out: GnttabSwapGrantRef = get(d, ARG);
            assert_eq!((out.ref_a, out.ref_b, out.pad), (ref_a, ref_b, 0x66), "only the status is written");
            out.status
        };
        let raw = |gref: u64| get::<u64>(&dom, 0x50000 + gref * 8);
        grant(&dom, 4, gtf::PERMIT_ACCESS, other.id, 0x60);
        grant(&dom, 5, gtf::PERMIT_ACCESS | gtf::READONLY, dom.id, 0x61);
        let (e4, e5) = (raw(4), raw(5));
        assert_eq!(swap(&dom, 4, 5), st::OKAY);
        assert_eq!((raw(4), raw(5)), (e5, e4));
        assert_eq!(swap(&dom, 4, 9), st::OKAY, "with an empty entry");
        assert_eq!((raw(4), raw(9)), (0, e5));
        assert_eq!(swap(&dom, 9, 9), st::OKAY);
        assert_eq!(raw(9), e5, "with itself: unchanged");
        assert_eq!(swap(&dom, 512, 4), st::BAD_GNTREF, "beyond the table's one frame");
        assert_eq!(swap(&dom, 4, 512), st::BAD_GNTREF);
        assert_eq!(swap(&dom, 512, 512), st::BAD_GNTREF, "bounds before the same-ref shortcut");
        // A mapped entry is busy until unmapped: from the other side of the pair too.
        let m = map(&dom, 0x70000, gm::HOST_MAP | gm::READONLY, 9, dom.id);
        assert_eq!(m.status, st::OKAY);
        assert_eq!(swap(&dom, 9, 5), st::EAGAIN);
        assert_eq!(swap(&dom, 5, 9), st::EAGAIN);
        assert_eq!(raw(9) as u16, gtf::PERMIT_ACCESS | gtf::READONLY | gtf::READING, "left as it was");
        assert_eq!(unmap(&dom, 0x70000, m.handle), st::OKAY);
        assert_eq!(swap(&dom, 9, 5), st::OKAY);
        assert_eq!(raw(5), e5);
        // A batch: a status each; an unreadable op ends the call with -EFAULT.
        put(
            &dom,
            ARG,
            &[
                GnttabSwapGrantRef { ref_a: 4, ref_b: 5, ..Default::default() },
                GnttabSwapGrantRef { ref_a: 600, ref_b: 5, ..Default::default() },
            ],
        );
        assert_eq!(op(&dom, gnttab::SWAP_GRANT_REF, 2), 0);
        let out: [GnttabSwapGrantRef; 2] = get(&dom, ARG);
        assert_eq!([out[0].status, out[1].status], [st::OKAY, st::BAD_GNTREF]);
        assert_eq!((raw(4), raw(5)), (e5, 0));
        assert_eq!(op(&dom, gnttab::SWAP_GRANT_REF, 0), 0);
        assert_eq!(testing::hypercall(&dom, 0, nr::GRANT_TABLE_OP, [11, 0x4000_0000, 1, 0, 0]), EFAULT.negated());
        crate::domain::destroy(&dom);
        crate::domain::destroy(&other);
    }

    use keel_abi::shared_info::GnttabCopyPtr;

    fn side(u: u64, domid: u16, offset: u16) -> GnttabCopyPtr {
        GnttabCopyPtr { u, domid, offset, pad: 0 }
    }

    /// Runs one GNTTABOP_copy op from `dom`; its status.
    fn copy_status(dom: &alloc::sync::Arc<crate::domain::Domain>, c: GnttabCopy) -> i16 {
        put(dom, ARG, &c);
        assert_eq!(op(dom, gnttab::COPY, 1), 0);
        get::<GnttabCopy>(dom, ARG).status
    }

    /// What netback does: dom0 copies a guest's granted bytes into its own frame (a transmit) and its own bytes
    /// into a guest's granted frame (a receive); the bytes arrive, the granter's entry is left as it was.
    #[test]
    fn copies_move_bytes_both_ways() {
        use gnttab::{COPY_DEST_GREF as DEST, COPY_SOURCE_GREF as SRC};
        let d0 = testing::domain(1, 4);
        let du = testing::domain(1, 4);
        grant(&du, 7, gtf::PERMIT_ACCESS, d0.id, 0x20);
        grant(&du, 8, gtf::PERMIT_ACCESS | gtf::READONLY, d0.id, 0x21);
        put(&du, 0x20100, b"from the guest, 32 bytes long...");
        put(&d0, 0x30200, b"from dom0 ....");
        // Guest → dom0 (source a grant), at offsets.
        let tx = GnttabCopy {
            source: side(7, du.id, 0x100),
            dest: side(0x30, DOMID_SELF, 0x800),
            len: 32,
            flags: SRC,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, tx), st::OKAY);
        assert_eq!(&get::<[u8; 32]>(&d0, 0x30800), b"from the guest, 32 bytes long...");
        // dom0 → guest (destination a grant).
        let rx = GnttabCopy {
            source: side(0x30, DOMID_SELF, 0x200),
            dest: side(7, du.id, 0xff0),
            len: 14,
            flags: DEST,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, rx), st::OKAY);
        assert_eq!(&get::<[u8; 14]>(&du, 0x20ff0), b"from dom0 ....");
        // A read-only grant is a source, never a destination.
        put(&du, 0x21000, &0xabcd_u64);
        let ro = GnttabCopy {
            source: side(8, du.id, 0),
            dest: side(0x31, DOMID_SELF, 0),
            len: 8,
            flags: SRC,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, ro), st::OKAY);
        assert_eq!(get::<u64>(&d0, 0x31000), 0xabcd);
        let into_ro = GnttabCopy {
            source: side(0x30, DOMID_SELF, 0),
            dest: side(8, du.id, 0),
            len: 8,
            flags: DEST,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, into_ro), st::GENERAL_ERROR);
        assert_eq!(get::<u64>(&du, 0x21000), 0xabcd, "unchanged");
        // Both sides grants, and a copy inside one frame of the caller's.
        let both = GnttabCopy {
            source: side(8, du.id, 0),
            dest: side(7, du.id, 0),
            len: 8,
            flags: SRC | DEST,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, both), st::OKAY);
        assert_eq!(get::<u64>(&du, 0x20000), 0xabcd);
        let own = GnttabCopy {
            source: side(0x31, DOMID_SELF, 0),
            dest: side(0x31, DOMID_SELF, 4),
            len: 8,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, own), st::OKAY);
        assert_eq!(get::<u64>(&d0, 0x31004), 0xabcd, "an overlapping copy is a move");
        // From a grant dom0 has mapped (another guest's packet) into a guest's grant, by dom0's GFN of the mapping;
        // a read-only mapping is no destination.
        let gm = map(&d0, 0x92000, gm::HOST_MAP | gm::READONLY, 8, du.id);
        assert_eq!(gm.status, st::OKAY);
        let fwd = GnttabCopy {
            source: side(0x92, DOMID_SELF, 0),
            dest: side(7, du.id, 0x10),
            len: 8,
            flags: DEST,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, fwd), st::OKAY);
        assert_eq!(get::<u64>(&du, 0x20010), 0xabcd);
        let into_mapping = GnttabCopy {
            source: side(0x30, DOMID_SELF, 0),
            dest: side(0x92, DOMID_SELF, 0),
            len: 8,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, into_mapping), st::BAD_PAGE);
        assert_eq!(unmap(&d0, 0x92000, gm.handle), st::OKAY);
        // The entries carry no pin afterwards, and no frame reference is left.
        assert_eq!(
            (entry_flags(&du, 7), entry_flags(&du, 8)),
            (gtf::PERMIT_ACCESS, gtf::PERMIT_ACCESS | gtf::READONLY)
        );
        assert_eq!(du.grants.lock().pins(7), None);
        assert_eq!(du.grants.lock().pins(8), None);
        assert_eq!((crate::mm::frame_refs(hpa(&du, 0x20)), crate::mm::frame_refs(hpa(&d0, 0x30))), (0, 0));
        // A copy while dom0 maps the grant leaves the mapping's pin in place.
        let m = map(&d0, 0x90000, gm::HOST_MAP, 7, du.id);
        assert_eq!(copy_status(&d0, tx), st::OKAY);
        assert_eq!(entry_flags(&du, 7), gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING);
        assert_eq!(unmap(&d0, 0x90000, m.handle), st::OKAY);
        crate::domain::destroy(&du);
        crate::domain::destroy(&d0);
    }

    /// Each bad copy fails alone, with Xen's status; a bad array pointer is -EFAULT, too many ops -EINVAL.
    #[test]
    fn copy_errors_follow_xen() {
        use gnttab::COPY_DEST_GREF as DEST;
        let d0 = testing::domain(1, 4);
        let du = testing::domain(1, 4);
        let other = testing::domain(1, 4);
        grant(&du, 7, gtf::PERMIT_ACCESS, d0.id, 0x20);
        grant(&du, 9, gtf::PERMIT_ACCESS, other.id, 0x20);
        grant(&du, 10, gtf::PERMIT_ACCESS, d0.id, 0x10_0000);
        put(&d0, 0x30000, &0x1111_u64);
        let good = GnttabCopy {
            source: side(0x30, DOMID_SELF, 0),
            dest: side(7, du.id, 0),
            len: 8,
            flags: DEST,
            ..Default::default()
        };
        let with = |f: &dyn Fn(&mut GnttabCopy)| {
            let mut c = good;
            f(&mut c);
            copy_status(&d0, c)
        };
        assert_eq!(with(&|c| c.len = 4097), st::BAD_COPY_ARG);
        assert_eq!(with(&|c| c.dest.offset = 4090), st::BAD_COPY_ARG, "beyond the destination frame");
        assert_eq!(with(&|c| c.source.offset = 4089), st::BAD_COPY_ARG, "beyond the source frame");
        assert_eq!(with(&|c| c.source.domid = du.id), st::PERMISSION_DENIED, "another domain's frame by number");
        assert_eq!(with(&|c| c.dest.domid = 0x7000), st::BAD_DOMAIN);
        assert_eq!(with(&|c| c.dest.u = 512), st::BAD_GNTREF, "beyond the granter's table");
        assert_eq!(with(&|c| c.dest.u = 1 << 40), st::BAD_GNTREF);
        assert_eq!(with(&|c| c.dest.u = 9), st::GENERAL_ERROR, "granted to another domain");
        assert_eq!(with(&|c| c.dest.u = 10), st::BAD_PAGE, "the granted frame is no RAM");
        assert_eq!(with(&|c| c.source.u = 0x10_0000), st::BAD_PAGE, "the caller's frame is no RAM");
        assert_eq!(with(&|c| c.len = 0), st::OKAY, "nothing to copy");
        assert_eq!(get::<u64>(&du, 0x20000), 0, "no failed copy wrote");
        assert_eq!(with(&|_| {}), st::OKAY);
        assert_eq!(get::<u64>(&du, 0x20000), 0x1111);
        // A batch: each op gets its own status.
        let mut bad = good;
        bad.len = 5000;
        put(&d0, ARG, &[good, bad, good]);
        assert_eq!(op(&d0, gnttab::COPY, 3), 0);
        let out: [GnttabCopy; 3] = get(&d0, ARG);
        assert_eq!([out[0].status, out[1].status, out[2].status], [st::OKAY, st::BAD_COPY_ARG, st::OKAY]);
        assert_eq!(op(&d0, gnttab::COPY, COPY_MAX + 1), EINVAL.negated());
        assert_eq!(testing::hypercall(&d0, 0, nr::GRANT_TABLE_OP, [5, 0x4000_0000, 1, 0, 0]), EFAULT.negated());
        // A dying granter: its grants copy no more.
        du.dying.store(true, core::sync::atomic::Ordering::Release);
        assert_eq!(with(&|_| {}), st::BAD_DOMAIN);
        assert_eq!(entry_flags(&du, 7), gtf::PERMIT_ACCESS);
        crate::domain::destroy(&du);
        crate::domain::destroy(&other);
        crate::domain::destroy(&d0);
    }

    /// Another domain's grant: its frame outlives the granter while mapped, and goes with the unmap.
    #[test]
    fn granted_frame_outlives_its_granter_while_mapped() {
        let d0 = testing::domain(1, 4);
        let du = testing::domain(1, 4);
        grant(&du, 5, gtf::PERMIT_ACCESS, d0.id, 0x20);
        let frame = hpa(&du, 0x20);
        let m = map(&d0, 0x90000, gm::HOST_MAP, 5, du.id);
        assert_eq!(m.status, st::OKAY);
        assert_eq!(entry_flags(&du, 5), gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING);
        crate::domain::destroy(&du);
        drop(du);
        assert!(host_frames::is_live(frame), "freed while mapped");
        put(&d0, 0x90000, &1u64);
        assert_eq!(unmap(&d0, 0x90000, m.handle), st::OKAY);
        assert!(!host_frames::is_live(frame), "leaked after the unmap");
        // And a mapping left in place when the mapper dies is released then.
        let du = testing::domain(1, 4);
        grant(&du, 6, gtf::PERMIT_ACCESS, d0.id, 0x21);
        let frame = hpa(&du, 0x21);
        assert_eq!(map(&d0, 0x91000, gm::HOST_MAP, 6, du.id).status, st::OKAY);
        crate::domain::destroy(&d0);
        drop(d0);
        crate::domain::destroy(&du);
        drop(du);
        assert!(!host_frames::is_live(frame), "leaked with both domains gone");
    }

    /// A granted frame dom0 has mapped, given back by its owner with XENMEM_decrease_reservation (a balloon driver
    /// may): it leaves the granter at once, stays allocated and shared while dom0 maps it, and is freed with the
    /// unmap; the grant cannot be mapped again (no frame behind it), and dom0 cannot give back the grant mapping.
    #[test]
    fn ballooned_out_granted_frame_lives_until_unmapped() {
        use keel_abi::shared_info::XenMemoryReservation;
        let d0 = testing::domain(1, 4);
        let du = testing::domain(1, 4);
        grant(&du, 5, gtf::PERMIT_ACCESS, d0.id, 0x20);
        let frame = hpa(&du, 0x20);
        let m = map(&d0, 0x90000, gm::HOST_MAP, 5, du.id);
        assert_eq!(m.status, st::OKAY);
        let decrease = |dom: &alloc::sync::Arc<crate::domain::Domain>, gfn: u64| {
            put(dom, 0x3000, &gfn);
            let r =
                XenMemoryReservation { extent_start: 0x3000, nr_extents: 1, domid: DOMID_SELF, ..Default::default() };
            put(dom, 0x2000, &r);
            testing::hypercall(dom, 0, nr::MEMORY_OP, [xenmem::DECREASE_RESERVATION, 0x2000, 0, 0, 0])
        };
        let pages = du.mem.lock().tot_pages;
        assert_eq!(decrease(&du, 0x20), 1);
        assert_eq!(du.mem.lock().tot_pages, pages - 1);
        assert!(du.mem.lock().translate(0x20000, false).is_err());
        assert!(host_frames::is_live(frame), "freed while dom0 maps it");
        put(&d0, 0x90008, &0xfeed_u64);
        assert_eq!(get::<u64>(&d0, 0x90008), 0xfeed);
        assert_eq!(decrease(&d0, 0x90), 0, "a grant mapping is not dom0's RAM");
        // While the grant is in use its active entry holds the frame (as Xen's): a second map gets that frame.
        let m2 = map(&d0, 0x91000, gm::HOST_MAP, 5, du.id);
        assert_eq!(m2.status, st::OKAY);
        assert_eq!(hpa(&d0, 0x91), frame);
        assert_eq!(unmap(&d0, 0x90000, m.handle), st::OKAY);
        assert!(host_frames::is_live(frame), "freed while still mapped once");
        assert_eq!(unmap(&d0, 0x91000, m2.handle), st::OKAY);
        assert!(!host_frames::is_live(frame), "leaked after the last unmap");
        // Once released, the grant has no frame behind it any more.
        put(
            &d0,
            ARG,
            &GnttabMapGrantRef { host_addr: 0x92000, flags: gm::HOST_MAP, gref: 5, dom: du.id, ..Default::default() },
        );
        assert_eq!(op(&d0, gnttab::MAP_GRANT_REF, 1), 0);
        assert_ne!(get::<GnttabMapGrantRef>(&d0, ARG).status, st::OKAY, "mapped with no frame");
        crate::domain::destroy(&d0);
        crate::domain::destroy(&du);
    }
    /// Under log-dirty, what Keel writes into a guest through grants marks the guest's pages, as Xen's
    /// gnttab_mark_dirty: a copy into its grant, and a writable mapping of its grant once unmapped (the backend
    /// may have written it meanwhile); a copy out of its grant, a read-only mapping and a copy into the caller's
    /// own frame mark nothing of the guest's (the caller's frame is marked in the caller's log, which is off).
    #[test]
    fn grant_writes_mark_the_granters_pages_dirty() {
        use gnttab::{COPY_DEST_GREF as DEST, COPY_SOURCE_GREF as SRC};
        let d0 = testing::domain(1, 4);
        let du = testing::domain(1, 4);
        grant(&du, 7, gtf::PERMIT_ACCESS, d0.id, 0x20);
        grant(&du, 8, gtf::PERMIT_ACCESS, d0.id, 0x21);
        grant(&du, 9, gtf::PERMIT_ACCESS, d0.id, 0x22);
        du.log_dirty_enable().unwrap();
        let dirty = |gfn: u64| du.mem.lock().with_log(|l| l.unwrap().is_dirty(gfn));
        let tx = GnttabCopy {
            source: side(7, du.id, 0),
            dest: side(0x30, DOMID_SELF, 0),
            len: 8,
            flags: SRC,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, tx), st::OKAY);
        assert!(!dirty(0x20), "a source is only read");
        let rx = GnttabCopy {
            source: side(0x30, DOMID_SELF, 0),
            dest: side(7, du.id, 8),
            len: 8,
            flags: DEST,
            ..Default::default()
        };
        assert_eq!(copy_status(&d0, rx), st::OKAY);
        assert!(dirty(0x20), "a copy into the guest's grant");
        let ro = map(&d0, 0x90000, gm::HOST_MAP | gm::READONLY, 8, du.id);
        assert_eq!(unmap(&d0, 0x90000, ro.handle), st::OKAY);
        assert!(!dirty(0x21), "a read-only mapping");
        let rw = map(&d0, 0x91000, gm::HOST_MAP, 9, du.id);
        put(&d0, 0x91000, &0x77_u64);
        assert!(!dirty(0x22), "not yet: marked when the mapping goes");
        assert_eq!(unmap(&d0, 0x91000, rw.handle), st::OKAY);
        assert!(dirty(0x22), "a writable mapping, unmapped");
        assert_eq!(get::<u64>(&du, 0x22000), 0x77);
        du.log_dirty_disable();
        crate::domain::destroy(&du);
        crate::domain::destroy(&d0);
    }
}
