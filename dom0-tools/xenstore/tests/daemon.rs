//! The daemon's socket transport and the client commands, over a real Unix socket: requests, watches and
//! transactions end to end, a domain's ring served beside the socket, and hostile clients (garbage, truncated and oversized messages, a client that never
//! reads) that must not stop the daemon or leave anything behind.

use keel_abi::io::xenstore as layout;
use keel_xenstore::client::{Client, Error};
use keel_xenstore::ring::guest::{consume, produce};
use keel_xenstore::ring::{Events, MemPage, RingPage, Waker};
use keel_xenstore::server::{Server, OUTBOX};
use keel_xenstore::store::Store;
use keel_xenstore::wire::{typ, Decoder, Msg};
use keel_xenstore::XsError;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The socket's directory, removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start() -> (Server, PathBuf, TempDir) {
    let dir = std::env::temp_dir().join(format!("keel-xs-{}-{:?}", std::process::id(), std::thread::current().id()));
    let path = dir.join("socket");
    let server = Server::new(Store::default(), Box::new(|_| {}));
    let listener = server.bind(&path).expect("bind");
    let s = server.clone();
    std::thread::spawn(move || s.accept_loop(listener));
    (server, path, TempDir(dir))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn requests_watches_and_transactions_over_the_socket() {
    let (_server, path, _dir) = start();
    let mut a = Client::unix(&path).unwrap();
    let mut b = Client::unix(&path).unwrap();
    a.write(0, "/vm/1/name", b"guest").unwrap();
    assert_eq!(b.read(0, "/vm/1/name").unwrap(), b"guest");
    assert_eq!(b.directory(0, "/vm").unwrap(), vec!["1"]);
    assert!(matches!(b.read(0, "/nope"), Err(Error::Store(XsError::Enoent))));
    b.watch("/vm", "tok").unwrap();
    assert_eq!(b.wait_event().unwrap(), ("/vm".into(), "tok".into()));
    a.write(0, "/vm/1/state", b"running").unwrap();
    assert_eq!(b.wait_event().unwrap(), ("/vm/1/state".into(), "tok".into()));
    let tx = a.transaction_start().unwrap();
    a.write(tx, "/vm/1/x", b"1").unwrap();
    b.write(0, "/vm/1/x", b"concurrent").unwrap();
    assert!(matches!(a.read(tx, "/vm/1/x"), Ok(v) if v == b"1"));
    assert!(matches!(a.transaction_end(tx, true), Err(Error::Store(XsError::Eagain))));
    assert_eq!(a.read(0, "/vm/1/x").unwrap(), b"concurrent");
    // A listing over one payload comes back whole (through XS_DIRECTORY_PART).
    for i in 0..300 {
        a.mkdir(0, &format!("/big/{i:030}")).unwrap();
    }
    assert_eq!(b.directory(0, "/big").unwrap().len(), 300);
}

fn raw(path: &PathBuf) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn hostile_clients_do_not_hurt_the_daemon() {
    let (server, path, _dir) = start();
    let mut good = Client::unix(&path).unwrap();
    good.write(0, "/keep", b"1").unwrap();
    let baseline = server.clients();

    // Random bytes: the daemon answers or closes, and carries on.
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..50 {
        let mut s = raw(&path);
        let len = (rnd() % 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 16 {
            // A plausible header with a small length, so the payload is parsed too.
            bytes[12..16].copy_from_slice(&((len as u32 - 16) & 0x3ff).to_le_bytes());
            bytes[0..4].copy_from_slice(&((rnd() % 30) as u32).to_le_bytes());
        }
        let _ = s.write_all(&bytes);
        drop(s);
    }
    // A truncated message (header promises more than ever comes), then the client goes away.
    let mut s = raw(&path);
    let mut m = Msg::new(typ::WRITE, 1, 0, b"/x\0y".to_vec()).encode();
    m[12..16].copy_from_slice(&100u32.to_le_bytes());
    s.write_all(&m).unwrap();
    drop(s);
    // An oversized header: the connection is closed (read returns 0).
    let mut s = raw(&path);
    let mut m = Msg::new(typ::READ, 1, 0, vec![]).encode();
    m[12..16].copy_from_slice(&5000u32.to_le_bytes());
    s.write_all(&m).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "the daemon closes a client that breaks the framing");
    // A client that floods requests and never reads its replies is disconnected once its outbox is full.
    let mut s = raw(&path);
    let req = Msg::new(typ::READ, 1, 0, b"/keep\0".to_vec()).encode();
    let mut sent = 0;
    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    while sent < OUTBOX * 8 && s.write_all(&req).is_ok() {
        sent += 1;
    }
    drop(s);
    // The daemon still serves, and every hostile connection is gone.
    assert_eq!(good.read(0, "/keep").unwrap(), b"1");
    wait_for("hostile connections to close", || server.clients() == baseline);
    server.with_store(|st| assert!(st.len() < 50, "hostile writes may create a few nodes, not grow without end"));
}

