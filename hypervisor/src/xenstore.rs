//! Keel's built-in xenstore, serving the initial domain's xenbus ring until a xenstore daemon runs in dom0.
//!
//! It speaks the xs_wire protocol (xen-abi.md §2.4): READ, WRITE, MKDIR, RM, DIRECTORY, GET_PERMS, SET_PERMS,
//! WATCH (which fires once at once), UNWATCH, TRANSACTION_START/END (transactions apply directly: the store
//! has a single client), GET_DOMAIN_PATH, RESET_WATCHES; anything else is answered with `ENOSYS`. Relative
//! paths are under `/local/domain/<domid>`.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Message types (`XS_*`).
pub mod xs {
    pub const CONTROL: u32 = 0;
    pub const DIRECTORY: u32 = 1;
    pub const READ: u32 = 2;
    pub const GET_PERMS: u32 = 3;
    pub const WATCH: u32 = 4;
    pub const UNWATCH: u32 = 5;
    pub const TRANSACTION_START: u32 = 6;
    pub const TRANSACTION_END: u32 = 7;
    pub const GET_DOMAIN_PATH: u32 = 10;
    pub const WRITE: u32 = 11;
    pub const MKDIR: u32 = 12;
    pub const RM: u32 = 13;
    pub const SET_PERMS: u32 = 14;
    pub const WATCH_EVENT: u32 = 15;
    pub const ERROR: u32 = 16;
    pub const RESET_WATCHES: u32 = 21;
}

/// Largest payload (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;

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

impl Store {
    /// An empty store for domain `domid` (with its home directory and name).
    pub fn new(domid: u16, name: &str) -> Self {
        let mut s = Self { domid, nodes: BTreeMap::new(), watches: Vec::new(), next_tx: 1 };
        let home = format!("/local/domain/{domid}");
        s.write(&format!("{home}/name"), name);
        s.write(&format!("{home}/domid"), &domid.to_string());
        s
    }

    fn absolute(&self, path: &str) -> String {
        let p = if path.starts_with('/') { path.to_string() } else { format!("/local/domain/{}/{path}", self.domid) };
        let trimmed = p.trim_end_matches('/');
        if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.into()
        }
    }

    /// Creates `path` with `value`, and every missing parent with an empty value.
    pub fn write(&mut self, path: &str, value: &str) {
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            self.nodes.entry(at.clone()).or_default();
        }
        self.nodes.insert(path.into(), value.into());
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

    fn fire(&self, path: &str, out: &mut Vec<Reply>) {
        for (w, token) in &self.watches {
            let wabs = self.absolute(w);
            if path == wabs || path.starts_with(&format!("{wabs}/")) {
                let shown = if w.starts_with('/') { path.to_string() } else { self.relative(path) };
                let mut payload = Vec::new();
                payload.extend_from_slice(shown.as_bytes());
                payload.push(0);
                payload.extend_from_slice(token.as_bytes());
                payload.push(0);
                out.push(Reply { typ: xs::WATCH_EVENT, req_id: 0, tx_id: 0, payload });
            }
        }
    }

    fn relative(&self, path: &str) -> String {
        let home = format!("/local/domain/{}/", self.domid);
        path.strip_prefix(&home).unwrap_or(path).to_string()
    }

    /// Handles one request; returns the reply and any watch events it caused.
    pub fn handle(&mut self, typ: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        let ok = |p: &[u8]| Reply { typ, req_id, tx_id, payload: p.to_vec() };
        let err = |e: &str| {
            let mut p = e.as_bytes().to_vec();
            p.push(0);
            Reply { typ: xs::ERROR, req_id, tx_id, payload: p }
        };
        let args = strings(payload);
        let arg0 = args.first().cloned().unwrap_or_default();
        let reply = match typ {
            xs::READ => match self.nodes.get(&self.absolute(&arg0)) {
                Some(v) => ok(v.as_bytes()),
                None => err("ENOENT"),
            },
            xs::DIRECTORY => {
                let p = self.absolute(&arg0);
                if !self.nodes.contains_key(&p) && p != "/" {
                    err("ENOENT")
                } else {
                    let mut body = Vec::new();
                    for c in self.children(&p) {
                        body.extend_from_slice(c.as_bytes());
                        body.push(0);
                    }
                    ok(&body)
                }
            }
            xs::WRITE => {
                let split = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
                let path = self.absolute(&String::from_utf8_lossy(&payload[..split]));
                let value = String::from_utf8_lossy(payload.get(split + 1..).unwrap_or(&[])).into_owned();
                self.write(&path, &value);
                self.fire(&path, &mut out);
                ok(b"OK\0")
            }
            xs::MKDIR => {
                let path = self.absolute(&arg0);
                if !self.nodes.contains_key(&path) {
                    self.write(&path, "");
                    self.fire(&path, &mut out);
                }
                ok(b"OK\0")
            }
            xs::RM => {
                let path = self.absolute(&arg0);
                if !self.nodes.contains_key(&path) {
                    err("ENOENT")
                } else {
                    let prefix = format!("{path}/");
                    self.nodes.retain(|k, _| k != &path && !k.starts_with(&prefix));
                    self.fire(&path, &mut out);
                    ok(b"OK\0")
                }
            }
            xs::GET_PERMS => {
                if self.nodes.contains_key(&self.absolute(&arg0)) {
                    ok(format!("n{}\0", self.domid).as_bytes())
                } else {
                    err("ENOENT")
                }
            }
            xs::SET_PERMS => ok(b"OK\0"),
            xs::WATCH => {
                let token = args.get(1).cloned().unwrap_or_default();
                self.watches.push((arg0.clone(), token.clone()));
                let r = ok(b"OK\0");
                // A new watch fires once straight away.
                let mut p = arg0.into_bytes();
                p.push(0);
                p.extend_from_slice(token.as_bytes());
                p.push(0);
                out.push(r);
                out.push(Reply { typ: xs::WATCH_EVENT, req_id: 0, tx_id: 0, payload: p });
                return out;
            }
            xs::UNWATCH => {
                let token = args.get(1).cloned().unwrap_or_default();
                self.watches.retain(|(p, t)| !(p == &arg0 && t == &token));
                ok(b"OK\0")
            }
            xs::RESET_WATCHES => {
                self.watches.clear();
                ok(b"OK\0")
            }
            xs::TRANSACTION_START => {
                let id = self.next_tx;
                self.next_tx += 1;
                ok(format!("{id}\0").as_bytes())
            }
            xs::TRANSACTION_END => ok(b"OK\0"),
            xs::GET_DOMAIN_PATH => ok(format!("/local/domain/{arg0}\0").as_bytes()),
            _ => err("ENOSYS"),
        };
        out.insert(0, reply);
        out
    }
}

