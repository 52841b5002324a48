//! Building the initial domain: kernel load (bzImage with an xz, gzip or zstd payload, or an ELF of either class),
//! its guest-physical layout and the PVH start_info (parsed and built by the shared `keel-image` crate), from
//! the first two boot modules (kernel, initrd) as Xen does from its GRUB stanza, sized by `dom0_mem=` and
//! `dom0_max_vcpus=`. As Xen gives a PVH hardware domain, dom0 gets no console ring (it uses console_io) and no
//! xenstore ring: HVM_PARAM_STORE_PFN/STORE_EVTCHN stay 0, so Linux's xenbus takes the XS_LOCAL path (a page of its
//! own, a port from EVTCHNOP_alloc_unbound to itself) that dom0's xenstored serves.

use crate::bootinfo::{AcpiRoot, MemKind, MemRegion, Module};
use crate::cmdline::Options;
use crate::domain::{self, Domain, DomainConfig};
use crate::hvm::{InitState, Support};
use crate::loader::{self, Format, GuestModule};
use crate::mm::PAGE_SIZE;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use keel_abi::start_info::{self as si, HvmMemmapEntry};

fn module_bytes(m: &Module) -> &'static [u8] {
    // SAFETY: boot modules stay identity-mapped and reserved from the allocator for Keel's whole life.
    unsafe { core::slice::from_raw_parts(m.start as *const u8, m.size() as usize) }
}

/// A region of machine frames borrowed for decompression and returned on drop.
struct Scratch {
    pa: u64,
    pages: u64,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for i in 0..self.pages {
            crate::mm::free_frame(self.pa + i * PAGE_SIZE);
        }
    }
}

/// Loads the kernel (a bzImage with an xz, gzip or zstd payload, or an ELF vmlinux) into `dom`; returns the PVH
/// entry.
fn load_kernel(dom: &Domain, image: &[u8]) -> Result<u32, String> {
    match Format::detect(image).map_err(|e| e.0)? {
        Format::Elf => loader::load_pvh(&dom.mem.lock(), image).map_err(|e| e.0),
        Format::BzImage => {
            let p = loader::bzimage::payload(image).map_err(|e| format!("bzImage: {e}"))?;
            let size = p.buffer_size().map_err(|e| format!("bzImage: {e}"))? as u64;
            let pages = size.div_ceil(PAGE_SIZE);
            let pa = crate::mm::with_frames(|a| a.alloc_contiguous(pages, PAGE_SIZE, u64::MAX))
                .unwrap_or(Err(crate::mm::frame::OutOfFrames))
                .map_err(|_| format!("no {} MiB of contiguous memory to unpack the kernel", size >> 20))?;
            let scratch = Scratch { pa, pages };
            // SAFETY: the frames were just allocated for this buffer alone and are identity-mapped.
            let out = unsafe { core::slice::from_raw_parts_mut(scratch.pa as *mut u8, size as usize) };
            let t0 = crate::arch::x86::time::now_ns();
            // A zstd window comes from Keel's heap: at most bzimage::DEFAULT_ZSTD_WINDOW_MAX (8 MiB) of it.
            let n = loader::bzimage::decompress(&p, out).map_err(|e| format!("bzImage: {e}"))?;
            crate::info!(
                "dom0: unpacked a {} KiB {} payload to a {} KiB ELF in {} ms",
                p.data.len() >> 10,
                p.kind,
                n >> 10,
                (crate::arch::x86::time::now_ns() - t0) / 1_000_000
            );
            loader::load_pvh(&dom.mem.lock(), &out[..n]).map_err(|e| e.0)
        }
    }
}

/// Where dom0's kernel loads (Linux's PVH entry is at its link address, 16 MiB) when dom0's RAM is mapped 1:1:
/// Keel moves boot modules out of it and keeps its own allocations out of it until dom0 is built.
pub const DOM0_KERNEL_WINDOW: (u64, u64) = (16 << 20, 144 << 20);

