//! ELF kernels: the PT_LOAD segments at their physical addresses and the `XEN_ELFNOTE_PHYS32_ENTRY` note of a
//! PVH kernel. Both ELF classes are read, as Xen's libelf does: small PVH kernels are often ELF32 containers
//! holding 64-bit code (XTF ships its 64-bit test kernels that way), for `EM_386` or `EM_X86_64`.
//!
//! | Field        | ELF32 offset | ELF64 offset |
//! |--------------|--------------|--------------|
//! | `e_machine`  | 18 (u16)     | 18 (u16)     |
//! | `e_phoff`    | 28 (u32)     | 32 (u64)     |
//! | `e_phentsize`| 42 (u16)     | 54 (u16)     |
//! | `e_phnum`    | 44 (u16)     | 56 (u16)     |
//! | phdr size    | 32           | 56           |
//! | `p_offset`, `p_paddr`, `p_filesz`, `p_memsz` | 4, 12, 16, 20 (u32) | 8, 24, 32, 40 (u64) |

use crate::{err, ImageError};
use alloc::format;
use alloc::vec::Vec;
use keel_abi::elfnote;

pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}
pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}
pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
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

/// The ELF class of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    /// ELFCLASS32.
    Elf32,
    /// ELFCLASS64.
    Elf64,
}

/// What an ELF image contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    /// The container's class (says nothing about the code inside: ELF32 PVH kernels may hold 64-bit code).
    pub class: ElfClass,
    /// PT_LOAD segments, in program-header order.
    pub segments: Vec<Segment>,
    /// The PVH 32-bit entry point, if the image has the note.
    pub pvh_entry: Option<u32>,
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// `e_machine` values accepted: Intel 80386 and AMD x86-64.
pub const EM_386: u16 = 3;
/// See [`EM_386`].
pub const EM_X86_64: u16 = 62;

