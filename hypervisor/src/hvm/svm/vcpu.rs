//! One SVM vCPU: its VMCB, I/O and MSR permission maps, the VMRUN sequence and exit decoding.

use super::vmcb::{self, exit_code as ec, EventType, Intercept1, Intercept2, IoioInfo, Segment, TlbControl, Vmcb};
use super::Capabilities;
use crate::arch::x86::cpu::efer;
use crate::arch::x86::percpu;
use crate::hvm::decode::CodeSegment;
use crate::hvm::{Event, Exit, Gprs, InitState, PagingState};
use alloc::vec::Vec;
use keel_abi::domctl::{seg, HvmHwCpu};

use crate::hvm::entry_asm::{guest_entry_asm, load_guest_gprs, store_guest_gprs};

guest_entry_asm!(
    r#"
    .section .text.svm, "ax"
    .global keel_svm_vmrun
// rdi = guest VMCB (physical), rsi = &mut Gprs, rdx = host-state VMCB (physical). The guest's RAX (Gprs offset
// {g_rax}) is not loaded here: VMRUN takes it from the VMCB, where `run` copies it.
keel_svm_vmrun:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushq %rsi
    pushq %rdi
    pushq %rdx
    clgi
    movq %rdx, %rax
    vmsave %rax
    movq %rsi, %rax
"#,
    load_guest_gprs!(),
    r#"
    movq 8(%rsp), %rax
    vmload %rax
    vmrun %rax
    vmsave %rax
    movq 16(%rsp), %rax
"#,
    store_guest_gprs!(),
    r#"
    movq 0(%rsp), %rax
    vmload %rax
    stgi
    addq $24, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .text
"#,
);

extern "C" {
    fn keel_svm_vmrun(vmcb: u64, gprs: *mut Gprs, host_vmcb: u64);
}

/// PAUSEs before a pause-filter exit (Xen's initial value).
const PAUSE_FILTER_COUNT: u16 = 4000;
const IOPM_PAGES: u64 = 3;
const MSRPM_PAGES: u64 = 2;

/// MSRs the guest reads and writes directly (their state is switched by VMLOAD/VMSAVE or lives in the VMCB).
const PASSTHROUGH_MSRS: [u32; 10] = [
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    MSR_TSC_AUX, // switched by Keel around VMRUN
];

/// Byte offset and bit of an MSR's read-intercept bit in the MSR permission map (write bit follows it).
pub fn msrpm_bit(msr: u32) -> Option<(usize, u32)> {
    let (base, first) = match msr {
        0..=0x1fff => (0, 0),
        0xc000_0000..=0xc000_1fff => (0x800, 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, 0xc001_0000),
        _ => return None,
    };
    let n = (msr - first) as usize * 2;
    Some((base + n / 8, (n % 8) as u32))
}

/// The state of one SVM vCPU.
pub struct SvmVcpu {
    vmcb_pa: u64,
    iopm_pa: u64,
    msrpm_pa: u64,
    gprs: Gprs,
    nrip: bool,
    flush_by_asid: bool,
    /// Next RIP from hardware for the last exit (NRIP save, or IOIO's EXITINFO2).
    next_rip: Option<u64>,
    /// The guest's IA32_TSC_AUX (what RDTSCP returns in ECX), which VMRUN does not switch: loaded before each
    /// entry and read back after it, where the CPU has RDTSCP.
    tsc_aux: u64,
}

/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;

/// IA32_TSC_AUX.
const MSR_TSC_AUX: u32 = 0xc000_0103;

/// Whether this machine has RDTSCP (and so IA32_TSC_AUX).
fn host_rdtscp() -> bool {
    static HAS: spin::Once<bool> = spin::Once::new();
    *HAS.call_once(|| {
        raw_cpuid::CpuId::new().get_extended_processor_and_feature_identifiers().is_some_and(|f| f.has_rdtscp())
    })
}

fn alloc_zeroed(pages: u64) -> Result<u64, &'static str> {
    crate::mm::alloc_contiguous_zeroed(pages).map_err(|_| "out of memory for SVM control structures")
}

