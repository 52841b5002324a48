//! The store: a tree of nodes (value, permissions, generation), the connections that use it (each with its
//! domain, watches and open transactions), and the handling of every request type.
//!
//! Transactions work on a snapshot of the tree taken at `TRANSACTION_START`; every node they read, list or write
//! is recorded with the generation it had then, and `TRANSACTION_END` commits only if none of those nodes has
//! changed since (otherwise `EAGAIN`, and the client retries, as Linux's xenbus does). Adding or removing a child
//! changes the parent's generation, so a listing conflicts with a concurrent create or remove.

use crate::path::{self, canonical, watch_canonical};
use crate::perms::{Perm, Perms, Want};
use crate::wire::{typ, Msg, PAYLOAD_MAX};
use crate::XsError;
use std::collections::{BTreeMap, BTreeSet};

/// A connection: a domain's ring or one Unix-socket client.
pub type ConnId = u32;

/// Per-domain limits, as Xen's xenstored defaults (`-E`, `-W`, `-t`, `-S`, `-A` options). Privileged connections
/// are not limited, as in Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nodes a domain may own.
    pub entries: usize,
    /// Watches per connection.
    pub watches: usize,
    /// Open transactions per connection.
    pub transactions: usize,
    /// Bytes in one node's value.
    pub node_size: usize,
    /// Entries in one node's permission list.
    pub perms: usize,
}

impl Default for Quota {
    fn default() -> Self {
        Quota { entries: 1000, watches: 128, transactions: 10, node_size: 2048, perms: 5 }
    }
}

#[derive(Clone, Debug)]
struct Node {
    value: Vec<u8>,
    perms: Perms,
    generation: u64,
}

#[derive(Clone, Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir == "/" { "/".to_string() } else { format!("{dir}/") };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.len() > prefix.len() && !k[prefix.len()..].contains('/'))
            .map(|(k, _)| k[prefix.len()..].to_string())
            .collect()
    }

    fn subtree(&self, dir: &str) -> Vec<String> {
        self.nodes.keys().filter(|k| path::is_at_or_below(k, dir)).cloned().collect()
    }

    fn owned_by(&self, domid: u16) -> usize {
        self.nodes.values().filter(|n| n.perms.owner() == domid).count()
    }
}

/// A change that may fire watches.
#[derive(Clone, Debug)]
enum Change {
    /// Written, created or its permissions changed.
    Node(String),
    /// Removed (with what its permissions were).
    Removed(String, Perms),
    /// `@introduceDomain` / `@releaseDomain`.
    Special(&'static str),
}

#[derive(Clone, Debug)]
struct Watch {
    /// As the client gave it (relative or absolute, or `@…`).
    given: String,
    canon: String,
    token: Vec<u8>,
}

struct Tx {
    snapshot: Tree,
    /// Generation of every node the transaction touched, as it was at the start (None: it did not exist).
    accessed: BTreeMap<String, Option<u64>>,
    /// Nodes written, created or re-permissioned in the snapshot.
    written: BTreeSet<String>,
    /// Nodes removed in the snapshot (each with its subtree).
    removed: BTreeSet<String>,
    changes: Vec<Change>,
}

struct Conn {
    domid: u16,
    privileged: bool,
    watches: Vec<Watch>,
    txs: BTreeMap<u32, Tx>,
}

/// What the daemon must do besides sending messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `INTRODUCE`: connect to domain `domid`'s ring at `mfn`, notified through event channel `port`.
    Introduce { domid: u16, mfn: u64, port: u32 },
    /// `RELEASE`: drop domain `domid`'s ring.
    Release { domid: u16 },
    /// `CONTROL print`: a line for the daemon's log.
    Log(String),
}

/// The result of one request: messages to send (the reply to the requester first) and effects.
#[derive(Debug, Default)]
pub struct Output {
    pub msgs: Vec<(ConnId, Msg)>,
    pub effects: Vec<Effect>,
}

