//! The ring transport: a domain's connection to xenstored through a shared page (`struct
//! xenstore_domain_interface`, `public/io/xs_wire.h`: a 1 KiB request ring the domain produces, a 1 KiB response ring
//! xenstored produces, their free-running indexes, and `server_features`/`error`) and an event channel.
//!
//! The page is behind [`RingPage`], so where it comes from is only a mapping: dom0's own ring is the page Linux's
//! XS_LOCAL xenbus allocated, mapped through `/dev/xen/xenbus_backend` or `/proc/xen/xsd_kva` (`crate::local`); a
//! domU's ring will be its grant-table entry 1 (`GNTTAB_RESERVED_XENSTORE`) mapped through gntdev. [`RingConn`] is
//! the ring logic alone, without I/O, so it is unit-tested on an in-memory page ([`MemPage`]):
//!
//! - requests arrive in pieces (Linux writes as far as the ring has room) and are reassembled by [`Decoder`];
//!   responses leave in pieces as the domain makes room; indexes wrap around the ring and the `u32` range;
//! - indexes are read once per pass and at most one ring's worth of request bytes is taken per pass, so a domain that
//!   rewinds `req_cons` costs passes, never a loop;
//! - requests are taken only while little output is queued ([`OUTPUT_STOP`]), so a domain that does not read its
//!   responses stops being served instead of growing the queue; watch events beyond [`OUTPUT_MAX`] are dropped;
//! - a header announcing more than `XENSTORE_PAYLOAD_MAX` bytes (`XENSTORE_ERROR_PROTO`) or indexes more than a
//!   ring apart (`XENSTORE_ERROR_RINGIDX`) end the connection as Xen's xenstored ends it: the reason goes in the
//!   page's `error` field and the ring is not served any more; the daemon carries on;
//! - a pass asks for a notification only when it moved an index (took requests or produced responses): never for an
//!   empty pass, at most once per pass.

use crate::wire::{typ, Decoder, FrameError, Msg, HEADER_LEN};
use keel_abi::io::xenstore as layout;
use std::collections::VecDeque;

/// Bytes in each of the two rings (`XENSTORE_RING_SIZE`).
pub const RING_SIZE: u32 = layout::RING_SIZE;
/// Replies and events queued for the response ring, at most; past it, watch events are dropped.
pub const OUTPUT_MAX: usize = 16 * 1024;
/// Requests are taken off the ring only while fewer bytes than this are queued, so the reply to any request (a header
/// and at most `XENSTORE_PAYLOAD_MAX` bytes) still fits under [`OUTPUT_MAX`].
pub const OUTPUT_STOP: usize = OUTPUT_MAX - HEADER_LEN - crate::wire::PAYLOAD_MAX;

/// Index and byte access to a shared ring page, at offsets inside the page (`keel_abi::io::xenstore`).
pub trait RingPage: Send + Sync {
    /// Reads a 32-bit index; the other side updates it concurrently (acquire: bytes it covers are visible).
    fn load(&self, off: usize) -> u32;
    /// Writes a 32-bit index (release: bytes written or read before it are done).
    fn store(&self, off: usize, v: u32);
    /// Reads one byte.
    fn read(&self, off: usize) -> u8;
    /// Writes one byte.
    fn write(&self, off: usize, b: u8);
}

/// A ring page in ordinary memory: tests, and the other end of a test connection.
pub struct MemPage(std::sync::Mutex<Vec<u8>>);

impl MemPage {
    /// A zeroed page.
    pub fn new() -> Self {
        Self(std::sync::Mutex::new(vec![0; 4096]))
    }

