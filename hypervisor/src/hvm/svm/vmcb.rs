//! The VMCB (AMD APM vol. 2, appendix B): control area and state-save area as one typed `#[repr(C)]` struct,
//! with every offset Keel relies on checked at compile time. This file and its siblings are the only places that
//! name VMCB fields.

use bitflags::bitflags;
use core::mem::offset_of;

/// A segment register in the state-save area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes in VMCB form: access byte in bits 0-7, AVL/L/DB/G in bits 8-11.
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

impl Segment {
    /// A flat segment with the given selector and attributes.
    pub const fn flat(selector: u16, attrib: u16) -> Self {
        Self { selector, attrib, limit: 0xffff_ffff, base: 0 }
    }
}

bitflags! {
    /// Intercept vector 3 (offset 0x00C).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Intercept1: u32 {
        const INTR = 1 << 0;
        const NMI = 1 << 1;
        const SMI = 1 << 2;
        const INIT = 1 << 3;
        const VINTR = 1 << 4;
        const RDTSC = 1 << 14;
        const RDPMC = 1 << 15;
        const CPUID = 1 << 18;
        const RSM = 1 << 19;
        const INVD = 1 << 22;
        const PAUSE = 1 << 23;
        const HLT = 1 << 24;
        const INVLPGA = 1 << 26;
        const IOIO_PROT = 1 << 27;
        const MSR_PROT = 1 << 28;
        const TASK_SWITCH = 1 << 29;
        const FERR_FREEZE = 1 << 30;
        const SHUTDOWN = 1 << 31;
    }
}

bitflags! {
    /// Intercept vector 4 (offset 0x010).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Intercept2: u32 {
        const VMRUN = 1 << 0;
        const VMMCALL = 1 << 1;
        const VMLOAD = 1 << 2;
        const VMSAVE = 1 << 3;
        const STGI = 1 << 4;
        const CLGI = 1 << 5;
        const SKINIT = 1 << 6;
        const RDTSCP = 1 << 7;
        const ICEBP = 1 << 8;
        const WBINVD = 1 << 9;
        const MONITOR = 1 << 10;
        const MWAIT = 1 << 11;
        const MWAIT_COND = 1 << 12;
        const XSETBV = 1 << 13;
    }
}

/// TLB_CONTROL values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TlbControl {
    /// Do nothing.
    None = 0,
    /// Flush the entire TLB (all ASIDs).
    FlushAll = 1,
    /// Flush this guest's ASID (needs flush-by-ASID).
    FlushAsid = 3,
}

/// `EVENTINJ` / `EXITINTINFO` event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventType {
    /// External interrupt.
    Intr = 0,
    /// NMI.
    Nmi = 2,
    /// Exception (fault or trap).
    Exception = 3,
    /// Software interrupt (INTn).
    SoftInt = 4,
}

/// VMCB exit codes Keel handles by name.
pub mod exit_code {
    pub const EXCP_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const TASK_SWITCH: u64 = 0x7d;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
    /// VMEXIT_INVALID as QEMU's TCG writes it (-1 in 32 bits).
    pub const INVALID_32: u64 = u32::MAX as u64;
}

/// Interrupt control word (offset 0x060).
pub mod vintr {
    /// V_IRQ: a virtual interrupt is pending.
    pub const V_IRQ: u64 = 1 << 8;
    /// V_IGN_TPR.
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// V_INTR_MASKING: the guest's RFLAGS.IF only masks virtual interrupts.
    pub const V_INTR_MASKING: u64 = 1 << 24;
    /// Shift of V_INTR_PRIO.
    pub const PRIO_SHIFT: u32 = 16;
    /// Shift of V_INTR_VECTOR.
    pub const VECTOR_SHIFT: u32 = 32;
}

/// The whole VMCB page.
#[repr(C, align(4096))]
pub struct Vmcb {
    // ---- control area ----
    pub intercept_cr: u32,
    pub intercept_dr: u32,
    pub intercept_exceptions: u32,
    pub intercept1: u32,
    pub intercept2: u32,
    pub intercept3: u32,
    _reserved_018: [u8; 0x24],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub guest_asid: u32,
    pub tlb_control: u8,
    _reserved_05d: [u8; 3],
    pub vintr: u64,
    pub interrupt_shadow: u64,
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u64,
    pub np_control: u64,
    pub avic_apic_bar: u64,
    pub ghcb_pa: u64,
    pub event_inj: u64,
    pub n_cr3: u64,
    pub lbr_virt: u64,
    pub clean_bits: u32,
    _reserved_0c4: u32,
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    _reserved_0e0: [u8; 0x400 - 0xe0],
    // ---- state-save area ----
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    _reserved_4a0: [u8; 0x2b],
    pub cpl: u8,
    _reserved_4cc: u32,
    pub efer: u64,
    _reserved_4d8: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    _reserved_580: [u8; 0x58],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    _reserved_648: [u8; 0x20],
    pub g_pat: u64,
    pub dbgctl: u64,
    _rest: [u8; 0x1000 - 0x678],
}

