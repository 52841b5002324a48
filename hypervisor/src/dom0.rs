//! The initial domain: built at boot from the first two boot modules (kernel, initrd) exactly as Xen does from
//! its GRUB stanza, sized by `dom0_mem=` and `dom0_max_vcpus=`, with Keel serving its PV console and tying the
//! machine's life to it (its power-off powers the machine off, its reboot reboots it).

use crate::bootinfo::{Module, ModuleKind};
use crate::cmdline::Options;
use crate::domain::{self, evtchn::Binding, Domain, DomainConfig, DomainState};
use crate::hvm::{InitState, Support};
use crate::loader::{self, GuestModule};
use crate::mm::PAGE_SIZE;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use keel_abi::hypercall::ShutdownReason;
use keel_abi::shared_info::hvm_param;
use keel_abi::start_info::{self as si, HvmMemmapEntry};

/// DOMID_XEN: the console port's peer is Keel itself.
pub const DOMID_XEN: u16 = 0x7ff2;

static CONSOLE_RING_HPA: AtomicU64 = AtomicU64::new(0);
static CONSOLE_PORT: AtomicU32 = AtomicU32::new(0);
static STORE_RING_HPA: AtomicU64 = AtomicU64::new(0);
static STORE_PORT: AtomicU32 = AtomicU32::new(0);
/// Keel's built-in xenstore and the replies that did not fit in the ring yet.
static STORE: spin::Mutex<Option<(crate::xenstore::Store, Vec<u8>)>> = spin::Mutex::new(None);
/// `remote_port` values of the ports whose peer is Keel itself.
const BACKEND_CONSOLE: u32 = 0;
const BACKEND_STORE: u32 = 1;

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

