//! Intel VMX: capabilities, IA32_FEATURE_CONTROL handling and VMXON; the typed VMCS (`vmcs`).
//!
//! QEMU's TCG cannot emulate VMX; this path is exercised under Bochs (see testing.md). The decisions are pure
//! functions with unit tests; the instructions are confined to `enable_this_cpu`.

pub mod guest_state;
pub mod vcpu;
pub mod vmcs;

pub use vcpu::VmxVcpu;

use crate::arch::x86::cpu::{self, cr4, Msr};
use alloc::format;
use alloc::string::String;

/// What IA32_VMX_BASIC and CPUID say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// VMCS revision identifier.
    pub revision: u32,
    /// Bytes to allocate for VMXON region and VMCS.
    pub region_size: u32,
    /// The "true" capability MSRs exist (bit 55).
    pub true_ctls: bool,
    /// Secondary processor-based controls that may be 1 (0 when there are none).
    pub secondary: u32,
}

/// Secondary controls worth naming in the summary.
const SECONDARY_NAMES: [(u32, &str); 7] = [
    (1 << 1, "EPT"),
    (1 << 3, "RDTSCP"),
    (1 << 5, "VPID"),
    (1 << 7, "unrestricted-guest"),
    (1 << 10, "PAUSE-loop-exiting"),
    (1 << 12, "INVPCID"),
    (1 << 13, "VMFUNC"),
];

const BASIC_TRUE_CTLS: u64 = 1 << 55;

/// A set of VMX controls whose allowed settings a capability MSR reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controls {
    PinBased,
    PrimaryProc,
    SecondaryProc,
    Exit,
    Entry,
}

/// The VMX fixed-bit MSRs for CR0 and CR4 (architectural on every CPU with VMX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FixedMsr {
    Cr0Fixed0 = 0x486,
    Cr0Fixed1 = 0x487,
    Cr4Fixed0 = 0x488,
    Cr4Fixed1 = 0x489,
}

/// IA32_VMX_PROCBASED_CTLS and IA32_VMX_PROCBASED_CTLS2.
const MSR_PROCBASED: u32 = 0x482;
const MSR_PROCBASED2: u32 = 0x48b;

/// The capability MSR that reports `ctl`: a TRUE_* MSR only when `true_ctls` (IA32_VMX_BASIC bit 55 says those
/// exist; reading one otherwise raises #GP).
pub fn controls_msr(ctl: Controls, true_ctls: bool) -> u32 {
    match (ctl, true_ctls) {
        (Controls::PinBased, false) => 0x481,
        (Controls::PrimaryProc, false) => MSR_PROCBASED,
        (Controls::Exit, false) => 0x483,
        (Controls::Entry, false) => 0x484,
        (Controls::PinBased, true) => 0x48d,
        (Controls::PrimaryProc, true) => 0x48e,
        (Controls::Exit, true) => 0x48f,
        (Controls::Entry, true) => 0x490,
        (Controls::SecondaryProc, _) => MSR_PROCBASED2,
    }
}

impl Capabilities {
    /// Decodes IA32_VMX_BASIC.
    pub fn from_basic(basic: u64) -> Self {
        Self {
            revision: (basic & 0x7fff_ffff) as u32,
            region_size: ((basic >> 32) & 0x1fff) as u32,
            true_ctls: basic & BASIC_TRUE_CTLS != 0,
            secondary: 0,
        }
    }

    /// Reads the capability MSRs on this CPU.
    pub fn read() -> Self {
        // SAFETY: IA32_VMX_BASIC exists on every CPU whose CPUID reports VMX (checked by `detect`).
        let mut c = Self::from_basic(unsafe { cpu::rdmsr(Msr::VmxBasic) });
        // SAFETY: IA32_VMX_PROCBASED_CTLS exists with VMX; IA32_VMX_PROCBASED_CTLS2 exists when its bit 63 (the
        // allowed-1 bit of "activate secondary controls") is set.
        unsafe {
            if cpu::rdmsr_raw(MSR_PROCBASED) >> 63 != 0 {
                c.secondary = (cpu::rdmsr_raw(MSR_PROCBASED2) >> 32) as u32;
            }
        }
        c
    }