    fn page(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for MemPage {
    fn default() -> Self {
        Self::new()
    }
}

impl RingPage for MemPage {
    fn load(&self, off: usize) -> u32 {
        let p = self.page();
        u32::from_le_bytes(p[off..off + 4].try_into().expect("4 bytes"))
    }

    fn store(&self, off: usize, v: u32) {
        self.page()[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn read(&self, off: usize) -> u8 {
        self.page()[off]
    }

    fn write(&self, off: usize, b: u8) {
        self.page()[off] = b;
    }
}

/// Wakes a ring's server thread from elsewhere (a watch event for its domain was queued by another connection).
pub type Waker = std::sync::Arc<dyn Fn() + Send + Sync>;

/// A ring's event channel, as the server thread uses it.
pub trait Events: Send {
    /// Blocks until the domain signalled the channel or a [`Waker`] ran (spurious returns are fine).
    fn wait(&mut self) -> std::io::Result<()>;
    /// Signals the domain.
    fn notify(&mut self) -> std::io::Result<()>;
    /// A waker for [`Events::wait`].
    fn waker(&self) -> Waker;
}

/// What one [`RingConn::service`] pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// An index moved (requests taken or responses produced): the domain should be notified.
    pub notify: bool,
    /// The connection ended on this pass, and why (the `XENSTORE_ERROR_*` is in the page's `error` field).
    pub dropped: Option<&'static str>,
}

/// The ring side of one domain's connection: the request being assembled and the output not yet in the ring.
#[derive(Default)]
pub struct RingConn {
    dec: Decoder,
    out: VecDeque<u8>,
    broken: Option<u32>,
    /// Watch events dropped because the output queue was full.
    pub dropped_events: u64,
}

impl RingConn {
    /// A fresh connection; tells the domain (`server_features`) that `error` explains a dropped connection.
    pub fn new(r: &dyn RingPage) -> Self {
        r.store(layout::SERVER_FEATURES, layout::SERVER_FEATURE_ERROR);
        Self::default()
    }

    /// Bytes of output queued.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// The `XENSTORE_ERROR_*` the connection was dropped for, if it was.
    pub fn broken(&self) -> Option<u32> {
        self.broken
    }

    /// Queues one encoded message for the domain: a reply always (requests stop at [`OUTPUT_STOP`]), a watch event
    /// only while the queue has room (false: dropped).
    pub fn queue(&mut self, bytes: &[u8]) -> bool {
        let event = bytes.len() >= 4 && u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) == typ::WATCH_EVENT;
        if self.broken.is_some() || (event && self.out.len() + bytes.len() > OUTPUT_MAX) {
            self.dropped_events += u64::from(event);
            return false;
        }
        self.out.extend(bytes);
        true
    }

    fn fail(&mut self, r: &dyn RingPage, error: u32, why: &'static str) -> Pass {
        self.broken = Some(error);
        self.dec = Decoder::default();
        self.out = VecDeque::new();
        r.store(layout::ERROR, error);
        Pass { notify: true, dropped: Some(why) }
    }

    /// One pass: takes at most one ring's worth of request bytes (indexes read once), gives each complete request
    /// to `handle` (which returns the encoded messages now due to this domain: the reply, and any watch events), and
    /// moves queued output into the response ring as far as it has room.
    pub fn service(&mut self, r: &dyn RingPage, handle: &mut dyn FnMut(&Msg) -> Vec<Vec<u8>>) -> Pass {
        if self.broken.is_some() {
            return Pass::default();
        }
        let mut pass = Pass::default();
        let cons = r.load(layout::REQ_CONS);
        let prod = r.load(layout::REQ_PROD);
        let avail = prod.wrapping_sub(cons);
        if avail > RING_SIZE {
            return self.fail(r, layout::ERROR_RINGIDX, "request ring indexes more than a ring apart");
        }
        let mut taken = 0u32;
        let mut buf = [0u8; RING_SIZE as usize];
        while taken < avail && self.out.len() < OUTPUT_STOP {
            let n = (self.dec.wanted() as u32).min(avail - taken);
            for (i, b) in buf[..n as usize].iter_mut().enumerate() {
                let idx = cons.wrapping_add(taken + i as u32) & (RING_SIZE - 1);
                *b = r.read(layout::REQ + idx as usize);
            }
            taken += n;
            match self.dec.feed(&buf[..n as usize]) {
                Err(FrameError::TooLong(_)) => {
                    r.store(layout::REQ_CONS, cons.wrapping_add(taken));
                    return self.fail(r, layout::ERROR_PROTO, "request longer than XENSTORE_PAYLOAD_MAX");
                }
                Ok((_, Some(m))) => {
                    for bytes in handle(&m) {
                        self.queue(&bytes);
                    }
                }
                Ok((_, None)) => {}
            }
        }
        if taken > 0 {
            r.store(layout::REQ_CONS, cons.wrapping_add(taken));
            pass.notify = true;
        }
        let rcons = r.load(layout::RSP_CONS);
        let mut rprod = r.load(layout::RSP_PROD);
        let used = rprod.wrapping_sub(rcons);
        if used > RING_SIZE {
            return self.fail(r, layout::ERROR_RINGIDX, "response ring indexes more than a ring apart");
        }
        let n = ((RING_SIZE - used) as usize).min(self.out.len());
        for b in self.out.drain(..n) {
            r.write(layout::RSP + (rprod & (RING_SIZE - 1)) as usize, b);
            rprod = rprod.wrapping_add(1);
        }
        if n > 0 {
            r.store(layout::RSP_PROD, rprod);
            pass.notify = true;
        }
        pass
    }

    /// Whether a pass would do anything now: requests in the ring or output waiting.
    pub fn has_work(&self, r: &dyn RingPage) -> bool {
        self.broken.is_none() && (r.load(layout::REQ_CONS) != r.load(layout::REQ_PROD) || !self.out.is_empty())
    }
}

/// The domain's side of a ring, for tests (what Linux's xenbus does with the page).
pub mod guest {
    use super::*;

    /// Free bytes in the request ring.
    pub fn room(r: &dyn RingPage) -> usize {
        let used = r.load(layout::REQ_PROD).wrapping_sub(r.load(layout::REQ_CONS));
        (RING_SIZE - used.min(RING_SIZE)) as usize
    }

    /// Writes as much of `bytes` as the request ring has room for; returns how much.
    pub fn produce(r: &dyn RingPage, bytes: &[u8]) -> usize {
        let mut prod = r.load(layout::REQ_PROD);
        let n = room(r).min(bytes.len());
        for &b in &bytes[..n] {
            r.write(layout::REQ + (prod & (RING_SIZE - 1)) as usize, b);
            prod = prod.wrapping_add(1);
        }
        r.store(layout::REQ_PROD, prod);
        n
    }

    /// Takes everything in the response ring.
    pub fn consume(r: &dyn RingPage) -> Vec<u8> {
        let mut cons = r.load(layout::RSP_CONS);
        let prod = r.load(layout::RSP_PROD);
        let mut out = Vec::new();
        while cons != prod {
            out.push(r.read(layout::RSP + (cons & (RING_SIZE - 1)) as usize));
            cons = cons.wrapping_add(1);
        }
        r.store(layout::RSP_CONS, cons);
        out
    }
}

#[cfg(test)]
mod tests;
