//! Domains and vCPUs: identity, state, memory (through the p2m) with accounting, the hypervisor's view of each
//! vCPU, and the single place a misbehaving domain is crashed.

pub mod evtchn;
pub mod pvclock;

use crate::hvm::walk::{self, Access};
use crate::hvm::{vlapic::Vlapic, HwVcpu, InitState, PagingState, Support};
use crate::mm::p2m::{GuestP2m, MapError, PageSize, Perms};
use crate::mm::{MachineFrames, PAGE_SIZE};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use keel_abi::hypercall::ShutdownReason;
use spin::Mutex;

/// A domain id.
pub type DomId = u16;

/// Life cycle of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Created, vCPUs may run.
    Running,
    /// Paused by the toolstack.
    Paused,
    /// Shut down by the guest with a reason.
    Shutdown(ShutdownReason),
    /// Crashed; the reason is logged.
    Crashed(String),
}

/// How to build a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// Name (`xm list`).
    pub name: String,
    /// vCPU count.
    pub vcpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// Credit-scheduler weight.
    pub weight: u32,
    /// Cap in percent of one CPU (0 = none).
    pub cap: u32,
    /// In test mode: a crash is the expected outcome.
    pub expect_crash: bool,
}

/// Guest physical memory of a domain.
pub struct Memory {
    /// The nested page table.
    pub p2m: GuestP2m,
    /// RAM pages currently populated (4 KiB units).
    pub tot_pages: u64,
    /// Limit.
    pub max_pages: u64,
    /// End of the RAM range [0, ram_end).
    pub ram_end: u64,
}

/// Why a guest-memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadGpa(pub u64);

impl Memory {
    /// Host address of guest-physical `gpa`, if mapped (writable when `write`).
    pub fn translate(&self, gpa: u64, write: bool) -> Result<u64, BadGpa> {
        match self.p2m.lookup(&mut MachineFrames, gpa) {
            Some((hpa, perms)) if !write || perms.write => Ok(hpa),
            _ => Err(BadGpa(gpa)),
        }
    }

