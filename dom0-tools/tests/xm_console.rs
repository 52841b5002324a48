//! `xm console` against a real xenstored (keel-xenstore's server on a temporary socket, named to xm by
//! `XENSTORED_PATH`) and a real pty standing in for xenconsoled's: an unknown domain and a domain without a tty
//! fail with a clear one-line error; attached, the guest's output reaches stdout, typed bytes reach the pty, and
//! Ctrl-] detaches (what follows it is not sent).

use keel_xenstore::client::Client;
use keel_xenstore::server::Server;
use keel_xenstore::store::Store;
use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn xm(sock: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xm"));
    c.args(args).env("XENSTORED_PATH", sock).env("NO_COLOR", "1");
    c
}

/// A pty master, its slave held open in raw mode (as xenconsoled holds it), and the slave's path.
fn pty() -> (std::fs::File, std::fs::File, String) {
    // SAFETY: posix_openpt takes flags and returns a new descriptor (checked).
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(m >= 0);
    // SAFETY: grantpt/unlockpt take the master only; ptsname returns a static NUL-terminated string (tests run
    // it on one thread here).
    let path = unsafe {
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        CStr::from_ptr(libc::ptsname(m)).to_string_lossy().into_owned()
    };
    let slave = std::fs::File::options().read(true).write(true).open(&path).unwrap();
    // SAFETY: `t` is filled by tcgetattr before cfmakeraw and tcsetattr use it.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t), 0);
    }
    // SAFETY: `m` was just opened and is owned by nothing else.
    (unsafe { std::fs::File::from_raw_fd(m) }, slave, path)
}

#[test]
fn console_attaches_detaches_and_fails_clearly() {
    let dir = std::env::temp_dir().join(format!("keel-xm-console-{}", std::process::id()));
    let _tmp = TempDir(dir.clone());
    let sock = dir.join("socket");
    let server = Server::new(Store::default(), Box::new(|_| {}));
    let listener = server.bind(&sock).unwrap();
    std::thread::spawn(move || server.accept_loop(listener));
    let mut xs = Client::unix(&sock).unwrap();
    xs.write(0, "/local/domain/0/name", b"Domain-0").unwrap();
    xs.write(0, "/local/domain/3/name", b"quiet").unwrap();
    xs.write(0, "/local/domain/4/name", b"guest1").unwrap();

    for (arg, want) in [
        ("nosuch", "xm: 'console' failed: domain 'nosuch' does not exist\n"),
        ("9", "xm: 'console' failed: domain '9' does not exist\n"),
        (
            "quiet",
            "xm: 'console' failed: domain 'quiet' has no console: /local/domain/3/console/tty is not there \
             (is xenconsoled running?)\n",
        ),
        (
            "0",
            "xm: 'console' failed: domain '0' has no console: /local/domain/0/console/tty is not there \
             (is xenconsoled running?)\n",
        ),
    ] {
        let out = xm(&sock, &["console", arg]).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "xm console {arg}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), want);
        assert!(out.stdout.is_empty());
    }

    xs.write(0, "/local/domain/4/console/tty", b"/etc/passwd").unwrap();
    let out = xm(&sock, &["console", "guest1"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "xm: 'console' failed: domain 'guest1''s console /local/domain/4/console/tty is \"/etc/passwd\", which is not \
         a pty\n"
    );

    let (mut master, _slave, path) = pty();
    xs.write(0, "/local/domain/4/console/tty", path.as_bytes()).unwrap();
    let mut child = xm(&sock, &["console", "guest1"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    // The guest's output (through the "daemon's" master) arrives on stdout untouched (the pty is raw).
    let sent = b"login: \r\nline two\n";
    let start = Instant::now();
    let mut got = Vec::new();
    // xm opens the slave after it starts: until then, the master's writes wait in the pty.
    master.write_all(sent).unwrap();
    while got.len() < sent.len() {
        assert!(start.elapsed() < Duration::from_secs(20), "no output from xm console");
        let mut b = [0u8; 256];
        let n = out.read(&mut b).unwrap();
        assert!(n > 0, "xm console ended early");
        got.extend_from_slice(&b[..n]);
    }
    assert_eq!(got, sent);
    // Typed bytes reach the pty; Ctrl-] detaches and what follows it is not sent.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"root\r\x1dnot sent").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut typed = Vec::new();
    // SAFETY: F_SETFL on our own master descriptor.
    unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut b = [0u8; 256];
    while typed.len() < 5 && start.elapsed() < Duration::from_secs(20) {
        match master.read(&mut b) {
            Ok(n) => typed.extend_from_slice(&b[..n]),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    if let Ok(n) = master.read(&mut b) {
        typed.extend_from_slice(&b[..n]);
    }
    assert_eq!(typed, b"root\r");
}
