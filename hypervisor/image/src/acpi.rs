//! The ACPI tables Keel gives a PVH guest (`hvm_start_info.rsdp_paddr` points at the RSDP): Linux 6.1 PVH
//! enumerates its CPUs from the MADT only, and a hardware-reduced FADT makes it skip the PIC, PIT and the
//! other fixed ACPI hardware (`arch/x86/kernel/acpi/boot.c`, `acpi_generic_reduced_hw_init`).
//!
//! Facts from Xen's `tools/libacpi` and `tools/libs/light/libxl_x86_acpi.c` (no code taken) and ACPI 6.5;
//! unlike Xen, Keel makes the FADT hardware-reduced (so it needs no FACS, PM blocks or SCI) and gives every
//! vCPU an x2APIC entry whose APIC id equals its vCPU id (Xen: LAPIC entries with APIC id 2·i). Linux takes a
//! vCPU's Xen id from its ACPI processor UID, so UID = vCPU id; CPUID's APIC ids must match the MADT.
//!
//! Layout at `base_gpa`, each table 16-byte aligned (535 bytes for 1 vCPU, 3,370 for 64, 6,250 for 128):
//!
//! | Table | Bytes       | Contents                                                                        |
//! |-------|-------------|---------------------------------------------------------------------------------|
//! | RSDP  | 36          | revision 2, XSDT address, no RSDT, both checksums                               |
//! | XSDT  | 36 + 8·2    | FADT, MADT                                                                      |
//! | FADT  | 276         | revision 6.5, HW_REDUCED_ACPI, DSDT and X_DSDT → DSDT, no FACS, no PM blocks    |
//! | MADT  | 44 + 16·n   | revision 5, LAPIC at 0xFEE00000, no PC-AT 8259s, one x2APIC entry per vCPU       |
//! | DSDT  | 36 + AML    | `\_SB` with one processor device per vCPU (see [`dsdt_aml`])                    |
//!
//! Every table: OEM id `"KEEL  "`, OEM table id `"KEELVM  "`, OEM revision 1, creator `"KEEL"` revision 1.

use alloc::vec::Vec;

/// Most vCPUs the tables can describe: processor device names are `C000`..`CFFF`.
pub const MAX_VCPUS: u32 = 4096;
/// xAPIC MMIO base in the MADT.
pub const LOCAL_APIC_ADDRESS: u32 = 0xfee0_0000;

const OEM_ID: &[u8; 6] = b"KEEL  ";
const OEM_TABLE_ID: &[u8; 8] = b"KEELVM  ";
const OEM_REVISION: u32 = 1;
const CREATOR_ID: &[u8; 4] = b"KEEL";
const CREATOR_REVISION: u32 = 1;

const HEADER_LEN: usize = 36;
const RSDP_LEN: usize = 36;
/// FADT of ACPI 6.0 and later: up to the hypervisor vendor identity.
const FADT_LEN: usize = 276;
const MADT_ENTRY_LEN: usize = 16;

/// FADT flags: WBINVD works; C1 on all processors; power and sleep buttons, if any, are control methods (there
/// are none); RTC wake status not in fixed registers; hardware-reduced ACPI (bit 20).
pub const FADT_FLAGS: u32 = 1 | 1 << 2 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 20;
/// FADT IA-PC boot architecture flags: no VGA (bit 2), no CMOS RTC (bit 5), as Xen gives PVH guests; legacy
/// devices (bit 0) and the 8042 (bit 1) absent.
pub const IAPC_BOOT_ARCH: u16 = 1 << 2 | 1 << 5;

/// The tables, ready to copy into guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiBlob {
    /// The bytes to place at `base_gpa`.
    pub bytes: Vec<u8>,
    /// Guest-physical address of the RSDP (for `hvm_start_info.rsdp_paddr`).
    pub rsdp_gpa: u64,
    /// vCPUs described: the `vcpus` asked for, clamped to `1..=MAX_VCPUS`.
    pub vcpus: u32,
}