    /// The capability MSR for `ctl` on this CPU (allowed-0 settings in the low half, allowed-1 in the high half):
    /// the TRUE_* MSR where IA32_VMX_BASIC bit 55 says it exists, the plain one otherwise; for the secondary
    /// controls, 0 (none allowed) where the CPU has no IA32_VMX_PROCBASED_CTLS2.
    pub fn controls(&self, ctl: Controls) -> u64 {
        if ctl == Controls::SecondaryProc && self.secondary == 0 {
            // No secondary control may be 1 (or there is no such MSR); its allowed-0 half is 0 by definition.
            return 0;
        }
        // SAFETY: the plain control MSRs exist on every CPU with VMX (`read` ran because CPUID reports it); the
        // TRUE_* ones are chosen only when `true_ctls`, i.e. IA32_VMX_BASIC bit 55 is set; IA32_VMX_PROCBASED_CTLS2
        // only when `secondary` is not 0, which `read` sets only after seeing the MSR exists (PROCBASED bit 63).
        unsafe { cpu::rdmsr_raw(controls_msr(ctl, self.true_ctls)) }
    }

    /// A CR0/CR4 fixed-bit MSR.
    pub fn fixed(&self, msr: FixedMsr) -> u64 {
        // SAFETY: IA32_VMX_CR0_FIXED0/1 and IA32_VMX_CR4_FIXED0/1 exist on every CPU with VMX.
        unsafe { cpu::rdmsr_raw(msr as u32) }
    }

    /// The names of the notable secondary controls this CPU offers.
    pub fn secondary_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        SECONDARY_NAMES.iter().filter(|(bit, _)| self.secondary & bit != 0).map(|(_, name)| *name)
    }

    /// Logs the summary.
    pub fn log_summary(&self) {
        crate::info!(
            "VMX: VMCS revision {:#x}, region size {} bytes, true controls: {}",
            self.revision,
            self.region_size,
            if self.true_ctls { "yes" } else { "no" }
        );
        let mut names = alloc::string::String::new();
        for n in self.secondary_names() {
            names.push(' ');
            names.push_str(n);
        }
        crate::info!("VMX: secondary controls:{}", if names.is_empty() { " none" } else { &names });
    }
}

/// IA32_FEATURE_CONTROL bits.
const FC_LOCK: u64 = 1 << 0;
const FC_VMXON_OUTSIDE_SMX: u64 = 1 << 2;

/// What to do with IA32_FEATURE_CONTROL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureControl {
    /// Locked with VMXON allowed: nothing to do.
    Ready,
    /// Unlocked: write this value (VMXON allowed, locked).
    Write(u64),
    /// Locked with VMXON forbidden: only the firmware setup can change it.
    LockedDisabled,
}

/// Decides from the current IA32_FEATURE_CONTROL value.
pub fn feature_control(value: u64) -> FeatureControl {
    match (value & FC_LOCK != 0, value & FC_VMXON_OUTSIDE_SMX != 0) {
        (true, true) => FeatureControl::Ready,
        (true, false) => FeatureControl::LockedDisabled,
        (false, _) => FeatureControl::Write(value | FC_LOCK | FC_VMXON_OUTSIDE_SMX),
    }
}

/// Applies the VMX fixed-bit constraints to CR0 or CR4: bits set in `fixed0` must be 1, bits clear in `fixed1`
/// must be 0.
pub fn apply_fixed(value: u64, fixed0: u64, fixed1: u64) -> u64 {
    (value | fixed0) & fixed1
}

/// The message for firmware that locked VMX off.
pub const BIOS_DISABLED: &str = "VMX is disabled and locked by the firmware (IA32_FEATURE_CONTROL): \
enable \"Intel Virtualization Technology\" (VT-x) in the BIOS setup";

