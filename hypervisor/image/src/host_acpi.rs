//! The host's ACPI tables as the initial domain sees them (issue 15: dom0 owns the machine's devices). As Xen
//! does for a PVH hardware domain (facts from Xen's `xen/arch/x86/hvm/dom0_build.c` and ../shared/docs/xen-abi.md
//! §4.1, no code taken), dom0 gets a new RSDP (revision 2) and a new XSDT that lists a **new MADT** and those of
//! the host's tables it may see, at their host addresses (which dom0's physical map keeps identity-mapped); the
//! DSDT and FACS are reached through the host's FADT only.
//!
//! - Tables kept: FACP (FADT), PSDT, SSDT, SBST, SLIC, MSDM, WDAT, FPDT, S3PT, TCPA, TPM2, VFCT and the
//!   `OEMx` ones, as Xen's list. Every other table is hidden: the host's own MADT (`APIC`), the IOMMUs' (DMAR,
//!   IVRS), HPET, SRAT, SLIT, BGRT and the rest.
//! - Unlike Xen, **MCFG is hidden** too, until Keel mediates the memory-mapped PCI configuration space (Xen's
//!   vPCI traps it): dom0 then reaches PCI configuration through ports 0xCF8/0xCFC, which Keel mediates.
//! - The new MADT: local APIC address 0xFEE00000, no PC-AT 8259s (Keel keeps the PICs masked), one IO-APIC
//!   entry per host IO-APIC (same id, address and GSI base: dom0's view of it is emulated), the host's
//!   interrupt source overrides unchanged, and one x2APIC entry per vCPU with APIC id = ACPI UID = vCPU id (Keel's
//!   convention for every guest, see [`crate::acpi`]; Xen uses APIC id 2·i). No NMI entries, as Xen.
//!
//! Reading is bounded and checked: a table list or MADT that lies about its length is an error that names it.

use crate::acpi::{checksum, rsdp, table, AcpiBlob, LOCAL_APIC_ADDRESS, MAX_VCPUS};
use crate::{err, ImageError};
use alloc::format;
use alloc::vec::Vec;

/// Signatures of host tables dom0 sees through its XSDT (besides `OEMx`).
pub const KEPT: [&[u8; 4]; 12] =
    [b"FACP", b"PSDT", b"SSDT", b"SBST", b"SLIC", b"MSDM", b"WDAT", b"FPDT", b"S3PT", b"TCPA", b"TPM2", b"VFCT"];

/// Most tables an RSDT/XSDT may list before Keel calls it broken.
pub const MAX_TABLES: usize = 256;

const HEADER_LEN: usize = 36;

/// One of the host's tables, as its RSDT or XSDT lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTable {
    /// Its signature.
    pub signature: [u8; 4],
    /// Its physical address.
    pub address: u64,
    /// Its length, from its header.
    pub length: u32,
}

/// Whether dom0 sees a host table with this signature.
pub fn kept(signature: &[u8; 4]) -> bool {
    KEPT.contains(&signature) || signature.starts_with(b"OEM")
}

/// Physical memory as the caller can read it: `len` bytes at `address`, or `None` where nothing is.
pub trait PhysRead {
    /// The bytes at `address`, or `None`.
    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>>;
}

impl<F: Fn(u64, usize) -> Option<Vec<u8>>> PhysRead for F {
    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
        self(address, len)
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | u64::from(u32_at(b, off + 4)) << 32
}

/// The tables the host's RSDP at `rsdp_address` lists: through the XSDT when the RSDP's revision is 2 or more
/// and gives one, else through the RSDT. Checksums are checked for the RSDP and the list (a firmware's other
/// tables are taken as they are: Linux checks them itself).
pub fn host_tables(mem: &impl PhysRead, rsdp_address: u64) -> Result<Vec<HostTable>, ImageError> {
    let r = mem.read(rsdp_address, 36).ok_or_else(|| ImageError(format!("no RSDP at {rsdp_address:#x}")))?;
    if &r[..8] != b"RSD PTR " || checksum(&r[..20]) != 0 {
        return err(format!("no valid RSDP at {rsdp_address:#x}"));
    }
    let xsdt = if r[15] >= 2 && checksum(&r) == 0 { u64_at(&r, 24) } else { 0 };
    if xsdt != 0 {
        listed_tables(mem, xsdt, true)
    } else {
        listed_tables(mem, u64::from(u32_at(&r, 16)), false)
    }
}

