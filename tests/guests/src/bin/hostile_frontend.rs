//! A deliberately bad blkfront against dom0's stock Linux xen-blkback (issue 13: a hostile frontend cannot hurt
//! dom0 or Keel). Booted by `xm create` as a PVH domU with one disk (`disk = [ 'file:IMG,xvda,w' ]`), it talks
//! xenstore over its own ring, sets up grant table v1, connects to the backend as blkfront does (ring page,
//! event channel, protocol x86_64-abi, Initialised, backend Connected, Connected), and then sends one request
//! at a time, printing a `hostile: probe NAME status=S want=W -> ok|BAD` line for each:
//!
//! - good reads and a good write (BLKIF_RSP_OKAY; the first read must find the text dom0 put at sector 0 of the
//!   image, `keel-hostile-disk`, the write puts `keel-hostile-wrote` at sector 1 from a read-only grant);
//! - bad requests, each of which must get an error response (BLKIF_RSP_ERROR, or EOPNOTSUPP for an unknown
//!   operation): past the disk's end, straddling it, a wrapping sector number, a grant ref beyond the table,
//!   an entry that grants nothing, one granted to another domain, a read into a read-only grant, a grant of a
//!   frame the guest does not have, too many and zero segments, first_sect > last_sect, last_sect past the
//!   page, an unknown operation;
//! - a flood of 100000 notifications, after which a good read must still work;
//! - last, a producer index far ahead of the consumer: blkback says "bogus ring requests" and stops serving the
//!   ring; no response may come, and xenstore must still answer.
//!
//! `Test result: SUCCESS` means every bad request got an error, every good one worked, and the ring went quiet.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU32, Ordering};
use keel_abi::io::blkif::{
    self, BlkifRequest, BlkifRequestSegment, BlkifResponse, RING_OFFSET, RING_SIZE_1PAGE, RSP_EOPNOTSUPP, RSP_ERROR,
    RSP_OKAY,
};
use keel_abi::shared_info::gtf;
use xtf::gnttab::{self, GNTTAB_NR_RESERVED_ENTRIES};
use xtf::xenstore::Xenstore;
use xtf::{error, evtchn, hypercall, time, Msg};

xtf::guest!(test_main);

/// The frontend directory libxl (and xm) write for xvda (VBD number 51712 = 202 << 8).
const VBD: &str = "device/vbd/51712";
/// The backend's domain.
const BACKEND: u16 = 0;
/// XenbusState values (`public/io/xenbus.h`).
const INIT_WAIT: u64 = 2;
const INITIALISED: u64 = 3;
const CONNECTED: u64 = 4;
/// How long the backend gets for each step and each response.
const STEP_NS: u64 = 30 * time::SECOND;
/// How long the guest listens for a response that must not come.
const QUIET_NS: u64 = 3 * time::SECOND;
/// Notifications in the flood.
const FLOOD: u32 = 100_000;

/// What dom0 writes at sector 0 of the image, and what the write probe puts at sector 1.
const DISK_TEXT: &[u8] = b"keel-hostile-disk";
const WROTE_TEXT: &[u8] = b"keel-hostile-wrote";

/// Our grant refs.
const REF_RING: u32 = GNTTAB_NR_RESERVED_ENTRIES;
const REF_DATA: u32 = REF_RING + 1;
const REF_RO: u32 = REF_RING + 2;
const REF_NONE: u32 = REF_RING + 3;
const REF_OTHER_DOM: u32 = REF_RING + 4;
const REF_NO_FRAME: u32 = REF_RING + 5;
/// Beyond the one frame of our table.
const REF_BEYOND: u32 = 100_000;

/// A page the backend maps.
#[repr(C, align(4096))]
struct Page([AtomicU32; 1024]);

static RING: Page = Page([const { AtomicU32::new(0) }; 1024]);
static DATA: Page = Page([const { AtomicU32::new(0) }; 1024]);
static DATA_RO: Page = Page([const { AtomicU32::new(0) }; 1024]);

impl Page {
    fn gfn(&'static self) -> u64 {
        self.0.as_ptr() as u64 >> 12
    }

    fn fill(&self, word: u32) {
        for w in &self.0 {
            w.store(word, Ordering::Relaxed);
        }
    }

