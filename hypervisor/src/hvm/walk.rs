//! Guest page-table walker: guest-linear to guest-physical, for every paging mode a guest can be in (none,
//! 32-bit, PAE, 4-level; 4 MiB/2 MiB/1 GiB pages). Guest memory is read through a closure so this stays pure.

use super::PagingState;
use alloc::vec::Vec;

const CR0_PG: u64 = 1 << 31;
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

/// Translates `linear` using the guest's paging state. `read_u64(gpa)` reads guest-physical memory.
pub fn translate(p: &PagingState, linear: u64, mut read_u64: impl FnMut(u64) -> Option<u64>) -> Result<u64, WalkError> {
    if p.cr0 & CR0_PG == 0 {
        return Ok(linear & 0xffff_ffff);
    }
    let mut read = |gpa: u64| read_u64(gpa).ok_or(WalkError::BadTable(gpa));
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    if p.efer & EFER_LMA != 0 {
        // 4-level (5-level is not offered to guests).
        let mut table = p.cr3 & ADDR;
        for level in (1..=4u32).rev() {
            let idx = (linear >> (12 + 9 * (level - 1))) & 511;
            let e = read(table + idx * 8)?;
            if e & 1 == 0 {
                return Err(WalkError::NotPresent);
            }
            if level > 1 && level < 4 && e & (1 << 7) != 0 {
                let size = 1u64 << (12 + 9 * (level - 1));
                return Ok((e & ADDR & !(size - 1)) | (linear & (size - 1)));
            }
            table = e & ADDR;
        }
        Ok(table | (linear & 0xfff))
    } else if p.cr4 & CR4_PAE != 0 {
        let pdpte = read((p.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8)?;
        if pdpte & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        let pde = read((pdpte & ADDR) + ((linear >> 21) & 511) * 8)?;
        if pde & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        if pde & (1 << 7) != 0 {
            return Ok((pde & ADDR & !0x1f_ffff) | (linear & 0x1f_ffff));
        }
        let pte = read((pde & ADDR) + ((linear >> 12) & 511) * 8)?;
        if pte & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
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
        if pde & (1 << 7) != 0 && p.cr4 & CR4_PSE != 0 {
            return Ok((pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32 | (linear & 0x3f_ffff));
        }
        let pte = rd32(&mut read, (pde & 0xffff_f000) + ((linear >> 12) & 1023) * 4)?;
        if pte & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        Ok((pte & 0xffff_f000) | (linear & 0xfff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    fn lm() -> PagingState {
        PagingState { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PAE, efer: EFER_LMA | (1 << 8), ..Default::default() }
    }

    #[test]
    fn paging_off_is_identity() {
        let p = PagingState::default();
        assert_eq!(translate(&p, 0x1234_5678, |_| None), Ok(0x1234_5678));
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
        assert_eq!(translate(&p, 0x1234, r), Ok(0x20_1234));
        assert_eq!(translate(&p, 0x20_3456, r), Ok(0xabc_d456));
        assert_eq!(translate(&p, 0x4123_4567, r), Ok(0x4123_4567));
        assert_eq!(translate(&p, 0x8000_0000, r), Err(WalkError::NotPresent));
        assert_eq!(translate(&p, 0x1234, |_| None), Err(WalkError::BadTable(0x1000)));
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
        assert_eq!(translate(&p, 0x0041_2345, r), Ok(0x0c01_2345));
        assert_eq!(translate(&p, 0x1abc, r), Ok(0x7abc));
    }
}
