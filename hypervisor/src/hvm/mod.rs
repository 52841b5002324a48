//! Hardware virtualization: which extension this machine has, and turning it on per CPU.
//!
//! The vendor is chosen once at boot from CPUID; common code sees only [`Support`]. The VMCB/VMCS live in the
//! vendor modules and nowhere else.

pub mod decode;
mod entry_asm;
pub mod exit;
pub mod ioport;
pub mod msix;
pub mod msr;
pub mod svm;
pub mod vioapic;
pub mod vlapic;
pub mod vmx;
pub mod vpci;
pub mod walk;

pub use exit::Exit;

use crate::arch::x86::cpu::Vendor;
use alloc::string::String;

/// What the boot CPU offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// AMD-V.
    Svm(svm::Capabilities),
    /// Intel VT-x.
    Vmx(vmx::Capabilities),
    /// Neither usable; the reason is printed once.
    Unavailable(String),
}

static SUPPORT: spin::Once<Support> = spin::Once::new();

/// Records what the boot CPU offers (once, at boot) and returns it.
pub fn set_support(s: Support) -> &'static Support {
    SUPPORT.call_once(|| s)
}

/// What the machine offers, once detected.
pub fn support() -> Option<&'static Support> {
    SUPPORT.get()
}

/// What the machine offers for guests: [`support`], or [`test_machine`] in host unit tests.
pub fn machine() -> Option<Support> {
    #[cfg(test)]
    {
        Some(test_machine())
    }
    #[cfg(not(test))]
    {
        support().cloned()
    }
}

/// The machine host unit tests pretend to run on: SVM with nested paging (what a domain needs).
#[cfg(test)]
pub fn test_machine() -> Support {
    Support::Svm(svm::Capabilities { npt: true, ..Default::default() })
}

impl Support {
    /// Whether guests may execute RDTSCP and INVPCID natively. SVM never intercepts them; VMX raises #UD unless
    /// the matching secondary control is on, which Keel sets wherever the CPU allows it. What a guest may not
    /// execute, its CPUID does not offer.
    pub fn guest_rdtscp_invpcid(&self) -> (bool, bool) {
        match self {
            Support::Svm(_) => (true, true),
            Support::Vmx(c) => {
                (c.secondary & vmx::vcpu::ctl::SEC_RDTSCP != 0, c.secondary & vmx::vcpu::ctl::SEC_INVPCID != 0)
            }
            Support::Unavailable(_) => (false, false),
        }
    }
}

/// Detects the extension on the boot CPU. `allowed` is the `hvm=` option.
pub fn detect(vendor: Vendor, allowed: bool) -> Support {
    if !allowed {
        return Support::Unavailable("disabled by hvm=off on the command line".into());
    }
    let c = raw_cpuid::CpuId::new();
    let has_vmx = c.get_feature_info().is_some_and(|f| f.has_vmx());
    let has_svm = c.get_extended_processor_and_feature_identifiers().is_some_and(|f| f.has_svm());
    match vendor {
        Vendor::Amd if has_svm => Support::Svm(svm::Capabilities::read()),
        Vendor::Intel if has_vmx => Support::Vmx(vmx::Capabilities::read()),
        _ if has_svm => Support::Svm(svm::Capabilities::read()),
        _ if has_vmx => Support::Vmx(vmx::Capabilities::read()),
        _ => Support::Unavailable("the CPU has neither VMX nor SVM".into()),
    }
}

/// Logs the summary of the boot CPU's features (once).
pub fn log_summary(s: &Support) {
    match s {
        Support::Svm(c) => c.log_summary(),
        Support::Vmx(c) => c.log_summary(),
        Support::Unavailable(why) => crate::warning!("HVM/PVH guests are unavailable: {why}"),
    }
}

/// Enables the extension on the calling CPU and logs the per-CPU line. On failure HVM stays off on this CPU and
/// the reason is logged; Keel carries on.
pub fn enable_this_cpu(s: &Support, cpu: u32) -> bool {
    let r = match s {
        Support::Svm(c) => svm::enable_this_cpu(c, cpu),
        Support::Vmx(c) => vmx::enable_this_cpu(c, cpu),
        Support::Unavailable(_) => return false,
    };
    match r {
        Ok(()) => true,
        Err(e) => {
            crate::error!("CPU{cpu}: hardware virtualization not enabled: {e}");
            false
        }
    }
}

