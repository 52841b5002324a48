//! A small xenstore client over the guest's own ring (`struct xenstore_domain_interface`, Xen
//! `public/io/xs_wire.h`): the page and event channel the toolstack gave the domain (HVM_PARAM_STORE_PFN and
//! HVM_PARAM_STORE_EVTCHN), one request at a time, no transactions, no watches.
//!
//! Paths without a leading `/` are relative to the domain's home, `/local/domain/<domid>`, as xenstored resolves
//! them for the connection. The client sleeps in SCHEDOP_poll on the store port; it takes no upcalls.

use crate::hypercall::{self, Errno};
use crate::{evtchn, time};
use core::fmt;
use core::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};
use keel_abi::io::xenstore::{REQ, REQ_CONS, REQ_PROD, RING_SIZE, RSP, RSP_CONS, RSP_PROD};
use keel_abi::io::xs_wire::{self, XsdSockmsg, HEADER_SIZE, XENSTORE_PAYLOAD_MAX};
use keel_abi::shared_info::hvm_param;

/// How long one request may take before the client gives up.
pub const TIMEOUT_NS: u64 = 10 * time::SECOND;

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    /// A hypercall failed (getting the parameters, signalling the port).
    Hypercall(Errno),
    /// xenstored answered XS_ERROR with this name ("ENOENT", "EACCES", ...), cut at 15 bytes.
    Server([u8; 16]),
    /// No answer within [`TIMEOUT_NS`].
    Timeout,
    /// The request or the answer does not fit (payload limit, the caller's buffer), or the answer is malformed.
    TooLong,
}

impl From<Errno> for XsError {
    fn from(e: Errno) -> Self {
        XsError::Hypercall(e)
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::Hypercall(e) => write!(f, "hypercall failed: {e}"),
            XsError::Server(name) => {
                let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                write!(f, "xenstored says {}", core::str::from_utf8(&name[..len]).unwrap_or("?"))
            }
            XsError::Timeout => f.write_str("no answer from xenstored"),
            XsError::TooLong => f.write_str("message too long or malformed"),
        }
    }
}

impl From<XsError> for crate::Outcome {
    fn from(e: XsError) -> Self {
        crate::error!("xenstore: {e}")
    }
}

/// The connection: the ring page and the store event channel.
pub struct Xenstore {
    page: usize,
    port: u32,
    next_id: u32,
}

impl Xenstore {
    /// Finds the ring and port through the HVM parameters. The page must lie in the identity-mapped first 4 GiB.
    pub fn open() -> Result<Self, XsError> {
        let pfn = hypercall::get_hvm_param(hvm_param::STORE_PFN)?;
        let port = hypercall::get_hvm_param(hvm_param::STORE_EVTCHN)?;
        if pfn == 0 || pfn >= 1 << 20 || port == 0 || port >= u64::from(keel_abi::shared_info::EVTCHN_2L_PORTS) {
            return Err(XsError::Hypercall(Errno::EINVAL));
        }
        Ok(Xenstore { page: (pfn << 12) as usize, port: port as u32, next_id: 1 })
    }

    /// The store event channel.
    pub fn port(&self) -> u32 {
        self.port
    }