/// Offsets in `struct xenstore_domain_interface`.
pub mod ring {
    pub const REQ: usize = 0;
    pub const RSP: usize = 1024;
    pub const SIZE: u32 = 1024;
    pub const REQ_CONS: usize = 2048;
    pub const REQ_PROD: usize = 2052;
    pub const RSP_CONS: usize = 2056;
    pub const RSP_PROD: usize = 2060;
}

/// Serialises a reply as the wire header plus payload.
pub fn encode(r: &Reply) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + r.payload.len());
    for x in [r.typ, r.req_id, r.tx_id, r.payload.len() as u32] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&r.payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &mut Store, typ: u32, payload: &[u8]) -> Vec<Reply> {
        s.handle(typ, 7, 0, payload)
    }

    #[test]
    fn read_write_directory_rm() {
        let mut s = Store::new(0, "Domain-0");
        assert_eq!(req(&mut s, xs::READ, b"name\0")[0].payload, b"Domain-0");
        assert_eq!(
            req(&mut s, xs::READ, b"device\0")[0],
            Reply { typ: xs::ERROR, req_id: 7, tx_id: 0, payload: b"ENOENT\0".to_vec() }
        );
        req(&mut s, xs::WRITE, b"memory/target\x00524288");
        assert_eq!(req(&mut s, xs::READ, b"/local/domain/0/memory/target\0")[0].payload, b"524288");
        let d = req(&mut s, xs::DIRECTORY, b"/local/domain/0\0");
        assert_eq!(d[0].payload, b"domid\0memory\0name\0");
        assert_eq!(req(&mut s, xs::RM, b"memory\0")[0].payload, b"OK\0");
        assert_eq!(req(&mut s, xs::READ, b"memory/target\0")[0].typ, xs::ERROR);
        assert_eq!(req(&mut s, xs::GET_DOMAIN_PATH, b"3\0")[0].payload, b"/local/domain/3\0");
        assert_eq!(req(&mut s, 99, b"")[0].payload, b"ENOSYS\0");
    }

    #[test]
    fn watches_fire_at_once_and_on_writes_below() {
        let mut s = Store::new(0, "Domain-0");
        let r = req(&mut s, xs::WATCH, b"control/shutdown\0tok\0");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].typ, xs::WATCH_EVENT);
        assert_eq!(r[1].payload, b"control/shutdown\0tok\0");
        let r = req(&mut s, xs::WRITE, b"control/shutdown\0poweroff");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].payload, b"control/shutdown\0tok\0");
        let r = req(&mut s, xs::WRITE, b"control/other\0x");
        assert_eq!(r.len(), 1);
        req(&mut s, xs::UNWATCH, b"control/shutdown\0tok\0");
        assert_eq!(req(&mut s, xs::WRITE, b"control/shutdown\0reboot").len(), 1);
    }

    #[test]
    fn wire_encoding() {
        let e = encode(&Reply { typ: 2, req_id: 3, tx_id: 0, payload: b"ab".to_vec() });
        assert_eq!(e, [2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', b'b']);
    }
}