/// Dom0's RAM below 1 MiB mapped 1:1 when its RAM is (Linux needs some for its real-mode trampoline): above
/// Keel's AP trampoline (0x8000), below the EBDA. The 64 KiB below it are fresh RAM, not 1:1: Linux reads the
/// BIOS data area and looks for an MP table there (zeros: none), and no device DMAs there.
const DOM0_LOW_RAM: (u64, u64) = (0x1_0000, 0x9_f000);

/// Gives the frames set aside for a 1:1 dom0 to the allocator, for [`host_plan`] to claim: the kernel window
/// and the low RAM, where the host has RAM and no boot module lies.
fn release_for_dom0(host: &HostPlatform<'_>, modules: &[Module]) {
    for r in host.memory.iter().filter(|r| r.kind == MemKind::Usable) {
        for (s, e) in [DOM0_KERNEL_WINDOW, DOM0_LOW_RAM] {
            let (s, e) = (s.max(r.start), e.min(r.end));
            if s < e {
                crate::mm::with_frames(|a| {
                    a.add_free_range(s, e);
                    for m in modules {
                        a.reserve_range(m.start, m.end);
                    }
                });
            }
        }
    }
}

/// What the machine is, for a dom0 given the host's platform (`dom0-platform=host`).
pub struct HostPlatform<'a> {
    /// The firmware's memory map.
    pub memory: &'a [MemRegion],
    /// Where its ACPI tables start.
    pub acpi: Option<AcpiRoot>,
    /// Drive the host's IOMMU, if it has one (`iommu=`).
    pub iommu: bool,
}

/// Builds and starts the initial domain. Errors are logged; Keel carries on without it. With `host`, dom0 gets
/// the machine's platform (issue 15), else the PVH domU one.
pub fn build(
    modules: &[Module],
    opts: &Options,
    support: &Support,
    cpus: u32,
    host: Option<HostPlatform<'_>>,
) -> Option<Arc<Domain>> {
    let kernel = modules.first()?;
    let initrd = modules.get(1);
    if let Some(h) = &host {
        release_for_dom0(h, modules);
    }
    let free = crate::mm::free_frames() * PAGE_SIZE;
    let memory = opts.dom0_mem.resolve(free, loader::bzimage::unpack_room(module_bytes(kernel)));
    let vcpus = opts.dom0_max_vcpus.unwrap_or(cpus).clamp(1, 64);
    let cfg = DomainConfig {
        name: "Domain-0".into(),
        vcpus,
        memory,
        weight: crate::sched::DEFAULT_WEIGHT,
        cap: 0,
        expect_crash: false,
        // Xen creates its dom0 with every limit -1: its defaults.
        limits: crate::domain::Limits::DEFAULT,
    };
    let plan = match &host {
        Some(h) => match host_plan(h, memory, vcpus) {
            Ok(p) => Some(p),
            Err(e) => {
                crate::error!("dom0: cannot lay out the host's platform for dom0: {e}");
                return None;
            }
        },
        None => None,
    };
    let made = match &plan {
        Some(p) => domain::create_with_ram(0, cfg, &p.map.ram, DOM0_LOW_RAM.0, support),
        None => domain::create_with_id(0, cfg, support),
    };
    let dom = match made {
        Ok(d) => d,
        Err(e) => {
            crate::error!("dom0: cannot create the initial domain: {}", e.0);
            return None;
        }
    };
    // The initial domain is Keel's control domain: it may use domctl, sysctl and platform_op.
    dom.privileged.store(true, core::sync::atomic::Ordering::Release);
    let built = match plan {
        Some(p) => setup_host(&dom, kernel, initrd, &p),
        None => setup(&dom, kernel, initrd, memory),
    };
    match built {
        Ok(entry_si) => {
            let (entry, start_info) = entry_si;
            if let Err(e) = domain::start_vcpu(&dom.vcpus[0], support, InitState::Pvh { entry, start_info }) {
                crate::error!("dom0: cannot start vCPU 0: {}", e.0);
                dom.crash("vCPU 0 could not start");
                return None;
            }
            crate::info!(
                "dom0: {} MiB, {} vCPUs, kernel entry {entry:#x}, command line \"{}\"",
                memory >> 20,
                vcpus,
                kernel.cmdline
            );
            crate::info!("*** Serial input to DOM0 (type 'CTRL-a' three times to switch input)");
            crate::run::on_domain_end(super::power::domain_ended);
            Some(dom)
        }
        Err(e) => {
            crate::error!("dom0: cannot build the initial domain: {e}");
            dom.crash(&e);
            let _ = domain::destroy(&dom);
            crate::error!("Could not set up the initial domain: rebooting");
            crate::arch::x86::power::reboot()
        }
    }
}

