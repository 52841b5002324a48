//! The daemon end to end on the host: a real xenstored (keel-xenstore's server on a temporary socket), fake
//! domains whose console rings are in-memory pages and whose event channels are pipes, and real ptys. Output the
//! "guest" writes appears on the pty `console/tty` names and in its log file; what is written to the pty reaches
//! the guest's input ring without ever overrunning it; a guest that scribbles its indexes loses its console (a log
//! line, its tty node removed) while the others carry on; a pty nobody reads keeps a bounded backlog; a domain
//! that dies is cleaned up.

use keel_consoled::daemon::{Channel, Daemon, Options, Platform};
use keel_consoled::ring::{guest, ConsPage, MemPage};
use keel_xenstore::client::Client;
use keel_xenstore::server::Server;
use keel_xenstore::store::Store;
use keel_xenstore::wire::typ;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_abi::io::console as layout;

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake domain: its console page, the pipe its "guest" kicks the daemon through, the daemon's notifications.
#[derive(Clone)]
struct Dom {
    page: MemPage,
    kick: Arc<OwnedFd>,
    kick_r: Arc<OwnedFd>,
    notified: Arc<AtomicU32>,
}

impl Dom {
    fn new() -> Dom {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
        // SAFETY: both were just created and are owned by nothing else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Dom { page: MemPage::new(), kick: Arc::new(w), kick_r: Arc::new(r), notified: Arc::new(AtomicU32::new(0)) }
    }

