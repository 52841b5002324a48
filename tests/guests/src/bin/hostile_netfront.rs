//! A deliberately bad netfront against dom0's stock Linux xen-netback (issue 13: a hostile frontend cannot hurt
//! dom0 or Keel). Booted by `xm create` as a PVH domU with four vifs on dom0's bridge xenbr0, it talks xenstore
//! over its own ring, sets up grant table v1, and connects to each vif's backend as netfront does (tx and rx ring
//! pages, one event channel, request-rx-copy, feature-rx-notify, Connected). Then, printing a
//! `hostile: probe NAME ... -> ok|BAD` line for each:
//!
//! - vif 0: a valid frame (an ARP request for dom0's 10.0.3.1 from 10.0.3.9, broadcast) must be sent (NETIF_RSP_OKAY)
//!   and dom0's ARP reply must arrive on the rx ring (netback copies it into a granted page); bad requests that
//!   fail only themselves must each get NETIF_RSP_ERROR: a grant ref beyond the table, an entry that grants
//!   nothing, one granted to another domain, a size below the Ethernet header; a packet of 19 slots (more than
//!   netback's legacy 18: Linux 6.1 sends it, so any outcome is ok); a request id used twice gets both its
//!   responses; after a flood of notifications a valid frame still goes out; last on vif 0, data crossing the
//!   page's end, which netback takes as fatal;
//! - vif 1: a first slot whose size is beyond what the chain holds (netback: data across the page's end, fatal);
//! - vif 2: a chain of 24 slots (fatal);
//! - vif 3: a producer index far ahead of the consumer (fatal).
//!
//! A fatal probe is ok when no request of it got NETIF_RSP_OKAY and xenstore still answers (netback disables the
//! vif: "fatal error; disabling device"). `Test result: SUCCESS` means every probe was ok.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU32, Ordering};
use keel_abi::io::blkif::{REQ_PROD, RING_OFFSET, RSP_EVENT, RSP_PROD};
use keel_abi::io::netif::{
    self, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, RSP_ERROR, RSP_OKAY, RX_RING_SIZE,
    TXF_MORE_DATA, TX_RING_SIZE,
};
use keel_abi::io::xenbus::state::{CONNECTED, INIT_WAIT};
use xtf::gnttab::{self, GrantTable, GNTTAB_NR_RESERVED_ENTRIES};
use xtf::xenstore::Xenstore;
use xtf::{error, evtchn, hypercall, time, Msg};

xtf::guest!(test_main);

/// The backend's domain.
const BACKEND: u16 = 0;
/// How long the backend gets for each response.
const STEP_NS: u64 = 30 * time::SECOND;
/// How long the guest listens for responses that need not come.
const QUIET_NS: u64 = 3 * time::SECOND;
/// Notifications in the flood.
const FLOOD: u32 = 100_000;
/// The vifs.
const VIFS: usize = 4;
/// Receive buffers (pages) posted on vif 0.
const RX_BUFS: usize = 16;

/// Our grant refs: per vif a tx and an rx ring, then the tx data page, the bad entries and the rx buffers.
const REF_RINGS: u32 = GNTTAB_NR_RESERVED_ENTRIES;
const REF_DATA: u32 = REF_RINGS + 2 * VIFS as u32;
const REF_NONE: u32 = REF_DATA + 1;
const REF_OTHER_DOM: u32 = REF_DATA + 2;
const REF_RX: u32 = REF_DATA + 3;
/// Beyond the one frame of our table.
const REF_BEYOND: u32 = 100_000;

/// Our MAC (a locally made 00:16:3e one) and addresses.
const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x4b, 0x01, 0x09];
const MY_IP: [u8; 4] = [10, 0, 3, 9];
const DOM0_IP: [u8; 4] = [10, 0, 3, 1];
/// Bytes of the ARP request.
const ARP_LEN: u16 = 42;

/// A page the backend maps or copies to and from.
#[repr(C, align(4096))]
struct Page([AtomicU32; 1024]);

static TX_RINGS: [Page; VIFS] = [const { Page::ZERO }; VIFS];
static RX_RINGS: [Page; VIFS] = [const { Page::ZERO }; VIFS];
static DATA: Page = Page::ZERO;
static RX_PAGES: [Page; RX_BUFS] = [const { Page::ZERO }; RX_BUFS];

impl Page {
    #[allow(clippy::declare_interior_mutable_const)] // Only a template for the statics below.
    const ZERO: Page = Page([const { AtomicU32::new(0) }; 1024]);

