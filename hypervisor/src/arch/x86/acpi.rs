//! The host's ACPI tables, through the `acpi` crate: the MADT for CPUs and IO-APICs, the FADT (and the DSDT's
//! `\_S5` object) for power-off and reset.

use crate::bootinfo::{AcpiRoot, MemKind, MemRegion};
use acpi::madt::{Madt, MadtEntry};
use acpi::{fadt::Fadt, AcpiHandler, AcpiTables, PhysicalMapping};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::pin::Pin;
use core::ptr::NonNull;

/// Keel maps all physical memory at the same virtual address, so "mapping" a table is a cast.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityMap;

impl AcpiHandler for IdentityMap {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        // SAFETY: physical memory is identity-mapped (see `paging`), so the physical address is a valid virtual
        // one for `size` bytes; the caller of this trait method guarantees a `T` lives there.
        unsafe {
            PhysicalMapping::new(
                physical_address,
                NonNull::new(physical_address as *mut T).expect("ACPI table at physical address 0"),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// One processor from the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuEntry {
    /// Local APIC / x2APIC id.
    pub apic_id: u32,
    /// ACPI processor UID.
    pub uid: u32,
    /// Usable now (enabled flag set).
    pub enabled: bool,
}

/// One IO-APIC from the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicEntry {
    /// IO-APIC id.
    pub id: u8,
    /// MMIO address.
    pub address: u32,
    /// First global system interrupt it serves.
    pub gsi_base: u32,
}

/// The interrupt topology.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// xAPIC MMIO base.
    pub lapic_address: u64,
    /// Every processor, in MADT order.
    pub cpus: Vec<CpuEntry>,
    /// IO-APICs.
    pub ioapics: Vec<IoApicEntry>,
    /// Whether 8259 PICs are present too (they must be masked).
    pub has_8259: bool,
}

/// Reads CPUs and IO-APICs out of a MADT.
pub fn parse_madt(madt: Pin<&Madt>) -> Topology {
    let mut t =
        Topology { lapic_address: madt.local_apic_address as u64, has_8259: madt.flags & 1 != 0, ..Default::default() };
    for e in madt.entries() {
        match e {
            MadtEntry::LocalApic(l) => {
                let flags = l.flags;
                // Bit 0 "enabled", bit 1 "online capable" (may be hot-added later: not started now).
                t.cpus.push(CpuEntry {
                    apic_id: l.apic_id as u32,
                    uid: l.processor_id as u32,
                    enabled: flags & 1 != 0,
                });
            }
            MadtEntry::LocalX2Apic(x) => {
                let (id, uid, flags) = (x.x2apic_id, x.processor_uid, x.flags);
                if !t.cpus.iter().any(|c| c.apic_id == id) {
                    t.cpus.push(CpuEntry { apic_id: id, uid, enabled: flags & 1 != 0 });
                }
            }
            MadtEntry::IoApic(io) => {
                t.ioapics.push(IoApicEntry {
                    id: io.io_apic_id,
                    address: io.io_apic_address,
                    gsi_base: io.global_system_interrupt_base,
                });
            }
            MadtEntry::LocalApicAddressOverride(o) => t.lapic_address = o.local_apic_address,
            _ => {}
        }
    }
    t
}

/// Where and how to power off or reset the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PowerInfo {
    /// PM1a control block I/O port.
    pub pm1a_cnt: Option<u16>,
    /// PM1b control block I/O port.
    pub pm1b_cnt: Option<u16>,
    /// SLP_TYPa and SLP_TYPb for S5, from the DSDT.
    pub s5: Option<(u8, u8)>,
    /// SMI command port and the value that switches the firmware to ACPI mode.
    pub acpi_enable: Option<(u16, u8)>,
    /// FADT reset register (I/O port) and value, when the FADT says it works.
    pub reset: Option<(u16, u8)>,
    /// ACPI PM timer I/O port and whether it is 32 bits wide (else 24).
    pub pm_timer: Option<(u16, bool)>,
}

/// Everything Keel takes from the host's ACPI tables.
#[derive(Clone, Debug, Default)]
pub struct HostAcpi {
    /// CPUs and IO-APICs.
    pub topology: Topology,
    /// Power control.
    pub power: PowerInfo,
    /// Problems met on the way (logged by the caller).
    pub notes: Vec<String>,
}