/// Loads the kernel (bzImage with an XZ payload, or an ELF vmlinux) into `dom`; returns the PVH entry.
fn load_kernel(dom: &Domain, image: &[u8]) -> Result<u32, String> {
    match ModuleKind::guess(&image[..image.len().min(0x400)]) {
        ModuleKind::Elf => loader::load_pvh(&dom.mem.lock(), image).map_err(|e| e.0),
        ModuleKind::BzImage => {
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
        other => Err(format!("the kernel module is {} data, not a bzImage or ELF kernel", other.name())),
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
    };
    let dom = match domain::create_with_id(0, cfg, support) {
        Ok(d) => d,
        Err(e) => {
            crate::error!("dom0: cannot create the initial domain: {}", e.0);
            return None;
        }
    };
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
            crate::sched::on_domain_end(domain_ended);
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

/// Guest-physical layout under min(RAM, 1 GiB): [.. initrd][store ring][console ring][ACPI tables][start_info ×3].
fn setup(dom: &Arc<Domain>, kernel: &Module, initrd: Option<&Module>, memory: u64) -> Result<(u32, u32), String> {
    let entry = load_kernel(dom, module_bytes(kernel))?;
    let low_top = memory.min(1 << 30);
    let start_info_at = low_top - 3 * PAGE_SIZE;
    let acpi_at = start_info_at - PAGE_SIZE;
    let console_at = acpi_at - PAGE_SIZE;
    let store_at = console_at - PAGE_SIZE;
    let mut mods = Vec::new();
    let mem = dom.mem.lock();
    if let Some(rd) = initrd {
        let bytes = module_bytes(rd);
        let at = store_at.checked_sub(bytes.len() as u64).ok_or("the initrd does not fit")? & !(PAGE_SIZE - 1);
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
    // The console ring: zeroed page, event channel bound to Keel.
    mem.write(console_at, &[0u8; PAGE_SIZE as usize]).map_err(|_| "console ring: unmapped")?;
    let ring_hpa = mem.translate(console_at, true).map_err(|_| "console ring: unmapped")?;
    let port = dom
        .evtchn
        .lock()
        .alloc(Binding::Interdomain { remote: DOMID_XEN, remote_port: 0 }, 0)
        .map_err(|_| "no console port")?;
    {
        let mut p = dom.params.lock();
        p[hvm_param::CONSOLE_PFN as usize] = console_at / PAGE_SIZE;
        p[hvm_param::CONSOLE_EVTCHN as usize] = port as u64;
    }
    CONSOLE_RING_HPA.store(ring_hpa, Ordering::Release);
    CONSOLE_PORT.store(port, Ordering::Release);
    // The xenstore ring, served by Keel's built-in store.
    mem.write(store_at, &[0u8; PAGE_SIZE as usize]).map_err(|_| "store ring: unmapped")?;
    let store_hpa = mem.translate(store_at, true).map_err(|_| "store ring: unmapped")?;
    let store_port = dom
        .evtchn
        .lock()
        .alloc(Binding::Interdomain { remote: DOMID_XEN, remote_port: BACKEND_STORE }, 0)
        .map_err(|_| "no store port")?;
    {
        let mut p = dom.params.lock();
        p[hvm_param::STORE_PFN as usize] = store_at / PAGE_SIZE;
        p[hvm_param::STORE_EVTCHN as usize] = store_port as u64;
    }
    STORE_RING_HPA.store(store_hpa, Ordering::Release);
    STORE_PORT.store(store_port, Ordering::Release);
    *STORE.lock() = Some((crate::xenstore::Store::new(dom.id, &dom.name), Vec::new()));
    let e = |addr: u64, size: u64, typ: u32| HvmMemmapEntry { addr, size, typ, reserved: 0 };
    let mut map = alloc::vec![
        e(0, store_at, si::HVM_MEMMAP_TYPE_RAM),
        e(store_at, 2 * PAGE_SIZE, si::HVM_MEMMAP_TYPE_RESERVED),
        e(acpi_at, PAGE_SIZE, si::HVM_MEMMAP_TYPE_ACPI),
        e(start_info_at, 3 * PAGE_SIZE, si::HVM_MEMMAP_TYPE_RESERVED),
    ];
    if memory > low_top {
        map.push(e(low_top, memory - low_top, si::HVM_MEMMAP_TYPE_RAM));
    }
    *dom.memmap.lock() = map.clone();
    let si_gpa = loader::write_start_info(&mem, start_info_at, 0, &kernel.cmdline, &mods, &map, acpi.rsdp_gpa)
        .map_err(|e| e.0)?;
    Ok((entry, si_gpa))
}

/// Offsets in `struct xencons_interface`.
mod ring {
    pub const IN: usize = 0;
    pub const IN_SIZE: u32 = 1024;
    pub const OUT: usize = 1024;
    pub const OUT_SIZE: u32 = 2048;
    pub const IN_CONS: usize = 3072;
    pub const IN_PROD: usize = 3076;
    pub const OUT_CONS: usize = 3080;
    pub const OUT_PROD: usize = 3084;
}

fn ring_u32(base: u64, off: usize) -> &'static AtomicU32 {
    // SAFETY: `base` is the console ring page of the initial domain (a frame it owns, identity-mapped);
    // `off` is one of the aligned index fields inside it; the guest updates them concurrently, hence atomics.
    unsafe { &*((base as usize + off) as *const AtomicU32) }
}

/// Looks at the xenstore ring between notifications: Linux signals only when the ring was empty, so the rest
/// of a request that was written in pieces arrives silently. CPU 0 calls this on every scheduler pass.
pub fn poll_backends() {
    let base = STORE_RING_HPA.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let has_work = ring_u32(base, xs_ring::REQ_CONS).load(Ordering::Acquire)
        != ring_u32(base, xs_ring::REQ_PROD).load(Ordering::Acquire)
        || STORE.try_lock().is_some_and(|s| s.as_ref().is_some_and(|x| !x.1.is_empty()));
    if has_work {
        if let Some(d) = domain::get(0) {
            store_kick(&d);
        }
    }
}

/// The guest signalled a port whose peer is Keel: its console or its xenstore ring.
pub fn backend_kick(dom: &Arc<Domain>, remote_port: u32) {
    match remote_port {
        BACKEND_CONSOLE => console_kick(dom),
        BACKEND_STORE => store_kick(dom),
        _ => {}
    }
}

/// Takes requests off the xenstore ring, answers them, and signals the guest.
fn store_kick(dom: &Arc<Domain>) {
    let base = STORE_RING_HPA.load(Ordering::Acquire);
    if base == 0 || dom.id != 0 {
        return;
    }
    let mut guard = STORE.lock();
    let Some((store, pending)) = guard.as_mut() else { return };
    let rd = |idx: u32| -> u8 {
        // SAFETY: `idx % SIZE` is inside the req[] array of the ring page (a frame of the domain, identity-mapped).
        unsafe {
            core::ptr::read_volatile((base as usize + xs_ring::REQ + (idx % xs_ring::SIZE) as usize) as *const u8)
        }
    };
    loop {
        let cons = ring_u32(base, xs_ring::REQ_CONS).load(Ordering::Acquire);
        let prod = ring_u32(base, xs_ring::REQ_PROD).load(Ordering::Acquire);
        let avail = prod.wrapping_sub(cons);
        if !(16..=xs_ring::SIZE).contains(&avail) {
            break;
        }
        let word =
            |off: u32| u32::from_le_bytes([rd(cons + off), rd(cons + off + 1), rd(cons + off + 2), rd(cons + off + 3)]);
        let (typ, req_id, tx_id, len) = (word(0), word(4), word(8), word(12));
        if len as usize > crate::xenstore::PAYLOAD_MAX {
            dom.crash("xenstore request longer than XENSTORE_PAYLOAD_MAX");
            return;
        }
        if avail < 16 + len {
            break;
        }
        let payload: Vec<u8> = (0..len).map(|i| rd(cons + 16 + i)).collect();
        ring_u32(base, xs_ring::REQ_CONS).store(cons.wrapping_add(16 + len), Ordering::Release);
        for r in store.handle(typ, req_id, tx_id, &payload) {
            pending.extend_from_slice(&crate::xenstore::encode(&r));
        }
    }
    // Replies go out as far as the response ring has room; the rest waits for the next kick.
    let cons = ring_u32(base, xs_ring::RSP_CONS).load(Ordering::Acquire);
    let mut prod = ring_u32(base, xs_ring::RSP_PROD).load(Ordering::Acquire);
    let room = xs_ring::SIZE.saturating_sub(prod.wrapping_sub(cons)) as usize;
    let n = room.min(pending.len());
    for &b in &pending[..n] {
        // SAFETY: inside the rsp[] array of the ring page.
        unsafe {
            core::ptr::write_volatile((base as usize + xs_ring::RSP + (prod % xs_ring::SIZE) as usize) as *mut u8, b)
        };
        prod = prod.wrapping_add(1);
    }
    pending.drain(..n);
    ring_u32(base, xs_ring::RSP_PROD).store(prod, Ordering::Release);
    drop(guard);
    crate::domain::evtchn::set_pending(dom, STORE_PORT.load(Ordering::Acquire));
}

use crate::xenstore::ring as xs_ring;

/// Copies what the guest wrote to its console ring to Keel's console (on EVTCHNOP_send to the console port).
pub fn console_kick(dom: &Domain) {
    let base = CONSOLE_RING_HPA.load(Ordering::Acquire);
    if base == 0 || dom.id != 0 {
        return;
    }
    let cons = ring_u32(base, ring::OUT_CONS).load(Ordering::Acquire);
    let prod = ring_u32(base, ring::OUT_PROD).load(Ordering::Acquire);
    let n = prod.wrapping_sub(cons).min(ring::OUT_SIZE);
    let mut buf = Vec::with_capacity(n as usize);
    for i in 0..n {
        let idx = (cons.wrapping_add(i) % ring::OUT_SIZE) as usize;
        // SAFETY: `idx` < OUT_SIZE, inside the out[] array of the ring page.
        buf.push(unsafe { core::ptr::read_volatile((base as usize + ring::OUT + idx) as *const u8) });
    }
    ring_u32(base, ring::OUT_CONS).store(cons.wrapping_add(n), Ordering::Release);
    dom.console_write(&buf);
}

/// Puts serial input into the initial domain's console ring and raises its port.
pub fn console_input(bytes: &[u8]) {
    let base = CONSOLE_RING_HPA.load(Ordering::Acquire);
    let Some(dom) = domain::get(0) else { return };
    if base == 0 || dom.is_finished() {
        return;
    }
    let cons = ring_u32(base, ring::IN_CONS).load(Ordering::Acquire);
    let mut prod = ring_u32(base, ring::IN_PROD).load(Ordering::Acquire);
    for &b in bytes {
        if prod.wrapping_sub(cons) >= ring::IN_SIZE {
            break;
        }
        let idx = (prod % ring::IN_SIZE) as usize;
        // SAFETY: `idx` < IN_SIZE, inside the in[] array of the ring page.
        unsafe { core::ptr::write_volatile((base as usize + ring::IN + idx) as *mut u8, b) };
        prod = prod.wrapping_add(1);
    }
    ring_u32(base, ring::IN_PROD).store(prod, Ordering::Release);
    crate::domain::evtchn::set_pending(&dom, CONSOLE_PORT.load(Ordering::Acquire));
}

/// The machine follows the initial domain: power-off powers off, reboot reboots, a crash reboots.
fn domain_ended(d: &Arc<Domain>) {
    if d.id != 0 {
        return;
    }
    match d.state() {
        DomainState::Shutdown(ShutdownReason::Reboot) => crate::arch::x86::power::reboot(),
        DomainState::Crashed(_) => {
            crate::error!("Domain 0 crashed: rebooting machine");
            crate::arch::x86::power::reboot()
        }
        _ => {
            crate::arch::x86::power::power_off();
            crate::arch::x86::cpu::halt_forever()
        }
    }
}

/// Serial input focus, switched by three Ctrl-A in a row.
static INPUT_TO_KEEL: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static CTRL_A_RUN: AtomicU32 = AtomicU32::new(0);

/// Feeds serial input: Ctrl-A ×3 toggles between the initial domain and Keel's own key handler.
pub fn serial_input(bytes: &[u8]) {
    let mut to_guest = Vec::new();
    for &b in bytes {
        if b == 0x01 {
            if CTRL_A_RUN.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
                CTRL_A_RUN.store(0, Ordering::Relaxed);
                let keel = !INPUT_TO_KEEL.fetch_xor(true, Ordering::AcqRel);
                crate::info!(
                    "*** Serial input to {} (type 'CTRL-a' three times to switch input)",
                    if keel { "Keel" } else { "DOM0" }
                );
            }
            continue;
        }
        // Ctrl-A presses that did not reach three are passed on.
        for _ in 0..CTRL_A_RUN.swap(0, Ordering::Relaxed) {
            if !INPUT_TO_KEEL.load(Ordering::Acquire) {
                to_guest.push(0x01);
            }
        }
        if INPUT_TO_KEEL.load(Ordering::Acquire) {
            keel_key(b);
        } else {
            to_guest.push(b);
        }
    }
    if !to_guest.is_empty() {
        console_input(&to_guest);
    }
}

/// Keel's own debug keys.
fn keel_key(b: u8) {
    match b {
        b'h' => crate::info!("'h' help, 'q' domain list, 'r' run queues, 'v' vCPUs"),
        b'v' => {
            for d in domain::all() {
                for v in &d.vcpus {
                    crate::info!(
                        "d{}v{}: {:?} exits {} last {:?} at RIP {:#x}, last hypercall {:#x}",
                        d.id,
                        v.id,
                        v.state(),
                        v.exits.load(Ordering::Relaxed),
                        *v.last_exit.lock(),
                        v.last_rip.load(Ordering::Relaxed),
                        v.last_hypercall.load(Ordering::Relaxed)
                    );
                }
            }
        }
        b'q' => {
            for d in domain::all() {
                crate::info!(
                    "d{} ({}): {:?}, {} vCPUs, {} KiB, cpu {} ms",
                    d.id,
                    d.name,
                    d.state(),
                    d.vcpus.len(),
                    d.mem.lock().tot_pages * 4,
                    d.cpu_time_ns() / 1_000_000
                );
            }
        }
        b'r' => crate::info!("run queue lengths: {:?}", crate::sched::queue_lengths()),
        b'c' => {
            let base = CONSOLE_RING_HPA.load(Ordering::Acquire);
            if base != 0 {
                crate::info!(
                    "console ring: out cons {} prod {}, in cons {} prod {}, port {}",
                    ring_u32(base, ring::OUT_CONS).load(Ordering::Relaxed),
                    ring_u32(base, ring::OUT_PROD).load(Ordering::Relaxed),
                    ring_u32(base, ring::IN_CONS).load(Ordering::Relaxed),
                    ring_u32(base, ring::IN_PROD).load(Ordering::Relaxed),
                    CONSOLE_PORT.load(Ordering::Relaxed)
                );
            }
            let sb = STORE_RING_HPA.load(Ordering::Acquire);
            if sb != 0 {
                crate::info!(
                    "store ring: req cons {} prod {}, rsp cons {} prod {}, port {}, pending {:?}",
                    ring_u32(sb, xs_ring::REQ_CONS).load(Ordering::Relaxed),
                    ring_u32(sb, xs_ring::REQ_PROD).load(Ordering::Relaxed),
                    ring_u32(sb, xs_ring::RSP_CONS).load(Ordering::Relaxed),
                    ring_u32(sb, xs_ring::RSP_PROD).load(Ordering::Relaxed),
                    STORE_PORT.load(Ordering::Relaxed),
                    STORE.try_lock().map(|s| s.as_ref().map(|x| x.1.len()))
                );
            }
        }
        _ => {}
    }
}
