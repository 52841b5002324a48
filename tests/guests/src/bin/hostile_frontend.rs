//! A deliberately bad blkfront against dom0's stock Linux xen-blkback (issue 13: a hostile frontend cannot hurt
//! dom0 or Keel). Booted by `xm create` as a PVH domU with five disks (xvda, a writable `file:` disk whose sector
//! 0 dom0 wrote `keel-hostile-disk` on; xvdb, read-only; xvdc..xvde, offered bad rings), it talks xenstore over
//! its own ring, sets up grant table v1, connects to xvda's backend as blkfront does (ring page, event channel,
//! protocol x86_64-abi, Initialised, backend Connected, Connected), and then sends one request at a time,
//! printing a `hostile: probe NAME ... -> ok|BAD` line for each:
//!
//! - good reads and a good write (BLKIF_RSP_OKAY; the first read must find dom0's text, the write puts
//!   `keel-hostile-wrote` at sector 1 from a read-only grant, which dom0 reads back);
//! - bad requests, each of which must get an error response (BLKIF_RSP_ERROR, or EOPNOTSUPP for an unknown
//!   operation): past the disk's end, straddling it, a wrapping sector number, a grant ref beyond the table,
//!   an entry that grants nothing, one granted to another domain, a read into a read-only grant, a grant of a
//!   frame the guest does not have, too many and zero segments, first_sect > last_sect, last_sect past the
//!   page, an unknown operation; afterwards no grant of ours is still mapped;
//! - on the read-only disk, a read works and a write is refused;
//! - rings the backend must refuse at connect time (it goes to Closing, and unmaps what it mapped): a ring-ref
//!   beyond the table, an event channel the guest never allocated, a ring whose producer is already 1000 ahead;
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
use keel_abi::io::xenbus::state::{CONNECTED, INITIALISED, INIT_WAIT};
use keel_abi::shared_info::gtf;
use xtf::gnttab::{self, GrantTable, GNTTAB_NR_RESERVED_ENTRIES};
use xtf::xenstore::Xenstore;
use xtf::{error, evtchn, hypercall, time, Msg};

xtf::guest!(test_main);

/// The frontend directories libxl (and xm) write for xvda..xvde (VBD number 202 << 8 | 16 * disk).
const VBD: &str = "device/vbd/51712";
/// xvdb: a read-only disk.
const VBD_RO: &str = "device/vbd/51728";
/// xvdc, xvdd, xvde: disks offered bad rings.
const VBD_BAD_REF: &str = "device/vbd/51744";
const VBD_BAD_PORT: &str = "device/vbd/51760";
const VBD_BAD_PROD: &str = "device/vbd/51776";
/// An event channel this guest never allocated.
const PORT_UNBOUND: u32 = 4000;
/// The backend's domain.
const BACKEND: u16 = 0;
/// How long the backend gets for each response.
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
const REF_RING_RO: u32 = REF_RING + 6;
const REF_RING_BAD_PORT: u32 = REF_RING + 7;
const REF_RING_BAD_PROD: u32 = REF_RING + 8;
/// Beyond the one frame of our table.
const REF_BEYOND: u32 = 100_000;

/// A page the backend maps.
#[repr(C, align(4096))]
struct Page([AtomicU32; 1024]);

static RING: Page = Page([const { AtomicU32::new(0) }; 1024]);
static DATA: Page = Page([const { AtomicU32::new(0) }; 1024]);
static DATA_RO: Page = Page([const { AtomicU32::new(0) }; 1024]);
static RING_RO: Page = Page([const { AtomicU32::new(0) }; 1024]);
static RING_BAD_PORT: Page = Page([const { AtomicU32::new(0) }; 1024]);
static RING_BAD_PROD: Page = Page([const { AtomicU32::new(0) }; 1024]);

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
    ring: &'static Page,
    req_prod: u32,
    rsp_cons: u32,
    port: u32,
    next_id: u64,
}

const REQ_WORDS: usize = size_of::<BlkifRequest>() / 4;
const RSP_WORDS: usize = size_of::<BlkifResponse>() / 4;

