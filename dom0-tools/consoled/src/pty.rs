//! A guest's pty: the master end is the daemon's, the slave's path goes into xenstore (`console/tty`) for
//! `xm console` to open. The daemon keeps the slave open too (raw mode), so the master never sees a hang-up when a
//! console client detaches, and output written while nobody is attached waits in the pty and then in the
//! console's bounded buffer.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An open pty pair.
pub struct Pty {
    master: OwnedFd,
    _slave: OwnedFd,
    path: String,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Puts the terminal `fd` in raw mode (`cfmakeraw`).
pub fn make_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: `termios` is plain data that tcgetattr fills in whole before it is read.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a live termios for the call to fill.
    check(unsafe { libc::tcgetattr(fd, &mut t) })?;
    // SAFETY: `t` is a valid termios (from tcgetattr).
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: `t` is a valid termios that lives across the call.
    check(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) }).map(drop)
}

impl Pty {
    /// A new pty: master non-blocking and close-on-exec, slave in raw mode.
    pub fn open() -> io::Result<Pty> {
        // SAFETY: posix_openpt takes flags only and returns a new descriptor (checked).
        let m = check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
        // SAFETY: `m` was just opened and is owned by nothing else.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: grantpt/unlockpt take the master descriptor only.
        check(unsafe { libc::grantpt(m) })?;
        // SAFETY: as above.
        check(unsafe { libc::unlockpt(m) })?;
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: ptsname_r writes a NUL-terminated name of at most `name.len()` bytes into `name`.
        let r = unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
        let cpath = std::ffi::CString::new(path.clone()).map_err(io::Error::other)?;
        // SAFETY: `cpath` is a NUL-terminated path that lives across the call; the result is checked.
        let s = check(unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
        // SAFETY: `s` was just opened and is owned by nothing else.
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        make_raw(s)?;
        // SAFETY: F_GETFL/F_SETFL on our own descriptor.
        check(unsafe { libc::fcntl(m, libc::F_SETFL, libc::fcntl(m, libc::F_GETFL) | libc::O_NONBLOCK) })?;
        Ok(Pty { master, _slave: slave, path })
    }

    /// The slave's path (`/dev/pts/N`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reads what a console client typed (non-blocking: `WouldBlock` when nothing is there).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes guest output toward the console client (non-blocking: `WouldBlock` when the pty is full).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: writes at most `buf.len()` bytes from `buf`.
        let n = unsafe { libc::write(self.master.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for Pty {
    fn as_raw_fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }
}
