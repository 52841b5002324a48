use super::*;

struct T {
    s: Store,
}

/// A reply's payload, or its error name.
fn payload(out: &Output, conn: ConnId) -> Result<Vec<u8>, String> {
    let (_, m) = out.msgs.iter().find(|(c, m)| *c == conn && m.typ != typ::WATCH_EVENT).expect("a reply");
    if m.typ == typ::ERROR {
        Err(String::from_utf8(m.payload.strip_suffix(&[0]).unwrap().to_vec()).unwrap())
    } else {
        Ok(m.payload.clone())
    }
}

fn events(out: &Output, conn: ConnId) -> Vec<String> {
    out.msgs
        .iter()
        .filter(|(c, m)| *c == conn && m.typ == typ::WATCH_EVENT)
        .map(|(_, m)| String::from_utf8_lossy(&m.payload).replace('\0', "|"))
        .collect()
}

impl T {
    fn new() -> T {
        T { s: Store::default() }
    }

    fn req(&mut self, conn: ConnId, ty: u32, tx: u32, payload: &[u8]) -> Output {
        self.s.handle(conn, &Msg::new(ty, 9, tx, payload.to_vec()))
    }

    fn ok(&mut self, conn: ConnId, ty: u32, payload: &[u8]) -> Vec<u8> {
        let out = self.req(conn, ty, 0, payload);
        payload_of(&out, conn).unwrap_or_else(|e| panic!("type {ty} {:?}: {e}", String::from_utf8_lossy(payload)))
    }

    fn err(&mut self, conn: ConnId, ty: u32, payload: &[u8]) -> String {
        let out = self.req(conn, ty, 0, payload);
        payload_of(&out, conn).expect_err("an error")
    }

    fn write(&mut self, conn: ConnId, path: &str, value: &str) {
        self.ok(conn, typ::WRITE, format!("{path}\0{value}").as_bytes());
    }
}

fn payload_of(out: &Output, conn: ConnId) -> Result<Vec<u8>, String> {
    payload(out, conn)
}

#[test]
fn read_write_mkdir_directory_rm() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    t.write(d0, "/local/domain/0/name", "Domain-0");
    assert_eq!(t.ok(d0, typ::READ, b"name\0"), b"Domain-0");
    assert_eq!(t.ok(d0, typ::READ, b"/local/domain/0/name\0"), b"Domain-0");
    // Intermediate nodes are created empty.
    t.write(d0, "/a/b/c", "v");
    assert_eq!(t.ok(d0, typ::READ, b"/a/b\0"), b"");
    assert_eq!(t.ok(d0, typ::DIRECTORY, b"/a\0"), b"b\0");
    assert_eq!(t.ok(d0, typ::MKDIR, b"/a/d\0"), b"OK\0");
    assert_eq!(t.ok(d0, typ::MKDIR, b"/a/d\0"), b"OK\0");
    assert_eq!(t.ok(d0, typ::DIRECTORY, b"/a\0"), b"b\0d\0");
    // A value may hold NULs.
    t.ok(d0, typ::WRITE, b"/bin\0x\0y");
    assert_eq!(t.ok(d0, typ::READ, b"/bin\0"), b"x\0y");
    assert_eq!(t.err(d0, typ::READ, b"/nope\0"), "ENOENT");
    assert_eq!(t.err(d0, typ::DIRECTORY, b"/nope\0"), "ENOENT");
    assert_eq!(t.ok(d0, typ::RM, b"/a\0"), b"OK\0");
    assert_eq!(t.err(d0, typ::READ, b"/a/b/c\0"), "ENOENT");
    // Removing a missing node is fine while its parent exists.
    assert_eq!(t.ok(d0, typ::RM, b"/a\0"), b"OK\0");
    assert_eq!(t.err(d0, typ::RM, b"/a/b\0"), "ENOENT");
    assert_eq!(t.err(d0, typ::RM, b"/\0"), "EINVAL");
    assert_eq!(t.ok(d0, typ::GET_DOMAIN_PATH, b"7\0"), b"/local/domain/7\0");
}