impl Front {
    fn header(&self, offset: usize) -> &'static AtomicU32 {
        &self.ring.0[offset / 4]
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
            self.ring.0[at + i].store(w, Ordering::Relaxed);
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
                    *w = self.ring.0[at + i].load(Ordering::Acquire);
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
    bad: u32,
    run: u32,
}

impl Probes {
    /// Sends `req`, waits for its response, prints the probe line; returns the status (None: no response).
    fn probe(&mut self, front: &mut Front, name: &str, req: BlkifRequest, want: Want) -> Option<i16> {
        self.run += 1;
        let id = front.push(req);
        let rsp = front.pop(STEP_NS);
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

/// The backend directory of frontend `vbd`, once the backend is in InitWait.
fn backend_of(xs: &mut Xenstore, vbd: &str) -> Result<Msg, xtf::Outcome> {
    let mut buf = [0u8; 128];
    let be = Msg::new(format_args!("{}", xs.read(Msg::new(format_args!("{vbd}/backend")).as_str(), &mut buf)?));
    let state = xs.wait_for(Msg::new(format_args!("{be}/state")).as_str(), Xenstore::BACKEND_WAIT_NS, |s| {
        s >= u64::from(INIT_WAIT)
    });
    if state != Some(u64::from(INIT_WAIT)) {
        return Err(error!("{be}: backend state {state:?}, want InitWait (2)"));
    }
    Ok(be)
}

/// Writes frontend `vbd`'s ring-ref, event-channel and protocol, says Initialised, and waits for the backend to
/// connect (4) or give up (Closing 5, Closed 6); returns the backend's last state.
fn offer(xs: &mut Xenstore, vbd: &str, be: &str, ring_ref: u32, port: u32) -> Result<Option<u64>, xtf::Outcome> {
    let fe = |key: &str| Msg::new(format_args!("{vbd}/{key}"));
    xs.write_fmt(fe("ring-ref").as_str(), format_args!("{ring_ref}"))?;
    xs.write_fmt(fe("event-channel").as_str(), format_args!("{port}"))?;
    xs.write(fe("protocol").as_str(), b"x86_64-abi")?;
    xs.write_fmt(fe("state").as_str(), format_args!("{INITIALISED}"))?;
    Ok(xs.wait_for(Msg::new(format_args!("{be}/state")).as_str(), Xenstore::BACKEND_WAIT_NS, |s| {
        s >= u64::from(CONNECTED)
    }))
}

/// Connects frontend `vbd` with ring page `ring` (granted as `ring_ref`): the front end and the disk's sectors.
fn connect(
    xs: &mut Xenstore,
    gt: GrantTable,
    vbd: &str,
    ring: &'static Page,
    ring_ref: u32,
) -> Result<(Front, u64, Msg), xtf::Outcome> {
    let backend = backend_of(xs, vbd)?;
    let be = backend.as_str();
    let port = hypercall::evtchn_alloc_unbound(BACKEND).map_err(|e| error!("EVTCHNOP_alloc_unbound: {e}"))?;
    gt.grant(ring_ref, BACKEND, ring.gfn(), false);
    let state = offer(xs, vbd, be, ring_ref, port)?;
    if state != Some(u64::from(CONNECTED)) {
        return Err(error!("{be}: backend state {state:?} after Initialised, want Connected (4)"));
    }
    xs.write_fmt(Msg::new(format_args!("{vbd}/state")).as_str(), format_args!("{CONNECTED}"))?;
    // blkback writes the disk's size as it connects.
    let sectors = read_num(xs, be, "sectors").ok_or_else(|| error!("no {be}/sectors"))?;
    xtf::println!("hostile: {be} connected: ring-ref {ring_ref}, event channel {port}, {sectors} sectors");
    Ok((Front { ring, req_prod: 0, rsp_cons: 0, port, next_id: 1 }, sectors, backend))
}

/// A frontend that offers a bad ring (`ring_ref`, `port`): the backend must give up (Closing or Closed), and the
/// ring grant `check_ref`, if any, must be free again. Returns whether all went as it must.
fn refused(xs: &mut Xenstore, gt: GrantTable, name: &str, vbd: &str, ring_ref: u32, port: u32) -> bool {
    let Ok(backend) = backend_of(xs, vbd) else {
        xtf::println!("hostile: probe {name} no backend for {vbd} -> BAD");
        return false;
    };
    let state = offer(xs, vbd, backend.as_str(), ring_ref, port).ok().flatten();
    let gave_up = matches!(state, Some(5) | Some(6));
    let busy = ring_ref < gnttab::ENTRIES && gt.flags(ring_ref) & (gtf::READING | gtf::WRITING) != 0;
    let ok = gave_up && !busy;
    xtf::println!(
        "hostile: probe {name} backend state={} ring-grant-busy={busy} -> {}",
        state.map_or(-1, |s| s as i64),
        if ok { "ok" } else { "BAD" }
    );
    ok
}

fn test_main() -> xtf::TestResult {
    let mut xs = Xenstore::open()?;
    let gt = gnttab::setup().map_err(|e| error!("mapping the grant table: {e}"))?;
    gt.grant(REF_DATA, BACKEND, DATA.gfn(), false);
    gt.grant(REF_RO, BACKEND, DATA_RO.gfn(), true);
    gt.set_raw(REF_NONE, 0, BACKEND, DATA.gfn() as u32);
    gt.grant(REF_OTHER_DOM, 7, DATA.gfn(), false);
    // A frame far beyond the guest's RAM.
    gt.grant(REF_NO_FRAME, BACKEND, 0xf_0000, false);
    let (mut f, sectors, backend) = connect(&mut xs, gt, VBD, &RING, REF_RING)?;
    let be = backend.as_str();

    let mut p = Probes { bad: 0, run: 0 };
    use blkif::{OP_READ, OP_WRITE};
    let end = sectors;

    // Good: sector 0 holds dom0's text.
    DATA.fill(0xaaaa_aaaa);
    p.probe(&mut f, "good-read", rw(OP_READ, 0, &[(REF_DATA, 0, 0)]), Want::Okay);
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
    p.probe(&mut f, "good-write-ro-grant", rw(OP_WRITE, 1, &[(REF_RO, 0, 0)]), Want::Okay);

    p.probe(&mut f, "read-past-end", rw(OP_READ, end, &[(REF_DATA, 0, 0)]), Want::Error);
    p.probe(&mut f, "read-straddling-end", rw(OP_READ, end.saturating_sub(1), &[(REF_DATA, 0, 1)]), Want::Error);
    p.probe(&mut f, "read-sector-wraps", rw(OP_READ, u64::MAX, &[(REF_DATA, 0, 1)]), Want::Error);
    p.probe(&mut f, "gref-beyond-table", rw(OP_READ, 0, &[(REF_BEYOND, 0, 0)]), Want::Error);
    p.probe(&mut f, "gref-not-granted", rw(OP_READ, 0, &[(REF_NONE, 0, 0)]), Want::Error);
    p.probe(&mut f, "gref-other-domain", rw(OP_READ, 0, &[(REF_OTHER_DOM, 0, 0)]), Want::Error);
    p.probe(&mut f, "read-into-ro-grant", rw(OP_READ, 0, &[(REF_RO, 0, 0)]), Want::Error);
    p.probe(&mut f, "gref-frame-not-ram", rw(OP_READ, 0, &[(REF_NO_FRAME, 0, 0)]), Want::Error);
    let mut many = rw(OP_READ, 0, &[(REF_DATA, 0, 0); blkif::MAX_SEGMENTS_PER_REQUEST]);
    many.nr_segments = blkif::MAX_SEGMENTS_PER_REQUEST as u8 + 1;
    p.probe(&mut f, "segments-12", many, Want::Error);
    many.nr_segments = 255;
    p.probe(&mut f, "segments-255", many, Want::Error);
    p.probe(&mut f, "segments-0", rw(OP_READ, 0, &[]), Want::Error);
    p.probe(&mut f, "first-after-last", rw(OP_READ, 0, &[(REF_DATA, 3, 1)]), Want::Error);
    p.probe(&mut f, "last-past-page", rw(OP_READ, 0, &[(REF_DATA, 0, 8)]), Want::Error);
    let mut odd = rw(OP_READ, 0, &[(REF_DATA, 0, 0)]);
    odd.operation = 0x7f;
    p.probe(&mut f, "unknown-operation", odd, Want::Error);
    // The ring still serves good requests after the bad ones, and our grants are all free again.
    p.probe(&mut f, "good-read-after", rw(OP_READ, 0, &[(REF_DATA, 0, 0)]), Want::Okay);
    let busy = [REF_DATA, REF_RO].iter().filter(|&&r| gt.flags(r) & (gtf::READING | gtf::WRITING) != 0).count();
    if busy != 0 {
        p.bad += 1;
    }
    xtf::println!("hostile: probe grants-released busy={busy} -> {}", if busy == 0 { "ok" } else { "BAD" });

    // The read-only disk: reads work, writes are refused.
    let (mut r, _, _) = connect(&mut xs, gt, VBD_RO, &RING_RO, REF_RING_RO)?;
    p.probe(&mut r, "ro-disk-read", rw(OP_READ, 0, &[(REF_DATA, 0, 0)]), Want::Okay);
    p.probe(&mut r, "ro-disk-write", rw(OP_WRITE, 0, &[(REF_DATA, 0, 0)]), Want::Error);

    // Rings the backend must refuse at connect time: a ring-ref beyond the table; a good ring with an event
    // channel we never allocated (the ring must be unmapped again); a ring whose producer is already far ahead.
    let mut refusals = 0;
    let port = hypercall::evtchn_alloc_unbound(BACKEND).map_err(|e| error!("EVTCHNOP_alloc_unbound: {e}"))?;
    refusals += u32::from(!refused(&mut xs, gt, "bad-ring-ref", VBD_BAD_REF, REF_BEYOND, port));
    gt.grant(REF_RING_BAD_PORT, BACKEND, RING_BAD_PORT.gfn(), false);
    refusals += u32::from(!refused(&mut xs, gt, "bad-event-channel", VBD_BAD_PORT, REF_RING_BAD_PORT, PORT_UNBOUND));
    gt.grant(REF_RING_BAD_PROD, BACKEND, RING_BAD_PROD.gfn(), false);
    RING_BAD_PROD.0[blkif::REQ_PROD / 4].store(1000, Ordering::Release);
    let port = hypercall::evtchn_alloc_unbound(BACKEND).map_err(|e| error!("EVTCHNOP_alloc_unbound: {e}"))?;
    refusals += u32::from(!refused(&mut xs, gt, "prefilled-producer", VBD_BAD_PROD, REF_RING_BAD_PROD, port));
    p.run += 3;
    p.bad += refusals;
    // The first disk still works.
    p.probe(&mut f, "good-read-after-refusals", rw(OP_READ, 0, &[(REF_DATA, 0, 0)]), Want::Okay);

    // A flood of notifications; the backend must still serve the ring afterwards.
    evtchn::flood(f.port, FLOOD);
    p.probe(&mut f, "good-read-after-flood", rw(OP_READ, 0, &[(REF_DATA, 0, 0)]), Want::Okay);

    // Last: a producer index far ahead of the consumer. blkback must stop serving the ring: no response.
    let rsp_before = f.header(blkif::RSP_PROD).load(Ordering::Acquire);
    f.req_prod = f.req_prod.wrapping_add(1000);
    f.header(blkif::REQ_PROD).store(f.req_prod, Ordering::Release);
    let _ = evtchn::send(f.port);
    let quiet = f.pop(QUIET_NS).is_none();
    let rsp_after = f.header(blkif::RSP_PROD).load(Ordering::Acquire);
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
