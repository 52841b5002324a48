//! Grant mappings (grant table v1): a domain maps a frame another domain (or itself) granted it, into its own
//! physical address space (the auto-translated form of GNTTABOP_map_grant_ref: `host_addr` is a guest-physical
//! address of the mapper), and unmaps it again.
//!
//! Each side keeps its part, as in Xen: the granter's *active* entries (which of its refs are mapped, by whom,
//! how many times read-only and writable; its shared entry carries GTF_reading/GTF_writing meanwhile), and the
//! mapper's *maptrack* (handle → granter, ref, GFN). The mapped frame is a borrowed frame of the mapper's p2m
//! ([`super::Borrowed::Grant`]), so it holds a reference on the frame and outlives neither the mapping nor, freed,
//! the last reference. Two locks are never held at once across domains: a domain may map its own grants.

use super::{Borrowed, DomId, Domain};
use crate::mm::PAGE_SIZE;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use keel_abi::hypercall::errno::*;

/// `GNTST_*` statuses.
pub mod status {
    pub const OKAY: i16 = 0;
    pub const GENERAL_ERROR: i16 = -1;
    pub const BAD_DOMAIN: i16 = -2;
    pub const BAD_GNTREF: i16 = -3;
    pub const BAD_HANDLE: i16 = -4;
    pub const BAD_VIRT_ADDR: i16 = -5;
    pub const PERMISSION_DENIED: i16 = -8;
    pub const BAD_PAGE: i16 = -9;
    pub const BAD_COPY_ARG: i16 = -10;
    pub const EAGAIN: i16 = -12;
    /// `GNTST_no_space`: out of handles (Xen 4.16 and later; before, `GNTST_no_device_space`).
    pub const NO_SPACE: i16 = -13;
}

/// `GNTMAP_*` flags of a map request.
pub mod map {
    pub const DEVICE_MAP: u32 = 1 << 0;
    pub const HOST_MAP: u32 = 1 << 1;
    pub const READONLY: u32 = 1 << 2;
    pub const APPLICATION_MAP: u32 = 1 << 3;
    pub const CONTAINS_PTE: u32 = 1 << 4;
}

/// `GTF_*` flags of a v1 shared entry (keel-abi's).
pub use keel_abi::shared_info::gtf;

/// Grant mappings per maptrack frame (Xen's `MAPTRACK_PER_PAGE`: 16-byte entries): a domain holds at most its
/// `max_maptrack_frames` times this many.
pub const MAPTRACK_PER_FRAME: usize = (PAGE_SIZE / 16) as usize;

/// v1 entries per grant-table frame (8 bytes each).
pub const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / 8) as u32;

/// One of the granter's refs while mapped.
#[derive(Clone, Copy, Debug)]
struct Active {
    /// The domain that mapped it.
    mapper: DomId,
    /// The granted frame.
    hpa: u64,
    /// The granter's GFN for it when it was first pinned (marked dirty under log-dirty after a writable use).
    gfn: u64,
    /// Read-only and writable mappings.
    ro: u32,
    rw: u32,
}

/// One of the mapper's grant mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The granter.
    pub granter: DomId,
    /// The ref in the granter's table.
    pub gref: u32,
    /// Where it is mapped in the mapper's physical space (`None` while the map is being made).
    pub gfn: Option<u64>,
    /// Mapped read-only.
    pub readonly: bool,
    /// The frame.
    pub hpa: u64,
}

/// A domain's grant bookkeeping.
#[derive(Default)]
pub struct Grants {
    active: BTreeMap<u32, Active>,
    maptrack: Vec<Option<Mapping>>,
    free: Vec<u32>,
}

impl Grants {
    /// The mapping behind `handle`.
    pub fn mapping(&self, handle: u32) -> Option<Mapping> {
        self.maptrack.get(handle as usize).copied().flatten()
    }

    /// Live mappings.
    pub fn mappings(&self) -> usize {
        self.maptrack.len() - self.free.len()
    }

    /// Drops the references the active entries hold (the granter is being freed).
    pub fn release_active(&mut self) {
        for (_, a) in core::mem::take(&mut self.active) {
            crate::mm::put_frame_ref(a.hpa);
        }
    }

    /// Whether `gref` is mapped, and how many times read-only and writable.
    pub fn pins(&self, gref: u32) -> Option<(u32, u32)> {
        self.active.get(&gref).map(|a| (a.ro, a.rw))
    }

