//! The hardware domain's PCI configuration space, mediated (issue 15, interrupts): what dom0 reads and writes
//! reaches the device, except where Keel must stand between them, as Xen's vPCI does for a PVH dom0 (facts from
//! the PCI Local Bus 3.0 specification's capability list and MSI capability, no code taken):
//!
//! - **MSI.** Dom0's message address and data stay virtual: the device is given Keel's (a Keel vector on the boot
//!   CPU), and a message it sends is forwarded as the vector and to the vCPU dom0 wrote (`domain::irq`). One
//!   message per function: the capability reads as single-message capable.
//! - **MSI-X.** The capability stays as the device has it, and its table is mediated (`hvm::msix`): dom0's
//!   accesses to the table's pages trap, its entries stay virtual, and the device's entries get Keel's messages.
//!   A table Keel cannot reach (in an I/O BAR, or outside the 3-4 GiB hole Keel maps uncached) is hidden from the
//!   capability list instead, so the driver falls back to MSI or its INTx line.
//!
//! The logic runs over a [`ConfigSpace`] so that it is tested on the host against a fake one.

use alloc::collections::BTreeMap;

/// A function's configuration space, as the hardware has it.
pub trait ConfigSpace {
    /// `size` (1, 2 or 4) bytes at `offset` (aligned to `size`) of function `bdf`.
    fn read(&mut self, bdf: u16, offset: u8, size: u8) -> u32;
    /// Writes `size` bytes at `offset`.
    fn write(&mut self, bdf: u16, offset: u8, size: u8, value: u32);
}

const CAP_MSI: u8 = 0x05;
const CAP_MSIX: u8 = 0x11;
const STATUS_CAP_LIST: u32 = 1 << 4;

/// A function's MSI capability, as dom0 sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Msi {
    /// Capability offset.
    cap: u8,
    /// 64-bit address form.
    wide: bool,
    /// Message control as dom0 wrote it (enable bit 0).
    control: u16,
    /// Message address dom0 wrote.
    address: u64,
    /// Message data dom0 wrote.
    data: u16,
}

