//! `xm save <Domain> <CheckpointFile>` and `xm restore [-p] [-c] <CheckpointFile>`, Xen's way: the guest takes
//! part. The save asks the guest to suspend (`control/shutdown` = `suspend`; Linux's xen manage driver freezes its
//! tasks, suspends its devices and calls SCHEDOP_shutdown(suspend), which returns 0 into the saved context), waits
//! for the domain to shut down with that reason, writes its state, and destroys it. The restore makes a new domain
//! from the saved configuration with the saved memory and vCPU state; its kernel sees its suspend hypercall
//! return 0 and resumes: it registers its shared_info and vcpu_info again, rebinds its event channels, and its
//! frontends reconnect to the backends attached here for the new domain.
//!
//! The file (docs/save-format.md) is a header and a sequence of records, each typed and sized, closed by an END
//! record holding the SHA-256 of every byte before it ([`Writer`], [`Reader`]). The restore reads the whole file
//! once to check it before it creates anything, so a truncated or corrupted file gets one clear error and leaves
//! nothing behind.
//!
//! What is saved:
//! - the domain's configuration ([`super::create::CONFIG_NODE`], as `xm create` recorded it), with its UUID and
//!   each vif's MAC as they are, so that the restored domain is the same machine;
//! - the HVM context (XEN_DOMCTL_gethvmcontext: per vCPU its CPU record with the FPU image, LAPIC, LAPIC_REGS
//!   and MTRR records);
//! - the HVM parameters the toolstack sets (the xenstore and console rings and their event channels);
//! - every frame of the domain's memory that maps, in the ranges `xm create` populates (RAM up to
//!   `memory/static-max`, the ACPI pages, the special pages), probed in batches as `xm dump-core` does: a
//!   ballooned-out frame is a hole, not an error.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use keel_abi::domctl::dominf;
use keel_abi::hypercall::ShutdownReason;
use keel_abi::shared_info::hvm_param;
use keel_config::DomainConfig;
use keel_xenctrl::devices::ForeignPages;
use keel_xenctrl::Xc;
use sha2::{Digest, Sha256};

use super::cmdtable::{RestoreArgs, SaveArgs};
use super::commands::CmdResult;
use super::create::{self, Rings};
use super::lifecycle::Ctx;
use super::XmError;

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"KEELSAVE";
/// The format's version; a reader takes this one and the earlier ones (version 1 had no ZEROS or ROUND record).
pub const VERSION: u32 = 2;
/// Bytes of a page.
const PAGE: usize = 4096;
/// Frames probed and written per record.
const BATCH: usize = 256;
/// The most bytes one record may hold (a page batch with its frame numbers is well below).
const RECORD_MAX: u32 = 16 << 20;
/// The most pages a domU's ACPI area takes (its tables grow with the vCPUs; a probe of pages not there costs
/// nothing).
const ACPI_PAGES_MAX: u64 = 16;
/// How long the guest gets to suspend.
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(120);

/// Record types.
pub mod rec {
    /// SHA-256 (32 bytes) of every byte of the file before this record's header; the last record.
    pub const END: u32 = 0;
    /// The domain's configuration, as text in Xen's config syntax.
    pub const CONFIG: u32 = 1;
    /// XEN_DOMCTL_gethvmcontext's record stream.
    pub const HVM_CONTEXT: u32 = 2;
    /// HVM parameters: pairs of (index u32, reserved u32, value u64).
    pub const HVM_PARAMS: u32 = 3;
    /// Pages: a count u32, reserved u32, `count` frame numbers (u64), then `count` pages of 4096 bytes.
    pub const PAGES: u32 = 4;
    /// The end of a pre-copy round (migration streams): the round u32, the pages it sent u32.
    pub const ROUND: u32 = 5;
    /// Pages that are all zeros: a count u32, reserved u32, `count` frame numbers (u64).
    pub const ZEROS: u32 = 6;
}

/// The HVM parameters a save carries (what the toolstack, not the guest, sets).
const PARAMS: [u32; 4] =
    [hvm_param::STORE_PFN, hvm_param::STORE_EVTCHN, hvm_param::CONSOLE_PFN, hvm_param::CONSOLE_EVTCHN];

fn failed(s: impl Into<String>) -> XmError {
    XmError::Failed(s.into())
}

