//! The virtual local APIC a PVH guest needs (x2APIC mode only: vCPUs start with it enabled, as firmware
//! would, so Linux never touches the xAPIC MMIO page): ID/version, TPR/PPR, SVR, ISR/IRR/TMR, EOI, LVTs, the
//! timer registers, ICR (fixed, NMI, INIT, SIPI, shorthands) and SELF_IPI. Pure state and decisions; the
//! caller delivers what it returns.

use core::sync::atomic::{AtomicU64, Ordering};

/// x2APIC MSR range.
pub const MSR_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const MSR_LAST: u32 = 0x8ff;

/// Register indices (MSR - 0x800).
mod reg {
    pub const ID: u32 = 0x02;
    pub const VERSION: u32 = 0x03;
    pub const TPR: u32 = 0x08;
    pub const PPR: u32 = 0x0a;
    pub const EOI: u32 = 0x0b;
    pub const LDR: u32 = 0x0d;
    pub const SVR: u32 = 0x0f;
    pub const ISR0: u32 = 0x10;
    pub const TMR0: u32 = 0x18;
    pub const IRR0: u32 = 0x20;
    pub const ESR: u32 = 0x28;
    pub const LVT_CMCI: u32 = 0x2f;
    pub const ICR: u32 = 0x30;
    pub const TIMER_INITIAL: u32 = 0x38;
    pub const TIMER_CURRENT: u32 = 0x39;
    pub const TIMER_DIVIDE: u32 = 0x3e;
    pub const SELF_IPI: u32 = 0x3f;
}

const LVT_MASK: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
const SVR_ENABLE: u32 = 1 << 8;
/// Timer input clock the guest sees (1 GHz bus, as Xen's vLAPIC uses a 1 ns tick before the divider).
pub const BUS_HZ: u64 = 1_000_000_000;

/// Who an IPI goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// One APIC id.
    One(u32),
    /// The sender.
    SelfOnly,
    /// Everyone.
    All,
    /// Everyone but the sender.
    AllButSelf,
}

/// What an ICR write asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiRequest {
    /// Fixed interrupt `vector`.
    Fixed { dest: Dest, vector: u8 },
    /// NMI.
    Nmi { dest: Dest },
    /// INIT (assert).
    Init { dest: Dest },
    /// Start-up at `vector << 12`.
    Startup { dest: Dest, vector: u8 },
}

/// Decodes an x2APIC ICR value.
pub fn decode_icr(icr: u64) -> Option<IpiRequest> {
    let vector = icr as u8;
    let mode = (icr >> 8) & 7;
    let dest = match (icr >> 18) & 3 {
        0 => Dest::One((icr >> 32) as u32),
        1 => Dest::SelfOnly,
        2 => Dest::All,
        _ => Dest::AllButSelf,
    };
    match mode {
        0 | 1 => Some(IpiRequest::Fixed { dest, vector }), // fixed, lowest priority (delivered as fixed)
        4 => Some(IpiRequest::Nmi { dest }),
        5 if (icr >> 14) & 1 == 1 || (icr >> 15) & 1 == 0 => Some(IpiRequest::Init { dest }),
        5 => None, // INIT level de-assert: no effect
        6 => Some(IpiRequest::Startup { dest, vector }),
        _ => None,
    }
}

/// Result of a guest write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    /// Nothing else to do.
    None,
    /// Send this IPI.
    Ipi(IpiRequest),
    /// The timer was (re)armed or stopped: re-read `timer_deadline`.
    Timer,
    /// The write is invalid: inject #GP.
    Fault,
}

/// One vCPU's local APIC.
pub struct Vlapic {
    id: u32,
    /// Interrupt request bits; other CPUs set them, hence atomics.
    irr: [AtomicU64; 4],
    isr: [u64; 4],
    tpr: u32,
    svr: u32,
    esr: u32,
    lvt: [u32; 7], // CMCI, timer, thermal, perf, LINT0, LINT1, error
    timer_initial: u32,
    timer_divide: u32,
    /// Host ns when the current countdown started.
    timer_start: u64,
    /// Host ns of the next expiry (0 = stopped).
    pub timer_deadline: AtomicU64,
}

fn lvt_index(r: u32) -> Option<usize> {
    match r {
        reg::LVT_CMCI => Some(0),
        0x32..=0x37 => Some((r - 0x32 + 1) as usize),
        _ => None,
    }
}