/// The tables the XSDT (`xsdt`) or RSDT at `list` names (a boot loader may pass the RSDP's copy, not its
/// address: multiboot2 does).
pub fn listed_tables(mem: &impl PhysRead, list: u64, xsdt: bool) -> Result<Vec<HostTable>, ImageError> {
    let (entry, name) = if xsdt { (8, "XSDT") } else { (4, "RSDT") };
    let head = mem.read(list, HEADER_LEN).ok_or_else(|| ImageError(format!("{name} at {list:#x} unreadable")))?;
    let len = u32_at(&head, 4) as usize;
    if len < HEADER_LEN || (len - HEADER_LEN) / entry > MAX_TABLES {
        return err(format!("{name} at {list:#x}: length {len} is not a list of at most {MAX_TABLES} tables"));
    }
    let bytes = mem.read(list, len).ok_or_else(|| ImageError(format!("{name} at {list:#x} unreadable")))?;
    if checksum(&bytes) != 0 {
        return err(format!("{name} at {list:#x}: bad checksum"));
    }
    let mut out = Vec::new();
    for off in (HEADER_LEN..len - (len - HEADER_LEN) % entry).step_by(entry) {
        let address = if xsdt { u64_at(&bytes, off) } else { u64::from(u32_at(&bytes, off)) };
        if address == 0 {
            continue;
        }
        let h = mem
            .read(address, HEADER_LEN)
            .ok_or_else(|| ImageError(format!("{name} lists a table at {address:#x}, which is unreadable")))?;
        out.push(HostTable { signature: [h[0], h[1], h[2], h[3]], address, length: u32_at(&h, 4) });
    }
    Ok(out)
}

/// What dom0's MADT takes from the host's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostMadt {
    /// The local APIC address (as the host's MADT gives it; dom0's MADT says 0xFEE00000 whatever it is).
    pub lapic_address: u32,
    /// IO-APIC structures (type 1), 12 bytes each, unchanged.
    pub ioapics: Vec<[u8; 12]>,
    /// Interrupt source overrides (type 2), 10 bytes each, unchanged.
    pub overrides: Vec<[u8; 10]>,
}

impl HostMadt {
    /// The IO-APICs: (id, MMIO address, first GSI).
    pub fn ioapic_list(&self) -> impl Iterator<Item = (u8, u32, u32)> + '_ {
        self.ioapics.iter().map(|e| (e[2], u32_at(e, 4), u32_at(e, 8)))
    }
}

/// Reads IO-APICs and interrupt source overrides out of the host's MADT (its bytes, header included).
pub fn parse_host_madt(madt: &[u8]) -> Result<HostMadt, ImageError> {
    if madt.len() < HEADER_LEN + 8 || &madt[..4] != b"APIC" || u32_at(madt, 4) as usize != madt.len() {
        return err("the host's MADT is truncated or not a MADT");
    }
    let mut m = HostMadt { lapic_address: u32_at(madt, HEADER_LEN), ..Default::default() };
    let mut off = HEADER_LEN + 8;
    while off + 2 <= madt.len() {
        let (typ, len) = (madt[off], madt[off + 1] as usize);
        if len < 2 || off + len > madt.len() {
            return err(format!("the host's MADT has a broken entry (type {typ}, length {len}) at offset {off}"));
        }
        let e = &madt[off..off + len];
        match (typ, len) {
            (1, 12) => m.ioapics.push(e.try_into().expect("12 bytes")),
            (2, 10) => m.overrides.push(e.try_into().expect("10 bytes")),
            (1 | 2, _) => return err(format!("the host's MADT has a type {typ} entry of length {len}")),
            _ => {}
        }
        off += len;
    }
    Ok(m)
}

