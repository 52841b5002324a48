//! Keel's built-in xenstore, serving the initial domain's xenbus ring until a xenstore daemon runs in dom0.
//!
//! It speaks the xs_wire protocol (`keel_abi::io::xs_wire`, xen-abi.md §2.4): READ, WRITE, MKDIR, RM, DIRECTORY,
//! GET_PERMS, SET_PERMS, WATCH (which fires once at once), UNWATCH, TRANSACTION_START/END (transactions apply
//! directly: the store has a single client), GET_DOMAIN_PATH, RESET_WATCHES; anything else is answered with
//! `ENOSYS`. Relative paths are under `/local/domain/<domid>`.
//!
//! What a guest can make it hold is bounded as C xenstored bounds it: [`NODE_QUOTA`] nodes, [`WATCH_QUOTA`]
//! watches, [`NODE_SIZE_MAX`] bytes per value, paths of `XENSTORE_*_PATH_MAX`, DIRECTORY replies of one payload,
//! and [`Conn`] queues at most [`OUTPUT_MAX`] bytes of replies and events. [`Conn::service`] consumes the request
//! ring: indexes read once per pass, at most one ring's worth of bytes per pass, requests reassembled across ring
//! fills, and a header announcing more than `XENSTORE_PAYLOAD_MAX` ends the connection (`XENSTORE_ERROR_PROTO`).

use crate::backend::RingPage;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use keel_abi::io::xenstore as ring;
use keel_abi::io::xs_wire::{self as xs, XsdSockmsg, HEADER_SIZE, XENSTORE_PAYLOAD_MAX};

/// Nodes the client may own (C xenstored's `quota_nb_entry_per_domain`).
pub const NODE_QUOTA: usize = 1000;
/// Watches the client may hold (`quota_nb_watch_per_domain`).
pub const WATCH_QUOTA: usize = 128;
/// Longest value (`quota_max_entry_size`).
pub const NODE_SIZE_MAX: usize = 2048;
/// Replies and events queued for the response ring, at most; past it, requests wait in the ring and watch events
/// are dropped.
pub const OUTPUT_MAX: usize = 16 * 1024;

/// Requests are taken off the ring only while fewer bytes than this are queued, so that the reply to any request
/// (at most a header and `XENSTORE_PAYLOAD_MAX` bytes) still fits under [`OUTPUT_MAX`].
const OUTPUT_STOP: usize = OUTPUT_MAX - HEADER_SIZE - XENSTORE_PAYLOAD_MAX as usize;

/// One reply (or event) to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub typ: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

/// The store: a tree of paths with values, and the client's watches.
pub struct Store {
    domid: u16,
    nodes: BTreeMap<String, String>,
    watches: Vec<(String, String)>,
    next_tx: u32,
}

