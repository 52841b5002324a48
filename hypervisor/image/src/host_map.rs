//! The initial domain's physical map when it owns the machine's devices (issue 15): the host's e820 shape, as Xen
//! builds it for a PVH hardware domain (facts from ../shared/docs/xen-abi.md §4.1, no code taken).
//!
//! - Host RAM ranges become dom0's RAM, in address order, until dom0's size is reached (each range page-aligned
//!   inwards); the host RAM beyond that is UNUSABLE to dom0. Dom0's RAM frames are Keel's to choose (guest-physical
//!   ≠ machine), so an address where Keel's own image or another domain's memory sits may be dom0 RAM.
//! - Every other host range keeps its type at the same address, and ACPI, NVS and RESERVED ranges are mapped
//!   1:1 (guest-physical = machine): firmware tables, the BIOS area, the firmware's reserved MMIO. So are the holes
//!   below 1 MiB (VGA memory, option ROMs).
//! - A tail is taken from the top of dom0's RAM between 1 MiB and 1 GiB: Keel's tables for dom0 (its RSDP, XSDT
//!   and MADT, typed ACPI) and its start_info (RESERVED); it stays in `ram` (populated like the rest).

use crate::{err, ImageError};
use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;
use keel_abi::start_info::{
    HvmMemmapEntry, HVM_MEMMAP_TYPE_ACPI, HVM_MEMMAP_TYPE_NVS, HVM_MEMMAP_TYPE_RAM, HVM_MEMMAP_TYPE_RESERVED,
    HVM_MEMMAP_TYPE_UNUSABLE,
};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;

/// dom0's physical map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dom0Map {
    /// The memory map dom0 is given (start_info and XENMEM_memory_map), sorted.
    pub memmap: Vec<HvmMemmapEntry>,
    /// Guest-physical ranges to fill with fresh RAM (page-aligned, sorted), the tail included.
    pub ram: Vec<Range<u64>>,
    /// Ranges mapped 1:1 from the host (page-aligned, sorted, disjoint from `ram`).
    pub identity: Vec<Range<u64>>,
    /// Start of the tail: `acpi_pages` of ACPI, then the rest RESERVED.
    pub tail: u64,
}

fn entry(addr: u64, size: u64, typ: u32) -> HvmMemmapEntry {
    HvmMemmapEntry { addr, size, typ, reserved: 0 }
}

/// Builds dom0's map from the host's (`host`, in any order) for `ram_bytes` of dom0 RAM, with a tail of
/// `acpi_pages` ACPI pages followed by `reserved_pages` RESERVED pages. `emulated` (sorted, disjoint) are never
/// mapped 1:1 even where the host map marks them reserved: the IO-APICs' and local APICs' windows that Keel
/// emulates. Errors: no host RAM range can hold the tail, or the host map has less RAM than dom0 is to have.
pub fn dom0_map(
    host: &[HvmMemmapEntry],
    ram_bytes: u64,
    acpi_pages: u64,
    reserved_pages: u64,
    emulated: &[Range<u64>],
) -> Result<Dom0Map, ImageError> {
    let mut ram = Vec::new();
    let mut left = ram_bytes / PAGE * PAGE;
    for (_, span) in walk(host) {
        let take = (span.end - span.start).min(left);
        if take > 0 {
            ram.push(span.start..span.start + take);
            left -= take;
        }
    }
    if left > 0 {
        return err(format!("the host has {} MiB less RAM than dom0 is to have", left.div_ceil(MIB)));
    }
    dom0_map_with_ram(host, ram, acpi_pages, reserved_pages, emulated)
}