    /// Copies guest-physical memory out.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BadGpa> {
        let mut done = 0;
        while done < buf.len() {
            let a = gpa.checked_add(done as u64).ok_or(BadGpa(gpa))?;
            let hpa = self.translate(a, false)?;
            let n = core::cmp::min(buf.len() - done, (PAGE_SIZE - (a & 0xfff)) as usize);
            // SAFETY: `hpa..hpa+n` lies inside one frame mapped to this domain (identity-mapped host RAM).
            unsafe { core::ptr::copy_nonoverlapping(hpa as *const u8, buf[done..].as_mut_ptr(), n) };
            done += n;
        }
        Ok(())
    }

    /// Copies into guest-physical memory.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), BadGpa> {
        let mut done = 0;
        while done < buf.len() {
            let a = gpa.checked_add(done as u64).ok_or(BadGpa(gpa))?;
            let hpa = self.translate(a, true)?;
            let n = core::cmp::min(buf.len() - done, (PAGE_SIZE - (a & 0xfff)) as usize);
            // SAFETY: as in `read`, and the mapping is writable RAM of this domain.
            unsafe { core::ptr::copy_nonoverlapping(buf[done..].as_ptr(), hpa as *mut u8, n) };
            done += n;
        }
        Ok(())
    }

    /// Reads a plain-old-data value.
    pub fn read_val<T: Copy + Default>(&self, gpa: u64) -> Result<T, BadGpa> {
        let mut v = T::default();
        // SAFETY: T is a `#[repr(C)]` ABI struct or integer: any byte pattern is a valid value.
        let bytes =
            unsafe { core::slice::from_raw_parts_mut((&mut v as *mut T).cast::<u8>(), core::mem::size_of::<T>()) };
        self.read(gpa, bytes)?;
        Ok(v)
    }

    /// Writes a plain-old-data value.
    pub fn write_val<T: Copy>(&self, gpa: u64, v: &T) -> Result<(), BadGpa> {
        // SAFETY: viewing a `#[repr(C)]` value's bytes for copying.
        let bytes = unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>()) };
        self.write(gpa, bytes)
    }

    /// Populates [0, bytes) with RAM, using 2 MiB pages where possible.
    fn populate(&mut self, bytes: u64) -> Result<(), &'static str> {
        let mut gpa = 0;
        while gpa < bytes {
            let big = gpa.is_multiple_of(2 << 20) && bytes - gpa >= 2 << 20;
            if big {
                if let Ok(hpa) = crate::mm::with_frames(|a| a.alloc_contiguous(512, 2 << 20, u64::MAX))
                    .unwrap_or(Err(crate::mm::frame::OutOfFrames))
                {
                    zero(hpa, 2 << 20);
                    self.map_owned(gpa, hpa, PageSize::Size2M)?;
                    gpa += 2 << 20;
                    continue;
                }
            }
            let hpa = crate::mm::alloc_frame().map_err(|_| "out of memory for guest RAM")?;
            self.map_owned(gpa, hpa, PageSize::Size4K)?;
            gpa += PAGE_SIZE;
        }
        self.ram_end = bytes;
        Ok(())
    }

    fn map_owned(&mut self, gpa: u64, hpa: u64, size: PageSize) -> Result<(), &'static str> {
        match self.p2m.map(&mut MachineFrames, gpa, hpa, size, Perms::RAM, true) {
            Ok(()) => {
                self.tot_pages += size.bytes() / PAGE_SIZE;
                Ok(())
            }
            Err(e) => {
                let n = size.bytes() / PAGE_SIZE;
                for i in 0..n {
                    crate::mm::free_frame(hpa + i * PAGE_SIZE);
                }
                Err(match e {
                    MapError::OutOfFrames => "out of memory for nested page tables",
                    MapError::Busy => "guest-physical address already mapped",
                    MapError::Unaligned => "unaligned guest mapping",
                })
            }
        }
    }

    /// Maps a frame the domain does not own (e.g. its shared_info page) at `gpa`, replacing what was there
    /// (owned RAM that is replaced is freed).
    pub fn map_foreign_frame(&mut self, gpa: u64, hpa: u64) -> Result<(), &'static str> {
        if let Some(old) = self.p2m.unmap_4k(&mut MachineFrames, gpa) {
            crate::debug!("p2m: gpa {gpa:#x} was mapped (owned: {}), now {hpa:#x}", old.owned);
            if old.owned {
                crate::mm::free_frame(old.hpa);
                self.tot_pages -= 1;
            }
        }
        self.p2m
            .map(&mut MachineFrames, gpa, hpa, PageSize::Size4K, Perms::RAM, false)
            .map_err(|_| "cannot map the frame into the guest")
    }
}

fn zero(hpa: u64, len: u64) {
    // SAFETY: called on frames just allocated for a guest, identity-mapped and exclusively ours.
    unsafe { core::ptr::write_bytes(hpa as *mut u8, 0, len as usize) };
}

/// Scheduling state of a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Waiting in a run queue.
    Runnable = 0,
    /// On a CPU now.
    Running = 1,
    /// Halted or blocked, waiting for an event or timer.
    Blocked = 2,
    /// Not started, or taken down by the guest.
    Offline = 3,
    /// Its domain is gone or going.
    Dead = 4,
}

