//! The local APIC, in x2APIC mode (MSRs) where the CPU has it, xAPIC (MMIO) otherwise: enable, EOI, IPIs and
//! the per-CPU timer.

use super::cpu::{self, Msr};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Local APIC registers Keel reads: each readable in both modes (xAPIC MMIO offsets; the x2APIC MSR is
/// 0x800 + offset/16). Write-only registers (EOI, self-IPI) are not here, so a read of one, which faults in x2APIC
/// mode, cannot be written; nor is the ICR, whose layout differs between the modes ([`send_ipi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReadReg {
    Id = 0x20,
    Version = 0x30,
    Tpr = 0x80,
    Spurious = 0xf0,
    Esr = 0x280,
    LvtTimer = 0x320,
    LvtLint0 = 0x350,
    LvtLint1 = 0x360,
    LvtError = 0x370,
    TimerInitial = 0x380,
    TimerCurrent = 0x390,
    TimerDivide = 0x3e0,
}

/// Local APIC registers Keel writes: each writable in both modes. Read-only registers (ID, which x2APIC makes
/// read-only, version, current count) are not here; nor is the ICR ([`send_ipi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum WriteReg {
    Tpr = 0x80,
    Eoi = 0xb0,
    Spurious = 0xf0,
    Esr = 0x280,
    LvtTimer = 0x320,
    LvtLint0 = 0x350,
    LvtLint1 = 0x360,
    LvtError = 0x370,
    TimerInitial = 0x380,
    TimerDivide = 0x3e0,
}

/// xAPIC ICR offsets (MMIO only: x2APIC has one 64-bit ICR MSR instead).
const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;
/// The x2APIC ICR MSR.
const X2APIC_ICR: u32 = 0x830;

/// The x2APIC MSR of a register at xAPIC offset `offset`.
const fn x2apic_msr(offset: u32) -> u32 {
    0x800 + (offset >> 4)
}

/// Vector of the spurious interrupt.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0xf0;
/// Vector of the APIC error interrupt.
pub const ERROR_VECTOR: u8 = 0xfe;

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const ICR_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
/// Timer divide configuration value for "divide by 16".
const DIVIDE_BY_16: u32 = 0b0011;

/// Delivery modes of an IPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    /// A fixed-vector interrupt.
    Fixed(u8),
    /// NMI.
    Nmi,
    /// INIT (assert).
    Init,
    /// Start-up at `vector * 4096`.
    Startup(u8),
}

impl Ipi {
    fn icr_low(self) -> u32 {
        match self {
            Ipi::Fixed(v) => v as u32 | ICR_LEVEL_ASSERT,
            Ipi::Nmi => 4 << 8 | ICR_LEVEL_ASSERT,
            Ipi::Init => 5 << 8 | ICR_LEVEL_ASSERT,
            Ipi::Startup(v) => v as u32 | 6 << 8 | ICR_LEVEL_ASSERT,
        }
    }
}

const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(0);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0xfee0_0000);
/// Timer ticks per second at divide-by-16 (set by calibration).
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// Whether the local APIC runs in x2APIC mode.
pub fn is_x2apic() -> bool {
    MODE.load(Ordering::Relaxed) == MODE_X2APIC
}

fn read(reg: ReadReg) -> u32 {
    if is_x2apic() {
        // SAFETY: x2APIC mode is enabled, so the 0x800-0x8ff MSR range exists, and every `ReadReg` is readable
        // there (no write-only register is one).
        unsafe { cpu::rdmsr_raw(x2apic_msr(reg as u32)) as u32 }
    } else {
        xapic_read(reg as u64)
    }
}

fn write(reg: WriteReg, v: u32) {
    if is_x2apic() {
        // SAFETY: x2APIC mode is enabled; every `WriteReg` is writable there (no read-only register is one), and
        // these registers only affect interrupt delivery.
        unsafe { cpu::wrmsr_raw(x2apic_msr(reg as u32), v as u64) };
    } else {
        xapic_write(reg as u64, v);
    }
}