    fn index(&self, offset: usize) -> &'static AtomicU32 {
        // SAFETY: the toolstack gave this domain the page for its xenstore ring; it stays mapped while the domain
        // lives, is identity-mapped (checked in `open`), and the index fields are 4-byte aligned words that both
        // sides only access atomically.
        unsafe { AtomicU32::from_ptr((self.page + offset) as *mut u32) }
    }

    fn byte(&self, offset: usize) -> &'static AtomicU8 {
        // SAFETY: as in `index`; a ring byte, accessed atomically.
        unsafe { AtomicU8::from_ptr((self.page + offset) as *mut u8) }
    }

    /// Waits for the store port (or a short while: xenstored may have moved without a notification).
    fn wait(&self, deadline: u64) -> Result<(), XsError> {
        let now = time::xen_system_time_ns();
        if now >= deadline {
            return Err(XsError::Timeout);
        }
        evtchn::poll(self.port, (now + 10 * time::MS).min(deadline))?;
        Ok(())
    }

    /// Puts `bytes` on the request ring, as room frees up.
    fn send(&self, mut bytes: &[u8], deadline: u64) -> Result<(), XsError> {
        while !bytes.is_empty() {
            let cons = self.index(REQ_CONS).load(Ordering::Acquire);
            let prod = self.index(REQ_PROD).load(Ordering::Relaxed);
            let room = (RING_SIZE - prod.wrapping_sub(cons).min(RING_SIZE)) as usize;
            if room == 0 {
                self.wait(deadline)?;
                continue;
            }
            let n = room.min(bytes.len());
            for (i, &b) in bytes[..n].iter().enumerate() {
                let at = prod.wrapping_add(i as u32) % RING_SIZE;
                self.byte(REQ + at as usize).store(b, Ordering::Relaxed);
            }
            fence(Ordering::Release);
            self.index(REQ_PROD).store(prod.wrapping_add(n as u32), Ordering::Release);
            evtchn::send(self.port)?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Takes `out.len()` bytes off the response ring.
    fn recv(&self, out: &mut [u8], deadline: u64) -> Result<(), XsError> {
        let mut got = 0;
        while got < out.len() {
            let prod = self.index(RSP_PROD).load(Ordering::Acquire);
            let cons = self.index(RSP_CONS).load(Ordering::Relaxed);
            let avail = prod.wrapping_sub(cons).min(RING_SIZE) as usize;
            if avail == 0 {
                self.wait(deadline)?;
                continue;
            }
            let n = avail.min(out.len() - got);
            for i in 0..n {
                let at = cons.wrapping_add(i as u32) % RING_SIZE;
                out[got + i] = self.byte(RSP + at as usize).load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            self.index(RSP_CONS).store(cons.wrapping_add(n as u32), Ordering::Release);
            evtchn::send(self.port)?;
            got += n;
        }
        Ok(())
    }

    /// One request of type `typ` whose payload is `parts` concatenated; the reply's payload goes to `reply`.
    /// Returns its length. Watch events that arrive in between are dropped.
    pub fn request(&mut self, typ: u32, parts: &[&[u8]], reply: &mut [u8]) -> Result<usize, XsError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > XENSTORE_PAYLOAD_MAX as usize {
            return Err(XsError::TooLong);
        }
        let deadline = time::xen_system_time_ns() + TIMEOUT_NS;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let header = XsdSockmsg { typ, req_id: id, tx_id: 0, len: len as u32 };
        self.send(&header.to_bytes(), deadline)?;
        for p in parts {
            self.send(p, deadline)?;
        }
        loop {
            let mut h = [0u8; HEADER_SIZE];
            self.recv(&mut h, deadline)?;
            let h = XsdSockmsg::from_bytes(&h);
            if h.len > XENSTORE_PAYLOAD_MAX {
                return Err(XsError::TooLong);
            }
            let n = h.len as usize;
            if h.typ == xs_wire::XS_WATCH_EVENT || h.req_id != id {
                // Not ours: drain it.
                let mut skip = [0u8; 64];
                let mut left = n;
                while left > 0 {
                    let k = left.min(skip.len());
                    self.recv(&mut skip[..k], deadline)?;
                    left -= k;
                }
                continue;
            }
            if h.typ == xs_wire::XS_ERROR {
                let mut name = [0u8; 16];
                let mut left = n;
                let mut at = 0;
                while left > 0 {
                    let mut b = [0u8; 1];
                    self.recv(&mut b, deadline)?;
                    if at < 15 {
                        name[at] = b[0];
                        at += 1;
                    }
                    left -= 1;
                }
                return Err(XsError::Server(name));
            }
            if n > reply.len() {
                let mut left = n;
                let mut skip = [0u8; 64];
                while left > 0 {
                    let k = left.min(skip.len());
                    self.recv(&mut skip[..k], deadline)?;
                    left -= k;
                }
                return Err(XsError::TooLong);
            }
            self.recv(&mut reply[..n], deadline)?;
            return Ok(n);
        }
    }

    /// XS_READ: the value at `path`, in `buf`.
    pub fn read<'a>(&mut self, path: &str, buf: &'a mut [u8]) -> Result<&'a str, XsError> {
        let n = self.request(xs_wire::XS_READ, &[path.as_bytes(), b"\0"], buf)?;
        // Values are usually text; a trailing NUL some servers add is dropped.
        let v = &buf[..n];
        let v = v.strip_suffix(b"\0").unwrap_or(v);
        core::str::from_utf8(v).map_err(|_| XsError::TooLong)
    }

    /// XS_READ of a decimal number.
    pub fn read_u64(&mut self, path: &str) -> Result<u64, XsError> {
        let mut buf = [0u8; 32];
        self.read(path, &mut buf)?.trim().parse().map_err(|_| XsError::TooLong)
    }

    /// XS_WRITE: `value` at `path` (created with its parents if missing).
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XsError> {
        let mut ok = [0u8; 8];
        self.request(xs_wire::XS_WRITE, &[path.as_bytes(), b"\0", value], &mut ok).map(drop)
    }

    /// XS_WRITE of a formatted value.
    pub fn write_fmt(&mut self, path: &str, value: fmt::Arguments) -> Result<(), XsError> {
        let m = crate::Msg::new(value);
        self.write(path, m.as_str().as_bytes())
    }

    /// XS_DIRECTORY: the names under `path`, NUL-separated in `buf`.
    pub fn directory<'a>(
        &mut self,
        path: &str,
        buf: &'a mut [u8],
    ) -> Result<impl Iterator<Item = &'a str> + 'a, XsError> {
        let n = self.request(xs_wire::XS_DIRECTORY, &[path.as_bytes(), b"\0"], buf)?;
        Ok(buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| core::str::from_utf8(s).unwrap_or("?")))
    }

    /// How long a test guest waits for a backend's xenbus state to move (InitWait, Connected). Under QEMU TCG,
    /// dom0's four vCPUs and every domU share one or two emulated CPUs, and a stock netback's connect took up to
    /// 25 s there (docs/testing.md): a real frontend waits minutes (xenbus's device timeout is 300 s).
    pub const BACKEND_WAIT_NS: u64 = 120 * time::SECOND;

    /// Reads `path` until it holds a number for which `done` says yes, or `timeout_ns` passes; returns the last
    /// number read (`None` if it never held one).
    pub fn wait_for(&mut self, path: &str, timeout_ns: u64, done: impl Fn(u64) -> bool) -> Option<u64> {
        let deadline = time::xen_system_time_ns() + timeout_ns;
        let mut last = None;
        loop {
            if let Ok(v) = self.read_u64(path) {
                last = Some(v);
                if done(v) {
                    return last;
                }
            }
            let now = time::xen_system_time_ns();
            if now >= deadline {
                return last;
            }
            hypercall::sched_poll(&[0], (now + 20 * time::MS).min(deadline));
        }
    }
}