/// [`dom0_map`] for dom0 RAM at the given guest-physical ranges (page-aligned, sorted, disjoint, inside host RAM):
/// the ranges Keel picked when dom0's RAM is mapped 1:1. The host's other RAM is UNUSABLE to dom0.
pub fn dom0_map_with_ram(
    host: &[HvmMemmapEntry],
    ram: Vec<Range<u64>>,
    acpi_pages: u64,
    reserved_pages: u64,
    emulated: &[Range<u64>],
) -> Result<Dom0Map, ImageError> {
    let mut memmap = Vec::new();
    let mut identity: Vec<Range<u64>> = Vec::new();
    let walked = walk(host);
    for (e, span) in &walked {
        if e.typ == HVM_MEMMAP_TYPE_RAM {
            let (mut at, stop) = (span.start, span.end);
            for r in &ram {
                if r.start >= stop || r.end <= at {
                    continue;
                }
                let (rs, re) = (r.start.max(at), r.end.min(stop));
                if rs > at {
                    memmap.push(entry(at, rs - at, HVM_MEMMAP_TYPE_UNUSABLE));
                }
                memmap.push(entry(rs, re - rs, HVM_MEMMAP_TYPE_RAM));
                at = re;
            }
            if at < stop {
                memmap.push(entry(at, stop - at, HVM_MEMMAP_TYPE_UNUSABLE));
            }
        } else {
            memmap.push(*e);
            if matches!(e.typ, HVM_MEMMAP_TYPE_ACPI | HVM_MEMMAP_TYPE_NVS | HVM_MEMMAP_TYPE_RESERVED) {
                identity.push(e.addr / PAGE * PAGE..(e.addr + e.size).next_multiple_of(PAGE));
            }
        }
    }
    let sorted: Vec<HvmMemmapEntry> = walked.iter().map(|(e, _)| *e).collect();
    let listed: u64 = memmap.iter().filter(|e| e.typ == HVM_MEMMAP_TYPE_RAM).map(|e| e.size).sum();
    if listed != ram.iter().map(|r| r.end - r.start).sum::<u64>() {
        return err("dom0's RAM ranges are not all inside the host's RAM");
    }
    // The holes below 1 MiB: legacy VGA memory and option ROMs.
    let mut at = 0;
    for e in sorted.iter().filter(|e| e.addr < MIB) {
        if e.addr > at {
            identity.push(at.next_multiple_of(PAGE)..e.addr / PAGE * PAGE);
        }
        at = at.max(e.addr.saturating_add(e.size));
    }
    if at < MIB {
        identity.push(at.next_multiple_of(PAGE)..MIB);
    }
    // Identity ranges never overlap RAM (a RAM entry that shares a page with a firmware range loses that page).
    identity = identity
        .into_iter()
        .filter(|r| r.start < r.end)
        .flat_map(|r| subtract(r, &ram))
        .flat_map(|r| subtract(r, emulated))
        .collect();
    identity.sort_by_key(|r| r.start);

    // The tail: at the top of dom0's RAM below 1 GiB.
    let tail_bytes = (acpi_pages + reserved_pages) * PAGE;
    let (_, tail_end) = ram
        .iter()
        .enumerate()
        .rev()
        .map(|(i, r)| (i, r.end.min(1 << 30)))
        .find(|&(i, end)| ram[i].start >= MIB && ram[i].start + tail_bytes < end)
        .ok_or_else(|| ImageError(format!("no RAM between 1 MiB and 1 GiB holds {tail_bytes} bytes")))?;
    let tail = tail_end - tail_bytes;
    let m = memmap
        .iter()
        .position(|e| e.typ == HVM_MEMMAP_TYPE_RAM && e.addr <= tail && tail_end <= e.addr + e.size)
        .ok_or_else(|| ImageError(format!("dom0's tables at {tail:#x} would straddle two host RAM ranges")))?;
    let whole = memmap[m];
    memmap[m].size = tail - whole.addr;
    memmap.insert(m + 1, entry(tail, acpi_pages * PAGE, HVM_MEMMAP_TYPE_ACPI));
    memmap.insert(m + 2, entry(tail + acpi_pages * PAGE, reserved_pages * PAGE, HVM_MEMMAP_TYPE_RESERVED));
    memmap.insert(m + 3, entry(tail_end, whole.addr + whole.size - tail_end, HVM_MEMMAP_TYPE_RAM));
    memmap.retain(|e| e.size > 0);
    Ok(Dom0Map { memmap, ram, identity, tail })
}