/// The ECAM windows an MCFG table (its bytes, header included) describes: base + 1 MiB per bus. Malformed
/// entries end the list.
pub fn parse_mcfg(mcfg: &[u8]) -> Vec<core::ops::Range<u64>> {
    let mut out = Vec::new();
    let len = mcfg.len().min(if mcfg.len() >= 8 { u32_at(mcfg, 4) as usize } else { 0 });
    let mut off = HEADER_LEN + 8;
    while off + 16 <= len {
        let base = u64_at(mcfg, off);
        let (first, last) = (mcfg[off + 10], mcfg[off + 11]);
        if last < first {
            break;
        }
        let start = base + (u64::from(first) << 20);
        out.push(start..base + ((u64::from(last) + 1) << 20));
        off += 16;
    }
    out
}

/// One DMA-remapping hardware unit (VT-d) of a DMAR table: a DRHD structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drhd {
    /// Its register window's physical address.
    pub base: u64,
    /// Bytes of registers: 4 KiB, or 2^size pages where the table says so (DMAR revision 2's size field).
    pub len: u64,
    /// PCI segment.
    pub segment: u16,
    /// It translates every device of its segment that no other unit lists (INCLUDE_PCI_ALL).
    pub include_all: bool,
}

/// What a DMAR table lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dmar {
    /// The host's physical address width (bits).
    pub width: u8,
    /// Its VT-d units.
    pub units: Vec<Drhd>,
    /// Memory firmware reserves for devices' DMA (RMRR structures), which the units must keep mapping 1:1.
    pub reserved: Vec<core::ops::Range<u64>>,
}

/// What a DMAR table (its bytes, header included) lists. Structures that run past the table, and a DRHD or RMRR
/// shorter than its fixed part, are errors.
pub fn parse_dmar(dmar: &[u8]) -> Result<Dmar, ImageError> {
    // After the standard header: the host address width minus one (1 byte), flags (1), 10 reserved bytes.
    let len = dmar.len().min(if dmar.len() >= 8 { u32_at(dmar, 4) as usize } else { 0 });
    if len < HEADER_LEN + 12 {
        return err(format!("the host's DMAR is {len} bytes, shorter than its header"));
    }
    let mut out = Dmar { width: dmar[HEADER_LEN] + 1, ..Default::default() };
    let mut off = HEADER_LEN + 12;
    while off + 4 <= len {
        let (typ, entry) =
            (u16::from_le_bytes([dmar[off], dmar[off + 1]]), u16::from_le_bytes([dmar[off + 2], dmar[off + 3]]));
        let entry = usize::from(entry);
        if entry < 4 || off + entry > len {
            return err(format!("the host's DMAR has a broken structure (type {typ}, length {entry}) at offset {off}"));
        }
        match typ {
            0 if entry < 16 => return err(format!("the host's DMAR has a DRHD of length {entry}")),
            0 => out.units.push(Drhd {
                base: u64_at(dmar, off + 8),
                len: 0x1000 << (dmar[off + 5] & 0xf),
                segment: u16::from_le_bytes([dmar[off + 6], dmar[off + 7]]),
                include_all: dmar[off + 4] & 1 != 0,
            }),
            1 if entry < 24 => return err(format!("the host's DMAR has an RMRR of length {entry}")),
            1 => {
                let (base, limit) = (u64_at(dmar, off + 8), u64_at(dmar, off + 16));
                if limit < base {
                    return err(format!("the host's DMAR reserves {base:#x}-{limit:#x}, which ends before it starts"));
                }
                out.reserved.push(base & !0xfff..(limit | 0xfff).saturating_add(1));
            }
            _ => {}
        }
        off += entry;
    }
    Ok(out)
}

/// The MMIO address of the HPET an HPET table (its bytes) describes, if it is in memory space.
pub fn parse_hpet(hpet: &[u8]) -> Option<u64> {
    // Event timer block id (4 bytes), then the base address as a Generic Address Structure: space id 0 = memory.
    (hpet.len() >= HEADER_LEN + 16 && hpet[HEADER_LEN + 4] == 0).then(|| u64_at(hpet, HEADER_LEN + 8))
}

