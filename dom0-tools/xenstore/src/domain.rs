//! domUs' rings (XS_INTRODUCE): the ring page the toolstack named, mapped from the domain, and its event channel,
//! served like dom0's own ring until the domain is released.
//!
//! - The page: the domain's grant 1 (`GNTTAB_RESERVED_XENSTORE`, which the domain builder seeded for dom0) mapped
//!   through gntdev, as Xen 4.17's xenstored maps it; where that fails, the frame the introduce named (`mfn`: the
//!   store pfn, for an auto-translated guest) through a privcmd foreign map.
//! - The channel: `/dev/xen/evtchn` bound to the domain's store port ([`crate::local::Evtchn`]).
//! - The end: [`Release`] makes the ring's [`Events::wait`] fail once woken, so its thread leaves
//!   [`crate::server::Server::serve_ring`], and drops the page and the channel (unmapped, unbound).

use crate::local;
use crate::ring::{Events, RingPage, Waker};
use keel_xenctrl::devices::ForeignPage;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `GNTTAB_RESERVED_XENSTORE`.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

impl RingPage for ForeignPage {
    fn load(&self, off: usize) -> u32 {
        ForeignPage::load(self, off)
    }
    fn store(&self, off: usize, v: u32) {
        ForeignPage::store(self, off, v)
    }
    fn read(&self, off: usize) -> u8 {
        ForeignPage::read(self, off)
    }
    fn write(&self, off: usize, b: u8) {
        ForeignPage::write(self, off, b)
    }
}

/// Maps domain `domid`'s store ring: its grant 1, else frame `mfn`.
pub fn map_ring(domid: u16, mfn: u64) -> io::Result<ForeignPage> {
    ForeignPage::grant(domid, GNTTAB_RESERVED_XENSTORE)
        .or_else(|g| ForeignPage::foreign(domid, mfn).map_err(|f| io::Error::other(format!("{g}; and {f}"))))
}

/// Ends a ring's service from another thread.
#[derive(Clone)]
pub struct Release {
    stop: Arc<AtomicBool>,
    wake: Waker,
}

impl Release {
    /// Stops the ring: its thread wakes, finds the flag and leaves.
    pub fn release(&self) {
        self.stop.store(true, Ordering::Release);
        (self.wake)();
    }
}

/// A ring's events that end once released.
pub struct Releasable<E: Events> {
    inner: E,
    stop: Arc<AtomicBool>,
}

impl<E: Events> Releasable<E> {
    /// Wraps `inner`; the [`Release`] ends it.
    pub fn new(inner: E) -> (Self, Release) {
        let stop = Arc::new(AtomicBool::new(false));
        let r = Release { stop: stop.clone(), wake: inner.waker() };
        (Releasable { inner, stop }, r)
    }
}

impl<E: Events> Events for Releasable<E> {
    fn wait(&mut self) -> io::Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(io::Error::other("released"));
        }
        self.inner.wait()?;
        if self.stop.load(Ordering::Acquire) {
            return Err(io::Error::other("released"));
        }
        Ok(())
    }
    fn notify(&mut self) -> io::Result<()> {
        self.inner.notify()
    }
    fn waker(&self) -> Waker {
        self.inner.waker()
    }
}

/// Maps domain `domid`'s ring and binds its port: what [`crate::server::Server::serve_ring`] needs.
pub fn connect(domid: u16, mfn: u64, port: u32) -> io::Result<(ForeignPage, Releasable<local::Evtchn>, Release)> {
    let page = map_ring(domid, mfn)?;
    let ev = local::Evtchn::bind_interdomain(domid, port)
        .map_err(|e| io::Error::new(e.kind(), format!("bind to domain {domid}'s store port {port}: {e}")))?;
    let (ev, rel) = Releasable::new(ev);
    Ok((page, ev, rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Waker;
    use std::sync::atomic::AtomicUsize;

    struct Count(Arc<AtomicUsize>);
    impl Events for Count {
        fn wait(&mut self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn notify(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn waker(&self) -> Waker {
            Arc::new(|| {})
        }
    }

    #[test]
    fn a_released_ring_stops_waiting() {
        let n = Arc::new(AtomicUsize::new(0));
        let (mut ev, rel) = Releasable::new(Count(n.clone()));
        assert!(ev.wait().is_ok());
        rel.release();
        assert!(ev.wait().is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1, "no wait after the release");
    }
}