impl Msi {
    fn data_offset(&self) -> u8 {
        if self.wide {
            12
        } else {
            8
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Function {
    msi: Option<Msi>,
    /// The capability-list pointer byte that names an MSI-X capability Keel cannot mediate (0x34, or a
    /// capability's next pointer), and the next pointer MSI-X has, which dom0 reads there instead.
    msix_skip: Option<(u8, u8)>,
    /// The MSI-X table Keel mediates, and its capability's offset.
    msix: Option<super::msix::Table>,
    msix_cap: u8,
}

/// What a write changed that the interrupt routing must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiChange {
    /// MSI is on: messages from `bdf` go to dom0 as vector `vector` for APIC id `dest`.
    Enabled {
        /// The function.
        bdf: u16,
        /// Dom0's vector (data bits 7:0).
        vector: u8,
        /// Dom0's destination APIC id (address bits 19:12).
        dest: u8,
    },
    /// MSI is off for `bdf`.
    Disabled {
        /// The function.
        bdf: u16,
    },
}

/// The mediator: what Keel knows of each function it has seen.
#[derive(Default)]
pub struct Vpci {
    functions: BTreeMap<u16, Function>,
    /// Pages of MSI-X tables found since [`Vpci::take_new_table_pages`] last asked (dom0 must not map them).
    new_table_pages: alloc::vec::Vec<core::ops::Range<u64>>,
}

impl Vpci {
    /// A mediator that has seen no function yet.
    pub const fn new() -> Self {
        Self { functions: BTreeMap::new(), new_table_pages: alloc::vec::Vec::new() }
    }
}

/// Where Keel can reach a table: the PCI memory hole of a PC, below the IO-APIC, HPET, local APIC and firmware
/// ranges, in the 3-4 GiB region Keel's page tables map uncached. (A BAR being sized reads back its size mask,
/// an address near 4 GiB: no table is ever there.)
const REACHABLE: core::ops::Range<u64> = 0xc000_0000..0xfec0_0000;

/// The physical address of the MSI-X table (or pending-bit array) whose Table Offset/BIR register is `reg`, in
/// function `bdf`'s memory BAR: `None` for an I/O BAR, a BAR index beyond 5 or an unprogrammed BAR.
fn msix_address(cs: &mut impl ConfigSpace, bdf: u16, reg: u32) -> Option<u64> {
    let bir = (reg & 7) as u8;
    if bir > 5 {
        return None;
    }
    let low = cs.read(bdf, 0x10 + 4 * bir, 4);
    if low & 1 != 0 {
        return None;
    }
    let mut bar = u64::from(low & !0xf);
    if (low >> 1) & 3 == 2 {
        bar |= u64::from(cs.read(bdf, 0x14 + 4 * bir, 4)) << 32;
    }
    (bar != 0).then(|| bar + u64::from(reg & !7))
}

/// Keel's message address and data for a function whose messages raise `vector` on the CPU with APIC id
/// `apic_id`: fixed delivery, edge, physical destination.
pub fn keel_message(apic_id: u8, vector: u8) -> (u32, u16) {
    (0xfee0_0000 | u32::from(apic_id) << 12, u16::from(vector))
}

impl Vpci {
    fn function(&mut self, cs: &mut impl ConfigSpace, bdf: u16) -> Function {
        if let Some(f) = self.functions.get(&bdf) {
            return f.clone();
        }
        let mut f = Function::default();
        let vendor = cs.read(bdf, 0, 2);
        if vendor != 0xffff && cs.read(bdf, 4, 4) >> 16 & STATUS_CAP_LIST != 0 {
            let mut at = 0x34u8;
            let mut next = cs.read(bdf, 0x34, 1) as u8 & !3;
            // At most 48 capabilities fit in 192 bytes: a longer chain is a loop.
            for _ in 0..48 {
                if next < 0x40 {
                    break;
                }
                let head = cs.read(bdf, next, 2);
                let (id, after) = (head as u8, (head >> 8) as u8 & !3);
                match id {
                    CAP_MSI => {
                        // Dom0 starts from the device's control, disabled, with one message enabled.
                        let control = cs.read(bdf, next + 2, 2) as u16 & !(1 | 0x7 << 4);
                        f.msi = Some(Msi { cap: next, wide: control & 1 << 7 != 0, control, ..Msi::default() });
                    }
                    CAP_MSIX => {
                        let entries = (cs.read(bdf, next + 2, 2) & 0x7ff) as u16 + 1;
                        let reg = cs.read(bdf, next + 4, 4);
                        let base = msix_address(cs, bdf, reg);
                        match base.filter(|&b| REACHABLE.contains(&b) && b + u64::from(entries) * 16 <= REACHABLE.end) {
                            Some(b) => {
                                let t = super::msix::Table::new(bdf, b, entries);
                                self.new_table_pages.push(t.pages());
                                f.msix = Some(t);
                                f.msix_cap = next;
                            }
                            None => f.msix_skip = Some((at, after)),
                        }
                    }
                    _ => {}
                }
                at = next + 1;
                next = after;
            }
        }
        // Only functions that are there are remembered (a later hot-plug is looked at afresh).
        if vendor != 0xffff {
            self.functions.insert(bdf, f.clone());
        }
        f
    }

    /// Where function `bdf`'s MSI-X table is now, if Keel can reach it there.
    fn msix_base(&mut self, cs: &mut impl ConfigSpace, bdf: u16) -> Option<u64> {
        let f = self.functions.get(&bdf)?;
        let len = f.msix.as_ref()?.len();
        let cap = f.msix_cap;
        let reg = cs.read(bdf, cap + 4, 4);
        msix_address(cs, bdf, reg).filter(|&b| REACHABLE.contains(&b) && b + len <= REACHABLE.end)
    }

    /// The pages of the MSI-X tables found since the last call.
    pub fn take_new_table_pages(&mut self) -> alloc::vec::Vec<core::ops::Range<u64>> {
        core::mem::take(&mut self.new_table_pages)
    }

    /// The function whose MSI-X table touches `page`.
    fn table_at(&mut self, page: u64) -> Option<&mut super::msix::Table> {
        self.functions.values_mut().filter_map(|f| f.msix.as_mut()).find(|t| t.pages().contains(&page))
    }

    /// Whether `page` holds (part of) an MSI-X table Keel mediates.
    pub fn is_table_page(&mut self, page: u64) -> bool {
        self.table_at(page & !0xfff).is_some()
    }

    /// Dom0 reads `size` bytes at `addr`, in an MSI-X table's page (`None` if it is not one).
    pub fn table_read(&mut self, mmio: &mut impl super::msix::Mmio, addr: u64, size: u8) -> Option<u64> {
        Some(self.table_at(addr & !0xfff)?.read(mmio, addr, size))
    }

    /// Dom0 writes `size` bytes at `addr`, in an MSI-X table's page (`None` if it is not one); see
    /// [`super::msix::Table::write`].
    pub fn table_write(
        &mut self,
        mmio: &mut impl super::msix::Mmio,
        addr: u64,
        size: u8,
        value: u64,
        keel: impl FnMut(u16, u16) -> Option<(u8, u8)>,
    ) -> Option<alloc::vec::Vec<super::msix::MsixChange>> {
        Some(self.table_at(addr & !0xfff)?.write(mmio, addr, size, value, keel))
    }

    /// Dom0 reads `size` bytes at `offset` of `bdf`.
    pub fn read(&mut self, cs: &mut impl ConfigSpace, bdf: u16, offset: u8, size: u8) -> u32 {
        let f = self.function(cs, bdf);
        let base = offset & !3;
        let mut word = cs.read(bdf, base, 4).to_le_bytes();
        for (i, byte) in word.iter_mut().enumerate() {
            let at = base + i as u8;
            if let Some((ptr, skip)) = f.msix_skip {
                if at == ptr {
                    *byte = skip;
                }
            }
            if let Some(m) = f.msi {
                if let Some(v) = msi_byte(&m, at) {
                    *byte = v;
                }
            }
        }
        let word = u32::from_le_bytes(word) >> (8 * (offset & 3));
        match size {
            1 => word & 0xff,
            2 => word & 0xffff,
            _ => word,
        }
    }

    /// Dom0 writes `size` bytes at `offset` of `bdf`: MSI's address, data and control stay virtual (the device
    /// gets Keel's message from `keel`, the APIC id and vector Keel gives this function, when dom0 enables MSI);
    /// anything else reaches the device.
    pub fn write(
        &mut self,
        cs: &mut impl ConfigSpace,
        bdf: u16,
        offset: u8,
        size: u8,
        value: u32,
        keel: impl FnOnce(u16) -> Option<(u8, u8)>,
    ) -> Option<MsiChange> {
        let mut f = self.function(cs, bdf);
        let Some(mut m) = f.msi.filter(|m| (m.cap..m.cap + m.data_offset() + 2).contains(&offset)) else {
            cs.write(bdf, offset, size, value);
            if let (true, Some(t)) = ((0x10..0x28).contains(&offset), f.msix.as_mut()) {
                // A BAR was written: the table follows its BAR to a new place Keel can reach (a sizing probe's
                // all-ones, which is put back at once, is not one).
                let old = t.base;
                if let Some(base) = self.msix_base(cs, bdf).filter(|&b| b != old) {
                    crate::info!(
                        "PCI {:02x}:{:02x}.{}: its MSI-X table moves to {base:#x}",
                        bdf >> 8,
                        bdf >> 3 & 0x1f,
                        bdf & 7
                    );
                    t.base = base;
                    self.new_table_pages.push(t.pages());
                    self.functions.insert(bdf, f);
                }
            }
            return None;
        };
        let was_on = m.control & 1 != 0;
        for i in 0..size {
            let byte = (value >> (8 * i)) as u8;
            let rel = offset + i - m.cap;
            match rel {
                2 => m.control = (m.control & 0xff00) | u16::from(byte),
                3 => m.control = (m.control & 0x00ff) | u16::from(byte) << 8,
                4..=7 => set_byte(&mut m.address, rel - 4, byte),
                8..=11 if m.wide => set_byte(&mut m.address, rel - 4, byte),
                _ if rel == m.data_offset() => m.data = (m.data & 0xff00) | u16::from(byte),
                _ if rel == m.data_offset() + 1 => m.data = (m.data & 0x00ff) | u16::from(byte) << 8,
                _ => {}
            }
        }
        // Dom0 sets the enable bit only: one message (multiple-message enable stays 0), and the read-only bits
        // (64-bit, per-vector masking, capable) stay the device's.
        let real_control = cs.read(bdf, m.cap + 2, 2) as u16;
        m.control = (m.control & 1) | (real_control & !(1 | 0x7 << 4));
        let on = m.control & 1 != 0;
        let mut change = None;
        if on && !was_on {
            match keel(bdf) {
                Some((apic_id, vector)) => {
                    let (address, data) = keel_message(apic_id, vector);
                    cs.write(bdf, m.cap + 4, 4, address);
                    if m.wide {
                        cs.write(bdf, m.cap + 8, 4, 0);
                    }
                    cs.write(bdf, m.cap + m.data_offset(), 2, u32::from(data));
                    cs.write(bdf, m.cap + 2, 2, u32::from((real_control & !(0x7 << 4)) | 1));
                    change = Some(MsiChange::Enabled { bdf, vector: m.data as u8, dest: (m.address >> 12) as u8 });
                }
                None => m.control &= !1, // no vector left: MSI stays off, as dom0 reads back
            }
        } else if !on && was_on {
            cs.write(bdf, m.cap + 2, 2, u32::from(real_control & !1));
            change = Some(MsiChange::Disabled { bdf });
        } else if on {
            // Dom0 moved the interrupt (new vector or CPU) while MSI is on.
            change = Some(MsiChange::Enabled { bdf, vector: m.data as u8, dest: (m.address >> 12) as u8 });
        }
        f.msi = Some(m);
        self.functions.insert(bdf, f);
        change
    }
}

fn set_byte(v: &mut u64, index: u8, byte: u8) {
    let shift = 8 * u32::from(index);
    *v = (*v & !(0xff << shift)) | u64::from(byte) << shift;
}

/// Dom0's view of byte `at` of the function's configuration space, where it lies in the MSI capability and
/// differs from the device's.
fn msi_byte(m: &Msi, at: u8) -> Option<u8> {
    let rel = at.checked_sub(m.cap)?;
    match rel {
        // Message control: dom0's enable and (zero) multiple-message enable; capable of one message only.
        2 => Some(m.control as u8 & !(0x7 << 1)),
        3 => Some((m.control >> 8) as u8),
        4..=7 => Some((m.address >> (8 * (rel - 4))) as u8),
        8..=11 if m.wide => Some((m.address >> (8 * (rel - 4))) as u8),
        _ if rel == m.data_offset() => Some(m.data as u8),
        _ if rel == m.data_offset() + 1 => Some((m.data >> 8) as u8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// One function's 256 bytes.
    struct Fake(Vec<u8>);

    impl ConfigSpace for Fake {
        fn read(&mut self, _bdf: u16, offset: u8, size: u8) -> u32 {
            let o = usize::from(offset);
            let mut b = [0u8; 4];
            b[..usize::from(size)].copy_from_slice(&self.0[o..o + usize::from(size)]);
            u32::from_le_bytes(b)
        }
        fn write(&mut self, _bdf: u16, offset: u8, size: u8, value: u32) {
            let o = usize::from(offset);
            self.0[o..o + usize::from(size)].copy_from_slice(&value.to_le_bytes()[..usize::from(size)]);
        }
    }

    /// An e1000e-like function: capabilities PM at 0xc8 → MSI (64-bit, 4 messages) at 0xd0 → PCIe at 0xe0 →
    /// MSI-X at 0xa0 → end.
    fn device() -> Fake {
        let mut c = vec![0u8; 256];
        c[0..4].copy_from_slice(&[0x86, 0x80, 0xd3, 0x10]);
        c[6] = STATUS_CAP_LIST as u8;
        c[0x34] = 0xc8;
        c[0xc8..0xca].copy_from_slice(&[0x01, 0xd0]);
        c[0xd0..0xd4].copy_from_slice(&[CAP_MSI, 0xe0, 0x84, 0x00]); // 64-bit, multiple message capable: 4
        c[0xe0..0xe2].copy_from_slice(&[0x10, 0xa0]);
        c[0xa0..0xa4].copy_from_slice(&[CAP_MSIX, 0x00, 0x04, 0x00]);
        Fake(c)
    }

    #[test]
    fn msix_is_skipped_in_the_capability_list() {
        let (mut cs, mut v) = (device(), Vpci::default());
        assert_eq!(v.read(&mut cs, 8, 0xe1, 1), 0x00, "PCIe's next pointer skips MSI-X");
        assert_eq!(v.read(&mut cs, 8, 0xe0, 2), 0x0010);
        assert_eq!(v.read(&mut cs, 8, 0xe0, 4), cs.read(8, 0xe0, 4) & 0xffff_00ff);
        assert_eq!(v.read(&mut cs, 8, 0xc8, 2), 0xd001, "others untouched");
        assert_eq!(v.read(&mut cs, 8, 0, 4), 0x10d3_8086);
    }

    #[test]
    fn a_reachable_msix_table_is_mediated_and_follows_its_bar() {
        let mut cs = device();
        // BAR 3, 32-bit memory at 0xfebf0000; the table at offset 0x2000 of it (BIR 3), 5 entries.
        cs.0[0x1c..0x20].copy_from_slice(&0xfebf_0000u32.to_le_bytes());
        cs.0[0xa2..0xa4].copy_from_slice(&4u16.to_le_bytes());
        cs.0[0xa4..0xa8].copy_from_slice(&0x2003u32.to_le_bytes());
        let mut v = Vpci::default();
        assert_eq!(v.read(&mut cs, 8, 0xe1, 1), 0xa0, "PCIe's next pointer still names MSI-X");
        assert_eq!(v.take_new_table_pages(), vec![0xfebf_2000..0xfebf_3000]);
        assert!(v.is_table_page(0xfebf_2000) && !v.is_table_page(0xfebf_3000));
        // A sizing probe (all-ones, then the address back) leaves it; a real move takes it along.
        v.write(&mut cs, 8, 0x1c, 4, 0xffff_ffff, |_| None);
        v.write(&mut cs, 8, 0x1c, 4, 0xfebf_0000, |_| None);
        assert!(v.take_new_table_pages().is_empty());
        v.write(&mut cs, 8, 0x1c, 4, 0xfeb0_0000, |_| None);
        assert_eq!(v.take_new_table_pages(), vec![0xfeb0_2000..0xfeb0_3000]);
        assert!(v.is_table_page(0xfeb0_2000) && !v.is_table_page(0xfebf_2000));
        // Above 4 GiB (a 64-bit BAR Keel does not map): hidden instead.
        let mut high = device();
        high.0[0x1c..0x20].copy_from_slice(&0x0000_0004u32.to_le_bytes());
        high.0[0x20..0x24].copy_from_slice(&0x8u32.to_le_bytes());
        high.0[0xa4..0xa8].copy_from_slice(&0x0003u32.to_le_bytes());
        let mut v = Vpci::default();
        assert_eq!(v.read(&mut high, 8, 0xe1, 1), 0x00);
        assert!(v.take_new_table_pages().is_empty());
    }

    #[test]
    fn msi_is_virtual_and_the_device_gets_keels_message() {
        let (mut cs, mut v) = (device(), Vpci::default());
        assert_eq!(v.read(&mut cs, 8, 0xd2, 2) & 0xe, 0, "capable of one message");
        // Linux: address low, high, data, then control with enable (and a multiple-message enable of 2).
        let keel = |_| Some((0u8, 0xa3u8));
        assert_eq!(v.write(&mut cs, 8, 0xd4, 4, 0xfee0_1000, keel), None);
        assert_eq!(v.write(&mut cs, 8, 0xd8, 4, 0, keel), None);
        assert_eq!(v.write(&mut cs, 8, 0xdc, 2, 0x0041, keel), None);
        assert_eq!(cs.read(8, 0xd4, 4), 0, "nothing reached the device yet");
        let ch = v.write(&mut cs, 8, 0xd2, 2, 0x0021, keel);
        assert_eq!(ch, Some(MsiChange::Enabled { bdf: 8, vector: 0x41, dest: 1 }));
        assert_eq!((cs.read(8, 0xd4, 4), cs.read(8, 0xdc, 2)), (0xfee0_0000, 0xa3), "Keel's message");
        assert_eq!(cs.read(8, 0xd2, 2), 0x0085, "enabled, one message");
        assert_eq!(v.read(&mut cs, 8, 0xd4, 4), 0xfee0_1000, "dom0 reads its own address back");
        assert_eq!(v.read(&mut cs, 8, 0xdc, 2), 0x41);
        assert_eq!(v.read(&mut cs, 8, 0xd2, 2), 0x0081, "enabled, multiple-message enable 0");
        // Moved to vector 0x52 on APIC id 0 while on; then off.
        v.write(&mut cs, 8, 0xd4, 4, 0xfee0_0000, keel);
        assert_eq!(
            v.write(&mut cs, 8, 0xdc, 2, 0x52, keel),
            Some(MsiChange::Enabled { bdf: 8, vector: 0x52, dest: 0 })
        );
        assert_eq!(v.write(&mut cs, 8, 0xd2, 2, 0x80, keel), Some(MsiChange::Disabled { bdf: 8 }));
        assert_eq!(cs.read(8, 0xd2, 2) & 1, 0);
    }

    #[test]
    fn no_vector_left_leaves_msi_off() {
        let (mut cs, mut v) = (device(), Vpci::default());
        assert_eq!(v.write(&mut cs, 8, 0xd2, 2, 1, |_| None), None);
        assert_eq!(v.read(&mut cs, 8, 0xd2, 2) & 1, 0);
        assert_eq!(cs.read(8, 0xd2, 2) & 1, 0);
    }

    #[test]
    fn a_looping_capability_list_ends() {
        let mut cs = device();
        cs.0[0xe1] = 0xc8; // PCIe → PM again
        let mut v = Vpci::default();
        assert_eq!(v.read(&mut cs, 8, 0, 2), 0x8086);
        let mut absent = Fake(vec![0xff; 256]);
        assert_eq!(v.read(&mut absent, 16, 0, 4), 0xffff_ffff);
    }
}