/// One virtual CPU.
pub struct Vcpu {
    /// vCPU number inside its domain.
    pub id: u32,
    /// Owning domain.
    pub domain: Weak<Domain>,
    /// Its domain's id (kept for logging after the domain is gone).
    pub domid: DomId,
    /// Hardware context; taken by the CPU that runs the vCPU.
    pub hw: Mutex<Option<HwVcpu>>,
    state: AtomicU8,
    /// Credit-scheduler fields.
    pub sched: crate::sched::VcpuSched,
    /// Single-shot timer deadline in system ns (0 = none).
    pub timer_deadline: AtomicU64,
    /// Periodic timer period (0 = off) and next expiry.
    pub periodic_period: AtomicU64,
    /// Next periodic expiry.
    pub periodic_next: AtomicU64,
    /// Host address of the registered vcpu_info (0: the shared_info slot, when mapped).
    pub vcpu_info_hpa: AtomicU64,
    /// Runstate accounting: ns per state, and when the current state started.
    pub runstate_time: [AtomicU64; 4],
    /// System time the current runstate began.
    pub runstate_entry: AtomicU64,
    /// Ports this vCPU polls in SCHEDOP_poll: a bitmask of the first 64, and one port of any number.
    pub poll_mask: AtomicU64,
    /// The single polled port (u32::MAX: none).
    pub poll_port: AtomicU32,
    /// VIRQ → port bindings for this vCPU.
    pub virq_ports: [AtomicU32; keel_abi::shared_info::virq::NR as usize],
    /// MTRR and other MSR values the guest wrote that Keel only stores.
    pub msrs: Mutex<BTreeMap<u32, u64>>,
    /// FPU/SSE state while the vCPU is not on a CPU.
    pub fpu: Mutex<crate::arch::x86::fpu::FpuState>,
    /// Last physical CPU the vCPU ran on (u32::MAX: never).
    pub last_cpu: AtomicU32,
    /// The domain's guest-physical map changed: flush this vCPU's guest translations before its next entry.
    pub tlb_flush_pending: AtomicBool,
    /// Set while an interrupt injection is waiting for a window.
    pub window_requested: AtomicBool,
    /// The virtual local APIC.
    pub lapic: Mutex<Vlapic>,
    /// Exits taken (for statistics and the 'v' debug key).
    pub exits: AtomicU64,
    /// RIP at the last exit.
    pub last_rip: AtomicU64,
    /// Number and first argument of the last hypercall.
    pub last_hypercall: AtomicU64,
    /// The last event injected (for crash reports).
    pub last_injected: Mutex<Option<crate::hvm::Event>>,
    /// Last exit, as text for debugging.
    pub last_exit: Mutex<Option<crate::hvm::Exit>>,
    /// An NMI is waiting to be injected.
    pub nmi_pending: AtomicBool,
    /// INIT received; a start-up IPI will start the vCPU.
    pub wait_for_sipi: AtomicBool,
    /// Host addresses of the registered runstate area (two when it crosses a page; 0 = none).
    pub runstate_hpa: [AtomicU64; 2],
}

impl Vcpu {
    /// Current scheduling state.
    pub fn state(&self) -> VcpuState {
        match self.state.load(Ordering::Acquire) {
            0 => VcpuState::Runnable,
            1 => VcpuState::Running,
            2 => VcpuState::Blocked,
            3 => VcpuState::Offline,
            _ => VcpuState::Dead,
        }
    }

    /// Sets the state and accounts the runstate change.
    pub fn set_state(&self, s: VcpuState) {
        let old = self.state.swap(s as u8, Ordering::AcqRel);
        if old == s as u8 {
            return;
        }
        let now = crate::arch::x86::time::now_ns();
        let since = self.runstate_entry.swap(now, Ordering::AcqRel);
        let idx = runstate_index(old);
        self.runstate_time[idx].fetch_add(now.saturating_sub(since), Ordering::Relaxed);
        self.publish_runstate();
    }

    /// Whether the vCPU is blocked in SCHEDOP_poll waiting for `port`.
    pub fn polls(&self, port: u32) -> bool {
        self.poll_port.load(Ordering::Acquire) == port
            || (port < 64 && self.poll_mask.load(Ordering::Acquire) & (1 << port) != 0)
    }

    /// Ends a SCHEDOP_poll wait.
    pub fn stop_polling(&self) {
        self.poll_mask.store(0, Ordering::Release);
        self.poll_port.store(u32::MAX, Ordering::Release);
        self.sched.poll_deadline.store(0, Ordering::Release);
    }

