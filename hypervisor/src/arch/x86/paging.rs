//! Keel's own page tables: every byte of physical memory identity-mapped, with 2 MiB pages, except the first
//! 2 MiB which use 4 KiB pages so that page 0 stays unmapped (a null dereference faults). The range from 3 GiB to
//! 4 GiB, where PCs put device MMIO (LAPIC, IO-APIC, HPET), is mapped uncached.

use crate::mm::frame::{FrameAllocator, OutOfFrames};
use crate::mm::{align_up, PAGE_SIZE};
use x86_64::structures::paging::{PageTable, PageTableFlags as F};
use x86_64::PhysAddr;

const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const MMIO_HOLE: core::ops::Range<u64> = 0xc000_0000..0x1_0000_0000;

fn new_table(frames: &mut FrameAllocator) -> Result<&'static mut PageTable, OutOfFrames> {
    // Tables below 4 GiB so that the AP trampoline can load CR3 from 32-bit code.
    let p = frames.alloc_contiguous(1, PAGE_SIZE, 1 << 32)?;
    // SAFETY: the frame was just allocated (nobody else uses it) and is identity-mapped by the boot tables.
    let t = unsafe { &mut *(p as *mut PageTable) };
    t.zero();
    Ok(t)
}

fn table_addr(t: &PageTable) -> PhysAddr {
    PhysAddr::new(t as *const PageTable as u64)
}

/// Builds the tables covering `[0, max(top, 4 GiB))` and returns the PML4's physical address.
pub fn build(frames: &mut FrameAllocator, top: u64) -> Result<u64, OutOfFrames> {
    let top = align_up(core::cmp::max(top, 4 * GIB), GIB);
    let rw = F::PRESENT | F::WRITABLE;
    let pml4 = new_table(frames)?;
    let mut addr = 0u64;
    while addr < top {
        let l4 = ((addr >> 39) & 511) as usize;
        if pml4[l4].is_unused() {
            let t = new_table(frames)?;
            pml4[l4].set_addr(table_addr(t), rw);
        }
        // SAFETY: the entry was just set to a table allocated above, identity-mapped.
        let pdpt = unsafe { &mut *(pml4[l4].addr().as_u64() as *mut PageTable) };
        let pd = new_table(frames)?;
        pdpt[((addr >> 30) & 511) as usize].set_addr(table_addr(pd), rw);
        for (i, e) in pd.iter_mut().enumerate() {
            let a = addr + i as u64 * MIB2;
            let mut flags = rw | F::HUGE_PAGE;
            if MMIO_HOLE.contains(&a) {
                flags |= F::NO_CACHE | F::WRITE_THROUGH;
            }
            if a == 0 {
                let pt = new_table(frames)?;
                for (j, pte) in pt.iter_mut().enumerate().skip(1) {
                    pte.set_addr(PhysAddr::new(j as u64 * PAGE_SIZE), rw);
                }
                e.set_addr(table_addr(pt), rw);
            } else {
                e.set_addr(PhysAddr::new(a), flags);
            }
        }
        addr += GIB;
    }
    Ok(table_addr(pml4).as_u64())
}
