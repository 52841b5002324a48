//! The hardware domain's view of a host IO-APIC (issue 15, interrupts): one emulated IO-APIC per host IO-APIC,
//! at the same address, id and GSI base, as Xen gives a PVH dom0 (../shared/docs/xen-abi.md §4.1). Registers as
//! the 82093AA datasheet and Xen's vioapic give them: IOREGSEL at offset 0x00, IOWIN at 0x10; register 0 the id
//! (bits 27:24), 1 the version (0x11, bits 23:16 the last redirection entry), 2 the arbitration id, 0x10 + 2n and
//! 0x11 + 2n the low and high halves of redirection entry n. Entries start masked; delivery status (bit 12) and
//! remote IRR (bit 14) are read-only.
//!
//! A write to an entry is reported to the caller, which routes the physical pin behind it (`domain::irq`).

/// Redirection entries of each emulated IO-APIC (the 82093AA's 24).
pub const PINS: usize = 24;
/// Size of the MMIO window Keel decodes.
pub const WINDOW: u64 = 0x1000;
/// Version register value: version 0x11, `PINS - 1` in bits 23:16.
pub const VERSION: u32 = 0x11 | ((PINS as u32 - 1) << 16);

const MASKED: u64 = 1 << 16;
const READ_ONLY: u64 = 1 << 12 | 1 << 14;

/// One emulated IO-APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vioapic {
    /// Guest-physical (= host) base address.
    pub base: u64,
    /// First GSI.
    pub gsi_base: u32,
    id: u8,
    select: u8,
    redir: [u64; PINS],
}

impl Vioapic {
    /// An IO-APIC at `base` with id `id`, serving GSIs from `gsi_base`, every entry masked.
    pub fn new(id: u8, base: u64, gsi_base: u32) -> Self {
        Self { base, gsi_base, id: id & 0xf, select: 0, redir: [MASKED; PINS] }
    }

    /// Whether guest-physical `gpa` falls in this IO-APIC's window.
    pub fn covers(&self, gpa: u64) -> bool {
        (self.base..self.base + WINDOW).contains(&gpa)
    }

    /// A 32-bit read at `offset` in the window (narrower reads take its low bytes).
    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            0x00 => u32::from(self.select),
            0x10 => self.read_register(self.select),
            _ => 0,
        }
    }

    /// A write at `offset` in the window; returns the redirection entry it changed, as (pin, new entry).
    pub fn write(&mut self, offset: u64, value: u32) -> Option<(usize, u64)> {
        match offset {
            0x00 => self.select = value as u8,
            0x10 => {
                self.write_register(self.select, value);
                if (0x10..0x10 + 2 * PINS as u8).contains(&self.select) {
                    let pin = usize::from(self.select - 0x10) / 2;
                    return Some((pin, self.redir[pin]));
                }
            }
            _ => {}
        }
        None
    }

    /// Redirection entry `pin`, if there is one.
    #[cfg(test)]
    pub fn entry(&self, pin: usize) -> Option<u64> {
        self.redir.get(pin).copied()
    }

    fn read_register(&self, reg: u8) -> u32 {
        match reg {
            0 => u32::from(self.id) << 24,
            1 => VERSION,
            2 => u32::from(self.id) << 24,
            0x10..=0x3f => {
                let e = self.redir[usize::from(reg - 0x10) / 2];
                if reg.is_multiple_of(2) {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, reg: u8, value: u32) {
        match reg {
            0 => self.id = (value >> 24) as u8 & 0xf,
            0x10..=0x3f => {
                let e = &mut self.redir[usize::from(reg - 0x10) / 2];
                *e = if reg.is_multiple_of(2) {
                    (*e & (!0xffff_ffff | READ_ONLY)) | (u64::from(value) & !READ_ONLY)
                } else {
                    (*e & 0xffff_ffff) | (u64::from(value) & 0xff00_0000) << 32
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(a: &mut Vioapic, r: u32) -> u32 {
        a.write(0, r);
        a.read(0x10)
    }

    #[test]
    fn id_version_and_entries() {
        let mut a = Vioapic::new(2, 0xfec0_0000, 0);
        assert!(a.covers(0xfec0_0010) && !a.covers(0xfec0_1000));
        assert_eq!(reg(&mut a, 0), 2 << 24);
        assert_eq!(reg(&mut a, 1), 0x0017_0011);
        assert_eq!(a.read(0), 1, "IOREGSEL reads back");
        for pin in 0..PINS as u32 {
            assert_eq!(reg(&mut a, 0x10 + 2 * pin), 1 << 16, "pin {pin} starts masked");
        }
        // Pin 9: vector 0x39, level, active low, to APIC id 1; delivery status and remote IRR stay clear.
        a.write(0, 0x10 + 18);
        assert_eq!(a.write(0x10, 0x39 | 1 << 15 | 1 << 13 | 1 << 12 | 1 << 14), Some((9, 0x39 | 1 << 15 | 1 << 13)));
        a.write(0, 0x11 + 18);
        assert_eq!(a.write(0x10, 0x0100_00ff).map(|(pin, _)| pin), Some(9));
        assert_eq!(a.entry(9), Some(0x0100_0000_0000_0000 | 0x39 | 1 << 15 | 1 << 13));
        assert_eq!(reg(&mut a, 0x11 + 18), 0x0100_0000, "only the destination field of the high half");
        a.write(0, 0);
        assert_eq!(a.write(0x10, 0x0f00_0000), None, "not an entry");
        assert_eq!(reg(&mut a, 0), 0x0f00_0000);
        assert_eq!(reg(&mut a, 0x40), 0, "past the entries");
        assert_eq!(a.read(0x20), 0);
    }
}
