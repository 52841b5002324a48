//! `xm console <Domain>`: attaches the terminal to a guest's console, as Xen's `xl console` (xenconsole) does.
//!
//! The domain is looked up in xenstore (an id: `/local/domain/N` exists; a name: the domain whose
//! `/local/domain/N/name` it is), and its pty is the path xenconsoled wrote to `/local/domain/N/console/tty`. The
//! terminal is put in raw mode (restored on every way out), and bytes are copied both ways until Ctrl-] (0x1d)
//! detaches, stdin ends, or the pty hangs up (the domain went away). [`attach_domain`] is the part `xm create -c`
//! uses once it has a domain id.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use keel_xenstore::client::Client;

use super::cmdtable::DomainArg;
use super::commands::CmdResult;
use super::XmError;
use crate::domain::DomainRef;

/// Ctrl-]: detaches from the console, as in Xen.
pub const ESCAPE: u8 = 0x1d;

/// `xm console <Domain>`
pub fn console(args: &DomainArg) -> CmdResult {
    let mut xs = store()?;
    let id = resolve(&mut xs, &args.domain)?;
    attach_with(&mut xs, id, &args.domain.to_string())
}

/// Attaches to domain `id`'s console (for `xm create -c`).
pub fn attach_domain(id: u16) -> CmdResult {
    let mut xs = store()?;
    attach_with(&mut xs, id, &id.to_string())
}

fn store() -> Result<Client, XmError> {
    Client::open().map_err(|e| XmError::Failed(format!("cannot reach xenstore: {e}")))
}

fn read(xs: &mut Client, path: &str) -> Option<String> {
    xs.read(0, path).ok().map(|v| String::from_utf8_lossy(&v).trim_end_matches('\0').to_string())
}

/// The id of the domain `r` names, from xenstore.
fn resolve(xs: &mut Client, r: &DomainRef) -> Result<u16, XmError> {
    match r {
        DomainRef::Id(id) => {
            if xs.directory(0, &format!("/local/domain/{id}")).is_ok() {
                Ok(id.get())
            } else {
                Err(XmError::NoDomain(r.to_string()))
            }
        }
        DomainRef::Name(n) => {
            let ids = xs.directory(0, "/local/domain").unwrap_or_default();
            ids.iter()
                .filter_map(|s| s.parse::<u16>().ok())
                .find(|id| read(xs, &format!("/local/domain/{id}/name")).as_deref() == Some(n.as_str()))
                .ok_or_else(|| XmError::NoDomain(r.to_string()))
        }
    }
}

fn attach_with(xs: &mut Client, id: u16, what: &str) -> CmdResult {
    let node = format!("/local/domain/{id}/console/tty");
    let tty = read(xs, &node).filter(|t| !t.is_empty()).ok_or_else(|| {
        XmError::Failed(format!("domain '{what}' has no console: {node} is not there (is xenconsoled running?)"))
    })?;
    // The guest can write its own console directory where the toolstack did not make `tty` read-only to it: open
    // nothing but a pty.
    if !tty.starts_with("/dev/pts/") || tty.contains("..") {
        return Err(XmError::Failed(format!("domain '{what}''s console {node} is {tty:?}, which is not a pty")));
    }
    let pty = File::options()
        .read(true)
        .write(true)
        .open(&tty)
        .map_err(|e| XmError::Failed(format!("cannot open domain '{what}''s console {tty}: {e}")))?;
    // The pty raw as well, as xenconsole sets it: what the guest sends arrives untouched (TCSANOW: the output
    // waiting in it is kept).
    // It stays so: restoring it on the way out would discard what the guest sent meanwhile.
    let _ = set_raw(pty.as_raw_fd(), libc::TCSANOW);
    let stdin = io::stdin().as_raw_fd();
    let _restore = set_raw(stdin, libc::TCSAFLUSH).ok().map(|old| Restore(stdin, old));
    copy(&pty, io::stdin().as_raw_fd(), &mut io::stdout().lock())
        .map_err(|e| XmError::Failed(format!("console of domain '{what}': {e}")))
}

/// A terminal's settings, put back on drop.
struct Restore(RawFd, libc::termios);

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: `self.1` is the termios tcgetattr gave for this descriptor.
        unsafe { libc::tcsetattr(self.0, libc::TCSAFLUSH, &self.1) };
    }
}

/// Puts terminal `fd` in raw mode; returns its settings before. Fails (harmlessly) when `fd` is not a terminal.
fn set_raw(fd: RawFd, when: libc::c_int) -> io::Result<libc::termios> {
    // SAFETY: `termios` is plain data that tcgetattr fills in whole before it is read.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a live termios for the call to fill.
    if unsafe { libc::tcgetattr(fd, &mut t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let saved = t;
    // SAFETY: `t` is a valid termios from tcgetattr.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: `t` is a valid termios that lives across the call.
    if unsafe { libc::tcsetattr(fd, when, &t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(saved)
}

/// Copies between the pty and the terminal until Ctrl-], the end of `input`, or a hang-up of the pty.
fn copy(mut pty: &File, input: RawFd, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            libc::pollfd { fd: pty.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: input, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a live array of two pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            match pty.read(&mut buf) {
                // The daemon closed its end: the domain is gone.
                Ok(0) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(n) => {
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
            }
        }
        if fds[1].revents != 0 {
            // SAFETY: reads at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::read(input, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(());
            }
            let typed = &buf[..n as usize];
            match typed.iter().position(|&b| b == ESCAPE) {
                Some(i) => {
                    pty.write_all(&typed[..i])?;
                    return Ok(());
                }
                None => pty.write_all(typed)?,
            }
        }
    }
}