    /// A handle for `m`; None when `max_frames` maptrack frames are full.
    fn reserve(&mut self, m: Mapping, max_frames: u32) -> Option<u32> {
        if let Some(h) = self.free.pop() {
            self.maptrack[h as usize] = Some(m);
            return Some(h);
        }
        if self.maptrack.len() >= max_frames as usize * MAPTRACK_PER_FRAME {
            return None;
        }
        self.maptrack.push(Some(m));
        Some(self.maptrack.len() as u32 - 1)
    }

    fn release(&mut self, handle: u32) {
        if let Some(slot @ Some(_)) = self.maptrack.get_mut(handle as usize) {
            *slot = None;
            self.free.push(handle);
        }
    }
}

/// A domain's grant-table frames: Keel's frames, created on demand and freed with the domain, and the GFN each
/// was last mapped at with XENMEM_add_to_physmap (what Xen's M2P tells GNTTABOP_setup_table).
#[derive(Default)]
pub struct TableFrames {
    frames: Vec<u64>,
    gfns: Vec<Option<u64>>,
}

impl TableFrames {
    /// Frames the table has (`nr_grant_frames`).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the table has no frame yet.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The host frame of table frame `idx`.
    pub fn get(&self, idx: usize) -> Option<u64> {
        self.frames.get(idx).copied()
    }

    /// The host frames, in table order.
    pub fn frames(&self) -> &[u64] {
        &self.frames
    }

    /// Records that table frame `idx` is now mapped at `gfn`.
    pub fn set_gfn(&mut self, idx: usize, gfn: u64) {
        if let Some(g) = self.gfns.get_mut(idx) {
            *g = Some(gfn);
        }
    }

    /// Table frame `idx` and the GFN it was last mapped at.
    pub fn with_gfn(&self, idx: usize) -> Option<(u64, Option<u64>)> {
        Some((*self.frames.get(idx)?, self.gfns.get(idx).copied().flatten()))
    }

    /// Takes the frames out (the domain is being freed).
    pub fn take(&mut self) -> Vec<u64> {
        self.gfns.clear();
        core::mem::take(&mut self.frames)
    }
}

/// The host frame of grant-table frame `idx` of `dom`, growing the table up to it. -EINVAL at or beyond the
/// domain's `max_grant_frames`, and when the machine has no frame for the growth (Xen's
/// gnttab_get_shared_frame_mfn only checks whether the table grew).
pub fn table_frame(dom: &Domain, idx: usize) -> Result<u64, Errno> {
    grow(dom, idx.checked_add(1).ok_or(EINVAL)?).map_err(|_| EINVAL)?;
    dom.grant_frames.lock().get(idx).ok_or(EINVAL)
}

/// Grows `dom`'s table to at least `nr` frames (Xen's gnttab_grow_table): -EINVAL beyond the domain's
/// `max_grant_frames`, -ENOMEM when the machine has no frame (the frames made so far stay).
pub fn grow(dom: &Domain, nr: usize) -> Result<(), Errno> {
    if nr > dom.config.limits.max_grant_frames as usize {
        return Err(EINVAL);
    }
    let mut t = dom.grant_frames.lock();
    while t.frames.len() < nr {
        t.frames.push(crate::mm::alloc_frame().map_err(|_| ENOMEM)?);
        t.gfns.push(None);
    }
    Ok(())
}

/// The GFN `dom`'s table frame `idx` is mapped at, as Xen's M2P tells it for a translated domain
/// (gnttab_shared_gfn): where XENMEM_add_to_physmap last put the frame, if it is still there; None for a frame
/// mapped nowhere (or not in the table).
pub fn frame_gfn(dom: &Domain, idx: usize) -> Option<u64> {
    let (hpa, gfn) = dom.grant_frames.lock().with_gfn(idx)?;
    let gfn = gfn?;
    let gpa = gfn.checked_mul(PAGE_SIZE)?;
    (dom.mem.lock().translate(gpa, false) == Ok(hpa)).then_some(gfn)
}

/// The two words of `dom`'s v1 entry `gref` (flags and domid; frame), if the table has it.
fn entry_words(dom: &Domain, gref: u32) -> Option<&[AtomicU32; 2]> {
    let frame = dom.grant_frames.lock().get((gref / ENTRIES_PER_FRAME) as usize)?;
    let at = frame + u64::from(gref % ENTRIES_PER_FRAME) * 8;
    // SAFETY: grant-table frames are Keel's frames, allocated for `dom` and freed only when `dom` is (the caller
    // holds a reference to it); entries are 8-byte aligned inside them. The guest writes them concurrently,
    // which is why they are only accessed atomically.
    unsafe { Some(&*(at as *const [AtomicU32; 2])) }
}