/// Builds the tables for a guest with `vcpus` vCPUs (ids `0..vcpus`), to be placed at guest-physical
/// `base_gpa`, which should be 16-byte aligned (the RSDP is at `base_gpa`). A count outside
/// `1..=MAX_VCPUS` is clamped; [`AcpiBlob::vcpus`] says what the tables describe.
pub fn build(base_gpa: u64, vcpus: u32) -> AcpiBlob {
    let vcpus = vcpus.clamp(1, MAX_VCPUS);
    let xsdt_off = align16(RSDP_LEN);
    let fadt_off = align16(xsdt_off + HEADER_LEN + 2 * 8);
    let madt_off = align16(fadt_off + FADT_LEN);
    let dsdt_off = align16(madt_off + HEADER_LEN + 8 + MADT_ENTRY_LEN * vcpus as usize);
    let gpa = |off: usize| base_gpa + off as u64;

    let mut b = Vec::new();
    b.extend_from_slice(&rsdp(gpa(xsdt_off)));
    b.resize(xsdt_off, 0);
    b.extend_from_slice(&table(*b"XSDT", 1, &[gpa(fadt_off).to_le_bytes(), gpa(madt_off).to_le_bytes()].concat()));
    b.resize(fadt_off, 0);
    b.extend_from_slice(&fadt(gpa(dsdt_off)));
    b.resize(madt_off, 0);
    b.extend_from_slice(&madt(vcpus));
    b.resize(dsdt_off, 0);
    b.extend_from_slice(&table(*b"DSDT", 2, &dsdt_aml(vcpus)));
    AcpiBlob { bytes: b, rsdp_gpa: base_gpa, vcpus }
}

fn align16(n: usize) -> usize {
    n.next_multiple_of(16)
}

/// The byte that makes `bytes` sum to zero.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &x| a.wrapping_add(x)))
}

