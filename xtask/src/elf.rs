//! Just enough ELF64 reading for xtask: is a binary static, how much of it is loaded.

use crate::util::{Context, Result};
use std::path::Path;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;

/// One program header: its type, its bytes in the file and in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub file_size: u64,
    pub mem_size: u64,
}

/// The program headers of a little-endian ELF64 image.
pub fn segments(image: &[u8]) -> Result<Vec<Segment>> {
    if image.len() < 64 || &image[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if image[4] != 2 || image[5] != 1 {
        return Err("not a little-endian ELF64 file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(image[o..o + 8].try_into().unwrap());
    let phoff = u64_at(0x20) as usize;
    let phentsize = u16_at(0x36);
    let phnum = u16_at(0x38);
    if phentsize < 0x38 || phoff + phnum * phentsize > image.len() {
        return Err("ELF program headers lie outside the file".into());
    }
    Ok((0..phnum)
        .map(|i| {
            let ph = phoff + i * phentsize;
            Segment { kind: u32_at(ph), file_size: u64_at(ph + 0x20), mem_size: u64_at(ph + 0x28) }
        })
        .collect())
}

fn read(path: &Path) -> Result<Vec<Segment>> {
    let image = std::fs::read(path).context(format!("cannot read {}", path.display()))?;
    segments(&image).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// True if the executable asks for no program interpreter (statically linked).
pub fn is_static(path: &Path) -> Result<bool> {
    Ok(read(path)?.iter().all(|s| s.kind != PT_INTERP))
}

/// Sum of the `PT_LOAD` segments' (file, memory) sizes: what a loader really copies.
pub fn load_sizes(path: &Path) -> Result<(u64, u64)> {
    Ok(read(path)?.iter().filter(|s| s.kind == PT_LOAD).fold((0, 0), |(f, m), s| (f + s.file_size, m + s.mem_size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_program_headers() {
        let me = std::env::current_exe().unwrap();
        let image = std::fs::read(me).unwrap();
        let segs = segments(&image).unwrap();
        assert!(segs.iter().any(|s| s.kind == PT_LOAD && s.mem_size > 0));
    }

    #[test]
    fn rejects_non_elf() {
        assert!(segments(b"#!/bin/sh\n").is_err());
        assert!(segments(&[0u8; 64]).is_err());
    }
}
