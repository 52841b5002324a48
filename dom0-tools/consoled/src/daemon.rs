//! The daemon: which domains have consoles, and moving their bytes.
//!
//! As Xen's xenconsoled: `@introduceDomain` and `@releaseDomain` (token `domlist`) make it list the hypervisor's
//! domains ([`Platform::domains`]): a new one gets a console once `/local/domain/N/console/{ring-ref,port}` exist
//! (its `console` directory is watched, token `domN`, so late or changed nodes are seen); a dying or vanished one is
//! cleaned up (ring unmapped, port unbound, pty closed, `console/tty` removed). A console whose `type` names another
//! backend (`ioemu`) is left alone. Per console: the ring page ([`Platform::map_ring`]: Xen 4.17 maps grant
//! `GNTTAB_RESERVED_CONSOLE` first, the `ring-ref` frame as the fallback), the bound port ([`Platform::bind`]), a
//! [`Pty`] whose path goes to `console/tty`, a bounded [`OutBuf`] for the pty, and with `--log=guest` a log file.
//!
//! One thread polls everything; a second owns the xenstore connection for watches (it registers the per-domain
//! watches itself and hands over only *which* tokens fired, a set bounded by the number of domains, through a
//! self-pipe), so a guest writing its console directory in a loop costs events, never memory.
//!
//! Flow control: the pty is read only while the guest's input ring has room, and only as much as fits; the guest's
//! notification after it consumed input brings the next pass. Output is taken off the ring as it comes (the guest
//! is notified so it can write more), logged, and queued for the pty within the limit. A ring whose indexes are more
//! than a ring apart gets its console dropped with a log line; the domain stays dropped until it is gone.

use crate::buffer::{OutBuf, DEFAULT_LIMIT};
use crate::pty::Pty;
use crate::ring::{self, ConsPage, Scribbled, OUT_SIZE};
use keel_xenstore::client::Client;
use keel_xenstore::wire::typ;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

/// A console's event channel as the daemon uses it.
pub trait Channel: Send {
    /// The descriptor that polls readable when the guest signalled.
    fn fd(&self) -> RawFd;
    /// Signals the guest.
    fn notify(&self) -> io::Result<()>;
    /// Takes the pending signal (and unmasks the port).
    fn ack(&mut self) -> io::Result<()>;
}

impl Channel for keel_xenctrl::devices::Evtchn {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn notify(&self) -> io::Result<()> {
        keel_xenctrl::devices::Evtchn::notify(self)
    }
    fn ack(&mut self) -> io::Result<()> {
        keel_xenctrl::devices::Evtchn::ack(self).map(drop)
    }
}

/// What the daemon needs of the hypervisor.
pub trait Platform {
    /// The domains other than dom0, with whether each is dying.
    fn domains(&mut self) -> io::Result<Vec<(u16, bool)>>;
    /// Maps domain `domid`'s console page (`ring_ref` from xenstore); also says how it was mapped.
    fn map_ring(&mut self, domid: u16, ring_ref: u64) -> io::Result<(Box<dyn ConsPage>, String)>;
    /// Binds a port of ours to `port` of domain `domid`.
    fn bind(&mut self, domid: u16, port: u32) -> io::Result<Box<dyn Channel>>;
}

/// The real one: privcmd for the domain list and foreign mappings, gntdev, `/dev/xen/evtchn`.
pub struct Xen {
    xc: keel_xenctrl::Xc,
}

impl Xen {
    /// Opens privcmd.
    pub fn open() -> io::Result<Xen> {
        Ok(Xen { xc: keel_xenctrl::Xc::open().map_err(|e| io::Error::other(e.to_string()))? })
    }
}

/// `GNTTAB_RESERVED_CONSOLE`: the grant entry a toolstack fills for the console page.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;

impl Platform for Xen {
    fn domains(&mut self) -> io::Result<Vec<(u16, bool)>> {
        let all = self.xc.domains().map_err(|e| io::Error::other(format!("getdomaininfolist: {e}")))?;
        Ok(all
            .iter()
            .filter(|d| d.domain != 0)
            .map(|d| (d.domain, d.flags & keel_abi::domctl::dominf::DYING != 0))
            .collect())
    }