    fn gfn(&'static self) -> u64 {
        self.0.as_ptr() as u64 >> 12
    }

    fn byte(&self, at: usize) -> u8 {
        (self.0[at / 4].load(Ordering::Acquire) >> (at % 4 * 8)) as u8
    }

    fn put(&self, at: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let w = &self.0[(at + i) / 4];
            let shift = (at + i) % 4 * 8;
            let old = w.load(Ordering::Relaxed);
            w.store(old & !(0xff << shift) | u32::from(b) << shift, Ordering::Relaxed);
        }
    }

    fn header(&self, offset: usize) -> &AtomicU32 {
        &self.0[offset / 4]
    }

    /// Writes the plain-old-data `value` at `at` (a multiple of 4).
    fn store<T: bytemuck::Pod>(&self, at: usize, value: &T) {
        for (i, w) in bytemuck::bytes_of(value).chunks(4).enumerate() {
            self.0[at / 4 + i].store(u32::from_le_bytes([w[0], w[1], w[2], w[3]]), Ordering::Relaxed);
        }
    }

    /// Reads a plain-old-data value at `at` (a multiple of 4).
    fn load<T: bytemuck::Pod>(&self, at: usize) -> T {
        let mut v = T::zeroed();
        for (i, w) in bytemuck::bytes_of_mut(&mut v).chunks_mut(4).enumerate() {
            w.copy_from_slice(&self.0[at / 4 + i].load(Ordering::Acquire).to_le_bytes());
        }
        v
    }
}

/// One connected vif: its two rings, our private indexes, the port.
struct Vif {
    tx: &'static Page,
    rx: &'static Page,
    port: u32,
    tx_prod: u32,
    tx_cons: u32,
    rx_prod: u32,
    rx_cons: u32,
    /// ARP replies from dom0 seen on the rx ring.
    arp_replies: u32,
    rx_packets: u32,
}

fn tx_slot(idx: u32) -> usize {
    RING_OFFSET + (idx % TX_RING_SIZE) as usize * netif::TX_ENTRY_SIZE
}

fn rx_slot(idx: u32) -> usize {
    RING_OFFSET + (idx % RX_RING_SIZE) as usize * netif::RX_ENTRY_SIZE
}

impl Vif {
    /// Puts `reqs` on the tx ring and notifies.
    fn push(&mut self, reqs: &[NetifTxRequest]) {
        for r in reqs {
            self.tx.store(tx_slot(self.tx_prod), r);
            self.tx_prod = self.tx_prod.wrapping_add(1);
        }
        self.tx.header(REQ_PROD).store(self.tx_prod, Ordering::Release);
        let _ = evtchn::send(self.port);
    }

    /// Posts rx request `id` (buffer `id % RX_BUFS`).
    fn post_rx(&mut self, id: u16) {
        let req = NetifRxRequest { id, pad: 0, gref: REF_RX + u32::from(id) % RX_BUFS as u32 };
        self.rx.store(rx_slot(self.rx_prod), &req);
        self.rx_prod = self.rx_prod.wrapping_add(1);
        self.rx.header(REQ_PROD).store(self.rx_prod, Ordering::Release);
    }

    /// Takes what arrived on the rx ring, looks for dom0's ARP reply, and posts the buffers again.
    fn drain_rx(&mut self) {
        while self.rx.header(RSP_PROD).load(Ordering::Acquire) != self.rx_cons {
            let rsp: NetifRxResponse = self.rx.load(rx_slot(self.rx_cons));
            self.rx_cons = self.rx_cons.wrapping_add(1);
            self.rx_packets += 1;
            if rsp.status > 0 && is_arp_reply(&RX_PAGES[usize::from(rsp.id) % RX_BUFS], rsp.offset.into(), rsp.status) {
                self.arp_replies += 1;
            }
            self.post_rx(rsp.id);
            let _ = evtchn::send(self.port);
        }
        self.rx.header(RSP_EVENT).store(self.rx_cons.wrapping_add(1), Ordering::SeqCst);
    }

