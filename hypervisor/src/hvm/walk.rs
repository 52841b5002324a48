//! Guest page-table walker: guest-linear to guest-physical, for every paging mode a guest can be in (none,
//! 32-bit, PAE, 4-level; 4 MiB/2 MiB/1 GiB pages), with the permission checks the CPU would make for a data
//! access: canonical form in long mode, R/W (honouring CR0.WP for supervisor writes) and U/S (the CPL decides
//! whether an access is a user one). Guest memory is read through a closure so this stays pure.

use super::PagingState;
use alloc::vec::Vec;

const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const EFER_LMA: u64 = 1 << 10;

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// A page-table entry was not present (a #PF for the guest).
    NotPresent,
    /// A page table lies outside guest memory.
    BadTable(u64),
    /// The address is not canonical (long mode): a #GP for the guest.
    NonCanonical,
    /// Present, but the mapping forbids this access (R/W or U/S): a #PF with P=1.
    Protection,
}

/// What the access through the translation is, as the CPU would check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
}

/// Whether `linear` is canonical for 4-level paging (bits 63:47 all equal).
pub fn is_canonical(linear: u64) -> bool {
    ((linear as i64) << 16 >> 16) as u64 == linear
}

/// The R/W and U/S bits of every level met, ANDed (the CPU's rule), checked at the end of a walk.
#[derive(Clone, Copy)]
struct Rights {
    rw: bool,
    us: bool,
}

impl Rights {
    const ALL: Rights = Rights { rw: true, us: true };

    fn and(self, e: u64) -> Rights {
        Rights { rw: self.rw && e & PTE_RW != 0, us: self.us && e & PTE_US != 0 }
    }

    /// A user access (CPL 3) needs U/S on every level; a write needs R/W on every level, except a supervisor
    /// write with CR0.WP clear.
    fn check(self, p: &PagingState, access: Access) -> Result<(), WalkError> {
        let user = p.cpl == 3;
        if user && !self.us {
            return Err(WalkError::Protection);
        }
        if access == Access::Write && !self.rw && (user || p.cr0 & CR0_WP != 0) {
            return Err(WalkError::Protection);
        }
        Ok(())
    }
}

/// The 4-level page-table entries met on the way to `linear` (long mode only), top level first, each as
/// (level, index, entry); the walk stops at a non-present or large entry, or an unreadable table. For diagnostics.
pub fn long_mode_chain(cr3: u64, linear: u64, mut read_u64: impl FnMut(u64) -> Option<u64>) -> Vec<(u32, u64, u64)> {
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let mut out = Vec::new();
    let mut table = cr3 & ADDR;
    for level in (1..=4u32).rev() {
        let idx = (linear >> (12 + 9 * (level - 1))) & 511;
        let Some(e) = read_u64(table + idx * 8) else { break };
        out.push((level, idx, e));
        if e & 1 == 0 || (level > 1 && level < 4 && e & (1 << 7) != 0) {
            break;
        }
        table = e & ADDR;
    }
    out
}

