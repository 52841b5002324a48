//! Hypercall buffers: page-aligned memory that stays mapped and present while the hypervisor copies to and from
//! it. From `/dev/xen/hypercall` where Linux offers it (pages allocated and mapped at `mmap` time), otherwise
//! anonymous memory locked and pre-faulted (`MAP_LOCKED | MAP_POPULATE`), as libxencall does.

use keel_abi::Pod;
use std::fs::File;
use std::os::fd::AsRawFd;

const PAGE: usize = 4096;

/// One buffer; unmapped on drop.
pub struct HcBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping belongs to this value alone (nothing else holds its address except the hypervisor during a
// call made by the owner), so moving it to another thread is sound.
unsafe impl Send for HcBuf {}

impl HcBuf {
    /// A zeroed buffer of at least `len` bytes (whole pages).
    pub fn new(len: usize, hypercall_dev: Option<&File>) -> std::io::Result<HcBuf> {
        let len = len.max(1).div_ceil(PAGE) * PAGE;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let dev = hypercall_dev.map(|f| {
            // SAFETY: a fresh shared mapping of the hypercall device at offset 0; the kernel chooses the address.
            unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, f.as_raw_fd(), 0) }
        });
        let p = match dev {
            Some(p) if p != libc::MAP_FAILED => p,
            _ => {
                let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED | libc::MAP_POPULATE;
                // SAFETY: a fresh anonymous mapping; the kernel chooses the address.
                let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
                if p == libc::MAP_FAILED {
                    return Err(std::io::Error::last_os_error());
                }
                // Not inherited by children: a fork must not leave the hypervisor copying into a copy-on-write page.
                // SAFETY: advice on the mapping just made.
                unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) };
                p
            }
        };
        let b = HcBuf { ptr: p.cast(), len };
        // Zeroed on every allocation, and every page touched (present) before the hypervisor sees it.
        b.bytes_mut().fill(0);
        Ok(b)
    }

    /// The address the hypervisor is given.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is a live read-write mapping owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, writable.
    #[allow(clippy::mut_from_ref)]
    pub fn bytes_mut(&self) -> &mut [u8] {
        // SAFETY: as in `bytes`; callers use one view at a time (the buffer is private to one call), and the
        // hypervisor writes only while the owner waits in the hypercall.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Writes a value at `offset`.
    pub fn put<T: Pod>(&mut self, offset: usize, v: &T) {
        self.bytes_mut()[offset..offset + size_of::<T>()].copy_from_slice(bytemuck::bytes_of(v));
    }

    /// Reads a value at `offset`.
    pub fn get<T: Pod>(&self, offset: usize) -> T {
        bytemuck::pod_read_unaligned(&self.bytes()[offset..offset + size_of::<T>()])
    }
}

impl Drop for HcBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_buffers_are_zeroed_pages() {
        // MAP_LOCKED needs RLIMIT_MEMLOCK room or CAP_IPC_LOCK (root, as dom0's tools and CI run).
        let mut b = HcBuf::new(10, None).expect("a locked anonymous buffer");
        assert_eq!(b.bytes().len(), 4096);
        assert_eq!(b.addr() % 4096, 0);
        assert!(b.bytes().iter().all(|&x| x == 0));
        b.put(8, &0x1122_3344_5566_7788u64);
        assert_eq!(b.get::<u64>(8), 0x1122_3344_5566_7788);
        assert_eq!(HcBuf::new(4097, None).unwrap().bytes().len(), 8192);
    }
}