    /// Collects up to `n` tx responses, waiting up to `timeout_ns` in all (and draining the rx ring meanwhile).
    fn responses(&mut self, n: usize, timeout_ns: u64, out: &mut [NetifTxResponse]) -> usize {
        let deadline = time::xen_system_time_ns() + timeout_ns;
        let mut got = 0;
        loop {
            self.drain_rx();
            self.tx.header(RSP_EVENT).store(self.tx_cons.wrapping_add(1), Ordering::SeqCst);
            while got < n && self.tx.header(RSP_PROD).load(Ordering::Acquire) != self.tx_cons {
                let rsp: NetifTxResponse = self.tx.load(tx_slot(self.tx_cons));
                self.tx_cons = self.tx_cons.wrapping_add(1);
                if got < out.len() {
                    out[got] = rsp;
                }
                got += 1;
            }
            let now = time::xen_system_time_ns();
            if got >= n || now >= deadline {
                return got;
            }
            let _ = evtchn::poll(self.port, (now + 50 * time::MS).min(deadline));
        }
    }
}

/// Whether the `len` bytes at `off` of `page` are an ARP reply from dom0 to us.
fn is_arp_reply(page: &Page, off: usize, len: i16) -> bool {
    if len < i16::try_from(ARP_LEN).unwrap_or(i16::MAX) || off + 42 > 4096 {
        return false;
    }
    let b = |i: usize| page.byte(off + i);
    let ethertype = [b(12), b(13)];
    let oper = [b(20), b(21)];
    let sender_ip = [b(28), b(29), b(30), b(31)];
    let target_ip = [b(38), b(39), b(40), b(41)];
    ethertype == [0x08, 0x06] && oper == [0, 2] && sender_ip == DOM0_IP && target_ip == MY_IP
}

/// Writes the ARP request (who has 10.0.3.1? tell 10.0.3.9) at the start of DATA.
fn write_arp_request() {
    let mut f = [0u8; ARP_LEN as usize];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&MAC);
    f[28..32].copy_from_slice(&MY_IP);
    f[38..42].copy_from_slice(&DOM0_IP);
    DATA.put(0, &f);
}

fn frame(id: u16) -> NetifTxRequest {
    NetifTxRequest { gref: REF_DATA, offset: 0, flags: 0, id, size: ARP_LEN }
}

/// A chain of `slots` requests of 100 bytes each (the first's size is the whole packet's).
fn chain(slots: usize, first_size: u16, id0: u16, out: &mut [NetifTxRequest]) -> usize {
    for (i, r) in out.iter_mut().take(slots).enumerate() {
        let more = if i + 1 < slots { TXF_MORE_DATA } else { 0 };
        let size = if i == 0 { first_size } else { 100 };
        *r = NetifTxRequest { gref: REF_DATA, offset: (i * 100 % 3000) as u16, flags: more, id: id0 + i as u16, size };
    }
    slots
}

/// What a probe must get.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// NETIF_RSP_OKAY for every request.
    Okay,
    /// NETIF_RSP_ERROR for every request.
    Error,
    /// No NETIF_RSP_OKAY (netback may answer with errors or disable the vif); xenstore still answers.
    NotOkay,
    /// Anything, as long as xenstore still answers (what netback does is reported).
    Survive,
}

struct Probes {
    bad: u32,
    run: u32,
}

impl Probes {
    /// Sends `reqs` on `vif`, collects their responses, prints the probe line; returns whether it was ok.
    fn probe(&mut self, xs: &mut Xenstore, vif: &mut Vif, name: &str, reqs: &[NetifTxRequest], want: Want) -> bool {
        self.run += 1;
        vif.push(reqs);
        let wait = if matches!(want, Want::Okay | Want::Error) { STEP_NS } else { QUIET_NS };
        let mut rsps = [NetifTxResponse::default(); 32];
        let got = vif.responses(reqs.len(), wait, &mut rsps);
        let seen = &rsps[..got.min(rsps.len())];
        let (okay, error) = (
            seen.iter().filter(|r| r.status == RSP_OKAY).count(),
            seen.iter().filter(|r| r.status == RSP_ERROR).count(),
        );
        let ids_match = seen.iter().zip(reqs).all(|(r, q)| r.id == q.id);
        let xs_ok = xs.read_u64("domid").is_ok();
        let good = xs_ok
            && match want {
                Want::Okay => okay == reqs.len() && ids_match,
                Want::Error => error == reqs.len() && ids_match,
                Want::NotOkay => okay == 0,
                Want::Survive => true,
            };
        if !good {
            self.bad += 1;
        }
        let w = match want {
            Want::Okay => "okay",
            Want::Error => "error",
            Want::NotOkay => "not-okay",
            Want::Survive => "any",
        };
        xtf::println!(
            "hostile: probe {name} requests={} responses={got} okay={okay} error={error} ids-match={ids_match} \
             xenstore={xs_ok} want={w} -> {}",
            reqs.len(),
            if good { "ok" } else { "BAD" }
        );
        good
    }
}

