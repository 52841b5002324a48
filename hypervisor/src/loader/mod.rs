//! Building a PVH guest: load an ELF kernel's PT_LOAD segments at their physical addresses, find its
//! `XEN_ELFNOTE_PHYS32_ENTRY`, and lay out `hvm_start_info` with memory map, modules and command line.
//! A malformed or truncated image is an error that names the problem; nothing here panics on bad input.

pub mod acpi_tables;
pub mod bzimage;

use crate::domain::Memory;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use keel_abi::start_info::{self as si, HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC};

/// Why an image could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError(pub String);

fn err<T>(s: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError(s.into()))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// A loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset in the file.
    pub offset: u64,
    /// Physical load address.
    pub paddr: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zeroed).
    pub memsz: u64,
}

/// What an ELF image contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    /// PT_LOAD segments.
    pub segments: Vec<Segment>,
    /// The PVH 32-bit entry point, if the image has the note.
    pub pvh_entry: Option<u32>,
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
use keel_abi::elfnote;

/// Parses a 64-bit x86 ELF image.
pub fn parse_elf(b: &[u8]) -> Result<ElfImage, LoadError> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return err("not an ELF image (bad magic or shorter than an ELF header)");
    }
    if b[4] != 2 {
        return err("not a 64-bit ELF image (only ELFCLASS64 is supported)");
    }
    if b[5] != 1 {
        return err("not a little-endian ELF image");
    }
    if u16_at(b, 18) != Some(EM_X86_64) {
        return err("ELF image is not for x86-64");
    }
    let phoff = u64_at(b, 32).unwrap_or(0) as usize;
    let phentsize = u16_at(b, 54).unwrap_or(0) as usize;
    let phnum = u16_at(b, 56).unwrap_or(0) as usize;
    if phentsize < 56 {
        return err(format!("ELF program header entries of {phentsize} bytes (expected 56)"));
    }
    let table_end = phnum.checked_mul(phentsize).and_then(|n| n.checked_add(phoff));
    if table_end.is_none_or(|e| e > b.len()) {
        return err("ELF program headers run past the end of the image (truncated?)");
    }
    let mut img = ElfImage { segments: Vec::new(), pvh_entry: None };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let typ = u32_at(b, ph).unwrap_or(0);
        let offset = u64_at(b, ph + 8).unwrap_or(0);
        let paddr = u64_at(b, ph + 24).unwrap_or(0);
        let filesz = u64_at(b, ph + 32).unwrap_or(0);
        let memsz = u64_at(b, ph + 40).unwrap_or(0);
        let in_file = offset.checked_add(filesz).is_some_and(|e| e <= b.len() as u64);
        match typ {
            PT_LOAD => {
                if !in_file {
                    return err(format!("segment {i} ({filesz} bytes at file offset {offset:#x}) is truncated"));
                }
                if memsz < filesz {
                    return err(format!("segment {i} has memsz {memsz:#x} smaller than filesz {filesz:#x}"));
                }
                img.segments.push(Segment { offset, paddr, filesz, memsz });
            }
            PT_NOTE if in_file => {
                let notes = &b[offset as usize..(offset + filesz) as usize];
                if let Some(e) = find_note(notes, elfnote::NAME, elfnote::PHYS32_ENTRY) {
                    img.pvh_entry = e.get(..4).and_then(|d| d.try_into().ok()).map(u32::from_le_bytes);
                }
            }
            _ => {}
        }
    }
    if img.segments.is_empty() {
        return err("ELF image has no loadable segments");
    }
    Ok(img)
}