/// The whole store.
pub struct Store {
    tree: Tree,
    generation: u64,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    next_tx: u32,
    introduced: BTreeSet<u16>,
    targets: BTreeMap<u16, u16>,
    quota: Quota,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(Quota::default())
    }
}

type R<T> = Result<T, XsError>;

fn utf8(b: &[u8]) -> R<&str> {
    std::str::from_utf8(b).map_err(|_| XsError::Einval)
}

fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

/// The node operations, on the live tree or on a transaction's snapshot.
struct View<'a> {
    tree: &'a mut Tree,
    generation: &'a mut u64,
    accessed: Option<&'a mut BTreeMap<String, Option<u64>>>,
    written: Option<&'a mut BTreeSet<String>>,
    removed: Option<&'a mut BTreeSet<String>>,
    changes: Vec<Change>,
    domid: u16,
    privileged: bool,
    target: Option<u16>,
    quota: Quota,
}

impl View<'_> {
    fn touch(&mut self, p: &str) {
        if let Some(a) = self.accessed.as_deref_mut() {
            let g = self.tree.nodes.get(p).map(|n| n.generation);
            a.entry(p.to_string()).or_insert(g);
        }
    }

    fn bump(&mut self) -> u64 {
        *self.generation += 1;
        *self.generation
    }

    fn allowed(&self, perms: &Perms, want: Want) -> bool {
        self.privileged || perms.allows(self.domid, want) || self.target.is_some_and(|t| perms.allows(t, want))
    }

    fn node(&mut self, p: &str, want: Want) -> R<&Node> {
        self.touch(p);
        let n = self.tree.nodes.get(p).ok_or(XsError::Enoent)?;
        if !(self.privileged
            || n.perms.allows(self.domid, want)
            || self.target.is_some_and(|t| n.perms.allows(t, want)))
        {
            return Err(XsError::Eacces);
        }
        Ok(n)
    }

    fn mark_written(&mut self, p: &str) {
        if let Some(w) = self.written.as_deref_mut() {
            w.insert(p.to_string());
        }
    }

    fn read(&mut self, p: &str) -> R<Vec<u8>> {
        Ok(self.node(p, Want::Read)?.value.clone())
    }

    fn write(&mut self, p: &str, value: &[u8]) -> R<()> {
        if !self.privileged && value.len() > self.quota.node_size {
            return Err(XsError::Enospc);
        }
        if self.tree.nodes.contains_key(p) {
            self.node(p, Want::Write)?;
            let g = self.bump();
            let n = self.tree.nodes.get_mut(p).expect("checked above");
            n.value = value.to_vec();
            n.generation = g;
            self.mark_written(p);
            self.changes.push(Change::Node(p.to_string()));
            return Ok(());
        }
        self.create(p, value)
    }

    fn create(&mut self, p: &str, value: &[u8]) -> R<()> {
        // The missing chain, deepest first, up to the nearest node that exists.
        let mut missing = vec![p.to_string()];
        let mut at = path::parent(p);
        while let Some(a) = at {
            self.touch(a);
            if self.tree.nodes.contains_key(a) {
                break;
            }
            missing.push(a.to_string());
            at = path::parent(a);
        }
        let Some(existing) = at else {
            return Err(XsError::Enoent); // no root: cannot happen in a store made by `Store::new`
        };
        let parent_perms = self.tree.nodes[existing].perms.clone();
        if !self.allowed(&parent_perms, Want::Write) {
            return Err(XsError::Eacces);
        }
        if !self.privileged && self.tree.owned_by(self.domid) + missing.len() > self.quota.entries {
            return Err(XsError::Enospc);
        }
        let mut perms = parent_perms;
        if !self.privileged {
            perms.set_owner(self.domid);
        }
        let parent_gen = self.bump();
        if let Some(n) = self.tree.nodes.get_mut(existing) {
            n.generation = parent_gen;
        }
        for m in missing.iter().rev() {
            // Recorded as absent (before it exists here): a transaction's own new node is no conflict at commit.
            self.touch(m);
            let g = self.bump();
            let v = if m == p { value.to_vec() } else { Vec::new() };
            self.tree.nodes.insert(m.clone(), Node { value: v, perms: perms.clone(), generation: g });
            self.mark_written(m);
        }
        self.changes.push(Change::Node(p.to_string()));
        Ok(())
    }

    fn mkdir(&mut self, p: &str) -> R<()> {
        self.touch(p);
        if self.tree.nodes.contains_key(p) {
            return Ok(());
        }
        self.create(p, b"")
    }

    fn rm(&mut self, p: &str) -> R<()> {
        if p == "/" {
            return Err(XsError::Einval);
        }
        self.touch(p);
        if !self.tree.nodes.contains_key(p) {
            // Removing what is not there is fine while its parent exists (as in Xen).
            let parent = path::parent(p).expect("not the root");
            self.touch(parent);
            return if self.tree.nodes.contains_key(parent) { Ok(()) } else { Err(XsError::Enoent) };
        }
        let perms = self.node(p, Want::Write)?.perms.clone();
        for k in self.tree.subtree(p) {
            self.touch(&k);
            self.tree.nodes.remove(&k);
        }
        let parent = path::parent(p).expect("not the root").to_string();
        self.touch(&parent);
        let g = self.bump();
        if let Some(n) = self.tree.nodes.get_mut(&parent) {
            n.generation = g;
        }
        if let Some(r) = self.removed.as_deref_mut() {
            r.insert(p.to_string());
        }
        self.changes.push(Change::Removed(p.to_string(), perms));
        Ok(())
    }

    fn directory(&mut self, p: &str) -> R<Vec<String>> {
        self.node(p, Want::Read)?;
        Ok(self.tree.children(p))
    }

    fn get_perms(&mut self, p: &str) -> R<Perms> {
        Ok(self.node(p, Want::Read)?.perms.clone())
    }

    fn set_perms(&mut self, p: &str, perms: Perms) -> R<()> {
        if !self.privileged && perms.list().len() > self.quota.perms {
            return Err(XsError::Enospc);
        }
        let n = self.node(p, Want::Write)?;
        let owner = n.perms.owner();
        if !self.privileged {
            // Only the owner may change permissions, and it may not give the node away.
            if owner != self.domid && self.target != Some(owner) {
                return Err(XsError::Eacces);
            }
            if perms.owner() != owner {
                return Err(XsError::Eperm);
            }
        }
        let g = self.bump();
        let n = self.tree.nodes.get_mut(p).expect("checked above");
        n.perms = perms;
        n.generation = g;
        self.mark_written(p);
        self.changes.push(Change::Node(p.to_string()));
        Ok(())
    }
}