/// Connects frontend `device/vif/<n>` with ring pages `n`: grants them, writes the keys netback reads, says
/// Connected and waits for the backend to connect.
fn connect(xs: &mut Xenstore, gt: GrantTable, n: usize) -> Result<Vif, xtf::Outcome> {
    let fe = |key: &str| Msg::new(format_args!("device/vif/{n}/{key}"));
    let mut buf = [0u8; 128];
    let be = Msg::new(format_args!("{}", xs.read(fe("backend").as_str(), &mut buf)?));
    let bstate = Msg::new(format_args!("{be}/state"));
    let state = xs.wait_for(bstate.as_str(), Xenstore::BACKEND_WAIT_NS, |s| s >= u64::from(INIT_WAIT));
    if state != Some(u64::from(INIT_WAIT)) {
        return Err(error!("{be}: backend state {state:?}, want InitWait (2)"));
    }
    let port = hypercall::evtchn_alloc_unbound(BACKEND).map_err(|e| error!("EVTCHNOP_alloc_unbound: {e}"))?;
    let (tx_ref, rx_ref) = (REF_RINGS + 2 * n as u32, REF_RINGS + 2 * n as u32 + 1);
    gt.grant(tx_ref, BACKEND, TX_RINGS[n].gfn(), false);
    gt.grant(rx_ref, BACKEND, RX_RINGS[n].gfn(), false);
    xs.write_fmt(fe("tx-ring-ref").as_str(), format_args!("{tx_ref}"))?;
    xs.write_fmt(fe("rx-ring-ref").as_str(), format_args!("{rx_ref}"))?;
    xs.write_fmt(fe("event-channel").as_str(), format_args!("{port}"))?;
    xs.write(fe("request-rx-copy").as_str(), b"1")?;
    xs.write(fe("feature-rx-notify").as_str(), b"1")?;
    xs.write_fmt(fe("state").as_str(), format_args!("{CONNECTED}"))?;
    let state = xs.wait_for(bstate.as_str(), Xenstore::BACKEND_WAIT_NS, |s| s >= u64::from(CONNECTED));
    if state != Some(u64::from(CONNECTED)) {
        return Err(error!("{be}: backend state {state:?} after Connected, want Connected (4)"));
    }
    xtf::println!("hostile: {be} connected: tx-ring-ref {tx_ref}, rx-ring-ref {rx_ref}, event channel {port}");
    Ok(Vif {
        tx: &TX_RINGS[n],
        rx: &RX_RINGS[n],
        port,
        tx_prod: 0,
        tx_cons: 0,
        rx_prod: 0,
        rx_cons: 0,
        arp_replies: 0,
        rx_packets: 0,
    })
}