/// Parses an x86 ELF image of either class.
pub fn parse_elf(b: &[u8]) -> Result<ElfImage, ImageError> {
    if b.len() < 52 || &b[..4] != b"\x7fELF" {
        return err("not an ELF image (bad magic or shorter than an ELF header)");
    }
    let class = match b[4] {
        1 => ElfClass::Elf32,
        2 if b.len() >= 64 => ElfClass::Elf64,
        2 => return err("not an ELF image (shorter than an ELF64 header)"),
        c => return err(format!("ELF class {c} is neither ELFCLASS32 nor ELFCLASS64")),
    };
    if b[5] != 1 {
        return err("not a little-endian ELF image");
    }
    let machine = u16_at(b, 18).unwrap_or(0);
    if machine != EM_X86_64 && machine != EM_386 {
        return err(format!("ELF image is for machine {machine}, not x86 (EM_386 or EM_X86_64)"));
    }
    let (phoff, phentsize, phnum, want) = match class {
        ElfClass::Elf32 => (u32_at(b, 28).map(u64::from), u16_at(b, 42), u16_at(b, 44), 32),
        ElfClass::Elf64 => (u64_at(b, 32), u16_at(b, 54), u16_at(b, 56), 56),
    };
    let (phoff, phentsize, phnum) = (phoff.unwrap_or(0), phentsize.unwrap_or(0) as u64, phnum.unwrap_or(0) as u64);
    if phentsize < want {
        return err(format!("ELF program header entries of {phentsize} bytes (expected {want})"));
    }
    let table_end = phnum.checked_mul(phentsize).and_then(|n| n.checked_add(phoff));
    if table_end.is_none_or(|e| e > b.len() as u64) {
        return err("ELF program headers run past the end of the image (truncated?)");
    }
    let mut img = ElfImage { class, segments: Vec::new(), pvh_entry: None };
    for i in 0..phnum {
        // The table lies in the image (checked above), so these offsets fit usize and every read succeeds.
        let ph = (phoff + i * phentsize) as usize;
        let typ = u32_at(b, ph).unwrap_or(0);
        let (offset, paddr, filesz, memsz) = match class {
            ElfClass::Elf32 => {
                let f = |o| u64::from(u32_at(b, ph + o).unwrap_or(0));
                (f(4), f(12), f(16), f(20))
            }
            ElfClass::Elf64 => {
                let f = |o| u64_at(b, ph + o).unwrap_or(0);
                (f(8), f(24), f(32), f(40))
            }
        };
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
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0)? as usize;
        let descsz = u32_at(notes, 4)? as usize;
        let t = u32_at(notes, 8)?;
        let name_end = 12usize.checked_add(align4(namesz)?)?;
        let desc_end = name_end.checked_add(align4(descsz)?)?;
        let name = notes.get(12..12usize.checked_add(namesz)?)?;
        let desc = notes.get(name_end..name_end.checked_add(descsz)?)?;
        if t == typ && name.strip_suffix(&[0]).unwrap_or(name) == owner {
            return Some(desc);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

impl ElfImage {
    /// Checks that the image can be loaded into a guest with RAM `[0, ram_end)`: every segment ends inside it
    /// (no `p_paddr + p_memsz` wrap), no two segments overlap, and the PVH entry point lies in a loaded segment.
    /// Returns the entry point. Segments are numbered as in [`ElfImage::segments`] (PT_LOADs only).
    pub fn check_pvh(&self, ram_end: u64) -> Result<u32, ImageError> {
        let entry = self.pvh_entry.ok_or_else(|| {
            ImageError("the ELF image has no XEN_ELFNOTE_PHYS32_ENTRY note: it is not a PVH kernel".into())
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
        let mut by_addr: Vec<(usize, &Segment)> = self.segments.iter().enumerate().filter(|s| s.1.memsz > 0).collect();
        by_addr.sort_by_key(|s| s.1.paddr);
        for w in by_addr.windows(2) {
            let ((i, a), (j, b)) = (w[0], w[1]);
            if a.paddr + a.memsz > b.paddr {
                return err(format!(
                    "segments {i} ({:#x}..{:#x}) and {j} ({:#x}..{:#x}) overlap",
                    a.paddr,
                    a.paddr + a.memsz,
                    b.paddr,
                    b.paddr + b.memsz
                ));
            }
        }
        if !self.segments.iter().any(|s| (s.paddr..s.paddr + s.memsz).contains(&u64::from(entry))) {
            return err(format!("the PVH entry point {entry:#x} is outside every loaded segment"));
        }
        Ok(entry)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    /// A minimal ELF64 with one PT_LOAD (file 0x100..0x110 at 0x10_0000, 0x2000 in memory) and one PT_NOTE
    /// carrying the PVH entry.
    pub(crate) fn tiny_elf(entry: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
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
        for (i, v) in (0..0x10u8).enumerate() {
            b[0x100 + i] = 0xa0 + v; // the segment's bytes
        }
        put_note(&mut b, 0x180, entry);
        b
    }

    fn put_note(b: &mut [u8], at: usize, entry: u32) {
        b[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&4u32.to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&elfnote::PHYS32_ENTRY.to_le_bytes());
        b[at + 12..at + 16].copy_from_slice(b"Xen\0");
        b[at + 16..at + 20].copy_from_slice(&entry.to_le_bytes());
    }

    /// The same kernel as an ELF32 container for EM_386 (as XTF builds its 64-bit test kernels), with a second
    /// PT_LOAD that is all zero fill.
    pub(crate) fn tiny_elf32(entry: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 1;
        b[5] = 1;
        b[6] = 1;
        b[18..20].copy_from_slice(&EM_386.to_le_bytes());
        b[28..32].copy_from_slice(&52u32.to_le_bytes()); // phoff
        b[42..44].copy_from_slice(&32u16.to_le_bytes());
        b[44..46].copy_from_slice(&3u16.to_le_bytes());
        let ph = |b: &mut Vec<u8>, at: usize, typ: u32, off: u32, paddr: u32, filesz: u32, memsz: u32| {
            b[at..at + 4].copy_from_slice(&typ.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&off.to_le_bytes());
            b[at + 8..at + 12].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr = p_paddr
            b[at + 12..at + 16].copy_from_slice(&paddr.to_le_bytes());
            b[at + 16..at + 20].copy_from_slice(&filesz.to_le_bytes());
            b[at + 20..at + 24].copy_from_slice(&memsz.to_le_bytes());
        };
        ph(&mut b, 52, PT_LOAD, 0x100, 0x10_0000, 0x10, 0x1000);
        ph(&mut b, 84, PT_NOTE, 0x180, 0, 20, 20);
        ph(&mut b, 116, PT_LOAD, 0, 0x20_0000, 0, 0x3000);
        for (i, v) in (0..0x10u8).enumerate() {
            b[0x100 + i] = 0xa0 + v;
        }
        put_note(&mut b, 0x180, entry);
        b
    }

    #[test]
    fn parses_segments_and_pvh_note() {
        let img = parse_elf(&tiny_elf(0x10_0040)).unwrap();
        assert_eq!(img.class, ElfClass::Elf64);
        assert_eq!(img.pvh_entry, Some(0x10_0040));
        assert_eq!(img.segments, [Segment { offset: 0x100, paddr: 0x10_0000, filesz: 0x10, memsz: 0x2000 }]);
    }

    #[test]
    fn elf32_containers_are_read() {
        let img = parse_elf(&tiny_elf32(0x10_0040)).unwrap();
        assert_eq!(img.class, ElfClass::Elf32);
        assert_eq!(img.pvh_entry, Some(0x10_0040));
        assert_eq!(
            img.segments,
            [
                Segment { offset: 0x100, paddr: 0x10_0000, filesz: 0x10, memsz: 0x1000 },
                Segment { offset: 0, paddr: 0x20_0000, filesz: 0, memsz: 0x3000 }
            ]
        );
        assert_eq!(img.check_pvh(16 << 20), Ok(0x10_0040));
        // EM_X86_64 in an ELF32 container too.
        let mut e = tiny_elf32(0x10_0040);
        e[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        assert!(parse_elf(&e).is_ok());
        // Truncated program headers, short phentsize.
        assert!(parse_elf(&tiny_elf32(1)[..120]).unwrap_err().0.contains("truncated"));
        let mut e = tiny_elf32(1);
        e[42..44].copy_from_slice(&31u16.to_le_bytes());
        assert!(parse_elf(&e).unwrap_err().0.contains("31 bytes (expected 32)"));
        // A filesz beyond the file.
        let mut e = tiny_elf32(1);
        e[52 + 16..52 + 20].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(parse_elf(&e).unwrap_err().0.contains("segment 0"));
    }

    #[test]
    fn broken_images_are_named_errors() {
        assert!(parse_elf(b"MZ not an elf").unwrap_err().0.contains("not an ELF"));
        let mut e = tiny_elf(1);
        e[4] = 3;
        assert!(parse_elf(&e).unwrap_err().0.contains("neither ELFCLASS32 nor ELFCLASS64"));
        let mut e = tiny_elf(1);
        e[5] = 2;
        assert!(parse_elf(&e).unwrap_err().0.contains("little-endian"));
        let mut e = tiny_elf(1);
        e[18] = 40; // ARM
        assert!(parse_elf(&e).unwrap_err().0.contains("machine 40"));
        let e = tiny_elf(1);
        assert!(parse_elf(&e[..100]).unwrap_err().0.contains("truncated"));
        assert!(parse_elf(&e[..60]).unwrap_err().0.contains("ELF64 header"));
        let mut e = tiny_elf(1);
        e[64 + 32..64 + 40].copy_from_slice(&0x10_0000u64.to_le_bytes()); // filesz beyond the file
        assert!(parse_elf(&e).unwrap_err().0.contains("segment 0"));
        let mut e = tiny_elf(1);
        e[64 + 40..64 + 48].copy_from_slice(&8u64.to_le_bytes()); // memsz < filesz
        assert!(parse_elf(&e).unwrap_err().0.contains("smaller than filesz"));
        let mut e = tiny_elf(1);
        e[64..68].copy_from_slice(&6u32.to_le_bytes()); // the only PT_LOAD becomes PT_PHDR
        assert!(parse_elf(&e).unwrap_err().0.contains("no loadable segments"));
        let mut e = tiny_elf(1);
        e[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // phoff wraps
        assert!(parse_elf(&e).unwrap_err().0.contains("truncated"));
        let mut e = tiny_elf(1);
        e[0x188] = 7; // another note type
        assert_eq!(parse_elf(&e).unwrap().pvh_entry, None);
        // A note whose sizes run past the segment, or wrap: no entry, no panic.
        for namesz in [0xffff_fffe_u32, 0x1000] {
            let mut e = tiny_elf(1);
            e[0x180..0x184].copy_from_slice(&namesz.to_le_bytes());
            assert_eq!(parse_elf(&e).unwrap().pvh_entry, None);
        }
        // Every truncation and every single-byte corruption of the headers is an error or an image, never a panic.
        let e = tiny_elf(0x10_0040);
        for len in 0..e.len() {
            let _ = parse_elf(&e[..len]).and_then(|i| i.check_pvh(1 << 30));
        }
        for i in 0..0x200 {
            for v in [0, 0x7f, 0xff] {
                let mut b = e.clone();
                b[i] = v;
                let _ = parse_elf(&b).and_then(|i| i.check_pvh(u64::MAX));
            }
        }
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
    fn overlapping_segments_are_refused() {
        // The ELF32 image's zero-fill segment at 0x20_0000 moved down into the first (0x10_0000..0x10_1000).
        let mut e = tiny_elf32(0x10_0040);
        e[116 + 12..116 + 16].copy_from_slice(&0x10_0800u32.to_le_bytes());
        let m = parse_elf(&e).unwrap().check_pvh(16 << 20).unwrap_err();
        assert_eq!(m.0, "segments 0 (0x100000..0x101000) and 1 (0x100800..0x103800) overlap");
        // Touching is fine; an empty segment overlaps nothing.
        e[116 + 12..116 + 16].copy_from_slice(&0x10_1000u32.to_le_bytes());
        assert!(parse_elf(&e).unwrap().check_pvh(16 << 20).is_ok());
        e[116 + 12..116 + 16].copy_from_slice(&0x10_0800u32.to_le_bytes());
        e[116 + 20..116 + 24].copy_from_slice(&0u32.to_le_bytes());
        assert!(parse_elf(&e).unwrap().check_pvh(16 << 20).is_ok());
    }
}