impl Store {
    /// A store holding the root, `/local`, `/local/domain` and `/tool` (owned by dom0, readable by no one else, as
    /// Xen's xenstored starts).
    pub fn new(quota: Quota) -> Store {
        let mut tree = Tree::default();
        for (g, p) in ["/", "/local", "/local/domain", "/tool"].into_iter().enumerate() {
            tree.nodes.insert(p.into(), Node { value: Vec::new(), perms: Perms::owned_by(0), generation: g as u64 });
        }
        Store {
            tree,
            generation: 4,
            conns: BTreeMap::new(),
            next_conn: 1,
            next_tx: 1,
            introduced: BTreeSet::new(),
            targets: BTreeMap::new(),
            quota,
        }
    }

    /// Opens a connection for domain `domid` (privileged: dom0's tools, or a domain dom0 trusts).
    pub fn connect(&mut self, domid: u16, privileged: bool) -> ConnId {
        let id = self.next_conn;
        self.next_conn = self.next_conn.wrapping_add(1).max(1);
        self.conns.insert(id, Conn { domid, privileged, watches: Vec::new(), txs: BTreeMap::new() });
        id
    }

    /// Closes a connection: its watches and open transactions go with it.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Number of nodes (for tests and `CONTROL`).
    pub fn len(&self) -> usize {
        self.tree.nodes.len()
    }

