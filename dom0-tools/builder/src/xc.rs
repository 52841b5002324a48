//! [`DomainOps`] over keel-xenctrl: the real hypercalls, from dom0, as libxenguest makes them.
//!
//! - guest memory: `XENMEM_populate_physmap` for the domain, written through `IOCTL_PRIVCMD_MMAPBATCH_V2` foreign
//!   mappings;
//! - grant seeding (`xc_dom_gnttab_seed`): the domain's first grant-table frame mapped through
//!   `IOCTL_PRIVCMD_MMAP_RESOURCE` (XENMEM_acquire_resource of its grant table; Keel refuses
//!   XENMEM_add_to_physmap for another domain, so this is the one way, as libxenguest tries it first too), and
//!   the v1 entries written: frame and grantee first, then `GTF_permit_access`;
//! - the boot vCPU: `XEN_DOMCTL_gethvmcontext`'s HEADER + a PVH CPU record through `sethvmcontext`.

use crate::{BootVcpu, DomainOps};
use keel_abi::start_info::HvmMemmapEntry;
use keel_xenctrl::devices::{ForeignPages, RESOURCE_GRANT_TABLE, RESOURCE_GRANT_TABLE_SHARED};
use keel_xenctrl::Xc;

/// `GTF_permit_access`.
const GTF_PERMIT_ACCESS: u16 = 1;
/// Bytes of a v1 grant entry (`flags: u16, domid: u16, frame: u32`).
const GRANT_ENTRY_V1: usize = 8;

/// The hypercalls of a domain build through dom0's privcmd.
pub struct XcOps<'a> {
    /// The open privcmd.
    pub xc: &'a Xc,
    /// Whether [`DomainOps::unpause`] really unpauses: a toolstack that introduces the domain to xenstored first
    /// (as libxl does) sets this false and unpauses itself.
    pub unpause: bool,
}

impl<'a> XcOps<'a> {
    /// Over `xc`, unpausing at the end of the build.
    pub fn new(xc: &'a Xc) -> Self {
        XcOps { xc, unpause: true }
    }
}

/// Writes v1 grant entry `gref` in a mapped grant-table frame: grantee and frame first, then the flags (with
/// a release store between, as `xc_dom_gnttab_seed`'s barrier), so the entry is never valid half-written.
pub fn write_grant_v1(table: &mut [u8], gref: u32, grantee: u16, frame: u32) -> Result<(), String> {
    let off = gref as usize * GRANT_ENTRY_V1;
    let e = table.get_mut(off..off + GRANT_ENTRY_V1).ok_or_else(|| format!("grant {gref} outside the frame"))?;
    e[2..4].copy_from_slice(&grantee.to_le_bytes());
    e[4..8].copy_from_slice(&frame.to_le_bytes());
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    e[0..2].copy_from_slice(&GTF_PERMIT_ACCESS.to_le_bytes());
    Ok(())
}

impl DomainOps for XcOps<'_> {
    type Mapping = ForeignPages;

    fn populate_physmap(&mut self, domid: u16, first_pfn: u64, count: u64) -> Result<(), String> {
        // In batches, so that one hypercall buffer stays small.
        let mut pfn = first_pfn;
        while pfn < first_pfn + count {
            let n = (first_pfn + count - pfn).min(4096);
            let gfns: Vec<u64> = (pfn..pfn + n).collect();
            self.xc.populate_physmap(domid, &gfns, 0).map_err(|e| e.to_string())?;
            pfn += n;
        }
        Ok(())
    }

    fn map_foreign(&mut self, domid: u16, first_pfn: u64, count: u64) -> Result<ForeignPages, String> {
        let gfns: Vec<u64> = (first_pfn..first_pfn + count).collect();
        ForeignPages::foreign(domid, &gfns).map_err(|e| e.to_string())
    }

    fn set_memory_map(&mut self, domid: u16, map: &[HvmMemmapEntry]) -> Result<(), String> {
        self.xc.set_memory_map(domid, map).map_err(|e| e.to_string())
    }

    fn set_hvm_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), String> {
        self.xc.set_hvm_param(domid, index, value).map_err(|e| e.to_string())
    }

    fn alloc_unbound_evtchn(&mut self, domid: u16, remote: u16) -> Result<u32, String> {
        self.xc.evtchn_alloc_unbound(domid, remote).map_err(|e| e.to_string())
    }

    fn seed_grant(&mut self, domid: u16, gref: u32, grantee: u16, pfn: u64) -> Result<(), String> {
        let frame = u32::try_from(pfn).map_err(|_| format!("pfn {pfn:#x} does not fit a v1 grant entry"))?;
        let mut table = ForeignPages::resource(domid, RESOURCE_GRANT_TABLE, RESOURCE_GRANT_TABLE_SHARED, 0, 1)
            .map_err(|e| e.to_string())?;
        write_grant_v1(&mut table, gref, grantee, frame)
    }

    fn set_boot_vcpu(&mut self, domid: u16, vcpu: BootVcpu) -> Result<(), String> {
        self.xc.set_pvh_boot_vcpu(domid, 0, vcpu.entry, vcpu.start_info).map_err(|e| e.to_string())
    }

    fn unpause(&mut self, domid: u16) -> Result<(), String> {
        if !self.unpause {
            return Ok(());
        }
        self.xc.unpause_domain(domid).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_grant_is_xens_v1_entry() {
        let mut t = vec![0u8; 4096];
        write_grant_v1(&mut t, 1, 0, 0xfeffc).unwrap();
        assert_eq!(&t[8..16], &[1, 0, 0, 0, 0xfc, 0xef, 0x0f, 0]);
        assert_eq!(&t[0..8], &[0; 8], "entry 0 untouched");
        write_grant_v1(&mut t, 0, 7, 0xfefff).unwrap();
        assert_eq!(&t[0..8], &[1, 0, 7, 0, 0xff, 0xef, 0x0f, 0]);
        assert!(write_grant_v1(&mut t, 512, 0, 1).is_err());
    }
}