/// Where the host's map says nothing between 1 MiB and `top` (page-aligned), less `denied` (sorted, disjoint):
/// device memory (PCI BARs) the hardware domain may have mapped 1:1 when it first touches it, as Xen maps the
/// MMIO its dom0 may use on a nested page fault.
pub fn mmio_holes(host: &[HvmMemmapEntry], top: u64, denied: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut sorted: Vec<(u64, u64)> = host
        .iter()
        .filter(|e| e.size > 0)
        .map(|e| (e.addr / PAGE * PAGE, (e.addr + e.size).next_multiple_of(PAGE)))
        .collect();
    sorted.sort_unstable();
    let mut holes = Vec::new();
    let mut at = MIB;
    for (s, e) in sorted {
        if s > at && at < top {
            holes.push(at..s.min(top));
        }
        at = at.max(e);
    }
    if at < top {
        holes.push(at..top);
    }
    holes.into_iter().flat_map(|r| subtract(r, denied)).collect()
}

/// The host map sorted by address (empty entries dropped), each entry with the page-aligned RAM it contributes:
/// empty for non-RAM, and RAM that overlaps an earlier entry loses the overlap.
fn walk(host: &[HvmMemmapEntry]) -> Vec<(HvmMemmapEntry, Range<u64>)> {
    let mut sorted: Vec<HvmMemmapEntry> = host.iter().copied().filter(|e| e.size > 0).collect();
    sorted.sort_by_key(|e| e.addr);
    let mut covered = 0u64; // end of what the entries before covered
    sorted
        .into_iter()
        .map(|e| {
            let end = e.addr.saturating_add(e.size);
            let span = if e.typ == HVM_MEMMAP_TYPE_RAM {
                let start = e.addr.next_multiple_of(PAGE).max(covered.next_multiple_of(PAGE));
                let stop = end / PAGE * PAGE;
                start.min(stop)..stop
            } else {
                0..0
            };
            covered = covered.max(end);
            (e, span)
        })
        .collect()
}