#[test]
fn malformed_requests_get_errors() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    assert_eq!(t.err(d0, typ::READ, b""), "EINVAL");
    assert_eq!(t.err(d0, typ::READ, b"\xff\xfe\0"), "EINVAL");
    assert_eq!(t.err(d0, typ::READ, b"a//b\0"), "EINVAL");
    assert_eq!(t.err(d0, typ::WRITE, b"/novalue"), "EINVAL");
    assert_eq!(t.err(d0, typ::WATCH, b"/x\0"), "EINVAL");
    assert_eq!(t.err(d0, typ::GET_DOMAIN_PATH, b"x\0"), "EINVAL");
    assert_eq!(t.err(d0, typ::SET_PERMS, b"/local\0q1\0"), "EINVAL");
    assert_eq!(t.err(d0, typ::SET_PERMS, b"/local\0"), "EINVAL");
    assert_eq!(t.err(d0, typ::TRANSACTION_END, b"X\0"), "EINVAL");
    assert_eq!(t.err(d0, 99, b"x\0"), "EINVAL");
    assert_eq!(t.err(d0, typ::WATCH_EVENT, b"x\0t\0"), "EINVAL");
    assert_eq!(t.err(d0, typ::ERROR, b"EINVAL\0"), "EINVAL");
}

#[test]
fn permissions() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    let d5 = t.s.connect(5, false);
    let d6 = t.s.connect(6, false);
    t.ok(d0, typ::MKDIR, b"/local/domain/5\0");
    t.ok(d0, typ::SET_PERMS, b"/local/domain/5\0n5\0r0\0");
    // The domain may write its home; what it creates belongs to it and inherits the rest.
    t.write(d5, "data/x", "1");
    assert_eq!(t.ok(d0, typ::GET_PERMS, b"/local/domain/5/data/x\0"), b"n5\0r0\0");
    // Others can neither read nor create there.
    assert_eq!(t.err(d6, typ::READ, b"/local/domain/5/data/x\0"), "EACCES");
    assert_eq!(t.err(d6, typ::WRITE, b"/local/domain/5/y\0v"), "EACCES");
    assert_eq!(t.err(d6, typ::DIRECTORY, b"/local/domain/5\0"), "EACCES");
    assert_eq!(t.err(d6, typ::WRITE, b"/tool/z\0v"), "EACCES");
    // Granting read lets 6 read but not write.
    t.ok(d5, typ::SET_PERMS, b"data/x\0n5\0r6\0");
    assert_eq!(t.ok(d6, typ::READ, b"/local/domain/5/data/x\0"), b"1");
    assert_eq!(t.err(d6, typ::WRITE, b"/local/domain/5/data/x\0v"), "EACCES");
    // Only the owner changes permissions, and it may not give the node away.
    assert_eq!(t.err(d6, typ::SET_PERMS, b"/local/domain/5/data/x\0b6\0"), "EACCES");
    assert_eq!(t.err(d5, typ::SET_PERMS, b"data/x\0n6\0"), "EPERM");
    // dom0 (privileged) may do anything.
    assert_eq!(t.ok(d0, typ::SET_PERMS, b"/local/domain/5/data/x\0n6\0"), b"OK\0");
    assert_eq!(t.ok(d6, typ::READ, b"/local/domain/5/data/x\0"), b"1");
    // Privileged-only requests.
    assert_eq!(t.err(d5, typ::INTRODUCE, b"7\x001\x002\0"), "EACCES");
    assert_eq!(t.err(d5, typ::RELEASE, b"7\0"), "EACCES");
    assert_eq!(t.err(d5, typ::SET_TARGET, b"7\x005\0"), "EACCES");
    assert_eq!(t.err(d5, typ::CONTROL, b"print\0x\0"), "EACCES");
}