    /// Copies the runstate into the guest's registered area, if any.
    pub fn publish_runstate(&self) {
        let first = self.runstate_hpa[0].load(Ordering::Acquire);
        if first == 0 {
            return;
        }
        let r = self.runstate();
        // SAFETY: viewing a `#[repr(C)]` ABI struct's bytes for copying.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&r as *const keel_abi::shared_info::VcpuRunstateInfo).cast::<u8>(),
                core::mem::size_of_val(&r),
            )
        };
        let in_first = core::cmp::min(bytes.len() as u64, PAGE_SIZE - (first & 0xfff)) as usize;
        // SAFETY: the host addresses were translated from the guest's registered area at registration; they
        // lie in frames owned by the domain (identity-mapped), `in_first` bytes in the first and the rest at
        // the start of the second.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), first as *mut u8, in_first);
            let second = self.runstate_hpa[1].load(Ordering::Acquire);
            if in_first < bytes.len() && second != 0 {
                core::ptr::copy_nonoverlapping(bytes[in_first..].as_ptr(), second as *mut u8, bytes.len() - in_first);
            }
        }
    }

    /// Atomically moves from `from` to `to`; false if the state was not `from`.
    pub fn transition(&self, from: VcpuState, to: VcpuState) -> bool {
        if self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let now = crate::arch::x86::time::now_ns();
            let since = self.runstate_entry.swap(now, Ordering::AcqRel);
            self.runstate_time[runstate_index(from as u8)].fetch_add(now.saturating_sub(since), Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Runstate snapshot in Xen's format.
    pub fn runstate(&self) -> keel_abi::shared_info::VcpuRunstateInfo {
        use keel_abi::shared_info::runstate as rs;
        let now = crate::arch::x86::time::now_ns();
        let st = self.state.load(Ordering::Acquire);
        let entry = self.runstate_entry.load(Ordering::Acquire);
        let mut time = [0u64; 4];
        for (i, t) in time.iter_mut().enumerate() {
            *t = self.runstate_time[i].load(Ordering::Relaxed);
        }
        time[runstate_index(st)] += now.saturating_sub(entry);
        let state = match runstate_index(st) {
            0 => rs::RUNNING,
            1 => rs::RUNNABLE,
            2 => rs::BLOCKED,
            _ => rs::OFFLINE,
        };
        keel_abi::shared_info::VcpuRunstateInfo { state, pad: 0, state_entry_time: entry, time }
    }

    /// Time spent running, in ns.
    pub fn running_ns(&self) -> u64 {
        self.runstate().time[0]
    }
}

fn runstate_index(state: u8) -> usize {
    match state {
        1 => 0, // running
        0 => 1, // runnable
        2 => 2, // blocked
        _ => 3, // offline / dead
    }
}

/// A domain.
pub struct Domain {
    /// Id.
    pub id: DomId,
    /// Name.
    pub name: String,
    /// What it was built from.
    pub config: DomainConfig,
    state: Mutex<DomainState>,
    /// Guest memory.
    pub mem: Mutex<Memory>,
    /// vCPUs (fixed at creation).
    pub vcpus: Vec<Arc<Vcpu>>,
    /// Credit weight.
    pub weight: AtomicU32,
    /// Cap in percent (0 = none).
    pub cap: AtomicU32,
    /// Host frame of the shared_info page.
    pub shared_info: u64,
    /// Guest frame number it is mapped at (u64::MAX = not mapped).
    pub shared_info_gfn: AtomicU64,
    /// HVM parameters.
    pub params: Mutex<[u64; keel_abi::shared_info::hvm_param::NR as usize]>,
    /// Event channels.
    pub evtchn: Mutex<evtchn::Table>,
    /// Console line being assembled.
    pub console: Mutex<Vec<u8>>,
    /// Last "Test result:" word the guest printed.
    pub test_result: Mutex<Option<String>>,
    /// Set once teardown has started.
    pub dying: AtomicBool,
    /// Grant-table frames (host addresses), created on demand by XENMEM_add_to_physmap.
    pub grant_frames: Mutex<Vec<u64>>,
    /// The memory map the domain was built with (for XENMEM_memory_map).
    pub memmap: Mutex<Vec<keel_abi::start_info::HvmMemmapEntry>>,
}

static DOMAINS: Mutex<BTreeMap<DomId, Arc<Domain>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Every live domain.
pub fn all() -> Vec<Arc<Domain>> {
    DOMAINS.lock().values().cloned().collect()
}

/// A live domain by id.
pub fn get(id: DomId) -> Option<Arc<Domain>> {
    DOMAINS.lock().get(&id).cloned()
}

/// Number of live domains.
pub fn count() -> usize {
    DOMAINS.lock().len()
}

/// Why a domain could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateError(pub String);

impl Domain {
    /// Current state.
    pub fn state(&self) -> DomainState {
        self.state.lock().clone()
    }

    /// Whether the domain has stopped for good (shut down, crashed or dying).
    pub fn is_finished(&self) -> bool {
        self.dying.load(Ordering::Acquire)
            || matches!(*self.state.lock(), DomainState::Shutdown(_) | DomainState::Crashed(_))
    }

    /// Host pointer to `shared_info`.
    pub fn shared_info_ptr(&self) -> *mut u8 {
        self.shared_info as *mut u8
    }

    /// Sum of the vCPUs' running time.
    pub fn cpu_time_ns(&self) -> u64 {
        self.vcpus.iter().map(|v| v.running_ns()).sum()
    }

    /// Records a guest-requested shutdown and stops every vCPU.
    pub fn shutdown(&self, reason: ShutdownReason) {
        {
            let mut s = self.state.lock();
            if !matches!(*s, DomainState::Running | DomainState::Paused) {
                return;
            }
            *s = DomainState::Shutdown(reason);
        }
        crate::info!("domain {} ({}) shut down: {}", self.id, self.name, reason.name());
        self.stop_vcpus();
    }

    /// The one place a misbehaving domain is ended: logs why, stops its vCPUs. The host carries on.
    /// The guest-physical map changed (a frame replaced or added): every vCPU flushes its cached guest
    /// translations before it next enters the guest, and those running now are made to exit first, so that none
    /// keeps using a frame that has left the domain.
    pub fn p2m_changed(&self) {
        for v in &self.vcpus {
            v.tlb_flush_pending.store(true, Ordering::Release);
            if v.state() == VcpuState::Running {
                crate::sched::kick(v);
            }
        }
    }

    pub fn crash(&self, why: &str) {
        {
            let mut s = self.state.lock();
            if !matches!(*s, DomainState::Running | DomainState::Paused) {
                return;
            }
            *s = DomainState::Crashed(why.into());
        }
        crate::error!("domain {} ({}) crashed: {}", self.id, self.name, why);
        self.stop_vcpus();
    }

    fn stop_vcpus(&self) {
        for v in &self.vcpus {
            v.set_state(VcpuState::Dead);
            crate::sched::kick(v);
        }
    }

    /// Appends guest console output; complete lines are printed as `(d<id>) text`.
    pub fn console_write(&self, bytes: &[u8]) {
        let mut buf = self.console.lock();
        for &b in bytes {
            if b == b'\n' || buf.len() >= 256 {
                let line = String::from_utf8_lossy(&buf).into_owned();
                buf.clear();
                let line = line.trim_end_matches('\r');
                crate::info!("(d{}) {}", self.id, line);
                if let Some(r) = line.strip_prefix("Test result: ") {
                    *self.test_result.lock() = Some(r.split_whitespace().next().unwrap_or("").into());
                }
            } else if b != 0 {
                buf.push(b);
            }
        }
    }
}

/// Builds a domain: memory, shared_info, vCPUs (offline; the loader brings vCPU 0 up).
pub fn create(cfg: DomainConfig, support: &Support) -> Result<Arc<Domain>, CreateError> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) as DomId;
    create_with_id(id, cfg, support)
}

