//! dom0's Xen devices for backends, as Xen's libxenevtchn, libxengnttab and libxenforeignmemory reach them:
//!
//! - [`Evtchn`]: one `/dev/xen/evtchn` file bound to a remote domain's port (`IOCTL_EVTCHN_BIND_INTERDOMAIN`).
//!   A pending event is read as its local port number and stays masked until that number is written back
//!   ([`Evtchn::ack`]); `IOCTL_EVTCHN_NOTIFY` signals the other end; closing the file unbinds the port.
//! - [`ForeignPage`]: one page of another domain mapped read-write, either a grant the domain made
//!   ([`ForeignPage::grant`]: `/dev/xen/gntdev` `IOCTL_GNTDEV_MAP_GRANT_REF`, then `mmap` at the returned offset) or
//!   any frame of it ([`ForeignPage::foreign`]: `/dev/xen/privcmd` `mmap` of one page, then
//!   `IOCTL_PRIVCMD_MMAPBATCH_V2` fills it; the page's error comes back in the ioctl's error array). Dropping it
//!   unmaps the page and closes the device file, which ends the grant mapping.
//!
//! The ioctl numbers and structures (public: dom0's check program uses them raw) follow Linux's `include/uapi/xen/{evtchn,gntdev,privcmd}.h`. Both mappings are
//! what Xen 4.17's xenconsoled uses for a guest's console ring (grant ref `GNTTAB_RESERVED_CONSOLE` first, the
//! ring's frame number as the fallback).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes in a page.
pub const PAGE: usize = 4096;
/// Linux's event-channel device.
pub const EVTCHN: &str = "/dev/xen/evtchn";
/// Linux's grant-mapping device.
pub const GNTDEV: &str = "/dev/xen/gntdev";
/// Linux's privileged-command device.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// `_IOC(_IOC_NONE, ty, nr, size)`, as Xen's ioctls are made.
const fn ioc(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((size as libc::c_ulong) << 16) | ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}

/// `IOCTL_EVTCHN_BIND_VIRQ`: `{ u32 virq }`, returns the local port.
pub const IOCTL_EVTCHN_BIND_VIRQ: libc::c_ulong = ioc(b'E', 0, 4);
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: `{ u32 remote_domain, remote_port }`, returns the local port.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: libc::c_ulong = ioc(b'E', 1, 8);
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: `{ u32 remote_domain }`, returns the new local port.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: libc::c_ulong = ioc(b'E', 2, 4);
/// `IOCTL_EVTCHN_NOTIFY`: `{ u32 port }`.
pub const IOCTL_EVTCHN_NOTIFY: libc::c_ulong = ioc(b'E', 4, 4);

/// `struct ioctl_gntdev_map_grant_ref` with one `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
pub struct GntdevMapGrantRef {
    pub count: u32,
    pub pad: u32,
    pub index: u64,
    pub domid: u32,
    pub gref: u32,
}
pub const IOCTL_GNTDEV_MAP_GRANT_REF: libc::c_ulong = ioc(b'G', 0, size_of::<GntdevMapGrantRef>());

/// `struct ioctl_gntalloc_alloc_gref` with one grant.
#[repr(C)]
pub struct GntallocAllocGref {
    pub domid: u16,
    pub flags: u16,
    pub count: u32,
    pub index: u64,
    pub gref: u32,
}
pub const IOCTL_GNTALLOC_ALLOC_GREF: libc::c_ulong = ioc(b'G', 5, size_of::<GntallocAllocGref>());
/// `GNTALLOC_FLAG_WRITABLE`.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;
/// Linux's grant-allocation device.
pub const GNTALLOC: &str = "/dev/xen/gntalloc";

/// `struct privcmd_mmapbatch_v2`.
#[repr(C)]
pub struct PrivcmdMmapbatchV2 {
    pub num: u32,
    pub dom: u16,
    pub addr: u64,
    pub arr: *const u64,
    pub err: *mut i32,
}
pub const IOCTL_PRIVCMD_MMAPBATCH_V2: libc::c_ulong = ioc(b'P', 4, size_of::<PrivcmdMmapbatchV2>());