/// Enters VMX root operation on the calling CPU.
pub fn enable_this_cpu(caps: &Capabilities, cpu_index: u32) -> Result<(), String> {
    // SAFETY: every MSR read here exists on CPUs reporting VMX; the writes follow the SDM's VMXON preconditions
    // (feature control locked with VMXON allowed, CR0/CR4 fixed bits, CR4.VMXE) and keep paging/protection on.
    unsafe {
        match feature_control(cpu::rdmsr(Msr::FeatureControl)) {
            FeatureControl::Ready => {}
            FeatureControl::Write(v) => cpu::wrmsr(Msr::FeatureControl, v),
            FeatureControl::LockedDisabled => return Err(BIOS_DISABLED.into()),
        }
        let cr0 = apply_fixed(cpu::read_cr0(), cpu::rdmsr(Msr::VmxCr0Fixed0), cpu::rdmsr(Msr::VmxCr0Fixed1));
        cpu::write_cr0(cr0);
        let cr4 =
            apply_fixed(cpu::read_cr4() | cr4::VMXE, cpu::rdmsr(Msr::VmxCr4Fixed0), cpu::rdmsr(Msr::VmxCr4Fixed1));
        cpu::write_cr4(cr4);
    }
    if caps.region_size as u64 > crate::mm::PAGE_SIZE {
        return Err(format!("VMXON region of {} bytes is larger than a page", caps.region_size));
    }
    let region = crate::mm::alloc_frame().map_err(|_| String::from("no memory for the VMXON region"))?;
    // SAFETY: `region` is a fresh zeroed frame, identity-mapped; its first dword takes the revision id.
    unsafe { core::ptr::write_volatile(region as *mut u32, caps.revision) };
    let failed: u8;
    // SAFETY: all VMXON preconditions were established above; the region stays allocated for as long as the
    // CPU is in VMX operation (for ever). CF or ZF set means VMXON failed, which is reported, not assumed.
    unsafe {
        core::arch::asm!("vmxon [{0}]", "setbe {1}", in(reg) &region, out(reg_byte) failed, options(nostack));
    }
    if failed != 0 {
        return Err("VMXON failed (VMfail)".into());
    }
    crate::info!("CPU{cpu_index}: VMXON is done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_control_msrs_only_with_basic_bit_55() {
        let caps = Capabilities::from_basic(0x00da_0400_0000_0004);
        assert!(caps.true_ctls);
        let no_true = Capabilities::from_basic(0x0058_0400_0000_0004);
        assert!(!no_true.true_ctls);
        for ctl in [Controls::PinBased, Controls::PrimaryProc, Controls::SecondaryProc, Controls::Exit, Controls::Entry]
        {
            let plain = controls_msr(ctl, false);
            assert!(!(0x48d..=0x490).contains(&plain), "{ctl:?} read {plain:#x} without bit 55");
        }
        assert_eq!(controls_msr(Controls::Entry, true), 0x490);
        assert_eq!(controls_msr(Controls::Entry, false), 0x484);
        assert_eq!(controls_msr(Controls::SecondaryProc, true), 0x48b);
    }

    #[test]
    fn feature_control_cases() {
        assert_eq!(feature_control(0b101), FeatureControl::Ready);
        assert_eq!(feature_control(0b001), FeatureControl::LockedDisabled);
        assert_eq!(feature_control(0), FeatureControl::Write(0b101));
        assert_eq!(feature_control(0b010), FeatureControl::Write(0b111));
    }

    #[test]
    fn fixed_bits() {
        // PE, NE, PG fixed to 1; bit 30 (CD) forced to 0 by fixed1.
        let fixed0 = 0x8000_0021;
        let fixed1 = 0xffff_ffff & !(1 << 30);
        assert_eq!(apply_fixed(0x4000_0000, fixed0, fixed1), 0x8000_0021);
    }

    #[test]
    fn basic_msr() {
        let c = Capabilities::from_basic(0x00da_0400_0000_0004);
        assert_eq!(c.revision, 4);
        assert_eq!(c.region_size, 0x400);
        assert!(c.true_ctls);
    }
}
