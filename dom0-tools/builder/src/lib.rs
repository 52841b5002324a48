//! dom0's PVH domain builder: the job of Xen's libxenguest (`xc_dom_*`, `tools/libs/guest/xg_dom_x86.c`) and
//! libxl's PVH pieces (`libxl_x86.c`'s memory map, `libxl_x86_acpi.c`'s ACPI placement) for a Keel domU.
//!
//! Two steps:
//! 1. [`plan`] lays out the guest's memory, using the same `keel-image` crate as the hypervisor's dom0 builder
//!    (kernel formats, `hvm_start_info`, ACPI tables): nothing is touched, every error is found here.
//! 2. [`build`] carries a [`Layout`] out through a [`DomainOps`] (the hypercalls: populate physmap, foreign
//!    mappings, memory map, HVM params, event channels, grant seeding, the boot vCPU, unpause). The domain must
//!    exist already (createdomain, max_vcpus, max_mem are the caller's, as in libxl); the caller introduces it to
//!    xenstored with what [`Built`] returns.
//!
//! # The layout (facts from Xen 4.17; Keel's own choices are marked)
//!
//! | Guest-physical                 | What                                                                    |
//! |--------------------------------|-------------------------------------------------------------------------|
//! | `0 .. lowmem_end`              | RAM: `min(memory, 0xFC000000)`, the rest at 4 GiB ("highmem")            |
//! | kernel `p_paddr`s              | the kernel's PT_LOAD segments (bss zero-filled)                          |
//! | next page after the kernel     | the initrd, page aligned (xc_dom allocates segments in that order)       |
//! | next page after the initrd     | `hvm_start_info` + module list + memory map + command lines (3 pages; Keel marks them reserved in the map) |
//! | `0xFC000000` (ACPI_INFO_PHYSICAL_ADDRESS) | the ACPI tables, RSDP first (Xen: an info page, then tables, then the RSDP); E820 "ACPI" |
//! | `0xFEFF8000 .. 0xFF000000`     | the 8 HVM special pages (X86_HVM_END_SPECIAL_REGION 0xFF000 − 8 pfns): xenstore = pfn 0xFEFFC, console = pfn 0xFEFFF; Keel marks them reserved |
//!
//! The console and xenstore pages are populated and cleared, their pfns go to `HVM_PARAM_CONSOLE_PFN` /
//! `HVM_PARAM_STORE_PFN`, the event channels (allocated unbound for the backend domains) to
//! `HVM_PARAM_CONSOLE_EVTCHN` / `HVM_PARAM_STORE_EVTCHN`, and grant entries 0 (`GNTTAB_RESERVED_CONSOLE`) and 1
//! (`GNTTAB_RESERVED_XENSTORE`) grant them to the backends, as `xc_dom_gnttab_seed` does. The boot vCPU starts
//! at the PVH entry in 32-bit protected mode, paging off, `%ebx` = the start_info address.

use keel_abi::shared_info::hvm_param;
use keel_abi::start_info::{self as si, HvmMemmapEntry};
use keel_image::kernel::{self, Limits, Placement};
use keel_image::start_info::{self as start, entry, GuestModule};
use keel_image::PAGE_SIZE;
use std::fmt;

pub mod xc;

/// `ACPI_INFO_PHYSICAL_ADDRESS` of Xen's libacpi: where libxl puts a PVH guest's ACPI area.
pub const ACPI_GPA: u64 = 0xfc00_0000;
/// Where RAM below 4 GiB ends at the latest: the ACPI area and the MMIO hole above it.
pub const LOWMEM_MAX: u64 = ACPI_GPA;
/// `X86_HVM_END_SPECIAL_REGION`: the pfn after the special pages.
pub const END_SPECIAL_REGION: u64 = 0xff000;
/// `X86_HVM_NR_SPECIAL_PAGES`.
pub const NR_SPECIAL_PAGES: u64 = 8;
/// Index of the xenstore ring among the special pages (`SPECIALPAGE_XENSTORE`).
pub const SPECIALPAGE_XENSTORE: u64 = 4;
/// Index of the console ring among the special pages (`SPECIALPAGE_CONSOLE`).
pub const SPECIALPAGE_CONSOLE: u64 = 7;
/// Grant reference of the console ring (`GNTTAB_RESERVED_CONSOLE`).
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Grant reference of the xenstore ring (`GNTTAB_RESERVED_XENSTORE`).
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;
/// Smallest guest Keel builds: 16 MiB.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Pages mapped at once while copying.
const MAP_CHUNK_PAGES: u64 = 256;