/// Issues `req` on `fd` with `arg`.
///
/// # Safety
/// `arg` must point at a live value of the size and layout `req` encodes (and anything it points to must live
/// across the call).
unsafe fn ioctl(fd: RawFd, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<i32> {
    // SAFETY: the caller's contract.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn open_rw(path: &str) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {path}: {e}")))
}

/// One interdomain event channel on its own `/dev/xen/evtchn` file.
pub struct Evtchn {
    dev: File,
    local: u32,
}

impl Evtchn {
    /// Binds a new local port to `remote_port` of domain `remote_dom`.
    pub fn bind_interdomain(remote_dom: u16, remote_port: u32) -> io::Result<Evtchn> {
        let dev = open_rw(EVTCHN)?;
        let mut arg = [u32::from(remote_dom), remote_port];
        // SAFETY: the request reads two u32 from `arg`, which lives across the call.
        let local = unsafe { ioctl(dev.as_raw_fd(), IOCTL_EVTCHN_BIND_INTERDOMAIN, arg.as_mut_ptr().cast()) }
            .map_err(|e| io::Error::new(e.kind(), format!("bind to domain {remote_dom} port {remote_port}: {e}")))?;
        set_nonblocking(dev.as_raw_fd())?;
        Ok(Evtchn { dev, local: local as u32 })
    }

    /// A new local port that domain `remote_dom` may bind to (`EVTCHNOP_alloc_unbound`).
    pub fn bind_unbound(remote_dom: u16) -> io::Result<Evtchn> {
        let dev = open_rw(EVTCHN)?;
        let mut arg = u32::from(remote_dom);
        // SAFETY: the request reads one u32 from `arg`, which lives across the call.
        let local = unsafe { ioctl(dev.as_raw_fd(), IOCTL_EVTCHN_BIND_UNBOUND_PORT, (&mut arg as *mut u32).cast()) }
            .map_err(|e| io::Error::new(e.kind(), format!("unbound port for domain {remote_dom}: {e}")))?;
        set_nonblocking(dev.as_raw_fd())?;
        Ok(Evtchn { dev, local: local as u32 })
    }

    /// Our end of the channel.
    pub fn local_port(&self) -> u32 {
        self.local
    }

    /// Signals the other end.
    pub fn notify(&self) -> io::Result<()> {
        let mut port = self.local;
        // SAFETY: the request reads one u32 from `port`, which lives across the call.
        unsafe { ioctl(self.dev.as_raw_fd(), IOCTL_EVTCHN_NOTIFY, (&mut port as *mut u32).cast()) }.map(drop)
    }

    /// Also binds `virq` on this file (it then reports that VIRQ's events too); returns its local port.
    pub fn bind_virq(&mut self, virq: u32) -> io::Result<u32> {
        let mut arg = virq;
        // SAFETY: the request reads one u32 from `arg`, which lives across the call.
        let port = unsafe { ioctl(self.dev.as_raw_fd(), IOCTL_EVTCHN_BIND_VIRQ, (&mut arg as *mut u32).cast()) }
            .map_err(|e| io::Error::new(e.kind(), format!("bind VIRQ {virq}: {e}")))?;
        Ok(port as u32)
    }

    /// Takes the pending events (the file is non-blocking: none is fine), unmasks their ports again, and returns
    /// the ports that fired (at most 64 at a time; the rest stay pending for the next call).
    pub fn take_pending(&mut self) -> io::Result<Vec<u32>> {
        let mut buf = [0u8; 4 * 64];
        let n = match self.dev.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let n = n - n % 4;
        if n > 0 {
            self.dev.write_all(&buf[..n])?;
        }
        Ok(buf[..n].chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// [`Evtchn::take_pending`], saying only whether any event was pending.
    pub fn ack(&mut self) -> io::Result<bool> {
        Ok(!self.take_pending()?.is_empty())
    }
}

impl AsRawFd for Evtchn {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor this process owns; no memory is passed.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A read-write shared mapping of one page of `file` at `offset`.
fn map_page(file: &File, offset: u64) -> io::Result<*mut u8> {
    // SAFETY: a new shared mapping at an address the kernel picks: nothing in this process is there yet.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

/// One page of another domain, mapped read-write; the other domain writes it concurrently, so every access is an
/// atomic (indexes) or a volatile single-byte access.
pub struct ForeignPage {
    base: *mut u8,
    _dev: File,
}

// SAFETY: the mapping belongs to this value alone until drop; accesses are atomics or volatile byte accesses,
// which are sound from any thread (the other domain writes the page concurrently anyway).
unsafe impl Send for ForeignPage {}
// SAFETY: as for Send: no access needs `&mut self`.
unsafe impl Sync for ForeignPage {}

impl ForeignPage {
    /// Maps grant `gref` of domain `domid` through gntdev.
    pub fn grant(domid: u16, gref: u32) -> io::Result<ForeignPage> {
        let dev = open_rw(GNTDEV)?;
        let mut m = GntdevMapGrantRef { count: 1, pad: 0, index: 0, domid: u32::from(domid), gref };
        // SAFETY: the request reads and writes a `GntdevMapGrantRef` (one grant), which lives across the call.
        unsafe { ioctl(dev.as_raw_fd(), IOCTL_GNTDEV_MAP_GRANT_REF, (&mut m as *mut GntdevMapGrantRef).cast()) }
            .map_err(|e| io::Error::new(e.kind(), format!("gntdev map of domain {domid}'s grant {gref}: {e}")))?;
        let base = map_page(&dev, m.index)
            .map_err(|e| io::Error::new(e.kind(), format!("mmap of domain {domid}'s grant {gref}: {e}")))?;
        Ok(ForeignPage { base, _dev: dev })
    }

    /// A page of our own, granted writable to domain `domid` through gntalloc (as a frontend shares a ring);
    /// returns it and its grant reference. Dropping it ends the grant.
    pub fn alloc_grant(domid: u16) -> io::Result<(ForeignPage, u32)> {
        let dev = open_rw(GNTALLOC)?;
        let mut a = GntallocAllocGref { domid, flags: GNTALLOC_FLAG_WRITABLE, count: 1, index: 0, gref: 0 };
        // SAFETY: the request reads and writes a `GntallocAllocGref` (one grant), which lives across the call.
        unsafe { ioctl(dev.as_raw_fd(), IOCTL_GNTALLOC_ALLOC_GREF, (&mut a as *mut GntallocAllocGref).cast()) }
            .map_err(|e| io::Error::new(e.kind(), format!("gntalloc of a page for domain {domid}: {e}")))?;
        let base = map_page(&dev, a.index)?;
        Ok((ForeignPage { base, _dev: dev }, a.gref))
    }

    /// Maps frame `gfn` of domain `domid` through privcmd.
    /// Maps the first page of a device file that stands for a page shared with another domain (dom0's own
    /// xenstore ring: `/dev/xen/xenbus_backend` or `/proc/xen/xsd_kva`).
    pub fn file(file: File) -> io::Result<ForeignPage> {
        let base = map_page(&file, 0)?;
        Ok(ForeignPage { base, _dev: file })
    }

    pub fn foreign(domid: u16, gfn: u64) -> io::Result<ForeignPage> {
        let dev = open_rw(PRIVCMD)?;
        let base = map_page(&dev, 0)?;
        let page = ForeignPage { base, _dev: dev };
        let arr = [gfn];
        let mut err = [0i32];
        let mut b =
            PrivcmdMmapbatchV2 { num: 1, dom: domid, addr: base as u64, arr: arr.as_ptr(), err: err.as_mut_ptr() };
        // SAFETY: the request reads a `PrivcmdMmapbatchV2` whose `arr` and `err` point at one-element arrays that
        // live across the call, and fills the page at `addr`, which is our own privcmd mapping of one page.
        unsafe { ioctl(page._dev.as_raw_fd(), IOCTL_PRIVCMD_MMAPBATCH_V2, (&mut b as *mut PrivcmdMmapbatchV2).cast()) }
            .map_err(|e| io::Error::new(e.kind(), format!("foreign map of domain {domid}'s frame {gfn:#x}: {e}")))?;
        if err[0] != 0 {
            return Err(io::Error::other(format!(
                "foreign map of domain {domid}'s frame {gfn:#x}: {}",
                io::Error::from_raw_os_error(-err[0])
            )));
        }
        Ok(page)
    }

    fn index(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= PAGE, "index offset {off} outside the page");
        // SAFETY: `base` is a live page-sized mapping until drop (which needs `&mut self`), `off` is 4-aligned and
        // inside it; the other domain updates the index concurrently, hence an atomic.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    /// Reads a 32-bit little-endian index (acquire: what it covers is visible).
    pub fn load(&self, off: usize) -> u32 {
        self.index(off).load(Ordering::Acquire)
    }

    /// Writes a 32-bit index (release: bytes written or read before it are done).
    pub fn store(&self, off: usize, v: u32) {
        self.index(off).store(v, Ordering::Release)
    }

    /// Reads one byte.
    pub fn read(&self, off: usize) -> u8 {
        assert!(off < PAGE, "byte offset {off} outside the page");
        // SAFETY: inside the live mapping (checked above).
        unsafe { std::ptr::read_volatile(self.base.add(off)) }
    }

    /// Writes one byte.
    pub fn write(&self, off: usize, b: u8) {
        assert!(off < PAGE, "byte offset {off} outside the page");
        // SAFETY: inside the live, writable mapping (checked above).
        unsafe { std::ptr::write_volatile(self.base.add(off), b) }
    }
}

impl Drop for ForeignPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the page `map_page` mapped; no reference into it outlives `&mut self`. The device
        // file closes after this (field drop), which releases a grant mapping.
        unsafe { libc::munmap(self.base.cast(), PAGE) };
    }
}

/// `struct privcmd_mmap_resource`.
#[repr(C)]
pub struct PrivcmdMmapResource {
    pub dom: u16,
    pub typ: u32,
    pub id: u32,
    pub idx: u32,
    pub num: u64,
    pub addr: u64,
}
pub const IOCTL_PRIVCMD_MMAP_RESOURCE: libc::c_ulong = ioc(b'P', 7, size_of::<PrivcmdMmapResource>());
/// `XENMEM_resource_grant_table`.
pub const RESOURCE_GRANT_TABLE: u32 = 1;
/// `XENMEM_resource_grant_table_id_shared`.
pub const RESOURCE_GRANT_TABLE_SHARED: u32 = 0;

/// Several pages of another domain (or of one of its resources) mapped read-write and contiguous here, through
/// one privcmd file: for a domain builder, which writes a guest that does not run yet (so plain slices are fine).
/// Dropping it unmaps the pages.
pub struct ForeignPages {
    base: *mut u8,
    len: usize,
    _dev: File,
}

// SAFETY: the mapping belongs to this value alone until drop; it is reached only through `&self`/`&mut self`.
unsafe impl Send for ForeignPages {}

impl ForeignPages {
    /// A privcmd mapping of `pages` pages, not yet filled.
    fn reserve(pages: usize) -> io::Result<ForeignPages> {
        let dev = open_rw(PRIVCMD)?;
        let len = pages.max(1) * PAGE;
        // SAFETY: a new shared mapping at an address the kernel picks: nothing in this process is there yet.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                dev.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ForeignPages { base: p.cast(), len, _dev: dev })
    }

    /// Maps frames `gfns` of domain `domid` (`IOCTL_PRIVCMD_MMAPBATCH_V2`); the first page that fails is the error.
    pub fn foreign(domid: u16, gfns: &[u64]) -> io::Result<ForeignPages> {
        let ForeignBatch { pages, err } = ForeignPages::foreign_each(domid, gfns)?;
        if let Some((i, e)) = err.iter().enumerate().find(|(_, &e)| e != 0) {
            return Err(io::Error::other(format!(
                "foreign map of domain {domid}'s frame {:#x}: {}",
                gfns[i],
                io::Error::from_raw_os_error(-e)
            )));
        }
        Ok(pages)
    }

    /// Maps frames `gfns` of domain `domid` as far as each can be (a hole in the domain's memory is not an error,
    /// only a failure of the whole call is): see [`ForeignBatch`].
    pub fn foreign_each(domid: u16, gfns: &[u64]) -> io::Result<ForeignBatch> {
        let pages = ForeignPages::reserve(gfns.len())?;
        let mut err = vec![0i32; gfns.len()];
        let mut b = PrivcmdMmapbatchV2 {
            num: gfns.len() as u32,
            dom: domid,
            addr: pages.base as u64,
            arr: gfns.as_ptr(),
            err: err.as_mut_ptr(),
        };
        // SAFETY: the request reads a `PrivcmdMmapbatchV2` whose `arr` and `err` point at `num`-element arrays that
        // live across the call, and fills `num` pages at `addr`, which is our own privcmd mapping of that many.
        let r = unsafe {
            ioctl(pages._dev.as_raw_fd(), IOCTL_PRIVCMD_MMAPBATCH_V2, (&mut b as *mut PrivcmdMmapbatchV2).cast())
        };
        let first = gfns.first().copied().unwrap_or(0);
        match r {
            Ok(_) => {}
            // Linux's privcmd fills `err` and then reports -ENOENT when a frame was missing (paged out, or absent).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && err.iter().any(|&e| e != 0) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("foreign map of domain {domid}'s frames from {first:#x}: {e}"),
                ))
            }
        }
        Ok(ForeignBatch { pages, err })
    }

    /// Maps frames `idx .. idx + num` of resource `typ`/`id` of domain `domid` (`IOCTL_PRIVCMD_MMAP_RESOURCE`,
    /// XENMEM_acquire_resource): e.g. its grant table, as libxenguest seeds a new domain's grants.
    pub fn resource(domid: u16, typ: u32, id: u32, idx: u32, num: usize) -> io::Result<ForeignPages> {
        let pages = ForeignPages::reserve(num)?;
        let mut r = PrivcmdMmapResource { dom: domid, typ, id, idx, num: num as u64, addr: pages.base as u64 };
        // SAFETY: the request reads a `PrivcmdMmapResource` living across the call and fills `num` pages at
        // `addr`, which is our own privcmd mapping of that many.
        unsafe {
            ioctl(pages._dev.as_raw_fd(), IOCTL_PRIVCMD_MMAP_RESOURCE, (&mut r as *mut PrivcmdMmapResource).cast())
        }
        .map_err(|e| io::Error::new(e.kind(), format!("resource {typ}/{id} of domain {domid}: {e}")))?;
        Ok(pages)
    }
}