/// RSDP, ACPI 2.0+ form: checksum over the first 20 bytes, extended checksum over all 36.
pub(crate) fn rsdp(xsdt: u64) -> [u8; RSDP_LEN] {
    let mut r = [0u8; RSDP_LEN];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(OEM_ID);
    r[15] = 2; // revision
               // 16..20: RsdtAddress, 0: no RSDT (Linux uses the XSDT when the revision is 2 or more).
    r[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// A system description table: the 36-byte header, then `body`, checksummed.
pub(crate) fn table(signature: [u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(HEADER_LEN + body.len());
    t.extend_from_slice(&signature);
    t.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&OEM_REVISION.to_le_bytes());
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// FADT revision 6 (minor 5). Hardware-reduced: every PM block, GPE block, the SCI, SMI command port, reset
/// register and sleep registers are zero, and so is the FACS address (ACPICA ignores the FACS on hardware-
/// reduced systems). Both DSDT fields hold the DSDT's address, the 32-bit one only when it fits.
fn fadt(dsdt: u64) -> Vec<u8> {
    let mut f = [0u8; FADT_LEN - HEADER_LEN];
    let mut put = |off: usize, v: &[u8]| f[off - HEADER_LEN..off - HEADER_LEN + v.len()].copy_from_slice(v);
    put(40, &u32::try_from(dsdt).unwrap_or(0).to_le_bytes()); // DSDT
                                                              // 45: preferred PM profile 0 (unspecified); 46: SCI_INT 0.
    put(109, &IAPC_BOOT_ARCH.to_le_bytes());
    put(112, &FADT_FLAGS.to_le_bytes());
    put(131, &[5]); // FADT minor version: ACPI 6.5
    put(140, &dsdt.to_le_bytes()); // X_DSDT
    table(*b"FACP", 6, &f)
}

/// MADT revision 5: LAPIC address, flags 0 (no PC-AT 8259 pair), then per vCPU a Processor Local x2APIC
/// structure (type 9, length 16) with x2APIC id = ACPI processor UID = vCPU id, flags = enabled. No IO-APIC.
fn madt(vcpus: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + MADT_ENTRY_LEN * vcpus as usize);
    m.extend_from_slice(&LOCAL_APIC_ADDRESS.to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    for id in 0..vcpus {
        m.extend_from_slice(&[9, MADT_ENTRY_LEN as u8, 0, 0]);
        m.extend_from_slice(&id.to_le_bytes()); // x2APIC id
        m.extend_from_slice(&1u32.to_le_bytes()); // enabled
        m.extend_from_slice(&id.to_le_bytes()); // ACPI processor UID
    }
    table(*b"APIC", 5, &m)
}

/// The DSDT's AML: one processor device per vCPU, as Xen puts one processor object per vCPU (Keel uses the
/// `Device` form: `Processor` is deprecated since ACPI 6.0, and Linux binds `ACPI0007` devices by `_UID`):
///
/// ```text
/// Scope (\_SB) {
///     Device (C000) { Name (_HID, "ACPI0007") Name (_UID, 0) }
///     Device (C001) { Name (_HID, "ACPI0007") Name (_UID, 1) }
///     ...
/// }
/// ```
///
/// Encoding (ACPI 6.5 §20.2): `10 PkgLength 5C "_SB_" …` is ScopeOp, its length, the root-relative name;
/// `5B 82 PkgLength "C000" …` is DeviceOp; `08 "_HID" 0D "ACPI0007" 00` is NameOp with a string;
/// `08 "_UID" <integer>` with ZeroOp (00), OneOp (01), BytePrefix (0A), WordPrefix (0B). A device is 28 to 30
/// bytes; 64 vCPUs take 1,862 bytes of AML.
pub fn dsdt_aml(vcpus: u32) -> Vec<u8> {
    let mut devices = Vec::new();
    for id in 0..vcpus.min(MAX_VCPUS) {
        let mut body = Vec::new();
        body.extend_from_slice(&device_name(id));
        body.push(0x08); // NameOp
        body.extend_from_slice(b"_HID");
        body.push(0x0d); // StringPrefix
        body.extend_from_slice(b"ACPI0007\0");
        body.push(0x08);
        body.extend_from_slice(b"_UID");
        aml_integer(&mut body, id);
        devices.extend_from_slice(&[0x5b, 0x82]); // DeviceOp
        pkg_length(&mut devices, body.len());
        devices.extend_from_slice(&body);
    }
    let mut aml = Vec::with_capacity(devices.len() + 9);
    aml.push(0x10); // ScopeOp
    pkg_length(&mut aml, 5 + devices.len());
    aml.extend_from_slice(b"\\_SB_");
    aml.extend_from_slice(&devices);
    aml
}

/// `C` and three upper-case hex digits: a valid NameSeg for ids below 4096.
fn device_name(id: u32) -> [u8; 4] {
    let hex = |shift: u32| b"0123456789ABCDEF"[((id >> shift) & 0xf) as usize];
    [b'C', hex(8), hex(4), hex(0)]
}

/// The shortest AML integer encoding of `v`.
fn aml_integer(out: &mut Vec<u8>, v: u32) {
    match v {
        0 => out.push(0x00),
        1 => out.push(0x01),
        2..=0xff => out.extend_from_slice(&[0x0a, v as u8]),
        0x100..=0xffff => {
            out.push(0x0b);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        _ => {
            out.push(0x0c);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// AML PkgLength for `body` bytes following it; the length counts the PkgLength bytes too. One byte holds up
/// to 63; otherwise the lead byte's bits 7:6 give the count of following bytes and its bits 3:0 the low nibble.
fn pkg_length(out: &mut Vec<u8>, body: usize) {
    if body < 63 {
        out.push((body + 1) as u8);
        return;
    }
    let (extra, total) = (1..=3)
        .map(|extra| (extra, body + 1 + extra))
        .find(|&(extra, total)| total < 1 << (4 + 8 * extra))
        .expect("AML package over 256 MiB"); // 4096 vCPUs make about 120 KiB
    out.push((extra << 6) as u8 | (total & 0xf) as u8);
    for i in 0..extra {
        out.push((total >> (4 + 8 * i)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acpi::fadt::Fadt;
    use acpi::madt::Madt;
    use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
    use alloc::vec;
    use core::ptr::NonNull;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// Guest memory holding the blob at `base`: "physical" addresses map into the test's buffer.
    #[derive(Clone, Debug)]
    struct GuestView {
        base: u64,
        addr: usize,
        len: usize,
    }

    impl AcpiHandler for GuestView {
        unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
            let off = (physical_address as u64).checked_sub(self.base).expect("address below the blob") as usize;
            assert!(off + size <= self.len, "{size} bytes at {physical_address:#x} run past the blob");
            // SAFETY: `off + size` lies within the live buffer `addr..addr + len` (checked above), which the
            // test keeps alive and unmodified while the tables are read; the acpi crate's table types are
            // `repr(C, packed)`, so any address is aligned for them.
            unsafe {
                PhysicalMapping::new(
                    physical_address,
                    NonNull::new((self.addr + off) as *mut T).expect("non-null buffer"),
                    size,
                    size,
                    self.clone(),
                )
            }
        }

        fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
    }

    /// The tables through the XSDT: (signature, offset in the blob, length).
    fn tables(blob: &AcpiBlob, base: u64) -> Vec<([u8; 4], usize, usize)> {
        let b = &blob.bytes;
        let xsdt = (u64_at(b, 24) - base) as usize;
        let mut out = vec![(*b"XSDT", xsdt, u32_at(b, xsdt + 4) as usize)];
        let entries = (u32_at(b, xsdt + 4) as usize - HEADER_LEN) / 8;
        for i in 0..entries {
            let off = (u64_at(b, xsdt + HEADER_LEN + 8 * i) - base) as usize;
            out.push((b[off..off + 4].try_into().unwrap(), off, u32_at(b, off + 4) as usize));
        }
        let fadt = out.iter().find(|t| &t.0 == b"FACP").unwrap().1;
        let dsdt = (u64_at(b, fadt + 140) - base) as usize;
        out.push((*b"DSDT", dsdt, u32_at(b, dsdt + 4) as usize));
        out
    }

    #[test]
    fn checksums_and_headers() {
        for (base, vcpus) in [(0xfc00_0000, 1), (0x1000, 64), (0x1_2345_6000, 128)] {
            let blob = build(base, vcpus);
            let b = &blob.bytes;
            assert_eq!(blob.rsdp_gpa, base);
            assert_eq!(&b[..8], b"RSD PTR ");
            assert_eq!(b[15], 2);
            assert_eq!(checksum(&b[..20]), 0, "RSDP checksum");
            assert_eq!(checksum(&b[..36]), 0, "RSDP extended checksum");
            let t = tables(&blob, base);
            let sigs: Vec<_> = t.iter().map(|t| t.0).collect();
            assert_eq!(sigs, [*b"XSDT", *b"FACP", *b"APIC", *b"DSDT"]);
            for (sig, off, len) in t {
                let name = core::str::from_utf8(&sig).unwrap();
                assert_eq!(off % 16, 0, "{name} alignment");
                assert!(off + len <= b.len(), "{name} inside the blob");
                assert_eq!(checksum(&b[off..off + len]), 0, "{name} checksum");
                assert_eq!(&b[off + 10..off + 16], b"KEEL  ", "{name} OEM id");
                assert_eq!(&b[off + 16..off + 24], b"KEELVM  ", "{name} OEM table id");
            }
        }
    }

    #[test]
    fn fits_a_page() {
        let sizes: Vec<_> = [1, 2, 8, 64, 128].iter().map(|&n| build(0, n).bytes.len()).collect();
        assert_eq!(sizes, [535, 579, 850, 3370, 6250]);
        assert!(build(0x9_f000, 64).bytes.len() <= 4096);
        assert_eq!(dsdt_aml(64).len(), 1862);
    }

    #[test]
    fn clamps_vcpus() {
        assert_eq!(build(0, 0).vcpus, 1);
        assert_eq!(build(0, 5000).vcpus, MAX_VCPUS);
        assert_eq!(build(0, 5000), build(0, MAX_VCPUS));
    }

    /// Parses `blob` placed at `base` with the `acpi` crate.
    fn parse(blob: &AcpiBlob, base: u64) {
        let view = GuestView { base, addr: blob.bytes.as_ptr() as usize, len: blob.bytes.len() };
        // SAFETY: the RSDP is at `rsdp_gpa` and `view` maps every address of the blob into `blob.bytes`,
        // which outlives `tables`.
        let tables = unsafe { AcpiTables::from_rsdp(view, blob.rsdp_gpa as usize) }.unwrap();
        assert_eq!(tables.revision(), 2);

        let madt = tables.find_table::<Madt>().unwrap();
        assert_eq!({ madt.get().local_apic_address }, 0xfee0_0000);
        assert!(!madt.get().supports_8259());
        // (x2APIC id, UID, flags) per entry; the hypervisor's own MADT parser reads them too (its loader tests).
        let entries: Vec<_> = madt
            .get()
            .entries()
            .map(|e| match e {
                acpi::madt::MadtEntry::LocalX2Apic(x) => ({ x.x2apic_id }, { x.processor_uid }, { x.flags }),
                _ => panic!("only x2APIC entries"),
            })
            .collect();
        assert_eq!(entries, (0..blob.vcpus).map(|i| (i, i, 1)).collect::<Vec<_>>());
        assert_eq!({ madt.get().header.revision }, 5);

        let fadt = tables.find_table::<Fadt>().unwrap();
        let flags = { fadt.flags };
        assert!(flags.system_is_hw_reduced_acpi());
        assert!(flags.supports_equivalent_to_wbinvd());
        assert!(!flags.supports_system_reset_via_fadt());
        let boot = { fadt.iapc_boot_arch };
        assert!(boot.dont_probe_vga() && boot.use_time_and_alarm_namespace_for_rtc());
        assert!(!boot.legacy_devices_are_accessible() && !boot.motherboard_implements_8042());
        assert!(fadt.facs_address().is_err(), "no FACS");
        assert_eq!(fadt.pm1a_control_block().unwrap().address, 0);
        assert_eq!({ fadt.header().revision }, 6);
        assert_eq!({ fadt.header().length }, 276);

        let dsdt = tables.dsdt().unwrap();
        assert_eq!(fadt.dsdt_address().unwrap() + 36, dsdt.address, "AmlTable.address is past the header");
        let off = dsdt.address - base as usize;
        assert_eq!(&blob.bytes[off - 36..off - 32], b"DSDT");
        let aml = &blob.bytes[off..off + dsdt.length as usize];
        assert_eq!(aml, dsdt_aml(blob.vcpus));
        assert_eq!(read_aml(aml), (0..blob.vcpus).map(|i| (device_name(i), i)).collect::<Vec<_>>());
    }

    #[test]
    fn acpi_crate_reads_them() {
        for vcpus in [1, 2, 3, 64, 300] {
            for base in [0x000f_0000u64, 0xfc00_1000, 0x1_0000_0000] {
                let blob = build(base, vcpus);
                parse(&blob, base);
                let fadt = tables(&blob, base).iter().find(|t| &t.0 == b"FACP").unwrap().1;
                let dsdt32 = u32_at(&blob.bytes, fadt + 40);
                let dsdt64 = u64_at(&blob.bytes, fadt + 140);
                assert_eq!(dsdt32 as u64, if base < 1 << 32 { dsdt64 } else { 0 });
            }
        }
    }

    /// Reads back the AML subset `dsdt_aml` writes: (device name, _UID) per device, checking every length.
    fn read_aml(aml: &[u8]) -> Vec<([u8; 4], u32)> {
        fn pkg(b: &[u8], pos: &mut usize) -> usize {
            let start = *pos;
            let lead = b[*pos] as usize;
            let extra = lead >> 6;
            let mut len = if extra == 0 { lead & 0x3f } else { lead & 0xf };
            for i in 0..extra {
                len |= (b[*pos + 1 + i] as usize) << (4 + 8 * i);
            }
            *pos += 1 + extra;
            start + len // end of the package
        }
        let mut pos = 0;
        assert_eq!(aml[pos], 0x10, "ScopeOp");
        pos += 1;
        let end = pkg(aml, &mut pos);
        assert_eq!(end, aml.len(), "scope spans the AML");
        assert_eq!(&aml[pos..pos + 5], b"\\_SB_");
        pos += 5;
        let mut out = Vec::new();
        while pos < end {
            assert_eq!(&aml[pos..pos + 2], [0x5b, 0x82], "DeviceOp at {pos}");
            pos += 2;
            let dev_end = pkg(aml, &mut pos);
            let name: [u8; 4] = aml[pos..pos + 4].try_into().unwrap();
            pos += 4;
            assert_eq!(&aml[pos..pos + 15], b"\x08_HID\x0dACPI0007\0");
            pos += 15;
            assert_eq!(&aml[pos..pos + 5], b"\x08_UID");
            pos += 5;
            let uid = match aml[pos] {
                0x00 => 0,
                0x01 => 1,
                0x0a => aml[pos + 1] as u32,
                0x0b => u16::from_le_bytes([aml[pos + 1], aml[pos + 2]]) as u32,
                op => panic!("unexpected integer opcode {op:#x}"),
            };
            pos += match aml[pos] {
                0x00 | 0x01 => 1,
                0x0a => 2,
                _ => 3,
            };
            assert_eq!(pos, dev_end, "device {} length", core::str::from_utf8(&name).unwrap());
            out.push((name, uid));
        }
        out
    }

    #[test]
    fn aml_encodings() {
        let enc = |n: usize| {
            let mut v = Vec::new();
            pkg_length(&mut v, n);
            v
        };
        assert_eq!(enc(0), [1]);
        assert_eq!(enc(62), [63]);
        assert_eq!(enc(63), [0x40 | 1, 4]); // 65 = 0x41
        assert_eq!(enc(0xffd), [0x40 | 0xf, 0xff]); // 0xfff
        assert_eq!(enc(0xffe), [0x80 | 1, 0x00, 0x01]); // 0x1001
        assert_eq!(enc(0xf_fffc), [0x80 | 0xf, 0xff, 0xff]);
        assert_eq!(enc(0xf_fffd), [0xc0 | 0x1, 0x00, 0x00, 0x01]);
        assert_eq!(device_name(0), *b"C000");
        assert_eq!(device_name(0xabc), *b"CABC");
        let int = |v: u32| {
            let mut o = Vec::new();
            aml_integer(&mut o, v);
            o
        };
        assert_eq!(int(0), [0]);
        assert_eq!(int(1), [1]);
        assert_eq!(int(2), [0x0a, 2]);
        assert_eq!(int(0x100), [0x0b, 0, 1]);
        assert_eq!(int(0x1_0000), [0x0c, 0, 0, 1, 0]);
        // The full 4096-vCPU table: a 3-byte scope PkgLength, every device readable.
        let aml = dsdt_aml(MAX_VCPUS);
        assert_eq!(aml[1] >> 6, 2);
        assert_eq!(read_aml(&aml).len(), MAX_VCPUS as usize);
    }
}
