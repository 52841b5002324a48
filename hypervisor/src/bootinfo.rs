//! What the boot loader told us, in one shape whichever way Keel was entered (multiboot2 or PVH).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use keel_abi::start_info::{self as si, HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC};

/// The protocol Keel was entered through (set by `boot/entry.S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// GRUB or another multiboot2 loader.
    Multiboot2,
    /// Through the Xen PVH ELF note (`hvm_start_info`).
    Pvh,
}

impl Protocol {
    /// Decodes the value `boot/entry.S` passes.
    pub fn from_raw(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Multiboot2),
            2 => Some(Self::Pvh),
            _ => None,
        }
    }
}

/// Kinds of physical memory in the firmware's map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemKind {
    /// Free RAM.
    Usable,
    /// ACPI tables (reclaimable once parsed; Keel keeps them).
    AcpiReclaimable,
    /// ACPI NVS.
    AcpiNvs,
    /// Broken RAM.
    Bad,
    /// Anything else.
    Reserved,
}

/// A range of physical memory, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What it is.
    pub kind: MemKind,
}

/// A boot module (`module2` line, or a PVH module-list entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Physical address of the first byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The module's string (its command line).
    pub cmdline: String,
}

impl Module {
    /// Size in bytes (0 for a module [`BootInfo::check_modules`] would drop for ending below its start).
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Where the ACPI tables start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiRoot {
    /// Physical address of the RSDP.
    Rsdp(u64),
    /// The RSDT (revision 0) or XSDT (revision 2) address from a copy of the RSDP.
    Sdt {
        /// RSDP revision.
        revision: u8,
        /// RSDT or XSDT physical address.
        address: u64,
    },
}

/// Everything Keel uses from the boot loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// How Keel was entered.
    pub protocol: Protocol,
    /// The boot loader's name, as it gave it.
    pub loader: String,
    /// The hypervisor's own command line.
    pub cmdline: String,
    /// The physical memory map, sorted by start address.
    pub memory: Vec<MemRegion>,
    /// Boot modules in order.
    pub modules: Vec<Module>,
    /// ACPI root, when the loader passed one.
    pub acpi: Option<AcpiRoot>,
    /// Physical range of the boot information itself (to keep it out of the allocator until parsed).
    pub info_range: (u64, u64),
}

impl BootInfo {
    /// Drops the modules Keel cannot use safely, returning one line per module dropped saying why: a module
    /// that ends below its start (or wraps around the address space), one not wholly in usable RAM (past the end
    /// of RAM, in a hole or a reserved range), one overlapping Keel's own `image` or the boot information. Call
    /// it before anything reserves or reads the modules; the boot goes on with the others.
    pub fn check_modules(&mut self, image: (u64, u64)) -> Vec<String> {
        let mut why = Vec::new();
        let mut index = 0;
        let memory = &self.memory;
        let info = self.info_range;
        self.modules.retain(|m| {
            let i = index;
            index += 1;
            let problem = if m.end < m.start {
                Some("its end lies below its start".to_string())
            } else if !in_usable_ram(memory, m.start, m.end) {
                Some("it is not wholly in usable RAM (past the end of RAM, or in a hole or reserved range)".into())
            } else if overlaps((m.start, m.end), image) {
                Some(format!("it overlaps Keel's image at {:#x}-{:#x}", image.0, image.1))
            } else if overlaps((m.start, m.end), info) {
                Some("it overlaps the boot information".into())
            } else {
                None
            };
            match problem {
                Some(p) => {
                    why.push(format!("module {i} at {:#x}-{:#x} (\"{}\") ignored: {p}", m.start, m.end, m.cmdline));
                    false
                }
                None => true,
            }
        });
        why
    }

    /// Ranges of physical memory that hold boot data: the information block, the modules.
    pub fn occupied_ranges(&self) -> Vec<(u64, u64)> {
        let mut v = Vec::with_capacity(self.modules.len() + 1);
        v.push(self.info_range);
        v.extend(self.modules.iter().map(|m| (m.start, m.end)));
        v
    }
}

