//! One VMX vCPU: its VMCS (typed fields in `vmcs`), I/O and MSR bitmaps, controls computed from the (true)
//! capability MSRs, EPT, unrestricted guest (real-mode AP start), VMLAUNCH/VMRESUME, exit decoding, event
//! injection. Entry failures are diagnosed by error name or by the failing guest-state check.

use super::guest_state::{self, GuestState, Seg};
use super::vmcs::{self, *};
use super::{Capabilities, Controls, FixedMsr};
use crate::arch::x86::cpu::{self, Msr};
use crate::hvm::decode::CodeSegment;
use crate::hvm::{Event, Exit, Gprs, InitState, PagingState};
use alloc::vec::Vec;
use keel_abi::domctl::{seg, HvmHwCpu};

use crate::hvm::entry_asm::{guest_entry_asm, load_guest_gprs, store_guest_gprs};

guest_entry_asm!(
    r#"
    .section .text.vmx, "ax"
    .global keel_vmx_run
// rdi = &mut Gprs, rsi = launched (0: VMLAUNCH, else VMRESUME). Returns 0 after a VM exit, 1 if the
// instruction failed (VMfail).
keel_vmx_run:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushq %rdi
    movq $0x6c14, %rdx
    vmwrite %rsp, %rdx
    movq %rdi, %rax
    testq %rsi, %rsi
"#,
    // MOVs leave the flags of the TEST above alone.
    load_guest_gprs!(),
    r#"
    movq {g_rax}(%rax), %rax
    jnz 1f
    vmlaunch
    jmp 2f
1:  vmresume
2:  addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    movl $1, %eax
    ret

    .global keel_vmx_exit
keel_vmx_exit:
    pushq %rax
    movq 8(%rsp), %rax
"#,
    store_guest_gprs!(),
    r#"
    popq %rbx
    movq %rbx, {g_rax}(%rax)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    xorl %eax, %eax
    ret
    .text
"#,
);

extern "C" {
    fn keel_vmx_run(gprs: *mut Gprs, launched: u64) -> u64;
    fn keel_vmx_exit();
}

/// Control bits Keel sets.
pub mod ctl {
    pub const PIN_EXT_INT: u32 = 1 << 0;
    pub const PIN_NMI: u32 = 1 << 3;
    pub const PROC_INTR_WINDOW: u32 = 1 << 2;
    pub const PROC_HLT: u32 = 1 << 7;
    pub const PROC_CR3_LOAD: u32 = 1 << 15;
    pub const PROC_CR3_STORE: u32 = 1 << 16;
    pub const PROC_IO_BITMAPS: u32 = 1 << 25;
    pub const PROC_MSR_BITMAPS: u32 = 1 << 28;
    pub const PROC_MONITOR: u32 = 1 << 29;
    pub const PROC_PAUSE: u32 = 1 << 30;
    pub const PROC_MWAIT: u32 = 1 << 10;
    pub const PROC_SECONDARY: u32 = 1 << 31;
    pub const SEC_EPT: u32 = 1 << 1;
    pub const SEC_RDTSCP: u32 = 1 << 3;
    pub const SEC_VPID: u32 = 1 << 5;
    pub const SEC_UNRESTRICTED: u32 = 1 << 7;
    pub const SEC_PAUSE_LOOP: u32 = 1 << 10;
    pub const SEC_INVPCID: u32 = 1 << 12;
    pub const EXIT_HOST_64: u32 = 1 << 9;
    pub const EXIT_SAVE_PAT: u32 = 1 << 18;
    pub const EXIT_LOAD_PAT: u32 = 1 << 19;
    pub const EXIT_SAVE_EFER: u32 = 1 << 20;
    pub const EXIT_LOAD_EFER: u32 = 1 << 21;
    pub const ENTRY_IA32E: u32 = 1 << 9;
    pub const ENTRY_LOAD_PAT: u32 = 1 << 14;
    pub const ENTRY_LOAD_EFER: u32 = 1 << 15;
}

/// Applies a capability MSR to a wanted control value: allowed-0 bits forced on, allowed-1 bits kept.
pub fn adjust(wanted: u32, cap: u64) -> u32 {
    (wanted | cap as u32) & (cap >> 32) as u32
}

/// The VPID every guest vCPU runs with (0 is the host's).
const VPID: u64 = 1;
/// PAUSE-loop exiting: PAUSEs closer together than this many TSC cycles are one loop (Xen's default)...
const PLE_GAP: u64 = 128;
/// ...and a loop longer than this many cycles exits (Xen's default).
const PLE_WINDOW: u64 = 4096;

/// MSRs whose state VMX does not switch; Keel swaps them when vCPUs change CPUs.
const SWAPPED_MSRS: [u32; 6] = [0xc000_0102, 0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, MSR_TSC_AUX];
/// IA32_TSC_AUX (what RDTSCP returns in ECX); it exists where the RDTSCP control can be enabled.
const MSR_TSC_AUX: u32 = 0xc000_0103;

/// One VMX vCPU.
pub struct VmxVcpu {
    vmcs_pa: u64,
    io_a: u64,
    io_b: u64,
    msr_bitmap: u64,
    eptp: u64,
    gprs: Gprs,
    launched: bool,
    exit_len: u64,
    flush: bool,
    cr0_fixed: (u64, u64),
    cr4_fixed: (u64, u64),
    swapped: [u64; 6],
    /// Break the guest state before the next entry ([`Self::corrupt_for_test`]).
    corrupt: bool,
    /// The guest's CR2: VMX does not switch it, so it is put back before each entry (another vCPU may have run on
    /// this CPU since) and read after each exit.
    cr2: u64,
    /// Guest translations are tagged with [`VPID`].
    vpid: bool,
    /// Guests may run RDTSCP (and IA32_TSC_AUX is switched).
    rdtscp: bool,
}