/// Frames of another domain mapped by [`ForeignPages::foreign_each`], each page readable only where it mapped
/// (privcmd answers a touch of an unmapped one with SIGBUS, so only [`Self::page`] reaches them). Dropping it
/// unmaps them.
pub struct ForeignBatch {
    pages: ForeignPages,
    /// Per frame: 0, or the negative errno why it is not mapped.
    err: Vec<i32>,
}

impl ForeignBatch {
    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.err.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.err.is_empty()
    }

    /// 0 when frame `i` is mapped, else the negative errno of its failure.
    pub fn error(&self, i: usize) -> i32 {
        self.err[i]
    }

    /// Frame `i`'s page, if it mapped.
    pub fn page(&self, i: usize) -> Option<&[u8]> {
        (*self.err.get(i)? == 0).then(|| &self.pages[i * PAGE..(i + 1) * PAGE])
    }
}

impl std::ops::Deref for ForeignPages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `base` maps `len` bytes, readable, until drop (which needs `&mut self`).
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }
}

impl std::ops::DerefMut for ForeignPages {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: `base` maps `len` writable bytes until drop; `&mut self` makes this the only slice into them.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }
}

impl Drop for ForeignPages {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `reserve` mapped; no slice into it outlives `&mut self`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_linuxs() {
        // From Linux's headers as compiled for x86_64.
        assert_eq!(IOCTL_EVTCHN_BIND_VIRQ, 0x0004_4500);
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(IOCTL_PRIVCMD_MMAPBATCH_V2, 0x0020_5004);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
        assert_eq!(IOCTL_PRIVCMD_MMAP_RESOURCE, 0x0020_5007);
    }

    #[test]
    fn without_the_devices_the_error_names_them() {
        if std::path::Path::new(EVTCHN).exists() {
            return;
        }
        let e = Evtchn::bind_interdomain(1, 2).err().expect("no evtchn device on this host");
        assert!(e.to_string().contains(EVTCHN), "{e}");
        let e = ForeignPage::grant(1, 0).err().expect("no gntdev on this host");
        assert!(e.to_string().contains(GNTDEV), "{e}");
    }
}
