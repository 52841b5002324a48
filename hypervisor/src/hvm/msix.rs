//! MSI-X tables of the hardware domain's PCI functions, mediated (issue 15, interrupts), as Xen's vPCI does for a
//! PVH dom0 (facts from the PCI Local Bus 3.0 specification's MSI-X capability, no code taken): the table lives
//! in one of the function's memory BARs, 16 bytes an entry (message address low and high, message data, vector
//! control whose bit 0 masks it). Dom0 never maps the table's pages: its accesses trap, and Keel keeps dom0's
//! entries virtual. When dom0 unmasks an entry, the device's entry gets Keel's message (a Keel vector on the boot
//! CPU, one per entry) and Keel forwards each message to the vector and vCPU dom0 wrote (`domain::irq`). What
//! else shares the table's pages (other registers, the pending-bit array) is passed through.

use alloc::vec;
use alloc::vec::Vec;

/// Bytes per table entry.
pub const ENTRY: u64 = 16;
/// Vector control's mask bit.
const MASKED: u32 = 1;

/// The device's memory, as Keel reaches it.
pub trait Mmio {
    /// `size` (1, 2, 4 or 8) bytes at `addr`.
    fn read(&mut self, addr: u64, size: u8) -> u64;
    /// Writes `size` bytes at `addr`.
    fn write(&mut self, addr: u64, size: u8, value: u64);
}

/// What a table write changed that the interrupt routing must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixChange {
    /// The function.
    pub bdf: u16,
    /// Its entry.
    pub entry: u16,
    /// Dom0's vector (data bits 7:0) and destination APIC id (address bits 19:12).
    pub vector: u8,
    /// Dom0's destination APIC id.
    pub dest: u8,
}

/// One function's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The function.
    pub bdf: u16,
    /// Physical address of entry 0.
    pub base: u64,
    /// Dom0's view of each entry: address low, address high, data, vector control.
    virt: Vec<[u32; 4]>,
}

impl Table {
    /// A table of `entries` at `base`, every entry masked (the state after reset).
    pub fn new(bdf: u16, base: u64, entries: u16) -> Self {
        Self { bdf, base, virt: vec![[0, 0, 0, MASKED]; usize::from(entries)] }
    }

    /// Bytes the table spans.
    pub fn len(&self) -> u64 {
        self.virt.len() as u64 * ENTRY
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.virt.is_empty()
    }

    /// The pages the table touches (dom0 maps none of them).
    pub fn pages(&self) -> core::ops::Range<u64> {
        self.base & !0xfff..(self.base + self.len() + 0xfff) & !0xfff
    }

    /// The entry and dword (0-3) at `addr`, if it is in the table.
    fn slot(&self, addr: u64) -> Option<(usize, usize)> {
        let off = addr.checked_sub(self.base).filter(|&o| o < self.len())?;
        Some(((off / ENTRY) as usize, ((off % ENTRY) / 4) as usize))
    }

    /// Dom0 reads `size` bytes at `addr` (in one of [`Self::pages`]): its own entries, or the device's memory.
    pub fn read(&self, mmio: &mut impl Mmio, addr: u64, size: u8) -> u64 {
        match (self.slot(addr), size) {
            (Some((e, d)), 4) if addr.is_multiple_of(4) => u64::from(self.virt[e][d]),
            (Some((e, d)), 8) if addr.is_multiple_of(8) => {
                u64::from(self.virt[e][d]) | u64::from(self.virt[e][d + 1]) << 32
            }
            // A narrower or unaligned access to an entry: from dom0's dwords.
            (Some(_), _) => (0..u64::from(size)).fold(0, |v, i| {
                let a = addr + i;
                let byte = self.slot(a).map_or(0xff, |(e, d)| (self.virt[e][d] >> (8 * (a % 4))) as u8);
                v | u64::from(byte) << (8 * i)
            }),
            (None, _) => mmio.read(addr, size),
        }
    }