    /// The guest signals its port.
    fn signal(&self) {
        // SAFETY: writes one byte from a live local.
        unsafe { libc::write(self.kick.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// The guest writes all of `bytes` (waiting for the daemon to make room), signalling as it goes.
    fn write(&self, bytes: &[u8]) {
        let mut off = 0;
        let start = Instant::now();
        while off < bytes.len() {
            off += guest::write(&self.page, &bytes[off..]);
            self.signal();
            if off < bytes.len() {
                assert!(start.elapsed() < Duration::from_secs(20), "the daemon stopped taking output");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

struct FakeChan(Dom);
impl Channel for FakeChan {
    fn fd(&self) -> RawFd {
        self.0.kick_r.as_raw_fd()
    }
    fn notify(&self) -> io::Result<()> {
        self.0.notified.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn ack(&mut self) -> io::Result<()> {
        let mut b = [0u8; 64];
        // SAFETY: reads at most 64 bytes into `b`.
        while unsafe { libc::read(self.0.kick_r.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) } > 0 {}
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Fake {
    /// domid → (domain, dying)
    doms: Arc<Mutex<HashMap<u16, (Dom, bool)>>>,
}

impl Platform for Fake {
    fn domains(&mut self) -> io::Result<Vec<(u16, bool)>> {
        Ok(self.doms.lock().unwrap().iter().map(|(&id, (_, dying))| (id, *dying)).collect())
    }
    fn map_ring(&mut self, domid: u16, ring_ref: u64) -> io::Result<(Box<dyn ConsPage>, String)> {
        assert_eq!(ring_ref, 4000 + u64::from(domid), "the ring-ref from xenstore");
        let d = self.doms.lock().unwrap().get(&domid).map(|d| d.0.clone()).ok_or(io::ErrorKind::NotFound)?;
        Ok((Box::new(d.page), "memory".into()))
    }
    fn bind(&mut self, domid: u16, port: u32) -> io::Result<Box<dyn Channel>> {
        assert_eq!(port, 10 + u32::from(domid), "the port from xenstore");
        let d = self.doms.lock().unwrap().get(&domid).map(|d| d.0.clone()).ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(FakeChan(d)))
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_node(xs: &mut Client, path: &str) -> Option<String> {
    xs.read(0, path).ok().map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Makes domain `id` known to the hypervisor (fake) and xenstore, and introduces it (firing @introduceDomain).
fn create(xs: &mut Client, fake: &Fake, id: u16, name: &str, early: &[u8]) -> Dom {
    let d = Dom::new();
    guest::write(&d.page, early);
    fake.doms.lock().unwrap().insert(id, (d.clone(), false));
    let dir = format!("/local/domain/{id}");
    xs.write(0, &format!("{dir}/name"), name.as_bytes()).unwrap();
    xs.write(0, &format!("{dir}/console/ring-ref"), (4000 + id).to_string().as_bytes()).unwrap();
    xs.write(0, &format!("{dir}/console/port"), (10 + id).to_string().as_bytes()).unwrap();
    xs.write(0, &format!("{dir}/console/type"), b"xenconsoled").unwrap();
    xs.request(typ::INTRODUCE, 0, format!("{id}\0{}\0{}\0", 4000 + id, 10 + id).as_bytes()).unwrap();
    d
}

/// Opens a pty slave raw, non-blocking.
fn open_tty(path: &str) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    keel_consoled::pty::make_raw(f.as_raw_fd()).unwrap();
    f
}

/// Reads from `tty` until `want` bytes arrived.
fn read_exact(tty: &mut std::fs::File, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    wait_for(&format!("{want} bytes on the pty"), || {
        let mut b = [0u8; 4096];
        match tty.read(&mut b) {
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("pty read: {e}"),
        }
        (got.len() >= want).then_some(())
    });
    got
}

#[test]
fn guest_consoles_through_ptys_and_logs() {
    let dir = std::env::temp_dir().join(format!("keel-consoled-{}", std::process::id()));
    let _tmp = TempDir(dir.clone());
    let sock = dir.join("socket");
    let server = Server::new(Store::default(), Box::new(|_| {}));
    let listener = server.bind(&sock).unwrap();
    std::thread::spawn(move || server.accept_loop(listener));
    let mut xs = Client::unix(&sock).unwrap();

    let fake = Fake::default();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l2 = lines.clone();
    let opts = Options {
        log_guest: true,
        log_dir: dir.join("console"),
        store: Some(sock.clone()),
        logger: Arc::new(move |s| l2.lock().unwrap().push(s.to_string())),
    };
    let mut daemon = Daemon::new(fake.clone(), opts).unwrap();
    let stopper = daemon.stopper();
    daemon.handle_signals();
    let running = std::thread::spawn(move || daemon.run());
    let logged = |what: &str| lines.lock().unwrap().iter().any(|l| l.contains(what));
    wait_for("the daemon's watches", || logged("watching").then_some(()));

    // A domain appears with output already in its ring.
    let g1 = create(&mut xs, &fake, 5, "guest1", b"early boot output\r\n");
    let tty = wait_for("console/tty of domain 5", || read_node(&mut xs, "/local/domain/5/console/tty"));
    assert!(tty.starts_with("/dev/pts/"), "{tty}");
    let mut pty = open_tty(&tty);
    assert_eq!(read_exact(&mut pty, 19), b"early boot output\r\n");

    // Output in pieces, across the ring's end, appears on the pty in order; the guest is notified of the room.
    let mut sent = Vec::new();
    for i in 0..40u32 {
        let line = format!("line {i:03} {}\r\n", "x".repeat((i * 37 % 300) as usize));
        g1.write(line.as_bytes());
        sent.extend_from_slice(line.as_bytes());
    }
    assert_eq!(read_exact(&mut pty, sent.len()), sent);
    assert!(g1.notified.load(Ordering::SeqCst) > 0, "the guest was never told its output was taken");

    // Typing: small input arrives whole.
    pty.write_all(b"root\r").unwrap();
    let got = wait_for("input in the ring", || {
        let v = guest::read(&g1.page);
        (!v.is_empty()).then_some(v)
    });
    assert_eq!(got, b"root\r");

    // Flow control: 3000 bytes typed while the guest reads nothing fill exactly its 1 KiB ring and wait; as the guest
    // reads (and signals), the rest follows, in order, never more than a ring at a time.
    let typed: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    pty.write_all(&typed).unwrap();
    wait_for("a full input ring", || {
        (g1.page.load(layout::IN_PROD).wrapping_sub(g1.page.load(layout::IN_CONS)) == 1024).then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(g1.page.load(layout::IN_PROD).wrapping_sub(g1.page.load(layout::IN_CONS)), 1024, "ring overrun");
    let mut seen = Vec::new();
    wait_for("all typed bytes", || {
        let v = guest::read(&g1.page);
        if !v.is_empty() {
            assert!(v.len() <= 1024);
            seen.extend(v);
            g1.signal();
        }
        (seen.len() >= typed.len()).then_some(())
    });
    assert_eq!(seen, typed);

    // A second domain whose pty nobody reads: its backlog stays bounded (the log still gets everything), then it
    // scribbles its output indexes and loses its console, with a log line; the daemon carries on.
    let g2 = create(&mut xs, &fake, 6, "noisy", b"");
    wait_for("console/tty of domain 6", || read_node(&mut xs, "/local/domain/6/console/tty"));
    let chunk = vec![b'n'; 2000];
    for _ in 0..100 {
        g2.write(&chunk);
    }
    let cons = wait_for("domain 6's output taken", || {
        let c = g2.page.load(layout::OUT_CONS);
        (c == g2.page.load(layout::OUT_PROD)).then_some(c)
    });
    g2.page.store(layout::OUT_PROD, cons.wrapping_add(5000));
    g2.signal();
    wait_for("domain 6 dropped", || {
        logged("domain 6 (noisy): console closed: out ring indexes scribbled").then_some(())
    });
    let line = lines.lock().unwrap().iter().find(|l| l.contains("domain 6 (noisy): console closed")).cloned().unwrap();
    assert!(line.contains("console dropped"), "{line}");
    assert!(line.contains("bytes dropped unread"), "nobody read domain 6's pty, so its backlog was cut: {line}");
    assert_eq!(read_node(&mut xs, "/local/domain/6/console/tty"), None, "tty node removed");
    // A later change to its console directory does not bring it back.
    xs.write(0, "/local/domain/6/console/port", b"16").unwrap();
    g1.write(b"still here\r\n");
    assert_eq!(read_exact(&mut pty, 12), b"still here\r\n");
    assert_eq!(read_node(&mut xs, "/local/domain/6/console/tty"), None);
    let log6 = std::fs::read(dir.join("console/guest-noisy.log")).unwrap();
    assert_eq!(log6.len(), 200_000, "the log has all of domain 6's output");

    // The log of domain 5 has everything it wrote.
    let log5 = std::fs::read(dir.join("console/guest-guest1.log")).unwrap();
    let mut want = b"early boot output\r\n".to_vec();
    want.extend_from_slice(&sent);
    want.extend_from_slice(b"still here\r\n");
    assert_eq!(log5, want);

    // SIGHUP (logrotate moved the log away) reopens the guest logs: new output goes to a new file.
    let rotated = dir.join("console/guest-guest1.log.1");
    std::fs::rename(dir.join("console/guest-guest1.log"), &rotated).unwrap();
    // SAFETY: raises a signal whose handler handle_signals installed; nothing else here handles SIGHUP.
    unsafe { libc::raise(libc::SIGHUP) };
    wait_for("logs reopened", || logged("SIGHUP: guest logs reopened").then_some(()));
    g1.write(b"after rotation\r\n");
    assert_eq!(read_exact(&mut pty, 16), b"after rotation\r\n");
    assert_eq!(std::fs::read(dir.join("console/guest-guest1.log")).unwrap(), b"after rotation\r\n");
    assert_eq!(std::fs::read(&rotated).unwrap(), want);

    // Domain 5 dies: its console is cleaned up (tty node removed, pty closed: the slave sees a hang-up).
    fake.doms.lock().unwrap().get_mut(&5).unwrap().1 = true;
    xs.request(typ::RELEASE, 0, b"5\0").unwrap();
    wait_for("domain 5 cleaned up", || logged("domain 5 (guest1): console closed: domain is gone").then_some(()));
    assert_eq!(read_node(&mut xs, "/local/domain/5/console/tty"), None);
    let hung_up = wait_for("the pty hang-up", || {
        let mut b = [0u8; 16];
        match pty.read(&mut b) {
            Ok(0) => Some(true),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Some(true),
            _ => None,
        }
    });
    assert!(hung_up);

    stopper.stop();
    running.join().unwrap().unwrap();
    assert!(Path::new(&dir).exists());
}
