//! I/O ports of the hardware domain (dom0 with `dom0-platform=host`, issue 15): the ports of the machine reach
//! the hardware, except those Keel keeps, as Xen's dom0_setup_permissions leaves them to its dom0 (facts from
//! ../shared/docs/xen-abi.md §4.1); PCI configuration through 0xCF8/0xCFC is mediated: each domain's address
//! latch is its own, and an access reaches the hardware's data port with that address put back first, under one
//! lock, so that two vCPUs (or Keel) never interleave an address and its data; `vpci` stands between dom0 and
//! the device for MSI.
//!
//! Keel emulates the accesses (an I/O exit, then the real `in`/`out` here), so every port is intercepted and the
//! decision is made in one place.

use crate::arch::x86::cpu;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

/// PCI configuration address port.
pub const PCI_CONF_ADDRESS: u16 = 0xcf8;
/// PCI configuration data ports.
pub const PCI_CONF_DATA: core::ops::RangeInclusive<u16> = 0xcfc..=0xcff;

/// Ports Keel keeps from the hardware domain (reads give all-ones, writes are dropped): the 8259 PICs and their
/// ELCR, the PIT and port 0x61, port 0x92 (fast A20/reset), the FPU error port 0xF0, the reset control 0xCF9, the
/// ISA DMA controllers, port 0xE9 (Keel's debug console) and COM1 (Keel's serial line).
pub fn kept_by_keel(port: u16) -> bool {
    matches!(port,
        0x00..=0x1f | 0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 | 0x40..=0x43 | 0x61 | 0x80..=0x8f | 0x92
        | 0xc0..=0xdf | 0xf0 | 0xcf9 | 0xe9 | 0x3f8..=0x3ff)
    // 0x80 itself (the POST port) is harmless, but it sits among the DMA page registers 0x81-0x8f.
}

/// One latch per domain that may use PCI configuration: the last value written to 0xCF8. Only the hardware
/// domain does, so one is enough.
static CF8: AtomicU32 = AtomicU32::new(0);

/// What Keel knows of the hardware domain's PCI functions; its lock also serializes the two-step configuration
/// mechanism on the real ports.
static CONFIG: Mutex<super::vpci::Vpci> = Mutex::new(super::vpci::Vpci::new());

/// The configuration space through the real ports; only called with [`CONFIG`] held.
struct Ports;

impl super::vpci::ConfigSpace for Ports {
    fn read(&mut self, bdf: u16, offset: u8, size: u8) -> u32 {
        // SAFETY: the configuration mechanism's ports, the address naming a register of function `bdf`; the
        // caller holds CONFIG, which keeps the address and its data access together.
        unsafe {
            cpu::outl(PCI_CONF_ADDRESS, 1 << 31 | u32::from(bdf) << 8 | u32::from(offset & 0xfc));
            read(0xcfc + u16::from(offset & 3), size)
        }
    }
    fn write(&mut self, bdf: u16, offset: u8, size: u8, value: u32) {
        // SAFETY: as in `read`.
        unsafe {
            cpu::outl(PCI_CONF_ADDRESS, 1 << 31 | u32::from(bdf) << 8 | u32::from(offset & 0xfc));
            write(0xcfc + u16::from(offset & 3), size, value);
        }
    }
}

/// A device's memory through Keel's identity map: only for the pages of an MSI-X table `vpci` mediates, which
/// lie in the 3-4 GiB region Keel maps uncached (it exposes no table elsewhere).
struct DeviceMemory;

impl super::msix::Mmio for DeviceMemory {
    fn read(&mut self, addr: u64, size: u8) -> u64 {
        // SAFETY: `addr` lies in a page of a mediated MSI-X table (in a memory BAR of the function, which dom0
        // does not map), below 4 GiB where Keel's page tables map device memory uncached; `size` is the width of
        // dom0's own access there, which the caller checked is aligned to it.
        unsafe {
            match size {
                1 => u64::from(core::ptr::read_volatile(addr as *const u8)),
                2 => u64::from(core::ptr::read_volatile(addr as *const u16)),
                4 => u64::from(core::ptr::read_volatile(addr as *const u32)),
                _ => core::ptr::read_volatile(addr as *const u64),
            }
        }
    }
    fn write(&mut self, addr: u64, size: u8, value: u64) {
        // SAFETY: as in `read`.
        unsafe {
            match size {
                1 => core::ptr::write_volatile(addr as *mut u8, value as u8),
                2 => core::ptr::write_volatile(addr as *mut u16, value as u16),
                4 => core::ptr::write_volatile(addr as *mut u32, value as u32),
                _ => core::ptr::write_volatile(addr as *mut u64, value),
            }
        }
    }
}

/// Whether `page` holds (part of) an MSI-X table Keel mediates: dom0 must not map it.
pub fn is_msix_page(page: u64) -> bool {
    CONFIG.lock().is_table_page(page)
}