/// Guest-physical layout under min(RAM, 1 GiB): [.. initrd][ACPI tables][start_info ×3].
fn setup(dom: &Arc<Domain>, kernel: &Module, initrd: Option<&Module>, memory: u64) -> Result<(u32, u32), String> {
    let entry = load_kernel(dom, module_bytes(kernel))?;
    let low_top = memory.min(1 << 30);
    let start_info_at = low_top - 3 * PAGE_SIZE;
    let acpi_at = start_info_at - PAGE_SIZE;
    let mut mods = Vec::new();
    let mem = dom.mem.lock();
    if let Some(rd) = initrd {
        let bytes = module_bytes(rd);
        let at = acpi_at.checked_sub(bytes.len() as u64).ok_or("the initrd does not fit")? & !(PAGE_SIZE - 1);
        if at < 32 << 20 {
            return Err(format!(
                "the initrd ({} KiB) does not fit above the kernel in {} MiB",
                bytes.len() >> 10,
                memory >> 20
            ));
        }
        mem.write(at, bytes).map_err(|e| format!("initrd: gpa {:#x} unmapped", e.0))?;
        mods.push(GuestModule { gpa: at, size: bytes.len() as u64, cmdline: &rd.cmdline });
    }
    let acpi = loader::acpi_tables::build(acpi_at, dom.vcpus.len() as u32);
    mem.write(acpi_at, &acpi.bytes).map_err(|_| "ACPI tables: unmapped")?;
    // No console ring: as Xen's hardware domain, dom0 uses console_io for the machine's console. No xenstore ring
    // either: the STORE params stay 0 and dom0's kernel sets up its own (XS_LOCAL) for dom0's xenstored.
    let e = |addr: u64, size: u64, typ: u32| HvmMemmapEntry { addr, size, typ, reserved: 0 };
    let mut map = alloc::vec![
        e(0, acpi_at, si::HVM_MEMMAP_TYPE_RAM),
        e(acpi_at, PAGE_SIZE, si::HVM_MEMMAP_TYPE_ACPI),
        e(start_info_at, 3 * PAGE_SIZE, si::HVM_MEMMAP_TYPE_RESERVED),
    ];
    if memory > low_top {
        map.push(e(low_top, memory - low_top, si::HVM_MEMMAP_TYPE_RAM));
    }
    *dom.memmap.lock() = map.clone();
    // The initial domain, privileged (SIF_INITDOMAIN | SIF_PRIVILEGED): Linux then takes it for dom0 (privcmd,
    // /proc/xen/capabilities "control_d", the console through console_io).
    let flags = si::SIF_PRIVILEGED | si::SIF_INITDOMAIN;
    let si_gpa = loader::write_start_info(&mem, start_info_at, flags, &kernel.cmdline, &mods, &map, acpi.rsdp_gpa)
        .map_err(|e| e.0)?;
    drop(mem);
    Ok((entry, si_gpa))
}

/// The local APIC page, which is each vCPU's vLAPIC.
const LAPIC_WINDOW: core::ops::Range<u64> = 0xfee0_0000..0xfee0_1000;

