//! dom0's PV console: Keel is the backend of its `xencons_interface` ring (output to Keel's console, serial input
//! in).

use super::RingSlot;
use crate::backend::{self, RingPage};
use crate::domain::{self, Domain};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use keel_abi::io::console as ring;

static RING: RingSlot = RingSlot::new();

/// Sets up the backend for the ring at `gfn` whose event channel is dom0's `port`.
pub(crate) fn attach(domid: u16, gfn: u64, port: u32) {
    RING.set(gfn, port);
    backend::add_ring_frame(domid, gfn);
    backend::register(backend::CONSOLE, kick);
}

/// Copies what the guest wrote to its console ring out of it, at most one ring's worth (indexes read once).
pub(crate) fn drain_output(r: &impl RingPage) -> Vec<u8> {
    let cons = r.load(ring::OUT_CONS);
    let prod = r.load(ring::OUT_PROD);
    let n = prod.wrapping_sub(cons).min(ring::OUT_SIZE);
    let buf = (0..n).map(|i| r.read(ring::OUT + (cons.wrapping_add(i) % ring::OUT_SIZE) as usize)).collect();
    r.store(ring::OUT_CONS, cons.wrapping_add(n));
    buf
}

/// Puts `bytes` into the console's input ring as far as it has room; returns how many went in.
pub(crate) fn fill_input(r: &impl RingPage, bytes: &[u8]) -> usize {
    let cons = r.load(ring::IN_CONS);
    let mut prod = r.load(ring::IN_PROD);
    let room = ring::IN_SIZE.saturating_sub(prod.wrapping_sub(cons)) as usize;
    let n = room.min(bytes.len());
    for &b in &bytes[..n] {
        r.write(ring::IN + (prod % ring::IN_SIZE) as usize, b);
        prod = prod.wrapping_add(1);
    }
    r.store(ring::IN_PROD, prod);
    n
}

/// The guest signalled its console port: copy its output to Keel's console.
fn kick(dom: &Arc<Domain>) {
    let Some(gfn) = RING.gfn() else { return };
    if dom.id != 0 {
        return;
    }
    if let Some(buf) = backend::with_ring(dom, gfn, |r| drain_output(r)) {
        dom.console_write(&buf);
    }
}

/// Puts serial input into the initial domain's console ring and raises its port.
pub fn input(bytes: &[u8]) {
    let Some(gfn) = RING.gfn() else { return };
    let Some(dom) = domain::get(0) else { return };
    if dom.is_finished() {
        return;
    }
    if backend::with_ring(&dom, gfn, |r| fill_input(r, bytes)).is_some() {
        domain::evtchn::set_pending(&dom, RING.port());
    }
}

/// The ring's indexes, for the debug keys.
pub(crate) fn describe() -> Option<String> {
    let gfn = RING.gfn()?;
    let dom = domain::get(0)?;
    backend::with_ring(&dom, gfn, |r| {
        alloc::format!(
            "console ring: out cons {} prod {}, in cons {} prod {}, port {}",
            r.load(ring::OUT_CONS),
            r.load(ring::OUT_PROD),
            r.load(ring::IN_CONS),
            r.load(ring::IN_PROD),
            RING.port()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestRing;

    #[test]
    fn output_is_drained_once_and_at_most_one_ring() {
        let r = TestRing::new();
        for (i, &b) in b"hello".iter().enumerate() {
            r.write(ring::OUT + i, b);
        }
        r.store(ring::OUT_PROD, 5);
        assert_eq!(drain_output(&r), b"hello");
        assert_eq!(r.load(ring::OUT_CONS), 5);
        assert!(drain_output(&r).is_empty());
        // A producer index far ahead (the guest's to write) costs one ring's worth, not more.
        r.store(ring::OUT_PROD, 5 + 100_000);
        assert_eq!(drain_output(&r).len(), ring::OUT_SIZE as usize);
    }

    #[test]
    fn input_stops_when_the_ring_is_full() {
        let r = TestRing::new();
        assert_eq!(fill_input(&r, b"ls\n"), 3);
        assert_eq!(r.load(ring::IN_PROD), 3);
        assert_eq!([r.read(ring::IN), r.read(ring::IN + 1), r.read(ring::IN + 2)], *b"ls\n");
        let big = alloc::vec![b'x'; 2000];
        assert_eq!(fill_input(&r, &big), ring::IN_SIZE as usize - 3);
        assert_eq!(fill_input(&r, b"y"), 0);
        // The guest consumed everything: there is room again, and the index wraps in the ring.
        r.store(ring::IN_CONS, ring::IN_SIZE);
        assert_eq!(fill_input(&r, b"z"), 1);
        assert_eq!(r.read(ring::IN), b'z');
    }
}