#[test]
fn a_target_acts_with_its_targets_rights() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    let stub = t.s.connect(8, false);
    t.ok(d0, typ::MKDIR, b"/local/domain/5\0");
    t.ok(d0, typ::SET_PERMS, b"/local/domain/5\0n5\0");
    assert_eq!(t.err(stub, typ::READ, b"/local/domain/5\0"), "EACCES");
    t.ok(d0, typ::SET_TARGET, b"8\x005\0");
    assert_eq!(t.ok(stub, typ::READ, b"/local/domain/5\0"), b"");
}

#[test]
fn watches() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    let d5 = t.s.connect(5, false);
    t.ok(d0, typ::MKDIR, b"/local/domain/5\0");
    t.ok(d0, typ::SET_PERMS, b"/local/domain/5\0n5\0");
    // The initial event comes straight after the reply, with the path as given.
    let out = t.req(d5, typ::WATCH, 0, b"control\0tok\0");
    assert_eq!(payload(&out, d5).unwrap(), b"OK\0");
    assert_eq!(events(&out, d5), vec!["control|tok|"]);
    assert_eq!(t.err(d5, typ::WATCH, b"control\0tok\0"), "EEXIST");
    // A write below fires, relative to the home as the watch was given.
    let out = t.req(d0, typ::WRITE, 0, b"/local/domain/5/control/shutdown\0poweroff");
    assert_eq!(events(&out, d5), vec!["control/shutdown|tok|"]);
    // A sibling does not.
    let out = t.req(d0, typ::WRITE, 0, b"/local/domain/5/controlx\0y");
    assert!(events(&out, d5).is_empty());
    // Removing an ancestor fires watches below it, with their own path.
    let w = t.s.connect(0, true);
    t.req(w, typ::WATCH, 0, b"/local/domain/5/control/shutdown\0abs\0");
    let out = t.req(d0, typ::RM, 0, b"/local/domain/5\0");
    assert_eq!(events(&out, w), vec!["/local/domain/5/control/shutdown|abs|"]);
    assert_eq!(events(&out, d5), vec!["control|tok|"]);
    assert_eq!(t.ok(d5, typ::UNWATCH, b"control\0tok\0"), b"OK\0");
    assert_eq!(t.err(d5, typ::UNWATCH, b"control\0tok\0"), "ENOENT");
    // A domain does not hear of nodes it cannot read.
    let d6 = t.s.connect(6, false);
    t.req(d6, typ::WATCH, 0, b"/tool\0t6\0");
    let out = t.req(d0, typ::WRITE, 0, b"/tool/secret\0x");
    assert!(events(&out, d6).is_empty());
    // RESET_WATCHES drops them all.
    t.ok(d0, typ::WATCH, b"/x\0a\0");
    t.ok(d0, typ::RESET_WATCHES, b"");
    assert_eq!(t.s.watch_count(d0), 0);
}

#[test]
fn special_watches_and_domains() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    let d5 = t.s.connect(5, false);
    t.ok(d0, typ::WATCH, b"@introduceDomain\0i\0");
    t.ok(d0, typ::WATCH, b"@releaseDomain\0r\0");
    t.ok(d5, typ::WATCH, b"@releaseDomain\0r5\0");
    assert_eq!(t.ok(d0, typ::IS_DOMAIN_INTRODUCED, b"3\0"), b"F\0");
    let out = t.req(d0, typ::INTRODUCE, 0, b"3\x0012345\x007\0");
    assert_eq!(out.effects, vec![Effect::Introduce { domid: 3, mfn: 12345, port: 7 }]);
    assert_eq!(events(&out, d0), vec!["@introduceDomain|i|"]);
    assert_eq!(t.ok(d0, typ::IS_DOMAIN_INTRODUCED, b"3\0"), b"T\0");
    assert_eq!(t.ok(d0, typ::IS_DOMAIN_INTRODUCED, b"0\0"), b"T\0");
    assert_eq!(t.err(d0, typ::INTRODUCE, b"3\x0012345\x007\0"), "EEXIST");
    assert_eq!(t.err(d0, typ::INTRODUCE, b"32752\x001\x001\0"), "EINVAL");
    assert_eq!(t.ok(d0, typ::RESUME, b"3\0"), b"OK\0");
    let out = t.req(d0, typ::RELEASE, 0, b"3\0");
    assert_eq!(out.effects, vec![Effect::Release { domid: 3 }]);
    assert_eq!(events(&out, d0), vec!["@releaseDomain|r|"]);
    assert!(events(&out, d5).is_empty(), "unprivileged domains are not told of other domains");
    assert_eq!(t.err(d0, typ::RELEASE, b"3\0"), "ENOENT");
    let out = t.req(d0, typ::CONTROL, 0, b"print\0hello\0");
    assert_eq!(out.effects, vec![Effect::Log("hello".into())]);
}