/// Reads the xAPIC register at `offset` (one of the `ReadReg` offsets or the ICR).
fn xapic_read(offset: u64) -> u32 {
    let addr = XAPIC_BASE.load(Ordering::Relaxed) + offset;
    // SAFETY: the xAPIC page is identity-mapped uncached by Keel's page tables; callers pass the offset of a
    // defined readable register, and a 32-bit aligned read of it has no effect on memory.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Writes the xAPIC register at `offset` (one of the `WriteReg` offsets or the ICR).
fn xapic_write(offset: u64, v: u32) {
    let addr = XAPIC_BASE.load(Ordering::Relaxed) + offset;
    // SAFETY: as in `xapic_read`; callers pass a writable register's offset, and the write goes to the APIC, not
    // to RAM.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) };
}

/// Chooses the mode on the boot CPU: x2APIC when CPUID offers it, xAPIC at `mmio_base` otherwise.
pub fn select_mode(mmio_base: u64) {
    let x2 = raw_cpuid::CpuId::new().get_feature_info().is_some_and(|f| f.has_x2apic());
    XAPIC_BASE.store(mmio_base, Ordering::Relaxed);
    MODE.store(if x2 { MODE_X2APIC } else { MODE_XAPIC }, Ordering::Relaxed);
}

/// Enables this CPU's local APIC in the selected mode, with every local interrupt masked.
pub fn init_this_cpu() {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC; setting the enable (and x2APIC) bits is the
    // architected way to turn it on and does not move the MMIO base.
    unsafe {
        let mut base = cpu::rdmsr(Msr::ApicBase) | APIC_BASE_ENABLE;
        if is_x2apic() {
            base |= APIC_BASE_X2APIC;
        }
        cpu::wrmsr(Msr::ApicBase, base);
    }
    write(WriteReg::Tpr, 0);
    write(WriteReg::LvtTimer, LVT_MASKED);
    write(WriteReg::LvtLint0, LVT_MASKED);
    write(WriteReg::LvtLint1, LVT_MASKED);
    write(WriteReg::LvtError, ERROR_VECTOR as u32);
    write(WriteReg::Esr, 0);
    write(WriteReg::Spurious, SVR_ENABLE | SPURIOUS_VECTOR as u32);
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    if is_x2apic() {
        read(ReadReg::Id)
    } else {
        read(ReadReg::Id) >> 24
    }
}

/// Signals end of interrupt.
pub fn eoi() {
    write(WriteReg::Eoi, 0);
}

/// Sends an IPI to the CPU with APIC id `dest` and waits until the APIC has accepted it (xAPIC).
pub fn send_ipi(dest: u32, ipi: Ipi) {
    if is_x2apic() {
        // SAFETY: x2APIC mode; the ICR MSR takes destination and command in one write.
        unsafe { cpu::wrmsr_raw(X2APIC_ICR, (dest as u64) << 32 | ipi.icr_low() as u64) };
    } else {
        xapic_write(XAPIC_ICR_HIGH, dest << 24);
        xapic_write(XAPIC_ICR_LOW, ipi.icr_low());
        while xapic_read(XAPIC_ICR_LOW) & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Starts a one-shot countdown from the maximum count, masked, for calibration.
pub fn timer_start_calibration() {
    write(WriteReg::TimerDivide, DIVIDE_BY_16);
    write(WriteReg::LvtTimer, LVT_MASKED);
    write(WriteReg::TimerInitial, u32::MAX);
}

/// The current countdown value.
pub fn timer_current() -> u32 {
    read(ReadReg::TimerCurrent)
}

/// Records the calibrated timer frequency (ticks per second at divide-by-16).
pub fn set_timer_hz(hz: u64) {
    TIMER_HZ.store(hz, Ordering::Relaxed);
}

/// The calibrated timer frequency.
pub fn timer_hz() -> u64 {
    TIMER_HZ.load(Ordering::Relaxed)
}

/// Arms this CPU's timer to interrupt once, `ns` from now, on [`TIMER_VECTOR`].
pub fn timer_oneshot_ns(ns: u64) {
    let count = (ns as u128 * timer_hz() as u128 / 1_000_000_000).clamp(1, u32::MAX as u128) as u32;
    write(WriteReg::TimerDivide, DIVIDE_BY_16);
    write(WriteReg::LvtTimer, TIMER_VECTOR as u32 & !LVT_TIMER_PERIODIC);
    write(WriteReg::TimerInitial, count);
}

/// The APIC version register (for the log).
pub fn version() -> u32 {
    read(ReadReg::Version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x2apic_msrs() {
        assert_eq!(x2apic_msr(ReadReg::Id as u32), 0x802);
        assert_eq!(x2apic_msr(WriteReg::Eoi as u32), 0x80b);
        assert_eq!(x2apic_msr(ReadReg::TimerCurrent as u32), 0x839);
        assert_eq!(x2apic_msr(XAPIC_ICR_LOW as u32), X2APIC_ICR);
    }
}