    fn map_ring(&mut self, domid: u16, ring_ref: u64) -> io::Result<(Box<dyn ConsPage>, String)> {
        use keel_xenctrl::devices::ForeignPage;
        match ForeignPage::grant(domid, GNTTAB_RESERVED_CONSOLE) {
            Ok(p) => Ok((Box::new(p), format!("grant {GNTTAB_RESERVED_CONSOLE}"))),
            Err(ge) => match ForeignPage::foreign(domid, ring_ref) {
                Ok(p) => Ok((Box::new(p), format!("frame {ring_ref:#x}"))),
                Err(fe) => Err(io::Error::other(format!("{ge}; {fe}"))),
            },
        }
    }

    fn bind(&mut self, domid: u16, port: u32) -> io::Result<Box<dyn Channel>> {
        Ok(Box::new(keel_xenctrl::devices::Evtchn::bind_interdomain(domid, port)?))
    }
}

/// Where the daemon's own log lines go.
pub type Logger = Arc<dyn Fn(&str) + Send + Sync>;

/// The daemon's settings.
pub struct Options {
    /// `--log=guest|all`: write each guest's output to `<log_dir>/guest-NAME.log`.
    pub log_guest: bool,
    /// `--log-dir`.
    pub log_dir: PathBuf,
    /// The xenstore to use (a socket or device); `None`: as libxenstore finds it.
    pub store: Option<PathBuf>,
    /// The daemon's log lines.
    pub logger: Logger,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_guest: false,
            log_dir: PathBuf::from("/var/log/xen/console"),
            store: None,
            logger: Arc::new(|s| eprintln!("xenconsoled: {s}")),
        }
    }
}

fn connect(store: &Option<PathBuf>) -> io::Result<Client> {
    let c = match store {
        Some(p) => Client::at(p),
        None => Client::open(),
    };
    c.map_err(|e| io::Error::other(format!("cannot connect to xenstore: {e}")))
}

/// Which watches fired since the main loop last looked.
#[derive(Default)]
struct Dirty {
    domlist: bool,
    doms: BTreeSet<u16>,
    /// The watch thread's connection failed (why).
    failed: Option<String>,
}

/// Stops a running daemon (for tests and signals).
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
}

impl Stopper {
    /// Makes [`Daemon::run`] return at its next turn.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        wake(&self.wake);
    }
}

/// Set by SIGTERM/SIGINT, SIGHUP; the wake pipe's write end for the handler.
static SIG_TERM: AtomicBool = AtomicBool::new(false);
static SIG_HUP: AtomicBool = AtomicBool::new(false);
static SIG_WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        SIG_HUP.store(true, Ordering::SeqCst);
    } else {
        SIG_TERM.store(true, Ordering::SeqCst);
    }
    let fd = SIG_WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a static; async-signal-safe; a full pipe already means a wake-up.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

