//! A kernel image, whatever its format, as an entry point and the segments to place in guest memory.
//!
//! - [`Format::detect`] tells a bzImage from an ELF `vmlinux`.
//! - A bzImage is unpacked first ([`unpack`] into a caller buffer of [`unpack_size`] bytes, or [`elf_bytes`]
//!   into a bounded `Vec`); what it holds is the ELF `vmlinux`.
//! - [`plan`] checks the ELF for a PVH guest with RAM `[0, ram_end)` and returns the [`KernelPlan`]: the PVH
//!   entry point and, per PT_LOAD segment, its guest-physical address, its bytes and the zero fill after them.

use crate::bzimage::{self, BzError};
use crate::elf::{parse_elf, ElfImage};
use crate::{err, ImageError};
use alloc::format;
use alloc::vec::Vec;

/// A kernel image's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A Linux bzImage (boot protocol setup header, `"HdrS"` at 0x202).
    BzImage,
    /// An ELF image.
    Elf,
}

impl Format {
    /// Tells the format from the image's first bytes; anything else is an error naming what it looks like.
    pub fn detect(image: &[u8]) -> Result<Self, ImageError> {
        if image.get(0x202..0x206) == Some(b"HdrS") {
            Ok(Self::BzImage)
        } else if image.starts_with(b"\x7fELF") {
            Ok(Self::Elf)
        } else if let Some(c) = bzimage::Compression::detect(image) {
            err(format!(
                "the kernel is {c}-compressed data, not a bzImage or ELF kernel (unpack it first, or give the bzImage)"
            ))
        } else if image.len() < 4 {
            err(format!("the kernel image is {} bytes: empty or truncated", image.len()))
        } else {
            err(format!(
                "not a kernel image (magic {:02x} {:02x} {:02x} {:02x}): neither a bzImage nor an ELF file",
                image[0], image[1], image[2], image[3]
            ))
        }
    }
}

fn bz_err(e: BzError) -> ImageError {
    ImageError(format!("bzImage: {e}"))
}

/// Scratch bytes [`unpack`] needs for `image`: `None` for an ELF (it is used in place), the payload's
/// [`bzimage::Payload::buffer_size`] for a bzImage.
pub fn unpack_size(image: &[u8]) -> Result<Option<usize>, ImageError> {
    match Format::detect(image)? {
        Format::Elf => Ok(None),
        Format::BzImage => {
            let p = bzimage::payload(image).map_err(bz_err)?;
            p.buffer_size().map(Some).map_err(bz_err)
        }
    }
}

/// Bounds on unpacking a bzImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes the payload may announce (and so unpack to); never above [`bzimage::MAX_UNPACKED`].
    pub max_unpacked: u64,
    /// Most heap a zstd window may take.
    pub zstd_window_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_unpacked: bzimage::MAX_UNPACKED, zstd_window_max: bzimage::DEFAULT_ZSTD_WINDOW_MAX }
    }
}

/// Unpacks a bzImage's payload into `scratch` (at least [`unpack_size`] bytes) and returns the ELF inside it.
pub fn unpack<'a>(image: &[u8], scratch: &'a mut [u8], limits: Limits) -> Result<&'a [u8], ImageError> {
    let p = bzimage::payload(image).map_err(bz_err)?;
    check_size(&p, limits)?;
    let n = bzimage::decompress_with(&p, scratch, limits.zstd_window_max).map_err(bz_err)?;
    Ok(&scratch[..n])
}

fn check_size(p: &bzimage::Payload<'_>, limits: Limits) -> Result<(), ImageError> {
    match p.uncompressed_size {
        Some(size) if size > limits.max_unpacked => {
            Err(bz_err(BzError::TooLarge { size, max: limits.max_unpacked.min(bzimage::MAX_UNPACKED) }))
        }
        _ => Ok(()),
    }
}

/// The ELF kernel of `image`: `image` itself, or a bzImage's payload unpacked into `scratch` (resized to what
/// the payload needs, at most `limits.max_unpacked` plus the xz dictionary). For builders with a heap.
pub fn elf_bytes<'a>(image: &'a [u8], scratch: &'a mut Vec<u8>, limits: Limits) -> Result<&'a [u8], ImageError> {
    match unpack_size(image)? {
        None => Ok(image),
        Some(n) => {
            check_size(&bzimage::payload(image).map_err(bz_err)?, limits)?;
            scratch.clear();
            scratch.try_reserve_exact(n).map_err(|_| ImageError(format!("no {} MiB to unpack the kernel", n >> 20)))?;
            scratch.resize(n, 0);
            unpack(image, scratch, limits)
        }
    }
}