    fn bytes(&self, at: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = (self.0[(at + i) / 4].load(Ordering::Acquire) >> ((at + i) % 4 * 8)) as u8;
        }
    }

    fn put(&self, at: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let w = &self.0[(at + i) / 4];
            let shift = (at + i) % 4 * 8;
            let old = w.load(Ordering::Relaxed);
            w.store(old & !(0xff << shift) | u32::from(b) << shift, Ordering::Relaxed);
        }
    }
}

/// The front end of the ring: our private producer and consumer, the page, the port.
struct Front {
    req_prod: u32,
    rsp_cons: u32,
    port: u32,
    next_id: u64,
}

const REQ_WORDS: usize = size_of::<BlkifRequest>() / 4;
const RSP_WORDS: usize = size_of::<BlkifResponse>() / 4;

impl Front {
    fn header(&self, offset: usize) -> &'static AtomicU32 {
        &RING.0[offset / 4]
    }

    fn slot(&self, idx: u32) -> usize {
        (RING_OFFSET + (idx % RING_SIZE_1PAGE) as usize * blkif::ENTRY_SIZE) / 4
    }

    /// Puts `req` on the ring (its id set to a fresh one) and notifies; returns the id.
    fn push(&mut self, mut req: BlkifRequest) -> u64 {
        req.id = self.next_id;
        self.next_id += 1;
        let words: [u32; REQ_WORDS] = bytemuck::cast(req);
        let at = self.slot(self.req_prod);
        for (i, w) in words.into_iter().enumerate() {
            RING.0[at + i].store(w, Ordering::Relaxed);
        }
        self.req_prod = self.req_prod.wrapping_add(1);
        self.header(blkif::REQ_PROD).store(self.req_prod, Ordering::Release);
        let _ = evtchn::send(self.port);
        req.id
    }

    /// Waits up to `timeout_ns` for the next response.
    fn pop(&mut self, timeout_ns: u64) -> Option<BlkifResponse> {
        let deadline = time::xen_system_time_ns() + timeout_ns;
        loop {
            // Ask for a notification for the next response, then look (RING_FINAL_CHECK_FOR_RESPONSES).
            self.header(blkif::RSP_EVENT).store(self.rsp_cons.wrapping_add(1), Ordering::SeqCst);
            if self.header(blkif::RSP_PROD).load(Ordering::Acquire) != self.rsp_cons {
                let at = self.slot(self.rsp_cons);
                let mut words = [0u32; RSP_WORDS];
                for (i, w) in words.iter_mut().enumerate() {
                    *w = RING.0[at + i].load(Ordering::Acquire);
                }
                self.rsp_cons = self.rsp_cons.wrapping_add(1);
                return Some(bytemuck::cast(words));
            }
            let now = time::xen_system_time_ns();
            if now >= deadline {
                return None;
            }
            let _ = evtchn::poll(self.port, (now + 50 * time::MS).min(deadline));
        }
    }
}

/// A read or write of `segs` at `sector`.
fn rw(op: u8, sector: u64, segs: &[(u32, u8, u8)]) -> BlkifRequest {
    let mut r =
        BlkifRequest { operation: op, nr_segments: segs.len() as u8, sector_number: sector, ..Default::default() };
    for (s, &(gref, first_sect, last_sect)) in r.seg.iter_mut().zip(segs) {
        *s = BlkifRequestSegment { gref, first_sect, last_sect, pad: 0 };
    }
    r
}

/// What a probe must get.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Okay,
    /// BLKIF_RSP_ERROR, or EOPNOTSUPP (both refuse the request).
    Error,
}

struct Probes {
    front: Front,
    bad: u32,
    run: u32,
}

impl Probes {
    /// Sends `req`, waits for its response, prints the probe line; returns the status (None: no response).
    fn probe(&mut self, name: &str, req: BlkifRequest, want: Want) -> Option<i16> {
        self.run += 1;
        let id = self.front.push(req);
        let rsp = self.front.pop(STEP_NS);
        let (status, good) = match rsp {
            None => (None, false),
            Some(r) => {
                let ok = match want {
                    Want::Okay => r.status == RSP_OKAY,
                    Want::Error => r.status == RSP_ERROR || r.status == RSP_EOPNOTSUPP,
                };
                (Some(r.status), ok && r.id == id && r.operation == req.operation)
            }
        };
        if !good {
            self.bad += 1;
        }
        let s = match status {
            Some(s) => Msg::new(format_args!("{s}")),
            None => Msg::new(format_args!("none")),
        };
        let id_note = match rsp {
            Some(r) if r.id != id => Msg::new(format_args!(" (response id {} for request {id})", r.id)),
            _ => Msg::new(format_args!("")),
        };
        xtf::println!(
            "hostile: probe {name} status={s} want={}{id_note} -> {}",
            if want == Want::Okay { "okay" } else { "error" },
            if good { "ok" } else { "BAD" }
        );
        status
    }
}

