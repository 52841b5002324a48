//! A xenstore client over dom0's Unix socket (as libxenstore uses `/run/xenstored/socket`), or over the kernel's
//! `/dev/xen/xenbus` when no daemon socket exists. Requests are answered in order; watch events that arrive in
//! between are kept for [`Client::wait_event`].

use crate::wire::{typ, Decoder, Msg};
use crate::XsError;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The daemon's socket.
pub const SOCKET: &str = "/run/xenstored/socket";
/// The kernel's xenbus device (requests go to whichever xenstore serves this domain).
pub const XENBUS_DEV: &str = "/dev/xen/xenbus";

/// Why a request failed.
#[derive(Debug)]
pub enum Error {
    /// The store answered with an error.
    Store(XsError),
    /// The connection failed or the peer broke the protocol.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Store(e) => write!(f, "{e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A connection to the store.
pub struct Client {
    stream: Box<dyn Stream>,
    dec: Decoder,
    events: VecDeque<(String, String)>,
    next_req: u32,
}

fn bad(why: &str) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()))
}

impl Client {
    /// Connects to the daemon's socket at `path`.
    pub fn unix(path: &Path) -> Result<Client, Error> {
        Ok(Self::over(Box::new(UnixStream::connect(path)?)))
    }

    /// Connects the usual way, as libxenstore's `xs_open`: `$XENSTORED_PATH` if set, else the daemon's socket, else
    /// the kernel's xenbus device. A path that is a socket is connected to; anything else (`/dev/xen/xenbus`) is
    /// opened as a device.
    pub fn open() -> Result<Client, Error> {
        match std::env::var_os("XENSTORED_PATH") {
            Some(p) => Self::at(Path::new(&p)),
            None => Self::at(Path::new(SOCKET)).or_else(|_| Self::at(Path::new(XENBUS_DEV))),
        }
    }

    /// Connects to `path`: a Unix socket, or a device such as the kernel's xenbus.
    pub fn at(path: &Path) -> Result<Client, Error> {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(path)?.file_type().is_socket() {
            return Self::unix(path);
        }
        let f = File::options().read(true).write(true).open(path)?;
        Ok(Self::over(Box::new(f)))
    }

    fn over(stream: Box<dyn Stream>) -> Client {
        Client { stream, dec: Decoder::default(), events: VecDeque::new(), next_req: 1 }
    }

    fn receive(&mut self) -> Result<Msg, Error> {
        let mut buf = [0u8; 4112];
        loop {
            let want = self.dec.wanted().min(buf.len());
            let n = self.stream.read(&mut buf[..want])?;
            if n == 0 {
                return Err(bad("xenstore closed the connection"));
            }
            let (used, m) = self.dec.feed(&buf[..n]).map_err(|e| bad(&format!("{e:?}")))?;
            debug_assert_eq!(used, n);
            if let Some(m) = m {
                return Ok(m);
            }
        }
    }

    /// Sends one request and returns its reply's payload.
    pub fn request(&mut self, ty: u32, tx: u32, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        self.stream.write_all(&Msg::new(ty, id, tx, payload.to_vec()).encode())?;
        loop {
            let m = self.receive()?;
            if m.typ == typ::WATCH_EVENT {
                self.queue_event(&m);
                continue;
            }
            if m.typ == typ::ERROR {
                let name = String::from_utf8_lossy(m.payload.strip_suffix(&[0]).unwrap_or(&m.payload)).into_owned();
                return Err(Error::Store(XsError::from_name(&name).unwrap_or(XsError::Eio)));
            }
            return Ok(m.payload);
        }
    }

    fn queue_event(&mut self, m: &Msg) {
        let a = m.args();
        if let (Some(p), Some(t)) = (a.first(), a.get(1)) {
            self.events.push_back((String::from_utf8_lossy(p).into_owned(), String::from_utf8_lossy(t).into_owned()));
        }
    }

    fn nul(parts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(p);
            v.push(0);
        }
        v
    }

    /// `XS_READ`.
    pub fn read(&mut self, tx: u32, path: &str) -> Result<Vec<u8>, Error> {
        self.request(typ::READ, tx, &Self::nul(&[path.as_bytes()]))
    }

    /// `XS_WRITE`.
    pub fn write(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<(), Error> {
        let mut p = Self::nul(&[path.as_bytes()]);
        p.extend_from_slice(value);
        self.request(typ::WRITE, tx, &p).map(drop)
    }

    /// `XS_MKDIR`.
    pub fn mkdir(&mut self, tx: u32, path: &str) -> Result<(), Error> {
        self.request(typ::MKDIR, tx, &Self::nul(&[path.as_bytes()])).map(drop)
    }

    /// `XS_RM`.
    pub fn rm(&mut self, tx: u32, path: &str) -> Result<(), Error> {
        self.request(typ::RM, tx, &Self::nul(&[path.as_bytes()])).map(drop)
    }

    /// `XS_DIRECTORY` (falling back to `XS_DIRECTORY_PART` for listings over one payload).
    pub fn directory(&mut self, tx: u32, path: &str) -> Result<Vec<String>, Error> {
        let split = |p: &[u8]| -> Vec<String> {
            p.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
        };
        match self.request(typ::DIRECTORY, tx, &Self::nul(&[path.as_bytes()])) {
            Err(Error::Store(XsError::E2big)) => {}
            other => return other.map(|p| split(&p)),
        }
        let mut names = Vec::new();
        let mut offset = 0usize;
        loop {
            let p =
                self.request(typ::DIRECTORY_PART, tx, &Self::nul(&[path.as_bytes(), offset.to_string().as_bytes()]))?;
            let done = p.ends_with(&[0, 0]);
            let body = p.splitn(2, |&b| b == 0).nth(1).unwrap_or(&[]);
            for n in split(body) {
                offset += n.len() + 1;
                names.push(n);
            }
            if done {
                return Ok(names);
            }
        }
    }

    /// `XS_GET_PERMS`, as `n0`-style strings.
    pub fn get_perms(&mut self, tx: u32, path: &str) -> Result<Vec<String>, Error> {
        let p = self.request(typ::GET_PERMS, tx, &Self::nul(&[path.as_bytes()]))?;
        Ok(p.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
    }

    /// `XS_SET_PERMS`.
    pub fn set_perms(&mut self, tx: u32, path: &str, perms: &[String]) -> Result<(), Error> {
        let mut parts: Vec<&[u8]> = vec![path.as_bytes()];
        parts.extend(perms.iter().map(|p| p.as_bytes()));
        self.request(typ::SET_PERMS, tx, &Self::nul(&parts)).map(drop)
    }

    /// `XS_WATCH`.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        self.request(typ::WATCH, 0, &Self::nul(&[path.as_bytes(), token.as_bytes()])).map(drop)
    }

    /// The next watch event: (path, token).
    pub fn wait_event(&mut self) -> Result<(String, String), Error> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            let m = self.receive()?;
            if m.typ == typ::WATCH_EVENT {
                self.queue_event(&m);
            }
        }
    }

    /// `XS_TRANSACTION_START`: the transaction id.
    pub fn transaction_start(&mut self) -> Result<u32, Error> {
        let p = self.request(typ::TRANSACTION_START, 0, &[0])?;
        String::from_utf8_lossy(p.strip_suffix(&[0]).unwrap_or(&p)).parse().map_err(|_| bad("bad transaction id"))
    }

    /// `XS_TRANSACTION_END`.
    pub fn transaction_end(&mut self, tx: u32, commit: bool) -> Result<(), Error> {
        self.request(typ::TRANSACTION_END, tx, if commit { b"T\0" } else { b"F\0" }).map(drop)
    }
}
