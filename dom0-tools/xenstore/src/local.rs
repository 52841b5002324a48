//! dom0's own xenstore ring, as Linux's XS_LOCAL xenbus sets it up for xenstored in the initial domain
//! (`drivers/xen/xenbus/xenbus_probe.c` xenstored_local_init): a page of the kernel's own and a port it allocated
//! with `EVTCHNOP_alloc_unbound(DOMID_SELF, remote DOMID_SELF)`. The kernel's `xenbus_probe` thread waits for the
//! first event on that port before it probes, so xenstored signals it once it serves the ring.
//!
//! - The page: `mmap` of `/dev/xen/xenbus_backend` (built into Debian's kernel; `IOCTL_XENBUS_BACKEND_EVTCHN` gives
//!   the port), else of xenfs's `/proc/xen/xsd_kva` with the port in `/proc/xen/xsd_port`, as C xenstored does.
//! - The port: `/dev/xen/evtchn` `IOCTL_EVTCHN_BIND_INTERDOMAIN(0, port)`, a loopback inside dom0. Events arrive
//!   by `read` (the port is masked until its number is written back); `IOCTL_EVTCHN_NOTIFY` signals the kernel.
//!   `VIRQ_DOM_EXC` is bound on the same file as C xenstored binds it (domains dying; nothing to do until domUs).

use crate::ring::{Events, Waker};
use keel_xenctrl::devices::{self, ForeignPage};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

/// Linux's xenstore backend device (dom0 only).
pub const XENBUS_BACKEND: &str = "/dev/xen/xenbus_backend";
/// xenfs's view of the ring page (mmap) and its port.
pub const XSD_KVA: &str = "/proc/xen/xsd_kva";
pub const XSD_PORT: &str = "/proc/xen/xsd_port";
/// `VIRQ_DOM_EXC`: a domain died or was destroyed.
pub const VIRQ_DOM_EXC: u32 = 3;

/// `_IOC(dir, type, nr, size)` of Linux's `asm-generic/ioctl.h` with dir `_IOC_NONE`, as Xen's ioctls are made.
const fn ioc_none(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((size as libc::c_ulong) << 16) | ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}

/// `IOCTL_XENBUS_BACKEND_EVTCHN` (`xen/xenbus_dev.h`): the ring's port.
const IOCTL_XENBUS_BACKEND_EVTCHN: libc::c_ulong = ioc_none(b'B', 0, 0);

fn ioctl(f: &File, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<i32> {
    // SAFETY: `req` is this module's one ioctl, IOCTL_XENBUS_BACKEND_EVTCHN, which takes no argument (`arg` is
    // null).
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Finds dom0's own ring: the mapped page and the kernel's port.
pub fn local_ring() -> io::Result<(ForeignPage, u32)> {
    let backend = File::options().read(true).write(true).open(XENBUS_BACKEND);
    if let Ok(f) = backend {
        let port = ioctl(&f, IOCTL_XENBUS_BACKEND_EVTCHN, std::ptr::null_mut())?;
        if port <= 0 {
            return Err(io::Error::other(format!("{XENBUS_BACKEND}: no store port ({port})")));
        }
        return Ok((ForeignPage::file(f)?, port as u32));
    }
    let port: u32 = std::fs::read_to_string(XSD_PORT)?
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{XSD_PORT} holds no port number")))?;
    if port == 0 {
        return Err(io::Error::other(format!("{XSD_PORT} is 0: the kernel has no local store")));
    }
    let kva = File::options().read(true).write(true).open(XSD_KVA)?;
    Ok((ForeignPage::file(kva)?, port))
}

/// The ring's event channel (keel-xenctrl's [`devices::Evtchn`]), plus a pipe that [`Events::waker`] writes to.
pub struct Evtchn {
    chan: devices::Evtchn,
    /// `VIRQ_DOM_EXC`'s port, if bound.
    pub dom_exc: Option<u32>,
    /// Called when `VIRQ_DOM_EXC` fires (a domain shut down, died or was destroyed).
    on_dom_exc: Option<Box<dyn FnMut() + Send>>,
    wake_r: OwnedFd,
    wake_w: Arc<OwnedFd>,
}

impl Evtchn {
    /// Binds a new port of ours to `remote_port` of domain `remote_dom` (0 and the kernel's port for dom0's ring).
    pub fn bind_interdomain(remote_dom: u16, remote_port: u32) -> io::Result<Evtchn> {
        let chan = devices::Evtchn::bind_interdomain(remote_dom, remote_port)?;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given, which has room for them.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (wake_r, wake_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Evtchn { chan, dom_exc: None, on_dom_exc: None, wake_r, wake_w: Arc::new(wake_w) })
    }

    /// Our end of the channel.
    pub fn local_port(&self) -> u32 {
        self.chan.local_port()
    }

    /// Binds `VIRQ_DOM_EXC` on this file; returns its port.
    pub fn bind_dom_exc(&mut self) -> io::Result<u32> {
        let port = self.chan.bind_virq(VIRQ_DOM_EXC)?;
        self.dom_exc = Some(port);
        Ok(port)
    }

    /// Calls `f` whenever `VIRQ_DOM_EXC` fires (after [`Evtchn::bind_dom_exc`]).
    pub fn on_dom_exc(&mut self, f: Box<dyn FnMut() + Send>) {
        self.on_dom_exc = Some(f);
    }
}

impl Events for Evtchn {
    fn wait(&mut self) -> io::Result<()> {
        let mut fds = [
            libc::pollfd { fd: self.chan.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.wake_r.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is an array of two pollfd that lives across the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        if fds[1].revents != 0 {
            let mut junk = [0u8; 64];
            // SAFETY: reads into a local buffer of the length given; the pipe is non-blocking.
            while unsafe { libc::read(self.wake_r.as_raw_fd(), junk.as_mut_ptr().cast(), junk.len()) } > 0 {}
        }
        if fds[0].revents != 0 {
            let fired = self.chan.take_pending()?;
            if let (Some(exc), Some(f)) = (self.dom_exc, self.on_dom_exc.as_mut()) {
                if fired.contains(&exc) {
                    f();
                }
            }
        }
        Ok(())
    }

    fn notify(&mut self) -> io::Result<()> {
        self.chan.notify()
    }

    fn waker(&self) -> Waker {
        let w = self.wake_w.clone();
        Arc::new(move || {
            // SAFETY: writes one byte from a local into the pipe's non-blocking write end, which `w` keeps open;
            // a full pipe (EAGAIN) already guarantees a wake-up.
            unsafe { libc::write(w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ioctl numbers Linux's headers define (`xen/evtchn.h`, `xen/xenbus_dev.h`).
    #[test]
    fn ioctl_numbers() {
        assert_eq!(IOCTL_XENBUS_BACKEND_EVTCHN, 0x4200);
    }

    /// A page mapped from a file behaves as the ring page: indexes and bytes land where the layout says.
    #[test]
    fn a_mapped_file_is_a_ring_page() {
        let path = std::env::temp_dir().join(format!("keel-xs-page-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let f = File::options().read(true).write(true).open(&path).unwrap();
        let p = ForeignPage::file(f).unwrap();
        p.store(keel_abi::io::xenstore::RSP_PROD, 0x1234_5678);
        p.write(keel_abi::io::xenstore::RSP + 3, 0xab);
        assert_eq!(p.load(keel_abi::io::xenstore::RSP_PROD), 0x1234_5678);
        drop(p);
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[2060..2064], &0x1234_5678u32.to_le_bytes());
        assert_eq!(bytes[1027], 0xab);
    }
}
