//! The daemon's socket transport and the client commands, over a real Unix socket: requests, watches and
//! transactions end to end, and hostile clients (garbage, truncated and oversized messages, a client that never
//! reads) that must not stop the daemon or leave anything behind.

use keel_xenstore::client::{Client, Error};
use keel_xenstore::server::{Server, OUTBOX};
use keel_xenstore::store::Store;
use keel_xenstore::wire::{typ, Msg};
use keel_xenstore::XsError;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
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