/// dom0's physical map and ACPI tables over the host's.
struct HostPlan {
    map: keel_image::host_map::Dom0Map,
    /// The RSDP, XSDT and MADT, to be placed at `map.tail` (the bytes assume that address).
    acpi: keel_image::acpi::AcpiBlob,
    /// An emulated IO-APIC per host IO-APIC.
    ioapics: Vec<crate::hvm::vioapic::Vioapic>,
    /// Device memory mapped 1:1 on first access.
    holes: Vec<core::ops::Range<u64>>,
    /// The host's DMAR (VT-d units), when Keel is to drive them.
    dmar: Option<keel_image::host_acpi::Dmar>,
}

/// Lays dom0 out in the host's e820 shape with `memory` bytes of RAM and the host's ACPI tables behind a new
/// RSDP, XSDT and MADT for `vcpus` vCPUs.
fn host_plan(host: &HostPlatform<'_>, memory: u64, vcpus: u32) -> Result<HostPlan, String> {
    use keel_image::host_acpi;
    let e820: Vec<HvmMemmapEntry> = host
        .memory
        .iter()
        .map(|r| HvmMemmapEntry {
            addr: r.start,
            size: r.end - r.start,
            typ: match r.kind {
                MemKind::Usable => si::HVM_MEMMAP_TYPE_RAM,
                MemKind::AcpiReclaimable => si::HVM_MEMMAP_TYPE_ACPI,
                MemKind::AcpiNvs => si::HVM_MEMMAP_TYPE_NVS,
                MemKind::Bad => si::HVM_MEMMAP_TYPE_UNUSABLE,
                MemKind::Reserved => si::HVM_MEMMAP_TYPE_RESERVED,
            },
            reserved: 0,
        })
        .collect();
    let read = |a: u64, n: usize| crate::arch::x86::acpi::read_firmware(host.memory, a, n);
    let tables = match host.acpi.ok_or("the boot loader passed no ACPI tables")? {
        AcpiRoot::Rsdp(p) => host_acpi::host_tables(&read, p),
        AcpiRoot::Sdt { revision, address } => host_acpi::listed_tables(&read, address, revision >= 2),
    }
    .map_err(|e| e.0)?;
    let madt = match tables.iter().find(|t| &t.signature == b"APIC") {
        Some(t) => {
            let bytes = read(t.address, t.length as usize).ok_or("the host's MADT is unreadable")?;
            host_acpi::parse_host_madt(&bytes).map_err(|e| e.0)?
        }
        None => host_acpi::HostMadt::default(),
    };
    // Never mapped 1:1: each host IO-APIC's window (dom0 sees it emulated, `hvm::vioapic`), the local APIC page
    // (the vLAPIC's), the memory-mapped PCI configuration space (MCFG is hidden until Keel mediates it), the
    // HPET, which Keel keeps (as Xen does), and the IOMMU's registers.
    let table =
        |sig: &[u8; 4]| tables.iter().find(|t| &t.signature == sig).and_then(|t| read(t.address, t.length as usize));
    let dmar = match table(b"DMAR").map(|t| host_acpi::parse_dmar(&t)) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            crate::error!("dom0: the host's DMAR: {}: no IOMMU", e.0);
            None
        }
        None => None,
    };
    let mut emulated: Vec<core::ops::Range<u64>> = madt
        .ioapic_list()
        .map(|(_, a, _)| u64::from(a)..u64::from(a) + crate::hvm::vioapic::WINDOW)
        .chain(core::iter::once(LAPIC_WINDOW))
        .chain(table(b"MCFG").map(|t| host_acpi::parse_mcfg(&t)).unwrap_or_default())
        .chain(table(b"HPET").and_then(|t| host_acpi::parse_hpet(&t)).map(|a| a & !0xfff..(a & !0xfff) + 0x1000))
        .chain(dmar.iter().flat_map(|d| d.units.iter().map(|u| u.base..u.base + u.len)))
        .collect();
    emulated.sort_by_key(|r| r.start);
    let holes = keel_image::host_map::mmio_holes(&e820, 1 << 46, &emulated);
    let shown: Vec<String> = tables
        .iter()
        .map(|t| {
            let sig = String::from_utf8_lossy(&t.signature).into_owned();
            if host_acpi::kept(&t.signature) {
                sig
            } else {
                format!("-{sig}")
            }
        })
        .collect();
    crate::info!("dom0: host ACPI tables (- hidden): {}", shown.join(" "));
    let size = host_acpi::dom0_tables(0, vcpus, &tables, &madt).bytes.len() as u64;
    // Dom0's RAM is mapped 1:1 (no IOMMU: a device it drives reaches RAM by machine address): the lowest free
    // frames from 64 KiB up, which include the kernel window Keel kept free.
    let pages = memory / PAGE_SIZE - DOM0_LOW_RAM.0 / PAGE_SIZE;
    let claimed = crate::mm::with_frames(|a| a.claim_lowest(DOM0_LOW_RAM.0, pages)).unwrap_or_default();
    let mut ram = alloc::vec![0..DOM0_LOW_RAM.0];
    ram.extend(claimed.iter().cloned());
    let give_back = |ram: &[core::ops::Range<u64>]| {
        for r in ram.iter().filter(|r| r.start >= DOM0_LOW_RAM.0) {
            for f in (r.start..r.end).step_by(PAGE_SIZE as usize) {
                crate::mm::free_frame(f);
            }
        }
    };
    let got: u64 = claimed.iter().map(|r| (r.end - r.start) / PAGE_SIZE).sum();
    let kernel_room = ram.iter().any(|r| r.start <= DOM0_KERNEL_WINDOW.0 && DOM0_KERNEL_WINDOW.1 <= r.end);
    if got < pages || !kernel_room {
        give_back(&ram);
        return Err(format!(
            "{got} of {pages} frames free for dom0's RAM, the kernel window {:#x}-{:#x} {}",
            DOM0_KERNEL_WINDOW.0,
            DOM0_KERNEL_WINDOW.1,
            if kernel_room { "among them" } else { "not whole" }
        ));
    }
    let map = keel_image::host_map::dom0_map_with_ram(&e820, ram.clone(), size.div_ceil(PAGE_SIZE), 3, &emulated)
        .map_err(|e| {
            give_back(&ram);
            e.0
        })?;
    let acpi = host_acpi::dom0_tables(map.tail, vcpus, &tables, &madt);
    let ioapics = madt
        .ioapic_list()
        .map(|(id, address, base)| crate::hvm::vioapic::Vioapic::new(id, u64::from(address), base))
        .collect();
    let dmar = dmar.filter(|_| host.iommu);
    Ok(HostPlan { map, acpi, ioapics, holes, dmar })
}