/// Finds the descriptor of note `typ` owned by `owner` in a PT_NOTE segment.
pub fn find_note<'a>(mut notes: &'a [u8], owner: &[u8], typ: u32) -> Option<&'a [u8]> {
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0)? as usize;
        let descsz = u32_at(notes, 4)? as usize;
        let t = u32_at(notes, 8)?;
        let name_end = 12usize.checked_add(align4(namesz))?;
        let desc_end = name_end.checked_add(align4(descsz))?;
        let name = notes.get(12..12 + namesz)?;
        let desc = notes.get(name_end..name_end + descsz)?;
        if t == typ && name.strip_suffix(&[0]).unwrap_or(name) == owner {
            return Some(desc);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

impl ElfImage {
    /// Checks that the image can be loaded into a guest with RAM `[0, ram_end)`: every segment ends inside it
    /// (no `p_paddr + p_memsz` wrap) and the PVH entry point lies in a loaded segment. Returns the entry point.
    pub fn check_pvh(&self, ram_end: u64) -> Result<u32, LoadError> {
        let entry = self.pvh_entry.ok_or_else(|| {
            LoadError("the ELF image has no XEN_ELFNOTE_PHYS32_ENTRY note: it is not a PVH kernel".into())
        })?;
        for (i, s) in self.segments.iter().enumerate() {
            if s.paddr.checked_add(s.memsz).is_none_or(|e| e > ram_end) {
                return err(format!(
                    "segment {i} ({:#x}..{:#x}) does not fit in the domain's {} MiB of RAM",
                    s.paddr,
                    s.paddr.saturating_add(s.memsz),
                    ram_end >> 20
                ));
            }
        }
        // Segments end inside RAM now, so `paddr + memsz` cannot wrap.
        if !self.segments.iter().any(|s| (s.paddr..s.paddr + s.memsz).contains(&u64::from(entry))) {
            return err(format!("the PVH entry point {entry:#x} is outside every loaded segment"));
        }
        Ok(entry)
    }
}

/// Copies the image's segments into guest memory. Returns the PVH entry point.
pub fn load_pvh(mem: &Memory, image: &[u8]) -> Result<u32, LoadError> {
    let elf = parse_elf(image)?;
    let entry = elf.check_pvh(mem.ram_end)?;
    for (i, s) in elf.segments.iter().enumerate() {
        // `parse_elf` checked that the file bytes lie in the image, `check_pvh` that the segment ends in RAM.
        let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
        mem.write(s.paddr, data).map_err(|e| LoadError(format!("segment {i}: guest address {:#x} unmapped", e.0)))?;
        let zeros = alloc::vec![0u8; 4096];
        let mut at = s.paddr + s.filesz;
        while at < s.paddr + s.memsz {
            let n = core::cmp::min(4096, s.paddr + s.memsz - at) as usize;
            mem.write(at, &zeros[..n]).map_err(|e| LoadError(format!("bss at {:#x} unmapped", e.0)))?;
            at += n as u64;
        }
    }
    Ok(entry)
}

/// A module handed to the guest (its initrd).
pub struct GuestModule<'a> {
    /// Guest-physical address it was copied to.
    pub gpa: u64,
    /// Size.
    pub size: u64,
    /// Its command line.
    pub cmdline: &'a str,
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
    const AREA: u64 = 3 * 4096;
    let too_big = || LoadError("start_info, module list and command lines need more than 12 KiB below 1 GiB".into());
    if at.checked_add(AREA).is_none_or(|e| e > 1 << 30) {
        return Err(too_big());
    }
    let info_len = core::mem::size_of::<HvmStartInfo>() as u64;
    let modlist = at + info_len;
    let memmap_at = modlist + modules.len() as u64 * core::mem::size_of::<HvmModlistEntry>() as u64;
    let strings = memmap_at + memmap.len() as u64 * core::mem::size_of::<HvmMemmapEntry>() as u64;
    // Everything must fit the reserved area before anything is written (the strings go last).
    let string_bytes: u64 = modules.iter().filter(|m| !m.cmdline.is_empty()).map(|m| m.cmdline.len() as u64 + 1).sum();
    if strings + cmdline.len() as u64 + 1 + string_bytes > at + AREA {
        return Err(too_big());
    }
    let mut next_str = strings;
    let mut put_str = |s: &str| -> Result<u64, LoadError> {
        let a = next_str;
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        mem.write(a, &bytes).map_err(|_| LoadError("start_info area unmapped".into()))?;
        next_str += bytes.len() as u64;
        Ok(a)
    };
    let cmd = put_str(cmdline)?;
    let mut entries = Vec::new();
    for m in modules {
        let c = if m.cmdline.is_empty() { 0 } else { put_str(m.cmdline)? };
        entries.push(HvmModlistEntry { paddr: m.gpa, size: m.size, cmdline_paddr: c, reserved: 0 });
    }
    let wr = |gpa: u64, bytes: &[u8]| mem.write(gpa, bytes).map_err(|_| LoadError("start_info area unmapped".into()));
    for (i, e) in entries.iter().enumerate() {
        wr(modlist + i as u64 * 32, as_bytes(e))?;
    }
    for (i, e) in memmap.iter().enumerate() {
        wr(memmap_at + i as u64 * 24, as_bytes(e))?;
    }
    let info = HvmStartInfo {
        magic: HVM_START_MAGIC,
        version: 1,
        flags,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { modlist },
        cmdline_paddr: cmd,
        rsdp_paddr: rsdp,
        memmap_paddr: memmap_at,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    wr(at, as_bytes(&info))?;
    Ok(at as u32)
}

fn as_bytes<T: keel_abi::Pod>(v: &T) -> &[u8] {
    bytemuck::bytes_of(v)
}

/// The memory map of a PVH guest with `ram` bytes, whose last `reserved_tail` bytes below `min(ram, 1 GiB)` hold
/// start_info.
pub fn memory_map(ram: u64, start_info_at: u64) -> Vec<HvmMemmapEntry> {
    let e = |addr: u64, size: u64, typ: u32| HvmMemmapEntry { addr, size, typ, reserved: 0 };
    let mut v = alloc::vec![
        e(0, start_info_at, si::HVM_MEMMAP_TYPE_RAM),
        e(start_info_at, 3 * 4096, si::HVM_MEMMAP_TYPE_RESERVED)
    ];
    let after = start_info_at + 3 * 4096;
    if ram > after {
        v.push(e(after, ram - after, si::HVM_MEMMAP_TYPE_RAM));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_LOAD and one PT_NOTE carrying the PVH entry.
    fn tiny_elf(entry: u32) -> Vec<u8> {
        let mut b = alloc::vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |b: &mut Vec<u8>, at: usize, typ: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| {
            b[at..at + 4].copy_from_slice(&typ.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            b[at + 24..at + 32].copy_from_slice(&paddr.to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            b[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        };
        ph(&mut b, 64, PT_LOAD, 0x100, 0x10_0000, 0x10, 0x2000);
        ph(&mut b, 120, PT_NOTE, 0x180, 0, 20, 20);
        b[0x180..0x184].copy_from_slice(&4u32.to_le_bytes());
        b[0x184..0x188].copy_from_slice(&4u32.to_le_bytes());
        b[0x188..0x18c].copy_from_slice(&elfnote::PHYS32_ENTRY.to_le_bytes());
        b[0x18c..0x190].copy_from_slice(b"Xen\0");
        b[0x190..0x194].copy_from_slice(&entry.to_le_bytes());
        b
    }

    #[test]
    fn parses_segments_and_pvh_note() {
        let img = parse_elf(&tiny_elf(0x10_0040)).unwrap();
        assert_eq!(img.pvh_entry, Some(0x10_0040));
        assert_eq!(img.segments, [Segment { offset: 0x100, paddr: 0x10_0000, filesz: 0x10, memsz: 0x2000 }]);
    }

    #[test]
    fn broken_images_are_named_errors() {
        assert!(parse_elf(b"MZ not an elf").unwrap_err().0.contains("not an ELF"));
        let mut e = tiny_elf(1);
        e[4] = 1;
        assert!(parse_elf(&e).unwrap_err().0.contains("64-bit"));
        let e = tiny_elf(1);
        assert!(parse_elf(&e[..100]).unwrap_err().0.contains("truncated"));
        let mut e = tiny_elf(1);
        e[64 + 32..64 + 40].copy_from_slice(&0x10_0000u64.to_le_bytes()); // filesz beyond the file
        assert!(parse_elf(&e).unwrap_err().0.contains("segment 0"));
        let mut e = tiny_elf(1);
        e[0x188] = 7; // another note type
        assert_eq!(parse_elf(&e).unwrap().pvh_entry, None);
    }

    #[test]
    fn pvh_entry_must_lie_in_a_loaded_segment() {
        // The segment is 0x10_0000..0x10_2000 (memsz).
        let img = parse_elf(&tiny_elf(0x10_0040)).unwrap();
        assert_eq!(img.check_pvh(16 << 20), Ok(0x10_0040));
        assert_eq!(parse_elf(&tiny_elf(0x10_1fff)).unwrap().check_pvh(16 << 20), Ok(0x10_1fff));
        for entry in [0, 0xf_ffff, 0x10_2000, 0xffff_ffff] {
            let e = parse_elf(&tiny_elf(entry)).unwrap().check_pvh(16 << 20).unwrap_err();
            assert_eq!(e.0, format!("the PVH entry point {entry:#x} is outside every loaded segment"));
        }
        let mut e = tiny_elf(1);
        e[0x188] = 7; // no PVH note
        assert!(parse_elf(&e).unwrap().check_pvh(16 << 20).unwrap_err().0.contains("not a PVH kernel"));
    }

    #[test]
    fn segments_must_fit_in_guest_ram() {
        let set = |paddr: u64, memsz: u64| {
            let mut e = tiny_elf(0x10_0040);
            e[64 + 24..64 + 32].copy_from_slice(&paddr.to_le_bytes());
            e[64 + 40..64 + 48].copy_from_slice(&memsz.to_le_bytes());
            parse_elf(&e).unwrap().check_pvh(16 << 20)
        };
        // memsz beyond RAM, and p_paddr + p_memsz wrapping around.
        assert!(set(0x10_0000, 16 << 20).unwrap_err().0.contains("does not fit in the domain's 16 MiB of RAM"));
        assert!(set(u64::MAX - 0xfff, 0x2000).unwrap_err().0.contains("segment 0"));
        assert!(set(0x10_0000, 0xf0_0000).is_ok());
        // p_offset + p_filesz wrapping or beyond the file is refused by the parser.
        let mut e = tiny_elf(0x10_0040);
        e[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_elf(&e).unwrap_err().0.contains("truncated"));
    }

    #[test]
    fn memory_map_reserves_start_info() {
        let m = memory_map(32 << 20, 0x9000);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].addr, m[0].size, m[0].typ), (0, 0x9000, 1));
        assert_eq!((m[1].addr, m[1].typ), (0x9000, 2));
        assert_eq!(m[2].addr + m[2].size, 32 << 20);
    }
}