/// Translates `linear` for an `access` by the vCPU whose paging state is `p` (user access when its CPL is 3).
/// `read_u64(gpa)` reads guest-physical memory.
pub fn translate(
    p: &PagingState,
    linear: u64,
    access: Access,
    mut read_u64: impl FnMut(u64) -> Option<u64>,
) -> Result<u64, WalkError> {
    if p.cr0 & CR0_PG == 0 {
        return Ok(linear & 0xffff_ffff);
    }
    let mut read = |gpa: u64| read_u64(gpa).ok_or(WalkError::BadTable(gpa));
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let mut rights = Rights::ALL;
    if p.efer & EFER_LMA != 0 {
        // 4-level (5-level is not offered to guests).
        if !is_canonical(linear) {
            return Err(WalkError::NonCanonical);
        }
        let mut table = p.cr3 & ADDR;
        for level in (1..=4u32).rev() {
            let idx = (linear >> (12 + 9 * (level - 1))) & 511;
            let e = read(table + idx * 8)?;
            if e & 1 == 0 {
                return Err(WalkError::NotPresent);
            }
            rights = rights.and(e);
            if level > 1 && level < 4 && e & (1 << 7) != 0 {
                rights.check(p, access)?;
                let size = 1u64 << (12 + 9 * (level - 1));
                return Ok((e & ADDR & !(size - 1)) | (linear & (size - 1)));
            }
            table = e & ADDR;
        }
        rights.check(p, access)?;
        Ok(table | (linear & 0xfff))
    } else if p.cr4 & CR4_PAE != 0 {
        // PAE PDPTEs carry no R/W or U/S bits.
        let pdpte = read((p.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8)?;
        if pdpte & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        let pde = read((pdpte & ADDR) + ((linear >> 21) & 511) * 8)?;
        if pde & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        rights = rights.and(pde);
        if pde & (1 << 7) != 0 {
            rights.check(p, access)?;
            return Ok((pde & ADDR & !0x1f_ffff) | (linear & 0x1f_ffff));
        }
        let pte = read((pde & ADDR) + ((linear >> 12) & 511) * 8)?;
        if pte & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        rights.and(pte).check(p, access)?;
        Ok((pte & ADDR) | (linear & 0xfff))
    } else {
        let linear = linear & 0xffff_ffff;
        let rd32 = |r: &mut dyn FnMut(u64) -> Result<u64, WalkError>, gpa: u64| {
            r(gpa & !7).map(|v| if gpa & 4 != 0 { v >> 32 } else { v & 0xffff_ffff })
        };
        let pde = rd32(&mut read, (p.cr3 & 0xffff_f000) + (linear >> 22) * 4)?;
        if pde & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        let rights = rights.and(pde);
        if pde & (1 << 7) != 0 && p.cr4 & CR4_PSE != 0 {
            rights.check(p, access)?;
            return Ok((pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32 | (linear & 0x3f_ffff));
        }
        let pte = rd32(&mut read, (pde & 0xffff_f000) + ((linear >> 12) & 1023) * 4)?;
        if pte & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        rights.and(pte).check(p, access)?;
        Ok((pte & 0xffff_f000) | (linear & 0xfff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    fn lm() -> PagingState {
        PagingState {
            cr0: CR0_PG | CR0_WP | 1,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8),
            ..Default::default()
        }
    }

    /// Long-mode tables: 0x0000 read-only 4 KiB page (user), 0x1000 supervisor-only 4 KiB page (writable),
    /// 0x20_0000 a read-only 2 MiB page, 1 GiB a read-only 1 GiB page, 2 GiB a writable user 1 GiB page;
    /// and high in the canonical upper half, PML4[511] -> a writable user 1 GiB page at 0.
    fn perm_tables() -> BTreeMap<u64, u64> {
        let mut m = BTreeMap::new();
        m.insert(0x1000u64, 0x2007u64); // PML4[0] -> PDPT 0x2000, RW, US
        m.insert(0x1000 + 511 * 8, 0x6007); // PML4[511] -> PDPT 0x6000
        m.insert(0x2000, 0x3007); // PDPT[0] -> PD 0x3000
        m.insert(0x2008, 0x4000_0085); // PDPT[1]: 1 GiB page, read-only, user
        m.insert(0x2010, 0x8000_0087); // PDPT[2]: 1 GiB page, writable, user
        m.insert(0x3000, 0x4007); // PD[0] -> PT 0x4000
        m.insert(0x3008, 0x0020_0085); // PD[1]: 2 MiB page, read-only, user
        m.insert(0x4000, 0x0007_0005); // PT[0]: read-only, user
        m.insert(0x4008, 0x0008_0003); // PT[1]: writable, supervisor only
        m.insert(0x6000 + 511 * 8, 0x87); // PDPT[511]: 1 GiB at 0, writable, user
        m
    }

    #[test]
    fn paging_off_is_identity() {
        let p = PagingState::default();
        assert_eq!(translate(&p, 0x1234_5678, Access::Read, |_| None), Ok(0x1234_5678));
    }

    #[test]
    fn four_level_with_large_pages() {
        let mut m = BTreeMap::new();
        m.insert(0x1000u64, 0x2003u64); // PML4[0] -> 0x2000
        m.insert(0x2000, 0x3003); // PDPT[0] -> 0x3000
        m.insert(0x2008, 0x4000_0083); // PDPT[1]: 1 GiB page at 1 GiB
        m.insert(0x3000, 0x0020_0083); // PD[0]: 2 MiB page at 2 MiB
        m.insert(0x3008, 0x5003); // PD[1] -> PT 0x5000
        m.insert(0x5000 + 3 * 8, 0x0abc_d003); // PT[3]
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        let p = lm();
        assert_eq!(translate(&p, 0x1234, Access::Read, r), Ok(0x20_1234));
        assert_eq!(translate(&p, 0x20_3456, Access::Read, r), Ok(0xabc_d456));
        assert_eq!(translate(&p, 0x4123_4567, Access::Read, r), Ok(0x4123_4567));
        assert_eq!(translate(&p, 0x8000_0000, Access::Read, r), Err(WalkError::NotPresent));
        assert_eq!(translate(&p, 0x1234, Access::Read, |_| None), Err(WalkError::BadTable(0x1000)));
    }

    #[test]
    fn read_only_mappings_refuse_writes_but_allow_reads() {
        let m = perm_tables();
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        let mut p = lm();
        for cpl in [0, 3] {
            p.cpl = cpl;
            // 4 KiB, 2 MiB and 1 GiB read-only pages.
            for (lin, gpa) in [(0x123, 0x7_0123), (0x20_5678, 0x20_5678), (0x4000_1234, 0x4000_1234)] {
                assert_eq!(translate(&p, lin, Access::Read, r), Ok(gpa), "CPL{cpl} read {lin:#x}");
                assert_eq!(translate(&p, lin, Access::Write, r), Err(WalkError::Protection), "CPL{cpl} write {lin:#x}");
            }
            // A writable 1 GiB page.
            assert_eq!(translate(&p, 0x8123_4567, Access::Write, r), Ok(0x8123_4567));
        }
        // CR0.WP clear: the supervisor may write through read-only mappings, the user still may not.
        p.cr0 &= !CR0_WP;
        p.cpl = 0;
        assert_eq!(translate(&p, 0x123, Access::Write, r), Ok(0x7_0123));
        p.cpl = 3;
        assert_eq!(translate(&p, 0x123, Access::Write, r), Err(WalkError::Protection));
    }

    #[test]
    fn supervisor_pages_refuse_cpl3() {
        let m = perm_tables();
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        let mut p = lm();
        assert_eq!(translate(&p, 0x1abc, Access::Write, r), Ok(0x8_0abc));
        p.cpl = 3;
        assert_eq!(translate(&p, 0x1abc, Access::Read, r), Err(WalkError::Protection));
        assert_eq!(translate(&p, 0x1abc, Access::Write, r), Err(WalkError::Protection));
        // U/S clear at an upper level covers everything below it.
        let mut m = perm_tables();
        m.insert(0x1000, 0x2003); // PML4[0] supervisor only
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        assert_eq!(translate(&p, 0x8000_0000, Access::Read, r), Err(WalkError::Protection));
        p.cpl = 0;
        assert_eq!(translate(&p, 0x8000_0000, Access::Read, r), Ok(0x8000_0000));
    }

    #[test]
    fn non_canonical_addresses_fault() {
        let m = perm_tables();
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        let p = lm();
        // PML4[511] covers the top 512 GiB: canonical there only with bits 63:47 set.
        assert_eq!(translate(&p, 0xffff_ffff_c000_1234, Access::Read, r), Ok(0x1234));
        for lin in [0x0000_ffff_c000_1234u64, 0x8000_0000_0000_0000, 0x0000_8000_0000_0000, 0xfff0_0000_0000_0000] {
            assert_eq!(translate(&p, lin, Access::Read, r), Err(WalkError::NonCanonical), "{lin:#x}");
        }
        assert!(is_canonical(0x0000_7fff_ffff_ffff) && is_canonical(0xffff_8000_0000_0000));
    }

    #[test]
    fn legacy_modes_check_rights_too() {
        // PAE: PDPTE (no rights bits) -> PD whose entry 0 is a read-only 2 MiB page.
        let mut m = BTreeMap::new();
        m.insert(0x1000u64, 0x2001u64);
        m.insert(0x2000, 0x0040_0085);
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        let p = PagingState { cr0: CR0_PG | CR0_WP | 1, cr3: 0x1000, cr4: CR4_PAE, ..Default::default() };
        assert_eq!(translate(&p, 0x1234, Access::Read, r), Ok(0x40_1234));
        assert_eq!(translate(&p, 0x1234, Access::Write, r), Err(WalkError::Protection));
        // 32-bit: PDE 0 -> PT whose entry 0 is supervisor-only.
        let mut m = BTreeMap::new();
        m.insert(0x1000u64, 0x2007u64);
        m.insert(0x2000, 0x6003u64);
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        let mut p = PagingState { cr0: CR0_PG | CR0_WP | 1, cr3: 0x1000, ..Default::default() };
        assert_eq!(translate(&p, 0x10, Access::Write, r), Ok(0x6010));
        p.cpl = 3;
        assert_eq!(translate(&p, 0x10, Access::Read, r), Err(WalkError::Protection));
    }

    #[test]
    fn long_mode_chain_lists_each_level_and_stops_early() {
        let mut m = BTreeMap::new();
        m.insert(0x1000u64, 0x2003u64);
        m.insert(0x2000, 0x3003);
        m.insert(0x3000, 0x0020_0083); // 2 MiB page: the chain ends at level 2
        m.insert(0x3008, 0x5003);
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        assert_eq!(long_mode_chain(0x1000, 0x1234, r), [(4, 0, 0x2003), (3, 0, 0x3003), (2, 0, 0x0020_0083)]);
        // PD[1] -> PT 0x5000, whose entry is not present: all four levels, the last one 0.
        assert_eq!(long_mode_chain(0x1000, 0x20_0000, r), [(4, 0, 0x2003), (3, 0, 0x3003), (2, 1, 0x5003), (1, 0, 0)]);
        // A top-level entry that is not present ends the chain there; an unreadable table gives nothing.
        assert_eq!(long_mode_chain(0x1000, 1 << 39, r), [(4, 1, 0)]);
        assert!(long_mode_chain(0x1000, 0, |_| None).is_empty());
    }

    #[test]
    fn legacy_32bit_with_4m_pages() {
        let mut m = BTreeMap::new();
        // PDE 1 (for 0x0040_0000..) is a 4 MiB page at 0x0c00_0000; stored as the high half of qword 0x1000.
        m.insert(0x1000u64, (0x0c00_0083u64) << 32 | 0x2003);
        m.insert(0x2000, 0x7003u64 << 32 | 0x6003); // PTE 0 -> 0x6000, PTE 1 -> 0x7000
        let r = |a: u64| m.get(&a).copied().or(Some(0));
        let p = PagingState { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PSE, ..Default::default() };
        assert_eq!(translate(&p, 0x0041_2345, Access::Read, r), Ok(0x0c01_2345));
        assert_eq!(translate(&p, 0x1abc, Access::Read, r), Ok(0x7abc));
    }
}