/// Builds a domain with a given id (0 for the initial domain).
pub fn create_with_id(id: DomId, cfg: DomainConfig, support: &Support) -> Result<Arc<Domain>, CreateError> {
    if DOMAINS.lock().contains_key(&id) {
        return Err(CreateError(alloc::format!("domain id {id} is in use")));
    }
    match support {
        Support::Svm(c) if !c.npt => {
            return Err(CreateError("HVM/PVH guests need nested paging (NPT), which this CPU lacks".into()))
        }
        Support::Unavailable(why) => return Err(CreateError(alloc::format!("HVM/PVH guests are unavailable: {why}"))),
        _ => {}
    }
    if cfg.vcpus == 0 || cfg.vcpus > 64 {
        return Err(CreateError(alloc::format!("{} vCPUs requested; 1 to 64 are supported", cfg.vcpus)));
    }
    if cfg.memory < 2 << 20 || !cfg.memory.is_multiple_of(PAGE_SIZE) {
        return Err(CreateError("memory must be at least 2 MiB and a multiple of 4 KiB".into()));
    }
    let ept = matches!(support, Support::Vmx(_));
    let p2m = GuestP2m::new(&mut MachineFrames, ept).map_err(|_| CreateError("out of memory".into()))?;
    let mut mem = Memory { p2m, tot_pages: 0, max_pages: cfg.memory / PAGE_SIZE, ram_end: 0 };
    if let Err(e) = mem.populate(cfg.memory) {
        mem.p2m.destroy(&mut MachineFrames);
        return Err(CreateError(e.into()));
    }
    let shared_info = match crate::mm::alloc_frame() {
        Ok(f) => f,
        Err(_) => {
            mem.p2m.destroy(&mut MachineFrames);
            return Err(CreateError("out of memory for shared_info".into()));
        }
    };
    let dom = Arc::new_cyclic(|weak: &Weak<Domain>| {
        let vcpus = (0..cfg.vcpus)
            .map(|i| {
                Arc::new(Vcpu {
                    id: i,
                    domain: weak.clone(),
                    domid: id,
                    hw: Mutex::new(None),
                    state: AtomicU8::new(VcpuState::Offline as u8),
                    sched: crate::sched::VcpuSched::new(),
                    timer_deadline: AtomicU64::new(0),
                    periodic_period: AtomicU64::new(0),
                    periodic_next: AtomicU64::new(0),
                    vcpu_info_hpa: AtomicU64::new(0),
                    runstate_time: [const { AtomicU64::new(0) }; 4],
                    runstate_entry: AtomicU64::new(crate::arch::x86::time::now_ns()),
                    poll_mask: AtomicU64::new(0),
                    poll_port: AtomicU32::new(u32::MAX),
                    virq_ports: [const { AtomicU32::new(0) }; keel_abi::shared_info::virq::NR as usize],
                    msrs: Mutex::new(BTreeMap::new()),
                    fpu: Mutex::new(crate::arch::x86::fpu::FpuState::new()),
                    last_cpu: AtomicU32::new(u32::MAX),
                    tlb_flush_pending: AtomicBool::new(false),
                    window_requested: AtomicBool::new(false),
                    lapic: Mutex::new(Vlapic::new(i)),
                    exits: AtomicU64::new(0),
                    last_rip: AtomicU64::new(0),
                    last_hypercall: AtomicU64::new(0),
                    last_injected: Mutex::new(None),
                    last_exit: Mutex::new(None),
                    nmi_pending: AtomicBool::new(false),
                    wait_for_sipi: AtomicBool::new(false),
                    runstate_hpa: [const { AtomicU64::new(0) }; 2],
                })
            })
            .collect();
        Domain {
            id,
            name: cfg.name.clone(),
            weight: AtomicU32::new(cfg.weight),
            cap: AtomicU32::new(cfg.cap),
            config: cfg,
            state: Mutex::new(DomainState::Running),
            mem: Mutex::new(mem),
            vcpus,
            shared_info,
            shared_info_gfn: AtomicU64::new(u64::MAX),
            params: Mutex::new([0; keel_abi::shared_info::hvm_param::NR as usize]),
            evtchn: Mutex::new(evtchn::Table::new()),
            console: Mutex::new(Vec::new()),
            test_result: Mutex::new(None),
            dying: AtomicBool::new(false),
            grant_frames: Mutex::new(Vec::new()),
            memmap: Mutex::new(Vec::new()),
        }
    });
    pvclock::init_shared_info(&dom);
    DOMAINS.lock().insert(id, dom.clone());
    Ok(dom)
}

