use super::*;
use crate::backend::TestRing;

fn req(s: &mut Store, typ: u32, payload: &[u8]) -> Vec<Reply> {
    s.handle(typ, 7, 0, payload)
}

fn err(r: &[Reply]) -> &[u8] {
    assert_eq!(r[0].typ, xs::XS_ERROR, "{r:?}");
    &r[0].payload
}

#[test]
fn read_write_directory_rm() {
    let mut s = Store::new(0, "Domain-0");
    assert_eq!(req(&mut s, xs::XS_READ, b"name\0")[0].payload, b"Domain-0");
    assert_eq!(
        req(&mut s, xs::XS_READ, b"device\0")[0],
        Reply { typ: xs::XS_ERROR, req_id: 7, tx_id: 0, payload: b"ENOENT\0".to_vec() }
    );
    req(&mut s, xs::XS_WRITE, b"memory/target\x00524288");
    assert_eq!(req(&mut s, xs::XS_READ, b"/local/domain/0/memory/target\0")[0].payload, b"524288");
    let d = req(&mut s, xs::XS_DIRECTORY, b"/local/domain/0\0");
    assert_eq!(d[0].payload, b"domid\0memory\0name\0");
    assert_eq!(req(&mut s, xs::XS_RM, b"memory\0")[0].payload, b"OK\0");
    assert_eq!(req(&mut s, xs::XS_READ, b"memory/target\0")[0].typ, xs::XS_ERROR);
    assert_eq!(req(&mut s, xs::XS_GET_DOMAIN_PATH, b"3\0")[0].payload, b"/local/domain/3\0");
    assert_eq!(req(&mut s, 99, b"")[0].payload, b"ENOSYS\0");
}

#[test]
fn watches_fire_at_once_and_on_writes_below() {
    let mut s = Store::new(0, "Domain-0");
    let r = req(&mut s, xs::XS_WATCH, b"control/shutdown\0tok\0");
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].typ, xs::XS_WATCH_EVENT);
    assert_eq!(r[1].payload, b"control/shutdown\0tok\0");
    let r = req(&mut s, xs::XS_WRITE, b"control/shutdown\0poweroff");
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].payload, b"control/shutdown\0tok\0");
    let r = req(&mut s, xs::XS_WRITE, b"control/other\0x");
    assert_eq!(r.len(), 1);
    req(&mut s, xs::XS_UNWATCH, b"control/shutdown\0tok\0");
    assert_eq!(req(&mut s, xs::XS_WRITE, b"control/shutdown\0reboot").len(), 1);
}

