//! x86 instructions the runtime and the tests need, each behind a small wrapper.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, CpuidResult};

/// `cpuid` with `leaf` in EAX and `subleaf` in ECX.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

/// CPU vendors, for the choice of hypercall instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// AuthenticAMD or HygonGenuine: VMMCALL.
    Amd,
    /// GenuineIntel and everyone else: VMCALL.
    Intel,
}

/// The vendor from CPUID leaf 0.
pub fn vendor() -> Vendor {
    let r = cpuid(0, 0);
    let mut id = [0u8; 12];
    id[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&r.edx.to_le_bytes());
    id[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    match &id {
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Intel,
    }
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist (or the caller must be ready for #GP, see [`crate::exinfo::rdmsr`]).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller vouches for the MSR; RDMSR has no memory operands.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// Whatever the MSR controls must stay consistent with what the program assumes.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and value. Not `nomem`: an MSR write may make the hypervisor
    // write guest memory (the hypercall page).
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack)) };
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port's device must tolerate the write.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes a 32-bit value to an I/O port.
///
/// # Safety
/// The port's device must tolerate the write.
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the port.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear: we never set it).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Disables interrupts.
pub fn cli() {
    // SAFETY: masking interrupts on this vCPU has no memory effects the compiler could miss.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Enables interrupts.
pub fn sti() {
    // SAFETY: the IDT is loaded before any code enables interrupts; handlers preserve every register.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// `sti; hlt`: enables interrupts and sleeps until one arrives (STI's one-instruction shadow means an
/// interrupt that is already pending wakes the HLT instead of slipping in before it). Interrupts stay enabled.
pub fn sti_hlt() {
    // SAFETY: as for `sti`; memory is clobbered because interrupt handlers may have changed it.
    unsafe { asm!("sti", "hlt", options(nostack)) };
}

/// Whether interrupts are enabled (RFLAGS.IF).
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Sleeps with interrupts enabled until `done()` holds; returns with interrupts disabled.
///
/// `done` is checked with interrupts off, so a wake-up that arrives between the check and the HLT is not lost.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    loop {
        cli();
        if done() {
            return;
        }
        sti_hlt();
    }
}

/// Stops this vCPU for good (HLT with interrupts off; under Xen that takes the vCPU down).
pub fn halt_forever() -> ! {
    loop {
        cli();
        // SAFETY: halting has no memory effects.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}

/// Loads the IDT register.
///
/// # Safety
/// `base..base + limit + 1` must hold valid gates for every vector that can arrive (or the caller wants the
/// resulting fault, as the triple-fault test does).
pub unsafe fn lidt(base: u64, limit: u16) {
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr { limit, base };
    // SAFETY: the caller vouches for the table; LIDT reads the 10-byte operand.
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) };
}

/// The CR2 register (the last page-fault address).
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}