/// Gives a vCPU its hardware context in `init` state and makes it runnable.
pub fn start_vcpu(v: &Arc<Vcpu>, support: &Support, init: InitState) -> Result<(), CreateError> {
    let dom = v.domain.upgrade().ok_or_else(|| CreateError("domain is gone".into()))?;
    let root = dom.mem.lock().p2m.root();
    let hw = HwVcpu::new(support, root, init).map_err(|e| CreateError(e.into()))?;
    *v.hw.lock() = Some(hw);
    v.set_state(VcpuState::Runnable);
    crate::sched::wake(v);
    Ok(())
}

/// Frees everything a finished domain holds and removes it. Only the first caller does the work and gets
/// `true`; racing callers get `false`.
pub fn destroy(dom: &Arc<Domain>) -> bool {
    if dom.dying.swap(true, Ordering::AcqRel) {
        return false;
    }
    for v in &dom.vcpus {
        if let Some(hw) = v.hw.lock().take() {
            for f in hw.frames() {
                crate::mm::free_frame(f);
            }
        }
    }
    crate::mm::free_frame(dom.shared_info);
    for f in dom.grant_frames.lock().drain(..) {
        crate::mm::free_frame(f);
    }
    {
        let mut mem = dom.mem.lock();
        let p2m = core::mem::replace(&mut mem.p2m, GuestP2m::detached());
        p2m.destroy(&mut MachineFrames);
        mem.tot_pages = 0;
    }
    DOMAINS.lock().remove(&dom.id);
    crate::sched::domain_destroyed(dom);
    true
}