/// The first word (flags, domid) and the frame of `dom`'s v1 entry `gref`, if the table has it (the frame number
/// read once).
fn entry(dom: &Domain, gref: u32) -> Option<(&AtomicU32, u32)> {
    let [word, frame] = entry_words(dom, gref)?;
    Some((word, frame.load(Ordering::Acquire)))
}

/// GNTTABOP_swap_grant_ref on `dom`'s own v1 entries `a` and `b` (Xen's swap_grant_ref): GNTST_bad_gntref for a
/// ref beyond the table (`a` checked first), nothing for a ref swapped with itself, GNTST_eagain while either is
/// in use (mapped, or pinned by a copy); otherwise the two entries trade places. The guest may write them
/// meanwhile, as on Xen, where the swap is a plain copy too.
pub fn swap(dom: &Domain, a: u32, b: u32) -> i16 {
    // Held throughout: no map or copy pins either entry meanwhile.
    let grants = dom.grants.lock();
    let Some(ea) = entry_words(dom, a) else { return status::BAD_GNTREF };
    let Some(eb) = entry_words(dom, b) else { return status::BAD_GNTREF };
    if a == b {
        return status::OKAY;
    }
    if grants.active.contains_key(&a) || grants.active.contains_key(&b) {
        return status::EAGAIN;
    }
    let (wa, wb) = (ea.each_ref().map(|w| w.load(Ordering::Acquire)), eb.each_ref().map(|w| w.load(Ordering::Acquire)));
    for i in 0..2 {
        ea[i].store(wb[i], Ordering::Release);
        eb[i].store(wa[i], Ordering::Release);
    }
    status::OKAY
}

/// Clears `bits` in a shared entry's flags.
fn clear_flags(word: &AtomicU32, bits: u16) {
    word.fetch_and(!u32::from(bits), Ordering::AcqRel);
}

/// GNTTABOP_map_grant_ref from `ld` (auto-translated: `host_addr` is a guest-physical address): maps `rd`'s
/// entry `gref` at `host_addr >> 12`. Returns the status, and on success the handle and the frame's address.
pub fn map(ld: &Arc<Domain>, host_addr: u64, flags: u32, gref: u32, dom: DomId) -> Result<(u32, u64), i16> {
    if flags & (map::HOST_MAP | map::DEVICE_MAP) == 0 {
        return Err(status::BAD_GNTREF);
    }
    // A translated (HVM/PVH) mapper: no device, application or PTE mappings.
    if flags & (map::DEVICE_MAP | map::APPLICATION_MAP | map::CONTAINS_PTE) != 0 {
        return Err(status::GENERAL_ERROR);
    }
    let rd = super::get(dom).ok_or(status::BAD_DOMAIN)?;
    if rd.dying.load(Ordering::Acquire) {
        return Err(status::BAD_DOMAIN);
    }
    let readonly = flags & map::READONLY != 0;
    let gfn = host_addr >> 12;
    let handle = ld
        .grants
        .lock()
        .reserve(Mapping { granter: dom, gref, gfn: None, readonly, hpa: 0 }, ld.config.limits.max_maptrack_frames)
        .ok_or(status::NO_SPACE)?;
    let hpa = match pin(ld.id, &rd, gref, readonly) {
        Ok(hpa) => hpa,
        Err(st) => {
            ld.grants.lock().release(handle);
            return Err(st);
        }
    };
    // Xen's create_grant_p2m_mapping: nothing but host_map (+readonly), and the GFN must take the frame.
    if let Err(e) = ld.map_borrowed(gfn, Borrowed::Grant(hpa), !readonly) {
        crate::debug!("d{}: grant map of d{dom} ref {gref} at gfn {gfn:#x}: {e:?}", ld.id);
        unpin(&rd, gref, readonly, false);
        ld.grants.lock().release(handle);
        return Err(status::GENERAL_ERROR);
    }
    if let Some(Some(m)) = ld.grants.lock().maptrack.get_mut(handle as usize) {
        m.gfn = Some(gfn);
        m.hpa = hpa;
    }
    Ok((handle, hpa))
}

