//! Time: TSC frequency and local APIC timer frequency, calibrated once against CPUID leaf 0x15/0x16 or the PIT,
//! and a monotonic nanosecond clock from the TSC.

use super::{apic, cpu};
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);

/// How the TSC frequency was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// CPUID leaf 0x15 (crystal ratio).
    Cpuid15,
    /// CPUID leaf 0x16 (base frequency).
    Cpuid16,
    /// Counted against the 8254 PIT.
    Pit,
    /// Counted against the ACPI PM timer.
    PmTimer,
}

/// Result of calibration.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// TSC frequency.
    pub tsc_hz: u64,
    /// Local APIC timer frequency at divide-by-16.
    pub apic_timer_hz: u64,
    /// Where the TSC frequency came from.
    pub source: Source,
}

const PIT_HZ: u64 = 1_193_182;
const PIT_CH2_DATA: u16 = 0x42;
const PIT_CMD: u16 = 0x43;
const PORT_B: u16 = 0x61;
/// Calibration window.
const CAL_MS: u64 = 50;

/// Counts TSC and APIC-timer ticks over `CAL_MS` of PIT channel 2.
fn pit_window() -> (u64, u64) {
    let count = (PIT_HZ * CAL_MS / 1000) as u16;
    // SAFETY: ports 0x42/0x43/0x61 are the PIT and system control port B, owned by Keel; channel 2 drives only
    // the speaker gate, which is kept off (bit 1 clear).
    unsafe {
        let b = cpu::inb(PORT_B);
        cpu::outb(PORT_B, b & !0x03); // gate low, speaker off
        cpu::outb(PIT_CMD, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        cpu::outb(PIT_CH2_DATA, count as u8);
        cpu::outb(PIT_CH2_DATA, (count >> 8) as u8);
    }
    apic::timer_start_calibration();
    let a0 = apic::timer_current();
    let t0 = cpu::rdtsc();
    // SAFETY: as above; raising the gate starts the countdown, OUT2 (bit 5) rises when it reaches zero.
    unsafe {
        let b = cpu::inb(PORT_B);
        cpu::outb(PORT_B, (b & !0x02) | 0x01);
        while cpu::inb(PORT_B) & 0x20 == 0 {
            core::hint::spin_loop();
        }
    }
    let t1 = cpu::rdtsc();
    let a1 = apic::timer_current();
    let per_s = |d: u64| d * 1000 / CAL_MS;
    (per_s(t1 - t0), per_s(a0.wrapping_sub(a1) as u64))
}

/// ACPI PM timer frequency.
const PM_TIMER_HZ: u64 = 3_579_545;
/// PM-timer calibration window.
const PM_CAL_MS: u64 = 200;

/// Counts TSC and APIC-timer ticks over `PM_CAL_MS` of the ACPI PM timer (free-running, 24 or 32 bits): a
/// longer and steadier window than the PIT's 16-bit countdown allows.
fn pm_timer_window(port: u16, wide: bool) -> (u64, u64) {
    let mask: u64 = if wide { 0xffff_ffff } else { 0x00ff_ffff };
    let read = || -> u64 {
        let v: u32;
        // SAFETY: the FADT's PM timer port; reading it has no side effects.
        unsafe {
            core::arch::asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags))
        };
        v as u64 & mask
    };
    let want = PM_TIMER_HZ * PM_CAL_MS / 1000;
    apic::timer_start_calibration();
    let p0 = read();
    let (t0, a0) = (cpu::rdtsc(), apic::timer_current());
    let mut p1;
    loop {
        p1 = read();
        if (p1.wrapping_sub(p0) & mask) >= want {
            break;
        }
        core::hint::spin_loop();
    }
    let (t1, a1) = (cpu::rdtsc(), apic::timer_current());
    let ticks = (p1.wrapping_sub(p0) & mask).max(1);
    let per_s = |d: u64| (d as u128 * PM_TIMER_HZ as u128 / ticks as u128) as u64;
    (per_s(t1 - t0), per_s(a0.wrapping_sub(a1) as u64))
}

static PM_TIMER: spin::Once<(u16, bool)> = spin::Once::new();

/// Offers the ACPI PM timer for calibration (from the FADT).
pub fn set_pm_timer(port: u16, wide: bool) {
    PM_TIMER.call_once(|| (port, wide));
}

/// Calibrates TSC and APIC timer; call once on the boot CPU with its APIC enabled.
pub fn calibrate() -> Calibration {
    let c = raw_cpuid::CpuId::new();
    let from_cpuid = c.get_tsc_info().and_then(|t| t.tsc_frequency().map(|hz| (hz, Source::Cpuid15))).or_else(|| {
        c.get_processor_frequency_info()
            .map(|f| f.processor_base_frequency() as u64 * 1_000_000)
            .filter(|&hz| hz > 0)
            .map(|hz| (hz, Source::Cpuid16))
    });
    let (counted_tsc, apic_hz, counted_source) = match PM_TIMER.get() {
        Some(&(port, wide)) => {
            let (t, a) = pm_timer_window(port, wide);
            (t, a, Source::PmTimer)
        }
        None => {
            let (t, a) = pit_window();
            (t, a, Source::Pit)
        }
    };
    let (tsc_hz, source) = from_cpuid.unwrap_or((counted_tsc, counted_source));
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    TSC_AT_BOOT.store(cpu::rdtsc(), Ordering::Relaxed);
    apic::set_timer_hz(apic_hz);
    Calibration { tsc_hz, apic_timer_hz: apic_hz, source }
}

/// Nanoseconds since calibration, monotonic on every CPU (the TSCs are synchronised at reset).
pub fn now_ns() -> u64 {
    ticks_to_ns(cpu::rdtsc().saturating_sub(TSC_AT_BOOT.load(Ordering::Relaxed)), TSC_HZ.load(Ordering::Relaxed))
}

/// Converts TSC ticks to nanoseconds at `hz`.
pub fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    (ticks as u128 * 1_000_000_000 / hz as u128) as u64
}

/// Busy-waits for `us` microseconds.
pub fn delay_us(us: u64) {
    let end = now_ns() + us * 1000;
    while now_ns() < end {
        core::hint::spin_loop();
    }
}

/// The calibrated TSC frequency.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// System time (ns since calibration) at TSC value `tsc`.
pub fn tsc_to_ns(tsc: u64) -> u64 {
    ticks_to_ns(tsc.saturating_sub(TSC_AT_BOOT.load(Ordering::Relaxed)), TSC_HZ.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversion() {
        assert_eq!(ticks_to_ns(3_000_000_000, 3_000_000_000), 1_000_000_000);
        assert_eq!(ticks_to_ns(u64::MAX, 1_000_000_000), u64::MAX);
        assert_eq!(ticks_to_ns(5, 0), 0);
    }
}
