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