#[test]
fn wire_encoding() {
    let e = encode(&Reply { typ: 2, req_id: 3, tx_id: 0, payload: b"ab".to_vec() });
    assert_eq!(e, [2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', b'b']);
}

#[test]
fn watch_quota_answers_e2big() {
    let mut s = Store::new(0, "Domain-0");
    for i in 0..WATCH_QUOTA {
        let r = req(&mut s, xs::XS_WATCH, format!("w/{i}\0t\0").as_bytes());
        assert_eq!(r[0].payload, b"OK\0");
    }
    assert_eq!(err(&req(&mut s, xs::XS_WATCH, b"one/more\0t\0")), b"E2BIG\0");
    assert_eq!(s.watch_count(), WATCH_QUOTA);
    // The same watch twice is EEXIST, as xenstored.
    assert_eq!(err(&req(&mut s, xs::XS_WATCH, b"w/0\0t\0")), b"EEXIST\0");
}

#[test]
fn node_quota_and_size_answer_enospc() {
    let mut s = Store::new(0, "Domain-0");
    let mut i = 0;
    while s.node_count() < NODE_QUOTA {
        assert_eq!(req(&mut s, xs::XS_WRITE, format!("n/{i}\0v").as_bytes())[0].payload, b"OK\0");
        i += 1;
    }
    assert_eq!(err(&req(&mut s, xs::XS_WRITE, b"n/last\0v")), b"ENOSPC\0");
    assert_eq!(err(&req(&mut s, xs::XS_MKDIR, b"deep/er/still\0")), b"ENOSPC\0");
    assert_eq!(s.node_count(), NODE_QUOTA);
    // Rewriting an existing node is fine.
    assert_eq!(req(&mut s, xs::XS_WRITE, b"n/0\0w")[0].payload, b"OK\0");
    let mut big = b"value\0".to_vec();
    big.extend(core::iter::repeat_n(b'x', NODE_SIZE_MAX + 1));
    let mut s = Store::new(0, "Domain-0");
    assert_eq!(err(&req(&mut s, xs::XS_WRITE, &big)), b"ENOSPC\0");
    assert_eq!(err(&req(&mut s, xs::XS_READ, b"value\0")), b"ENOENT\0");
}

#[test]
fn directory_over_one_payload_is_e2big() {
    let mut s = Store::new(0, "Domain-0");
    // 300 children with 15-byte names: 4,800 bytes of listing.
    for i in 0..300 {
        req(&mut s, xs::XS_WRITE, format!("d/child-{i:08}\0").as_bytes());
    }
    assert_eq!(err(&req(&mut s, xs::XS_DIRECTORY, b"d\0")), b"E2BIG\0");
    req(&mut s, xs::XS_RM, b"d\0");
    for i in 0..10 {
        req(&mut s, xs::XS_WRITE, format!("d/child-{i:08}\0").as_bytes());
    }
    assert_eq!(req(&mut s, xs::XS_DIRECTORY, b"d\0")[0].payload.len(), 150);
}

/// Writes `bytes` into the request ring at its producer index and advances it.
fn produce(r: &TestRing, bytes: &[u8]) {
    let mut prod = r.load(ring::REQ_PROD);
    for &b in bytes {
        r.write(ring::REQ + (prod % ring::RING_SIZE) as usize, b);
        prod = prod.wrapping_add(1);
    }
    r.store(ring::REQ_PROD, prod);
}

/// Takes what the server put in the response ring.
fn consume(r: &TestRing) -> Vec<u8> {
    let mut cons = r.load(ring::RSP_CONS);
    let prod = r.load(ring::RSP_PROD);
    let mut out = Vec::new();
    while cons != prod {
        out.push(r.read(ring::RSP + (cons % ring::RING_SIZE) as usize));
        cons = cons.wrapping_add(1);
    }
    r.store(ring::RSP_CONS, cons);
    out
}

fn message(typ: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
    encode(&Reply { typ, req_id, tx_id: 0, payload: payload.to_vec() })
}

/// Splits a byte stream of replies into (type, req_id, payload).
fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= HEADER_SIZE {
        let h = XsdSockmsg::from_bytes(b[..HEADER_SIZE].try_into().unwrap());
        let end = HEADER_SIZE + h.len as usize;
        out.push((h.typ, h.req_id, b[HEADER_SIZE..end].to_vec()));
        b = &b[end..];
    }
    assert!(b.is_empty());
    out
}

#[test]
fn ring_round_trip() {
    let r = TestRing::new();
    let mut c = Conn::new(Store::new(0, "Domain-0"));
    produce(&r, &message(xs::XS_READ, 5, b"name\0"));
    assert!(c.has_work(&r));
    let done = c.service(&r);
    assert!(done.notify && done.dropped.is_none());
    assert_eq!(r.load(ring::REQ_CONS), r.load(ring::REQ_PROD));
    assert_eq!(replies(&consume(&r)), [(xs::XS_READ, 5, b"Domain-0".to_vec())]);
    assert!(!c.has_work(&r));
}

#[test]
fn a_2000_byte_request_is_assembled_across_ring_fills() {
    let r = TestRing::new();
    let mut c = Conn::new(Store::new(0, "Domain-0"));
    let mut payload = b"big\0".to_vec();
    payload.extend(core::iter::repeat_n(b'v', 1996));
    let msg = message(xs::XS_WRITE, 9, &payload);
    assert_eq!(msg.len(), 2016);
    // The guest fills the ring as far as it has room, the server drains, and so on.
    let mut sent = 0;
    while sent < msg.len() {
        let used = r.load(ring::REQ_PROD).wrapping_sub(r.load(ring::REQ_CONS)) as usize;
        let n = (ring::RING_SIZE as usize - used).min(msg.len() - sent);
        produce(&r, &msg[sent..sent + n]);
        sent += n;
        assert!(c.service(&r).dropped.is_none());
    }
    assert_eq!(replies(&consume(&r)), [(xs::XS_WRITE, 9, b"OK\0".to_vec())]);
    // The 2,012-byte reply leaves in pieces as the guest makes room.
    produce(&r, &message(xs::XS_READ, 10, b"big\0"));
    let mut rsp = Vec::new();
    for _ in 0..3 {
        c.service(&r);
        rsp.extend(consume(&r));
    }
    let got = replies(&rsp);
    assert_eq!(got[0].2, payload[4..]);
}

#[test]
fn a_request_between_1008_and_4096_bytes_is_consumed() {
    // Before, a request whose header and payload did not fit in the ring at once was never consumed.
    let r = TestRing::new();
    let mut c = Conn::new(Store::new(0, "Domain-0"));
    let mut payload = b"x\0".to_vec();
    payload.extend(core::iter::repeat_n(b'1', 1100));
    let msg = message(xs::XS_WRITE, 1, &payload);
    produce(&r, &msg[..1024]);
    c.service(&r);
    assert_eq!(r.load(ring::REQ_CONS), 1024);
    produce(&r, &msg[1024..]);
    c.service(&r);
    assert_eq!(replies(&consume(&r)), [(xs::XS_WRITE, 1, b"OK\0".to_vec())]);
}

#[test]
fn an_oversized_header_drops_the_connection() {
    let r = TestRing::new();
    let mut c = Conn::new(Store::new(0, "Domain-0"));
    let h = XsdSockmsg { typ: xs::XS_WRITE, req_id: 1, tx_id: 0, len: XENSTORE_PAYLOAD_MAX + 1 };
    produce(&r, &h.to_bytes());
    let done = c.service(&r);
    assert!(done.dropped.is_some());
    assert_eq!(c.broken(), Some(ring::ERROR_PROTO));
    assert_eq!(r.load(ring::ERROR), ring::ERROR_PROTO);
    // Nothing more is served.
    produce(&r, &message(xs::XS_READ, 2, b"name\0"));
    assert_eq!(c.service(&r), Serviced::default());
    assert!(consume(&r).is_empty());
}

#[test]
fn a_rewound_req_cons_costs_one_pass_not_forever() {
    let r = TestRing::new();
    let mut c = Conn::new(Store::new(0, "Domain-0"));
    let msg = message(xs::XS_READ, 3, b"name\0");
    // Fill the ring with copies of one request.
    let n = ring::RING_SIZE as usize / msg.len();
    for _ in 0..n {
        produce(&r, &msg);
    }
    // Another vCPU rewinds req_cons after every pass; each pass still takes at most one ring's worth and ends.
    for _ in 0..5 {
        c.service(&r);
        assert!(r.load(ring::REQ_CONS) == r.load(ring::REQ_PROD));
        consume(&r);
        r.store(ring::REQ_CONS, r.load(ring::REQ_PROD).wrapping_sub((n * msg.len()) as u32));
    }
    // A req_cons moved beyond the ring's size is a protocol error, not a loop.
    r.store(ring::REQ_CONS, r.load(ring::REQ_PROD).wrapping_sub(5000));
    assert!(c.service(&r).dropped.is_some());
    assert_eq!(c.broken(), Some(ring::ERROR_RINGIDX));
}

#[test]
fn queued_output_is_bounded() {
    // 128 watches with long tokens, then one WRITE that fires them all: the queued output stays under OUTPUT_MAX
    // even though the guest never reads its responses.
    let r = TestRing::new();
    let mut c = Conn::new(Store::new(0, "Domain-0"));
    let token = "t".repeat(600);
    for i in 0..WATCH_QUOTA {
        let mut p = format!("a\0{token}{i}\0").into_bytes();
        p.truncate(p.len());
        let msg = message(xs::XS_WATCH, i as u32, &p);
        // Room in the request ring: the server takes the requests as long as its output is not full.
        let used = r.load(ring::REQ_PROD).wrapping_sub(r.load(ring::REQ_CONS)) as usize;
        if used + msg.len() > ring::RING_SIZE as usize {
            break;
        }
        produce(&r, &msg);
        c.service(&r);
        assert!(c.queued() <= OUTPUT_MAX);
    }
    for _ in 0..50 {
        let used = r.load(ring::REQ_PROD).wrapping_sub(r.load(ring::REQ_CONS)) as usize;
        let msg = message(xs::XS_WRITE, 1, b"a\0v");
        if used + msg.len() <= ring::RING_SIZE as usize {
            produce(&r, &msg);
        }
        c.service(&r);
        assert!(c.queued() <= OUTPUT_MAX, "{} queued", c.queued());
    }
    // The store itself limits one request's events too.
    let mut s = Store::new(0, "Domain-0");
    for i in 0..WATCH_QUOTA {
        req(&mut s, xs::XS_WATCH, format!("a\0{token}{i}\0").as_bytes());
    }
    let out = req(&mut s, xs::XS_WRITE, b"a\0v");
    let bytes: usize = out.iter().map(|r| HEADER_SIZE + r.payload.len()).sum();
    assert!(bytes <= OUTPUT_MAX + HEADER_SIZE + 3, "{bytes}");
    assert!(out.len() < WATCH_QUOTA);
}