/// The pfn of special page `i`.
pub const fn special_pfn(i: u64) -> u64 {
    END_SPECIAL_REGION - NR_SPECIAL_PAGES + i
}

/// What a PVH domU is built from.
#[derive(Clone, Copy, Debug)]
pub struct DomainSpec<'a> {
    /// The kernel image: a bzImage (xz, gzip or zstd payload) or an ELF of either class with the PVH note.
    pub kernel: &'a [u8],
    /// The initrd, if any.
    pub ramdisk: Option<&'a [u8]>,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPUs (the ACPI tables describe this many).
    pub vcpus: u32,
    /// The domain serving the console (xenconsoled's), normally 0.
    pub console_domid: u16,
    /// The domain serving xenstore, normally 0.
    pub store_domid: u16,
    /// Bounds on unpacking the kernel.
    pub limits: Limits,
}

impl<'a> DomainSpec<'a> {
    /// A spec with dom0 as both backends and the default unpacking limits.
    pub fn new(kernel: &'a [u8], memory: u64, vcpus: u32) -> Self {
        Self {
            kernel,
            ramdisk: None,
            cmdline: "",
            memory,
            vcpus,
            console_domid: 0,
            store_domid: 0,
            limits: Limits { zstd_window_max: 256 << 20, ..Limits::default() },
        }
    }
}

/// Why a domain could not be planned or built: one line naming the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError(pub String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

fn berr<T>(s: impl Into<String>) -> Result<T, BuildError> {
    Err(BuildError(s.into()))
}

/// Bytes to write at a guest-physical address, then zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// What it is, for error messages ("kernel segment 0", "initrd", ...).
    pub what: String,
    /// Guest-physical address.
    pub gpa: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Zero bytes after them.
    pub zero: u64,
}

/// A planned domain: everything [`build`] writes, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The PVH entry point.
    pub entry: u32,
    /// Guest-physical address of `hvm_start_info` (for `%ebx`).
    pub start_info: u64,
    /// RAM below 4 GiB ends here.
    pub lowmem_end: u64,
    /// RAM above 4 GiB: `4 GiB .. 4 GiB + highmem`.
    pub highmem: u64,
    /// Where the initrd went, and its size.
    pub ramdisk: Option<(u64, u64)>,
    /// The ACPI tables' address and size, and the RSDP's address.
    pub acpi: (u64, u64, u64),
    /// The console ring's pfn.
    pub console_pfn: u64,
    /// The xenstore ring's pfn.
    pub store_pfn: u64,
    /// The memory map (also in start_info; `XENMEM_set_memory_map` gets it too).
    pub memmap: Vec<HvmMemmapEntry>,
    /// What to write: kernel segments, initrd, start_info, ACPI tables, the cleared special pages.
    pub chunks: Vec<Chunk>,
}

impl Layout {
    /// Every pfn to populate, as (first pfn, count) runs: RAM, the ACPI pages, the special pages.
    pub fn populate_runs(&self) -> Vec<(u64, u64)> {
        frame_runs(self.lowmem_end + self.highmem, self.acpi.1.div_ceil(PAGE_SIZE))
    }
}

/// The frames a PVH domU of `memory` bytes of RAM and `acpi_pages` ACPI pages has, as (first pfn, count) runs:
/// its RAM ([`ram_ranges`]), the ACPI area at [`ACPI_GPA`], the special pages (what [`build`] populates, and
/// what `xm save` probes).
pub fn frame_runs(memory: u64, acpi_pages: u64) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> =
        ram_ranges(memory).iter().map(|&(gpa, len)| (gpa / PAGE_SIZE, len / PAGE_SIZE)).collect();
    v.push((ACPI_GPA / PAGE_SIZE, acpi_pages));
    v.push((special_pfn(0), NR_SPECIAL_PAGES));
    v
}