fn alloc(pages: u64) -> Result<u64, &'static str> {
    crate::mm::alloc_contiguous_zeroed(pages).map_err(|_| "out of memory for VMX control structures")
}

fn set_bitmap_bit(base: u64, bit: u64, on: bool) {
    let p = (base + bit / 8) as *mut u8;
    // SAFETY: `base` is a bitmap page owned by this vCPU; `bit / 8` stays inside it (callers pass < 32768).
    unsafe {
        if on {
            *p |= 1 << (bit % 8);
        } else {
            *p &= !(1 << (bit % 8));
        }
    }
}

/// The segment registers of Xen's CPU save record (index in its arrays) and their VMCS fields: selector, limit,
/// base, access rights.
const SAVED_SEGMENTS: [(usize, Guest16, Guest32, GuestN, Guest32); 8] = [
    (seg::CS, Guest16::Cs, Guest32::CsLimit, GuestN::CsBase, Guest32::CsAr),
    (seg::DS, Guest16::Ds, Guest32::DsLimit, GuestN::DsBase, Guest32::DsAr),
    (seg::ES, Guest16::Es, Guest32::EsLimit, GuestN::EsBase, Guest32::EsAr),
    (seg::FS, Guest16::Fs, Guest32::FsLimit, GuestN::FsBase, Guest32::FsAr),
    (seg::GS, Guest16::Gs, Guest32::GsLimit, GuestN::GsBase, Guest32::GsAr),
    (seg::SS, Guest16::Ss, Guest32::SsLimit, GuestN::SsBase, Guest32::SsAr),
    (seg::TR, Guest16::Tr, Guest32::TrLimit, GuestN::TrBase, Guest32::TrAr),
    (seg::LDTR, Guest16::Ldtr, Guest32::LdtrLimit, GuestN::LdtrBase, Guest32::LdtrAr),
];