/// Finds `Name(_S5, Package(){a, b, ...})` in AML and returns (SLP_TYPa, SLP_TYPb).
pub fn find_s5(aml: &[u8]) -> Option<(u8, u8)> {
    let pos = aml.windows(4).position(|w| w == b"_S5_")?;
    // Expect NameOp (0x08), optionally followed by a root prefix '\', before the name.
    let before = &aml[..pos];
    let name_ok = before.ends_with(&[0x08]) || before.ends_with(&[0x08, b'\\']);
    if !name_ok {
        return None;
    }
    let mut i = pos + 4;
    if *aml.get(i)? != 0x12 {
        return None; // PackageOp
    }
    i += 1;
    let lead = *aml.get(i)?;
    i += 1 + (lead >> 6) as usize; // PkgLength: lead byte plus 0-3 following bytes
    i += 1; // NumElements
    let element = |i: &mut usize| -> Option<u8> {
        let op = *aml.get(*i)?;
        *i += 1;
        match op {
            0x00 => Some(0),
            0x01 => Some(1),
            0xff => Some(0xff),
            0x0a => {
                let v = *aml.get(*i)?;
                *i += 1;
                Some(v)
            }
            0x0b => {
                let v = *aml.get(*i)?;
                *i += 2;
                Some(v)
            }
            _ => None,
        }
    };
    let a = element(&mut i)?;
    let b = element(&mut i).unwrap_or(0);
    Some((a, b))
}

fn io_port(g: &acpi::address::GenericAddress) -> Option<u16> {
    (g.address_space == acpi::address::AddressSpace::SystemIo && g.address != 0)
        .then(|| u16::try_from(g.address).ok())
        .flatten()
}

/// `len` bytes of the firmware's memory at physical `address` (ACPI tables, for dom0's view of them), or `None`
/// unless the whole range lies in one range of the host's memory map that is RAM, ACPI, NVS or reserved, below
/// 4 GiB (which Keel's page tables always map) and above page 0 (which they leave unmapped).
pub fn read_firmware(memory: &[MemRegion], address: u64, len: usize) -> Option<Vec<u8>> {
    let end = address.checked_add(len as u64)?;
    let inside = memory.iter().any(|r| r.kind != MemKind::Bad && r.start <= address && end <= r.end);
    if !inside || address < 4096 || end > 1 << 32 || len > 1 << 20 {
        return None;
    }
    let mut out = Vec::new();
    out.try_reserve_exact(len).ok()?;
    // SAFETY: `address..end` lies below 4 GiB, above page 0, in one range the firmware's memory map describes as
    // memory (checked above), all of which Keel's page tables map 1:1; the bytes are copied out as plain data.
    out.extend_from_slice(unsafe { core::slice::from_raw_parts(address as *const u8, len) });
    Some(out)
}