#[test]
fn transactions_commit_abort_and_conflict() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    let other = t.s.connect(0, true);
    t.write(d0, "/a", "0");
    let id: u32 =
        String::from_utf8(t.ok(d0, typ::TRANSACTION_START, b"")).unwrap().trim_end_matches('\0').parse().unwrap();
    assert_ne!(id, 0);
    // Writes inside are invisible outside until commit.
    let out = t.req(d0, typ::WRITE, id, b"/a\x001");
    assert_eq!(payload(&out, d0).unwrap(), b"OK\0");
    assert_eq!(t.ok(other, typ::READ, b"/a\0"), b"0");
    assert_eq!(payload(&t.req(d0, typ::READ, id, b"/a\0"), d0).unwrap(), b"1");
    let w = t.s.connect(0, true);
    t.req(w, typ::WATCH, 0, b"/a\0t\0");
    let out = t.req(d0, typ::TRANSACTION_END, id, b"T\0");
    assert_eq!(payload(&out, d0).unwrap(), b"OK\0");
    assert_eq!(events(&out, w), vec!["/a|t|"], "watches fire at commit");
    assert_eq!(t.ok(other, typ::READ, b"/a\0"), b"1");
    // A transaction that reads a directory and creates nodes below it commits (what xenconsoled does for
    // console/tty, and libxl for a new domain's tree); a concurrent removal of that directory makes it EAGAIN.
    let tx = String::from_utf8(t.ok(d0, typ::TRANSACTION_START, b"")).unwrap().trim_end_matches('\0').parse().unwrap();
    assert_eq!(payload(&t.req(d0, typ::READ, tx, b"/a\0"), d0).unwrap(), b"1");
    assert_eq!(payload(&t.req(d0, typ::WRITE, tx, b"/a/tty\0/dev/pts/3"), d0).unwrap(), b"OK\0");
    assert_eq!(payload(&t.req(d0, typ::WRITE, tx, b"/a/x/y\0z"), d0).unwrap(), b"OK\0");
    assert_eq!(payload(&t.req(d0, typ::TRANSACTION_END, tx, b"T\0"), d0).unwrap(), b"OK\0");
    assert_eq!(t.ok(other, typ::READ, b"/a/tty\0"), b"/dev/pts/3");
    assert_eq!(t.ok(other, typ::READ, b"/a/x/y\0"), b"z");
    let tx = String::from_utf8(t.ok(d0, typ::TRANSACTION_START, b"")).unwrap().trim_end_matches('\0').parse().unwrap();
    t.req(d0, typ::READ, tx, b"/a\0");
    t.req(d0, typ::WRITE, tx, b"/a/late\0x");
    t.ok(other, typ::RM, b"/a\0");
    assert_eq!(payload(&t.req(d0, typ::TRANSACTION_END, tx, b"T\0"), d0).unwrap_err(), "EAGAIN");
    assert_eq!(t.err(other, typ::READ, b"/a\0"), "ENOENT");
    t.write(d0, "/a", "1");
    // A conflicting write in between makes the commit fail with EAGAIN, and nothing of it lands.
    let id2 = String::from_utf8(t.ok(d0, typ::TRANSACTION_START, b"")).unwrap().trim_end_matches('\0').parse().unwrap();
    t.req(d0, typ::READ, id2, b"/a\0");
    t.req(d0, typ::WRITE, id2, b"/b\0x");
    t.write(other, "/a", "2");
    assert_eq!(payload(&t.req(d0, typ::TRANSACTION_END, id2, b"T\0"), d0).unwrap_err(), "EAGAIN");
    assert_eq!(t.err(other, typ::READ, b"/b\0"), "ENOENT");
    // A listing conflicts with a concurrent create below it.
    let id3 = String::from_utf8(t.ok(d0, typ::TRANSACTION_START, b"")).unwrap().trim_end_matches('\0').parse().unwrap();
    t.req(d0, typ::DIRECTORY, id3, b"/\0");
    t.write(other, "/new", "x");
    assert_eq!(payload(&t.req(d0, typ::TRANSACTION_END, id3, b"T\0"), d0).unwrap_err(), "EAGAIN");
    // Unrelated concurrent writes do not conflict (creating a sibling would: both change the parent); removes
    // inside a transaction apply at commit.
    t.write(other, "/u", "");
    let id4 = String::from_utf8(t.ok(d0, typ::TRANSACTION_START, b"")).unwrap().trim_end_matches('\0').parse().unwrap();
    t.req(d0, typ::RM, id4, b"/new\0");
    t.write(other, "/u/x", "x");
    assert_eq!(payload(&t.req(d0, typ::TRANSACTION_END, id4, b"T\0"), d0).unwrap(), b"OK\0");
    assert_eq!(t.err(other, typ::READ, b"/new\0"), "ENOENT");
    // Abort drops the changes; an unknown or ended transaction is ENOENT; nesting is EBUSY.
    let id5 = String::from_utf8(t.ok(d0, typ::TRANSACTION_START, b"")).unwrap().trim_end_matches('\0').parse().unwrap();
    t.req(d0, typ::WRITE, id5, b"/aborted\0x");
    assert_eq!(payload(&t.req(d0, typ::TRANSACTION_END, id5, b"F\0"), d0).unwrap(), b"OK\0");
    assert_eq!(t.err(other, typ::READ, b"/aborted\0"), "ENOENT");
    assert_eq!(payload(&t.req(d0, typ::TRANSACTION_END, id5, b"T\0"), d0).unwrap_err(), "ENOENT");
    assert_eq!(payload(&t.req(d0, typ::READ, 999, b"/a\0"), d0).unwrap_err(), "ENOENT");
    assert_eq!(payload(&t.req(d0, typ::TRANSACTION_START, 5, b""), d0).unwrap_err(), "EBUSY");
    // Another connection cannot use this one's transaction.
    let id6: u32 =
        String::from_utf8(t.ok(d0, typ::TRANSACTION_START, b"")).unwrap().trim_end_matches('\0').parse().unwrap();
    assert_eq!(payload(&t.req(other, typ::READ, id6, b"/a\0"), other).unwrap_err(), "ENOENT");
}

