//! The machine's IO-APICs, which Keel owns (issue 15): found in the MADT, every pin masked at boot, and a pin
//! programmed only when the hardware domain unmasks the matching pin of its emulated IO-APIC (`hvm::vioapic`),
//! to raise one of Keel's vectors on the boot CPU (`hvm::irq` forwards it). Registers as the 82093AA datasheet
//! gives them: IOREGSEL at 0x00, IOWIN at 0x10, the version register's bits 23:16 the last pin, redirection
//! entry n at 0x10 + 2n (low half) and 0x11 + 2n (high half: destination in bits 63:56).

use alloc::vec::Vec;
use spin::{Mutex, Once};

/// One IO-APIC.
pub struct IoApic {
    /// MMIO base (physical = Keel's virtual: below 4 GiB, in the uncached hole).
    base: u64,
    /// First GSI.
    pub gsi_base: u32,
    /// Pins (redirection entries).
    pub pins: u32,
    /// Serializes IOREGSEL/IOWIN pairs.
    lock: Mutex<()>,
}

static IOAPICS: Once<Vec<IoApic>> = Once::new();

/// A redirection entry's mask bit.
pub const MASKED: u64 = 1 << 16;
/// Level-triggered (bit 15).
pub const LEVEL: u64 = 1 << 15;
/// Active low (bit 13).
pub const ACTIVE_LOW: u64 = 1 << 13;

/// The IO-APIC's lock, held with interrupts off (the interrupt handler masks pins too, on the same CPU).
struct Locked<'a> {
    guard: Option<spin::MutexGuard<'a, ()>>,
    enable: bool,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        drop(self.guard.take()); // unlocked before interrupts come back
        if self.enable {
            super::cpu::enable_interrupts();
        }
    }
}

impl IoApic {
    fn locked(&self) -> Locked<'_> {
        let enable = super::cpu::read_rflags() & (1 << 9) != 0;
        super::cpu::disable_interrupts();
        Locked { guard: Some(self.lock.lock()), enable }
    }

    fn read(&self, reg: u32) -> u32 {
        let _g = self.locked();
        // SAFETY: `base` is an IO-APIC's MMIO window from the MADT, below 4 GiB where Keel's page tables map the
        // MMIO hole uncached (checked in `init`); IOREGSEL and IOWIN are 32-bit registers at offsets 0 and 0x10,
        // and the lock keeps the select and the window access together.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, reg);
            core::ptr::read_volatile((self.base + 0x10) as *const u32)
        }
    }

    fn write(&self, reg: u32, value: u32) {
        let _g = self.locked();
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, reg);
            core::ptr::write_volatile((self.base + 0x10) as *mut u32, value);
        }
    }

    /// Writes redirection entry `pin`: masked first, then the destination, then the low half.
    fn set(&self, pin: u32, entry: u64) {
        self.write(0x10 + 2 * pin, MASKED as u32);
        self.write(0x11 + 2 * pin, (entry >> 32) as u32);
        self.write(0x10 + 2 * pin, entry as u32);
    }
}

/// Takes the machine's IO-APICs (id, MMIO address, first GSI) and masks every pin. An IO-APIC whose window is not
/// in the 3-4 GiB hole Keel maps uncached is left alone, with a warning.
pub fn init(ioapics: &[(u8, u32, u32)]) {
    IOAPICS.call_once(|| {
        let mut out = Vec::new();
        for &(id, address, gsi_base) in ioapics {
            let base = u64::from(address);
            if !(0xc000_0000..0xffff_f000).contains(&base) || base & 0xf != 0 {
                crate::warning!("IO-APIC {id} at {base:#x}: outside the uncached MMIO hole, left alone");
                continue;
            }
            let mut a = IoApic { base, gsi_base, pins: 0, lock: Mutex::new(()) };
            a.pins = ((a.read(1) >> 16) & 0xff) + 1;
            for pin in 0..a.pins {
                a.set(pin, MASKED);
            }
            crate::info!(
                "IO-APIC {id} at {base:#x}: {} pins (GSI {gsi_base}-{}), all masked",
                a.pins,
                gsi_base + a.pins - 1
            );
            out.push(a);
        }
        out
    });
}

/// Programs the pin of `gsi`, if an IO-APIC has it: `entry` (vector, trigger, polarity, mask, destination).
/// Returns whether a pin took it.
pub fn route(gsi: u32, entry: u64) -> bool {
    let Some(all) = IOAPICS.get() else { return false };
    for a in all {
        if (a.gsi_base..a.gsi_base + a.pins).contains(&gsi) {
            a.set(gsi - a.gsi_base, entry);
            return true;
        }
    }
    false
}

/// Masks or unmasks the pin of `gsi` (keeping the rest of its entry).
pub fn set_masked(gsi: u32, masked: bool) {
    let Some(all) = IOAPICS.get() else { return };
    if let Some(a) = all.iter().find(|a| (a.gsi_base..a.gsi_base + a.pins).contains(&gsi)) {
        let reg = 0x10 + 2 * (gsi - a.gsi_base);
        let low = a.read(reg);
        let low = if masked { low | MASKED as u32 } else { low & !(MASKED as u32) };
        a.write(reg, low);
    }
}