impl SvmVcpu {
    fn vmcb(&self) -> &Vmcb {
        // SAFETY: `vmcb_pa` is a page owned by this vCPU for its whole life, identity-mapped, and only the CPU
        // running this vCPU touches it (the caller holds the vCPU exclusively).
        unsafe { &*(self.vmcb_pa as *const Vmcb) }
    }

    fn vmcb_mut(&mut self) -> &mut Vmcb {
        // SAFETY: as in `vmcb`, with `&mut self` guaranteeing exclusive access.
        unsafe { &mut *(self.vmcb_pa as *mut Vmcb) }
    }

    /// A vCPU in the given initial state.
    pub fn new(caps: &Capabilities, p2m_root: u64, init: InitState) -> Result<Self, &'static str> {
        if !caps.npt {
            return Err("HVM guests need nested paging (NPT), which this CPU lacks");
        }
        let vmcb_pa = alloc_zeroed(1)?;
        let iopm_pa = alloc_zeroed(IOPM_PAGES)?;
        let msrpm_pa = alloc_zeroed(MSRPM_PAGES)?;
        // SAFETY: freshly allocated, identity-mapped, exclusively ours.
        unsafe {
            core::ptr::write_bytes(iopm_pa as *mut u8, 0xff, (IOPM_PAGES * 4096) as usize);
            core::ptr::write_bytes(msrpm_pa as *mut u8, 0xff, (MSRPM_PAGES * 4096) as usize);
        }
        for msr in PASSTHROUGH_MSRS.iter().chain(&[0x176u32]) {
            if let Some((byte, bit)) = msrpm_bit(*msr) {
                // SAFETY: `byte` is inside the 8 KiB map just allocated.
                unsafe { *((msrpm_pa as usize + byte) as *mut u8) &= !(0b11 << bit) };
            }
        }
        let mut v = Self {
            vmcb_pa,
            iopm_pa,
            msrpm_pa,
            gprs: Gprs::default(),
            nrip: caps.nrip_save,
            flush_by_asid: caps.flush_by_asid,
            next_rip: None,
            tsc_aux: 0,
        };
        let (iopm, msrpm) = (iopm_pa, msrpm_pa);
        let c = v.vmcb_mut();
        c.intercept_exceptions = 1 << crate::hvm::vector::UD | 1 << 18; // #UD (VMCALL), #MC
        c.intercept1 = (Intercept1::INTR
            | Intercept1::NMI
            | Intercept1::SMI
            | Intercept1::INIT
            | Intercept1::CPUID
            | Intercept1::HLT
            | Intercept1::INVD
            | Intercept1::INVLPGA
            | Intercept1::IOIO_PROT
            | Intercept1::MSR_PROT
            | Intercept1::TASK_SWITCH
            | Intercept1::FERR_FREEZE
            | Intercept1::SHUTDOWN)
            .bits();
        c.intercept2 = (Intercept2::VMRUN
            | Intercept2::VMMCALL
            | Intercept2::VMLOAD
            | Intercept2::VMSAVE
            | Intercept2::STGI
            | Intercept2::CLGI
            | Intercept2::SKINIT
            | Intercept2::ICEBP
            | Intercept2::MONITOR
            | Intercept2::MWAIT
            | Intercept2::XSETBV)
            .bits();
        if caps.pause_filter {
            // A guest spinning on PAUSE (a lock holder descheduled, an AP parked with interrupts off) exits after
            // this many PAUSEs and gives its CPU away, as Xen does with the pause filter.
            c.pause_filter_count = PAUSE_FILTER_COUNT;
            c.intercept1 |= Intercept1::PAUSE.bits();
        }
        c.iopm_base_pa = iopm;
        c.msrpm_base_pa = msrpm;
        c.guest_asid = 1;
        c.tlb_control = TlbControl::FlushAll as u8;
        c.vintr = vmcb::vintr::V_INTR_MASKING;
        c.np_control = 1;
        c.n_cr3 = p2m_root;
        c.ldtr = Segment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 };
        c.gdtr = Segment { limit: 0xffff, ..Default::default() };
        c.idtr = Segment { limit: 0xffff, ..Default::default() };
        c.cr4 = 0;
        c.cr3 = 0;
        c.efer = efer::SVME;
        c.rflags = 0x2;
        c.rsp = 0;
        match &init {
            InitState::Pvh { entry, .. } => {
                // PVH entry state (xen-abi.md §1.2).
                c.cs = Segment::flat(0x08, 0xc9b);
                for s in [&mut c.ds, &mut c.es, &mut c.ss, &mut c.fs, &mut c.gs] {
                    *s = Segment::flat(0x10, 0xc93);
                }
                c.tr = Segment { selector: 0x18, attrib: 0x8b, limit: 0x67, base: 0 };
                c.cr0 = 0x11; // PE | ET
                c.rip = *entry as u64;
            }
            InitState::Sipi { vector } => {
                // Real mode at vector:0000, as after INIT-SIPI on hardware.
                c.cs = Segment {
                    selector: (*vector as u16) << 8,
                    attrib: 0x9b,
                    limit: 0xffff,
                    base: (*vector as u64) << 12,
                };
                for s in [&mut c.ds, &mut c.es, &mut c.ss, &mut c.fs, &mut c.gs] {
                    *s = Segment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 };
                }
                c.tr = Segment { selector: 0, attrib: 0x8b, limit: 0xffff, base: 0 };
                c.cr0 = 0x6000_0010; // CD | NW | ET: the reset value
                c.rip = 0;
            }
            InitState::Restore(_) => {}
        }
        if let InitState::Pvh { start_info, .. } = init {
            v.gprs.rbx = start_info as u64;
        }
        let c = v.vmcb_mut();
        c.dr6 = 0xffff_0ff0;
        c.dr7 = 0x400;
        c.g_pat = 0x0007_0406_0007_0406;
        c.cpl = 0;
        if let InitState::Restore(saved) = &init {
            v.load_cpu(saved);
        }
        Ok(v)
    }

    /// Loads a save record (the inverse of [`Self::save_cpu`]): registers, RIP/RSP/RFLAGS, control and debug
    /// registers, segments (the VMCB keeps Xen's packed attributes), descriptor tables, the SYSENTER/SYSCALL MSRs,
    /// EFER (with SVME, which VMRUN needs), TSC_AUX, the privilege level (SS.DPL, as the VMCB's CPL must be) and
    /// an event that was waiting for injection. The record was checked by the caller; what VMRUN still refuses
    /// ends the domain at its first entry, never Keel.
    fn load_cpu(&mut self, s: &HvmHwCpu) {
        self.gprs = Gprs::from_record(s);
        // TSC_AUX goes into the host MSR around each entry: its upper half must stay 0 there.
        self.tsc_aux = s.msr_tsc_aux & 0xffff_ffff;
        let c = self.vmcb_mut();
        (c.rsp, c.rip, c.rflags) = (s.rsp, s.rip, s.rflags | 2);
        (c.cr0, c.cr2, c.cr3, c.cr4) = (s.cr0, s.cr2, s.cr3, s.cr4);
        (c.dr6, c.dr7) = (s.dr6, s.dr7);
        let sg = |i: usize| Segment {
            selector: s.sel[i] as u16,
            attrib: s.arbytes[i] as u16,
            limit: s.limit[i],
            base: s.base[i],
        };
        (c.cs, c.ds, c.es, c.fs, c.gs) = (sg(seg::CS), sg(seg::DS), sg(seg::ES), sg(seg::FS), sg(seg::GS));
        (c.ss, c.tr, c.ldtr) = (sg(seg::SS), sg(seg::TR), sg(seg::LDTR));
        c.idtr = Segment { limit: s.limit[seg::IDTR], base: s.base[seg::IDTR], ..Default::default() };
        c.gdtr = Segment { limit: s.limit[seg::GDTR], base: s.base[seg::GDTR], ..Default::default() };
        (c.sysenter_cs, c.sysenter_esp, c.sysenter_eip) = (s.sysenter_cs, s.sysenter_esp, s.sysenter_eip);
        c.kernel_gs_base = s.shadow_gs;
        (c.lstar, c.star, c.cstar, c.sfmask) = (s.msr_lstar, s.msr_star, s.msr_cstar, s.msr_syscall_mask);
        c.efer = s.msr_efer | efer::SVME;
        c.cpl = ((s.arbytes[seg::SS] >> 5) & 3) as u8;
        c.event_inj = if s.pending_event & (1 << 31) != 0 {
            u64::from(s.pending_event) | u64::from(s.error_code) << 32
        } else {
            0
        };
        c.tlb_control = TlbControl::FlushAll as u8;
    }

    /// Enters the guest and decodes the exit.
    pub fn run(&mut self) -> Exit {
        let host = percpu::this().svm_host_vmcb();
        let rax = self.gprs.rax;
        self.vmcb_mut().rax = rax;
        let aux = host_rdtscp();
        if aux {
            // SAFETY: IA32_TSC_AUX exists with RDTSCP (checked); Keel itself never reads it.
            unsafe { crate::arch::x86::cpu::wrmsr_raw(MSR_TSC_AUX, self.tsc_aux) };
        }
        // SAFETY: the VMCB is fully initialised and consistent (EFER.SVME set, VMRUN intercepted), its permission
        // maps and nested page table are live for the vCPU's lifetime, `host` is this CPU's host-state page, SVM
        // is enabled on this CPU (VM_HSAVE_PA set), and `gprs` is exclusively borrowed.
        unsafe { keel_svm_vmrun(self.vmcb_pa, &mut self.gprs, host) };
        if aux {
            // SAFETY: IA32_TSC_AUX exists with RDTSCP (checked).
            self.tsc_aux = unsafe { crate::arch::x86::cpu::rdmsr_raw(MSR_TSC_AUX) };
        }
        let c = self.vmcb_mut();
        let rax = c.rax;
        c.tlb_control = TlbControl::None as u8;
        c.event_inj = if c.exit_int_info & (1 << 31) != 0 {
            // An event was being delivered when the exit happened: deliver it again.
            c.exit_int_info
        } else {
            0
        };
        self.gprs.rax = rax;
        let (code, info1, info2) = (self.vmcb().exit_code, self.vmcb().exit_info1, self.vmcb().exit_info2);
        self.next_rip = if self.nrip { Some(self.vmcb().next_rip) } else { None };
        match code {
            ec::CPUID => Exit::Cpuid,
            ec::HLT => Exit::Hlt,
            ec::PAUSE => Exit::Pause,
            ec::VMMCALL => Exit::Hypercall,
            ec::MSR => Exit::Msr { write: info1 & 1 != 0 },
            ec::IOIO => {
                let io = IoioInfo::decode(info1);
                self.next_rip = Some(info2);
                Exit::Io { port: io.port, size: io.size, input: io.input, string: io.string, rep: io.rep }
            }
            ec::NPF => Exit::NestedPageFault { gpa: info2, write: info1 & 2 != 0, fetch: info1 & 16 != 0 },
            ec::INTR => Exit::ExternalInterrupt,
            ec::NMI => Exit::Nmi,
            ec::VINTR => Exit::InterruptWindow,
            ec::INIT => Exit::Init,
            ec::SHUTDOWN => Exit::TripleFault,
            ec::SMI => Exit::ExternalInterrupt,
            ec::VMRUN | ec::VMLOAD | ec::VMSAVE | ec::STGI | ec::CLGI | ec::SKINIT => Exit::VirtInstruction,
            ec::INVALID | ec::INVALID_32 => Exit::InvalidState { detail: code },
            c if (ec::EXCP_BASE..ec::EXCP_BASE + 32).contains(&c) => {
                let vector = (c - ec::EXCP_BASE) as u8;
                if vector == crate::hvm::vector::UD {
                    Exit::InvalidOpcode
                } else {
                    let has_error = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
                    Exit::Exception { vector, error: has_error.then_some(info1 as u32) }
                }
            }
            other => Exit::Unknown { code: other },
        }
    }

    pub fn gprs(&mut self) -> &mut Gprs {
        &mut self.gprs
    }

    pub fn rip(&self) -> u64 {
        self.vmcb().rip
    }

    pub fn set_rip(&mut self, rip: u64) {
        self.vmcb_mut().rip = rip;
    }

    pub fn rflags(&self) -> u64 {
        self.vmcb().rflags
    }

    pub fn paging(&self) -> PagingState {
        let c = self.vmcb();
        PagingState {
            cr0: c.cr0,
            cr3: c.cr3,
            cr4: c.cr4,
            efer: c.efer,
            long_mode_code: c.cs.attrib & (1 << 9) != 0,
            cpl: c.cpl,
        }
    }

    pub fn next_rip(&self) -> Option<u64> {
        self.next_rip
    }

    pub fn advance_to(&mut self, next: u64) {
        let c = self.vmcb_mut();
        c.rip = next;
        c.interrupt_shadow = 0;
    }

    pub fn code_segment(&self) -> CodeSegment {
        let c = self.vmcb();
        CodeSegment::new(c.cs.base, c.cs.attrib & (1 << 9) != 0, c.cs.attrib & (1 << 10) != 0, c.efer & EFER_LMA != 0)
    }

    pub fn inject(&mut self, e: Event) -> bool {
        if self.vmcb().event_inj & (1 << 31) != 0 {
            return false;
        }
        self.vmcb_mut().event_inj = match e {
            Event::Exception { vector, error } => vmcb::event_inj(vector, EventType::Exception, error),
            Event::Interrupt(v) => vmcb::event_inj(v, EventType::Intr, None),
            Event::Nmi => vmcb::event_inj(2, EventType::Nmi, None),
        };
        true
    }

    pub fn interruptible(&self) -> bool {
        let c = self.vmcb();
        c.rflags & (1 << 9) != 0 && c.interrupt_shadow & 1 == 0 && c.event_inj & (1 << 31) == 0
    }

    pub fn request_interrupt_window(&mut self, on: bool) {
        let c = self.vmcb_mut();
        if on {
            // A dummy virtual interrupt makes the CPU exit (VINTR) as soon as the guest can take one.
            c.vintr |= vmcb::vintr::V_IRQ | vmcb::vintr::V_IGN_TPR | 0xf << vmcb::vintr::PRIO_SHIFT;
            c.intercept1 |= Intercept1::VINTR.bits();
        } else {
            c.vintr &= !(vmcb::vintr::V_IRQ | vmcb::vintr::V_IGN_TPR | 0xf << vmcb::vintr::PRIO_SHIFT);
            c.intercept1 &= !Intercept1::VINTR.bits();
        }
    }

    /// See [`crate::hvm::HwVcpu::corrupt_for_test`]: EFER.SVME, which VMRUN requires, is cleared.
    pub fn corrupt_for_test(&mut self) {
        self.vmcb_mut().efer &= !efer::SVME;
    }

    pub fn idtr_base(&self) -> u64 {
        self.vmcb().idtr.base
    }

    pub fn cr2(&self) -> u64 {
        self.vmcb().cr2
    }

    pub fn flush_tlb(&mut self) {
        let flush_by_asid = self.flush_by_asid;
        self.vmcb_mut().tlb_control =
            if flush_by_asid { TlbControl::FlushAsid as u8 } else { TlbControl::FlushAll as u8 };
    }

    pub fn read_msr(&self, msr: u32) -> Option<u64> {
        let c = self.vmcb();
        Some(match msr {
            0xc000_0080 => c.efer & !efer::SVME,
            0x277 => c.g_pat,
            0x176 => c.sysenter_eip,
            _ => return None,
        })
    }

    pub fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        use crate::hvm::msr;
        let c = self.vmcb_mut();
        match msr {
            // The guest never sees or clears SVME; VMRUN requires it. A refused value is a #GP (false), never a
            // failed VMRUN.
            msr::EFER => match msr::check_efer_write(c.efer & !efer::SVME, value, c.cr0, msr::guest_efer_bits()) {
                Ok(v) => c.efer = v | efer::SVME,
                Err(e) => {
                    crate::debug!("guest EFER write {value:#x} refused: {e:?}");
                    return false;
                }
            },
            msr::PAT if msr::pat_valid(value) => c.g_pat = value,
            _ => return false,
        }
        true
    }

    /// A one-paragraph dump of the guest state, for crash reports.
    /// See [`crate::hvm::HwVcpu::save_cpu`]. Everything is in the VMCB (VMSAVE after each exit stores FS/GS/TR/LDTR
    /// and the SYSCALL/SYSENTER MSRs there) or in this structure.
    pub fn save_cpu(&self, out: &mut HvmHwCpu) {
        let c = self.vmcb();
        self.gprs.save_into(out);
        out.rsp = c.rsp;
        out.rip = c.rip;
        out.rflags = c.rflags;
        (out.cr0, out.cr2, out.cr3, out.cr4) = (c.cr0, c.cr2, c.cr3, c.cr4);
        (out.dr6, out.dr7) = (c.dr6, c.dr7);
        let segs = [(seg::CS, &c.cs), (seg::DS, &c.ds), (seg::ES, &c.es), (seg::FS, &c.fs), (seg::GS, &c.gs)];
        let segs = segs.into_iter().chain([(seg::SS, &c.ss), (seg::TR, &c.tr), (seg::LDTR, &c.ldtr)]);
        for (i, s) in segs {
            out.sel[i] = u32::from(s.selector);
            out.limit[i] = s.limit;
            out.base[i] = s.base;
            // The VMCB keeps attributes in Xen's packed form already.
            out.arbytes[i] = u32::from(s.attrib);
        }
        for (i, s) in [(seg::IDTR, &c.idtr), (seg::GDTR, &c.gdtr)] {
            out.limit[i] = s.limit;
            out.base[i] = s.base;
        }
        (out.sysenter_cs, out.sysenter_esp, out.sysenter_eip) = (c.sysenter_cs, c.sysenter_esp, c.sysenter_eip);
        out.shadow_gs = c.kernel_gs_base;
        (out.msr_lstar, out.msr_star, out.msr_cstar, out.msr_syscall_mask) = (c.lstar, c.star, c.cstar, c.sfmask);
        out.msr_efer = c.efer & !efer::SVME;
        out.msr_tsc_aux = self.tsc_aux;
        out.tsc = crate::arch::x86::cpu::rdtsc().wrapping_add(c.tsc_offset);
        if c.event_inj & (1 << 31) != 0 {
            out.pending_event = c.event_inj as u32;
            out.error_code = (c.event_inj >> 32) as u32;
        }
    }

    pub fn describe(&self) -> alloc::string::String {
        let c = self.vmcb();
        alloc::format!(
            "CS={:#x}/{:#x} RIP={:#x} RSP={:#x} RFLAGS={:#x} CR0={:#x} CR2={:#x} CR3={:#x} CR4={:#x} EFER={:#x} \
             IDTR={:#x}/{:#x} GDTR={:#x}/{:#x} TR={:#x}/{:#x}/{:#x} SS={:#x}/{:#x} CPL={} shadow={:#x} \
             exit_int_info={:#x} event_inj={:#x} vintr={:#x} GS.base={:#x} KGS={:#x}",
            c.cs.selector,
            c.cs.attrib,
            c.rip,
            c.rsp,
            c.rflags,
            c.cr0,
            c.cr2,
            c.cr3,
            c.cr4,
            c.efer,
            c.idtr.base,
            c.idtr.limit,
            c.gdtr.base,
            c.gdtr.limit,
            c.tr.selector,
            c.tr.attrib,
            c.tr.base,
            c.ss.selector,
            c.ss.attrib,
            c.cpl,
            c.interrupt_shadow,
            c.exit_int_info,
            c.event_inj,
            c.vintr,
            c.gs.base,
            c.kernel_gs_base
        )
    }

    pub fn frames(&self) -> Vec<u64> {
        let mut v = alloc::vec![self.vmcb_pa];
        v.extend((0..IOPM_PAGES).map(|i| self.iopm_pa + i * 4096));
        v.extend((0..MSRPM_PAGES).map(|i| self.msrpm_pa + i * 4096));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_permission_map_offsets() {
        assert_eq!(msrpm_bit(0), Some((0, 0)));
        assert_eq!(msrpm_bit(0x174), Some((0x5d, 0)));
        assert_eq!(msrpm_bit(0xc000_0080), Some((0x820, 0)));
        assert_eq!(msrpm_bit(0xc000_0101), Some((0x840, 2)));
        assert_eq!(msrpm_bit(0xc001_0117), Some((0x1045, 6)));
        assert_eq!(msrpm_bit(0x4000_0000), None);
    }
}
