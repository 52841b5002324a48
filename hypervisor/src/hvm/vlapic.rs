//! The virtual local APIC a PVH guest needs (x2APIC mode only: vCPUs start with it enabled, as firmware
//! would, so Linux never touches the xAPIC MMIO page): ID/version, TPR/PPR, SVR, ISR/IRR/TMR, EOI, LVTs, the
//! timer registers, ICR (fixed, NMI, INIT, SIPI; physical and logical destinations, broadcast, shorthands) and
//! SELF_IPI. Pure state and decisions; the caller delivers what it returns.

use core::sync::atomic::{AtomicU64, Ordering};
use keel_abi::domctl::{lapic, HvmHwLapic, HvmHwLapicRegs};
use keel_abi::Zeroable;

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
/// ESR bit 5: a fixed IPI with a vector below 16 was not sent.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ICR bit 11: logical destination mode.
const ICR_LOGICAL: u64 = 1 << 11;
/// The x2APIC broadcast destination (both modes).
const BROADCAST: u32 = 0xffff_ffff;
/// Timer input clock the guest sees (1 GHz bus, as Xen's vLAPIC uses a 1 ns tick before the divider).
pub const BUS_HZ: u64 = 1_000_000_000;

/// Who an IPI goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Physical mode: one x2APIC id.
    One(u32),
    /// Logical mode: a cluster (bits 31:16) and a bitmap of its members (bits 15:0), matched against each
    /// target's logical id ([`x2apic_ldr`]).
    Logical(u32),
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

/// The logical id (LDR) an x2APIC derives from its x2APIC id, as hardware does: cluster `id >> 4` in bits
/// 31:16, bit `id & 15` set in bits 15:0.
pub const fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

impl Dest {
    /// Whether the vCPU with x2APIC id `target` receives an IPI sent by `sender` to this destination.
    pub fn includes(self, target: u32, sender: u32) -> bool {
        match self {
            Dest::One(id) => target == id,
            Dest::Logical(d) => {
                let ldr = x2apic_ldr(target);
                d >> 16 == ldr >> 16 && d & ldr & 0xffff != 0
            }
            Dest::SelfOnly => target == sender,
            Dest::All => true,
            Dest::AllButSelf => target != sender,
        }
    }
}