/// Pins `rd`'s entry `gref` for a mapping by `mapper`: checks the entry and sets GTF_reading (and GTF_writing);
/// returns the granted frame.
fn pin(mapper: DomId, rd: &Domain, gref: u32, readonly: bool) -> Result<u64, i16> {
    let mut grants = rd.grants.lock();
    let (word, frame) = entry(rd, gref).ok_or(status::BAD_GNTREF)?;
    if let Some(a) = grants.active.get(&gref) {
        if a.mapper != mapper || a.ro.max(a.rw) >= u32::MAX / 2 {
            return Err(status::GENERAL_ERROR);
        }
    }
    let pinned = grants.active.contains_key(&gref);
    // Set the in-use flags, as Xen does: a bounded number of tries against a guest that keeps changing the entry.
    let mut cur = word.load(Ordering::Acquire);
    let mut tries = 0;
    loop {
        let (flags, domid) = (cur as u16, (cur >> 16) as u16);
        if !pinned && ((flags & (gtf::TYPE_MASK | gtf::SUB_PAGE)) != gtf::PERMIT_ACCESS || domid != mapper) {
            return Err(status::GENERAL_ERROR);
        }
        if !readonly && flags & gtf::READONLY != 0 {
            return Err(status::GENERAL_ERROR);
        }
        let new = cur | u32::from(gtf::READING | if readonly { 0 } else { gtf::WRITING });
        match word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(seen) if tries < 4 => {
                cur = seen;
                tries += 1;
            }
            Err(_) => return Err(status::GENERAL_ERROR),
        }
    }
    let (hpa, gfn) = match grants.active.get(&gref) {
        Some(a) => (a.hpa, a.gfn),
        None => {
            // The granted frame must be the granter's RAM (Xen's get_paged_frame). The active entry holds a
            // reference on it, taken while the granter's p2m still maps it, so that it cannot be freed meanwhile.
            let mem = rd.mem.lock();
            let Some(hpa) = mem.ram_frame(u64::from(frame)) else {
                drop(mem);
                clear_flags(word, gtf::READING | gtf::WRITING);
                return Err(status::BAD_PAGE);
            };
            crate::mm::get_frame_ref(hpa);
            (hpa, u64::from(frame))
        }
    };
    let a = grants.active.entry(gref).or_insert(Active { mapper, hpa, gfn, ro: 0, rw: 0 });
    if readonly {
        a.ro += 1;
    } else {
        a.rw += 1;
    }
    Ok(hpa)
}

/// Drops one pin of `rd`'s entry `gref`; clears GTF_writing with the last writable mapping and GTF_reading with
/// the last mapping. `written`: the pin was writable and used (a writable mapping unmapped, a copy's
/// destination): under log-dirty the granter's page is marked dirty, as Xen's gnttab_mark_dirty does then.
fn unpin(rd: &Domain, gref: u32, readonly: bool, written: bool) {
    let mut grants = rd.grants.lock();
    let Some(a) = grants.active.get_mut(&gref) else { return };
    if written {
        rd.mark_dirty(a.gfn);
    }
    if readonly {
        a.ro = a.ro.saturating_sub(1);
    } else {
        a.rw = a.rw.saturating_sub(1);
    }
    let (ro, rw) = (a.ro, a.rw);
    if ro == 0 && rw == 0 {
        if let Some(a) = grants.active.remove(&gref) {
            crate::mm::put_frame_ref(a.hpa);
        }
    }
    if let Some((word, _)) = entry(rd, gref) {
        if rw == 0 {
            clear_flags(word, gtf::WRITING);
        }
        if ro == 0 && rw == 0 {
            clear_flags(word, gtf::READING);
        }
    }
}

/// One side of a copy: a granted frame pinned in its granter's active entries, or a frame of the caller's own
/// (at `gfn`) holding a reference; either way the frame stays allocated until [`CopySide::release`].
struct CopySide {
    hpa: u64,
    pinned: Option<(Arc<Domain>, u32)>,
    gfn: u64,
    readonly: bool,
}

impl CopySide {
    /// Xen's gnttab_copy_claim_buf: `gref` says whether `ptr.u` is a grant reference (of `ptr.domid`, granted to
    /// `ld`) or a frame of `ld`'s own (only `DOMID_SELF` may name a frame).
    fn claim(
        ld: &Arc<Domain>,
        ptr: &keel_abi::shared_info::GnttabCopyPtr,
        gref: bool,
        write: bool,
    ) -> Result<Self, i16> {
        let readonly = !write;
        if !gref {
            if ptr.domid != keel_abi::DOMID_SELF {
                return Err(status::PERMISSION_DENIED);
            }
            let mem = ld.mem.lock();
            // The caller's RAM, or a grant it has mapped (Xen's get_paged_frame refuses only foreign mappings):
            // netback copies a packet another guest sent, which sits in its grant mapping, into a receiver's
            // buffer. Writable in the caller's p2m for a destination.
            let hpa = match mem.borrowed(ptr.u) {
                Some(Borrowed::Grant(hpa)) => hpa,
                Some(Borrowed::Foreign(_)) => return Err(status::BAD_PAGE),
                None => mem.ram_frame(ptr.u).ok_or(status::BAD_PAGE)?,
            };
            if mem.translate(ptr.u << 12, write) != Ok(hpa) {
                return Err(status::BAD_PAGE);
            }
            crate::mm::get_frame_ref(hpa);
            return Ok(CopySide { hpa, pinned: None, gfn: ptr.u, readonly });
        }
        let domid = if ptr.domid == keel_abi::DOMID_SELF { ld.id } else { ptr.domid };
        let rd = super::get(domid).ok_or(status::BAD_DOMAIN)?;
        if rd.dying.load(Ordering::Acquire) {
            return Err(status::BAD_DOMAIN);
        }
        let gref = u32::try_from(ptr.u).map_err(|_| status::BAD_GNTREF)?;
        let hpa = pin(ld.id, &rd, gref, readonly)?;
        Ok(CopySide { hpa, pinned: Some((rd, gref)), gfn: 0, readonly })
    }