impl Vlapic {
    /// The reset state of vCPU `id` (x2APIC id = vCPU id).
    pub fn new(id: u32) -> Self {
        Self {
            id,
            irr: [const { AtomicU64::new(0) }; 4],
            isr: [0; 4],
            tpr: 0,
            svr: 0xff,
            esr: 0,
            lvt: [LVT_MASK; 7],
            timer_initial: 0,
            timer_divide: 0,
            timer_start: 0,
            timer_deadline: AtomicU64::new(0),
        }
    }

    /// APIC id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn divisor(&self) -> u64 {
        let d = (self.timer_divide & 3) | ((self.timer_divide >> 1) & 4);
        if d == 7 {
            1
        } else {
            2 << d
        }
    }

    /// Raises `vector` (safe to call from another CPU through a shared reference).
    pub fn set_irr(&self, vector: u8) {
        self.irr[(vector / 64) as usize].fetch_or(1 << (vector % 64), Ordering::AcqRel);
    }

    fn highest(bits: &[u64; 4]) -> Option<u8> {
        (0..4).rev().find(|&i| bits[i] != 0).map(|i| (i as u32 * 64 + 63 - bits[i].leading_zeros()) as u8)
    }

    fn irr_snapshot(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.irr[i].load(Ordering::Acquire))
    }

    fn ppr(&self) -> u32 {
        let isrv = Self::highest(&self.isr).map_or(0, |v| v as u32);
        if (self.tpr & 0xf0) >= (isrv & 0xf0) {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// The vector to inject now, if any (highest IRR above the processor priority, APIC enabled).
    pub fn pending(&self) -> Option<u8> {
        if self.svr & SVR_ENABLE == 0 {
            return None;
        }
        let v = Self::highest(&self.irr_snapshot())?;
        ((v as u32 & 0xf0) > (self.ppr() & 0xf0)).then_some(v)
    }

    /// Marks `vector` as in service (after injecting it).
    pub fn accept(&mut self, vector: u8) {
        self.irr[(vector / 64) as usize].fetch_and(!(1 << (vector % 64)), Ordering::AcqRel);
        self.isr[(vector / 64) as usize] |= 1 << (vector % 64);
    }

    /// Handles the expiry of the timer at host time `now`; returns the vector to raise.
    pub fn timer_expired(&mut self, now: u64) -> Option<u8> {
        let lvt = self.lvt[1];
        if lvt & LVT_PERIODIC != 0 && self.timer_initial != 0 {
            let period = self.timer_initial as u64 * self.divisor() * 1_000_000_000 / BUS_HZ;
            self.timer_start = now;
            self.timer_deadline.store(now + period.max(1000), Ordering::Release);
        } else {
            self.timer_deadline.store(0, Ordering::Release);
        }
        (lvt & LVT_MASK == 0).then_some(lvt as u8)
    }

    /// RDMSR of an x2APIC register; `None` → #GP.
    pub fn read(&self, msr: u32, now: u64) -> Option<u64> {
        let r = msr.checked_sub(MSR_FIRST)?;
        Some(match r {
            reg::ID => self.id as u64,
            reg::VERSION => 0x0005_0014, // version 0x14, 6 LVT entries
            reg::TPR => self.tpr as u64,
            reg::PPR => self.ppr() as u64,
            reg::LDR => (((self.id >> 4) << 16) | (1 << (self.id & 0xf))) as u64,
            reg::SVR => self.svr as u64,
            0x10..=0x17 => ((self.isr[((r - reg::ISR0) / 2) as usize] >> (32 * ((r - reg::ISR0) % 2))) as u32) as u64,
            0x18..=0x1f => {
                let _ = reg::TMR0;
                0
            }
            0x20..=0x27 => {
                let irr = self.irr_snapshot();
                ((irr[((r - reg::IRR0) / 2) as usize] >> (32 * ((r - reg::IRR0) % 2))) as u32) as u64
            }
            reg::ESR => self.esr as u64,
            reg::ICR => 0,
            reg::TIMER_INITIAL => self.timer_initial as u64,
            reg::TIMER_CURRENT => {
                let deadline = self.timer_deadline.load(Ordering::Acquire);
                if deadline == 0 || now >= deadline {
                    0
                } else {
                    ((deadline - now) * BUS_HZ / 1_000_000_000 / self.divisor()).min(u32::MAX as u64)
                }
            }
            reg::TIMER_DIVIDE => self.timer_divide as u64,
            _ => match lvt_index(r) {
                Some(i) => self.lvt[i] as u64,
                None => return None,
            },
        })
    }

    /// WRMSR of an x2APIC register.
    pub fn write(&mut self, msr: u32, value: u64, now: u64) -> WriteEffect {
        let Some(r) = msr.checked_sub(MSR_FIRST) else { return WriteEffect::Fault };
        let v32 = value as u32;
        match r {
            reg::TPR => self.tpr = v32 & 0xff,
            reg::EOI => {
                if let Some(v) = Self::highest(&self.isr) {
                    self.isr[(v / 64) as usize] &= !(1 << (v % 64));
                }
            }
            reg::SVR => self.svr = v32 & 0x1ff,
            reg::ESR => self.esr = 0,
            reg::ICR => {
                return match decode_icr(value) {
                    Some(req) => WriteEffect::Ipi(req),
                    None => WriteEffect::None,
                }
            }
            reg::SELF_IPI => {
                return WriteEffect::Ipi(IpiRequest::Fixed { dest: Dest::SelfOnly, vector: v32 as u8 });
            }
            reg::TIMER_INITIAL => {
                self.timer_initial = v32;
                self.timer_start = now;
                let ns = v32 as u64 * self.divisor() * 1_000_000_000 / BUS_HZ;
                self.timer_deadline.store(if v32 == 0 { 0 } else { now + ns.max(1000) }, Ordering::Release);
                return WriteEffect::Timer;
            }
            reg::TIMER_DIVIDE => self.timer_divide = v32 & 0xb,
            reg::ID | reg::VERSION | reg::PPR | reg::LDR | reg::TIMER_CURRENT => return WriteEffect::Fault,
            0x10..=0x27 => return WriteEffect::Fault,
            _ => match lvt_index(r) {
                Some(i) => {
                    self.lvt[i] = v32;
                    if i == 1 {
                        return WriteEffect::Timer;
                    }
                }
                None => return WriteEffect::Fault,
            },
        }
        WriteEffect::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icr_decoding() {
        assert_eq!(decode_icr(0x0000_0003_0000_4500), Some(IpiRequest::Init { dest: Dest::One(3) }));
        assert_eq!(decode_icr(0x0000_0003_0000_0699), Some(IpiRequest::Startup { dest: Dest::One(3), vector: 0x99 }));
        assert_eq!(decode_icr(0x000c_04fc), Some(IpiRequest::Nmi { dest: Dest::AllButSelf }));
        assert_eq!(decode_icr(0x0004_00f2), Some(IpiRequest::Fixed { dest: Dest::SelfOnly, vector: 0xf2 }));
    }

    #[test]
    fn priority_and_eoi() {
        let mut l = Vlapic::new(2);
        assert_eq!(l.read(0x802, 0), Some(2));
        assert_eq!(l.read(0x80d, 0), Some(1 << 2));
        l.set_irr(0x40);
        assert_eq!(l.pending(), None, "APIC software-disabled");
        l.write(0x80f, 0x1ff, 0);
        assert_eq!(l.pending(), Some(0x40));
        l.accept(0x40);
        l.set_irr(0x41);
        assert_eq!(l.pending(), None, "same priority class as the one in service");
        l.set_irr(0x90);
        assert_eq!(l.pending(), Some(0x90));
        l.accept(0x90);
        l.write(0x80b, 0, 0); // EOI 0x90
        l.write(0x80b, 0, 0); // EOI 0x40
        assert_eq!(l.pending(), Some(0x41));
        l.write(0x808, 0x50, 0);
        assert_eq!(l.pending(), None, "masked by TPR");
        assert_eq!(l.write(0x802, 5, 0), WriteEffect::Fault);
        assert_eq!(l.read(0x8ff, 0), None);
    }

    #[test]
    fn one_shot_and_periodic_timer() {
        let mut l = Vlapic::new(0);
        l.write(0x83e, 0xb, 0); // divide by 1
        l.write(0x832, 0xef, 0); // one-shot, vector 0xef
        assert_eq!(l.write(0x838, 1_000_000, 100), WriteEffect::Timer);
        assert_eq!(l.timer_deadline.load(Ordering::Relaxed), 100 + 1_000_000);
        assert_eq!(l.read(0x839, 500_100), Some(500_000));
        assert_eq!(l.timer_expired(1_000_100), Some(0xef));
        assert_eq!(l.timer_deadline.load(Ordering::Relaxed), 0);
        l.write(0x832, 0xef | LVT_PERIODIC as u64, 0);
        l.write(0x838, 2_000_000, 0);
        assert_eq!(l.timer_expired(2_000_000), Some(0xef));
        assert_eq!(l.timer_deadline.load(Ordering::Relaxed), 4_000_000);
    }
}