impl BootInfo {
    /// Where to move the modules that overlap `avoid` (the window dom0's kernel needs when dom0's RAM is mapped
    /// 1:1): for each, its index and a new page-aligned start in usable RAM below 4 GiB, as high as possible, clear
    /// of the first MiB, Keel's `image`, the boot information, `avoid` and every other module (old places and new).
    /// An error names a module that fits nowhere.
    pub fn relocation_plan(&self, avoid: (u64, u64), image: (u64, u64)) -> Result<Vec<(usize, u64)>, String> {
        let usable: Vec<(u64, u64)> =
            self.memory.iter().filter(|r| r.kind == MemKind::Usable).map(|r| (r.start, r.end)).collect();
        let mut taken = self.occupied_ranges();
        taken.extend([(0, 0x10_0000), image, avoid]);
        let mut plan = Vec::new();
        for (i, m) in self.modules.iter().enumerate() {
            if !overlaps((m.start, m.end), avoid) {
                continue;
            }
            let size = m.size().next_multiple_of(4096);
            let at = crate::mm::heap::find_free_range(&usable, &taken, size, 4096, 1 << 32)
                .ok_or_else(|| format!("module {i} ({} KiB) fits nowhere outside {avoid:#x?}", m.size() >> 10))?;
            taken.push((at, at + size));
            plan.push((i, at));
        }
        Ok(plan)
    }
}

/// Whether the half-open ranges `a` and `b` share a byte.
fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Whether `[start, end)` lies wholly in usable RAM (adjacent usable regions count as one).
fn in_usable_ram(memory: &[MemRegion], start: u64, end: u64) -> bool {
    let mut usable: Vec<(u64, u64)> =
        memory.iter().filter(|r| r.kind == MemKind::Usable).map(|r| (r.start, r.end)).collect();
    usable.sort_unstable();
    let mut at = start;
    for (s, e) in usable {
        if at >= end {
            break;
        }
        if s <= at && at < e {
            at = e;
        }
    }
    at >= end
}

/// Why boot information could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

/// Access to physical memory for the parsers (identity mapping on hardware, a buffer in tests).
pub trait PhysMem {
    /// The `len` bytes at `paddr`, or `None` when they are not readable.
    fn bytes(&self, paddr: u64, len: usize) -> Option<&[u8]>;