    /// Lets the frame go; `ld` is the caller. A destination (`!readonly`) was written: under log-dirty its page
    /// is marked dirty, the granter's or the caller's own (its RAM only: a grant the caller maps is marked in its
    /// granter when that mapping goes, as on Xen).
    fn release(self, ld: &Domain) {
        match self.pinned {
            Some((rd, gref)) => unpin(&rd, gref, self.readonly, !self.readonly),
            None => {
                if !self.readonly {
                    ld.mark_dirty(self.gfn);
                }
                crate::mm::put_frame_ref(self.hpa)
            }
        }
    }
}

/// GNTTABOP_copy's op `op` for `ld`: copies `len` bytes between two frames, each a grant (the granted frame is
/// pinned meanwhile, with GTF_reading/GTF_writing set as for a mapping) or a frame of the caller's. Returns the
/// status: Xen's checks in Xen's order (arguments, domains, grants, frames).
pub fn copy(ld: &Arc<Domain>, op: &keel_abi::shared_info::GnttabCopy) -> i16 {
    use keel_abi::shared_info::gnttab::{COPY_DEST_GREF, COPY_SOURCE_GREF};
    let page = PAGE_SIZE as u16;
    let len = op.len;
    if len > page || op.source.offset > page - len || op.dest.offset > page - len {
        return status::BAD_COPY_ARG;
    }
    let src = match CopySide::claim(ld, &op.source, op.flags & COPY_SOURCE_GREF != 0, false) {
        Ok(s) => s,
        Err(st) => return st,
    };
    let dst = match CopySide::claim(ld, &op.dest, op.flags & COPY_DEST_GREF != 0, true) {
        Ok(d) => d,
        Err(st) => {
            src.release(ld);
            return st;
        }
    };
    let from = src.hpa + u64::from(op.source.offset);
    let to = dst.hpa + u64::from(op.dest.offset);
    // SAFETY: both frames are RAM frames Keel identity-maps, each held (a pinned grant's active entry, or a frame
    // reference) until the release below, so neither can be freed or reused meanwhile; the ranges stay inside
    // their frames (checked above). The two may be the same frame, hence a copy that allows overlap. Guests may
    // write the frames concurrently, as on Xen; the bytes copied are then whatever the race gives, never memory
    // outside the two frames.
    unsafe { core::ptr::copy(from as *const u8, to as *mut u8, usize::from(len)) };
    src.release(ld);
    dst.release(ld);
    status::OKAY
}

/// GNTTABOP_unmap_grant_ref from `ld`: removes mapping `handle`, which must be the grant mapped at
/// `host_addr >> 12`. Returns the status.
pub fn unmap(ld: &Arc<Domain>, host_addr: u64, handle: u32) -> Result<(), i16> {
    let m = ld.grants.lock().mapping(handle).ok_or(status::BAD_HANDLE)?;
    let Some(gfn) = m.gfn else { return Err(status::BAD_HANDLE) };
    if host_addr >> 12 != gfn || ld.mem.lock().borrowed(gfn) != Some(Borrowed::Grant(m.hpa)) {
        return Err(status::GENERAL_ERROR);
    }
    // A pinned GFN (a vcpu_info or runstate area registered over the mapping) keeps its frame.
    if ld.unmap_borrowed(gfn).is_err() {
        return Err(status::GENERAL_ERROR);
    }
    ld.grants.lock().release(handle);
    // A granter that is gone keeps nothing to update; its frame is released with the last reference.
    if let Some(rd) = super::get(m.granter) {
        unpin(&rd, m.gref, m.readonly, !m.readonly);
    }
    Ok(())
}