#[test]
fn quotas() {
    let quota = Quota { entries: 10, watches: 3, transactions: 2, node_size: 16, perms: 2 };
    let mut t = T { s: Store::new(quota) };
    let d0 = t.s.connect(0, true);
    let d5 = t.s.connect(5, false);
    t.ok(d0, typ::MKDIR, b"/local/domain/5\0");
    t.ok(d0, typ::SET_PERMS, b"/local/domain/5\0n5\0");
    // Node size.
    assert_eq!(t.err(d5, typ::WRITE, format!("x\0{}", "v".repeat(17)).as_bytes()), "ENOSPC");
    t.write(d5, "x", &"v".repeat(16));
    // Entries: it owns its home and x now; 8 more fit, then no more.
    for i in 0..8 {
        t.write(d5, &format!("n{i}"), "");
    }
    assert_eq!(t.err(d5, typ::WRITE, b"n8\0"), "ENOSPC");
    assert_eq!(t.err(d5, typ::MKDIR, b"deep/er\0"), "ENOSPC");
    // Removing frees room.
    t.ok(d5, typ::RM, b"n0\0");
    t.write(d5, "n8", "");
    // Watches.
    for i in 0..3 {
        t.ok(d5, typ::WATCH, format!("w{i}\0t\0").as_bytes());
    }
    assert_eq!(t.err(d5, typ::WATCH, b"w3\0t\0"), "E2BIG");
    // Transactions.
    t.ok(d5, typ::TRANSACTION_START, b"");
    t.ok(d5, typ::TRANSACTION_START, b"");
    assert_eq!(t.err(d5, typ::TRANSACTION_START, b""), "ENOSPC");
    // Permission lists.
    assert_eq!(t.err(d5, typ::SET_PERMS, b"x\0n5\0r1\0r2\0"), "ENOSPC");
    // None of it binds dom0.
    for i in 0..20 {
        t.write(d0, &format!("/d0/{i}"), &"v".repeat(100));
    }
}