/// Where a PVH domU of `memory` bytes has its RAM, as (guest-physical address, bytes): below [`LOWMEM_MAX`] from 0,
/// the rest from 4 GiB. (A core dump reads the domain's memory from these ranges.)
pub fn ram_ranges(memory: u64) -> Vec<(u64, u64)> {
    let low = memory.min(LOWMEM_MAX);
    let mut v = vec![(0, low)];
    if memory > low {
        v.push((1 << 32, memory - low));
    }
    v
}

fn page_up(n: u64) -> Option<u64> {
    n.checked_add(PAGE_SIZE - 1).map(|n| n & !(PAGE_SIZE - 1))
}

/// Plans the memory of a PVH domU: unpacks and checks the kernel, places the initrd and start_info after it,
/// builds the ACPI tables and the memory map. Touches no domain.
pub fn plan(spec: &DomainSpec<'_>) -> Result<Layout, BuildError> {
    if spec.memory < MIN_MEMORY || !spec.memory.is_multiple_of(PAGE_SIZE) {
        return berr(format!(
            "memory of {} bytes: a PVH guest needs a whole number of pages, at least {} MiB",
            spec.memory,
            MIN_MEMORY >> 20
        ));
    }
    if spec.vcpus == 0 || spec.vcpus > keel_image::acpi::MAX_VCPUS {
        return berr(format!("{} vCPUs: between 1 and {} are supported", spec.vcpus, keel_image::acpi::MAX_VCPUS));
    }
    let ram = ram_ranges(spec.memory);
    let lowmem_end = ram[0].1;
    let highmem = ram.get(1).map_or(0, |r| r.1);
    let mut scratch = Vec::new();
    let elf =
        kernel::elf_bytes(spec.kernel, &mut scratch, spec.limits).map_err(|e| BuildError(format!("kernel: {e}")))?;
    let kplan = kernel::plan(elf, lowmem_end).map_err(|e| BuildError(format!("kernel: {e}")))?;
    let mut chunks: Vec<Chunk> = kplan
        .segments
        .iter()
        .enumerate()
        .map(|(i, s): (usize, &Placement<'_>)| Chunk {
            what: format!("kernel segment {i}"),
            gpa: s.gpa,
            data: s.data.to_vec(),
            zero: s.zero,
        })
        .collect();
    let no_room = |what: &str, size: u64| {
        BuildError(format!(
            "{what} ({} KiB) does not fit after the kernel in {} MiB of memory below 4 GiB",
            size.div_ceil(1024),
            lowmem_end >> 20
        ))
    };
    let mut next = page_up(kplan.end()).ok_or_else(|| no_room("the initrd", 0))?;
    let mut ramdisk = None;
    if let Some(rd) = spec.ramdisk {
        let size = rd.len() as u64;
        let end = next.checked_add(size).filter(|&e| e <= lowmem_end).ok_or_else(|| no_room("the initrd", size))?;
        chunks.push(Chunk { what: "initrd".into(), gpa: next, data: rd.to_vec(), zero: 0 });
        ramdisk = Some((next, size));
        next = page_up(end).ok_or_else(|| no_room("the initrd", size))?;
    }
    let start_info = next;
    if start_info.checked_add(start::AREA).is_none_or(|e| e > lowmem_end.min(1 << 30)) {
        return Err(no_room("start_info (it must lie below 1 GiB)", start::AREA));
    }
    let acpi = keel_image::acpi::build(ACPI_GPA, spec.vcpus);
    let acpi_size = acpi.bytes.len() as u64;
    let acpi_pages = acpi_size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let after_si = start_info + start::AREA;
    let mut memmap = vec![entry(0, start_info, si::HVM_MEMMAP_TYPE_RAM)];
    memmap.push(entry(start_info, start::AREA, si::HVM_MEMMAP_TYPE_RESERVED));
    if lowmem_end > after_si {
        memmap.push(entry(after_si, lowmem_end - after_si, si::HVM_MEMMAP_TYPE_RAM));
    }
    memmap.push(entry(ACPI_GPA, acpi_pages, si::HVM_MEMMAP_TYPE_ACPI));
    memmap.push(entry(special_pfn(0) * PAGE_SIZE, NR_SPECIAL_PAGES * PAGE_SIZE, si::HVM_MEMMAP_TYPE_RESERVED));
    if highmem > 0 {
        memmap.push(entry(1 << 32, highmem, si::HVM_MEMMAP_TYPE_RAM));
    }
    let modules: Vec<GuestModule<'_>> =
        ramdisk.iter().map(|&(gpa, size)| GuestModule { gpa, size, cmdline: "" }).collect();
    let si_bytes = start::build(start_info, 0, spec.cmdline, &modules, &memmap, acpi.rsdp_gpa)
        .map_err(|e| BuildError(format!("start_info: {e}")))?;
    chunks.push(Chunk { what: "start_info".into(), gpa: start_info, data: si_bytes, zero: 0 });
    chunks.push(Chunk { what: "ACPI tables".into(), gpa: ACPI_GPA, data: acpi.bytes, zero: acpi_pages - acpi_size });
    chunks.push(Chunk {
        what: "special pages".into(),
        gpa: special_pfn(0) * PAGE_SIZE,
        data: Vec::new(),
        zero: NR_SPECIAL_PAGES * PAGE_SIZE,
    });
    Ok(Layout {
        entry: kplan.entry,
        start_info,
        lowmem_end,
        highmem,
        ramdisk,
        acpi: (ACPI_GPA, acpi_pages, acpi.rsdp_gpa),
        console_pfn: special_pfn(SPECIALPAGE_CONSOLE),
        store_pfn: special_pfn(SPECIALPAGE_XENSTORE),
        memmap,
        chunks,
    })
}

