//! The hypervisor's side of guest images: a thin adapter that writes what the shared `keel-image` crate plans
//! (kernel segments, `hvm_start_info`, ACPI tables) into a domain's memory. The parsing and building itself lives
//! in `keel-image` (hypervisor/image), which dom0-tools' domain builder uses too.

use crate::domain::Memory;
use alloc::format;
use keel_abi::start_info::HvmMemmapEntry;
pub use keel_image::kernel::{self, Format, KernelPlan};
pub use keel_image::start_info::{memory_map, GuestModule};
pub use keel_image::{acpi as acpi_tables, bzimage, ImageError as LoadError};

/// Copies the segments of the ELF kernel `elf` into guest memory (bss zeroed). Returns the PVH entry point.
pub fn load_pvh(mem: &Memory, elf: &[u8]) -> Result<u32, LoadError> {
    let plan = kernel::plan(elf, mem.ram_end)?;
    place(mem, &plan)?;
    Ok(plan.entry)
}

/// Writes a kernel plan's segments into guest memory.
pub fn place(mem: &Memory, plan: &KernelPlan<'_>) -> Result<(), LoadError> {
    let zeros = [0u8; 4096];
    for (i, s) in plan.segments.iter().enumerate() {
        mem.write(s.gpa, s.data).map_err(|e| LoadError(format!("segment {i}: guest address {:#x} unmapped", e.0)))?;
        // The plan checked that the segment ends inside RAM, so this cannot wrap.
        let (mut at, end) = (s.gpa + s.data.len() as u64, s.range().end);
        while at < end {
            let n = core::cmp::min(4096, end - at) as usize;
            mem.write(at, &zeros[..n]).map_err(|e| LoadError(format!("bss at {:#x} unmapped", e.0)))?;
            at += n as u64;
        }
    }
    Ok(())
}

/// Writes `hvm_start_info` (v1) and its tables into the page(s) at `at` (which the memory map marks reserved).
/// Returns the start_info guest-physical address.
pub fn write_start_info(
    mem: &Memory,
    at: u64,
    flags: u32,
    cmdline: &str,
    modules: &[GuestModule],
    memmap: &[HvmMemmapEntry],
    rsdp: u64,
) -> Result<u32, LoadError> {
    let bytes = keel_image::start_info::build(at, flags, cmdline, modules, memmap, rsdp)?;
    mem.write(at, &bytes).map_err(|_| LoadError("start_info area unmapped".into()))?;
    // `build` refuses an area that does not end below 1 GiB.
    Ok(at as u32)
}

#[cfg(test)]
mod tests {
    use crate::arch::x86::acpi::{parse_madt, CpuEntry};
    use acpi::madt::Madt;
    use alloc::vec::Vec;
    use core::pin::Pin;

    /// An ELF32 PVH kernel for EM_386 (as XTF builds 64-bit test kernels): 0x20 bytes of code at 1 MiB followed
    /// by 0x1fe0 bytes of bss, and a zero-fill-only segment at 2 MiB; entry 1 MiB + 4.
    fn elf32_kernel() -> Vec<u8> {
        let mut b = alloc::vec![0u8; 0x200];
        b[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        b[18..20].copy_from_slice(&3u16.to_le_bytes());
        b[28..32].copy_from_slice(&52u32.to_le_bytes());
        b[42..44].copy_from_slice(&32u16.to_le_bytes());
        b[44..46].copy_from_slice(&3u16.to_le_bytes());
        // type, offset, vaddr, paddr, filesz, memsz
        for (at, f) in [
            (52, [1u32, 0x100, 0x10_0000, 0x10_0000, 0x20, 0x2000]),
            (84, [4, 0x180, 0, 0, 20, 20]),
            (116, [1, 0, 0x20_0000, 0x20_0000, 0, 0x1800]),
        ] {
            for (i, v) in f.iter().enumerate() {
                b[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        b[0x100..0x120].fill(0x90);
        for (i, v) in [4u32, 4, keel_abi::elfnote::PHYS32_ENTRY].iter().enumerate() {
            b[0x180 + 4 * i..0x184 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[0x18c..0x190].copy_from_slice(b"Xen\0");
        b[0x190..0x194].copy_from_slice(&0x10_0004u32.to_le_bytes());
        b
    }

    /// The adapter writes keel-image's plan into a domain: the file bytes, the bss zeroed over whatever was there
    /// (also a segment that is all bss), nothing when the kernel does not fit.
    #[test]
    fn load_pvh_writes_segments_and_zeroes_bss() {
        let dom = crate::testing::domain(1, 16);
        let mem = dom.mem.lock();
        for gpa in [0x10_0000u64, 0x20_0000] {
            mem.write(gpa, &[0xffu8; 0x2000]).unwrap();
        }
        assert_eq!(super::load_pvh(&mem, &elf32_kernel()), Ok(0x10_0004));
        let mut buf = alloc::vec![0u8; 0x2000];
        mem.read(0x10_0000, &mut buf).unwrap();
        assert!(buf[..0x20].iter().all(|&b| b == 0x90));
        assert!(buf[0x20..].iter().all(|&b| b == 0), "bss zeroed");
        mem.read(0x20_0000, &mut buf).unwrap();
        assert!(buf[..0x1800].iter().all(|&b| b == 0), "zero-fill-only segment");
        assert!(buf[0x1800..].iter().all(|&b| b == 0xff), "nothing past the segment");
        // Into 2 MiB of RAM its second segment does not fit: an error.
        let small = crate::testing::domain(1, 2);
        let e = super::load_pvh(&small.mem.lock(), &elf32_kernel()).unwrap_err();
        assert!(e.0.contains("segment 1 (0x200000..0x201800) does not fit in the domain's 2 MiB of RAM"), "{e}");
        // start_info lands where asked and reads back.
        let map = super::memory_map(16 << 20, 0x9000);
        assert_eq!(super::write_start_info(&mem, 0x9000, 0, "x=1", &[], &map, 0), Ok(0x9000));
        let info: keel_abi::start_info::HvmStartInfo = mem.read_val(0x9000).unwrap();
        assert_eq!((info.magic, info.memmap_entries), (keel_abi::start_info::HVM_START_MAGIC, 3));
    }

    /// The MADT keel-image builds reads back through Keel's own MADT parser (the one that reads the machine's):
    /// every vCPU enabled, x2APIC id = ACPI UID = vCPU id, no 8259s, no IO-APIC.
    #[test]
    fn keels_madt_parser_reads_the_guest_tables() {
        for vcpus in [1u32, 3, 64, 300] {
            let blob = super::acpi_tables::build(0x10_0000, vcpus);
            let b = &blob.bytes;
            let at = b.windows(4).position(|w| w == b"APIC").expect("a MADT");
            let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
            assert!(at + len <= b.len() && len >= core::mem::size_of::<Madt>());
            // SAFETY: `Madt` is `repr(C, packed)` (alignment 1) and its header and every entry its length covers lie
            // in `b` (checked above), which outlives `madt` and is not modified; the reference is never moved.
            let madt = unsafe { Pin::new_unchecked(&*(b[at..].as_ptr() as *const Madt)) };
            let topo = parse_madt(madt);
            assert_eq!(topo.lapic_address, 0xfee0_0000);
            assert!(!topo.has_8259);
            assert!(topo.ioapics.is_empty());
            let want: Vec<_> = (0..vcpus).map(|i| CpuEntry { apic_id: i, uid: i, enabled: true }).collect();
            assert_eq!(topo.cpus, want);
        }
    }
}