#[test]
fn directory_size_and_parts() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    // 300 names of 20 bytes: 6300 bytes of listing, more than one payload.
    for i in 0..300 {
        t.ok(d0, typ::MKDIR, format!("/big/{i:020}\0").as_bytes());
    }
    assert_eq!(t.err(d0, typ::DIRECTORY, b"/big\0"), "E2BIG");
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        let p = t.ok(d0, typ::DIRECTORY_PART, format!("/big\0{offset}\0").as_bytes());
        assert!(p.len() <= PAYLOAD_MAX);
        let mut parts: Vec<&[u8]> = p.split(|&b| b == 0).collect();
        parts.remove(0); // the generation
        let done = p.ends_with(&[0, 0]);
        for n in parts.iter().filter(|n| !n.is_empty()) {
            offset += n.len() + 1;
            names.push(String::from_utf8(n.to_vec()).unwrap());
        }
        if done {
            break;
        }
    }
    assert_eq!(names.len(), 300);
    assert_eq!(names[299], format!("{:020}", 299));
    assert_eq!(t.err(d0, typ::DIRECTORY_PART, b"/big\x0099999\0"), "EINVAL");
}

#[test]
fn disconnect_drops_watches_and_transactions() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    let c = t.s.connect(0, true);
    t.ok(c, typ::WATCH, b"/x\0t\0");
    t.ok(c, typ::TRANSACTION_START, b"");
    t.s.disconnect(c);
    let out = t.req(d0, typ::WRITE, 0, b"/x\0v");
    assert!(events(&out, c).is_empty());
    assert!(t.s.handle(c, &Msg::new(typ::READ, 1, 0, b"/x\0".to_vec())).msgs.is_empty());
}

#[test]
fn a_dead_domain_is_released_once() {
    let mut t = T::new();
    let d0 = t.s.connect(0, true);
    t.ok(d0, typ::WATCH, b"@releaseDomain\0r\0");
    t.ok(d0, typ::INTRODUCE, b"4\x001\x002\0");
    assert_eq!(t.s.introduced(), vec![4]);
    let out = t.s.fire_release_domain();
    assert!(out.effects.is_empty(), "a shutdown only tells the watchers");
    assert_eq!(events(&out, d0), vec!["@releaseDomain|r|"]);
    let out = t.s.domain_gone(4);
    assert_eq!(out.effects, vec![Effect::Release { domid: 4 }]);
    assert_eq!(events(&out, d0), vec!["@releaseDomain|r|"]);
    assert!(t.s.introduced().is_empty());
    let out = t.s.domain_gone(4);
    assert!(out.effects.is_empty() && out.msgs.is_empty(), "released already");
    assert_eq!(t.ok(d0, typ::IS_DOMAIN_INTRODUCED, b"4\0"), b"F\0");
}
