//! Building the initial domain: kernel load (bzImage with an xz, gzip or zstd payload, or an ELF of either class),
//! its guest-physical layout and the PVH start_info (parsed and built by the shared `keel-image` crate), from
//! the first two boot modules (kernel, initrd) as Xen does from its GRUB stanza, sized by `dom0_mem=` and
//! `dom0_max_vcpus=`. As Xen gives a PVH hardware domain, dom0 gets no console ring (it uses console_io) and no
//! xenstore ring: HVM_PARAM_STORE_PFN/STORE_EVTCHN stay 0, so Linux's xenbus takes the XS_LOCAL path (a page of its
//! own, a port from EVTCHNOP_alloc_unbound to itself) that dom0's xenstored serves.

use crate::bootinfo::Module;
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

/// Builds and starts the initial domain. Errors are logged; Keel carries on without it.
pub fn build(modules: &[Module], opts: &Options, support: &Support, cpus: u32) -> Option<Arc<Domain>> {
    let kernel = modules.first()?;
    let initrd = modules.get(1);
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
    let dom = match domain::create_with_id(0, cfg, support) {
        Ok(d) => d,
        Err(e) => {
            crate::error!("dom0: cannot create the initial domain: {}", e.0);
            return None;
        }
    };
    // The initial domain is Keel's control domain: it may use domctl, sysctl and platform_op.
    dom.privileged.store(true, core::sync::atomic::Ordering::Release);
    match setup(&dom, kernel, initrd, memory) {
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