/// dom0's RSDP, XSDT and MADT, at `base` (16-byte aligned), for `vcpus` vCPUs: the XSDT lists the host tables
/// [`kept`] and the new MADT. A count outside `1..=MAX_VCPUS` is clamped.
pub fn dom0_tables(base: u64, vcpus: u32, host: &[HostTable], madt: &HostMadt) -> AcpiBlob {
    let vcpus = vcpus.clamp(1, MAX_VCPUS);
    let visible: Vec<u64> = host.iter().filter(|t| kept(&t.signature)).map(|t| t.address).collect();
    let xsdt_off = 48; // the RSDP's 36 bytes, 16-byte aligned
    let madt_off = (xsdt_off + HEADER_LEN + 8 * (visible.len() + 1)).next_multiple_of(16);
    let mut list = Vec::with_capacity(8 * (visible.len() + 1));
    for a in visible.iter().copied().chain([base + madt_off as u64]) {
        list.extend_from_slice(&a.to_le_bytes());
    }
    let mut body = Vec::new();
    body.extend_from_slice(&LOCAL_APIC_ADDRESS.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // no PC-AT 8259 pair
    for e in &madt.ioapics {
        body.extend_from_slice(e);
    }
    for e in &madt.overrides {
        body.extend_from_slice(e);
    }
    for id in 0..vcpus {
        body.extend_from_slice(&[9, 16, 0, 0]);
        body.extend_from_slice(&id.to_le_bytes()); // x2APIC id
        body.extend_from_slice(&1u32.to_le_bytes()); // enabled
        body.extend_from_slice(&id.to_le_bytes()); // ACPI processor UID
    }
    let mut b = Vec::new();
    b.extend_from_slice(&rsdp(base + xsdt_off as u64));
    b.resize(xsdt_off, 0);
    b.extend_from_slice(&table(*b"XSDT", 1, &list));
    b.resize(madt_off, 0);
    b.extend_from_slice(&table(*b"APIC", 5, &body));
    AcpiBlob { bytes: b, rsdp_gpa: base, vcpus }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec;

    /// A fake physical memory: byte strings at addresses.
    struct Mem(BTreeMap<u64, Vec<u8>>);

    impl PhysRead for Mem {
        fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
            let (start, bytes) = self.0.range(..=address).next_back()?;
            let off = (address - start) as usize;
            bytes.get(off..off + len).map(<[u8]>::to_vec)
        }
    }

    fn host_table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = table(*sig, 1, body);
        t[10..16].copy_from_slice(b"BOCHS ");
        t[9] = 0;
        t[9] = checksum(&t);
        t
    }

    /// A q35-like host: an XSDT listing FACP, APIC, HPET, MCFG, SSDT, DMAR and an OEM table; a MADT with two CPUs,
    /// one IO-APIC, two overrides and an NMI entry.
    fn q35() -> (Mem, u64) {
        let mut mem = BTreeMap::new();
        let mut madt = vec![0, 0, 0xe0, 0xfe, 1, 0, 0, 0];
        madt.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // LAPIC
        madt.extend_from_slice(&[0, 8, 1, 1, 1, 0, 0, 0]);
        madt.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]); // IO-APIC 0 at 0xfec00000, GSI 0
        madt.extend_from_slice(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]); // IRQ 0 → GSI 2
        madt.extend_from_slice(&[2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0]); // IRQ 9 → GSI 9, level, active high
        madt.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]); // LAPIC NMI
        let tables: [(&[u8; 4], Vec<u8>); 7] = [
            (b"FACP", vec![0; 240]),
            (b"APIC", madt),
            (b"HPET", vec![0; 20]),
            (b"MCFG", vec![0; 24]),
            (b"SSDT", vec![0x10; 5]),
            (b"DMAR", vec![0; 12]),
            (b"OEMB", vec![1; 3]),
        ];
        let mut list = Vec::new();
        for (i, (sig, body)) in tables.iter().enumerate() {
            let at = 0x7ffe_0000 + 0x1000 * i as u64;
            mem.insert(at, host_table(sig, body));
            list.extend_from_slice(&at.to_le_bytes());
        }
        mem.insert(0x7fff_f000, host_table(b"XSDT", &list));
        let mut r = rsdp(0x7fff_f000).to_vec();
        r[16..20].copy_from_slice(&0x7fff_e000u32.to_le_bytes()); // an RSDT the XSDT wins over
        r[8] = 0;
        r[32] = 0;
        r[8] = checksum(&r[..20]);
        r[32] = checksum(&r);
        mem.insert(0xf_5a40, r);
        (Mem(mem), 0xf_5a40)
    }

    #[test]
    fn the_xsdt_keeps_the_allowed_tables_and_a_new_madt() {
        let (mem, rsdp_at) = q35();
        let host = host_tables(&mem, rsdp_at).unwrap();
        let sigs: Vec<&[u8; 4]> = host.iter().map(|t| &t.signature).collect();
        assert_eq!(sigs, [b"FACP", b"APIC", b"HPET", b"MCFG", b"SSDT", b"DMAR", b"OEMB"]);
        assert_eq!(host[0], HostTable { signature: *b"FACP", address: 0x7ffe_0000, length: 276 });
        let madt = parse_host_madt(&mem.read(host[1].address, host[1].length as usize).unwrap()).unwrap();
        assert_eq!(madt.ioapic_list().collect::<Vec<_>>(), [(0, 0xfec0_0000, 0)]);
        assert_eq!(madt.overrides.len(), 2);

        let base = 0x9f000;
        let blob = dom0_tables(base, 3, &host, &madt);
        let b = &blob.bytes;
        assert_eq!(blob.rsdp_gpa, base);
        assert_eq!((&b[..8], b[15], checksum(&b[..20]), checksum(&b[..36])), (&b"RSD PTR "[..], 2, 0, 0));
        let xsdt = (u64_at(b, 24) - base) as usize;
        let xlen = u32_at(b, xsdt + 4) as usize;
        assert_eq!(checksum(&b[xsdt..xsdt + xlen]), 0);
        let listed: Vec<u64> = (xsdt + 36..xsdt + xlen).step_by(8).map(|o| u64_at(b, o)).collect();
        let madt_at = *listed.last().unwrap();
        assert_eq!(
            &listed[..listed.len() - 1],
            [0x7ffe_0000, 0x7ffe_4000, 0x7ffe_6000],
            "FACP, SSDT, OEMB: not the host's APIC, HPET, MCFG or DMAR"
        );
        let m = &b[(madt_at - base) as usize..];
        let mlen = u32_at(m, 4) as usize;
        assert_eq!((&m[..4], checksum(&m[..mlen])), (&b"APIC"[..], 0));
        assert_eq!((u32_at(m, 36), u32_at(m, 40)), (0xfee0_0000, 0), "no 8259s");
        assert_eq!(mlen, 44 + 12 + 2 * 10 + 3 * 16);
        assert_eq!(&m[44..56], &madt.ioapics[0]);
        assert_eq!(&m[56..76], &[madt.overrides[0], madt.overrides[1]].concat()[..]);
        for id in 0..3u32 {
            let e = &m[76 + 16 * id as usize..92 + 16 * id as usize];
            assert_eq!((e[0], e[1], u32_at(e, 4), u32_at(e, 8), u32_at(e, 12)), (9, 16, id, 1, id));
        }
    }

    #[test]
    fn an_rsdt_serves_when_there_is_no_xsdt() {
        let (mut mem, rsdp_at) = q35();
        let list: Vec<u8> = [0x7ffe_0000u32, 0x7ffe_4000].iter().flat_map(|a| a.to_le_bytes()).collect();
        mem.0.insert(0x7fff_e000, host_table(b"RSDT", &list));
        let r = mem.0.get_mut(&rsdp_at).unwrap();
        r[15] = 0; // ACPI 1.0: the RSDT only
        r[8] = 0;
        r[8] = checksum(&r[..20]);
        let host = host_tables(&mem, rsdp_at).unwrap();
        assert_eq!(host.iter().map(|t| t.signature).collect::<Vec<_>>(), [*b"FACP", *b"SSDT"]);
    }

    #[test]
    fn broken_host_tables_are_errors() {
        let (mut mem, rsdp_at) = q35();
        assert!(host_tables(&mem, 0x1000).unwrap_err().0.contains("no RSDP"));
        // The XSDT's checksum broken.
        mem.0.get_mut(&0x7fff_f000).unwrap()[40] ^= 1;
        assert!(host_tables(&mem, rsdp_at).unwrap_err().0.contains("bad checksum"));
        // A length that would list a million tables.
        let x = mem.0.get_mut(&0x7fff_f000).unwrap();
        x[40] ^= 1;
        x[4..8].copy_from_slice(&(8_000_036u32).to_le_bytes());
        assert!(host_tables(&mem, rsdp_at).unwrap_err().0.contains("length"));
        // MADT entries that run past the table or have a wrong length.
        let mut m = host_table(b"APIC", &[0, 0, 0xe0, 0xfe, 1, 0, 0, 0, 1, 40, 0, 0]);
        assert!(parse_host_madt(&m).unwrap_err().0.contains("broken entry"));
        m = host_table(b"APIC", &[0, 0, 0xe0, 0xfe, 1, 0, 0, 0, 2, 6, 0, 0, 0, 0]);
        assert!(parse_host_madt(&m).unwrap_err().0.contains("type 2 entry of length 6"));
        assert!(parse_host_madt(&m[..20]).is_err());
        m = host_table(b"APIC", &[0, 0, 0xe0, 0xfe, 1, 0, 0, 0, 0, 0]);
        assert!(parse_host_madt(&m).unwrap_err().0.contains("length 0"));
    }

    #[test]
    fn dmar_units() {
        // QEMU's intel-iommu: host address width 39, one unit at 0xfed90000 for every device of segment 0; then
        // a reserved-memory structure (RMRR) such as firmware gives a USB controller.
        let mut body = vec![38, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0]);
        body.extend_from_slice(&0xfed9_0000u64.to_le_bytes());
        body.extend_from_slice(&[1, 0, 24, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&0xe_8000u64.to_le_bytes());
        body.extend_from_slice(&0xe_bfffu64.to_le_bytes());
        let d = parse_dmar(&host_table(b"DMAR", &body)).unwrap();
        assert_eq!(d.width, 39);
        assert_eq!(d.units, [Drhd { base: 0xfed9_0000, len: 0x1000, segment: 0, include_all: true }]);
        assert_eq!(d.reserved, alloc::vec![0xe_8000..0xe_c000]);
        // A structure that claims to run past the table, and one of length 0, are errors.
        let mut bad = body.clone();
        bad[14] = 200;
        assert!(parse_dmar(&host_table(b"DMAR", &bad)).unwrap_err().0.contains("broken structure"));
        bad[14] = 0;
        assert!(parse_dmar(&host_table(b"DMAR", &bad)).unwrap_err().0.contains("length 0"));
        bad = body.clone();
        bad[14] = 8;
        assert!(parse_dmar(&host_table(b"DMAR", &bad)).unwrap_err().0.contains("DRHD of length 8"));
        assert!(parse_dmar(&host_table(b"DMAR", &body[..4])).is_err());
        bad = body.clone();
        bad[44..52].copy_from_slice(&0xe_0000u64.to_le_bytes()); // the RMRR's limit below its base
        assert!(parse_dmar(&host_table(b"DMAR", &bad)).unwrap_err().0.contains("ends before it starts"));
    }

    #[test]
    fn mcfg_and_hpet_windows() {
        // q35: ECAM at 0xb0000000 for buses 0-255; the HPET at 0xfed00000.
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&0xb000_0000u64.to_le_bytes());
        body.extend_from_slice(&[0, 0, 0, 255, 0, 0, 0, 0]);
        let one = parse_mcfg(&host_table(b"MCFG", &body));
        assert_eq!((one.len(), one[0].start, one[0].end), (1, 0xb000_0000, 0xc000_0000));
        body.extend_from_slice(&0xe000_0000u64.to_le_bytes());
        body.extend_from_slice(&[1, 0, 8, 3, 0, 0, 0, 0]); // last bus below the first: ends the list
        assert_eq!(parse_mcfg(&host_table(b"MCFG", &body)).len(), 1);
        let mut h = vec![0x01, 0xa2, 0x86, 0x80, 0, 0, 0, 0];
        h.extend_from_slice(&0xfed0_0000u64.to_le_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse_hpet(&host_table(b"HPET", &h)), Some(0xfed0_0000));
        h[4] = 1; // in I/O space
        assert_eq!(parse_hpet(&host_table(b"HPET", &h)), None);
        assert_eq!(parse_hpet(&[0; 10]), None);
    }
}
