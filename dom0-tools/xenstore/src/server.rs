//! The transports of dom0's xenstored, all sharing one [`Store`] and one request path ([`Server::request`]):
//!
//! - the Unix socket: one thread reads each client, one writes to it. Every client of the socket is dom0's (the
//!   socket lives in root's `/run/xenstored`), so it is privileged, as in Xen;
//! - domains' rings ([`Server::serve_ring`]): one thread per ring, woken by the ring's event channel or by a watch
//!   event another connection queued for it; the ring logic is [`RingConn`]. dom0's kernel (Linux's XS_LOCAL
//!   xenbus) is such a ring, connected as domain 0.
//!
//! Nothing a client sends can stop the daemon or grow its memory without bound: a framing error (a length over
//! `XENSTORE_PAYLOAD_MAX`) closes that client (on a ring: the ring's `error` field says why), requests are answered
//! one at a time, and a socket client that does not read its replies and watch events has at most [`OUTBOX`]
//! messages queued before it is disconnected; a ring's domain that does not read stops being served, and watch
//! events for it beyond the bound are dropped.

use crate::ring::{Events, RingConn, RingPage, Waker};
use crate::store::{ConnId, Effect, Output, Store};
use crate::wire::{typ, Decoder, Msg};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Messages queued for one client at most (each at most 16 + 4096 bytes).
pub const OUTBOX: usize = 1024;

/// Where a connection's messages go: a channel drained by its writer, and how to close or wake that writer.
struct Outbox {
    tx: SyncSender<Vec<u8>>,
    peer: Peer,
}

enum Peer {
    /// A socket client: shut down when it does not keep up.
    Socket(UnixStream),
    /// A ring: its thread is woken to move the message into the ring; a message that finds the channel full is
    /// dropped (only watch events come this way: the ring's thread takes its replies straight from the store).
    Ring(Waker),
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
        self.inner.outboxes.lock().expect("outbox lock").insert(id, Outbox { tx, peer: Peer::Socket(closer) });
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
        if let Some(Outbox { peer: Peer::Socket(s), .. }) = self.inner.outboxes.lock().expect("outbox lock").remove(&id)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
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

    /// Handles one request from connection `id` as [`Server::request`] does, but returns (encoded) what is due to
    /// `id` itself, its reply first, instead of queueing it: a ring's reply never waits behind a full channel.
    fn request_returning(&self, id: ConnId, m: &Msg) -> Vec<Vec<u8>> {
        let mut out = self.inner.store.lock().expect("store lock").handle(id, m);
        let (mine, others): (Vec<_>, Vec<_>) = out.msgs.into_iter().partition(|(to, _)| *to == id);
        out.msgs = others;
        self.deliver(out);
        mine.into_iter().map(|(_, m)| m.encode()).collect()
    }

    fn deliver(&self, out: Output) {
        for e in &out.effects {
            (self.inner.on_effect)(e);
        }
        let mut boxes = self.inner.outboxes.lock().expect("outbox lock");
        let mut stuck = Vec::new();
        for (conn, msg) in out.msgs {
            if let Some(b) = boxes.get(&conn) {
                match (b.tx.try_send(msg.encode()), &b.peer) {
                    (Ok(()), Peer::Ring(wake)) => wake(),
                    (Ok(()), Peer::Socket(_)) => {}
                    (Err(TrySendError::Full(_)), Peer::Ring(_)) => {
                        eprintln!("xenstored: connection {conn}'s ring is not keeping up: watch event dropped")
                    }
                    (Err(_), _) => stuck.push(conn),
                }
            }
        }
        for conn in stuck {
            if let Some(Outbox { peer: Peer::Socket(s), .. }) = boxes.remove(&conn) {
                eprintln!("xenstored: connection {conn} does not read its replies: closed");
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Serves domain `domid`'s ring on this thread until the connection ends: through a protocol error (the reason
    /// is in the page's `error` field), or an event-channel error (returned). Requests take the same path as socket
    /// clients' (`Store::handle`, then delivery of what they cause to the other connections); domain 0's ring is
    /// privileged, as dom0's socket clients are.
    ///
    /// Before waiting for the first event it serves what the domain wrote already and signals the channel: Linux's
    /// XS_LOCAL xenbus probes only after that first event.
    pub fn serve_ring(&self, domid: u16, page: &dyn RingPage, mut events: Box<dyn Events>) -> std::io::Result<()> {
        let id = self.inner.store.lock().expect("store lock").connect(domid, domid == 0);
        let (tx, rx) = sync_channel::<Vec<u8>>(OUTBOX);
        let peer = Peer::Ring(events.waker());
        self.inner.outboxes.lock().expect("outbox lock").insert(id, Outbox { tx, peer });
        let mut conn = RingConn::new(page);
        let r = self.ring_loop(domid, id, page, &mut *events, &rx, &mut conn);
        self.inner.store.lock().expect("store lock").disconnect(id);
        self.inner.outboxes.lock().expect("outbox lock").remove(&id);
        r
    }

    fn ring_loop(
        &self,
        domid: u16,
        id: ConnId,
        page: &dyn RingPage,
        events: &mut dyn Events,
        rx: &std::sync::mpsc::Receiver<Vec<u8>>,
        conn: &mut RingConn,
    ) -> std::io::Result<()> {
        let mut watches_logged = 0;
        let mut first = true;
        loop {
            // Passes until one moves nothing: Linux signals only when the ring was empty, so bytes written while
            // we were busy arrive silently.
            loop {
                for m in rx.try_iter() {
                    conn.queue(&m);
                }
                let pass = conn.service(page, &mut |m| {
                    // The kernel's first watches show that its xenbus probe ran (the backend bus watches `backend`).
                    if m.typ == typ::WATCH && watches_logged < 8 {
                        watches_logged += 1;
                        let path = m.args().first().map(|p| String::from_utf8_lossy(p).into_owned());
                        eprintln!("xenstored: domain {domid} watches {}", path.unwrap_or_default());
                    }
                    // Events queued for this ring before the request go first, then the reply and what follows it.
                    let mut due: Vec<Vec<u8>> = rx.try_iter().collect();
                    due.extend(self.request_returning(id, m));
                    due
                });
                if let Some(why) = pass.dropped {
                    eprintln!("xenstored: domain {domid}'s ring: {why}: connection dropped");
                    return events.notify();
                }
                if pass.notify || first {
                    first = false;
                    events.notify()?;
                } else {
                    break;
                }
            }
            events.wait()?;
        }
    }

    /// Domain `d` is gone: released as by XS_RELEASE (its ring thread is told through the Release effect) and
    /// `@releaseDomain` fires.
    pub fn domain_gone(&self, d: u16) {
        let out = self.inner.store.lock().expect("store lock").domain_gone(d);
        self.deliver(out);
    }

    /// Fires `@releaseDomain` (a domain shut down).
    pub fn fire_release_domain(&self) {
        let out = self.inner.store.lock().expect("store lock").fire_release_domain();
        self.deliver(out);
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