fn test_main() -> xtf::TestResult {
    let mut xs = Xenstore::open()?;
    let gt = gnttab::setup().map_err(|e| error!("mapping the grant table: {e}"))?;
    gt.grant(REF_DATA, BACKEND, DATA.gfn(), true);
    gt.set_raw(REF_NONE, 0, BACKEND, DATA.gfn() as u32);
    gt.grant(REF_OTHER_DOM, 7, DATA.gfn(), true);
    for (i, page) in RX_PAGES.iter().enumerate() {
        gt.grant(REF_RX + i as u32, BACKEND, page.gfn(), false);
    }
    write_arp_request();
    let mut v0 = connect(&mut xs, gt, 0)?;
    let mut v1 = connect(&mut xs, gt, 1)?;
    let mut v2 = connect(&mut xs, gt, 2)?;
    let mut v3 = connect(&mut xs, gt, 3)?;
    for id in 0..RX_BUFS as u16 {
        v0.post_rx(id);
    }
    let _ = evtchn::send(v0.port);

    let mut p = Probes { bad: 0, run: 0 };
    let mut id = 1u16;
    let mut next = |n: u16| {
        let i = id;
        id += n;
        i
    };

    // A valid frame, sent once a second until dom0's reply arrives (the bridge port may forward only a moment
    // after the vif came up).
    let mut sent_ok = true;
    let mut tries = 0;
    while v0.arp_replies == 0 && tries < 30 {
        tries += 1;
        let mut r = [NetifTxResponse::default(); 1];
        v0.push(&[frame(next(1))]);
        let got = v0.responses(1, STEP_NS, &mut r);
        sent_ok &= got == 1 && r[0].status == RSP_OKAY;
        let t = time::xen_system_time_ns() + time::SECOND;
        while v0.arp_replies == 0 && time::xen_system_time_ns() < t {
            v0.responses(0, 50 * time::MS, &mut []);
        }
    }
    let arp_ok = sent_ok && v0.arp_replies > 0;
    p.run += 1;
    if !arp_ok {
        p.bad += 1;
    }
    xtf::println!(
        "hostile: probe valid-arp sends={tries} all-okay={sent_ok} rx-packets={} arp-replies={} -> {}",
        v0.rx_packets,
        v0.arp_replies,
        if arp_ok { "ok" } else { "BAD" }
    );

    // Requests that fail only themselves.
    let bad = |gref: u32, size: u16, id: u16| NetifTxRequest { gref, offset: 0, flags: 0, id, size };
    p.probe(&mut xs, &mut v0, "gref-beyond-table", &[bad(REF_BEYOND, ARP_LEN, next(1))], Want::Error);
    p.probe(&mut xs, &mut v0, "gref-not-granted", &[bad(REF_NONE, ARP_LEN, next(1))], Want::Error);
    p.probe(&mut xs, &mut v0, "gref-other-domain", &[bad(REF_OTHER_DOM, ARP_LEN, next(1))], Want::Error);
    p.probe(&mut xs, &mut v0, "size-below-header", &[bad(REF_DATA, 10, next(1))], Want::Error);
    p.probe(&mut xs, &mut v0, "size-zero", &[bad(REF_DATA, 0, next(1))], Want::Error);
    let mut reqs = [NetifTxRequest::default(); 32];
    let n = chain(19, 1900, next(19), &mut reqs);
    // Linux 6.1's netback takes a 19-slot packet (OKAY for every slot): reported, not judged.
    p.probe(&mut xs, &mut v0, "slots-19", &reqs[..n], Want::Survive);
    let same = next(1);
    p.probe(&mut xs, &mut v0, "id-reused", &[frame(same), frame(same)], Want::Okay);
    p.probe(&mut xs, &mut v0, "valid-after-errors", &[frame(next(1))], Want::Okay);

    // A flood of notifications; vif 0 must still send afterwards.
    evtchn::flood(v0.port, FLOOD);
    p.probe(&mut xs, &mut v0, "valid-after-flood", &[frame(next(1))], Want::Okay);

    // Fatal ones, one vif each (netback disables the vif).
    let cross = NetifTxRequest { gref: REF_DATA, offset: 4000, flags: 0, id: next(1), size: 200 };
    p.probe(&mut xs, &mut v0, "cross-page", &[cross], Want::NotOkay);
    let n = chain(2, 65535, next(2), &mut reqs);
    p.probe(&mut xs, &mut v1, "size-beyond-chain", &reqs[..n], Want::Survive);
    let n = chain(24, 2400, next(24), &mut reqs);
    p.probe(&mut xs, &mut v2, "slots-24", &reqs[..n], Want::NotOkay);
    // A producer index far ahead of the consumer.
    let rsp_before = v3.tx.header(RSP_PROD).load(Ordering::Acquire);
    v3.tx_prod = v3.tx_prod.wrapping_add(1000);
    v3.tx.header(REQ_PROD).store(v3.tx_prod, Ordering::Release);
    let _ = evtchn::send(v3.port);
    let mut r = [NetifTxResponse::default(); 4];
    let got = v3.responses(4, QUIET_NS, &mut r);
    let okay = r[..got.min(4)].iter().filter(|r| r.status == RSP_OKAY).count();
    let xs_ok = xs.read_u64("domid").is_ok();
    let ok = okay == 0 && xs_ok;
    p.run += 1;
    if !ok {
        p.bad += 1;
    }
    xtf::println!(
        "hostile: probe producer-ahead rsp_prod {rsp_before}->{} responses={got} okay={okay} xenstore={xs_ok} -> {}",
        v3.tx.header(RSP_PROD).load(Ordering::Acquire),
        if ok { "ok" } else { "BAD" }
    );

    let mut states = [0u64; VIFS];
    for (n, s) in states.iter_mut().enumerate() {
        *s = xs.read_u64(Msg::new(format_args!("device/vif/{n}/state")).as_str()).unwrap_or(99);
    }
    xtf::println!("hostile: after: frontend states {states:?}, rx packets {} on vif 0", v0.rx_packets);
    xtf::println!("hostile: {} probes, {} bad", p.run, p.bad);
    xtf::ensure!(p.bad == 0, "{} of the probes went wrong (the BAD lines)", p.bad);
    Ok(())
}