/// Writes a save file: the header, then records; [`Writer::finish`] adds END.
pub struct Writer<W: Write> {
    out: W,
    /// None for a migration stream, whose channel authenticates every byte (END then carries zeros).
    hash: Option<Sha256>,
    /// Bytes written so far.
    pub bytes: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a file on `out` with the header.
    pub fn new(out: W) -> Result<Self, std::io::Error> {
        Self::start(out, Some(Sha256::new()))
    }

    /// Starts a migration stream on `out`: no SHA-256 (the channel's AEAD authenticates every byte), END all zeros.
    pub fn stream(out: W) -> Result<Self, std::io::Error> {
        Self::start(out, None)
    }

    fn start(out: W, hash: Option<Sha256>) -> Result<Self, std::io::Error> {
        let mut w = Writer { out, hash, bytes: 0 };
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        w.put(&head)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), std::io::Error> {
        if let Some(h) = &mut self.hash {
            h.update(b);
        }
        self.bytes += b.len() as u64;
        self.out.write_all(b)
    }

    /// One record of `typ` whose payload is the concatenation of `parts`.
    pub fn record(&mut self, typ: u32, parts: &[&[u8]]) -> Result<(), std::io::Error> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len).ok().filter(|&l| l <= RECORD_MAX).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("record of {len} bytes is too large"))
        })?;
        let mut head = typ.to_le_bytes().to_vec();
        head.extend_from_slice(&len.to_le_bytes());
        self.put(&head)?;
        for p in parts {
            self.put(p)?;
        }
        Ok(())
    }

    /// A PAGES record of `gfns` and their contents (`data`: `gfns.len()` pages).
    pub fn pages(&mut self, gfns: &[u64], data: &[u8]) -> Result<(), std::io::Error> {
        let mut head = (gfns.len() as u32).to_le_bytes().to_vec();
        head.extend_from_slice(&0u32.to_le_bytes());
        let frames: Vec<u8> = gfns.iter().flat_map(|g| g.to_le_bytes()).collect();
        self.record(rec::PAGES, &[&head, &frames, data])
    }

    /// The output, for a flush between records.
    pub fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// A ROUND record: pre-copy round `round` ended, having sent `pages` pages.
    pub fn round(&mut self, round: u32, pages: u32) -> Result<(), std::io::Error> {
        let mut body = round.to_le_bytes().to_vec();
        body.extend_from_slice(&pages.to_le_bytes());
        self.record(rec::ROUND, &[&body])
    }

    /// A ZEROS record of `gfns`.
    pub fn zeros(&mut self, gfns: &[u64]) -> Result<(), std::io::Error> {
        let mut head = (gfns.len() as u32).to_le_bytes().to_vec();
        head.extend_from_slice(&0u32.to_le_bytes());
        let frames: Vec<u8> = gfns.iter().flat_map(|g| g.to_le_bytes()).collect();
        self.record(rec::ZEROS, &[&head, &frames])
    }

    /// Closes the file with END (the SHA-256 of everything before it); the writer back.
    pub fn finish(mut self) -> Result<W, std::io::Error> {
        let digest: [u8; 32] = self.hash.take().map_or([0; 32], |h| h.finalize().into());
        let mut head = rec::END.to_le_bytes().to_vec();
        head.extend_from_slice(&32u32.to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record read back.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    Config(String),
    HvmContext(Vec<u8>),
    HvmParams(Vec<(u32, u64)>),
    /// Frame numbers and their pages (`4096 * gfns.len()` bytes).
    Pages(Vec<u64>, Vec<u8>),
    /// A pre-copy round ended: its number and the pages it sent.
    Round(u32, u32),
    /// Frame numbers of pages that are all zeros.
    Zeros(Vec<u64>),
}

/// Reads a save file's records in order, checking the header, each record's framing, and at the end the
/// SHA-256: [`Reader::next`] gives `Ok(None)` only after a valid END at the very end of the file.
pub struct Reader<R: Read> {
    input: R,
    /// None for a migration stream (see [`Writer::stream`]).
    hash: Option<Sha256>,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Checks the header.
    pub fn new(input: R) -> Result<Self, String> {
        Self::start(input, true)
    }

    /// Reads a migration stream (see [`Writer::stream`]): END's digest is not checked.
    pub fn stream(input: R) -> Result<Self, String> {
        Self::start(input, false)
    }

    fn start(mut input: R, hashed: bool) -> Result<Self, String> {
        let mut head = [0u8; 16];
        input.read_exact(&mut head).map_err(|_| "too short for a Keel save file".to_string())?;
        if head[..8] != MAGIC {
            return Err("not a Keel save file (bad magic)".into());
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if !(1..=VERSION).contains(&version) {
            return Err(format!("save format version {version}; this xm reads versions 1 to {VERSION}"));
        }
        let hash = hashed.then(|| {
            let mut h = Sha256::new();
            h.update(head);
            h
        });
        Ok(Reader { input, hash, done: false })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; n];
        self.input.read_exact(&mut b).map_err(|_| format!("truncated in {what}"))?;
        Ok(b)
    }

    /// The next record; `Ok(None)` once the END record has been checked.
    pub fn next_record(&mut self) -> Result<Option<Record>, String> {
        if self.done {
            return Ok(None);
        }
        let head = self.take(8, "a record header")?;
        let typ = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if typ == rec::END {
            let digest = self.take(len.min(64) as usize, "the END record")?;
            let good = match self.hash.take() {
                Some(h) => digest[..] == h.finalize()[..],
                None => true,
            };
            if len != 32 || !good {
                return Err("checksum mismatch: the file is corrupted".into());
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra).map_err(|e| e.to_string())? != 0 {
                return Err("bytes after the END record".into());
            }
            self.done = true;
            return Ok(None);
        }
        if len > RECORD_MAX {
            return Err(format!("record of type {typ} claims {len} bytes: the file is corrupted"));
        }
        if let Some(h) = &mut self.hash {
            h.update(&head);
        }
        let body = self.take(len as usize, &format!("a record of type {typ}"))?;
        if let Some(h) = &mut self.hash {
            h.update(&body);
        }
        let bad = |what: &str| Err(format!("malformed {what} record"));
        Ok(Some(match typ {
            rec::CONFIG => match String::from_utf8(body) {
                Ok(t) => Record::Config(t),
                Err(_) => return bad("configuration"),
            },
            rec::HVM_CONTEXT => Record::HvmContext(body),
            rec::HVM_PARAMS => {
                if body.len() % 16 != 0 {
                    return bad("HVM parameter");
                }
                Record::HvmParams(
                    body.chunks_exact(16)
                        .map(|c| {
                            (
                                u32::from_le_bytes(c[..4].try_into().expect("4 bytes")),
                                u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
                            )
                        })
                        .collect(),
                )
            }
            rec::PAGES => {
                let count = body.get(..4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as usize);
                let Some(count) = count.filter(|&n| body.len() == 8 + n * (8 + PAGE)) else {
                    return bad("page");
                };
                let gfns = body[8..8 + 8 * count]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                Record::Pages(gfns, body[8 + 8 * count..].to_vec())
            }
            rec::ZEROS => {
                let count = body.get(..4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as usize);
                if count.is_none_or(|n| body.len() != 8 + n * 8) {
                    return bad("zero-page");
                }
                Record::Zeros(
                    body[8..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
                )
            }
            rec::ROUND => {
                if body.len() != 8 {
                    return bad("round");
                }
                let word = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4 bytes"));
                Record::Round(word(0), word(4))
            }
            t => return Err(format!("unknown record type {t}")),
        }))
    }
}

/// What a whole, checked file holds apart from its pages.
#[derive(Debug, Default)]
pub struct Summary {
    pub config: Option<String>,
    pub hvm_context: Option<Vec<u8>>,
    pub params: Vec<(u32, u64)>,
    pub pages: u64,
}

/// What [`read_all`] does with each PAGES record: its frame numbers and pages (none: a ZEROS record's frames,
/// all zeros).
pub type PagesFn<'a> = dyn FnMut(&[u64], &[u8]) -> Result<(), String> + 'a;

/// Reads a whole file from `input`, checking it, with `each_pages` for every PAGES record.
pub fn read_all<R: Read>(input: R, each_pages: &mut PagesFn<'_>) -> Result<Summary, String> {
    let mut r = Reader::new(input)?;
    let mut s = Summary::default();
    while let Some(record) = r.next_record()? {
        match record {
            Record::Config(t) => s.config = Some(t),
            Record::HvmContext(c) => s.hvm_context = Some(c),
            Record::HvmParams(p) => s.params = p,
            Record::Pages(gfns, data) => {
                s.pages += gfns.len() as u64;
                each_pages(&gfns, &data)?;
            }
            Record::Zeros(gfns) => {
                s.pages += gfns.len() as u64;
                each_pages(&gfns, &[])?;
            }
            Record::Round(..) => {}
        }
    }
    Ok(s)
}

/// The configuration `xm create` recorded for domain `domid`, with the UUID and vif MACs it has now.
pub(crate) fn current_config(c: &mut Ctx, domid: u16) -> Result<DomainConfig, XmError> {
    let vm = c.xs.read(&format!("/local/domain/{domid}/vm")).unwrap_or_default();
    let text =
        c.xs.read(&format!("{vm}/{}", create::CONFIG_NODE)).filter(|_| vm.starts_with("/vm/")).ok_or_else(|| {
            failed(format!(
                "domain {domid} has no recorded configuration (it was not made by xm create): cannot save it"
            ))
        })?;
    let mut config = keel_config::from_text("(recorded configuration)", &text, &[])
        .map_err(|e| failed(format!("domain {domid}'s recorded configuration: {e}")))?
        .config;
    config.uuid = keel_config::Uuid::parse(vm.trim_start_matches("/vm/")).or(config.uuid);
    // Its name as it is now (`xm rename`, or a migration that brought it in as NAME--incoming).
    if let Some(name) = c.xs.read(&format!("/local/domain/{domid}/name")).filter(|n| !n.is_empty()) {
        config.name = name;
    }
    for vif in &mut config.vif {
        let node = format!("/local/domain/0/backend/vif/{domid}/{}/mac", vif.devid);
        if let Some(mac) = c.xs.read(&node).and_then(|m| keel_config::vif::Mac::parse(&m).ok()) {
            vif.mac = Some(mac);
        }
    }
    Ok(config)
}

/// The frames a save probes: what `xm create` populates (RAM up to `static-max`, the ACPI pages, the special
/// pages), with the ACPI area at its largest.
fn candidate_frames(static_max_bytes: u64) -> Vec<(u64, u64)> {
    keel_builder::frame_runs(static_max_bytes, ACPI_PAGES_MAX)
}

/// Every frame [`candidate_frames`] names, in order.
pub(crate) fn candidate_gfns(static_max_bytes: u64) -> Vec<u64> {
    candidate_frames(static_max_bytes).into_iter().flat_map(|(first, count)| first..first + count).collect()
}

/// A progress bar of `total` pages on standard error when it is a terminal, none otherwise (a script reading xm's
/// output sees only its lines).
pub(crate) fn progress_bar(total: u64, what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:32}] {pos}/{len} pages, {per_sec}, {eta} left")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    Some(bar)
}

