//! Per-CPU data, reached through the GS base (the first word of each block points at itself).

use super::cpu::{self, Msr};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// The most CPUs Keel manages.
pub const MAX_CPUS: usize = 64;

/// Life cycle of a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    /// Not started.
    Offline = 0,
    /// Running Keel.
    Online = 1,
    /// Stopped after a fatal exception.
    Dead = 2,
}

/// One CPU's block.
#[repr(C)]
pub struct PerCpu {
    self_ptr: AtomicU64,
    /// Keel's CPU number (0 is the boot CPU).
    pub index: AtomicU32,
    /// Local APIC id.
    pub apic_id: AtomicU32,
    state: AtomicU8,
    /// Timer interrupts taken.
    pub ticks: AtomicU64,
    /// Self test request: touch an unmapped address (CPU 1 in `selftest=pagefault`).
    pub fault_request: AtomicBool,
    /// Page where VMSAVE keeps this CPU's host state around VMRUN (AMD).
    svm_host_vmcb: AtomicU64,
    /// Identity of the vCPU that last ran here (its address), to know when TLBs must be flushed.
    last_vcpu: AtomicU64,
    /// Linear address of this CPU's TSS.
    tss_base: AtomicU64,
    /// Lowest address and size of this CPU's stack (filled with [`STACK_FILL`] at start, for [`Self::stack_used`]).
    stack_bottom: AtomicU64,
    stack_size: AtomicU64,
}

/// What an unused stack byte holds, so that the deepest use can be found afterwards.
pub const STACK_FILL: u8 = 0x5a;

impl PerCpu {
    /// Records this CPU's stack (already filled with [`STACK_FILL`] below the part in use).
    pub fn set_stack(&self, bottom: u64, size: u64) {
        self.stack_bottom.store(bottom, Ordering::Relaxed);
        self.stack_size.store(size, Ordering::Relaxed);
    }

    /// The deepest this CPU's stack has been, in bytes, and its size (None before `set_stack`).
    ///
    /// # Safety
    /// Nothing may grow the stack below its deepest point so far while it is measured: it must be the calling
    /// CPU's own stack (interrupts on it are not concurrent), or a stack whose CPU has stopped for good
    /// ([`CpuState::Dead`]: it halts with interrupts off, NMIs run on their own IST stack).
    unsafe fn stack_used(&self) -> Option<(u64, u64)> {
        let (bottom, size) = (self.stack_bottom.load(Ordering::Relaxed), self.stack_size.load(Ordering::Relaxed));
        if bottom == 0 {
            return None;
        }
        // SAFETY: [bottom, bottom + size) is a CPU stack, identity-mapped for Keel's whole life. The scan reads
        // upwards only while bytes still hold STACK_FILL, i.e. below the deepest point the stack ever reached,
        // plus the first byte above; the caller guarantees nothing writes there meanwhile, so no read races.
        let untouched = (0..size)
            .take_while(|&i| unsafe { core::ptr::read_volatile((bottom + i) as *const u8) } == STACK_FILL)
            .count() as u64;
        Some((size - untouched, size))
    }

    const fn new() -> Self {
        Self {
            self_ptr: AtomicU64::new(0),
            index: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            state: AtomicU8::new(CpuState::Offline as u8),
            ticks: AtomicU64::new(0),
            fault_request: AtomicBool::new(false),
            svm_host_vmcb: AtomicU64::new(0),
            last_vcpu: AtomicU64::new(0),
            tss_base: AtomicU64::new(0),
            stack_bottom: AtomicU64::new(0),
            stack_size: AtomicU64::new(0),
        }
    }

    /// Linear address of this CPU's TSS.
    pub fn tss_base(&self) -> u64 {
        self.tss_base.load(Ordering::Relaxed)
    }

    /// Records this CPU's TSS.
    pub fn set_tss_base(&self, base: u64) {
        self.tss_base.store(base, Ordering::Relaxed);
    }

    /// Records `id` as the vCPU running here; true if it differs from the previous one.
    pub fn last_vcpu_swap(&self, id: u64) -> bool {
        self.last_vcpu.swap(id, Ordering::Relaxed) != id
    }

    /// This CPU's host-state VMCB (physical address).
    pub fn svm_host_vmcb(&self) -> u64 {
        self.svm_host_vmcb.load(Ordering::Relaxed)
    }

    /// Records this CPU's host-state VMCB.
    pub fn set_svm_host_vmcb(&self, pa: u64) {
        self.svm_host_vmcb.store(pa, Ordering::Relaxed);
    }

    /// Current state.
    pub fn state(&self) -> CpuState {
        match self.state.load(Ordering::Acquire) {
            1 => CpuState::Online,
            2 => CpuState::Dead,
            _ => CpuState::Offline,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: CpuState) {
        self.state.store(s as u8, Ordering::Release);
    }
}

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The block of CPU `index`.
/// Logs how deep the calling CPU's stack, and those of CPUs that stopped for good, have been. Another running
/// CPU's stack is not read: it could grow into the bytes being scanned.
pub fn log_stack_use() {
    let me = this() as *const PerCpu;
    for (i, c) in CPUS.iter().enumerate() {
        let measurable = core::ptr::eq(c, me) || c.state() == CpuState::Dead;
        if !measurable {
            if c.state() == CpuState::Online {
                crate::info!("CPU{i}: still running, stack high-water not measured");
            }
            continue;
        }
        // SAFETY: `c` is this CPU's own block, or its CPU is Dead (halted for good), as `stack_used` requires.
        if let Some((used, size)) = unsafe { c.stack_used() } {
            crate::info!("CPU{i}: stack high-water {} of {} KiB", used.div_ceil(1024), size / 1024);
        }
    }
}

pub fn cpu(index: usize) -> &'static PerCpu {
    &CPUS[index]
}

/// Installs block `index` as this CPU's (writes the GS base).
pub fn install(index: usize, apic_id: u32) {
    let c = &CPUS[index];
    c.self_ptr.store(c as *const PerCpu as u64, Ordering::Relaxed);
    c.index.store(index as u32, Ordering::Relaxed);
    c.apic_id.store(apic_id, Ordering::Relaxed);
    // SAFETY: IA32_GS_BASE exists on every x86-64 CPU; Keel never uses GS for anything else.
    unsafe { cpu::wrmsr(Msr::GsBase, c as *const PerCpu as u64) };
    ACTIVE.store(true, Ordering::Release);
}

/// This CPU's block.
pub fn this() -> &'static PerCpu {
    if !ACTIVE.load(Ordering::Acquire) {
        return &CPUS[0];
    }
    let p: u64;
    // SAFETY: once ACTIVE is set every running CPU has installed its GS base (APs do so first thing), and the
    // first word of the block is the block's own address.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags)) };
    // SAFETY: `p` is the address of an element of the static CPUS array.
    unsafe { &*(p as *const PerCpu) }
}

/// This CPU's number.
pub fn current_index() -> u32 {
    this().index.load(Ordering::Relaxed)
}

/// Iterates over every CPU that came online (including those that died since).
pub fn started() -> impl Iterator<Item = &'static PerCpu> {
    CPUS.iter().filter(|c| c.state() != CpuState::Offline)
}
