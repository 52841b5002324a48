//! `hvm_start_info` (version 1) as a PVH kernel finds it in `%ebx`: the structure, then the module list, the
//! memory map and the NUL-terminated command lines, packed into one [`AREA`]-byte block below 1 GiB (Linux reads
//! them through its early 1:1 mapping of the low 1 GiB), which the memory map should mark reserved.

use crate::{err, ImageError, PAGE_SIZE};
use alloc::vec::Vec;
use keel_abi::start_info::{self as si, HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC};

/// Bytes of the start_info block: three pages.
pub const AREA: u64 = 3 * PAGE_SIZE;

/// A module handed to the guest (its initrd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestModule<'a> {
    /// Guest-physical address it was copied to.
    pub gpa: u64,
    /// Size.
    pub size: u64,
    /// Its command line.
    pub cmdline: &'a str,
}

/// The bytes to place at guest-physical `at` (at most [`AREA`] of them): `hvm_start_info` v1 with `flags`, the
/// command line, `modules`, `memmap` and the RSDP address (0: none). `hvm_start_info` itself is at `at`.
pub fn build(
    at: u64,
    flags: u32,
    cmdline: &str,
    modules: &[GuestModule],
    memmap: &[HvmMemmapEntry],
    rsdp: u64,
) -> Result<Vec<u8>, ImageError> {
    let too_big = "start_info, module list, memory map and command lines need more than 12 KiB below 1 GiB";
    if at.checked_add(AREA).is_none_or(|e| e > 1 << 30) {
        return err(too_big);
    }
    let info_len = core::mem::size_of::<HvmStartInfo>() as u64;
    let modlist = info_len;
    let memmap_at = (modlist as usize).saturating_add(modules.len().saturating_mul(32)) as u64;
    let strings = (memmap_at as usize).saturating_add(memmap.len().saturating_mul(24)) as u64;
    // Everything must fit the area before anything is written (the strings go last).
    let string_bytes: u64 = modules.iter().filter(|m| !m.cmdline.is_empty()).map(|m| m.cmdline.len() as u64 + 1).sum();
    if strings.saturating_add(cmdline.len() as u64 + 1).saturating_add(string_bytes) > AREA {
        return err(too_big);
    }
    let mut out = alloc::vec![0u8; strings as usize];
    let put_str = |out: &mut Vec<u8>, s: &str| -> u64 {
        let a = at + out.len() as u64;
        out.extend_from_slice(s.as_bytes());
        out.push(0);
        a
    };
    let cmd = put_str(&mut out, cmdline);
    for (i, m) in modules.iter().enumerate() {
        let c = if m.cmdline.is_empty() { 0 } else { put_str(&mut out, m.cmdline) };
        let e = HvmModlistEntry { paddr: m.gpa, size: m.size, cmdline_paddr: c, reserved: 0 };
        let o = modlist as usize + i * 32;
        out[o..o + 32].copy_from_slice(bytemuck::bytes_of(&e));
    }
    for (i, e) in memmap.iter().enumerate() {
        let o = memmap_at as usize + i * 24;
        out[o..o + 24].copy_from_slice(bytemuck::bytes_of(e));
    }
    let info = HvmStartInfo {
        magic: HVM_START_MAGIC,
        version: 1,
        flags,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { at + modlist },
        cmdline_paddr: cmd,
        rsdp_paddr: rsdp,
        memmap_paddr: at + memmap_at,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    out[..info_len as usize].copy_from_slice(bytemuck::bytes_of(&info));
    Ok(out)
}

/// A memory-map entry.
pub const fn entry(addr: u64, size: u64, typ: u32) -> HvmMemmapEntry {
    HvmMemmapEntry { addr, size, typ, reserved: 0 }
}

/// The memory map of a PVH guest with `ram` bytes and its start_info block at `start_info_at`: RAM, the block
/// reserved, RAM again up to `ram`.
pub fn memory_map(ram: u64, start_info_at: u64) -> Vec<HvmMemmapEntry> {
    let mut v = alloc::vec![
        entry(0, start_info_at, si::HVM_MEMMAP_TYPE_RAM),
        entry(start_info_at, AREA, si::HVM_MEMMAP_TYPE_RESERVED)
    ];
    let after = start_info_at + AREA;
    if ram > after {
        v.push(entry(after, ram - after, si::HVM_MEMMAP_TYPE_RAM));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn val<T: bytemuck::Pod>(b: &[u8], off: u64) -> T {
        bytemuck::pod_read_unaligned(&b[off as usize..off as usize + core::mem::size_of::<T>()])
    }

    #[test]
    fn layout_and_fields() {
        let at = 0x3fff_d000;
        let map = memory_map(2 << 30, at);
        let mods = [GuestModule { gpa: 0x200_0000, size: 1234, cmdline: "initrd" }];
        let b = build(at, si::SIF_PRIVILEGED, "console=hvc0", &mods, &map, 0x3fff_c000).unwrap();
        assert!(b.len() as u64 <= AREA);
        let info: HvmStartInfo = val(&b, 0);
        assert_eq!((info.magic, info.version, info.flags), (HVM_START_MAGIC, 1, si::SIF_PRIVILEGED));
        assert_eq!((info.nr_modules, info.memmap_entries, info.rsdp_paddr), (1, 3, 0x3fff_c000));
        let m: HvmModlistEntry = val(&b, info.modlist_paddr - at);
        assert_eq!((m.paddr, m.size), (0x200_0000, 1234));
        let s = |gpa: u64| {
            let o = (gpa - at) as usize;
            let end = b[o..].iter().position(|&c| c == 0).unwrap();
            core::str::from_utf8(&b[o..o + end]).unwrap().to_string()
        };
        assert_eq!(s(info.cmdline_paddr), "console=hvc0");
        assert_eq!(s(m.cmdline_paddr), "initrd");
        for (i, want) in map.iter().enumerate() {
            let e: HvmMemmapEntry = val(&b, info.memmap_paddr - at + 24 * i as u64);
            assert_eq!(e, *want);
        }
        // No modules: modlist_paddr 0; an empty module command line is 0.
        let b = build(0x9000, 0, "", &[GuestModule { cmdline: "", ..mods[0] }], &[], 0).unwrap();
        let info: HvmStartInfo = val(&b, 0);
        assert_eq!(val::<HvmModlistEntry>(&b, info.modlist_paddr - 0x9000).cmdline_paddr, 0);
        let info: HvmStartInfo = val(&build(0x9000, 0, "x", &[], &[], 0).unwrap(), 0);
        assert_eq!((info.modlist_paddr, info.nr_modules), (0, 0));
    }

    #[test]
    fn too_big_or_too_high_is_an_error() {
        let long = "x".repeat(12 * 1024);
        assert!(build(0x9000, 0, &long, &[], &[], 0).unwrap_err().0.contains("more than 12 KiB"));
        assert!(build((1 << 30) - 0x2000, 0, "", &[], &[], 0).is_err());
        assert!(build(u64::MAX - 10, 0, "", &[], &[], 0).is_err());
        let many = alloc::vec![entry(0, 1, 1); 600];
        assert!(build(0x9000, 0, "", &[], &many, 0).is_err());
        let fits = "y".repeat(12 * 1024 - 56 - 1);
        assert_eq!(build(0x9000, 0, &fits, &[], &[], 0).unwrap().len(), 12 * 1024);
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