/// The boot vCPU's state for a PVH entry: 32-bit protected mode, paging off, flat segments, `%ebx` = start_info.
/// The implementation turns it into `XEN_DOMCTL_sethvmcontext` (or `setvcpucontext`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootVcpu {
    /// `%eip`: the PVH entry point.
    pub entry: u32,
    /// `%ebx`: the `hvm_start_info` address.
    pub start_info: u32,
}

/// The hypercalls a domain build needs, as libxenguest makes them: implemented over keel-xenctrl in dom0, and
/// by an in-memory fake in the tests. Errors are one-line strings naming the cause (an errno's name, ...).
pub trait DomainOps {
    /// A writable mapping of guest pages, contiguous in dom0's address space; it stays valid until dropped.
    type Mapping: std::ops::DerefMut<Target = [u8]>;

    /// `XENMEM_populate_physmap`: gives the domain fresh frames at `count` pfns from `first_pfn`.
    fn populate_physmap(&mut self, domid: u16, first_pfn: u64, count: u64) -> Result<(), String>;
    /// `IOCTL_PRIVCMD_MMAPBATCH_V2` with write access: maps `count` guest pages from `first_pfn`.
    fn map_foreign(&mut self, domid: u16, first_pfn: u64, count: u64) -> Result<Self::Mapping, String>;
    /// `XENMEM_set_memory_map`: the map `XENMEM_memory_map` gives the guest.
    fn set_memory_map(&mut self, domid: u16, map: &[HvmMemmapEntry]) -> Result<(), String>;
    /// `HVMOP_set_param`.
    fn set_hvm_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), String>;
    /// `EVTCHNOP_alloc_unbound` in `domid` for `remote`: returns the port.
    fn alloc_unbound_evtchn(&mut self, domid: u16, remote: u16) -> Result<u32, String>;
    /// Writes grant entry `gref` of `domid` (v1: `GTF_permit_access`, `domid` = the grantee, `frame` = pfn),
    /// as `xc_dom_gnttab_seed` does.
    fn seed_grant(&mut self, domid: u16, gref: u32, grantee: u16, pfn: u64) -> Result<(), String>;
    /// Sets vCPU 0's boot state.
    fn set_boot_vcpu(&mut self, domid: u16, vcpu: BootVcpu) -> Result<(), String>;
    /// `XEN_DOMCTL_unpausedomain`.
    fn unpause(&mut self, domid: u16) -> Result<(), String>;
}

/// What a built domain's caller needs next (introducing it to xenstored, starting its console).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    /// The console ring's pfn.
    pub console_pfn: u64,
    /// The console's event channel (in the guest, unbound for `console_domid`).
    pub console_port: u32,
    /// The xenstore ring's pfn.
    pub store_pfn: u64,
    /// The xenstore event channel.
    pub store_port: u32,
}