/// One piece of guest memory to fill: `data` at `gpa`, then `zero` bytes of zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement<'a> {
    /// Guest-physical address of the first byte.
    pub gpa: u64,
    /// The bytes from the file.
    pub data: &'a [u8],
    /// Zero bytes after `data` (a segment's `p_memsz - p_filesz`: its bss).
    pub zero: u64,
}

impl Placement<'_> {
    /// The guest-physical range this placement covers.
    pub fn range(&self) -> core::ops::Range<u64> {
        self.gpa..self.gpa + self.data.len() as u64 + self.zero
    }
}

/// What loading a PVH kernel takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPlan<'a> {
    /// The 32-bit PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`), inside a placed segment.
    pub entry: u32,
    /// The segments, in program-header order; they lie in `[0, ram_end)` and do not overlap.
    pub segments: Vec<Placement<'a>>,
    /// The parsed ELF.
    pub elf: ElfImage,
}

impl KernelPlan<'_> {
    /// The first byte past the highest segment (where a builder may start placing what follows the kernel).
    pub fn end(&self) -> u64 {
        self.segments.iter().map(|s| s.range().end).max().unwrap_or(0)
    }
}

/// Plans the loading of the ELF kernel `elf` into a PVH guest with RAM `[0, ram_end)`.
pub fn plan(elf: &[u8], ram_end: u64) -> Result<KernelPlan<'_>, ImageError> {
    let img = parse_elf(elf)?;
    let entry = img.check_pvh(ram_end)?;
    let segments = img
        .segments
        .iter()
        .filter(|s| s.memsz > 0)
        // `parse_elf` checked that the file bytes lie in the image, `check_pvh` that the segment ends in RAM.
        .map(|s| Placement {
            gpa: s.paddr,
            data: &elf[s.offset as usize..(s.offset + s.filesz) as usize],
            zero: s.memsz - s.filesz,
        })
        .collect();
    Ok(KernelPlan { entry, segments, elf: img })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::{tiny_elf, tiny_elf32};
    use alloc::vec;

    const LIM: Limits = Limits { max_unpacked: 1 << 20, zstd_window_max: 1 << 20 };

    /// A bzImage holding `payload` (stream + trailer as Linux builds it).
    pub(crate) fn bz(payload: &[u8]) -> Vec<u8> {
        let pm = 2 * 512;
        let mut b = vec![0u8; pm + payload.len()];
        b[0x1f1] = 1;
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b[pm..].copy_from_slice(payload);
        b
    }

    fn with_trailer(stream: &[u8], size: usize) -> Vec<u8> {
        let mut p = stream.to_vec();
        p.extend_from_slice(&(size as u32).to_le_bytes());
        p
    }

    /// `tiny_elf(0x10_0040)` compressed by the tools Linux's build uses: `xz --check=crc32 --x86
    /// --lzma2=dict=4KiB` (Linux: 32 MiB), `gzip -n -9`, `zstd -19` (Linux: `-22 --ultra`).
    const TINY_ELF_XZ: &[u8] = include_bytes!("testdata/tiny_elf.xz");
    const TINY_ELF_GZ: &[u8] = include_bytes!("testdata/tiny_elf.gz");
    const TINY_ELF_ZST: &[u8] = include_bytes!("testdata/tiny_elf.zst");

    fn bz_of(stream: &[u8], gzip: bool) -> Vec<u8> {
        if gzip {
            bz(stream)
        } else {
            bz(&with_trailer(stream, 0x200))
        }
    }

    #[test]
    fn every_format_plans_the_same_kernel() {
        let elf = tiny_elf(0x10_0040);
        let want = [Placement { gpa: 0x10_0000, data: &elf[0x100..0x110], zero: 0x2000 - 0x10 }];
        let direct = plan(&elf, 16 << 20).unwrap();
        assert_eq!((direct.entry, &direct.segments[..], direct.end()), (0x10_0040, &want[..], 0x10_2000));
        assert_eq!(unpack_size(&elf), Ok(None));
        assert_eq!(Format::detect(&elf), Ok(Format::Elf));
        for (name, stream, gzip) in
            [("xz", TINY_ELF_XZ, false), ("gzip", TINY_ELF_GZ, true), ("zstd", TINY_ELF_ZST, false)]
        {
            let image = bz_of(stream, gzip);
            assert_eq!(Format::detect(&image), Ok(Format::BzImage), "{name}");
            let mut scratch = Vec::new();
            let unpacked = elf_bytes(&image, &mut scratch, LIM).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(unpacked, &elf[..], "{name}");
            let p = plan(unpacked, 16 << 20).unwrap();
            assert_eq!((p.entry, &p.segments[..]), (0x10_0040, &want[..]), "{name}");
        }
        // ELF32: two segments, one all zero fill.
        let e32 = tiny_elf32(0x10_0040);
        let p = plan(&e32, 16 << 20).unwrap();
        assert_eq!(
            p.segments,
            [
                Placement { gpa: 0x10_0000, data: &e32[0x100..0x110], zero: 0xff0 },
                Placement { gpa: 0x20_0000, data: &[], zero: 0x3000 }
            ]
        );
        assert_eq!(p.end(), 0x20_3000);
    }

    #[test]
    fn broken_kernels_are_named_errors() {
        assert!(Format::detect(b"").unwrap_err().0.contains("0 bytes"));
        assert!(Format::detect(b"MZ\x90\0 PE").unwrap_err().0.contains("magic 4d 5a 90 00"));
        assert!(Format::detect(TINY_ELF_GZ).unwrap_err().0.contains("gzip-compressed"));
        // A truncated payload of each format: the bzImage header says more than the file has.
        for (stream, gzip) in [(TINY_ELF_XZ, false), (TINY_ELF_GZ, true), (TINY_ELF_ZST, false)] {
            let image = bz_of(stream, gzip);
            let e = elf_bytes(&image[..image.len() - 5], &mut Vec::new(), LIM).unwrap_err();
            assert!(e.0.starts_with("bzImage: payload out of bounds"), "{e}");
            // Each stream cut short inside a well-formed bzImage: an error, never a panic.
            for len in 1..stream.len() {
                let image = bz_of(&stream[..len], gzip);
                let mut scratch = Vec::new();
                let r = elf_bytes(&image, &mut scratch, LIM);
                assert!(r.is_err(), "cut to {len}: {r:?}");
            }
        }
        // Every single-bit flip of a gzip or zstd stream is an error or the right kernel (a flip the format does
        // not check, e.g. in gzip's MTIME), never a panic or a different kernel.
        let elf = tiny_elf(0x10_0040);
        for (stream, gzip) in [(TINY_ELF_GZ, true), (TINY_ELF_ZST, false)] {
            for i in 0..stream.len() {
                for bit in 0..8 {
                    let mut s = stream.to_vec();
                    s[i] ^= 1 << bit;
                    let image = bz_of(&s, gzip);
                    let mut scratch = Vec::new();
                    if let Ok(got) = elf_bytes(&image, &mut scratch, LIM) {
                        assert_eq!(got, &elf[..], "byte {i} bit {bit}");
                    }
                }
            }
        }
        // A payload that decodes to more than its trailer says: bounded, an error.
        let image = bz(&with_trailer(TINY_ELF_ZST, 0x100));
        let e = elf_bytes(&image, &mut Vec::new(), LIM).unwrap_err();
        assert_eq!(e.0, "bzImage: output buffer too small: 256 bytes filled before the stream ended");
        let image = bz(&with_trailer(TINY_ELF_XZ, 0x100));
        assert!(elf_bytes(&image, &mut Vec::new(), LIM).unwrap_err().0.contains("output buffer too small"));
        // One that announces more than MAX_UNPACKED is refused before anything is allocated.
        let image = bz(&with_trailer(TINY_ELF_ZST, (3usize << 30) / 2));
        let e = elf_bytes(&image, &mut Vec::new(), Limits::default()).unwrap_err();
        assert_eq!(e.0, "bzImage: the payload unpacks to 1610612736 bytes, more than the 1073741824 allowed");
        // And one above the caller's own bound.
        let image = bz(&with_trailer(TINY_ELF_ZST, 2 << 20));
        let e = elf_bytes(&image, &mut Vec::new(), LIM).unwrap_err();
        assert_eq!(e.0, "bzImage: the payload unpacks to 2097152 bytes, more than the 1048576 allowed");
        // A zstd window above the caller's bound.
        let image = bz_of(TINY_ELF_ZST, false);
        let e = elf_bytes(&image, &mut Vec::new(), Limits { zstd_window_max: 256, ..LIM }).unwrap_err();
        assert!(e.0.contains("zstd window of") && e.0.contains("larger than the 256 bytes allowed"), "{e}");
        // A bzImage whose ELF is not a PVH kernel, or does not fit.
        let mut elf = tiny_elf(0x10_0040);
        elf[0x188] = 7;
        assert!(plan(&elf, 16 << 20).unwrap_err().0.contains("not a PVH kernel"));
        assert!(plan(&tiny_elf(0x10_0040), 1 << 20).unwrap_err().0.contains("does not fit"));
    }
}