impl VmxVcpu {
    /// A vCPU in `init` state, with the nested page table at `ept_root`.
    pub fn new(caps: &Capabilities, ept_root: u64, init: InitState) -> Result<Self, &'static str> {
        let vmcs_pa = alloc(1)?;
        let io_a = alloc(1)?;
        let io_b = alloc(1)?;
        let msr_bitmap = alloc(1)?;
        // SAFETY: fresh pages, exclusively ours, identity-mapped.
        unsafe {
            core::ptr::write_bytes(io_a as *mut u8, 0xff, 4096);
            core::ptr::write_bytes(io_b as *mut u8, 0xff, 4096);
            core::ptr::write_bytes(msr_bitmap as *mut u8, 0xff, 4096);
            core::ptr::write_volatile(vmcs_pa as *mut u32, caps.revision);
        }
        for msr in [
            0xc000_0100u32,
            0xc000_0101,
            0xc000_0102,
            0xc000_0081,
            0xc000_0082,
            0xc000_0083,
            0xc000_0084,
            0x174,
            0x175,
            0x176,
            MSR_TSC_AUX,
        ] {
            let (read_base, idx) = if msr >= 0xc000_0000 { (1024u64, msr - 0xc000_0000) } else { (0, msr) };
            set_bitmap_bit(msr_bitmap, read_base * 8 + idx as u64, false);
            set_bitmap_bit(msr_bitmap, (read_base + 2048) * 8 + idx as u64, false);
        }
        let mut v = Self {
            vmcs_pa,
            io_a,
            io_b,
            msr_bitmap,
            eptp: ept_root | 3 << 3 | 6,
            gprs: Gprs::default(),
            launched: false,
            exit_len: 0,
            flush: true,
            cr0_fixed: (caps.fixed(FixedMsr::Cr0Fixed0), caps.fixed(FixedMsr::Cr0Fixed1)),
            cr4_fixed: (caps.fixed(FixedMsr::Cr4Fixed0), caps.fixed(FixedMsr::Cr4Fixed1)),
            swapped: [0; 6],
            corrupt: false,
            cr2: 0,
            vpid: false,
            rdtscp: false,
        };
        // The vCPU may be built while another vCPU's VMCS is current on this CPU (a start-up IPI handled in
        // its exit): build this one, then make the other current again.
        let mut previous = u64::MAX;
        // SAFETY: VMPTRST stores the current-VMCS pointer (all ones when none) into `previous`.
        unsafe { core::arch::asm!("vmptrst [{}]", in(reg) &mut previous, options(nostack)) };
        let pa = v.vmcs_pa;
        // SAFETY: VMCLEAR initialises the new region's launch state; VMPTRLD makes it current; both on our
        // own freshly allocated region carrying the right revision id.
        unsafe {
            core::arch::asm!("vmclear [{}]", in(reg) &pa, options(nostack));
            core::arch::asm!("vmptrld [{}]", in(reg) &pa, options(nostack));
        }
        let r = v.setup(caps, init);
        // SAFETY: flushes the new VMCS to memory; then restores the previous current VMCS, if any (still valid:
        // it belongs to the vCPU this CPU is running).
        unsafe {
            core::arch::asm!("vmclear [{}]", in(reg) &pa, options(nostack));
            if previous != u64::MAX {
                core::arch::asm!("vmptrld [{}]", in(reg) &previous, options(nostack));
            }
        }
        r.map_err(|_| "VMWRITE failed while building the VMCS")?;
        Ok(v)
    }

    fn setup(&mut self, caps: &Capabilities, init: InitState) -> Result<(), VmFail> {
        let pin = adjust(ctl::PIN_EXT_INT | ctl::PIN_NMI, caps.controls(Controls::PinBased));
        let proc_caps = caps.controls(Controls::PrimaryProc);
        let proc = adjust(
            ctl::PROC_HLT
                | ctl::PROC_IO_BITMAPS
                | ctl::PROC_MSR_BITMAPS
                | ctl::PROC_SECONDARY
                | ctl::PROC_MONITOR
                | ctl::PROC_MWAIT,
            proc_caps,
        ) & !(ctl::PROC_CR3_LOAD | ctl::PROC_CR3_STORE);
        // RDTSCP and INVPCID raise #UD in a guest unless enabled here (CPUID hides them where they cannot be).
        let sec = adjust(
            ctl::SEC_EPT
                | ctl::SEC_VPID
                | ctl::SEC_UNRESTRICTED
                | ctl::SEC_PAUSE_LOOP
                | ctl::SEC_RDTSCP
                | ctl::SEC_INVPCID,
            caps.controls(Controls::SecondaryProc),
        );
        // Without PAUSE-loop exiting, every PAUSE exits (where the CPU allows it): a vCPU spinning with interrupts
        // off must still give its CPU away on emulators (Bochs) that hold host interrupts while guest IF is 0.
        let proc = if sec & ctl::SEC_PAUSE_LOOP == 0 { adjust(proc | ctl::PROC_PAUSE, proc_caps) } else { proc };
        let exit = adjust(
            ctl::EXIT_HOST_64 | ctl::EXIT_SAVE_PAT | ctl::EXIT_LOAD_PAT | ctl::EXIT_SAVE_EFER | ctl::EXIT_LOAD_EFER,
            caps.controls(Controls::Exit),
        );
        let entry = adjust(ctl::ENTRY_LOAD_PAT | ctl::ENTRY_LOAD_EFER, caps.controls(Controls::Entry));
        Control32::PinBased.write(pin as u64)?;
        Control32::PrimaryProc.write(proc as u64)?;
        Control32::SecondaryProc.write(sec as u64)?;
        Control32::ExitControls.write(exit as u64)?;
        Control32::EntryControls.write(entry as u64)?;
        Control32::ExceptionBitmap.write(1 << crate::hvm::vector::UD | 1 << 18)?;
        Control32::Cr3TargetCount.write(0)?;
        // Guest translations tagged with a VPID survive VM exits and entries. All vCPUs share one (as they share
        // one ASID on SVM): the scheduler flushes when a CPU switches vCPUs or a vCPU moves CPUs.
        self.vpid = sec & ctl::SEC_VPID != 0;
        self.rdtscp = sec & ctl::SEC_RDTSCP != 0;
        if self.vpid {
            Control16::Vpid.write(VPID)?;
        }
        if sec & ctl::SEC_PAUSE_LOOP != 0 {
            // A guest spinning on PAUSE (a lock holder descheduled, an AP parked with interrupts off) exits once
            // its PAUSE loop outlasts the window and gives its CPU away, as Xen does with PAUSE-loop exiting.
            Control32::PleGap.write(PLE_GAP)?;
            Control32::PleWindow.write(PLE_WINDOW)?;
        }
        for f in [Control32::ExitMsrStoreCount, Control32::ExitMsrLoadCount, Control32::EntryMsrLoadCount] {
            f.write(0)?;
        }
        Control64::IoBitmapA.write(self.io_a)?;
        Control64::IoBitmapB.write(self.io_b)?;
        Control64::MsrBitmap.write(self.msr_bitmap)?;
        Control64::EptPointer.write(self.eptp)?;
        // CR0/CR4 bits the guest may not change on its own: the fixed ones (PE/PG excepted under unrestricted
        // guest) and VMXE; the guest sees its own values through the read shadows.
        let cr0_mask = (self.cr0_fixed.0 | !self.cr0_fixed.1) & !(1 | 1 << 31);
        let cr4_mask = self.cr4_fixed.0 | !self.cr4_fixed.1 | cpu::cr4::VMXE;
        ControlN::Cr0Mask.write(cr0_mask)?;
        ControlN::Cr4Mask.write(cr4_mask)?;
        self.setup_host()?;
        Guest64::VmcsLinkPointer.write(u64::MAX)?;
        Guest64::Pat.write(0x0007_0406_0007_0406)?;
        Guest64::DebugCtl.write(0)?;
        Guest32::Interruptibility.write(0)?;
        Guest32::ActivityState.write(0)?;
        Guest32::SysenterCs.write(0)?;
        GuestN::SysenterEsp.write(0)?;
        GuestN::SysenterEip.write(0)?;
        GuestN::Dr7.write(0x400)?;
        GuestN::Rflags.write(2)?;
        GuestN::Rsp.write(0)?;
        GuestN::PendingDebug.write(0)?;
        GuestN::GdtrBase.write(0)?;
        GuestN::IdtrBase.write(0)?;
        Guest32::GdtrLimit.write(0xffff)?;
        Guest32::IdtrLimit.write(0xffff)?;
        Guest16::Ldtr.write(0)?;
        GuestN::LdtrBase.write(0)?;
        Guest32::LdtrLimit.write(0xffff)?;
        Guest32::LdtrAr.write(0x82)?;
        GuestN::Cr3.write(0)?;
        Guest64::Efer.write(0)?;
        let segs = [
            (Guest16::Es, GuestN::EsBase, Guest32::EsLimit, Guest32::EsAr),
            (Guest16::Ss, GuestN::SsBase, Guest32::SsLimit, Guest32::SsAr),
            (Guest16::Ds, GuestN::DsBase, Guest32::DsLimit, Guest32::DsAr),
            (Guest16::Fs, GuestN::FsBase, Guest32::FsLimit, Guest32::FsAr),
            (Guest16::Gs, GuestN::GsBase, Guest32::GsLimit, Guest32::GsAr),
        ];
        match init {
            InitState::Restore(saved) => return self.write_state(&saved),
            InitState::Pvh { entry, start_info } => {
                Guest16::Cs.write(0x08)?;
                GuestN::CsBase.write(0)?;
                Guest32::CsLimit.write(0xffff_ffff)?;
                Guest32::CsAr.write(vmcs::ar_from_attrib(0xc9b))?;
                for (sel, base, limit, ar) in segs {
                    sel.write(0x10)?;
                    base.write(0)?;
                    limit.write(0xffff_ffff)?;
                    ar.write(vmcs::ar_from_attrib(0xc93))?;
                }
                Guest16::Tr.write(0x18)?;
                GuestN::TrBase.write(0)?;
                Guest32::TrLimit.write(0x67)?;
                Guest32::TrAr.write(0x8b)?;
                self.set_cr0(0x11)?;
                GuestN::Rip.write(entry as u64)?;
                self.gprs.rbx = start_info as u64;
            }
            InitState::Sipi { vector } => {
                Guest16::Cs.write((vector as u64) << 8)?;
                GuestN::CsBase.write((vector as u64) << 12)?;
                Guest32::CsLimit.write(0xffff)?;
                Guest32::CsAr.write(0x9b)?;
                for (sel, base, limit, ar) in segs {
                    sel.write(0)?;
                    base.write(0)?;
                    limit.write(0xffff)?;
                    ar.write(0x93)?;
                }
                Guest16::Tr.write(0)?;
                GuestN::TrBase.write(0)?;
                Guest32::TrLimit.write(0xffff)?;
                Guest32::TrAr.write(0x8b)?;
                self.set_cr0(0x10)?;
                GuestN::Rip.write(0)?;
            }
        }
        self.set_cr4(0)?;
        Ok(())
    }

    /// Loads a save record into the current VMCS (the inverse of [`Self::read_state`]): registers, RIP/RSP/RFLAGS,
    /// CR0/CR4 through their read shadows (EFER first, so that `set_cr0` derives LMA and the IA-32e entry control
    /// from LME and PG), CR2/CR3, DR7, segments (Xen's packed attributes in VMX's access-rights form; one not
    /// present is unusable), descriptor tables, the SYSENTER MSRs, the swapped MSRs and an event waiting for
    /// injection. The record was checked by the caller; what VM entry still refuses ends the domain, never Keel.
    fn write_state(&mut self, c: &HvmHwCpu) -> Result<(), VmFail> {
        self.gprs = Gprs::from_record(c);
        GuestN::Rsp.write(c.rsp)?;
        GuestN::Rip.write(c.rip)?;
        GuestN::Rflags.write(c.rflags | 2)?;
        Guest64::Efer.write(c.msr_efer & !(1 << 10))?;
        self.set_cr0(c.cr0)?;
        self.set_cr4(c.cr4)?;
        GuestN::Cr3.write(c.cr3)?;
        self.cr2 = c.cr2;
        GuestN::Dr7.write(c.dr7)?;
        for (i, sel, limit, base, ar) in SAVED_SEGMENTS {
            sel.write(u64::from(c.sel[i] as u16))?;
            limit.write(u64::from(c.limit[i]))?;
            base.write(c.base[i])?;
            let attrib = c.arbytes[i] as u16;
            let unusable = if attrib & 0x80 == 0 { vmcs::AR_UNUSABLE } else { 0 };
            ar.write(vmcs::ar_from_attrib(attrib) | unusable)?;
        }
        Guest32::IdtrLimit.write(u64::from(c.limit[seg::IDTR]))?;
        GuestN::IdtrBase.write(c.base[seg::IDTR])?;
        Guest32::GdtrLimit.write(u64::from(c.limit[seg::GDTR]))?;
        GuestN::GdtrBase.write(c.base[seg::GDTR])?;
        Guest32::SysenterCs.write(c.sysenter_cs)?;
        GuestN::SysenterEsp.write(c.sysenter_esp)?;
        GuestN::SysenterEip.write(c.sysenter_eip)?;
        // SWAPPED_MSRS' order: KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK, TSC_AUX (its upper half must stay 0 in
        // the host MSR it is loaded into).
        self.swapped =
            [c.shadow_gs, c.msr_star, c.msr_lstar, c.msr_cstar, c.msr_syscall_mask, c.msr_tsc_aux & 0xffff_ffff];
        if c.pending_event & (1 << 31) != 0 {
            Control32::EntryInterruptionInfo.write(u64::from(c.pending_event))?;
            Control32::EntryExceptionError.write(u64::from(c.error_code))?;
        }
        Ok(())
    }

    /// Host state: Keel's own segments, tables and control registers on the CPU that loads the VMCS.
    fn setup_host(&self) -> Result<(), VmFail> {
        HostN::Cr0.write(cpu::read_cr0())?;
        HostN::Cr3.write(cpu::read_cr3())?;
        HostN::Cr4.write(cpu::read_cr4())?;
        Host16::Cs.write(crate::arch::x86::gdt::KERNEL_CS as u64)?;
        for f in [Host16::Ss, Host16::Ds, Host16::Es] {
            f.write(crate::arch::x86::gdt::KERNEL_DS as u64)?;
        }
        Host16::Fs.write(0)?;
        Host16::Gs.write(0)?;
        Host16::Tr.write(crate::arch::x86::gdt::TSS_SEL as u64)?;
        let (gdt, idt) = crate::arch::x86::gdt::descriptor_table_bases();
        HostN::GdtrBase.write(gdt)?;
        HostN::IdtrBase.write(idt)?;
        HostN::TrBase.write(crate::arch::x86::percpu::this().tss_base())?;
        HostN::FsBase.write(0)?;
        // SAFETY: IA32_GS_BASE holds this CPU's per-CPU pointer; reading it has no side effects.
        HostN::GsBase.write(unsafe { cpu::rdmsr(Msr::GsBase) })?;
        Host32::SysenterCs.write(0)?;
        HostN::SysenterEsp.write(0)?;
        HostN::SysenterEip.write(0)?;
        // SAFETY: EFER and PAT exist on every x86-64 CPU.
        Host64::Efer.write(unsafe { cpu::rdmsr(Msr::Efer) })?;
        // SAFETY: as above.
        Host64::Pat.write(unsafe { cpu::rdmsr_raw(0x277) })?;
        HostN::Rip.write(keel_vmx_exit as *const () as usize as u64)?;
        Ok(())
    }

    fn set_cr0(&mut self, guest: u64) -> Result<(), VmFail> {
        let actual = ((guest | self.cr0_fixed.0) & self.cr0_fixed.1) & !(self.cr0_fixed.0 & (1 | 1 << 31) & !guest)
            | (guest & (1 | 1 << 31));
        ControlN::Cr0ReadShadow.write(guest)?;
        GuestN::Cr0.write(actual)?;
        // Long mode follows CR0.PG with EFER.LME (the CPU only does this itself when CR0 writes do not exit).
        let efer = Guest64::Efer.read();
        let lma = guest & (1 << 31) != 0 && efer & (1 << 8) != 0;
        Guest64::Efer.write(if lma { efer | 1 << 10 } else { efer & !(1 << 10) })?;
        let entry = Control32::EntryControls.read() as u32;
        Control32::EntryControls.write(if lma { entry | ctl::ENTRY_IA32E } else { entry & !ctl::ENTRY_IA32E } as u64)
    }

    fn set_cr4(&mut self, guest: u64) -> Result<(), VmFail> {
        ControlN::Cr4ReadShadow.write(guest)?;
        GuestN::Cr4.write(((guest | self.cr4_fixed.0) & self.cr4_fixed.1) | cpu::cr4::VMXE)
    }

    /// Makes the VMCS current on this CPU (when the vCPU starts a run on it).
    pub fn load(&mut self) {
        let pa = self.vmcs_pa;
        // SAFETY: `pa` is this vCPU's VMCS region with the right revision id, cleared from any other CPU by
        // `unload`; VMPTRLD only makes it current.
        unsafe { core::arch::asm!("vmptrld [{}]", in(reg) &pa, options(nostack)) };
        let _ = self.setup_host();
        for (i, m) in self.swapped_msrs().iter().enumerate() {
            // SAFETY: these MSRs exist on every x86-64 CPU (IA32_TSC_AUX only where RDTSCP is on, which
            // `swapped_msrs` checks); Keel itself does not use them.
            unsafe { cpu::wrmsr_raw(*m, self.swapped[i]) };
        }
        self.flush = true;
    }

    /// The MSRs switched by `load`/`unload`: IA32_TSC_AUX only when guests may run RDTSCP.
    fn swapped_msrs(&self) -> &'static [u32] {
        if self.rdtscp {
            &SWAPPED_MSRS
        } else {
            &SWAPPED_MSRS[..SWAPPED_MSRS.len() - 1]
        }
    }

    /// Flushes the VMCS to memory so another CPU can load it; the next entry is a VMLAUNCH.
    pub fn unload(&mut self) {
        for (i, m) in self.swapped_msrs().iter().enumerate() {
            // SAFETY: as in `load`.
            self.swapped[i] = unsafe { cpu::rdmsr_raw(*m) };
        }
        let pa = self.vmcs_pa;
        // SAFETY: VMCLEAR of this vCPU's own VMCS region.
        unsafe { core::arch::asm!("vmclear [{}]", in(reg) &pa, options(nostack)) };
        self.launched = false;
    }

    /// Enters the guest and decodes the exit; exits handled here (CR0/CR4 writes) re-enter at once.
    pub fn run(&mut self) -> Exit {
        loop {
            match self.run_once() {
                None => continue,
                Some(e) => return e,
            }
        }
    }

    fn run_once(&mut self) -> Option<Exit> {
        if self.flush {
            let desc = [self.eptp, 0u64];
            // SAFETY: single-context INVEPT for this vCPU's EPTP; only invalidates cached translations.
            unsafe { core::arch::asm!("invept {}, [{}]", in(reg) 1u64, in(reg) &desc, options(nostack)) };
            if self.vpid {
                let desc = [VPID, 0u64];
                // SAFETY: single-context INVVPID for Keel's guest VPID (supported: VPID is enabled); it only
                // invalidates cached translations.
                unsafe { core::arch::asm!("invvpid {}, [{}]", in(reg) 1u64, in(reg) &desc, options(nostack)) };
            }
            self.flush = false;
        }
        if core::mem::take(&mut self.corrupt) {
            let _ = GuestN::Rflags.write(GuestN::Rflags.read() & !2);
        }
        if crate::arch::x86::cpu::read_cr2() != self.cr2 {
            // SAFETY: the guest's own CR2, put back for the entry below; Keel does not use CR2.
            unsafe { crate::arch::x86::cpu::write_cr2(self.cr2) };
        }
        // SAFETY: the VMCS is current on this CPU and fully built; `gprs` is exclusively borrowed.
        let failed = unsafe { keel_vmx_run(&mut self.gprs, self.launched as u64) };
        self.cr2 = crate::arch::x86::cpu::read_cr2();
        crate::arch::x86::cpu::enable_interrupts();
        if failed != 0 {
            let err = Exit32::InstructionError.read();
            crate::error!("VM entry failed: VM-instruction error {err} ({})", vmcs::instruction_error_name(err));
            return Some(Exit::InvalidState { detail: err });
        }
        self.launched = true;
        let reason = Exit32::Reason.read();
        self.exit_len = Exit32::InstructionLength.read();
        // An event being delivered when the exit happened is delivered again.
        let idt = Exit32::IdtVectoringInfo.read();
        if idt & (1 << 31) != 0 {
            let _ = Control32::EntryInterruptionInfo.write(idt & !(1 << 12));
            let _ = Control32::EntryExceptionError.write(Exit32::IdtVectoringError.read());
            let _ = Control32::EntryInstructionLength.write(self.exit_len);
        }
        if reason & (1 << 31) != 0 {
            let basic = reason & 0xffff;
            crate::error!(
                "VM entry failed: exit reason {basic} ({}) at guest RIP {:#x}",
                match basic {
                    33 => "invalid guest state",
                    34 => "MSR loading",
                    41 => "machine-check event",
                    _ => "unknown",
                },
                GuestN::Rip.read()
            );
            if basic == 33 {
                match guest_state::check(&self.guest_state()) {
                    Err(v) => crate::error!("VM entry failed: Keel's guest-state check: {v}"),
                    Ok(()) => crate::error!("VM entry failed: Keel's guest-state check finds no fault"),
                }
            }
            return Some(Exit::InvalidState { detail: reason });
        }
        let q = ExitN::Qualification.read();
        Some(match reason & 0xffff {
            0 => {
                let info = Exit32::InterruptionInfo.read();
                let vector = info as u8;
                if (info >> 8) & 7 == 2 {
                    Exit::Nmi
                } else if vector == crate::hvm::vector::UD {
                    Exit::InvalidOpcode
                } else {
                    let error = (info & (1 << 11) != 0).then(|| Exit32::InterruptionError.read() as u32);
                    Exit::Exception { vector, error }
                }
            }
            1 => Exit::ExternalInterrupt,
            2 => Exit::TripleFault,
            3 | 4 => Exit::Init,
            7 => Exit::InterruptWindow,
            10 => Exit::Cpuid,
            12 => Exit::Hlt,
            40 => Exit::Pause,
            18 => Exit::Hypercall,
            19..=27 | 50 | 53 => Exit::VirtInstruction,
            28 => return self.cr_access(q),
            30 => Exit::Io {
                port: (q >> 16) as u16,
                size: (q & 7) as u8 + 1,
                input: q & 8 != 0,
                string: q & 16 != 0,
                rep: q & 32 != 0,
            },
            31 => Exit::Msr { write: false },
            32 => Exit::Msr { write: true },
            48 => {
                Exit::NestedPageFault { gpa: Exit64::GuestPhysicalAddress.read(), write: q & 2 != 0, fetch: q & 4 != 0 }
            }
            other => Exit::Unknown { code: other },
        })
    }

    /// See [`crate::hvm::HwVcpu::corrupt_for_test`]: RFLAGS bit 1, which must be 1, is cleared before the next entry.
    pub fn corrupt_for_test(&mut self) {
        self.corrupt = true;
    }

    /// The guest-state area of the current VMCS, for [`guest_state::check`].
    fn guest_state(&self) -> GuestState {
        let seg = |sel: Guest16, base: GuestN, limit: Guest32, ar: Guest32| Seg {
            selector: sel.read() as u16,
            base: base.read(),
            limit: limit.read() as u32,
            ar: ar.read() as u32,
        };
        GuestState {
            cr0: GuestN::Cr0.read(),
            cr4: GuestN::Cr4.read(),
            dr7: GuestN::Dr7.read(),
            efer: Guest64::Efer.read(),
            rflags: GuestN::Rflags.read(),
            rip: GuestN::Rip.read(),
            cs: seg(Guest16::Cs, GuestN::CsBase, Guest32::CsLimit, Guest32::CsAr),
            ss: seg(Guest16::Ss, GuestN::SsBase, Guest32::SsLimit, Guest32::SsAr),
            ds: seg(Guest16::Ds, GuestN::DsBase, Guest32::DsLimit, Guest32::DsAr),
            es: seg(Guest16::Es, GuestN::EsBase, Guest32::EsLimit, Guest32::EsAr),
            fs: seg(Guest16::Fs, GuestN::FsBase, Guest32::FsLimit, Guest32::FsAr),
            gs: seg(Guest16::Gs, GuestN::GsBase, Guest32::GsLimit, Guest32::GsAr),
            tr: seg(Guest16::Tr, GuestN::TrBase, Guest32::TrLimit, Guest32::TrAr),
            ldtr: seg(Guest16::Ldtr, GuestN::LdtrBase, Guest32::LdtrLimit, Guest32::LdtrAr),
            gdtr_base: GuestN::GdtrBase.read(),
            gdtr_limit: Guest32::GdtrLimit.read() as u32,
            idtr_base: GuestN::IdtrBase.read(),
            idtr_limit: Guest32::IdtrLimit.read() as u32,
            activity: Guest32::ActivityState.read() as u32,
            interruptibility: Guest32::Interruptibility.read() as u32,
            vmcs_link: Guest64::VmcsLinkPointer.read(),
            ia32e_guest: Control32::EntryControls.read() as u32 & ctl::ENTRY_IA32E != 0,
            unrestricted: Control32::SecondaryProc.read() as u32 & ctl::SEC_UNRESTRICTED != 0,
            cr0_fixed: self.cr0_fixed,
            cr4_fixed: self.cr4_fixed,
        }
    }

    /// MOV to CR0/CR4 of a masked bit: update the shadow and the real value and re-enter (`None`); any other
    /// control-register access is unexpected (CR3 and CR8 are not intercepted).
    fn cr_access(&mut self, q: u64) -> Option<Exit> {
        let (cr, access, gpr) = (q & 15, (q >> 4) & 3, (q >> 8) & 15);
        let value = match gpr {
            0 => self.gprs.rax,
            1 => self.gprs.rcx,
            2 => self.gprs.rdx,
            3 => self.gprs.rbx,
            4 => GuestN::Rsp.read(),
            5 => self.gprs.rbp,
            6 => self.gprs.rsi,
            7 => self.gprs.rdi,
            8 => self.gprs.r8,
            9 => self.gprs.r9,
            10 => self.gprs.r10,
            11 => self.gprs.r11,
            12 => self.gprs.r12,
            13 => self.gprs.r13,
            14 => self.gprs.r14,
            _ => self.gprs.r15,
        };
        let ok = match (access, cr) {
            (0, 0) => self.set_cr0(value).is_ok(),
            (0, 4) => self.set_cr4(value).is_ok(),
            _ => false,
        };
        if ok {
            self.advance_to(self.rip().wrapping_add(self.exit_len));
            None
        } else {
            Some(Exit::Unknown { code: 28 })
        }
    }

    pub fn gprs(&mut self) -> &mut Gprs {
        &mut self.gprs
    }

    pub fn rip(&self) -> u64 {
        GuestN::Rip.read()
    }

    pub fn set_rip(&mut self, rip: u64) {
        let _ = GuestN::Rip.write(rip);
    }

    pub fn rflags(&self) -> u64 {
        GuestN::Rflags.read()
    }

    pub fn paging(&self) -> PagingState {
        PagingState {
            // The guest's CR0: masked bits from the read shadow, the rest (WP, PE, PG, ...) as the guest set them.
            cr0: (ControlN::Cr0ReadShadow.read() & ControlN::Cr0Mask.read())
                | (GuestN::Cr0.read() & !ControlN::Cr0Mask.read()),
            cr3: GuestN::Cr3.read(),
            cr4: GuestN::Cr4.read() & !cpu::cr4::VMXE,
            efer: Guest64::Efer.read(),
            long_mode_code: Guest32::CsAr.read() & (1 << 13) != 0,
            cpl: ((Guest32::SsAr.read() >> 5) & 3) as u8,
        }
    }

    /// RIP plus the exit's instruction length (valid for every instruction exit Keel emulates: CPUID, HLT,
    /// PAUSE, RDMSR/WRMSR, VMCALL, I/O, MOV to CR).
    pub fn next_rip(&self) -> Option<u64> {
        Some(self.rip().wrapping_add(self.exit_len))
    }

    pub fn advance_to(&mut self, next: u64) {
        let _ = GuestN::Rip.write(next);
        let st = Guest32::Interruptibility.read();
        let _ = Guest32::Interruptibility.write(st & !3);
    }

    pub fn code_segment(&self) -> CodeSegment {
        let ar = Guest32::CsAr.read();
        let lma = Guest64::Efer.read() & (1 << 10) != 0;
        CodeSegment::new(GuestN::CsBase.read(), ar & (1 << 13) != 0, ar & (1 << 14) != 0, lma)
    }

    pub fn inject(&mut self, e: Event) -> bool {
        if Control32::EntryInterruptionInfo.read() & (1 << 31) != 0 {
            return false;
        }
        let info = match e {
            Event::Exception { vector, error } => {
                if let Some(code) = error {
                    let _ = Control32::EntryExceptionError.write(code as u64);
                }
                vector as u64 | 3 << 8 | (error.is_some() as u64) << 11 | 1 << 31
            }
            Event::Interrupt(v) => v as u64 | 1 << 31,
            Event::Nmi => 2 | 2 << 8 | 1 << 31,
        };
        Control32::EntryInterruptionInfo.write(info).is_ok()
    }

    pub fn interruptible(&self) -> bool {
        self.rflags() & (1 << 9) != 0
            && Guest32::Interruptibility.read() & 3 == 0
            && Control32::EntryInterruptionInfo.read() & (1 << 31) == 0
    }

    pub fn request_interrupt_window(&mut self, on: bool) {
        let p = Control32::PrimaryProc.read() as u32;
        let _ = Control32::PrimaryProc
            .write(if on { p | ctl::PROC_INTR_WINDOW } else { p & !ctl::PROC_INTR_WINDOW } as u64);
    }

    pub fn idtr_base(&self) -> u64 {
        GuestN::IdtrBase.read()
    }

    pub fn cr2(&self) -> u64 {
        self.cr2
    }

    pub fn flush_tlb(&mut self) {
        self.flush = true;
    }

    pub fn read_msr(&self, msr: u32) -> Option<u64> {
        Some(match msr {
            0xc000_0080 => Guest64::Efer.read(),
            0x277 => Guest64::Pat.read(),
            _ => return None,
        })
    }

    pub fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        use crate::hvm::msr;
        match msr {
            msr::EFER => {
                // LMA follows CR0.PG and LME. A refused value is a #GP (false), never a failed VM entry.
                let (old, cr0) = (Guest64::Efer.read(), GuestN::Cr0.read());
                let value = match msr::check_efer_write(old, value, cr0, msr::guest_efer_bits()) {
                    Ok(v) => v,
                    Err(e) => {
                        crate::debug!("guest EFER write {value:#x} refused: {e:?}");
                        return false;
                    }
                };
                let lma = value & msr::efer::LMA != 0;
                let _ = Guest64::Efer.write(value);
                let entry = Control32::EntryControls.read() as u32;
                let _ = Control32::EntryControls.write(if lma {
                    entry | ctl::ENTRY_IA32E
                } else {
                    entry & !ctl::ENTRY_IA32E
                } as u64);
                true
            }
            msr::PAT => msr::pat_valid(value) && Guest64::Pat.write(value).is_ok(),
            _ => false,
        }
    }

    /// See [`crate::hvm::HwVcpu::save_cpu`]. The vCPU is off every CPU (its VMCS cleared by `unload`), so its VMCS
    /// is made current here for the reads and cleared again after them; the VMCS current before (the calling
    /// vCPU's, launched) is made current again, keeping its launch state. The MSRs VMX does not switch are the
    /// copies `unload` took.
    pub fn save_cpu(&self, out: &mut HvmHwCpu) {
        let mut previous = u64::MAX;
        // SAFETY: VMPTRST stores the current-VMCS pointer (all ones when none) into `previous`.
        unsafe { core::arch::asm!("vmptrst [{}]", in(reg) &mut previous, options(nostack)) };
        let pa = self.vmcs_pa;
        // SAFETY: `pa` is this vCPU's VMCS region, initialised by `new` and not active on any CPU (its vCPU is
        // paused and was unloaded); VMPTRLD only makes it current here.
        unsafe { core::arch::asm!("vmptrld [{}]", in(reg) &pa, options(nostack)) };
        self.read_state(out);
        // SAFETY: VMCLEAR flushes our own region and leaves it inactive (as `unload` did; `launched` is already
        // false); the previous VMCS, if any, is the running vCPU's, still valid, and becomes current again.
        unsafe {
            core::arch::asm!("vmclear [{}]", in(reg) &pa, options(nostack));
            if previous != u64::MAX {
                core::arch::asm!("vmptrld [{}]", in(reg) &previous, options(nostack));
            }
        }
    }

    /// Reads the save record's fields from the current VMCS.
    fn read_state(&self, out: &mut HvmHwCpu) {
        self.gprs.save_into(out);
        out.rsp = GuestN::Rsp.read();
        out.rip = GuestN::Rip.read();
        out.rflags = GuestN::Rflags.read();
        let visible = |actual: u64, shadow: u64, mask: u64| (shadow & mask) | (actual & !mask);
        out.cr0 = visible(GuestN::Cr0.read(), ControlN::Cr0ReadShadow.read(), ControlN::Cr0Mask.read());
        out.cr4 = visible(GuestN::Cr4.read(), ControlN::Cr4ReadShadow.read(), ControlN::Cr4Mask.read());
        (out.cr2, out.cr3) = (self.cr2, GuestN::Cr3.read());
        out.dr7 = GuestN::Dr7.read();
        for (i, sel, limit, base, ar) in SAVED_SEGMENTS {
            out.sel[i] = sel.read() as u32;
            out.limit[i] = limit.read() as u32;
            out.base[i] = base.read();
            out.arbytes[i] = packed_attributes(ar.read());
        }
        (out.limit[seg::IDTR], out.base[seg::IDTR]) = (Guest32::IdtrLimit.read() as u32, GuestN::IdtrBase.read());
        (out.limit[seg::GDTR], out.base[seg::GDTR]) = (Guest32::GdtrLimit.read() as u32, GuestN::GdtrBase.read());
        out.sysenter_cs = Guest32::SysenterCs.read();
        (out.sysenter_esp, out.sysenter_eip) = (GuestN::SysenterEsp.read(), GuestN::SysenterEip.read());
        // SWAPPED_MSRS' order: KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK, TSC_AUX.
        out.shadow_gs = self.swapped[0];
        (out.msr_star, out.msr_lstar, out.msr_cstar, out.msr_syscall_mask) =
            (self.swapped[1], self.swapped[2], self.swapped[3], self.swapped[4]);
        out.msr_tsc_aux = if self.rdtscp { self.swapped[5] } else { 0 };
        out.msr_efer = Guest64::Efer.read();
        out.tsc = cpu::rdtsc().wrapping_add(Control64::TscOffset.read());
        let info = Control32::EntryInterruptionInfo.read();
        if info & (1 << 31) != 0 {
            out.pending_event = info as u32;
            out.error_code = Control32::EntryExceptionError.read() as u32;
        }
    }

    pub fn describe(&self) -> alloc::string::String {
        alloc::format!(
            "CS={:#x} RIP={:#x} RSP={:#x} RFLAGS={:#x} CR0={:#x} CR3={:#x} CR4={:#x} EFER={:#x}",
            Guest16::Cs.read(),
            self.rip(),
            GuestN::Rsp.read(),
            self.rflags(),
            GuestN::Cr0.read(),
            GuestN::Cr3.read(),
            GuestN::Cr4.read(),
            Guest64::Efer.read()
        )
    }

    pub fn frames(&self) -> Vec<u64> {
        alloc::vec![self.vmcs_pa, self.io_a, self.io_b, self.msr_bitmap]
    }
}

/// VMCS access rights to Xen's packed attributes (type/S/DPL/P in bits 0-7, AVL/L/DB/G in 8-11); an unusable
/// segment reads as not present, as Xen reports it.
pub fn packed_attributes(ar: u64) -> u32 {
    let packed = ((ar & 0xf000) >> 4 | (ar & 0xff)) as u32;
    if ar & vmcs::AR_UNUSABLE != 0 {
        packed & !0x80
    } else {
        packed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rights_pack_as_xen_reports_them() {
        for attrib in [0xc9bu16, 0xa9b, 0xc93, 0x8b, 0x82] {
            assert_eq!(packed_attributes(vmcs::ar_from_attrib(attrib)), u32::from(attrib));
        }
        assert_eq!(packed_attributes(0x1_c093), 0xc13, "unusable: not present");
    }

    #[test]
    fn control_adjustment() {
        // allowed-0 = bit 1 (must be 1), allowed-1 = bits 0..=3 (may be 1)
        let cap = 0x0000_000f_0000_0002u64;
        assert_eq!(adjust(0b1001, cap), 0b1011);
        assert_eq!(adjust(0b1_0000, cap), 0b0010);
    }
}