/// `r` less every range of `cut` (sorted, disjoint).
fn subtract(r: Range<u64>, cut: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut start = r.start;
    for c in cut.iter().filter(|c| c.start < r.end && c.end > r.start) {
        if c.start > start {
            out.push(start..c.start);
        }
        start = start.max(c.end);
    }
    if start < r.end {
        out.push(start..r.end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// QEMU q35 with 4 GiB, as SeaBIOS reports it: low RAM to 0x9fc00, EBDA, the BIOS area, RAM to 2 GiB less the
    /// ACPI tables, a reserved PCIe window, 2 GiB above 4 GiB.
    fn q35() -> Vec<HvmMemmapEntry> {
        vec![
            entry(0x1_0000_0000, 0x8000_0000, HVM_MEMMAP_TYPE_RAM),
            entry(0, 0x9fc00, HVM_MEMMAP_TYPE_RAM),
            entry(0x9fc00, 0x400, HVM_MEMMAP_TYPE_RESERVED),
            entry(0xf0000, 0x10000, HVM_MEMMAP_TYPE_RESERVED),
            entry(0x10_0000, 0x7fee_0000, HVM_MEMMAP_TYPE_RAM),
            entry(0x7ffe_0000, 0x2_0000, HVM_MEMMAP_TYPE_ACPI),
            entry(0xb000_0000, 0x1000_0000, HVM_MEMMAP_TYPE_RESERVED),
            entry(0xfffc_0000, 0x4_0000, HVM_MEMMAP_TYPE_RESERVED),
        ]
    }

    #[test]
    fn the_tail_splits_a_range_that_crosses_1_gib() {
        let m = dom0_map(&q35(), 1 << 30, 1, 3, &[]).unwrap();
        let high_end = 0x10_0000 + (1 << 30) - 0x9f000;
        assert_eq!(m.ram, [0..0x9f000, 0x10_0000..high_end]);
        assert_eq!(m.tail, (1 << 30) - 4 * PAGE);
        let around: Vec<_> = m.memmap.iter().filter(|e| e.addr >= 0x10_0000 && e.addr < 0x7ffe_0000).collect();
        assert_eq!(
            around,
            [
                &entry(0x10_0000, (1 << 30) - 4 * PAGE - 0x10_0000, HVM_MEMMAP_TYPE_RAM),
                &entry((1 << 30) - 4 * PAGE, PAGE, HVM_MEMMAP_TYPE_ACPI),
                &entry((1 << 30) - 3 * PAGE, 3 * PAGE, HVM_MEMMAP_TYPE_RESERVED),
                &entry(1 << 30, high_end - (1 << 30), HVM_MEMMAP_TYPE_RAM),
                &entry(high_end, 0x7ffe_0000 - high_end, HVM_MEMMAP_TYPE_UNUSABLE),
            ]
        );
    }

    #[test]
    fn the_tail_sits_below_1_gib_and_the_rest_is_unusable() {
        let m = dom0_map(&q35(), 512 << 20, 1, 3, &[]).unwrap();
        let low = 0x9f000;
        let high_end = 0x10_0000 + (512 << 20) - low;
        assert_eq!(m.ram, [0..low, 0x10_0000..high_end]);
        assert_eq!(m.tail, high_end - 4 * PAGE);
        assert_eq!(
            m.memmap,
            [
                entry(0, low, HVM_MEMMAP_TYPE_RAM),
                entry(0x9fc00, 0x400, HVM_MEMMAP_TYPE_RESERVED),
                entry(0xf0000, 0x10000, HVM_MEMMAP_TYPE_RESERVED),
                entry(0x10_0000, high_end - 4 * PAGE - 0x10_0000, HVM_MEMMAP_TYPE_RAM),
                entry(high_end - 4 * PAGE, PAGE, HVM_MEMMAP_TYPE_ACPI),
                entry(high_end - 3 * PAGE, 3 * PAGE, HVM_MEMMAP_TYPE_RESERVED),
                entry(high_end, 0x7ffe_0000 - high_end, HVM_MEMMAP_TYPE_UNUSABLE),
                entry(0x7ffe_0000, 0x2_0000, HVM_MEMMAP_TYPE_ACPI),
                entry(0xb000_0000, 0x1000_0000, HVM_MEMMAP_TYPE_RESERVED),
                entry(0xfffc_0000, 0x4_0000, HVM_MEMMAP_TYPE_RESERVED),
                entry(0x1_0000_0000, 0x8000_0000, HVM_MEMMAP_TYPE_UNUSABLE),
            ]
        );
        // 1:1: the EBDA page is shared with RAM (0x9f000..0xa0000 holds RAM up to 0x9fc00): RAM was rounded
        // down, so the page is the EBDA's; the VGA/ROM hole; the BIOS; the tables; the PCIe window; the flash.
        assert_eq!(
            m.identity,
            [
                0x9f000..0xa0000,
                0xa0000..0xf0000,
                0xf0000..0x10_0000,
                0x7ffe_0000..0x8000_0000,
                0xb000_0000..0xc000_0000,
                0xfffc_0000..0x1_0000_0000
            ]
        );
    }

    #[test]
    fn emulated_windows_are_never_1_to_1() {
        let mut host = q35();
        host.push(entry(0xfec0_0000, 0x1000, HVM_MEMMAP_TYPE_RESERVED));
        host.push(entry(0xfed0_0000, 0x20_0000, HVM_MEMMAP_TYPE_RESERVED));
        let m = dom0_map(&host, 512 << 20, 1, 3, &[0xfec0_0000..0xfec0_1000, 0xfee0_0000..0xfee0_1000]).unwrap();
        let high: Vec<_> = m.identity.iter().filter(|r| r.start >= 0xfe00_0000).cloned().collect();
        assert_eq!(high, [0xfed0_0000..0xfee0_0000, 0xfee0_1000..0xfef0_0000, 0xfffc_0000..0x1_0000_0000]);
    }

    #[test]
    fn ram_keel_picked_is_listed_and_the_rest_is_unusable() {
        // Low RAM above Keel's first 64 KiB, then the frames Keel picked around its own (the image at 2 MiB,
        // its heap at 160 MiB).
        let ram = vec![0x1_0000..0x9f000, 0x10_0000..0x20_0000, 0x50_0000..0xa00_0000, 0xb00_0000..0x2000_0000];
        let m = dom0_map_with_ram(&q35(), ram.clone(), 1, 3, &[]).unwrap();
        assert_eq!(m.ram, ram);
        let low: Vec<_> = m.memmap.iter().filter(|e| e.addr < 0xb00_0000).copied().collect();
        assert_eq!(
            low,
            [
                entry(0, 0x1_0000, HVM_MEMMAP_TYPE_UNUSABLE),
                entry(0x1_0000, 0x8_f000, HVM_MEMMAP_TYPE_RAM),
                entry(0x9fc00, 0x400, HVM_MEMMAP_TYPE_RESERVED),
                entry(0xf0000, 0x10000, HVM_MEMMAP_TYPE_RESERVED),
                entry(0x10_0000, 0x10_0000, HVM_MEMMAP_TYPE_RAM),
                entry(0x20_0000, 0x30_0000, HVM_MEMMAP_TYPE_UNUSABLE),
                entry(0x50_0000, 0x9b0_0000, HVM_MEMMAP_TYPE_RAM),
                entry(0xa00_0000, 0x100_0000, HVM_MEMMAP_TYPE_UNUSABLE),
            ]
        );
        assert_eq!(m.tail, 0x2000_0000 - 4 * PAGE, "the top of dom0's RAM below 1 GiB");
        // RAM Keel says is dom0's but the host does not have.
        let outside = core::iter::once(0x8000_0000..0x8010_0000).collect();
        assert!(dom0_map_with_ram(&q35(), outside, 1, 3, &[]).is_err());
    }

    #[test]
    fn mmio_holes_are_what_the_host_map_leaves_out() {
        let holes = mmio_holes(&q35(), 1 << 40, &[0xfec0_0000..0xfec0_1000, 0xfed0_0000..0xfed0_1000]);
        assert_eq!(
            holes,
            [
                0x8000_0000..0xb000_0000,
                0xc000_0000..0xfec0_0000,
                0xfec0_1000..0xfed0_0000,
                0xfed0_1000..0xfffc_0000,
                0x1_8000_0000..1 << 40
            ]
        );
    }

    #[test]
    fn ram_above_4_gib_is_used_when_dom0_is_big() {
        let m = dom0_map(&q35(), 3 << 30, 1, 3, &[]).unwrap();
        assert_eq!(m.ram.len(), 3);
        assert_eq!(m.ram[2].start, 0x1_0000_0000);
        let total: u64 = m.ram.iter().map(|r| r.end - r.start).sum();
        assert_eq!(total, 3 << 30);
        assert!(m.tail < 1 << 30 || m.ram[1].end <= 1 << 30);
    }

    #[test]
    fn too_little_host_ram_or_no_room_for_the_tail_is_an_error() {
        assert!(dom0_map(&q35(), 5 << 30, 1, 3, &[]).unwrap_err().0.contains("less RAM"));
        let only_low = [entry(0, 0x9fc00, HVM_MEMMAP_TYPE_RAM)];
        assert!(dom0_map(&only_low, 0x9f000, 1, 3, &[]).unwrap_err().0.contains("no RAM between"));
    }
}