/// Hands dom0's devices to the host's VT-d units: a copy of dom0's map (its RAM and firmware ranges, and what
/// the DMAR reserves for devices) that follows every change of its p2m, then translation on.
fn iommu_on(dom: &Arc<Domain>, plan: &HostPlan, dmar: &keel_image::host_acpi::Dmar) -> Result<(), String> {
    let levels = crate::iommu::init(dmar)?;
    let ranges: Vec<core::ops::Range<u64>> = plan.map.ram.iter().chain(&plan.map.identity).cloned().collect();
    let root = dom.attach_iommu(levels, &ranges, &dmar.reserved)?;
    let bsp = crate::arch::x86::percpu::cpu(0).apic_id.load(core::sync::atomic::Ordering::Relaxed);
    crate::iommu::enable(root, levels, bsp)?;
    crate::info!(
        "dom0: its devices' DMA goes through the IOMMU: dom0's RAM, its grant and foreign mappings and {} reserved \
         range(s), nothing else",
        dmar.reserved.len()
    );
    Ok(())
}

/// [`setup`] for a dom0 in the host's shape: the firmware ranges mapped 1:1, the kernel at its physical address,
/// the initrd below the tail, the tables and start_info in the tail.
fn setup_host(
    dom: &Arc<Domain>,
    kernel: &Module,
    initrd: Option<&Module>,
    plan: &HostPlan,
) -> Result<(u32, u32), String> {
    for r in &plan.map.identity {
        dom.map_identity(r.clone()).map_err(|e| format!("host range {:#x}-{:#x}: {e}", r.start, r.end))?;
    }
    for a in &plan.ioapics {
        crate::info!("dom0: emulated IO-APIC at {:#x}, GSI {}-{}", a.base, a.gsi_base, a.gsi_base + 23);
    }
    let iommu = match &plan.dmar {
        Some(dmar) => match iommu_on(dom, plan, dmar) {
            Ok(()) => true,
            Err(e) => {
                crate::error!("dom0: cannot use the IOMMU: {e}");
                false
            }
        },
        None => false,
    };
    *dom.vioapics.lock() = plan.ioapics.clone();
    *dom.mmio_holes.lock() = plan.holes.clone();
    dom.owns_devices.store(true, core::sync::atomic::Ordering::Release);
    let entry = load_kernel(dom, module_bytes(kernel))?;
    let tail = plan.map.tail;
    let acpi_pages = (plan.acpi.bytes.len() as u64).div_ceil(PAGE_SIZE);
    let start_info_at = tail + acpi_pages * PAGE_SIZE;
    let mut mods = Vec::new();
    let mem = dom.mem.lock();
    if let Some(rd) = initrd {
        let bytes = module_bytes(rd);
        let range = plan.map.ram.iter().find(|r| r.contains(&tail)).ok_or("the tail is not in RAM")?;
        let at = tail.checked_sub(bytes.len() as u64).ok_or("the initrd does not fit")? & !(PAGE_SIZE - 1);
        if at < range.start.max(32 << 20) {
            return Err(format!(
                "the initrd ({} KiB) does not fit below {tail:#x} above the kernel",
                bytes.len() >> 10
            ));
        }
        mem.write(at, bytes).map_err(|e| format!("initrd: gpa {:#x} unmapped", e.0))?;
        mods.push(GuestModule { gpa: at, size: bytes.len() as u64, cmdline: &rd.cmdline });
    }
    mem.write(tail, &plan.acpi.bytes).map_err(|_| "ACPI tables: unmapped")?;
    *dom.memmap.lock() = plan.map.memmap.clone();
    for e in &plan.map.memmap {
        crate::debug!("dom0 e820: {:#012x}-{:#012x} type {}", e.addr, e.addr + e.size, e.typ);
    }
    crate::info!(
        "dom0: the host's platform: {} RAM ranges, {} ranges 1:1, tables at {tail:#x}",
        plan.map.ram.len(),
        plan.map.identity.len()
    );
    // Without an IOMMU dom0's RAM is still mapped 1:1 (its devices reach RAM by machine address), and that mode's
    // limits apply: swiotlb=force makes dom0's DMA bounce through its own RAM, never into a page it maps from
    // another domain (a grant), whose machine address is not its guest-physical one. With one, devices see
    // dom0's map, grants included, and nothing else.
    let cmdline = if iommu || kernel.cmdline.split_whitespace().any(|w| w.starts_with("swiotlb=")) {
        kernel.cmdline.clone()
    } else {
        crate::warning!(
            "dom0: no IOMMU in use: dom0's RAM is mapped 1:1 so that its devices' DMA lands where it means, but \
             nothing stops a device it drives from reaching any machine address, and DMA into pages it maps from \
             other domains cannot work: dom0 runs with swiotlb=force"
        );
        format!("{} swiotlb=force", kernel.cmdline).trim_start().into()
    };
    let flags = si::SIF_PRIVILEGED | si::SIF_INITDOMAIN;
    let si_gpa =
        loader::write_start_info(&mem, start_info_at, flags, &cmdline, &mods, &plan.map.memmap, plan.acpi.rsdp_gpa)
            .map_err(|e| e.0)?;
    drop(mem);
    Ok((entry, si_gpa))
}
