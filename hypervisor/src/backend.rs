//! Backends Keel serves itself through a ring: the ports whose peer is `DOMID_XEN`, and the guest frames those
//! rings live in. None is registered today: dom0 uses console_io for its console and, as on Xen, its own xenstored
//! for xenstore (Linux's XS_LOCAL ring inside dom0).
//!
//! Event channels reach a backend through [`kick`] without knowing who serves it; backends register here at
//! start-up. A ring frame is never cached as a host address: [`with_ring`] translates its GFN through the p2m under
//! the domain's memory lock on every use, so a guest that replaces the frame (`XENMEM_add_to_physmap` over it) can
//! never make Keel write into a frame that was freed. [`is_ring_frame`] tells memory code which GFNs back a ring
//! (to refuse or log replacing them).

use crate::domain::Domain;
use crate::mm::PAGE_SIZE;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

/// A backend's entry point: the guest signalled its port.
pub type KickFn = fn(&Arc<Domain>);

static BACKENDS: Mutex<Vec<(u32, KickFn)>> = Mutex::new(Vec::new());
/// (domain, GFN) of every frame a Keel backend reads and writes.
static RING_FRAMES: Mutex<Vec<(u16, u64)>> = Mutex::new(Vec::new());

/// Registers the backend behind `remote_port` (replacing an earlier one).
pub fn register(remote_port: u32, f: KickFn) {
    let mut b = BACKENDS.lock();
    b.retain(|(p, _)| *p != remote_port);
    b.push((remote_port, f));
}

/// The guest signalled a port whose peer is Keel (`DOMID_XEN`); `remote_port` says which backend.
pub fn kick(dom: &Arc<Domain>, remote_port: u32) {
    let f = BACKENDS.lock().iter().find(|(p, _)| *p == remote_port).map(|(_, f)| *f);
    if let Some(f) = f {
        f(dom);
    }
}

/// Records that `gfn` of domain `domid` holds a ring a Keel backend serves.
pub fn add_ring_frame(domid: u16, gfn: u64) {
    let mut r = RING_FRAMES.lock();
    if !r.contains(&(domid, gfn)) {
        r.push((domid, gfn));
    }
}

/// Forgets a domain's ring frames (it is being destroyed).
pub fn forget_domain(domid: u16) {
    RING_FRAMES.lock().retain(|(d, _)| *d != domid);
}

/// Whether `gfn` of domain `domid` holds a ring a Keel backend serves: the one check memory code calls before it
/// replaces a frame (`XENMEM_add_to_physmap`) so that it can refuse.
pub fn is_ring_frame(domid: u16, gfn: u64) -> bool {
    RING_FRAMES.lock().contains(&(domid, gfn))
}

/// Byte and index access to a shared ring page, at offsets inside the page.
pub trait RingPage {
    /// Reads a 32-bit index (the other side updates it concurrently).
    fn load(&self, off: usize) -> u32;
    /// Writes a 32-bit index.
    fn store(&self, off: usize, v: u32);
    /// Reads one byte.
    fn read(&self, off: usize) -> u8;
    /// Writes one byte.
    fn write(&self, off: usize, b: u8);
}

/// A guest ring page seen through its current host frame; only lives inside [`with_ring`].
pub struct HostRing<'a> {
    base: usize,
    /// The domain's memory lock, held so that the frame stays mapped (and allocated) while this exists.
    _mem: &'a crate::domain::Memory,
}

impl HostRing<'_> {
    fn at(&self, off: usize) -> usize {
        self.base + (off % PAGE_SIZE as usize)
    }

    fn index(&self, off: usize) -> &AtomicU32 {
        let off = off & !3;
        // SAFETY: `base` is the host frame the domain's p2m maps at the ring's GFN, translated under the memory
        // lock `_mem` borrows from (every p2m change takes it, so the frame is neither unmapped nor freed while this
        // exists); `off` is aligned and below PAGE_SIZE (`at`). The guest updates the index concurrently, hence an
        // atomic.
        unsafe { &*(self.at(off) as *const AtomicU32) }
    }
}

impl RingPage for HostRing<'_> {
    fn load(&self, off: usize) -> u32 {
        self.index(off).load(Ordering::Acquire)
    }

    fn store(&self, off: usize, v: u32) {
        self.index(off).store(v, Ordering::Release);
    }

    fn read(&self, off: usize) -> u8 {
        // SAFETY: inside the ring frame, which stays mapped while `_mem` is held (see `index`).
        unsafe { core::ptr::read_volatile(self.at(off) as *const u8) }
    }

    fn write(&self, off: usize, b: u8) {
        // SAFETY: as in `read`; the frame is the domain's writable RAM (translated for writing).
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u8, b) }
    }
}

/// Runs `f` on the ring page at `gfn` of `dom`, translated now through the p2m and kept mapped by holding the
/// domain's memory lock until `f` returns. None when the domain has finished (its p2m may be going) or the GFN is not
/// writable RAM of the domain any more. `f` must
/// not take the domain's memory lock (raising an event channel may: do that after).
pub fn with_ring<R>(dom: &Domain, gfn: u64, f: impl FnOnce(&HostRing) -> R) -> Option<R> {
    let mem = dom.mem.lock();
    // `destroy` marks the domain dying before it takes this lock to tear the p2m down: checked under the lock, a
    // live domain's p2m stays whole until `f` returns.
    if dom.is_finished() {
        return None;
    }
    let hpa = mem.translate(gfn.checked_mul(PAGE_SIZE)?, true).ok()?;
    let ring = HostRing { base: (hpa & !(PAGE_SIZE - 1)) as usize, _mem: &mem };
    Some(f(&ring))
}

/// A ring page in host memory, for unit tests of the ring consumers.
#[cfg(test)]
pub struct TestRing(pub core::cell::RefCell<alloc::vec::Vec<u8>>);

#[cfg(test)]
impl TestRing {
    /// A zeroed page.
    pub fn new() -> Self {
        Self(core::cell::RefCell::new(alloc::vec![0; PAGE_SIZE as usize]))
    }
}

#[cfg(test)]
impl Default for TestRing {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl RingPage for TestRing {
    fn load(&self, off: usize) -> u32 {
        let b = self.0.borrow();
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }

    fn store(&self, off: usize, v: u32) {
        self.0.borrow_mut()[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn read(&self, off: usize) -> u8 {
        self.0.borrow()[off]
    }

    fn write(&self, off: usize, b: u8) {
        self.0.borrow_mut()[off] = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_frames_are_known_per_domain() {
        add_ring_frame(77, 0x3fffe);
        add_ring_frame(77, 0x3fffe);
        assert!(is_ring_frame(77, 0x3fffe));
        assert!(!is_ring_frame(78, 0x3fffe));
        assert!(!is_ring_frame(77, 0x3ffff));
        forget_domain(77);
        assert!(!is_ring_frame(77, 0x3fffe));
    }
}