/// Decodes an x2APIC ICR value. Destination 0xffffffff is the broadcast in both destination modes.
pub fn decode_icr(icr: u64) -> Option<IpiRequest> {
    let vector = icr as u8;
    let mode = (icr >> 8) & 7;
    let dest = match (icr >> 18) & 3 {
        0 => match (icr >> 32) as u32 {
            BROADCAST => Dest::All,
            d if icr & ICR_LOGICAL != 0 => Dest::Logical(d),
            d => Dest::One(d),
        },
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
    /// An EOI retired this vector (an IO-APIC's level-triggered line behind it may be unmasked).
    Eoi(u8),
}

/// One vCPU's local APIC.
pub struct Vlapic {
    id: u32,
    /// Interrupt request bits; other CPUs set them, hence atomics.
    irr: [AtomicU64; 4],
    isr: [u64; 4],
    /// Trigger mode of the vectors accepted (set: level-triggered, from an IO-APIC line); an EOI of such a vector
    /// is broadcast to the IO-APIC (`WriteEffect::Eoi`), so the OS needs no mask-and-retrigger of its own.
    tmr: [u64; 4],
    tpr: u32,
    svr: u32,
    /// ESR as last latched by a write to it.
    esr: u32,
    /// Errors seen since the last ESR write (latched into `esr` by the next one).
    pending_esr: u32,
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
            tmr: [0; 4],
            tpr: 0,
            svr: 0xff,
            esr: 0,
            pending_esr: 0,
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

    /// Host nanoseconds for `count` timer ticks at the current divider (at most 2^32 × 128 ns, about 550 s; the
    /// product is taken in 128 bits so that no count and divider can wrap it).
    fn count_to_ns(&self, count: u32) -> u64 {
        let ns = u128::from(count) * u128::from(self.divisor()) * 1_000_000_000 / u128::from(BUS_HZ);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Timer ticks left in `ns` host nanoseconds at the current divider, as the current-count register shows them.
    fn ns_to_count(&self, ns: u64) -> u64 {
        let count = u128::from(ns) * u128::from(BUS_HZ) / 1_000_000_000 / u128::from(self.divisor());
        count.min(u128::from(u32::MAX)) as u64
    }

    /// Records an APIC error (`ESR_*` bit) and raises the LVT error vector when it is unmasked.
    fn error(&mut self, bit: u32) {
        self.pending_esr |= bit;
        let lvt = self.lvt[6];
        if lvt & LVT_MASK == 0 {
            self.set_irr(lvt as u8);
        }
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

    /// Requests `vector` from a level-triggered line: its TMR bit is set until its EOI.
    pub fn set_irr_level(&mut self, vector: u8) {
        self.tmr[(vector / 64) as usize] |= 1 << (vector % 64);
        self.set_irr(vector);
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
            let period = self.count_to_ns(self.timer_initial);
            self.timer_start = now;
            self.timer_deadline.store(now.saturating_add(period.max(1000)), Ordering::Release);
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
            reg::LDR => x2apic_ldr(self.id) as u64,
            reg::SVR => self.svr as u64,
            0x10..=0x17 => ((self.isr[((r - reg::ISR0) / 2) as usize] >> (32 * ((r - reg::ISR0) % 2))) as u32) as u64,
            0x18..=0x1f => ((self.tmr[((r - reg::TMR0) / 2) as usize] >> (32 * ((r - reg::TMR0) % 2))) as u32) as u64,
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
                    self.ns_to_count(deadline - now)
                }
            }
            reg::TIMER_DIVIDE => self.timer_divide as u64,
            _ => match lvt_index(r) {
                Some(i) => self.lvt[i] as u64,
                None => return None,
            },
        })
    }

    /// The APIC as Xen's LAPIC and LAPIC_REGS save records at host time `now`: enabled in x2APIC mode (the only
    /// mode Keel's vCPUs have), and the register page with the timer's remaining count in its current-count
    /// register. `bsp` marks vCPU 0's APIC base MSR.
    pub fn save(&self, bsp: bool, now: u64) -> (HvmHwLapic, HvmHwLapicRegs) {
        let mut base = lapic::DEFAULT_BASE | lapic::BASE_X2APIC | lapic::BASE_ENABLE;
        if bsp {
            base |= lapic::BASE_BSP;
        }
        let disabled = if self.svr & SVR_ENABLE == 0 { lapic::SW_DISABLED } else { 0 };
        let rec = HvmHwLapic { apic_base_msr: base, disabled, timer_divisor: self.divisor() as u32, tdt_msr: 0 };
        let mut regs = HvmHwLapicRegs::zeroed();
        let mut put = |r: u32, v: u32| {
            let at = (r * 0x10) as usize;
            regs.data[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        for r in [reg::ID, reg::VERSION, reg::TPR, reg::PPR, reg::LDR, reg::SVR, reg::ESR, reg::TIMER_CURRENT]
            .into_iter()
            .chain(0x10..0x18) // ISR
            .chain(0x20..0x28) // IRR
            .chain([reg::LVT_CMCI, reg::TIMER_INITIAL, reg::TIMER_DIVIDE])
            .chain(0x32..0x38)
        {
            if let Some(v) = self.read(MSR_FIRST + r, now) {
                put(r, v as u32);
            }
        }
        (rec, regs)
    }

    /// Whether records can be loaded by [`Self::load`]: the APIC enabled in x2APIC mode (an xAPIC, a disabled one
    /// or a TSC-deadline timer is more than Keel's vCPUs have).
    pub fn loadable(rec: &HvmHwLapic) -> Result<(), &'static str> {
        let want = lapic::BASE_X2APIC | lapic::BASE_ENABLE;
        if rec.apic_base_msr & want != want || rec.disabled & lapic::HW_DISABLED != 0 {
            return Err("the local APIC is not enabled in x2APIC mode");
        }
        if rec.tdt_msr != 0 {
            return Err("the TSC-deadline timer is armed");
        }
        Ok(())
    }

    /// Loads records saved by [`Self::save`] (checked with [`Self::loadable`]) at host time `now`: TPR, SVR, ESR,
    /// ISR, IRR, the LVTs and the timer's divider and initial count; a running timer resumes with the count it had
    /// left. The id stays this vCPU's.
    pub fn load(&mut self, regs: &HvmHwLapicRegs, now: u64) {
        let get = |r: u32| {
            let at = (r * 0x10) as usize;
            u32::from_le_bytes([regs.data[at], regs.data[at + 1], regs.data[at + 2], regs.data[at + 3]])
        };
        self.tpr = get(reg::TPR) & 0xff;
        self.svr = get(reg::SVR) & 0x1ff;
        self.esr = get(reg::ESR);
        self.pending_esr = 0;
        for i in 0..4 {
            let pair = |first: u32| u64::from(get(first + 2 * i)) | u64::from(get(first + 2 * i + 1)) << 32;
            self.isr[i as usize] = pair(reg::ISR0);
            self.irr[i as usize].store(pair(reg::IRR0), Ordering::Release);
        }
        self.lvt[0] = get(reg::LVT_CMCI);
        for (i, r) in (0x32..0x38).enumerate() {
            self.lvt[i + 1] = get(r);
        }
        self.timer_divide = get(reg::TIMER_DIVIDE) & 0xb;
        self.timer_initial = get(reg::TIMER_INITIAL);
        let left = get(reg::TIMER_CURRENT);
        self.timer_start = now;
        let deadline =
            if self.timer_initial == 0 || left == 0 { 0 } else { now.saturating_add(self.count_to_ns(left).max(1000)) };
        self.timer_deadline.store(deadline, Ordering::Release);
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
                    self.tmr[(v / 64) as usize] &= !(1 << (v % 64));
                    return WriteEffect::Eoi(v);
                }
            }
            reg::SVR => self.svr = v32 & 0x1ff,
            // x2APIC: only 0 may be written; the write latches the errors seen since the last one.
            reg::ESR if value != 0 => return WriteEffect::Fault,
            reg::ESR => self.esr = core::mem::take(&mut self.pending_esr),
            reg::ICR => {
                return match decode_icr(value) {
                    // A fixed IPI with a vector below 16 is an illegal vector: not sent, the sender's ESR says so.
                    Some(IpiRequest::Fixed { vector, .. }) if vector < 16 => {
                        self.error(ESR_SEND_ILLEGAL_VECTOR);
                        WriteEffect::None
                    }
                    Some(req) => WriteEffect::Ipi(req),
                    None => WriteEffect::None,
                };
            }
            reg::SELF_IPI if (v32 as u8) < 16 => self.error(ESR_SEND_ILLEGAL_VECTOR),
            reg::SELF_IPI => {
                return WriteEffect::Ipi(IpiRequest::Fixed { dest: Dest::SelfOnly, vector: v32 as u8 });
            }
            reg::TIMER_INITIAL => {
                self.timer_initial = v32;
                self.timer_start = now;
                let ns = self.count_to_ns(v32).max(1000);
                self.timer_deadline.store(if v32 == 0 { 0 } else { now.saturating_add(ns) }, Ordering::Release);
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
    fn x2apic_broadcast_and_logical_destinations() {
        // Destination 0xffffffff is everyone, in physical and in logical mode.
        assert_eq!(decode_icr(0xffff_ffff_0000_00f3), Some(IpiRequest::Fixed { dest: Dest::All, vector: 0xf3 }));
        assert_eq!(decode_icr(0xffff_ffff_0000_08f3), Some(IpiRequest::Fixed { dest: Dest::All, vector: 0xf3 }));
        assert_eq!(decode_icr(0xffff_ffff_0000_0400), Some(IpiRequest::Nmi { dest: Dest::All }));
        // Logical mode (bit 11): cluster 1, members 0 and 2 = x2APIC ids 16 and 18.
        let req = decode_icr(0x0001_0005_0000_08f3);
        assert_eq!(req, Some(IpiRequest::Fixed { dest: Dest::Logical(0x0001_0005), vector: 0xf3 }));
        let Some(IpiRequest::Fixed { dest, .. }) = req else { unreachable!() };
        let hit: Vec<u32> = (0..64).filter(|&t| dest.includes(t, 0)).collect();
        assert_eq!(hit, [16, 18]);
        // Cluster 0, members 1 and 3.
        let hit: Vec<u32> = (0..64).filter(|&t| Dest::Logical(0xa).includes(t, 0)).collect();
        assert_eq!(hit, [1, 3]);
        // Physical mode reaches only the one id; shorthands as before.
        assert!(Dest::One(5).includes(5, 0) && !Dest::One(5).includes(4, 0));
        assert!(Dest::AllButSelf.includes(1, 0) && !Dest::AllButSelf.includes(0, 0));
        assert!(Dest::SelfOnly.includes(3, 3) && !Dest::SelfOnly.includes(2, 3));
        // The LDR the guest reads is the one logical destinations match.
        let l = Vlapic::new(18);
        assert_eq!(l.read(0x80d, 0), Some(0x0001_0004));
        assert_eq!(x2apic_ldr(18), 0x0001_0004);
    }

    #[test]
    fn fixed_ipi_with_vector_below_16_is_an_illegal_vector() {
        let mut l = Vlapic::new(0);
        l.write(0x80f, 0x1ff, 0);
        l.write(0x837, 0xfe, 0); // LVT error: vector 0xfe, unmasked
        for v in [0u64, 2, 15] {
            assert_eq!(l.write(0x830, (1 << 32) | v, 0), WriteEffect::None, "vector {v} must not be sent");
            assert_eq!(l.write(0x83f, v, 0), WriteEffect::None, "self IPI vector {v} must not be sent");
        }
        // The error is latched into ESR by the next ESR write, and the error interrupt is raised.
        assert_eq!(l.read(0x828, 0), Some(0));
        assert_eq!(l.write(0x828, 0, 0), WriteEffect::None);
        assert_eq!(l.read(0x828, 0), Some(ESR_SEND_ILLEGAL_VECTOR as u64));
        assert_eq!(l.pending(), Some(0xfe));
        l.write(0x828, 0, 0);
        assert_eq!(l.read(0x828, 0), Some(0));
        assert_eq!(l.write(0x828, 1, 0), WriteEffect::Fault, "x2APIC ESR writes must be 0");
        // Vector 16 is legal; NMI/INIT ignore the vector field.
        let one = |v: u64| WriteEffect::Ipi(IpiRequest::Fixed { dest: Dest::One(1), vector: v as u8 });
        assert_eq!(l.write(0x830, (1 << 32) | 16, 0), one(16));
        assert_eq!(l.write(0x830, (1 << 32) | 0x400, 0), WriteEffect::Ipi(IpiRequest::Nmi { dest: Dest::One(1) }));
    }

    #[test]
    fn timer_counts_do_not_wrap() {
        // Linux calibrates with an initial count of 0xffffffff; every divider must give count × divider ns at
        // the 1 GHz bus (divide by 16: 68.7 s, which 64-bit `count * divider * 1e9` wrapped to 13.4 s).
        for (code, div) in [(0x0u64, 2u64), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32), (0x9, 64), (0xa, 128), (0xb, 1)] {
            let mut l = Vlapic::new(0);
            l.write(0x83e, code, 0);
            l.write(0x838, 0xffff_ffff, 1000);
            let expect = 1000 + 0xffff_ffff * div; // 1 ns per bus tick
            if div == 16 {
                assert_eq!(expect - 1000, 68_719_476_720);
            }
            assert_eq!(l.timer_deadline.load(Ordering::Relaxed), expect, "divide by {div}");
            // Read back: full count at the start, half way through about half of it.
            assert_eq!(l.read(0x839, 1000), Some(0xffff_ffff), "divide by {div}");
            let half = l.read(0x839, 1000 + (expect - 1000) / 2).unwrap();
            assert!(half.abs_diff(0x7fff_ffff) <= 1, "divide by {div}: {half:#x}");
            assert_eq!(l.read(0x839, expect), Some(0));
            // Periodic re-arm uses the same arithmetic.
            l.write(0x832, LVT_PERIODIC as u64 | 0xef, 0);
            l.timer_expired(expect);
            assert_eq!(l.timer_deadline.load(Ordering::Relaxed), expect + (expect - 1000), "divide by {div}");
        }
        assert_eq!(BUS_HZ, 1_000_000_000);
    }

    /// A level-triggered request sets its TMR bit until its EOI, which reports the vector (for the IO-APIC).
    #[test]
    fn level_requests_show_in_the_tmr_until_their_eoi() {
        let mut l = Vlapic::new(0);
        l.write(0x80f, 0x1ff, 0); // software-enabled
        l.set_irr_level(0x41);
        assert_eq!(l.read(0x81a, 0), Some(1 << 1), "TMR bit of vector 0x41");
        l.accept(0x41);
        l.set_irr(0x30);
        assert_eq!(l.read(0x819, 0), Some(0), "edge: no TMR bit");
        assert_eq!(l.write(0x80b, 0, 0), WriteEffect::Eoi(0x41));
        assert_eq!(l.read(0x81a, 0), Some(0));
        assert_eq!(l.write(0x80b, 0, 0), WriteEffect::None, "nothing in service");
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