fn strings(payload: &[u8]) -> Vec<String> {
    payload.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

/// Xen's error strings (`xsd_errors`).
type XsError = &'static str;

impl Store {
    /// An empty store for domain `domid` (with its home directory and name).
    pub fn new(domid: u16, name: &str) -> Self {
        let mut s = Self { domid, nodes: BTreeMap::new(), watches: Vec::new(), next_tx: 1 };
        let home = format!("/local/domain/{domid}");
        let _ = s.write(&format!("{home}/name"), name);
        let _ = s.write(&format!("{home}/domid"), &domid.to_string());
        s
    }

    /// Nodes in the store.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Watches the client holds.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    fn absolute(&self, path: &str) -> Result<String, XsError> {
        let (p, max) = if path.starts_with('/') {
            (path.to_string(), xs::XENSTORE_ABS_PATH_MAX)
        } else {
            (format!("/local/domain/{}/{path}", self.domid), xs::XENSTORE_REL_PATH_MAX)
        };
        if path.len() > max {
            return Err("EINVAL");
        }
        let trimmed = p.trim_end_matches('/');
        Ok(if trimmed.is_empty() { "/".into() } else { trimmed.into() })
    }

    /// Creates `path` (absolute) with `value`, and every missing parent with an empty value; refuses a value over
    /// [`NODE_SIZE_MAX`] and nodes beyond [`NODE_QUOTA`] (ENOSPC, as C xenstored), creating nothing then.
    pub fn write(&mut self, path: &str, value: &str) -> Result<(), XsError> {
        if value.len() > NODE_SIZE_MAX {
            return Err("ENOSPC");
        }
        let mut missing = Vec::new();
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            if !self.nodes.contains_key(&at) {
                missing.push(at.clone());
            }
        }
        if self.nodes.len() + missing.len() > NODE_QUOTA {
            return Err("ENOSPC");
        }
        for m in missing {
            self.nodes.insert(m, String::new());
        }
        self.nodes.insert(path.into(), value.into());
        Ok(())
    }

    fn children(&self, path: &str) -> Vec<String> {
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        let mut out: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(String::from))
            .collect();
        out.dedup();
        out
    }

    /// Queues the events of the watches on `path` or above it, [`OUTPUT_MAX`] bytes of them at most.
    fn fire(&self, path: &str, out: &mut Vec<Reply>) {
        let mut bytes = 0;
        for (w, token) in &self.watches {
            let Ok(wabs) = self.absolute(w) else { continue };
            if path == wabs || path.starts_with(&format!("{wabs}/")) || wabs == "/" {
                let shown = if w.starts_with('/') { path.to_string() } else { self.relative(path) };
                let mut payload = Vec::new();
                payload.extend_from_slice(shown.as_bytes());
                payload.push(0);
                payload.extend_from_slice(token.as_bytes());
                payload.push(0);
                bytes += HEADER_SIZE + payload.len();
                if bytes > OUTPUT_MAX {
                    break;
                }
                out.push(Reply { typ: xs::XS_WATCH_EVENT, req_id: 0, tx_id: 0, payload });
            }
        }
    }

    fn relative(&self, path: &str) -> String {
        let home = format!("/local/domain/{}/", self.domid);
        path.strip_prefix(&home).unwrap_or(path).to_string()
    }

    fn request(&mut self, typ: u32, payload: &[u8], out: &mut Vec<Reply>) -> Result<Vec<u8>, XsError> {
        let args = strings(payload);
        let arg0 = args.first().cloned().unwrap_or_default();
        Ok(match typ {
            xs::XS_READ => self.nodes.get(&self.absolute(&arg0)?).ok_or("ENOENT")?.as_bytes().to_vec(),
            xs::XS_DIRECTORY => {
                let p = self.absolute(&arg0)?;
                if !self.nodes.contains_key(&p) && p != "/" {
                    return Err("ENOENT");
                }
                let mut body = Vec::new();
                for c in self.children(&p) {
                    body.extend_from_slice(c.as_bytes());
                    body.push(0);
                }
                // A reply carries one payload at most (C xenstored answers E2BIG; XS_DIRECTORY_PART is for more).
                if body.len() > XENSTORE_PAYLOAD_MAX as usize {
                    return Err("E2BIG");
                }
                body
            }
            xs::XS_WRITE => {
                let split = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
                let path = self.absolute(&String::from_utf8_lossy(&payload[..split]))?;
                let raw = payload.get(split + 1..).unwrap_or(&[]);
                if raw.len() > NODE_SIZE_MAX {
                    return Err("ENOSPC");
                }
                self.write(&path, &String::from_utf8_lossy(raw))?;
                self.fire(&path, out);
                b"OK\0".to_vec()
            }
            xs::XS_MKDIR => {
                let path = self.absolute(&arg0)?;
                if !self.nodes.contains_key(&path) {
                    self.write(&path, "")?;
                    self.fire(&path, out);
                }
                b"OK\0".to_vec()
            }
            xs::XS_RM => {
                let path = self.absolute(&arg0)?;
                if !self.nodes.contains_key(&path) {
                    return Err("ENOENT");
                }
                let prefix = format!("{path}/");
                self.nodes.retain(|k, _| k != &path && !k.starts_with(&prefix));
                self.fire(&path, out);
                b"OK\0".to_vec()
            }
            xs::XS_GET_PERMS => {
                if !self.nodes.contains_key(&self.absolute(&arg0)?) {
                    return Err("ENOENT");
                }
                format!("n{}\0", self.domid).into_bytes()
            }
            xs::XS_SET_PERMS => b"OK\0".to_vec(),
            xs::XS_WATCH => {
                let token = args.get(1).cloned().unwrap_or_default();
                self.absolute(&arg0)?;
                if self.watches.iter().any(|(p, t)| p == &arg0 && t == &token) {
                    return Err("EEXIST");
                }
                if self.watches.len() >= WATCH_QUOTA {
                    return Err("E2BIG");
                }
                self.watches.push((arg0.clone(), token.clone()));
                // A new watch fires once straight away.
                let mut p = arg0.into_bytes();
                p.push(0);
                p.extend_from_slice(token.as_bytes());
                p.push(0);
                out.push(Reply { typ: xs::XS_WATCH_EVENT, req_id: 0, tx_id: 0, payload: p });
                b"OK\0".to_vec()
            }
            xs::XS_UNWATCH => {
                let token = args.get(1).cloned().unwrap_or_default();
                self.watches.retain(|(p, t)| !(p == &arg0 && t == &token));
                b"OK\0".to_vec()
            }
            xs::XS_RESET_WATCHES => {
                self.watches.clear();
                b"OK\0".to_vec()
            }
            xs::XS_TRANSACTION_START => {
                let id = self.next_tx;
                self.next_tx = self.next_tx.wrapping_add(1).max(1);
                format!("{id}\0").into_bytes()
            }
            xs::XS_TRANSACTION_END => b"OK\0".to_vec(),
            xs::XS_GET_DOMAIN_PATH => {
                format!("/local/domain/{}\0", arg0.parse::<u16>().map_err(|_| "EINVAL")?).into_bytes()
            }
            _ => return Err("ENOSYS"),
        })
    }

    /// Handles one request; returns the reply first, then any watch events it caused.
    pub fn handle(&mut self, typ: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<Reply> {
        let mut events = Vec::new();
        let reply = match self.request(typ, payload, &mut events) {
            Ok(p) => Reply { typ, req_id, tx_id, payload: p },
            Err(e) => {
                let mut p = e.as_bytes().to_vec();
                p.push(0);
                events.clear();
                Reply { typ: xs::XS_ERROR, req_id, tx_id, payload: p }
            }
        };
        let mut out = Vec::with_capacity(1 + events.len());
        out.push(reply);
        out.extend(events);
        out
    }
}