/// Whether any vCPU of `dom` can still run.
pub fn all_vcpus_stopped(dom: &Domain) -> bool {
    dom.vcpus.iter().all(|v| matches!(v.state(), VcpuState::Dead | VcpuState::Offline) && v.hw.try_lock().is_some())
}

/// Reads guest-linear memory through the vCPU's page tables.
pub fn read_linear(mem: &Memory, paging: &PagingState, linear: u64, buf: &mut [u8]) -> Result<(), BadGpa> {
    let mut done = 0;
    while done < buf.len() {
        let lin = linear.wrapping_add(done as u64);
        let gpa =
            walk::translate(paging, lin, Access::Read, |g| mem.read_val::<u64>(g).ok()).map_err(|_| BadGpa(lin))?;
        let n = core::cmp::min(buf.len() - done, (PAGE_SIZE - (lin & 0xfff)) as usize);
        mem.read(gpa, &mut buf[done..done + n])?;
        done += n;
    }
    Ok(())
}

/// Writes guest-linear memory through the vCPU's page tables.
pub fn write_linear(mem: &Memory, paging: &PagingState, linear: u64, buf: &[u8]) -> Result<(), BadGpa> {
    let mut done = 0;
    while done < buf.len() {
        let lin = linear.wrapping_add(done as u64);
        let gpa =
            walk::translate(paging, lin, Access::Write, |g| mem.read_val::<u64>(g).ok()).map_err(|_| BadGpa(lin))?;
        let n = core::cmp::min(buf.len() - done, (PAGE_SIZE - (lin & 0xfff)) as usize);
        mem.write(gpa, &buf[done..done + n])?;
        done += n;
    }
    Ok(())
}
