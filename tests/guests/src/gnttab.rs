//! The guest's grant table, version 1, one frame (512 entries): mapped over a page of ours with
//! XENMEM_add_to_physmap (XENMAPSPACE_grant_table, frame 0), entries written here.
//!
//! Refs below [`GNTTAB_NR_RESERVED_ENTRIES`] belong to the toolstack (console, xenstore); a test picks its own
//! from there up.

use crate::hypercall::{self, Errno};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
pub use keel_abi::shared_info::GNTTAB_NR_RESERVED_ENTRIES;
use keel_abi::shared_info::{gtf, xenmem, XenAddToPhysmap};

/// Entries in the one frame.
pub const ENTRIES: u32 = 512;

/// The frame the table is mapped over (its RAM is given up for the hypervisor's frame).
#[repr(C, align(4096))]
struct Frame([AtomicU64; ENTRIES as usize]);

static FRAME: Frame = Frame([const { AtomicU64::new(0) }; ENTRIES as usize]);
const UNMAPPED: u8 = 0;
const MAPPED: u8 = 1;
static STATE: AtomicU8 = AtomicU8::new(UNMAPPED);

/// The mapped table.
#[derive(Clone, Copy, Debug)]
pub struct GrantTable(());

/// Maps grant-table frame 0 (once; later calls return the same table).
pub fn setup() -> Result<GrantTable, Errno> {
    if STATE.load(Ordering::Acquire) == MAPPED {
        return Ok(GrantTable(()));
    }
    let mut arg = XenAddToPhysmap {
        domid: keel_abi::DOMID_SELF,
        size: 0,
        space: xenmem::SPACE_GRANT_TABLE,
        idx: 0,
        gpfn: FRAME.0.as_ptr() as u64 >> 12,
    };
    // SAFETY: the frame is ours, page-aligned, and only ever accessed as grant entries (atomically).
    unsafe { hypercall::add_to_physmap(&mut arg)? };
    STATE.store(MAPPED, Ordering::Release);
    Ok(GrantTable(()))
}

impl GrantTable {
    fn entry(self, gref: u32) -> &'static AtomicU64 {
        assert!(gref < ENTRIES, "grant ref {gref} is beyond the one frame");
        &FRAME.0[gref as usize]
    }

    /// Entry `gref` lets `domid` map guest frame `gfn` (read-only if asked). The whole entry is one 8-byte store,
    /// so the flags never become visible before the frame and domain.
    pub fn grant(self, gref: u32, domid: u16, gfn: u64, readonly: bool) {
        let flags = gtf::PERMIT_ACCESS | if readonly { gtf::READONLY } else { 0 };
        let frame = u32::try_from(gfn).expect("frame beyond 32 bits");
        self.entry(gref).store(u64::from(flags) | u64::from(domid) << 16 | u64::from(frame) << 32, Ordering::Release);
    }

    /// Writes entry `gref` as given (any flags, any domain), for tests of what a mapper does with bad entries.
    pub fn set_raw(self, gref: u32, flags: u16, domid: u16, frame: u32) {
        self.entry(gref).store(u64::from(flags) | u64::from(domid) << 16 | u64::from(frame) << 32, Ordering::Release);
    }

    /// Ends the grant if nobody maps it (flags without GTF_reading/GTF_writing); returns whether it ended.
    pub fn end(self, gref: u32) -> bool {
        let e = self.entry(gref);
        let cur = e.load(Ordering::Acquire);
        if cur as u16 & (gtf::READING | gtf::WRITING) != 0 {
            return false;
        }
        e.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Entry `gref`'s flags now (the hypervisor sets GTF_reading/GTF_writing while it is mapped).
    pub fn flags(self, gref: u32) -> u16 {
        self.entry(gref).load(Ordering::Acquire) as u16
    }
}