    /// A NUL-terminated string of at most `max` bytes at `paddr`.
    fn c_str(&self, paddr: u64, max: usize) -> Option<String> {
        let mut out = Vec::new();
        for i in 0..max as u64 {
            let b = *self.bytes(paddr + i, 1)?.first()?;
            if b == 0 {
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            out.push(b);
        }
        None
    }
}

fn read_struct<T: keel_abi::Pod>(mem: &dyn PhysMem, paddr: u64) -> Option<T> {
    let bytes = mem.bytes(paddr, core::mem::size_of::<T>())?;
    Some(bytemuck::pod_read_unaligned(bytes))
}

const MAX_STRING: usize = 4096;

/// Parses a PVH `hvm_start_info` at `paddr`.
pub fn from_pvh(mem: &dyn PhysMem, paddr: u64) -> Result<BootInfo, Error> {
    let info: HvmStartInfo =
        read_struct(mem, paddr).ok_or_else(|| Error(format!("hvm_start_info at {paddr:#x} is not readable")))?;
    if info.magic != HVM_START_MAGIC {
        return Err(Error(format!("hvm_start_info magic is {:#x}, expected {HVM_START_MAGIC:#x}", info.magic)));
    }
    let cmdline = match info.cmdline_paddr {
        0 => String::new(),
        p => mem.c_str(p, MAX_STRING).ok_or_else(|| Error(format!("command line at {p:#x} is not readable")))?,
    };
    let mut modules = Vec::new();
    for i in 0..info.nr_modules as u64 {
        let at = info.modlist_paddr + i * core::mem::size_of::<HvmModlistEntry>() as u64;
        let m: HvmModlistEntry =
            read_struct(mem, at).ok_or_else(|| Error(format!("module list entry {i} at {at:#x} is not readable")))?;
        let cmdline = match m.cmdline_paddr {
            0 => String::new(),
            p => mem.c_str(p, MAX_STRING).unwrap_or_default(),
        };
        // A size that wraps the address space gives an end below the start: `check_modules` drops it.
        modules.push(Module { start: m.paddr, end: m.paddr.wrapping_add(m.size), cmdline });
    }
    let mut memory = Vec::new();
    if info.version >= 1 {
        for i in 0..info.memmap_entries as u64 {
            let at = info.memmap_paddr + i * core::mem::size_of::<HvmMemmapEntry>() as u64;
            let e: HvmMemmapEntry = read_struct(mem, at)
                .ok_or_else(|| Error(format!("memory map entry {i} at {at:#x} is not readable")))?;
            let kind = match e.typ {
                si::HVM_MEMMAP_TYPE_RAM => MemKind::Usable,
                si::HVM_MEMMAP_TYPE_ACPI => MemKind::AcpiReclaimable,
                si::HVM_MEMMAP_TYPE_NVS => MemKind::AcpiNvs,
                si::HVM_MEMMAP_TYPE_UNUSABLE => MemKind::Bad,
                _ => MemKind::Reserved,
            };
            push_region(&mut memory, e.addr, e.size, kind);
        }
    }
    if memory.is_empty() {
        return Err(Error("hvm_start_info carries no memory map (version 0): Keel needs one".into()));
    }
    memory.sort_by_key(|r| r.start);
    Ok(BootInfo {
        protocol: Protocol::Pvh,
        loader: format!("PVH (hvm_start_info v{})", info.version),
        cmdline,
        memory,
        modules,
        acpi: (info.rsdp_paddr != 0).then_some(AcpiRoot::Rsdp(info.rsdp_paddr)),
        info_range: (paddr, paddr + core::mem::size_of::<HvmStartInfo>() as u64),
    })
}

fn push_region(memory: &mut Vec<MemRegion>, start: u64, size: u64, kind: MemKind) {
    if size > 0 {
        memory.push(MemRegion { start, end: start.saturating_add(size), kind });
    }
}

/// Parses multiboot2 boot information at `paddr`.
///
/// # Safety
/// `paddr` must be the address a multiboot2 loader passed in EBX, readable through the current mapping.
pub unsafe fn from_multiboot2(paddr: u64) -> Result<BootInfo, Error> {
    use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};
    // SAFETY: the caller guarantees `paddr` points at the loader's boot information, which stays untouched
    // (the frame allocator keeps `info_range` reserved).
    let mbi = unsafe { BootInformation::load(paddr as *const BootInformationHeader) }
        .map_err(|e| Error(format!("multiboot2 information at {paddr:#x} is invalid: {e:?}")))?;
    let loader = mbi.boot_loader_name_tag().and_then(|t| t.name().ok()).unwrap_or("unknown").to_string();
    let cmdline = mbi.command_line_tag().and_then(|t| t.cmdline().ok()).unwrap_or("").to_string();
    let mut memory = Vec::new();
    let map = mbi.memory_map_tag().ok_or_else(|| Error("multiboot2 information has no memory map".into()))?;
    for a in map.memory_areas() {
        let kind = match MemoryAreaType::from(a.typ()) {
            MemoryAreaType::Available => MemKind::Usable,
            MemoryAreaType::AcpiAvailable => MemKind::AcpiReclaimable,
            MemoryAreaType::ReservedHibernate => MemKind::AcpiNvs,
            MemoryAreaType::Defective => MemKind::Bad,
            _ => MemKind::Reserved,
        };
        push_region(&mut memory, a.start_address(), a.size(), kind);
    }
    memory.sort_by_key(|r| r.start);
    let modules = mbi
        .module_tags()
        .map(|m| Module {
            start: m.start_address() as u64,
            end: m.end_address() as u64,
            cmdline: m.cmdline().unwrap_or("").to_string(),
        })
        .collect();
    let acpi = if let Some(v2) = mbi.rsdp_v2_tag() {
        Some(AcpiRoot::Sdt { revision: 2, address: v2.xsdt_address() as u64 })
    } else {
        mbi.rsdp_v1_tag().map(|v1| AcpiRoot::Sdt { revision: 0, address: v1.rsdt_address() as u64 })
    };
    Ok(BootInfo {
        protocol: Protocol::Multiboot2,
        loader,
        cmdline,
        memory,
        modules,
        acpi,
        info_range: (mbi.start_address() as u64, mbi.end_address() as u64),
    })
}