/// Serialises a reply as the wire header plus payload.
pub fn encode(r: &Reply) -> Vec<u8> {
    let h = XsdSockmsg { typ: r.typ, req_id: r.req_id, tx_id: r.tx_id, len: r.payload.len() as u32 };
    let mut v = Vec::with_capacity(HEADER_SIZE + r.payload.len());
    v.extend_from_slice(&h.to_bytes());
    v.extend_from_slice(&r.payload);
    v
}

/// What one [`Conn::service`] pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Serviced {
    /// Requests were consumed or replies produced: signal the client.
    pub notify: bool,
    /// The connection was dropped on this pass, and why.
    pub dropped: Option<&'static str>,
}

/// One client's connection: its store, the request being assembled, and the output not yet in the ring.
pub struct Conn {
    /// The store it serves.
    pub store: Store,
    /// Header and payload of the request being assembled, across ring fills.
    partial: Vec<u8>,
    /// Encoded replies and events waiting for room in the response ring (at most [`OUTPUT_MAX`] bytes).
    out: VecDeque<u8>,
    /// Dropped for a protocol error (`XENSTORE_ERROR_*`): not served any more.
    broken: Option<u32>,
    /// Watch events dropped because the output queue was full.
    pub dropped_events: u64,
}

impl Conn {
    /// A fresh connection to `store`.
    pub fn new(store: Store) -> Self {
        Self { store, partial: Vec::new(), out: VecDeque::new(), broken: None, dropped_events: 0 }
    }