#[test]
fn client_commands_print_what_xenstore_utils_print() {
    let (server, path, _dir) = start();
    let mut c = Client::unix(&path).unwrap();
    c.write(0, "/local/domain/0/name", b"Domain-0").unwrap();
    let path = path.clone();
    c.write(0, "/local/domain/0/memory/target", b"524288").unwrap();
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xenstore"))
            .args(args)
            .env("XENSTORED_PATH", &path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(run(&["read", "/local/domain/0/name"]).1, "Domain-0\n");
    assert_eq!(run(&["list", "/local/domain/0"]).1, "memory\nname\n");
    assert_eq!(run(&["ls", "/local/domain/0"]).1, "memory = \"\"\n target = \"524288\"\nname = \"Domain-0\"\n");
    assert_eq!(
        run(&["ls", "-f", "/local/domain/0"]).1,
        "/local/domain/0/memory = \"\"\n/local/domain/0/memory/target = \"524288\"\n/local/domain/0/name = \"Domain-0\"\n"
    );
    assert_eq!(run(&["exists", "/local/domain/0/name"]).0, Some(0));
    assert_eq!(run(&["exists", "/local/domain/0/nope"]).0, Some(1));
    assert_eq!(run(&["write", "/a", "1", "/b", "2"]).0, Some(0));
    assert_eq!(run(&["read", "/a", "/b"]).1, "1\n2\n");
    assert_eq!(run(&["chmod", "/a", "n0", "r5"]).0, Some(0));
    assert_eq!(c.get_perms(0, "/a").unwrap(), vec!["n0", "r5"]);
    assert_eq!(run(&["rm", "/a"]).0, Some(0));
    let (code, _, err) = run(&["read", "/a"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("ENOENT"), "{err}");
    let watcher = std::thread::spawn(move || run(&["watch", "-n", "2", "/w"]));
    wait_for("the command's watch", || server.with_store(|s| s.total_watches()) == 1);
    c.write(0, "/w/x", b"1").unwrap();
    let (code, out, _) = watcher.join().unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(out, "/w\n/w/x\n");
}

/// The event channel of a test ring: the daemon's side waits for the guest's signals, the guest counts the daemon's.
/// A deaf channel ignores the daemon's own wakers, so events queued by other connections pile up unseen.
#[derive(Clone, Default)]
struct TestChannel(Arc<(Mutex<(bool, u32)>, Condvar)>, bool);

impl TestChannel {
    /// The guest signals the daemon.
    fn signal(&self) {
        self.0 .0.lock().unwrap().0 = true;
        self.0 .1.notify_all();
    }

    /// Notifications the daemon sent so far.
    fn notified(&self) -> u32 {
        self.0 .0.lock().unwrap().1
    }
}

impl Events for TestChannel {
    fn wait(&mut self) -> std::io::Result<()> {
        let mut g = self.0 .0.lock().unwrap();
        while !g.0 {
            g = self.0 .1.wait(g).unwrap();
        }
        g.0 = false;
        Ok(())
    }

    fn notify(&mut self) -> std::io::Result<()> {
        self.0 .0.lock().unwrap().1 += 1;
        self.0 .1.notify_all();
        Ok(())
    }

    fn waker(&self) -> Waker {
        let me = self.clone();
        Arc::new(move || {
            if !me.1 {
                me.signal()
            }
        })
    }
}

/// A guest on a ring, signalling as Linux's xenbus does: after a write only when the daemon had taken everything
/// before, after a read only when the response ring was full.
struct Guest {
    page: Arc<MemPage>,
    ch: TestChannel,
    dec: Decoder,
    got: VecDeque<Msg>,
}

impl Guest {
    fn send(&mut self, bytes: &[u8]) {
        let mut sent = 0;
        while sent < bytes.len() {
            let old = self.page.load(layout::REQ_PROD);
            sent += produce(&*self.page, &bytes[sent..]);
            if old == self.page.load(layout::REQ_CONS) {
                self.ch.signal();
            }
            if sent < bytes.len() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn receive(&mut self) -> Msg {
        let start = Instant::now();
        loop {
            if let Some(m) = self.got.pop_front() {
                return m;
            }
            // As Linux: the daemon is signalled when the guest took bytes from a full response ring.
            let old = self.page.load(layout::RSP_CONS);
            let bytes = consume(&*self.page);
            if self.page.load(layout::RSP_PROD).wrapping_sub(old) >= layout::RING_SIZE {
                self.ch.signal();
            }
            self.got.extend(self.dec.feed_all(&bytes).unwrap());
            assert!(start.elapsed() < Duration::from_secs(10), "no message from the daemon on the ring");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn request(&mut self, t: u32, req_id: u32, payload: &[u8]) -> Msg {
        self.send(&Msg::new(t, req_id, 0, payload.to_vec()).encode());
        let m = self.receive();
        assert_eq!(m.req_id, req_id, "{m:?}");
        m
    }
}

/// dom0's kernel on its ring and dom0's tools on the socket share one store through one request path: the ring
/// counts as privileged domain 0, sees socket writes and their watch events, is signalled once at start (Linux's
/// XS_LOCAL probe waits for that), and a protocol error on it ends that ring alone.
#[test]
fn a_ring_is_served_like_a_socket_client() {
    let (server, path, _dir) = start();
    let page = Arc::new(MemPage::new());
    let ch = TestChannel::default();
    let (s, p, c) = (server.clone(), page.clone(), ch.clone());
    let ring = std::thread::spawn(move || s.serve_ring(0, &*p, Box::new(c)));
    wait_for("the first notification", || ch.notified() >= 1);
    assert_eq!(page.load(layout::SERVER_FEATURES), layout::SERVER_FEATURE_ERROR);

    let mut g = Guest { page: page.clone(), ch: ch.clone(), dec: Decoder::default(), got: VecDeque::new() };
    let mut sock = Client::unix(&path).unwrap();
    sock.write(0, "/vm/x", b"from-the-socket").unwrap();
    sock.set_perms(0, "/vm/x", &["n5".to_string()]).unwrap();
    // Privileged as domain 0: reads a node owned by domain 5 that nobody else may read.
    assert_eq!(g.request(typ::READ, 1, b"/vm/x\0").payload, b"from-the-socket");
    assert_eq!(g.request(typ::GET_DOMAIN_PATH, 2, b"0\0").payload, b"/local/domain/0\0");
    // A watch on the ring: fired at once, then by a socket client's write (another thread wakes the ring's).
    assert_eq!(g.request(typ::WATCH, 3, b"/vm\0tok\0").payload, b"OK\0");
    assert_eq!(g.receive().args(), [&b"/vm"[..], b"tok"]);
    sock.write(0, "/vm/y", b"1").unwrap();
    let ev = g.receive();
    assert_eq!((ev.typ, ev.args()), (typ::WATCH_EVENT, vec![&b"/vm/y"[..], b"tok"]));
    // Long requests and replies go through the ring in pieces; the socket sees the ring's writes.
    let mut payload = b"/vm/big\0".to_vec();
    payload.extend(std::iter::repeat_n(b'b', 3000));
    assert_eq!(g.request(typ::WRITE, 4, &payload).payload, b"OK\0");
    assert_eq!(g.receive().args()[0], b"/vm/big");
    assert_eq!(sock.read(0, "/vm/big").unwrap().len(), 3000);
    assert_eq!(g.request(typ::READ, 5, b"/vm/big\0").payload.len(), 3000);
    // A malformed request is answered with an error; an oversized header ends the ring's connection only.
    assert_eq!(g.request(12345, 6, b"").typ, typ::ERROR);
    let mut h = Msg::new(typ::READ, 7, 0, vec![]).encode();
    h[12..16].copy_from_slice(&5000u32.to_le_bytes());
    g.send(&h);
    assert!(ring.join().unwrap().is_ok());
    assert_eq!(page.load(layout::ERROR), layout::ERROR_PROTO);
    assert_eq!(server.with_store(|s| s.total_watches()), 0, "the ring's watches went with it");
    assert_eq!(sock.read(0, "/vm/y").unwrap(), b"1");
}

/// A ring whose thread does not come round while a socket client floods it with watch events (more than OUTBOX):
/// the excess is dropped rather than queued without bound, and once the domain reads again, its request is answered
/// and the connection goes on.
#[test]
fn a_flooded_ring_drops_events_and_recovers() {
    let (server, path, _dir) = start();
    let page = Arc::new(MemPage::new());
    let ch = TestChannel(Default::default(), true);
    let (s, p, c) = (server.clone(), page.clone(), ch.clone());
    std::thread::spawn(move || s.serve_ring(0, &*p, Box::new(c)));
    wait_for("the first notification", || ch.notified() >= 1);
    let mut g = Guest { page: page.clone(), ch: ch.clone(), dec: Decoder::default(), got: VecDeque::new() };
    assert_eq!(g.request(typ::WATCH, 1, b"/flood\0tok\0").payload, b"OK\0");
    assert_eq!(g.receive().typ, typ::WATCH_EVENT);
    let mut sock = Client::unix(&path).unwrap();
    for i in 0..OUTBOX + 200 {
        sock.write(0, &format!("/flood/{i}"), b"x").unwrap();
    }
    g.send(&Msg::new(typ::READ, 2, 0, b"/flood/7\0".to_vec()).encode());
    let mut events = 0;
    let reply = loop {
        let m = g.receive();
        if m.typ != typ::WATCH_EVENT {
            break m;
        }
        events += 1;
    };
    assert_eq!((reply.req_id, reply.payload), (2, b"x".to_vec()));
    assert!((1..OUTBOX + 200).contains(&events), "{events} events delivered: some, not all");
    assert_eq!(g.request(typ::READ, 3, b"/flood/9\0").payload, b"x");
    assert_eq!(server.with_store(|s| s.total_watches()), 1);
}