/// The value at `<dir>/<key>`, as a number.
fn read_num(xs: &mut Xenstore, dir: &str, key: &str) -> Option<u64> {
    xs.read_u64(Msg::new(format_args!("{dir}/{key}")).as_str()).ok()
}

fn test_main() -> xtf::TestResult {
    let mut xs = Xenstore::open()?;
    let mut buf = [0u8; 128];
    let backend = Msg::new(format_args!("{}", xs.read(Msg::new(format_args!("{VBD}/backend")).as_str(), &mut buf)?));
    let be = backend.as_str();
    xtf::println!("hostile: backend {be}");
    let state = xs.wait_for(Msg::new(format_args!("{be}/state")).as_str(), STEP_NS, |s| s >= INIT_WAIT);
    if state != Some(INIT_WAIT) {
        return Err(error!("backend state {state:?}, want InitWait (2)"));
    }
    let gt = gnttab::setup().map_err(|e| error!("mapping the grant table: {e}"))?;
    let port = hypercall::evtchn_alloc_unbound(BACKEND).map_err(|e| error!("EVTCHNOP_alloc_unbound: {e}"))?;
    gt.grant(REF_RING, BACKEND, RING.gfn(), false);
    gt.grant(REF_DATA, BACKEND, DATA.gfn(), false);
    gt.grant(REF_RO, BACKEND, DATA_RO.gfn(), true);
    gt.set_raw(REF_NONE, 0, BACKEND, DATA.gfn() as u32);
    gt.grant(REF_OTHER_DOM, 7, DATA.gfn(), false);
    // A frame far beyond the guest's RAM.
    gt.grant(REF_NO_FRAME, BACKEND, 0xf_0000, false);

    let fe = |key: &str| Msg::new(format_args!("{VBD}/{key}"));
    xs.write_fmt(fe("ring-ref").as_str(), format_args!("{REF_RING}"))?;
    xs.write_fmt(fe("event-channel").as_str(), format_args!("{port}"))?;
    xs.write(fe("protocol").as_str(), b"x86_64-abi")?;
    xs.write_fmt(fe("state").as_str(), format_args!("{INITIALISED}"))?;
    let state = xs.wait_for(Msg::new(format_args!("{be}/state")).as_str(), STEP_NS, |s| s == CONNECTED);
    if state != Some(CONNECTED) {
        return Err(error!("backend state {state:?} after Initialised, want Connected (4)"));
    }
    xs.write_fmt(fe("state").as_str(), format_args!("{CONNECTED}"))?;
    xtf::println!("hostile: connected: ring-ref {REF_RING}, event channel {port}, {RING_SIZE_1PAGE} slots");
    // blkback writes the disk's size as it connects.
    let sectors = read_num(&mut xs, be, "sectors").ok_or_else(|| error!("no {be}/sectors"))?;
    let sector_size = read_num(&mut xs, be, "sector-size").unwrap_or(0);
    xtf::println!("hostile: disk sectors={sectors} sector-size={sector_size}");

    let mut p = Probes { front: Front { req_prod: 0, rsp_cons: 0, port, next_id: 1 }, bad: 0, run: 0 };
    use blkif::{OP_READ, OP_WRITE};
    let end = sectors;

    // Good: sector 0 holds dom0's text.
    DATA.fill(0xaaaa_aaaa);
    p.probe("good-read", rw(OP_READ, 0, &[(REF_DATA, 0, 0)]), Want::Okay);
    let mut got = [0u8; DISK_TEXT.len()];
    DATA.bytes(0, &mut got);
    let text_ok = got == DISK_TEXT;
    if !text_ok {
        p.bad += 1;
    }
    xtf::println!(
        "hostile: probe good-read-data {:?} -> {}",
        core::str::from_utf8(&got).unwrap_or("(not text)"),
        if text_ok { "ok" } else { "BAD" }
    );
    // Good: a write from a read-only grant (the backend only reads it).
    DATA_RO.fill(0);
    DATA_RO.put(0, WROTE_TEXT);
    p.probe("good-write-ro-grant", rw(OP_WRITE, 1, &[(REF_RO, 0, 0)]), Want::Okay);

    p.probe("read-past-end", rw(OP_READ, end, &[(REF_DATA, 0, 0)]), Want::Error);
    p.probe("read-straddling-end", rw(OP_READ, end.saturating_sub(1), &[(REF_DATA, 0, 1)]), Want::Error);
    p.probe("read-sector-wraps", rw(OP_READ, u64::MAX, &[(REF_DATA, 0, 1)]), Want::Error);
    p.probe("gref-beyond-table", rw(OP_READ, 0, &[(REF_BEYOND, 0, 0)]), Want::Error);
    p.probe("gref-not-granted", rw(OP_READ, 0, &[(REF_NONE, 0, 0)]), Want::Error);
    p.probe("gref-other-domain", rw(OP_READ, 0, &[(REF_OTHER_DOM, 0, 0)]), Want::Error);
    p.probe("read-into-ro-grant", rw(OP_READ, 0, &[(REF_RO, 0, 0)]), Want::Error);
    p.probe("gref-frame-not-ram", rw(OP_READ, 0, &[(REF_NO_FRAME, 0, 0)]), Want::Error);
    let mut many = rw(OP_READ, 0, &[(REF_DATA, 0, 0); blkif::MAX_SEGMENTS_PER_REQUEST]);
    many.nr_segments = blkif::MAX_SEGMENTS_PER_REQUEST as u8 + 1;
    p.probe("segments-12", many, Want::Error);
    many.nr_segments = 255;
    p.probe("segments-255", many, Want::Error);
    p.probe("segments-0", rw(OP_READ, 0, &[]), Want::Error);
    p.probe("first-after-last", rw(OP_READ, 0, &[(REF_DATA, 3, 1)]), Want::Error);
    p.probe("last-past-page", rw(OP_READ, 0, &[(REF_DATA, 0, 8)]), Want::Error);
    let mut odd = rw(OP_READ, 0, &[(REF_DATA, 0, 0)]);
    odd.operation = 0x7f;
    p.probe("unknown-operation", odd, Want::Error);
    // The ring still serves good requests after the bad ones, and our grants are all free again.
    p.probe("good-read-after", rw(OP_READ, 0, &[(REF_DATA, 0, 0)]), Want::Okay);
    let busy = [REF_DATA, REF_RO].iter().filter(|&&r| gt.flags(r) & (gtf::READING | gtf::WRITING) != 0).count();
    if busy != 0 {
        p.bad += 1;
    }
    xtf::println!("hostile: probe grants-released busy={busy} -> {}", if busy == 0 { "ok" } else { "BAD" });

    // A flood of notifications; the backend must still serve the ring afterwards.
    let t0 = time::xen_system_time_ns();
    let mut refused = 0u32;
    for _ in 0..FLOOD {
        if evtchn::send(port).is_err() {
            refused += 1;
        }
    }
    let ms = (time::xen_system_time_ns() - t0) / time::MS;
    xtf::println!("hostile: flood {FLOOD} notifications in {ms} ms, {refused} refused");
    p.probe("good-read-after-flood", rw(OP_READ, 0, &[(REF_DATA, 0, 0)]), Want::Okay);

    // Last: a producer index far ahead of the consumer. blkback must stop serving the ring: no response.
    let rsp_before = p.front.header(blkif::RSP_PROD).load(Ordering::Acquire);
    p.front.req_prod = p.front.req_prod.wrapping_add(1000);
    p.front.header(blkif::REQ_PROD).store(p.front.req_prod, Ordering::Release);
    let _ = evtchn::send(port);
    let quiet = p.front.pop(QUIET_NS).is_none();
    let rsp_after = p.front.header(blkif::RSP_PROD).load(Ordering::Acquire);
    if !quiet {
        p.bad += 1;
    }
    xtf::println!(
        "hostile: probe bogus-producer rsp_prod {rsp_before}->{rsp_after} -> {}",
        if quiet { "ok" } else { "BAD" }
    );
    // xenstore still answers, and says what the backend thinks now.
    let state = read_num(&mut xs, be, "state");
    xtf::println!("hostile: after: backend state {state:?}, xenstore answers {}", state.is_some());
    if state.is_none() {
        p.bad += 1;
    }
    xtf::println!("hostile: {} probes, {} bad", p.run + 3, p.bad);
    xtf::ensure!(p.bad == 0, "{} of the probes went wrong (the BAD lines)", p.bad);
    Ok(())
}