fn wake(fd: &OwnedFd) {
    // SAFETY: writes one byte from a live local; a full pipe (EAGAIN) already means a wake-up is pending.
    unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which has room for them.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and belong to nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One guest's console.
struct Console {
    name: String,
    ring_ref: u64,
    port: u32,
    page: Box<dyn ConsPage>,
    chan: Box<dyn Channel>,
    pty: Pty,
    out: OutBuf,
    log: Option<File>,
}

/// The running daemon.
pub struct Daemon<P: Platform> {
    platform: P,
    opts: Options,
    store: Client,
    consoles: BTreeMap<u16, Console>,
    /// Domains whose console was dropped for misbehaving, until they are gone.
    dropped: BTreeSet<u16>,
    /// The live domains the hypervisor listed last: a watch firing for any other is ignored.
    live: BTreeSet<u16>,
    dirty: Arc<Mutex<Dirty>>,
    wake_r: OwnedFd,
    stopper: Stopper,
}

/// The log file's name for a domain named `name`. A domain a migration brings in is named `NAME--incoming` until
/// the hand-over renames it `NAME` (xl's convention, Keel's xm migrate too): its console is logged as `NAME`'s from
/// the start, so that a guest's log stays one file wherever it moves on the host.
fn log_name(name: &str) -> String {
    let name = name.strip_suffix("--incoming").filter(|n| !n.is_empty()).unwrap_or(name);
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.:+".contains(c) { c } else { '_' }).collect()
}

impl<P: Platform> Daemon<P> {
    /// Connects to xenstore twice (requests; watches, on their own thread) and registers the domain-list watches.
    pub fn new(platform: P, opts: Options) -> io::Result<Daemon<P>> {
        let store = connect(&opts.store)?;
        let mut watcher = connect(&opts.store)?;
        for w in ["@introduceDomain", "@releaseDomain"] {
            watcher.watch(w, "domlist").map_err(|e| io::Error::other(format!("watch {w}: {e}")))?;
        }
        let (wake_r, wake_w) = pipe()?;
        let wake_w = Arc::new(wake_w);
        let dirty = Arc::new(Mutex::new(Dirty { domlist: true, ..Dirty::default() }));
        let (d, w) = (dirty.clone(), wake_w.clone());
        std::thread::Builder::new().name("xs-watch".into()).spawn(move || watch_thread(watcher, d, w))?;
        let stopper = Stopper { stop: Arc::new(AtomicBool::new(false)), wake: wake_w };
        Ok(Daemon {
            platform,
            opts,
            store,
            consoles: BTreeMap::new(),
            dropped: BTreeSet::new(),
            live: BTreeSet::new(),
            dirty,
            wake_r,
            stopper,
        })
    }

    /// As Xen's daemon: SIGTERM and SIGINT stop [`Daemon::run`] (every console cleaned up: `console/tty` removed),
    /// SIGHUP reopens the guest logs. For one daemon per process.
    pub fn handle_signals(&self) {
        SIG_WAKE.store(self.stopper.wake.as_raw_fd(), Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: `on_signal` only stores to atomics and calls write(2), both async-signal-safe.
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
    }

    /// A handle that stops [`Daemon::run`].
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    fn log(&self, s: &str) {
        (self.opts.logger)(s)
    }

    /// Serves until stopped (Ok) or until xenstore goes away (Err).
    pub fn run(&mut self) -> io::Result<()> {
        self.log("watching @introduceDomain and @releaseDomain");
        loop {
            if SIG_HUP.swap(false, Ordering::SeqCst) {
                self.reopen_logs();
            }
            if self.stopper.stop.load(Ordering::SeqCst) || SIG_TERM.load(Ordering::SeqCst) {
                let ids: Vec<u16> = self.consoles.keys().copied().collect();
                for id in ids {
                    self.remove(id, "daemon stopping");
                }
                return Ok(());
            }
            let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
            if let Some(why) = dirty.failed {
                return Err(io::Error::other(format!("xenstore watch connection: {why}")));
            }
            if dirty.domlist {
                self.enum_domains();
            }
            for id in dirty.doms {
                self.refresh(id);
            }
            self.poll_once()?;
        }
    }

    /// Lists the hypervisor's domains: new ones get a console, dying or vanished ones lose theirs.
    fn enum_domains(&mut self) {
        let doms = match self.platform.domains() {
            Ok(d) => d,
            Err(e) => {
                self.log(&format!("cannot list domains: {e}"));
                return;
            }
        };
        let live: BTreeSet<u16> = doms.iter().filter(|d| !d.1).map(|d| d.0).collect();
        let gone: Vec<u16> = self.consoles.keys().filter(|id| !live.contains(id)).copied().collect();
        for id in gone {
            self.remove(id, "domain is gone");
        }
        self.dropped.retain(|id| live.contains(id));
        self.live = live.clone();
        for id in live {
            if !self.consoles.contains_key(&id) {
                self.refresh(id);
            }
        }
    }

    fn read(&mut self, path: &str) -> Option<String> {
        let v = self.store.read(0, path).ok()?;
        Some(String::from_utf8_lossy(&v).trim_end_matches('\0').to_string())
    }

    /// Sets up (or re-connects) domain `id`'s console from its xenstore nodes, when they are there.
    fn refresh(&mut self, id: u16) {
        if id == 0 || self.dropped.contains(&id) || !self.live.contains(&id) {
            return;
        }
        let dir = format!("/local/domain/{id}/console");
        if let Some(t) = self.read(&format!("{dir}/type")) {
            if t != "xenconsoled" {
                return;
            }
        }
        let ring_ref = self.read(&format!("{dir}/ring-ref")).and_then(|s| s.trim().parse::<u64>().ok());
        let port = self.read(&format!("{dir}/port")).and_then(|s| s.trim().parse::<u32>().ok());
        let (Some(ring_ref), Some(port)) = (ring_ref, port) else { return };
        if let Some(c) = self.consoles.get(&id) {
            if c.ring_ref == ring_ref && c.port == port {
                return;
            }
        }
        let (page, how) = match self.platform.map_ring(id, ring_ref) {
            Ok(p) => p,
            Err(e) => {
                self.log(&format!("domain {id}: cannot map its console ring: {e}"));
                return;
            }
        };
        let chan = match self.platform.bind(id, port) {
            Ok(c) => c,
            Err(e) => {
                self.log(&format!("domain {id}: cannot bind its console port {port}: {e}"));
                return;
            }
        };
        if let Some(c) = self.consoles.get_mut(&id) {
            // The guest re-connected (a new ring or port): keep its pty, buffer and log.
            c.page = page;
            c.chan = chan;
            c.ring_ref = ring_ref;
            c.port = port;
            self.log(&format!("domain {id}: console re-connected ({how}, port {port})"));
            self.service_ring(id);
            return;
        }
        let pty = match Pty::open() {
            Ok(p) => p,
            Err(e) => {
                self.log(&format!("domain {id}: cannot open a pty: {e}"));
                return;
            }
        };
        let limit =
            self.read(&format!("{dir}/limit")).and_then(|s| s.trim().parse::<usize>().ok()).unwrap_or(DEFAULT_LIMIT);
        let name = self.read(&format!("/local/domain/{id}/name")).unwrap_or_else(|| id.to_string());
        let log = self.open_log(id, &name);
        match self.write_tty(&dir, pty.path().as_bytes()) {
            Ok(true) => {}
            Ok(false) => {
                self.log(&format!("domain {id}: {dir} is gone (the domain is being destroyed): no console"));
                return;
            }
            Err(e) => {
                self.log(&format!("domain {id}: cannot write {dir}/tty: {e}"));
                return;
            }
        }
        self.log(&format!("domain {id} ({name}): console on {} ({how}, port {port})", pty.path()));
        let c = Console { name, ring_ref, port, page, chan, pty, out: OutBuf::new(limit), log };
        self.consoles.insert(id, c);
        self.service_ring(id);
    }

    /// Writes `dir/tty` only while `dir` (the toolstack's `console` directory) exists, in one transaction: a
    /// toolstack that destroys the domain meanwhile removes the directory, and a write after that would bring back
    /// nodes of a domain that is gone. `false`: the directory was gone.
    fn write_tty(&mut self, dir: &str, tty: &[u8]) -> Result<bool, keel_xenstore::client::Error> {
        use keel_xenstore::client::Error;
        use keel_xenstore::XsError;
        loop {
            let tx = self.store.transaction_start()?;
            let written = match self.store.read(tx, dir) {
                Err(Error::Store(XsError::Enoent)) => None,
                Err(e) => {
                    let _ = self.store.transaction_end(tx, false);
                    return Err(e);
                }
                Ok(_) => Some(self.store.write(tx, &format!("{dir}/tty"), tty)),
            };
            match written {
                None => {
                    self.store.transaction_end(tx, false)?;
                    return Ok(false);
                }
                Some(Err(e)) => {
                    let _ = self.store.transaction_end(tx, false);
                    return Err(e);
                }
                Some(Ok(())) => match self.store.transaction_end(tx, true) {
                    Ok(()) => return Ok(true),
                    // Someone changed what it read (the toolstack removing the domain): look again.
                    Err(Error::Store(XsError::Eagain)) => continue,
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// Opens (appending) domain `id`'s log file, with `--log=guest`.
    fn open_log(&self, id: u16, name: &str) -> Option<File> {
        if !self.opts.log_guest {
            return None;
        }
        let path = self.opts.log_dir.join(format!("guest-{}.log", log_name(name)));
        let f = std::fs::create_dir_all(&self.opts.log_dir)
            .and_then(|()| File::options().create(true).append(true).open(&path));
        match f {
            Ok(f) => Some(f),
            Err(e) => {
                self.log(&format!("domain {id}: cannot open {}: {e}", path.display()));
                None
            }
        }
    }

    /// SIGHUP: every guest log is opened again (after logrotate moved it away).
    fn reopen_logs(&mut self) {
        let ids: Vec<(u16, String)> = self.consoles.iter().map(|(&id, c)| (id, c.name.clone())).collect();
        for (id, name) in ids {
            let f = self.open_log(id, &name);
            if let Some(c) = self.consoles.get_mut(&id) {
                c.log = f;
            }
        }
        self.log("SIGHUP: guest logs reopened");
    }

    /// Cleans up domain `id`'s console: unmaps its ring, unbinds its port, closes its pty, removes `console/tty`.
    fn remove(&mut self, id: u16, why: &str) {
        if let Some(c) = self.consoles.remove(&id) {
            let path = format!("/local/domain/{id}/console/tty");
            // Only our own node: a domain already removed from the store is fine.
            if self.read(&path).as_deref() == Some(c.pty.path()) {
                let _ = self.store.rm(0, &path);
            }
            let dropped =
                if c.out.dropped > 0 { format!(", {} bytes dropped unread", c.out.dropped) } else { String::new() };
            self.log(&format!("domain {id} ({}): console closed: {why}{dropped}", c.name));
        }
    }

    fn scribbled(&mut self, id: u16, s: Scribbled) {
        self.dropped.insert(id);
        self.remove(id, &format!("{s}; console dropped"));
    }

    /// Takes the guest's output (at most a few rings' worth per call), logs it, queues it for the pty.
    fn service_ring(&mut self, id: u16) {
        let Some(c) = self.consoles.get_mut(&id) else { return };
        let mut bytes = Vec::new();
        let mut err = None;
        for _ in 0..4 {
            match ring::take_output(c.page.as_ref(), &mut bytes, OUT_SIZE as usize) {
                Ok(0) => break,
                Ok(_) => {}
                Err(s) => {
                    err = Some(s);
                    break;
                }
            }
        }
        if !bytes.is_empty() {
            if let Some(f) = c.log.as_mut() {
                let _ = f.write_all(&bytes);
            }
            c.out.push(&bytes);
            let _ = c.chan.notify();
        }
        if let Some(s) = err {
            self.scribbled(id, s);
        }
    }

    /// Moves what the console client typed into the guest's input ring, as far as it has room.
    fn service_input(&mut self, id: u16) {
        let Some(c) = self.consoles.get_mut(&id) else { return };
        let room = match ring::input_room(c.page.as_ref()) {
            Ok(r) => r,
            Err(s) => return self.scribbled(id, s),
        };
        if room == 0 {
            return;
        }
        let mut buf = [0u8; 1024];
        let want = room.min(buf.len());
        match c.pty.read(&mut buf[..want]) {
            Ok(0) => {}
            Ok(n) => match ring::put_input(c.page.as_ref(), &buf[..n]) {
                Ok(_) => {
                    let _ = c.chan.notify();
                }
                Err(s) => self.scribbled(id, s),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let why = format!("pty read failed: {e}");
                self.remove(id, &why);
            }
        }
    }

    fn service_pty_output(&mut self, id: u16) {
        let Some(c) = self.consoles.get_mut(&id) else { return };
        while !c.out.is_empty() {
            match c.pty.write(c.out.front()) {
                Ok(0) => break,
                Ok(n) => c.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Full (nobody reads) or momentarily hung up: the buffer keeps the newest output.
                Err(_) => break,
            }
        }
    }

    /// Waits for anything to do, once, and does it.
    fn poll_once(&mut self) -> io::Result<()> {
        let mut fds = vec![libc::pollfd { fd: self.wake_r.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        let mut who = Vec::new();
        let mut scribbled = Vec::new();
        for (&id, c) in &self.consoles {
            fds.push(libc::pollfd { fd: c.chan.fd(), events: libc::POLLIN, revents: 0 });
            who.push((id, 0));
            let mut ev = 0;
            match ring::input_room(c.page.as_ref()) {
                Ok(r) if r > 0 => ev |= libc::POLLIN,
                Ok(_) => {}
                Err(s) => scribbled.push((id, s)),
            }
            if !c.out.is_empty() {
                ev |= libc::POLLOUT;
            }
            if ev != 0 {
                fds.push(libc::pollfd { fd: c.pty.as_raw_fd(), events: ev, revents: 0 });
                who.push((id, 1));
            }
        }
        if !scribbled.is_empty() {
            for (id, s) in scribbled {
                self.scribbled(id, s);
            }
            return Ok(());
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 64];
            // SAFETY: reads at most 64 bytes into `b` from our non-blocking pipe.
            while unsafe { libc::read(self.wake_r.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) } > 0 {}
        }
        for (pfd, &(id, kind)) in fds[1..].iter().zip(&who) {
            if pfd.revents == 0 {
                continue;
            }
            if kind == 0 {
                if let Some(c) = self.consoles.get_mut(&id) {
                    let _ = c.chan.ack();
                }
                self.service_ring(id);
                self.service_input(id);
                self.service_pty_output(id);
            } else {
                if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.service_input(id);
                }
                if pfd.revents & libc::POLLOUT != 0 {
                    self.service_pty_output(id);
                }
            }
        }
        Ok(())
    }
}

/// Owns the watch connection: registers a `console` watch for each domain xenstore lists (token `domN`), drops it
/// for domains that are gone, and marks which tokens fired.
fn watch_thread(mut xs: Client, dirty: Arc<Mutex<Dirty>>, wake_w: Arc<OwnedFd>) {
    let mut watched: BTreeSet<u16> = BTreeSet::new();
    let mut resync = |xs: &mut Client| -> Result<(), keel_xenstore::client::Error> {
        let now: BTreeSet<u16> = match xs.directory(0, "/local/domain") {
            Ok(l) => l.iter().filter_map(|s| s.parse().ok()).filter(|&d| d != 0).collect(),
            Err(keel_xenstore::client::Error::Store(_)) => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        for &d in now.difference(&watched) {
            xs.watch(&format!("/local/domain/{d}/console"), &format!("dom{d}"))?;
        }
        for &d in watched.difference(&now) {
            let p = format!("/local/domain/{d}/console\0dom{d}\0");
            let _ = xs.request(typ::UNWATCH, 0, p.as_bytes());
        }
        watched = now;
        Ok(())
    };
    loop {
        let r = xs.wait_event().and_then(|(_, token)| {
            if token == "domlist" {
                resync(&mut xs)?;
                dirty.lock().unwrap_or_else(|e| e.into_inner()).domlist = true;
            } else if let Some(d) = token.strip_prefix("dom").and_then(|d| d.parse::<u16>().ok()) {
                dirty.lock().unwrap_or_else(|e| e.into_inner()).doms.insert(d);
            }
            Ok(())
        });
        if let Err(e) = r {
            dirty.lock().unwrap_or_else(|e| e.into_inner()).failed = Some(e.to_string());
            wake(&wake_w);
            return;
        }
        wake(&wake_w);
    }
}

#[cfg(test)]
mod tests {
    use super::log_name;

    #[test]
    fn a_guest_chosen_name_stays_inside_the_log_directory() {
        assert_eq!(log_name("guest1"), "guest1");
        assert_eq!(log_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(log_name("a b\n"), "a_b_");
        assert_eq!(log_name("web--incoming"), "web", "a migrating guest keeps its log");
        assert_eq!(log_name("--incoming"), "--incoming");
    }
}