/// Dom0's access of `size` bytes (1, 2, 4 or 8, aligned) at `addr` in an MSI-X table's page: a load (`store`
/// `None`) gives its value; a store may change routes, which the caller hands to `domain::irq`. `None` if `addr`
/// is in no table's page, or the access is not aligned.
pub fn msix_access(
    addr: u64,
    size: u8,
    store: Option<u64>,
    keel: impl FnMut(u16, u16) -> Option<(u8, u8)>,
) -> Option<(u64, alloc::vec::Vec<super::msix::MsixChange>)> {
    if !matches!(size, 1 | 2 | 4 | 8) || !addr.is_multiple_of(u64::from(size)) {
        return None;
    }
    let mut vpci = CONFIG.lock();
    match store {
        None => Some((vpci.table_read(&mut DeviceMemory, addr, size)?, alloc::vec::Vec::new())),
        Some(v) => Some((0, vpci.table_write(&mut DeviceMemory, addr, size, v, keel)?)),
    }
}

/// The pages of the MSI-X tables found since the last call (the caller takes them out of dom0's map, where it
/// had mapped them).
pub fn take_new_msix_pages() -> alloc::vec::Vec<core::ops::Range<u64>> {
    CONFIG.lock().take_new_table_pages()
}

/// A port access of the hardware domain: `Some(value)` for an input, `None` for an output (or where nothing is
/// read), and the MSI change a configuration write made. `size` is 1, 2 or 4; `value` the data of an output;
/// `msi` gives a function Keel's APIC id and vector for its messages (`domain::irq::msi_vector`).
pub fn hardware_access(
    port: u16,
    size: u8,
    input: bool,
    value: u32,
    msi: impl FnOnce(u16) -> Option<(u8, u8)>,
) -> (Option<u32>, Option<super::vpci::MsiChange>) {
    let ones = match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    };
    if port == PCI_CONF_ADDRESS && size == 4 {
        if input {
            return (Some(CF8.load(Ordering::Acquire)), None);
        }
        CF8.store(value, Ordering::Release);
        return (None, None);
    }
    if PCI_CONF_DATA.contains(&port) {
        let address = CF8.load(Ordering::Acquire);
        if address & 1 << 31 == 0 {
            return (input.then_some(ones), None);
        }
        let mut vpci = CONFIG.lock();
        let bdf = (address >> 8) as u16;
        let offset = (address & 0xfc) as u8 | (port & 3) as u8;
        if address & 0x0f00_0000 != 0 || !offset.is_multiple_of(size) {
            // AMD's extended registers, or an access across its register: passed through as it is.
            // SAFETY: the configuration mechanism's ports, the domain's own latch, under CONFIG.
            unsafe {
                cpu::outl(PCI_CONF_ADDRESS, address);
                return (if input { Some(read(port, size)) } else { write(port, size, value) }, None);
            }
        }
        let done = if input {
            (Some(vpci.read(&mut Ports, bdf, offset, size)), None)
        } else {
            (None, vpci.write(&mut Ports, bdf, offset, size, value, msi))
        };
        return done;
    }
    if kept_by_keel(port) || (PCI_CONF_ADDRESS..PCI_CONF_ADDRESS + 4).contains(&port) {
        return (input.then_some(ones), None);
    }
    // SAFETY: a port Keel does not use (kept_by_keel lists those it does) of a device the hardware domain owns;
    // port I/O touches no memory Keel relies on. (A DMA-capable device programmed this way is issue 15's DMA
    // part: without an IOMMU it is trusted, as Xen's dom0 is.)
    unsafe {
        if input {
            (Some(read(port, size)), None)
        } else {
            (write(port, size, value), None)
        }
    }
}

/// # Safety
/// As for [`cpu::inb`].
unsafe fn read(port: u16, size: u8) -> u32 {
    // SAFETY: the caller vouches for the port.
    unsafe {
        match size {
            1 => u32::from(cpu::inb(port)),
            2 => u32::from(cpu::inw(port)),
            _ => cpu::inl(port),
        }
    }
}

/// # Safety
/// As for [`cpu::outb`].
unsafe fn write(port: u16, size: u8, value: u32) -> Option<u32> {
    // SAFETY: the caller vouches for the port.
    unsafe {
        match size {
            1 => cpu::outb(port, value as u8),
            2 => cpu::outw(port, value as u16),
            _ => cpu::outl(port, value),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::kept_by_keel;

    #[test]
    fn keel_keeps_its_own_ports() {
        for p in [0x20, 0x21, 0xa0, 0x40, 0x43, 0x61, 0x3f8, 0x3fd, 0xcf9, 0xe9, 0x4d0, 0x0, 0x8f, 0xc0] {
            assert!(kept_by_keel(p), "{p:#x}");
        }
        for p in [0x70, 0x71, 0x600, 0x604, 0xb2, 0x2f8, 0xcfc, 0x1f0, 0x170, 0xc000] {
            assert!(!kept_by_keel(p), "{p:#x}");
        }
    }
}