fn step<T>(what: &str, r: Result<T, String>) -> Result<T, BuildError> {
    r.map_err(|e| BuildError(format!("{what}: {e}")))
}

/// Writes `chunk` into the guest through foreign mappings of at most [`MAP_CHUNK_PAGES`] pages at a time.
fn write_chunk<O: DomainOps>(ops: &mut O, domid: u16, c: &Chunk) -> Result<(), BuildError> {
    let total = c.data.len() as u64 + c.zero;
    let end = c.gpa.checked_add(total).ok_or_else(|| BuildError(format!("{}: address overflow", c.what)))?;
    let mut pfn = c.gpa / PAGE_SIZE;
    while pfn * PAGE_SIZE < end {
        let count = (end.div_ceil(PAGE_SIZE) - pfn).min(MAP_CHUNK_PAGES);
        let mut map = step(&format!("mapping {} (pfn {pfn:#x})", c.what), ops.map_foreign(domid, pfn, count))?;
        if map.len() as u64 != count * PAGE_SIZE {
            return berr(format!("mapping {}: {} bytes mapped for {count} pages", c.what, map.len()));
        }
        let base = pfn * PAGE_SIZE;
        let (lo, hi) = (c.gpa.max(base), end.min(base + count * PAGE_SIZE));
        // The bytes of `data` in this window, then zeros.
        let data_end = c.gpa + c.data.len() as u64;
        let d_hi = hi.min(data_end);
        if lo < d_hi {
            let src = &c.data[(lo - c.gpa) as usize..(d_hi - c.gpa) as usize];
            map[(lo - base) as usize..(d_hi - base) as usize].copy_from_slice(src);
        }
        let z_lo = lo.max(data_end);
        if z_lo < hi {
            map[(z_lo - base) as usize..(hi - base) as usize].fill(0);
        }
        pfn += count;
    }
    Ok(())
}

/// Builds the planned domain `domid` (created, max_vcpus and max_mem set, paused) and unpauses it.
pub fn build<O: DomainOps>(
    ops: &mut O,
    domid: u16,
    spec: &DomainSpec<'_>,
    layout: &Layout,
) -> Result<Built, BuildError> {
    for (first, count) in layout.populate_runs() {
        step(&format!("populating pfns {first:#x}+{count:#x}"), ops.populate_physmap(domid, first, count))?;
    }
    for c in &layout.chunks {
        write_chunk(ops, domid, c)?;
    }
    step("setting the memory map", ops.set_memory_map(domid, &layout.memmap))?;
    let console_port = step("console event channel", ops.alloc_unbound_evtchn(domid, spec.console_domid))?;
    let store_port = step("xenstore event channel", ops.alloc_unbound_evtchn(domid, spec.store_domid))?;
    for (name, index, value) in [
        ("HVM_PARAM_STORE_PFN", hvm_param::STORE_PFN, layout.store_pfn),
        ("HVM_PARAM_STORE_EVTCHN", hvm_param::STORE_EVTCHN, u64::from(store_port)),
        ("HVM_PARAM_CONSOLE_PFN", hvm_param::CONSOLE_PFN, layout.console_pfn),
        ("HVM_PARAM_CONSOLE_EVTCHN", hvm_param::CONSOLE_EVTCHN, u64::from(console_port)),
    ] {
        step(&format!("setting {name}"), ops.set_hvm_param(domid, index, value))?;
    }
    step(
        "granting the console ring",
        ops.seed_grant(domid, GNTTAB_RESERVED_CONSOLE, spec.console_domid, layout.console_pfn),
    )?;
    step(
        "granting the xenstore ring",
        ops.seed_grant(domid, GNTTAB_RESERVED_XENSTORE, spec.store_domid, layout.store_pfn),
    )?;
    // `start::build` keeps start_info below 1 GiB.
    let vcpu = BootVcpu { entry: layout.entry, start_info: layout.start_info as u32 };
    step("setting the boot vCPU", ops.set_boot_vcpu(domid, vcpu))?;
    step("unpausing", ops.unpause(domid))?;
    Ok(Built { console_pfn: layout.console_pfn, console_port, store_pfn: layout.store_pfn, store_port })
}

#[cfg(test)]
mod tests;
