//! Small, documented wrappers over privileged x86 instructions: port I/O, MSRs, control registers, TSC.
//!
//! Each wrapper is `unsafe` where the instruction can break memory safety or crash the machine depending on its
//! argument (port I/O, MSR writes); reads that cannot fault on any CPU Keel runs on are safe.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must be one whose write has no effect on memory safety (a device Keel owns).
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: reads can have side effects on devices.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes a 32-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

/// Reads a 16-bit word from an I/O port.
///
/// # Safety
/// As for [`inb`].
#[inline]
pub unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe { asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads a 32-bit word from an I/O port.
///
/// # Safety
/// As for [`inb`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe { asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Model-specific registers Keel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Msr {
    /// IA32_APIC_BASE
    ApicBase = 0x1b,
    /// IA32_FEATURE_CONTROL (Intel)
    FeatureControl = 0x3a,
    /// IA32_VMX_BASIC
    VmxBasic = 0x480,
    /// IA32_VMX_CR0_FIXED0
    VmxCr0Fixed0 = 0x486,
    /// IA32_VMX_CR0_FIXED1
    VmxCr0Fixed1 = 0x487,
    /// IA32_VMX_CR4_FIXED0
    VmxCr4Fixed0 = 0x488,
    /// IA32_VMX_CR4_FIXED1
    VmxCr4Fixed1 = 0x489,
    /// IA32_EFER
    Efer = 0xc000_0080,
    /// IA32_GS_BASE
    GsBase = 0xc000_0101,
    /// VM_CR (AMD)
    VmCr = 0xc001_0114,
    /// VM_HSAVE_PA (AMD)
    VmHsavePa = 0xc001_0117,
}

/// EFER bits.
pub mod efer {
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
    /// Secure virtual machine enable (AMD).
    pub const SVME: u64 = 1 << 12;
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this CPU (otherwise RDMSR raises #GP).
#[inline]
pub unsafe fn rdmsr(msr: Msr) -> u64 {
    // SAFETY: forwarded to the caller.
    unsafe { rdmsr_raw(msr as u32) }
}

/// Reads an MSR by number (x2APIC registers are a range of MSRs).
///
/// # Safety
/// The MSR must exist on this CPU.
#[inline]
pub unsafe fn rdmsr_raw(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR touches no memory.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist, and the value must not break Keel's invariants (paging, segmentation, interrupt state).
#[inline]
pub unsafe fn wrmsr(msr: Msr, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { wrmsr_raw(msr as u32, value) }
}

/// Writes an MSR by number.
///
/// # Safety
/// As for [`wrmsr`].
#[inline]
pub unsafe fn wrmsr_raw(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack, preserves_flags))
    };
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC is available on every x86-64 CPU, Keel never sets CR4.TSD, and it touches no memory.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Control registers, read for dumps and set-up.
pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading CR0 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR2: the last page-fault address.
pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR2 (a guest's last page-fault address, which VMX does not switch).
///
/// # Safety
/// Nothing in Keel relies on CR2 between its own page faults; the caller restores a guest's value before entry.
pub unsafe fn write_cr2(v: u64) {
    // SAFETY: see the function's contract; writing CR2 has no other effect.
    unsafe { asm!("mov cr2, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}

/// CR3: the current page-table root.
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR4.
pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: reading CR4 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// The new value must keep protected mode, paging and write protection as Keel set them up.
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Writes CR3 (switches page tables).
///
/// # Safety
/// `v` must point at a valid PML4 that maps everything Keel touches, including the current code and stack.
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
/// The new value must keep PAE and the features Keel relies on.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// CR4 bits Keel names.
pub mod cr4 {
    /// VMX enable.
    pub const VMXE: u64 = 1 << 13;
    /// OS supports FXSAVE/FXRSTOR.
    pub const OSFXSR: u64 = 1 << 9;
}

/// RFLAGS.
pub fn read_rflags() -> u64 {
    let v;
    // SAFETY: pushfq/pop only use the stack slot they create.
    unsafe { asm!("pushfq", "pop {}", out(reg) v, options(nomem, preserves_flags)) };
    v
}

/// Enables interrupts and halts until the next one, atomically (no wake-up is lost between the two).
#[inline]
pub fn enable_interrupts_and_halt() {
    // SAFETY: Keel's IDT is loaded before any CPU enables interrupts; `sti; hlt` touches no memory.
    unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
}

/// Disables interrupts on this CPU.
#[inline]
pub fn disable_interrupts() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Enables interrupts on this CPU.
#[inline]
pub fn enable_interrupts() {
    // SAFETY: Keel's IDT is loaded before any CPU enables interrupts.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Stops this CPU for good: interrupts off, halt forever (NMIs return to the halt).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt touch no memory.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// CPU vendor, from CPUID leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel
    Intel,
    /// AuthenticAMD (or HygonGenuine)
    Amd,
    /// Anything else.
    Other,
}

/// Identification of the boot CPU.
#[derive(Clone, Debug)]
pub struct CpuIdent {
    /// Vendor.
    pub vendor: Vendor,
    /// Vendor string.
    pub vendor_string: alloc::string::String,
    /// Brand string, if any.
    pub brand: alloc::string::String,
    /// Display family, model, stepping.
    pub family: u8,
    /// Display model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

/// Reads vendor, family, model and stepping with CPUID.
pub fn identify() -> CpuIdent {
    use alloc::string::ToString;
    let c = raw_cpuid::CpuId::new();
    let vendor_string = c.get_vendor_info().map(|v| v.as_str().to_string()).unwrap_or_default();
    let vendor = match vendor_string.as_str() {
        "GenuineIntel" => Vendor::Intel,
        "AuthenticAMD" | "HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    };
    let brand = c.get_processor_brand_string().map(|b| b.as_str().trim().to_string()).unwrap_or_default();
    let (family, model, stepping) =
        c.get_feature_info().map(|f| (f.family_id(), f.model_id(), f.stepping_id())).unwrap_or_default();
    CpuIdent { vendor, vendor_string, brand, family, model, stepping }
}
