//! dom0's xenstore ring, answered by Keel's built-in store (`crate::xenstore`) until a xenstore daemon runs in
//! dom0.

use super::RingSlot;
use crate::backend::{self, RingPage};
use crate::domain::{self, Domain};
use crate::xenstore::{Conn, Store};
use alloc::string::String;
use alloc::sync::Arc;
use keel_abi::io::xenstore as ring;

static RING: RingSlot = RingSlot::new();
/// The connection: Keel's store, the request being assembled and the replies that did not fit in the ring yet.
static CONN: spin::Mutex<Option<Conn>> = spin::Mutex::new(None);

/// Sets up the store for the ring at `gfn` whose event channel is dom0's `port`.
pub(crate) fn attach(dom: &Domain, gfn: u64, port: u32) {
    *CONN.lock() = Some(Conn::new(Store::new(dom.id, &dom.name)));
    // Tell the guest that an `error` field explains a dropped connection.
    backend::with_ring(dom, gfn, |r| r.store(ring::SERVER_FEATURES, ring::SERVER_FEATURE_ERROR));
    RING.set(gfn, port);
    backend::add_ring_frame(dom.id, gfn);
    backend::register(backend::STORE, kick);
    crate::run::add_poller(poll);
}

/// Looks at the ring between notifications: Linux signals only when the ring was empty, so the rest of a request
/// that was written in pieces arrives silently. CPU 0 runs this on every scheduler pass.
fn poll() {
    let Some(gfn) = RING.gfn() else { return };
    let Some(d) = domain::get(0) else { return };
    let work = CONN
        .try_lock()
        .is_some_and(|c| c.as_ref().is_some_and(|c| backend::with_ring(&d, gfn, |r| c.has_work(r)).unwrap_or(false)));
    if work {
        kick(&d);
    }
}

/// Takes requests off the ring (one ring's worth per pass), answers them, and signals the guest.
fn kick(dom: &Arc<Domain>) {
    let Some(gfn) = RING.gfn() else { return };
    if dom.id != 0 {
        return;
    }
    let mut guard = CONN.lock();
    let Some(conn) = guard.as_mut() else { return };
    let Some(done) = backend::with_ring(dom, gfn, |r| conn.service(r)) else { return };
    drop(guard);
    if let Some(why) = done.dropped {
        crate::error!("xenstore: dropping domain {}'s connection: {why}", dom.id);
    }
    if done.notify {
        domain::evtchn::set_pending(dom, RING.port());
    }
}

/// The ring's indexes, for the debug keys.
pub(crate) fn describe() -> Option<String> {
    let gfn = RING.gfn()?;
    let dom = domain::get(0)?;
    let (queued, broken) = CONN.try_lock().and_then(|c| c.as_ref().map(|c| (c.queued(), c.broken())))?;
    backend::with_ring(&dom, gfn, |r: &backend::HostRing| {
        alloc::format!(
            "store ring: req cons {} prod {}, rsp cons {} prod {}, port {}, queued {queued}, error {broken:?}",
            r.load(ring::REQ_CONS),
            r.load(ring::REQ_PROD),
            r.load(ring::RSP_CONS),
            r.load(ring::RSP_PROD),
            RING.port()
        )
    })
}