    /// Whether the store holds only what it starts with.
    pub fn is_empty(&self) -> bool {
        self.len() <= 4
    }

    /// Watches of a connection (for tests and resource checks).
    pub fn watch_count(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.watches.len())
    }

    /// Watches of every connection together.
    pub fn total_watches(&self) -> usize {
        self.conns.values().map(|c| c.watches.len()).sum()
    }

    /// The domains introduced (XS_INTRODUCE) and not released.
    pub fn introduced(&self) -> Vec<u16> {
        self.introduced.iter().copied().collect()
    }

    /// Domain `d` is gone (destroyed, or dying): as an XS_RELEASE of it, without a requester. Its effect is
    /// [`Effect::Release`] and `@releaseDomain` fires; nothing happens for a domain not introduced.
    pub fn domain_gone(&mut self, d: u16) -> Output {
        let mut out = Output::default();
        if self.introduced.remove(&d) {
            self.targets.remove(&d);
            out.effects.push(Effect::Release { domid: d });
            self.fire(&[Change::Special("@releaseDomain")], &mut out.msgs);
        }
        out
    }

    /// Fires `@releaseDomain` alone (a domain shut down: C xenstored tells the toolstack so, before it dies).
    pub fn fire_release_domain(&mut self) -> Output {
        let mut out = Output::default();
        self.fire(&[Change::Special("@releaseDomain")], &mut out.msgs);
        out
    }

    /// Handles one request from `conn`.
    pub fn handle(&mut self, conn: ConnId, msg: &Msg) -> Output {
        let mut out = Output::default();
        let (domid, privileged) = match self.conns.get(&conn) {
            Some(c) => (c.domid, c.privileged),
            None => return out,
        };
        let mut changes = Vec::new();
        let mut initial_event = None;
        let result = self.request(conn, domid, privileged, msg, &mut changes, &mut out.effects, &mut initial_event);
        let reply = match result {
            Ok(payload) => Msg::new(msg.typ, msg.req_id, msg.tx_id, payload),
            Err(e) => {
                let mut p = e.name().as_bytes().to_vec();
                p.push(0);
                Msg::new(typ::ERROR, msg.req_id, msg.tx_id, p)
            }
        };
        out.msgs.push((conn, reply));
        if let Some(ev) = initial_event {
            out.msgs.push((conn, ev));
        }
        self.fire(&changes, &mut out.msgs);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        conn: ConnId,
        domid: u16,
        privileged: bool,
        msg: &Msg,
        changes: &mut Vec<Change>,
        effects: &mut Vec<Effect>,
        initial_event: &mut Option<Msg>,
    ) -> R<Vec<u8>> {
        let args = msg.args();
        let arg = |i: usize| -> R<&str> { utf8(args.get(i).copied().ok_or(XsError::Einval)?) };
        let node_path = || -> R<String> { canonical(domid, arg(0)?) };
        let domid_arg = |i: usize| -> R<u16> { arg(i)?.parse().map_err(|_| XsError::Einval) };
        match msg.typ {
            typ::READ
            | typ::WRITE
            | typ::MKDIR
            | typ::RM
            | typ::DIRECTORY
            | typ::DIRECTORY_PART
            | typ::GET_PERMS
            | typ::SET_PERMS => {
                let p = node_path()?;
                self.node_op(conn, domid, privileged, msg, &p, changes)
            }
            typ::WATCH => {
                let (given, token) = (arg(0)?, args.get(1).copied().ok_or(XsError::Einval)?);
                let canon = watch_canonical(domid, given)?;
                let quota = self.quota.watches;
                let c = self.conns.get_mut(&conn).expect("connected");
                if c.watches.iter().any(|w| w.canon == canon && w.token == token) {
                    return Err(XsError::Eexist);
                }
                if !privileged && c.watches.len() >= quota {
                    return Err(XsError::E2big);
                }
                c.watches.push(Watch { given: given.to_string(), canon, token: token.to_vec() });
                // A new watch fires once at once, with the path as given.
                let mut p = given.as_bytes().to_vec();
                p.push(0);
                p.extend_from_slice(token);
                p.push(0);
                *initial_event = Some(Msg::new(typ::WATCH_EVENT, 0, 0, p));
                Ok(ok())
            }
            typ::UNWATCH => {
                let (given, token) = (arg(0)?, args.get(1).copied().ok_or(XsError::Einval)?);
                let canon = watch_canonical(domid, given)?;
                let c = self.conns.get_mut(&conn).expect("connected");
                let i = c.watches.iter().position(|w| w.canon == canon && w.token == token).ok_or(XsError::Enoent)?;
                c.watches.remove(i);
                Ok(ok())
            }
            typ::RESET_WATCHES => {
                let c = self.conns.get_mut(&conn).expect("connected");
                c.watches.clear();
                c.txs.clear();
                Ok(ok())
            }
            typ::TRANSACTION_START => {
                if msg.tx_id != 0 {
                    return Err(XsError::Ebusy);
                }
                let quota = self.quota.transactions;
                let snapshot = self.tree.clone();
                let mut id = self.next_tx;
                let c = self.conns.get_mut(&conn).expect("connected");
                if !privileged && c.txs.len() >= quota {
                    return Err(XsError::Enospc);
                }
                while id == 0 || c.txs.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                self.next_tx = id.wrapping_add(1);
                c.txs.insert(
                    id,
                    Tx {
                        snapshot,
                        accessed: BTreeMap::new(),
                        written: BTreeSet::new(),
                        removed: BTreeSet::new(),
                        changes: Vec::new(),
                    },
                );
                Ok(format!("{id}\0").into_bytes())
            }
            typ::TRANSACTION_END => {
                let commit = match arg(0)? {
                    "T" => true,
                    "F" => false,
                    _ => return Err(XsError::Einval),
                };
                let tx = self.conns.get_mut(&conn).expect("connected").txs.remove(&msg.tx_id).ok_or(XsError::Enoent)?;
                if commit {
                    self.commit(tx, changes)?;
                }
                Ok(ok())
            }
            typ::INTRODUCE => {
                if !privileged {
                    return Err(XsError::Eacces);
                }
                let d = domid_arg(0)?;
                let mfn: u64 = arg(1)?.parse().map_err(|_| XsError::Einval)?;
                let port: u32 = arg(2)?.parse().map_err(|_| XsError::Einval)?;
                if d == 0 || d >= keel_domid_first_reserved() {
                    return Err(XsError::Einval);
                }
                if !self.introduced.insert(d) {
                    return Err(XsError::Eexist);
                }
                effects.push(Effect::Introduce { domid: d, mfn, port });
                changes.push(Change::Special("@introduceDomain"));
                Ok(ok())
            }
            typ::RELEASE => {
                if !privileged {
                    return Err(XsError::Eacces);
                }
                let d = domid_arg(0)?;
                if !self.introduced.remove(&d) {
                    return Err(XsError::Enoent);
                }
                self.targets.remove(&d);
                effects.push(Effect::Release { domid: d });
                changes.push(Change::Special("@releaseDomain"));
                Ok(ok())
            }
            typ::RESUME => {
                if !privileged {
                    return Err(XsError::Eacces);
                }
                let d = domid_arg(0)?;
                if self.introduced.contains(&d) {
                    Ok(ok())
                } else {
                    Err(XsError::Enoent)
                }
            }
            typ::IS_DOMAIN_INTRODUCED => {
                let d = domid_arg(0)?;
                Ok(if d == 0 || self.introduced.contains(&d) { b"T\0".to_vec() } else { b"F\0".to_vec() })
            }
            typ::GET_DOMAIN_PATH => {
                let d = domid_arg(0)?;
                Ok(format!("{}\0", path::home(d)).into_bytes())
            }
            typ::SET_TARGET => {
                if !privileged {
                    return Err(XsError::Eacces);
                }
                let (d, t) = (domid_arg(0)?, domid_arg(1)?);
                self.targets.insert(d, t);
                Ok(ok())
            }
            typ::CONTROL => {
                if !privileged {
                    return Err(XsError::Eacces);
                }
                match arg(0)? {
                    "print" => {
                        effects.push(Effect::Log(arg(1).unwrap_or("").to_string()));
                        Ok(ok())
                    }
                    "check" => Ok(ok()),
                    "help" => Ok(b"check\nhelp\nprint <string>\n\0".to_vec()),
                    _ => Err(XsError::Einval),
                }
            }
            _ => Err(XsError::Einval),
        }
    }

    fn node_op(
        &mut self,
        conn: ConnId,
        domid: u16,
        privileged: bool,
        msg: &Msg,
        p: &str,
        changes: &mut Vec<Change>,
    ) -> R<Vec<u8>> {
        let target = self.targets.get(&domid).copied();
        let quota = self.quota;
        let mut tx = if msg.tx_id != 0 {
            let c = self.conns.get_mut(&conn).expect("connected");
            Some(c.txs.remove(&msg.tx_id).ok_or(XsError::Enoent)?)
        } else {
            None
        };
        let mut view = match tx.as_mut() {
            Some(t) => View {
                tree: &mut t.snapshot,
                generation: &mut self.generation,
                accessed: Some(&mut t.accessed),
                written: Some(&mut t.written),
                removed: Some(&mut t.removed),
                changes: Vec::new(),
                domid,
                privileged,
                target,
                quota,
            },
            None => View {
                tree: &mut self.tree,
                generation: &mut self.generation,
                accessed: None,
                written: None,
                removed: None,
                changes: Vec::new(),
                domid,
                privileged,
                target,
                quota,
            },
        };
        let args = msg.args();
        let result = match msg.typ {
            typ::READ => view.read(p),
            typ::WRITE => {
                // The value is everything after the path's NUL (it may hold NULs itself).
                let split = msg.payload.iter().position(|&b| b == 0).ok_or(XsError::Einval)?;
                view.write(p, &msg.payload[split + 1..]).map(|()| ok())
            }
            typ::MKDIR => view.mkdir(p).map(|()| ok()),
            typ::RM => view.rm(p).map(|()| ok()),
            typ::DIRECTORY => view.directory(p).and_then(|names| {
                let mut body = Vec::new();
                for n in names {
                    body.extend_from_slice(n.as_bytes());
                    body.push(0);
                }
                if body.len() > PAYLOAD_MAX {
                    Err(XsError::E2big)
                } else {
                    Ok(body)
                }
            }),
            typ::DIRECTORY_PART => (|| {
                let offset: usize =
                    utf8(args.get(1).copied().ok_or(XsError::Einval)?)?.parse().map_err(|_| XsError::Einval)?;
                let names = view.directory(p)?;
                let generation = view.tree.nodes.get(p).map_or(0, |n| n.generation);
                let mut all = Vec::new();
                for n in names {
                    all.extend_from_slice(n.as_bytes());
                    all.push(0);
                }
                if offset > all.len() {
                    return Err(XsError::Einval);
                }
                let mut body = format!("{generation}\0").into_bytes();
                let room = PAYLOAD_MAX - body.len() - 1;
                let rest = &all[offset..];
                if rest.len() <= room {
                    body.extend_from_slice(rest);
                    body.push(0); // the empty string that ends the list
                } else {
                    // Whole names only.
                    let cut = rest[..room].iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
                    body.extend_from_slice(&rest[..cut]);
                }
                Ok(body)
            })(),
            typ::GET_PERMS => view.get_perms(p).map(|perms| perms.encode()),
            typ::SET_PERMS => (|| {
                let list = args[1..].iter().map(|a| utf8(a).and_then(Perm::parse)).collect::<R<Vec<_>>>()?;
                view.set_perms(p, Perms::from_list(list)?).map(|()| ok())
            })(),
            _ => Err(XsError::Einval),
        };
        let new_changes = std::mem::take(&mut view.changes);
        drop(view);
        match tx {
            Some(mut t) => {
                t.changes.extend(new_changes);
                self.conns.get_mut(&conn).expect("connected").txs.insert(msg.tx_id, t);
            }
            None => changes.extend(new_changes),
        }
        result
    }

    fn commit(&mut self, tx: Tx, changes: &mut Vec<Change>) -> R<()> {
        for (p, g) in &tx.accessed {
            if self.tree.nodes.get(p).map(|n| n.generation) != *g {
                return Err(XsError::Eagain);
            }
        }
        for r in &tx.removed {
            for k in self.tree.subtree(r) {
                self.tree.nodes.remove(&k);
            }
        }
        for w in &tx.written {
            if let Some(n) = tx.snapshot.nodes.get(w) {
                self.generation += 1;
                let mut n = n.clone();
                n.generation = self.generation;
                self.tree.nodes.insert(w.clone(), n);
            }
        }
        // Parents whose children changed get a new generation too.
        let parents: BTreeSet<String> =
            tx.written.iter().chain(tx.removed.iter()).filter_map(|p| path::parent(p).map(String::from)).collect();
        for p in parents {
            self.generation += 1;
            if let Some(n) = self.tree.nodes.get_mut(&p) {
                n.generation = self.generation;
            }
        }
        changes.extend(tx.changes);
        Ok(())
    }

    /// Delivers the watch events `changes` cause.
    fn fire(&self, changes: &[Change], msgs: &mut Vec<(ConnId, Msg)>) {
        for ch in changes {
            for (&id, c) in &self.conns {
                for w in &c.watches {
                    let event_path = match ch {
                        Change::Special(name) => {
                            if !(c.privileged && w.canon == *name) {
                                continue;
                            }
                            name.to_string()
                        }
                        Change::Node(p) | Change::Removed(p, _) => {
                            if w.canon.starts_with('@') {
                                continue;
                            }
                            let p = p.as_str();
                            let at = if path::is_at_or_below(p, &w.canon) {
                                p.to_string()
                            } else if matches!(ch, Change::Removed(..)) && path::is_at_or_below(&w.canon, p) {
                                w.canon.clone()
                            } else {
                                continue;
                            };
                            if !c.privileged {
                                let perms = match ch {
                                    Change::Removed(_, perms) => Some(perms.clone()),
                                    _ => self.tree.nodes.get(p).map(|n| n.perms.clone()),
                                };
                                let target = self.targets.get(&c.domid).copied();
                                let readable = perms.is_some_and(|pm| {
                                    pm.allows(c.domid, Want::Read) || target.is_some_and(|t| pm.allows(t, Want::Read))
                                });
                                if !readable {
                                    continue;
                                }
                            }
                            path::shown(&at, c.domid, !w.given.starts_with('/'))
                        }
                    };
                    let mut payload = event_path.into_bytes();
                    payload.push(0);
                    payload.extend_from_slice(&w.token);
                    payload.push(0);
                    msgs.push((id, Msg::new(typ::WATCH_EVENT, 0, 0, payload)));
                }
            }
        }
    }
}

/// `DOMID_FIRST_RESERVED`: ids from here on name no real domain.
fn keel_domid_first_reserved() -> u16 {
    0x7ff0
}

#[cfg(test)]
mod tests;