const _: () = {
    assert!(core::mem::size_of::<Vmcb>() == 4096);
    assert!(offset_of!(Vmcb, intercept_exceptions) == 0x008);
    assert!(offset_of!(Vmcb, intercept1) == 0x00c);
    assert!(offset_of!(Vmcb, intercept2) == 0x010);
    assert!(offset_of!(Vmcb, pause_filter_threshold) == 0x03c);
    assert!(offset_of!(Vmcb, iopm_base_pa) == 0x040);
    assert!(offset_of!(Vmcb, msrpm_base_pa) == 0x048);
    assert!(offset_of!(Vmcb, tsc_offset) == 0x050);
    assert!(offset_of!(Vmcb, guest_asid) == 0x058);
    assert!(offset_of!(Vmcb, tlb_control) == 0x05c);
    assert!(offset_of!(Vmcb, vintr) == 0x060);
    assert!(offset_of!(Vmcb, interrupt_shadow) == 0x068);
    assert!(offset_of!(Vmcb, exit_code) == 0x070);
    assert!(offset_of!(Vmcb, exit_info1) == 0x078);
    assert!(offset_of!(Vmcb, exit_info2) == 0x080);
    assert!(offset_of!(Vmcb, exit_int_info) == 0x088);
    assert!(offset_of!(Vmcb, np_control) == 0x090);
    assert!(offset_of!(Vmcb, event_inj) == 0x0a8);
    assert!(offset_of!(Vmcb, n_cr3) == 0x0b0);
    assert!(offset_of!(Vmcb, clean_bits) == 0x0c0);
    assert!(offset_of!(Vmcb, next_rip) == 0x0c8);
    assert!(offset_of!(Vmcb, insn_len) == 0x0d0);
    assert!(offset_of!(Vmcb, es) == 0x400);
    assert!(offset_of!(Vmcb, cs) == 0x410);
    assert!(offset_of!(Vmcb, gdtr) == 0x460);
    assert!(offset_of!(Vmcb, idtr) == 0x480);
    assert!(offset_of!(Vmcb, tr) == 0x490);
    assert!(offset_of!(Vmcb, cpl) == 0x4cb);
    assert!(offset_of!(Vmcb, efer) == 0x4d0);
    assert!(offset_of!(Vmcb, cr4) == 0x548);
    assert!(offset_of!(Vmcb, cr3) == 0x550);
    assert!(offset_of!(Vmcb, cr0) == 0x558);
    assert!(offset_of!(Vmcb, dr7) == 0x560);
    assert!(offset_of!(Vmcb, dr6) == 0x568);
    assert!(offset_of!(Vmcb, rflags) == 0x570);
    assert!(offset_of!(Vmcb, rip) == 0x578);
    assert!(offset_of!(Vmcb, rsp) == 0x5d8);
    assert!(offset_of!(Vmcb, rax) == 0x5f8);
    assert!(offset_of!(Vmcb, star) == 0x600);
    assert!(offset_of!(Vmcb, kernel_gs_base) == 0x620);
    assert!(offset_of!(Vmcb, sysenter_eip) == 0x638);
    assert!(offset_of!(Vmcb, cr2) == 0x640);
    assert!(offset_of!(Vmcb, g_pat) == 0x668);
};

/// Builds an `EVENTINJ` value.
pub fn event_inj(vector: u8, typ: EventType, error: Option<u32>) -> u64 {
    let mut v = vector as u64 | (typ as u64) << 8 | 1 << 31;
    if let Some(e) = error {
        v |= 1 << 11 | (e as u64) << 32;
    }
    v
}

/// IOIO exit information (EXITINFO1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoioInfo {
    /// Port.
    pub port: u16,
    /// IN (true) or OUT.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
    /// Operand size in bytes.
    pub size: u8,
}

impl IoioInfo {
    /// Decodes EXITINFO1 of an IOIO exit.
    pub fn decode(info1: u64) -> Self {
        let size = if info1 & (1 << 4) != 0 {
            1
        } else if info1 & (1 << 5) != 0 {
            2
        } else {
            4
        };
        Self {
            port: (info1 >> 16) as u16,
            input: info1 & 1 != 0,
            string: info1 & (1 << 2) != 0,
            rep: info1 & (1 << 3) != 0,
            size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventinj_encoding() {
        assert_eq!(event_inj(13, EventType::Exception, Some(0)), 0x8000_0b0d);
        assert_eq!(event_inj(0xf3, EventType::Intr, None), 0x8000_00f3);
        assert_eq!(event_inj(14, EventType::Exception, Some(2)) >> 32, 2);
    }

    #[test]
    fn ioio_decoding() {
        let i = IoioInfo::decode(0x00e9_0010);
        assert_eq!(i, IoioInfo { port: 0xe9, input: false, string: false, rep: false, size: 1 });
        let i = IoioInfo::decode(0x0cf8_0041);
        assert_eq!((i.port, i.input, i.size), (0xcf8, true, 4));
    }
}