    /// Bytes of output queued.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// The `XENSTORE_ERROR_*` it was dropped for, if it was.
    pub fn broken(&self) -> Option<u32> {
        self.broken
    }

    /// Whether a pass would do anything: requests in the ring or output waiting.
    pub fn has_work(&self, r: &impl RingPage) -> bool {
        self.broken.is_none() && (r.load(ring::REQ_CONS) != r.load(ring::REQ_PROD) || !self.out.is_empty())
    }

    fn fail(&mut self, r: &impl RingPage, error: u32, why: &'static str) -> Serviced {
        self.broken = Some(error);
        self.partial = Vec::new();
        self.out = VecDeque::new();
        r.store(ring::ERROR, error);
        Serviced { notify: true, dropped: Some(why) }
    }

    fn queue(&mut self, replies: Vec<Reply>) {
        for (i, r) in replies.iter().enumerate() {
            let bytes = encode(r);
            // The reply itself always fits (requests stop at OUTPUT_STOP); events beyond the bound are dropped.
            if i > 0 && self.out.len() + bytes.len() > OUTPUT_MAX {
                self.dropped_events += 1;
                continue;
            }
            self.out.extend(bytes);
        }
    }

    /// One pass over the ring: takes at most one ring's worth of request bytes (indexes read once), answers
    /// the requests completed, and moves queued output into the response ring as far as it has room.
    pub fn service(&mut self, r: &impl RingPage) -> Serviced {
        if self.broken.is_some() {
            return Serviced::default();
        }
        let mut done = Serviced::default();
        let cons = r.load(ring::REQ_CONS);
        let prod = r.load(ring::REQ_PROD);
        let avail = prod.wrapping_sub(cons);
        if avail > ring::RING_SIZE {
            return self.fail(r, ring::ERROR_RINGIDX, "request ring indexes out of range");
        }
        let mut taken = 0u32;
        while taken < avail && self.out.len() < OUTPUT_STOP {
            let want = if self.partial.len() < HEADER_SIZE {
                HEADER_SIZE - self.partial.len()
            } else {
                HEADER_SIZE + self.header().len as usize - self.partial.len()
            };
            let n = (want as u32).min(avail - taken);
            for i in 0..n {
                let idx = cons.wrapping_add(taken + i) & (ring::RING_SIZE - 1);
                self.partial.push(r.read(ring::REQ + idx as usize));
            }
            taken += n;
            if self.partial.len() < HEADER_SIZE {
                continue;
            }
            let h = self.header();
            if h.len > XENSTORE_PAYLOAD_MAX {
                r.store(ring::REQ_CONS, cons.wrapping_add(taken));
                return self.fail(r, ring::ERROR_PROTO, "request longer than XENSTORE_PAYLOAD_MAX");
            }
            if self.partial.len() == HEADER_SIZE + h.len as usize {
                let replies = self.store.handle(h.typ, h.req_id, h.tx_id, &self.partial[HEADER_SIZE..]);
                self.partial.clear();
                self.queue(replies);
            }
        }
        if taken > 0 {
            r.store(ring::REQ_CONS, cons.wrapping_add(taken));
            done.notify = true;
        }
        let rcons = r.load(ring::RSP_CONS);
        let mut rprod = r.load(ring::RSP_PROD);
        let used = rprod.wrapping_sub(rcons);
        if used > ring::RING_SIZE {
            return self.fail(r, ring::ERROR_RINGIDX, "response ring indexes out of range");
        }
        let n = ((ring::RING_SIZE - used) as usize).min(self.out.len());
        for b in self.out.drain(..n) {
            r.write(ring::RSP + (rprod & (ring::RING_SIZE - 1)) as usize, b);
            rprod = rprod.wrapping_add(1);
        }
        if n > 0 {
            r.store(ring::RSP_PROD, rprod);
            done.notify = true;
        }
        done
    }

    fn header(&self) -> XsdSockmsg {
        let mut h = [0u8; HEADER_SIZE];
        h.copy_from_slice(&self.partial[..HEADER_SIZE]);
        XsdSockmsg::from_bytes(&h)
    }
}

#[cfg(test)]
mod tests;