/// A guest's general-purpose registers as the entry code saves them (RAX and RSP live in the VMCB on AMD; the
/// backend keeps these copies in sync around each entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gprs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl Gprs {
    /// The register with x86 number `n` (0 RAX … 15 R15); None for RSP (4), which lives in the VMCB/VMCS.
    pub fn by_number(&mut self, n: u8) -> Option<&mut u64> {
        Some(match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return None,
        })
    }

    /// Copies the registers into a save record (RSP is the caller's: it lives in the VMCB/VMCS).
    pub fn save_into(&self, c: &mut keel_abi::domctl::HvmHwCpu) {
        (c.rax, c.rbx, c.rcx, c.rdx) = (self.rax, self.rbx, self.rcx, self.rdx);
        (c.rbp, c.rsi, c.rdi) = (self.rbp, self.rsi, self.rdi);
        c.r8_r15 = [self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15];
    }

    /// The registers of a save record (RSP is the caller's).
    pub fn from_record(c: &keel_abi::domctl::HvmHwCpu) -> Self {
        let [r8, r9, r10, r11, r12, r13, r14, r15] = c.r8_r15;
        Self {
            rax: c.rax,
            rbx: c.rbx,
            rcx: c.rcx,
            rdx: c.rdx,
            rsi: c.rsi,
            rdi: c.rdi,
            rbp: c.rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        }
    }
}

/// The control state the page-table walker and the instruction decoder need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS.L: 64-bit code.
    pub long_mode_code: bool,
    /// Current privilege level.
    pub cpl: u8,
}

/// The architectural state a vCPU starts in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitState {
    /// PVH entry: 32-bit protected mode, paging off, flat segments, EIP = `entry`, EBX = `start_info`.
    Pvh { entry: u32, start_info: u32 },
    /// After INIT and a start-up IPI: real mode at `vector << 12` (CS = vector << 8, IP = 0).
    Sipi { vector: u8 },
    /// A saved vCPU resumed (`xm restore`): the CPU record's registers, control registers, segments with their
    /// hidden parts, descriptor tables, system-call MSRs, EFER and a pending event, as checked by the caller
    /// (`hypercall::domctl::hvmctx`). Its FPU image is loaded by [`crate::domain::start_vcpu`]; the guest keeps
    /// reading the host's TSC (Keel gives guests no TSC offset), so a restore on the same host continues it.
    Restore(alloc::boxed::Box<keel_abi::domctl::HvmHwCpu>),
}

/// An event to deliver to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A hardware exception, with its error code when it has one.
    Exception { vector: u8, error: Option<u32> },
    /// An external (virtual) interrupt.
    Interrupt(u8),
    /// An NMI.
    Nmi,
}

/// Architectural exception vectors used when injecting.
pub mod vector {
    pub const UD: u8 = 6;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
}

/// The hardware side of one vCPU, whichever vendor runs it. Common code uses only these methods.
pub enum HwVcpu {
    /// AMD SVM.
    Svm(alloc::boxed::Box<svm::SvmVcpu>),
    /// Intel VMX.
    Vmx(alloc::boxed::Box<vmx::VmxVcpu>),
}

macro_rules! dispatch {
    ($self:ident, $v:ident => $e:expr) => {
        match $self {
            HwVcpu::Svm($v) => $e,
            HwVcpu::Vmx($v) => $e,
        }
    };
}