/// What a boot module looks like from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// A Linux bzImage (setup header "HdrS").
    BzImage,
    /// An ELF image (e.g. vmlinux, a test guest).
    Elf,
    /// An uncompressed newc/crc cpio archive (initramfs).
    Cpio,
    /// gzip data (usually a compressed initramfs).
    Gzip,
    /// xz data.
    Xz,
    /// zstd data.
    Zstd,
    /// Something else.
    Unknown,
}

impl ModuleKind {
    /// Guesses from the start of the module.
    pub fn guess(head: &[u8]) -> Self {
        if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
            Self::BzImage
        } else if head.starts_with(b"\x7fELF") {
            Self::Elf
        } else if head.starts_with(b"070701") || head.starts_with(b"070702") {
            Self::Cpio
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::Unknown
        }
    }

    /// The name printed in the module list.
    pub fn name(self) -> &'static str {
        match self {
            Self::BzImage => "bzImage",
            Self::Elf => "ELF",
            Self::Cpio => "cpio",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
            Self::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiboot2::{
        BootLoaderNameTag, Builder, CommandLineTag, MaybeDynSized, MemoryArea, MemoryAreaType, MemoryMapTag, ModuleTag,
    };

    #[test]
    fn multiboot2_from_builder() {
        let mbi = Builder::new()
            .bootloader(BootLoaderNameTag::new("GRUB 2.06-13+deb12u1"))
            .cmdline(CommandLineTag::new("console=com1 loglvl=all"))
            .mmap(MemoryMapTag::new(&[
                MemoryArea::new(0x100000, 0x7ff0_0000, MemoryAreaType::Available),
                MemoryArea::new(0, 0x9fc00, MemoryAreaType::Available),
                MemoryArea::new(0xf0000, 0x10000, MemoryAreaType::Reserved),
            ]))
            .add_module(ModuleTag::new(0x0100_0000, 0x0180_0000, "console=hvc0"))
            .add_module(ModuleTag::new(0x0180_0000, 0x0190_0000, ""))
            .build();
        let addr = mbi.as_bytes().as_ptr() as u64;
        // SAFETY: `mbi` is a well-formed multiboot2 information block alive for the whole call.
        let info = unsafe { from_multiboot2(addr) }.unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(info.loader, "GRUB 2.06-13+deb12u1");
        assert_eq!(info.cmdline, "console=com1 loglvl=all");
        assert_eq!(info.memory.len(), 3);
        assert_eq!(info.memory[0], MemRegion { start: 0, end: 0x9fc00, kind: MemKind::Usable });
        assert_eq!(info.memory[1].kind, MemKind::Reserved);
        assert_eq!(info.modules.len(), 2);
        assert_eq!(info.modules[0].cmdline, "console=hvc0");
        assert_eq!(info.modules[0].size(), 0x80_0000);
        assert_eq!(info.modules[1].cmdline, "");
        assert_eq!(info.acpi, None);
        assert_eq!(info.info_range, (addr, addr + mbi.as_bytes().len() as u64));
    }

    #[test]
    fn bad_multiboot2_modules_are_dropped_with_a_reason() {
        let mbi = Builder::new()
            .mmap(MemoryMapTag::new(&[
                MemoryArea::new(0, 0x9fc00, MemoryAreaType::Available),
                MemoryArea::new(0x100000, 0x3ff0_0000, MemoryAreaType::Available), // RAM up to 1 GiB
            ]))
            .add_module(ModuleTag::new(0x0100_0000, 0x0180_0000, "good kernel"))
            .add_module(ModuleTag::new(0x0200_0000, 0x0200_1234, "end below start")) // patched below
            .add_module(ModuleTag::new(0x3ff0_0000, 0x4010_0000, "past the end of RAM"))
            .add_module(ModuleTag::new(0x0000_9000, 0x000a_1000, "into the hole below 1 MiB"))
            .add_module(ModuleTag::new(0x0020_0000, 0x0030_0000, "over Keel"))
            .add_module(ModuleTag::new(0x0180_0000, 0x0190_0000, "good initrd"))
            .build();
        // The builder refuses an end below the start, as a loader may not: patch it into a copy (8-aligned, as
        // multiboot2 information is).
        let bytes = mbi.as_bytes();
        let mut copy = alloc::vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `copy` has at least `bytes.len()` bytes; u64 has no invalid bit patterns.
        let buf = unsafe { core::slice::from_raw_parts_mut(copy.as_mut_ptr().cast::<u8>(), bytes.len()) };
        buf.copy_from_slice(&bytes);
        let tag: Vec<u8> = [0x0200_0000u32.to_le_bytes(), 0x0200_1234u32.to_le_bytes()].concat();
        let at = buf.windows(8).position(|w| w == tag.as_slice()).unwrap();
        buf[at + 4..at + 8].copy_from_slice(&0x0100_0000u32.to_le_bytes());
        let addr = buf.as_ptr() as u64;
        // SAFETY: `copy` holds a well-formed multiboot2 information block (one module's end changed) alive for the
        // whole call.
        let mut info = unsafe { from_multiboot2(addr) }.unwrap();
        assert_eq!(info.modules.len(), 6);
        // Before the check, the bad module's size does not underflow.
        assert_eq!(info.modules[1].size(), 0);
        let why = info.check_modules((0x0020_0000, 0x0028_0000));
        let names: Vec<&str> = info.modules.iter().map(|m| m.cmdline.as_str()).collect();
        assert_eq!(names, ["good kernel", "good initrd"]);
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].starts_with("module 1 at 0x2000000-0x1000000") && why[0].contains("end lies below its start"));
        assert!(why[1].starts_with("module 2 ") && why[1].contains("not wholly in usable RAM"), "{}", why[1]);
        assert!(why[2].starts_with("module 3 ") && why[2].contains("not wholly in usable RAM"), "{}", why[2]);
        assert!(why[3].starts_with("module 4 ") && why[3].contains("overlaps Keel's image"), "{}", why[3]);
        // What is left is reserved as before.
        assert_eq!(info.occupied_ranges()[1..], [(0x0100_0000, 0x0180_0000), (0x0180_0000, 0x0190_0000)]);
    }

    /// Modules in dom0's kernel window move to the top of RAM below 4 GiB, clear of each other; others stay.
    #[test]
    fn modules_in_the_kernel_window_move_high() {
        let m = |start: u64, end: u64| Module { start, end, cmdline: String::new() };
        let info = BootInfo {
            protocol: Protocol::Multiboot2,
            loader: String::new(),
            cmdline: String::new(),
            memory: alloc::vec![
                MemRegion { start: 0, end: 0x9fc00, kind: MemKind::Usable },
                MemRegion { start: 0x10_0000, end: 0x7ffd_f000, kind: MemKind::Usable },
            ],
            modules: alloc::vec![m(0x14d_2000, 0x1c9_ad00), m(0x1cb_0000, 0x248_b000), m(0x2000_0000, 0x2010_0000)],
            acpi: None,
            info_range: (0x9000, 0xa000),
        };
        let plan = info.relocation_plan((16 << 20, 144 << 20), (0x20_0000, 0x42_0000)).unwrap();
        assert_eq!(plan.len(), 2, "the third module is outside the window");
        assert_eq!(plan[0], (0, 0x7ffd_f000 - 0x7c_9000));
        assert_eq!(plan[1], (1, 0x7ffd_f000 - 0x7c_9000 - 0x7db_000));
        let small = BootInfo {
            memory: alloc::vec![MemRegion { start: 0x10_0000, end: 0x900_0000, kind: MemKind::Usable }],
            ..info
        };
        assert!(small
            .relocation_plan((16 << 20, 144 << 20), (0x20_0000, 0x42_0000))
            .unwrap_err()
            .contains("fits nowhere"));
    }

    #[test]
    fn pvh_module_wrapping_the_address_space_is_dropped() {
        let mut b = pvh_image();
        b.put(0x1100, &HvmModlistEntry { paddr: 0x200_0000, size: u64::MAX - 0x100, cmdline_paddr: 0, reserved: 0 });
        let mut info = from_pvh(&b, 0x1000).unwrap();
        let why = info.check_modules((0x10_0000, 0x20_0000));
        assert!(info.modules.is_empty());
        assert!(why[0].contains("end lies below its start"), "{why:?}");
        // A good module in RAM stays.
        let mut info = from_pvh(&pvh_image(), 0x1000).unwrap();
        assert!(info.check_modules((0x10_0000, 0x20_0000)).is_empty());
        assert_eq!(info.modules.len(), 1);
    }

    /// A fake physical memory: one buffer at a base address.
    struct Buf {
        base: u64,
        data: Vec<u8>,
    }

    impl PhysMem for Buf {
        fn bytes(&self, paddr: u64, len: usize) -> Option<&[u8]> {
            let off = usize::try_from(paddr.checked_sub(self.base)?).ok()?;
            self.data.get(off..off.checked_add(len)?)
        }
    }

    impl Buf {
        fn put<T: keel_abi::Pod>(&mut self, paddr: u64, v: &T) {
            let off = (paddr - self.base) as usize;
            let bytes = bytemuck::bytes_of(v);
            self.data[off..off + bytes.len()].copy_from_slice(bytes);
        }
    }

    fn pvh_image() -> Buf {
        let mut b = Buf { base: 0x1000, data: alloc::vec![0; 0x1000] };
        b.put(
            0x1000,
            &HvmStartInfo {
                magic: HVM_START_MAGIC,
                version: 1,
                nr_modules: 1,
                modlist_paddr: 0x1100,
                cmdline_paddr: 0x1200,
                rsdp_paddr: 0xf5a40,
                memmap_paddr: 0x1300,
                memmap_entries: 2,
                ..Default::default()
            },
        );
        b.put(0x1100, &HvmModlistEntry { paddr: 0x200_0000, size: 1234, cmdline_paddr: 0x1280, reserved: 0 });
        b.data[0x200..0x20d].copy_from_slice(b"selftest=boot");
        b.data[0x280..0x28c].copy_from_slice(b"console=hvc0");
        b.put(0x1300, &HvmMemmapEntry { addr: 0x100000, size: 0x1000_0000, typ: 1, reserved: 0 });
        b.put(0x1318, &HvmMemmapEntry { addr: 0, size: 0x9fc00, typ: 1, reserved: 0 });
        b
    }

    #[test]
    fn pvh_start_info() {
        let b = pvh_image();
        let info = from_pvh(&b, 0x1000).unwrap();
        assert_eq!(info.loader, "PVH (hvm_start_info v1)");
        assert_eq!(info.cmdline, "selftest=boot");
        assert_eq!(
            info.modules,
            [Module { start: 0x200_0000, end: 0x200_0000 + 1234, cmdline: "console=hvc0".into() }]
        );
        assert_eq!(info.memory[0].start, 0);
        assert_eq!(info.memory[1].end, 0x1010_0000);
        assert_eq!(info.acpi, Some(AcpiRoot::Rsdp(0xf5a40)));
    }

    #[test]
    fn pvh_bad_magic_and_truncation_are_errors() {
        let mut b = pvh_image();
        b.data[0] ^= 0xff;
        assert!(from_pvh(&b, 0x1000).unwrap_err().0.contains("magic"));
        let b = pvh_image();
        assert!(from_pvh(&b, 0x1ff0).unwrap_err().0.contains("not readable"));
        let mut b = pvh_image();
        b.put(0x1000 + 12, &500u32); // nr_modules beyond the buffer
        assert!(from_pvh(&b, 0x1000).unwrap_err().0.contains("module list entry"));
    }

    #[test]
    fn module_kinds() {
        let mut bz = alloc::vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(ModuleKind::guess(&bz), ModuleKind::BzImage);
        assert_eq!(ModuleKind::guess(b"\x7fELF\x02\x01"), ModuleKind::Elf);
        assert_eq!(ModuleKind::guess(b"07070100000001"), ModuleKind::Cpio);
        assert_eq!(ModuleKind::guess(&[0x1f, 0x8b, 8, 0]), ModuleKind::Gzip);
        assert_eq!(ModuleKind::guess(&[0xfd, b'7', b'z', b'X', b'Z', 0]), ModuleKind::Xz);
        assert_eq!(ModuleKind::guess(b"hello"), ModuleKind::Unknown);
    }
}
