//! The Unix-socket transport of dom0's xenstored: one thread reads each client, one writes to it, and all share
//! the [`Store`]. Every client of the socket is dom0's (the socket lives in root's `/run/xenstored`), so it is
//! privileged, as in Xen.
//!
//! Nothing a client sends can stop the daemon or grow its memory without bound: a framing error (a length over
//! `XENSTORE_PAYLOAD_MAX`) closes that client, requests are answered one at a time, and a client that does not read
//! its replies and watch events has at most [`OUTBOX`] messages queued before it is disconnected.

use crate::store::{ConnId, Effect, Output, Store};
use crate::wire::{Decoder, Msg};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Messages queued for one client at most (each at most 16 + 4096 bytes).
pub const OUTBOX: usize = 1024;

struct Outbox {
    tx: SyncSender<Vec<u8>>,
    stream: UnixStream,
}

/// What the daemon does with effects (introduced and released domains, log lines).
pub type EffectHandler = Box<dyn Fn(&Effect) + Send + Sync>;

struct Inner {
    store: Mutex<Store>,
    outboxes: Mutex<HashMap<ConnId, Outbox>>,
    on_effect: EffectHandler,
}

/// A running store with its transports.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl Server {
    /// A server over `store`; `on_effect` sees every effect requests cause.
    pub fn new(store: Store, on_effect: EffectHandler) -> Server {
        Server { inner: Arc::new(Inner { store: Mutex::new(store), outboxes: Mutex::new(HashMap::new()), on_effect }) }
    }

    /// Listens on `path` (replacing a stale socket) and serves clients until the listener fails.
    pub fn serve_unix(&self, path: &Path) -> std::io::Result<()> {
        let listener = self.bind(path)?;
        self.accept_loop(listener)
    }

    /// Binds the socket (its directory is created; mode 0600 as only root may use it).
    pub fn bind(&self, path: &Path) -> std::io::Result<UnixListener> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(l)
    }

    /// Serves every client `listener` accepts, each on its own threads.
    pub fn accept_loop(&self, listener: UnixListener) -> std::io::Result<()> {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let me = self.clone();
            std::thread::spawn(move || me.client(stream));
        }
        Ok(())
    }

    fn client(&self, stream: UnixStream) {
        let Ok(writer) = stream.try_clone() else { return };
        let Ok(closer) = stream.try_clone() else { return };
        let id = self.inner.store.lock().expect("store lock").connect(0, true);
        let (tx, rx) = sync_channel::<Vec<u8>>(OUTBOX);
        self.inner.outboxes.lock().expect("outbox lock").insert(id, Outbox { tx, stream: closer });
        let write_thread = std::thread::spawn(move || {
            let mut w = writer;
            for bytes in rx {
                if w.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = w.shutdown(std::net::Shutdown::Both);
        });
        self.read_requests(id, stream);
        self.inner.store.lock().expect("store lock").disconnect(id);
        if let Some(o) = self.inner.outboxes.lock().expect("outbox lock").remove(&id) {
            let _ = o.stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = write_thread.join();
    }

    fn read_requests(&self, id: ConnId, mut stream: UnixStream) {
        let mut dec = Decoder::default();
        let mut buf = vec![0u8; 4096 + 16];
        loop {
            let want = dec.wanted().min(buf.len());
            let n = match stream.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let msgs = match dec.feed_all(&buf[..n]) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("xenstored: connection {id}: protocol error ({e:?}): closed");
                    return;
                }
            };
            for m in msgs {
                self.request(id, &m);
            }
        }
    }

    /// Handles one request from connection `id` and delivers what it causes.
    pub fn request(&self, id: ConnId, m: &Msg) {
        let out = self.inner.store.lock().expect("store lock").handle(id, m);
        self.deliver(out);
    }

    fn deliver(&self, out: Output) {
        for e in &out.effects {
            (self.inner.on_effect)(e);
        }
        let mut boxes = self.inner.outboxes.lock().expect("outbox lock");
        let mut stuck = Vec::new();
        for (conn, msg) in out.msgs {
            if let Some(b) = boxes.get(&conn) {
                match b.tx.try_send(msg.encode()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => stuck.push(conn),
                }
            }
        }
        for conn in stuck {
            if let Some(b) = boxes.remove(&conn) {
                eprintln!("xenstored: connection {conn} does not read its replies: closed");
                let _ = b.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Runs `f` on the store (start-up contents, tests).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.inner.store.lock().expect("store lock"))
    }

    /// Connected clients now.
    pub fn clients(&self) -> usize {
        self.inner.outboxes.lock().expect("outbox lock").len()
    }
}