impl HwVcpu {
    /// A vCPU of the given vendor in `init` state.
    pub fn new(support: &Support, p2m_root: u64, init: InitState) -> Result<Self, &'static str> {
        match support {
            Support::Svm(caps) => Ok(HwVcpu::Svm(alloc::boxed::Box::new(svm::SvmVcpu::new(caps, p2m_root, init)?))),
            Support::Vmx(caps) => Ok(HwVcpu::Vmx(alloc::boxed::Box::new(vmx::VmxVcpu::new(caps, p2m_root, init)?))),
            Support::Unavailable(_) => Err("hardware virtualization is unavailable"),
        }
    }

    /// Prepares this CPU to run the vCPU (VMX: VMPTRLD); called when a scheduling slice starts.
    pub fn load(&mut self) {
        if let HwVcpu::Vmx(v) = self {
            v.load();
        }
    }

    /// Releases the vCPU from this CPU (VMX: VMCLEAR) so that another CPU can run it next.
    pub fn unload(&mut self) {
        if let HwVcpu::Vmx(v) = self {
            v.unload();
        }
    }

    /// Enters the guest until the next exit.
    pub fn run(&mut self) -> Exit {
        dispatch!(self, v => v.run())
    }

    /// The guest's general-purpose registers.
    pub fn gprs(&mut self) -> &mut Gprs {
        dispatch!(self, v => v.gprs())
    }

    /// Guest RIP.
    pub fn rip(&self) -> u64 {
        dispatch!(self, v => v.rip())
    }

    /// Sets guest RIP.
    pub fn set_rip(&mut self, rip: u64) {
        dispatch!(self, v => v.set_rip(rip))
    }

    /// Guest RFLAGS.
    pub fn rflags(&self) -> u64 {
        dispatch!(self, v => v.rflags())
    }

    /// Paging-relevant control state.
    pub fn paging(&self) -> PagingState {
        dispatch!(self, v => v.paging())
    }

    /// The RIP after the instruction that caused the last exit, where the hardware reports it (VMX: the exit's
    /// instruction length; SVM: NRIP save, and always for I/O exits). `None` means the caller must decode the
    /// instruction at RIP ([`decode`]) to step over it; nobody guesses a length.
    pub fn next_rip(&self) -> Option<u64> {
        dispatch!(self, v => v.next_rip())
    }

    /// Completes an emulated instruction: RIP becomes `next` and the interrupt shadow (STI / MOV SS blocking),
    /// which lasts for one instruction, ends.
    pub fn advance_to(&mut self, next: u64) {
        dispatch!(self, v => v.advance_to(next))
    }

    /// The code segment the guest runs in (base and 16/32/64-bit), for decoding the instruction at RIP.
    pub fn code_segment(&self) -> decode::CodeSegment {
        dispatch!(self, v => v.code_segment())
    }

    /// Queues an event for the next entry. Returns false if an event is already queued.
    pub fn inject(&mut self, e: Event) -> bool {
        dispatch!(self, v => v.inject(e))
    }

    /// Whether the guest can take an external interrupt right now.
    pub fn interruptible(&self) -> bool {
        dispatch!(self, v => v.interruptible())
    }

    /// Asks for an exit as soon as the guest can take an interrupt.
    pub fn request_interrupt_window(&mut self, on: bool) {
        dispatch!(self, v => v.request_interrupt_window(on))
    }

    /// Requests a TLB flush of this guest's translations on the next entry.
    pub fn flush_tlb(&mut self) {
        dispatch!(self, v => v.flush_tlb())
    }

    /// Test mode only (a test guest's `corrupt=guest-state`): makes the next entry fail its consistency checks, so
    /// that the tests see how an entry failure is diagnosed and contained. VMX clears RFLAGS bit 1, SVM clears
    /// EFER.SVME.
    pub fn corrupt_for_test(&mut self) {
        dispatch!(self, v => v.corrupt_for_test())
    }

    /// The guest's IDTR base (for diagnostics).
    pub fn idtr_base(&self) -> u64 {
        dispatch!(self, v => v.idtr_base())
    }

    /// The guest's CR2, the address of its last page fault (for diagnostics).
    pub fn cr2(&self) -> u64 {
        dispatch!(self, v => v.cr2())
    }

    /// Reads a guest MSR that the hardware keeps in its control structure, or None.
    pub fn read_msr(&self, msr: u32) -> Option<u64> {
        dispatch!(self, v => v.read_msr(msr))
    }

    /// Writes a guest MSR that the hardware keeps in its control structure; false if it is not one of those.
    pub fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        dispatch!(self, v => v.write_msr(msr, value))
    }

    /// The vCPU's architectural state as Xen's HVM CPU save record (`struct hvm_hw_cpu`, without the FPU image,
    /// which the caller keeps): general-purpose registers, RIP, RFLAGS, the guest-visible control registers,
    /// DR6/DR7, segment registers with their hidden parts, GDTR/IDTR, the SYSENTER/SYSCALL MSRs, EFER, TSC_AUX,
    /// the TSC the guest would read now, and an event waiting for injection. DR0-DR3 are reported as 0: Keel does
    /// not switch them between guests. Call it only while the vCPU is off every CPU (its domain paused).
    pub fn save_cpu(&self) -> keel_abi::domctl::HvmHwCpu {
        let mut c = <keel_abi::domctl::HvmHwCpu as keel_abi::Zeroable>::zeroed();
        dispatch!(self, v => v.save_cpu(&mut c));
        c
    }

    /// The guest state as text, for crash reports.
    pub fn describe(&self) -> alloc::string::String {
        dispatch!(self, v => v.describe())
    }

    /// Physical addresses of the pages this vCPU's hardware state occupies (freed by the caller on destroy).
    pub fn frames(&self) -> alloc::vec::Vec<u64> {
        dispatch!(self, v => v.frames())
    }
}