/// Reads the host tables starting at `root`.
pub fn read(root: AcpiRoot) -> Result<HostAcpi, String> {
    // SAFETY: `root` comes from the boot loader and points at firmware tables in identity-mapped memory that Keel
    // never hands out (reserved or ACPI ranges of the memory map).
    let tables = unsafe {
        match root {
            AcpiRoot::Rsdp(p) => AcpiTables::from_rsdp(IdentityMap, p as usize),
            AcpiRoot::Sdt { revision, address } => AcpiTables::from_rsdt(IdentityMap, revision, address as usize),
        }
    }
    .map_err(|e| format!("ACPI tables unreadable: {e:?}"))?;
    let mut out = HostAcpi::default();
    match tables.find_table::<Madt>() {
        Ok(m) => out.topology = parse_madt(m.get()),
        Err(e) => out.notes.push(format!("no usable MADT ({e:?}): only the boot CPU will run")),
    }
    match tables.find_table::<Fadt>() {
        Ok(fadt) => {
            let p = &mut out.power;
            p.pm1a_cnt = fadt.pm1a_control_block().ok().as_ref().and_then(io_port);
            p.pm1b_cnt = fadt.pm1b_control_block().ok().flatten().as_ref().and_then(io_port);
            let (smi, en) = (fadt.smi_cmd_port, fadt.acpi_enable);
            if smi != 0 && en != 0 {
                p.acpi_enable = u16::try_from(smi).ok().map(|port| (port, en));
            }
            p.pm_timer = fadt
                .pm_timer_block()
                .ok()
                .flatten()
                .as_ref()
                .and_then(io_port)
                .map(|port| (port, { fadt.flags }.pm_timer_is_32_bit()));
            let flags = fadt.flags;
            if flags.supports_system_reset_via_fadt() {
                if let Some(port) = fadt.reset_register().ok().as_ref().and_then(io_port) {
                    p.reset = Some((port, fadt.reset_value));
                }
            }
        }
        Err(e) => out.notes.push(format!("no usable FADT ({e:?}): ACPI power-off unavailable")),
    }
    match tables.dsdt() {
        Ok(dsdt) => {
            // SAFETY: the DSDT's AML stream lies in identity-mapped firmware memory, `length` bytes long.
            let aml = unsafe { core::slice::from_raw_parts(dsdt.address as *const u8, dsdt.length as usize) };
            out.power.s5 = find_s5(aml);
            if out.power.s5.is_none() {
                out.notes.push("DSDT has no \\_S5 object: ACPI power-off unavailable".into());
            }
        }
        Err(e) => out.notes.push(format!("no DSDT ({e:?})")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A canned MADT as QEMU builds it for 2 CPUs plus one x2APIC-only entry and an IO-APIC.
    fn madt_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"APIC");
        b.extend_from_slice(&0u32.to_le_bytes()); // length, patched below
        b.push(1); // revision
        b.push(0); // checksum, patched below
        b.extend_from_slice(b"BOCHS ");
        b.extend_from_slice(b"BXPC    ");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"BXPC");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&0xfee0_0000u32.to_le_bytes()); // local APIC address
        b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
        b.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // LAPIC uid 0 id 0 enabled
        b.extend_from_slice(&[0, 8, 1, 1, 1, 0, 0, 0]); // LAPIC uid 1 id 1 enabled
        b.extend_from_slice(&[0, 8, 2, 2, 0, 0, 0, 0]); // LAPIC uid 2 id 2 disabled
        b.extend_from_slice(&[1, 12, 0, 0]); // IO-APIC id 0
        b.extend_from_slice(&0xfec0_0000u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&[9, 16, 0, 0]); // x2APIC id 300, uid 300, enabled
        b.extend_from_slice(&300u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&300u32.to_le_bytes());
        let len = b.len() as u32;
        b[4..8].copy_from_slice(&len.to_le_bytes());
        let sum = b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        b[9] = 0u8.wrapping_sub(sum);
        b
    }

    #[test]
    fn madt_from_canned_table() {
        let bytes = madt_bytes();
        // Keep the table 8-byte aligned as firmware does.
        let mut aligned = alloc::vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `aligned` has at least bytes.len() bytes; plain byte copy.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), bytes.len()) };
        // SAFETY: the buffer holds a complete, well-formed MADT whose header length matches, and it is neither
        // moved nor freed while the pinned reference lives.
        let madt = unsafe { Pin::new_unchecked(&*(aligned.as_ptr() as *const Madt)) };
        let t = parse_madt(madt);
        assert_eq!(t.lapic_address, 0xfee0_0000);
        assert!(t.has_8259);
        assert_eq!(
            t.cpus,
            [
                CpuEntry { apic_id: 0, uid: 0, enabled: true },
                CpuEntry { apic_id: 1, uid: 1, enabled: true },
                CpuEntry { apic_id: 2, uid: 2, enabled: false },
                CpuEntry { apic_id: 300, uid: 300, enabled: true },
            ]
        );
        assert_eq!(t.ioapics, [IoApicEntry { id: 0, address: 0xfec0_0000, gsi_base: 0 }]);
    }

    #[test]
    fn s5_forms() {
        // QEMU: Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero })
        let qemu = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(find_s5(&qemu), Some((0, 0)));
        // Root-prefixed, byte-prefixed values: Package(){0x07, 0x07}
        let other = [0x10, 0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x02, 0x0a, 0x07, 0x0a, 0x07];
        assert_eq!(find_s5(&other), Some((7, 7)));
        assert_eq!(find_s5(b"no sleep states here"), None);
        assert_eq!(find_s5(&[0x08, b'_', b'S', b'5', b'_', 0x12]), None);
    }
}