/// Writes the frames of `gfns` that map in domain `domid` as PAGES records, probed in batches (a frame that does
/// not map, ballooned out, is skipped), moving `bar` on; the pages written.
pub(crate) fn send_frames<W: Write>(
    w: &mut Writer<W>,
    domid: u16,
    gfns: &[u64],
    bar: Option<&indicatif::ProgressBar>,
) -> Result<u64, XmError> {
    let io = |e: std::io::Error| failed(format!("writing the domain's pages: {e}"));
    let mut pages = 0u64;
    for chunk in gfns.chunks(BATCH) {
        let batch = ForeignPages::foreign_each(domid, chunk).map_err(|e| failed(e.to_string()))?;
        let mut kept = Vec::with_capacity(chunk.len());
        let mut zeros = Vec::new();
        let mut data = Vec::with_capacity(chunk.len() * PAGE);
        for (i, &g) in chunk.iter().enumerate() {
            if let Some(p) = batch.page(i) {
                if is_zero(p) {
                    zeros.push(g);
                } else {
                    kept.push(g);
                    data.extend_from_slice(p);
                }
            }
        }
        drop(batch);
        if !kept.is_empty() {
            w.pages(&kept, &data).map_err(io)?;
        }
        if !zeros.is_empty() {
            w.zeros(&zeros).map_err(io)?;
        }
        pages += (kept.len() + zeros.len()) as u64;
        if let Some(b) = bar {
            b.inc(chunk.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(pages)
}

/// Whether a page is all zeros (sent as a frame number alone).
fn is_zero(page: &[u8]) -> bool {
    match bytemuck::try_cast_slice::<u8, u64>(page) {
        Ok(words) => words.iter().all(|&w| w == 0),
        Err(_) => page.iter().all(|&b| b == 0),
    }
}

/// The HVM_PARAMS record's payload for domain `domid`.
pub(crate) fn params_record(xc: &Xc, domid: u16) -> Result<Vec<u8>, XmError> {
    let mut params = Vec::new();
    for p in PARAMS {
        let v = xc.hvm_param(domid, p).map_err(|e| failed(format!("HVM parameter {p}: {e}")))?;
        params.extend_from_slice(&p.to_le_bytes());
        params.extend_from_slice(&0u32.to_le_bytes());
        params.extend_from_slice(&v.to_le_bytes());
    }
    Ok(params)
}

/// Populates (where `populated` does not hold them yet, noting them there) and writes saved pages into domain `id`.
pub(crate) fn load_pages(
    xc: &Xc,
    id: u16,
    gfns: &[u64],
    data: &[u8],
    populated: &mut std::collections::HashSet<u64>,
) -> Result<(), String> {
    let fresh: Vec<u64> = gfns.iter().copied().filter(|g| !populated.contains(g)).collect();
    for chunk in fresh.chunks(4096) {
        xc.populate_physmap(id, chunk, 0).map_err(|e| format!("populating the saved frames: {e}"))?;
    }
    if data.is_empty() {
        // Zero pages: a fresh frame is zeroed already; one written before (an earlier round) is cleared.
        let old: Vec<u64> = gfns.iter().copied().filter(|g| !fresh.contains(g)).collect();
        populated.extend(fresh);
        if !old.is_empty() {
            let mut map = ForeignPages::foreign(id, &old).map_err(|e| e.to_string())?;
            map.fill(0);
        }
        return Ok(());
    }
    populated.extend(fresh);
    let mut map = ForeignPages::foreign(id, gfns).map_err(|e| e.to_string())?;
    map[..data.len()].copy_from_slice(data);
    Ok(())
}

/// Cancels a suspend, as libxc's cooperative xc_domain_resume: the suspend hypercall's result in vCPU 0 becomes 1
/// (Linux then keeps its event channels, grants and devices as they are), and the domain runs again.
pub fn resume_cancelled(xc: &Xc, domid: u16) -> Result<(), String> {
    use keel_abi::domctl::{hvm_save, HvmHwCpu};
    let mut ctx = xc.hvm_context(domid).map_err(|e| format!("gethvmcontext: {e}"))?;
    let records = super::dumpcore::hvm_records(&ctx).map_err(XmError::into_reason)?;
    let rax = std::mem::offset_of!(HvmHwCpu, rax);
    let Some((_, cpu0)) = records
        .into_iter()
        .find(|(d, r)| d.typecode == hvm_save::CPU && d.instance == 0 && r.len() == std::mem::size_of::<HvmHwCpu>())
    else {
        return Err("vCPU 0 has no CPU record".into());
    };
    ctx[cpu0.start + rax..cpu0.start + rax + 8].copy_from_slice(&1u64.to_le_bytes());
    xc.set_hvm_context(domid, &ctx).map_err(|e| format!("sethvmcontext: {e}"))?;
    xc.resume_domain(domid).map_err(|e| format!("resumedomain: {e}"))
}

/// Asks domain `domid` to suspend and waits until it has (shut down with reason suspend). On a timeout the
/// request is withdrawn and the guest keeps running.
pub(crate) fn suspend(c: &mut Ctx, domid: u16) -> Result<(), XmError> {
    let control = format!("/local/domain/{domid}/control/shutdown");
    c.xs.write(&control, "suspend")?;
    let start = Instant::now();
    loop {
        let info =
            c.hv.domain_info(domid)?.ok_or_else(|| failed(format!("domain {domid} vanished while suspending")))?;
        if info.flags & dominf::SHUTDOWN != 0 {
            let reason = (info.flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK;
            if reason == ShutdownReason::Suspend as u32 {
                return Ok(());
            }
            return Err(failed(format!("domain {domid} shut down (reason {reason}) instead of suspending")));
        }
        if start.elapsed() > SUSPEND_TIMEOUT {
            let _ = c.xs.write(&control, "");
            return Err(failed(format!(
                "domain {domid} did not suspend within {} s (does its kernel support suspend?); it keeps running",
                SUSPEND_TIMEOUT.as_secs()
            )));
        }
        // Short: the wait is part of a live migration's downtime.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Domain `domid`'s `memory/static-max`, in bytes.
pub(crate) fn static_max_bytes(c: &mut Ctx, domid: u16) -> Result<u64, XmError> {
    Ok(c.xs
        .read(&format!("/local/domain/{domid}/memory/static-max"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| failed("the domain's memory/static-max is missing"))?
        << 10)
}

/// What a save wrote.
pub struct Saved {
    pub pages: u64,
    pub bytes: u64,
}

/// Writes the state of suspended domain `domid` to `out`.
fn write_state<W: Write>(
    xc: &Xc,
    domid: u16,
    config: &DomainConfig,
    static_max: u64,
    out: W,
) -> Result<(W, Saved), XmError> {
    let io = |e: std::io::Error| failed(format!("writing the save file: {e}"));
    let mut w = Writer::new(out).map_err(io)?;
    w.record(rec::CONFIG, &[config.to_config_text().as_bytes()]).map_err(io)?;
    let ctx = xc.hvm_context(domid).map_err(|e| failed(format!("gethvmcontext: {e}")))?;
    w.record(rec::HVM_CONTEXT, &[&ctx]).map_err(io)?;
    w.record(rec::HVM_PARAMS, &[&params_record(xc, domid)?]).map_err(io)?;
    let gfns = candidate_gfns(static_max);
    let bar = progress_bar(gfns.len() as u64, "saving");
    let pages = send_frames(&mut w, domid, &gfns, bar.as_ref())?;
    let bytes = w.bytes + 40;
    let out = w.finish().map_err(io)?;
    Ok((out, Saved { pages, bytes }))
}

/// `xm save <Domain> <CheckpointFile>`.
pub fn save(args: &SaveArgs) -> CmdResult {
    let xc = Xc::open().map_err(|e| failed(e.to_string()))?;
    super::lifecycle::with_host(|c| {
        let (d, name) = c.find(&args.domain)?;
        if d.domain == 0 {
            return Err(failed("cannot save domain 0"));
        }
        let config = current_config(c, d.domain)?;
        let static_max = static_max_bytes(c, d.domain)?;
        let path = &args.checkpoint_file;
        let tmp = super::partial_path(path);
        // The file is created before the guest is asked anything: a path that cannot be written costs nothing.
        let file = std::fs::File::create(&tmp).map_err(|e| failed(format!("cannot create {}: {e}", path.display())))?;
        let started = Instant::now();
        if let Err(e) = suspend(c, d.domain) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let suspended = started.elapsed();
        let written = write_state(&xc, d.domain, &config, static_max, BufWriter::new(file)).and_then(|(out, s)| {
            let file = out.into_inner().map_err(|e| failed(format!("writing {}: {e}", tmp.display())))?;
            file.sync_all().map_err(|e| failed(format!("writing {}: {e}", tmp.display())))?;
            std::fs::rename(&tmp, path)
                .map_err(|e| failed(format!("cannot rename the save file to {}: {e}", path.display())))?;
            Ok(s)
        });
        let s = match written {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                let why = e.into_reason();
                // The guest's suspend is cancelled: it carries on as it was, devices and all.
                return Err(failed(match resume_cancelled(&xc, d.domain) {
                    Ok(()) => format!("{why}; nothing was saved, and domain {} ({name}) runs on", d.domain),
                    Err(r) => {
                        format!("{why}; domain {} ({name}) could not be resumed ({r}) and is left suspended", d.domain)
                    }
                }));
            }
        };
        c.destroy(&args.domain)?;
        println!(
            "Saved domain {} ({name}) to {}: {} pages, {} bytes, suspended in {} ms, saved in {} ms",
            d.domain,
            path.display(),
            s.pages,
            s.bytes,
            suspended.as_millis(),
            started.elapsed().as_millis()
        );
        Ok(())
    })
}

/// Sets up new domain `id` from a checked save file at `path`: its pages (populated, then written), the HVM
/// parameters, the console and xenstore event channels (which must get the ports the guest had: the first two a
/// new domain allocates, console first, as the build allocates them), the two reserved grants, and the HVM context
/// last (its vCPUs start at the unpause).
fn load_state(xc: &Xc, id: u16, path: &Path, pages: u64) -> Result<Rings, XmError> {
    let file = std::fs::File::open(path).map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
    let mut populated = std::collections::HashSet::new();
    let bar = progress_bar(pages, "restoring");
    let mut write_pages = |gfns: &[u64], data: &[u8]| {
        if let Some(b) = &bar {
            b.inc(gfns.len() as u64);
        }
        load_pages(xc, id, gfns, data, &mut populated)
    };
    let s = read_all(BufReader::new(file), &mut write_pages).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let rings = apply_params(xc, id, &s.params).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    let ctx = s.hvm_context.ok_or_else(|| failed(format!("{}: no HVM context", path.display())))?;
    xc.set_hvm_context(id, &ctx).map_err(|e| failed(format!("sethvmcontext: {e}")))?;
    Ok(rings)
}

/// Gives new domain `id` the saved HVM parameters, the console and xenstore event channels (which must get the
/// ports the guest had: the first two a new domain allocates, console first, as the build allocates them), and the
/// two reserved grants.
pub(crate) fn apply_params(xc: &Xc, id: u16, params: &[(u32, u64)]) -> Result<Rings, String> {
    let param = |i: u32| params.iter().find(|(p, _)| *p == i).map(|(_, v)| *v);
    let (Some(store_pfn), Some(store_port), Some(console_pfn), Some(console_port)) = (
        param(hvm_param::STORE_PFN),
        param(hvm_param::STORE_EVTCHN),
        param(hvm_param::CONSOLE_PFN),
        param(hvm_param::CONSOLE_EVTCHN),
    ) else {
        return Err("the ring parameters are missing".into());
    };
    let step = |what: &str, r: keel_xenctrl::Result<u32>| r.map_err(|e| format!("{what}: {e}"));
    let console = step("console event channel", xc.evtchn_alloc_unbound(id, 0))?;
    let store = step("xenstore event channel", xc.evtchn_alloc_unbound(id, 0))?;
    if (u64::from(console), u64::from(store)) != (console_port, store_port) {
        return Err(format!(
            "the new domain's console and xenstore ports are {console} and {store}, the saved guest's {console_port} and \
             {store_port}"
        ));
    }
    for (p, v) in params {
        xc.set_hvm_param(id, *p, *v).map_err(|e| format!("HVM parameter {p}: {e}"))?;
    }
    let mut ops = keel_builder::xc::XcOps { xc, unpause: false };
    use keel_builder::DomainOps;
    for (gref, pfn) in
        [(keel_builder::GNTTAB_RESERVED_CONSOLE, console_pfn), (keel_builder::GNTTAB_RESERVED_XENSTORE, store_pfn)]
    {
        ops.seed_grant(id, gref, 0, pfn).map_err(|e| format!("grant {gref}: {e}"))?;
    }
    Ok(Rings { store_pfn, store_port: store, console_pfn, console_port: console })
}

/// `xm restore [-p] [-c] <CheckpointFile>`.
pub fn restore(args: &RestoreArgs) -> CmdResult {
    let path = &args.checkpoint_file;
    // Checked whole before anything is made: the configuration comes from it too.
    let file = std::fs::File::open(path).map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
    let started = Instant::now();
    let summary =
        read_all(BufReader::new(file), &mut |_, _| Ok(())).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    let text = summary.config.ok_or_else(|| failed(format!("{}: no configuration record", path.display())))?;
    let config = keel_config::from_text(&path.to_string_lossy(), &text, &[])
        .map_err(|e| failed(format!("{}: its configuration: {e}", path.display())))?
        .config;
    let id = create::make_domain(&config, args.paused, &mut |xc, id| load_state(xc, id, path, summary.pages))?;
    println!(
        "Restored domain {} (id={id}) from {}: {} pages in {} ms",
        config.name,
        path.display(),
        summary.pages,
        started.elapsed().as_millis()
    );
    let _ = std::io::stdout().flush();
    if let Err(e) = super::monitor::spawn(&config, id) {
        eprintln!("xm: warning: domain {id} runs without its monitor (on_poweroff/on_reboot/on_crash): {e}");
    }
    if args.console {
        return super::console::attach_domain(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.record(rec::CONFIG, &[b"name = \"web\"\n"]).unwrap();
        w.record(rec::HVM_CONTEXT, &[&[1, 2, 3]]).unwrap();
        let mut params = 1u32.to_le_bytes().to_vec();
        params.extend_from_slice(&[0; 4]);
        params.extend_from_slice(&0xfeffcu64.to_le_bytes());
        w.record(rec::HVM_PARAMS, &[&params]).unwrap();
        let mut data = vec![0xaau8; PAGE];
        data.extend(vec![0x55u8; PAGE]);
        w.pages(&[7, 0x100], &data).unwrap();
        w.zeros(&[9]).unwrap();
        w.finish().unwrap()
    }

    /// A file reads back record for record, and END's checksum closes it.
    #[test]
    fn a_save_file_reads_back() {
        let bytes = sample();
        let mut seen = Vec::new();
        let s = read_all(&bytes[..], &mut |g, d| {
            seen.push((g.to_vec(), d.first().copied(), d.get(PAGE).copied()));
            Ok(())
        })
        .unwrap();
        assert_eq!(s.config.as_deref(), Some("name = \"web\"\n"));
        assert_eq!(s.hvm_context.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(s.params, [(1, 0xfeffc)]);
        assert_eq!(s.pages, 3);
        assert_eq!(seen, [(vec![7, 0x100], Some(0xaa), Some(0x55)), (vec![9], None, None)], "a ZEROS record: no data");
    }

    /// Every truncation and every flipped byte is an error, never a partial success.
    #[test]
    fn truncated_or_corrupted_files_are_refused() {
        let bytes = sample();
        for n in 0..bytes.len() {
            assert!(read_all(&bytes[..n], &mut |_, _| Ok(())).is_err(), "truncated to {n} bytes");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(read_all(&b[..], &mut |_, _| Ok(())).is_err(), "byte {i} flipped");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(read_all(&longer[..], &mut |_, _| Ok(())).unwrap_err(), "bytes after the END record");
        assert_eq!(
            read_all(&b"KEELSAVE\x03\0\0\0\0\0\0\0"[..], &mut |_, _| Ok(())).unwrap_err(),
            "save format version 3; this xm reads versions 1 to 2"
        );
        assert_eq!(read_all(&b"ELF"[..], &mut |_, _| Ok(())).unwrap_err(), "too short for a Keel save file");
    }

    /// A migration stream's END carries no digest: the channel authenticates; the framing is checked all the same.
    #[test]
    fn a_migration_stream_reads_back_without_a_digest() {
        let mut w = Writer::stream(Vec::new()).unwrap();
        w.record(rec::CONFIG, &[b"name = \"web\"\n"]).unwrap();
        w.round(0, 5).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(&bytes[bytes.len() - 32..], &[0; 32]);
        let mut r = Reader::stream(&bytes[..]).unwrap();
        assert_eq!(r.next_record().unwrap(), Some(Record::Config("name = \"web\"\n".into())));
        assert_eq!(r.next_record().unwrap(), Some(Record::Round(0, 5)));
        assert_eq!(r.next_record().unwrap(), None);
        assert!(Reader::new(&bytes[..]).unwrap().next_record().is_ok());
        assert!(read_all(&bytes[..], &mut |_, _| Ok(())).unwrap_err().contains("checksum"), "a file needs it");
        assert!(Reader::stream(&bytes[..bytes.len() - 1])
            .and_then(|mut r| {
                while r.next_record()?.is_some() {}
                Ok(())
            })
            .is_err());
    }

    /// A record claiming more than the bound is refused before anything is allocated for it.
    #[test]
    fn a_huge_record_length_is_refused() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&rec::PAGES.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = read_all(&b[..], &mut |_, _| Ok(())).unwrap_err();
        assert!(e.contains("claims 4294967295 bytes"), "{e}");
    }
}