    /// Dom0 writes `size` bytes at `addr` (in one of [`Self::pages`]). An entry dom0 unmasks gets Keel's message
    /// from `keel` (the boot CPU's APIC id and the vector Keel gives this entry) and is unmasked on the device;
    /// one it masks is masked there. Returns the routes that changed: an entry unmasked, or one whose address or
    /// data changed while unmasked.
    pub fn write(
        &mut self,
        mmio: &mut impl Mmio,
        addr: u64,
        size: u8,
        value: u64,
        mut keel: impl FnMut(u16, u16) -> Option<(u8, u8)>,
    ) -> Vec<MsixChange> {
        if self.slot(addr).is_none() {
            mmio.write(addr, size, value);
            return Vec::new();
        }
        let mut touched = Vec::new();
        for i in 0..u64::from(size) {
            let a = addr + i;
            let Some((e, d)) = self.slot(a) else { continue };
            let shift = 8 * (a % 4);
            let dword = &mut self.virt[e][d];
            *dword = (*dword & !(0xff << shift)) | (((value >> (8 * i)) as u32 & 0xff) << shift);
            if !touched.contains(&e) {
                touched.push(e);
            }
        }
        let mut changes = Vec::new();
        for e in touched {
            let entry = self.virt[e];
            let phys = self.base + e as u64 * ENTRY;
            if entry[3] & MASKED != 0 {
                mmio.write(phys + 12, 4, u64::from(MASKED));
                continue;
            }
            let Some((apic_id, vector)) = keel(self.bdf, e as u16) else {
                // No vector left: the entry stays masked, as dom0 reads back.
                self.virt[e][3] |= MASKED;
                continue;
            };
            let (address, data) = super::vpci::keel_message(apic_id, vector);
            mmio.write(phys, 4, u64::from(address));
            mmio.write(phys + 4, 4, 0);
            mmio.write(phys + 8, 4, u64::from(data));
            mmio.write(phys + 12, 4, 0);
            changes.push(MsixChange {
                bdf: self.bdf,
                entry: e as u16,
                vector: entry[2] as u8,
                dest: (entry[0] >> 12) as u8,
            });
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// Device memory as a map of written dwords (reads of anything else give a pattern).
    #[derive(Default)]
    struct Fake(BTreeMap<u64, u64>);

    impl Mmio for Fake {
        fn read(&mut self, addr: u64, _size: u8) -> u64 {
            self.0.get(&addr).copied().unwrap_or(0x5a5a)
        }
        fn write(&mut self, addr: u64, _size: u8, value: u64) {
            self.0.insert(addr, value);
        }
    }

    #[test]
    fn entries_are_virtual_and_the_device_gets_keels_message() {
        let (mut dev, mut t) = (Fake::default(), Table::new(0x18, 0xfebf_1000, 3));
        assert_eq!(t.pages(), 0xfebf_1000..0xfebf_2000);
        assert_eq!(t.read(&mut dev, 0xfebf_101c, 4), 1, "entry 1 starts masked");
        // Linux: address, data (entry masked), then unmask.
        let keel = |bdf: u16, e: u16| Some((0u8, 0xa0 + bdf as u8 + e as u8));
        assert!(t.write(&mut dev, 0xfebf_1010, 4, 0xfee0_1000, keel).is_empty());
        assert!(t.write(&mut dev, 0xfebf_1014, 4, 0, keel).is_empty());
        assert!(t.write(&mut dev, 0xfebf_1018, 4, 0x41, keel).is_empty());
        assert!(!dev.0.contains_key(&0xfebf_1010), "nothing reached the device's entry but its mask");
        let ch = t.write(&mut dev, 0xfebf_101c, 4, 0, keel);
        assert_eq!(ch, [MsixChange { bdf: 0x18, entry: 1, vector: 0x41, dest: 1 }]);
        assert_eq!(
            (dev.0[&0xfebf_1010], dev.0[&0xfebf_1018], dev.0[&0xfebf_101c]),
            (0xfee0_0000, 0xb9, 0),
            "Keel's message, unmasked"
        );
        assert_eq!(t.read(&mut dev, 0xfebf_1010, 8), 0xfee0_1000, "dom0 reads its own entry back");
        assert_eq!(t.read(&mut dev, 0xfebf_1018, 1), 0x41);
        // Masked again: on the device too.
        assert!(t.write(&mut dev, 0xfebf_101c, 4, 1, keel).is_empty());
        assert_eq!(dev.0[&0xfebf_101c], 1);
        // Beyond the table (the pending bits, other registers): the device's own.
        assert_eq!(t.read(&mut dev, 0xfebf_1800, 8), 0x5a5a);
        assert!(t.write(&mut dev, 0xfebf_1800, 4, 7, keel).is_empty());
        assert_eq!(dev.0[&0xfebf_1800], 7);
    }

    #[test]
    fn no_vector_left_keeps_the_entry_masked() {
        let (mut dev, mut t) = (Fake::default(), Table::new(8, 0xfe00_0000, 1));
        assert!(t.write(&mut dev, 0xfe00_000c, 4, 0, |_, _| None).is_empty());
        assert_eq!(t.read(&mut dev, 0xfe00_000c, 4), 1);
    }
}
