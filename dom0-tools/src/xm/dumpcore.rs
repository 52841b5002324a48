//! `xm dump-core`: an ELF core ([`super::corefile`]) of a running PVH domU, read through privcmd while the domain
//! is paused.
//!
//! - Registers: XEN_DOMCTL_gethvmcontext, one CPU record (`struct hvm_hw_cpu`) per vCPU that is up, each turned
//!   into the `user_regs_struct` of an `NT_PRSTATUS` note (vCPUs that are down have no record and no note).
//! - Memory: the domain's RAM lies where the builder puts it ([`keel_builder::ram_ranges`] of its
//!   `memory/static-max`); those frames are mapped in batches of [`BATCH`] with privcmd's mmapbatch (Xen's
//!   add_to_physmap_batch with gmfn_foreign). A first pass keeps the frames that map (a ballooned-out page is a
//!   hole, not an error), the second copies them into `PT_LOAD` segments. Each batch is unmapped as soon as it is
//!   copied.
//! - Addresses: a segment's `p_paddr` and `p_vaddr` are both the guest-physical address. Keel's tiny test guest
//!   runs with paging off (so gdb's `x/s 0x100040` reads what the guest sees there); for a Linux guest, whose code
//!   runs at 0xffffffff8…, gdb reads physical memory at the physical address (crash(8) and similar tools map
//!   kernel virtual addresses through the guest's page tables, CR3 being in the notes' registers).
//! - The file: written under a temporary name beside the target and renamed into place once complete, so a failed
//!   dump leaves no file that looks whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use keel_abi::domctl::{hvm_save, seg, HvmHwCpu, SaveDescriptor};

use super::corefile::{CoreSource, CoreSummary, MemRange, VcpuRegs, PAGE_SIZE};
use super::lifecycle::{Ctx, Done};
use super::XmError;
use crate::domain::DomainRef;

/// Frames mapped per privcmd call.
pub const BATCH: usize = 256;

/// Where `xm dump-core` writes when not given a file name: `/var/lib/xen/dump/NAME.core`.
pub fn default_path(name: &str) -> PathBuf {
    Path::new(super::onshutdown::DUMP_DIR).join(format!("{name}.core"))
}

/// What a dump reads of a domain (privcmd in dom0; a fake in the tests).
pub trait DomainAccess {
    /// XEN_DOMCTL_gethvmcontext: the domain's HVM record stream.
    fn hvm_context(&mut self) -> Result<Vec<u8>, XmError>;
    /// Maps `gfns` and calls `each` with each frame's index in `gfns` and its page (None: it did not map). The
    /// mapping is gone when this returns.
    fn map(&mut self, gfns: &[u64], each: &mut dyn FnMut(usize, Option<&[u8]>)) -> Result<(), XmError>;
}

/// Domain `domid` through privcmd.
pub struct Privcmd<'a> {
    pub xc: &'a keel_xenctrl::Xc,
    pub domid: u16,
}

impl DomainAccess for Privcmd<'_> {
    fn hvm_context(&mut self) -> Result<Vec<u8>, XmError> {
        self.xc.hvm_context(self.domid).map_err(|e| XmError::Failed(format!("gethvmcontext: {e}")))
    }
    fn map(&mut self, gfns: &[u64], each: &mut dyn FnMut(usize, Option<&[u8]>)) -> Result<(), XmError> {
        let batch = keel_xenctrl::devices::ForeignPages::foreign_each(self.domid, gfns)
            .map_err(|e| XmError::Failed(e.to_string()))?;
        for i in 0..batch.len() {
            each(i, batch.page(i));
        }
        Ok(())
    }
}

/// The registers gdb shows for a vCPU (`user_regs_struct`) from its CPU record. `orig_rax` is -1, as for a
/// thread stopped outside a system call; the segment registers are the selectors, `fs_base`/`gs_base` the
/// hidden bases.
pub fn user_regs(c: &HvmHwCpu) -> VcpuRegs {
    let r = &c.r8_r15;
    VcpuRegs {
        r15: r[7],
        r14: r[6],
        r13: r[5],
        r12: r[4],
        rbp: c.rbp,
        rbx: c.rbx,
        r11: r[3],
        r10: r[2],
        r9: r[1],
        r8: r[0],
        rax: c.rax,
        rcx: c.rcx,
        rdx: c.rdx,
        rsi: c.rsi,
        rdi: c.rdi,
        orig_rax: u64::MAX,
        rip: c.rip,
        cs: u64::from(c.sel[seg::CS]),
        rflags: c.rflags,
        rsp: c.rsp,
        ss: u64::from(c.sel[seg::SS]),
        fs_base: c.base[seg::FS],
        gs_base: c.base[seg::GS],
        ds: u64::from(c.sel[seg::DS]),
        es: u64::from(c.sel[seg::ES]),
        fs: u64::from(c.sel[seg::FS]),
        gs: u64::from(c.sel[seg::GS]),
    }
}

/// The records of an HVM context stream before its END: each descriptor with its payload's place in `stream`. A
/// stream that is cut short is an error.
pub fn hvm_records(stream: &[u8]) -> Result<Vec<(SaveDescriptor, std::ops::Range<usize>)>, XmError> {
    let bad = |why: &str| XmError::Failed(format!("the domain's HVM context is malformed: {why}"));
    let dlen = std::mem::size_of::<SaveDescriptor>();
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let d: SaveDescriptor = bytemuck::pod_read_unaligned(stream.get(at..at + dlen).ok_or_else(|| bad("no END"))?);
        at += dlen;
        let end = at + d.length as usize;
        if end > stream.len() {
            return Err(bad("a record runs past the end"));
        }
        if d.typecode == hvm_save::END {
            return Ok(out);
        }
        out.push((d, at..end));
        at = end;
    }
}

/// The CPU records of an HVM context stream, in vCPU order: (vCPU, record). A stream that is cut short, or has a
/// CPU record of the wrong size, is an error.
pub fn cpu_records(stream: &[u8]) -> Result<Vec<(u16, HvmHwCpu)>, XmError> {
    let mut out = Vec::new();
    for (d, payload) in hvm_records(stream)? {
        if d.typecode == hvm_save::CPU {
            if payload.len() != std::mem::size_of::<HvmHwCpu>() {
                return Err(XmError::Failed(
                    "the domain's HVM context is malformed: a CPU record of the wrong size".into(),
                ));
            }
            out.push((d.instance, bytemuck::pod_read_unaligned(&stream[payload])));
        }
    }
    out.sort_by_key(|(v, _)| *v);
    Ok(out)
}

/// Pages of one batch, from its first frame on (None where a frame did not map).
type Batch = (u64, Vec<Option<Box<[u8]>>>);

/// A domain as a [`CoreSource`]: its RAM within `candidates`, its vCPUs' registers.
pub struct DomainCore<'a> {
    dom: &'a mut dyn DomainAccess,
    candidates: Vec<MemRange>,
    /// The batch read last: its first frame, its pages (None where a frame did not map).
    cache: Option<Batch>,
}

impl<'a> DomainCore<'a> {
    /// `candidates`: where the domain's RAM may be (page-aligned ranges).
    pub fn new(dom: &'a mut dyn DomainAccess, candidates: Vec<MemRange>) -> Self {
        Self { dom, candidates, cache: None }
    }

    /// The candidate range holding `gfn`, as frames (first, end).
    fn range_of(&self, gfn: u64) -> Option<(u64, u64)> {
        self.candidates
            .iter()
            .map(|r| (r.gpa / PAGE_SIZE, (r.gpa + r.len) / PAGE_SIZE))
            .find(|&(first, end)| (first..end).contains(&gfn))
    }
}

impl CoreSource for DomainCore<'_> {
    fn memory_map(&mut self) -> Result<Vec<MemRange>, XmError> {
        let mut present: Vec<MemRange> = Vec::new();
        for r in super::corefile::normalise(self.candidates.clone())? {
            let (first, end) = (r.gpa / PAGE_SIZE, (r.gpa + r.len) / PAGE_SIZE);
            let mut gfn = first;
            while gfn < end {
                let gfns: Vec<u64> = (gfn..end.min(gfn + BATCH as u64)).collect();
                let mut mapped = vec![false; gfns.len()];
                self.dom.map(&gfns, &mut |i, page| mapped[i] = page.is_some())?;
                for (i, ok) in mapped.into_iter().enumerate() {
                    if ok {
                        let gpa = gfns[i] * PAGE_SIZE;
                        match present.last_mut() {
                            Some(last) if last.gpa + last.len == gpa => last.len += PAGE_SIZE,
                            _ => present.push(MemRange { gpa, len: PAGE_SIZE }),
                        }
                    }
                }
                gfn += gfns.len() as u64;
            }
        }
        if present.is_empty() {
            return Err(XmError::Failed("none of the domain's memory could be mapped".into()));
        }
        Ok(present)
    }

    fn read_page(&mut self, gfn: u64, page: &mut [u8; PAGE_SIZE as usize]) -> Result<(), XmError> {
        let cached = |c: &Option<Batch>| {
            c.as_ref().is_some_and(|(first, pages)| (*first..*first + pages.len() as u64).contains(&gfn))
        };
        if !cached(&self.cache) {
            let (_, end) = self
                .range_of(gfn)
                .ok_or_else(|| XmError::Failed(format!("frame {gfn:#x} is outside the domain's memory")))?;
            let gfns: Vec<u64> = (gfn..end.min(gfn + BATCH as u64)).collect();
            let mut pages: Vec<Option<Box<[u8]>>> = vec![None; gfns.len()];
            self.dom.map(&gfns, &mut |i, p| pages[i] = p.map(Box::from))?;
            self.cache = Some((gfn, pages));
        }
        let (first, pages) = self.cache.as_ref().expect("filled above");
        let data = pages[(gfn - first) as usize]
            .as_deref()
            .ok_or_else(|| XmError::Failed(format!("the domain's frame {gfn:#x} no longer maps")))?;
        page.copy_from_slice(data);
        Ok(())
    }

    fn vcpu_regs(&mut self) -> Result<Vec<VcpuRegs>, XmError> {
        let recs = cpu_records(&self.dom.hvm_context()?)?;
        if recs.is_empty() {
            return Err(XmError::Failed("the domain has no vCPU up".into()));
        }
        Ok(recs.iter().map(|(_, c)| user_regs(c)).collect())
    }
}

/// The domain's memory size, bytes: its `memory/static-max` (KiB) in xenstore, as `xm create` writes it.
fn memory_bytes(c: &mut Ctx, domid: u16) -> Result<u64, XmError> {
    let node = format!("/local/domain/{domid}/memory/static-max");
    let kib: u64 =
        c.xs.read(&node)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| XmError::Failed(format!("{node} is missing: the domain's memory size is unknown")))?;
    Ok(kib << 10)
}

/// Dumps domain `r`'s core to `path` (see the module's description): paused around the dump unless `live`, a
/// domain paused already staying paused (pauses nest); destroyed after a good dump with `crash` (xm's `-C`). On
/// failure no file is left at `path`, and the domain runs on as before.
pub fn dump_to_path(
    c: &mut Ctx,
    r: &DomainRef,
    dom: &mut dyn DomainAccess,
    path: &Path,
    live: bool,
    crash: bool,
) -> Result<(Done, CoreSummary), XmError> {
    let (d, _) = c.find(r)?;
    let memory = memory_bytes(c, d.domain)?;
    let candidates = keel_builder::ram_ranges(memory).into_iter().map(|(gpa, len)| MemRange { gpa, len }).collect();
    let tmp = super::partial_path(path);
    let file_err = |what: &str, p: &Path, e: std::io::Error| XmError::Failed(format!("{what} {}: {e}", p.display()));
    let file = std::fs::File::create(&tmp).map_err(|e| file_err("cannot create", path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let mut src = DomainCore::new(dom, candidates);
    let written = c.dump_core(r, &mut src, &mut out, live, crash).and_then(|done| {
        out.flush().map_err(|e| file_err("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| file_err("cannot rename the core to", path, e))?;
        Ok(done)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes domain `domid`'s core to `path` through the real hypervisor and xenstore, pausing it around the dump (a
/// domain paused already, or shut down, stays as it is); a missing `/var/lib/xen/dump` is created. What the
/// `on_crash = coredump-*` handling calls (`xm dump-core` is [`command`]).
pub fn dump_domain_core(domid: u16, path: &Path) -> Result<CoreSummary, XmError> {
    let xc = keel_xenctrl::Xc::open().map_err(|e| XmError::Failed(e.to_string()))?;
    let target =
        DomainRef::Id(crate::domain::DomainId::try_from(u32::from(domid)).map_err(|e| XmError::Failed(e.to_string()))?);
    create_dump_dir(path)?;
    let mut dom = Privcmd { xc: &xc, domid };
    super::lifecycle::with_host(|c| dump_to_path(c, &target, &mut dom, path, false, false)).map(|(_, s)| s)
}

/// Creates the dump directory (`/var/lib/xen/dump`) when `path` lies in it and it is missing.
fn create_dump_dir(path: &Path) -> Result<(), XmError> {
    match path.parent() {
        Some(dir) if dir.starts_with(super::onshutdown::DUMP_DIR) => {
            std::fs::create_dir_all(dir).map_err(|e| XmError::Failed(format!("cannot create {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}

/// `xm dump-core [-L] [-C] <Domain> [Filename]`.
pub fn command(args: &super::cmdtable::DumpCoreArgs) -> Result<(), XmError> {
    let xc = keel_xenctrl::Xc::open().map_err(|e| XmError::Failed(e.to_string()))?;
    super::lifecycle::with_host(|c| {
        let (d, name) = c.find(&args.domain)?;
        let path = match &args.filename {
            Some(p) => p.clone(),
            None => default_path(&name),
        };
        create_dump_dir(&path)?;
        let mut dom = Privcmd { xc: &xc, domid: d.domain };
        let (_, s) = dump_to_path(c, &args.domain, &mut dom, &path, args.live, args.crash)?;
        println!(
            "Dumped core of domain {} ({name}) to {}: {} pages in {} segments, {} vCPUs, {} bytes",
            d.domain,
            path.display(),
            s.pages,
            s.ranges.len(),
            s.vcpus,
            s.bytes
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::lifecycle::tests::{FakeHv, MemStore};
    use super::super::lifecycle::Xenstore;
    use super::*;

    /// Domain 3, "web", of 64 pages (256 KiB).
    fn host() -> (FakeHv, MemStore) {
        let hv = FakeHv::with(&[(0, 1), (3, 3)]);
        let mut xs = MemStore::new();
        xs.write("/local/domain/3/name", "web").unwrap();
        xs.write("/local/domain/3/memory/static-max", "256").unwrap();
        (hv, xs)
    }

    /// A domain of 64 frames at 0 with frames 10 and 11 ballooned out, two vCPUs up of three.
    struct Fake {
        maps: usize,
        fail_context: bool,
    }

    impl DomainAccess for Fake {
        fn hvm_context(&mut self) -> Result<Vec<u8>, XmError> {
            if self.fail_context {
                return Err(XmError::Failed("gethvmcontext: Device or resource busy".into()));
            }
            let mut s = Vec::new();
            let mut rec = |t: u16, i: u16, p: &[u8]| {
                s.extend_from_slice(bytemuck::bytes_of(&SaveDescriptor {
                    typecode: t,
                    instance: i,
                    length: p.len() as u32,
                }));
                s.extend_from_slice(p);
            };
            rec(hvm_save::HEADER, 0, &[0u8; 24]);
            for v in [2u16, 0] {
                let mut c: HvmHwCpu = bytemuck::Zeroable::zeroed();
                c.rip = 0x10_0000 + u64::from(v);
                c.r8_r15[7] = 0xf15;
                c.sel[seg::CS] = 0x10;
                c.base[seg::GS] = 0xffff_8880_0000_0000;
                rec(hvm_save::CPU, v, bytemuck::bytes_of(&c));
            }
            rec(hvm_save::MTRR, 0, &[0u8; 240]);
            rec(hvm_save::END, 0, &[]);
            Ok(s)
        }
        fn map(&mut self, gfns: &[u64], each: &mut dyn FnMut(usize, Option<&[u8]>)) -> Result<(), XmError> {
            assert!(gfns.len() <= BATCH);
            self.maps += 1;
            for (i, &g) in gfns.iter().enumerate() {
                let page = [g as u8; PAGE_SIZE as usize];
                each(i, (g < 64 && g != 10 && g != 11).then_some(&page[..]));
            }
            Ok(())
        }
    }

    #[test]
    fn registers_come_from_the_cpu_records_in_vcpu_order() {
        let recs = cpu_records(&Fake { maps: 0, fail_context: false }.hvm_context().unwrap()).unwrap();
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 2]);
        let u = user_regs(&recs[1].1);
        assert_eq!((u.rip, u.r15, u.cs, u.gs_base, u.orig_rax), (0x10_0002, 0xf15, 0x10, 0xffff_8880_0000_0000, !0));
        let mut cut = Fake { maps: 0, fail_context: false }.hvm_context().unwrap();
        cut.truncate(cut.len() - 8);
        assert!(cpu_records(&cut).is_err(), "no END");
    }

    #[test]
    fn memory_is_probed_for_holes_and_read_in_batches() {
        let mut f = Fake { maps: 0, fail_context: false };
        let mut core = DomainCore::new(&mut f, vec![MemRange { gpa: 0, len: 300 * PAGE_SIZE }]);
        let map = core.memory_map().unwrap();
        assert_eq!(
            map,
            [MemRange { gpa: 0, len: 10 * PAGE_SIZE }, MemRange { gpa: 12 * PAGE_SIZE, len: 52 * PAGE_SIZE }]
        );
        let mut page = [0u8; PAGE_SIZE as usize];
        for gfn in (0..10).chain(12..64) {
            core.read_page(gfn, &mut page).unwrap();
            assert_eq!(page[100], gfn as u8);
        }
        assert!(core.read_page(10, &mut page).is_err());
        assert!(core.read_page(400, &mut page).is_err());
        assert_eq!(f.maps, 2 + 1, "two probe batches (300 frames), one read batch (0..256)");
    }

    fn dump(
        tag: &str,
        fake: &mut Fake,
        hv: &mut FakeHv,
        xs: &mut MemStore,
    ) -> (PathBuf, Result<(Done, CoreSummary), XmError>) {
        let path = std::env::temp_dir().join(format!("keel-dumpcore-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut c = Ctx { hv, xs };
        let r = dump_to_path(&mut c, &"web".parse().unwrap(), fake, &path, false, false);
        (path, r)
    }

    fn partial(path: &Path) -> PathBuf {
        path.with_file_name(format!("{}.partial-{}", path.file_name().unwrap().to_string_lossy(), std::process::id()))
    }

    #[test]
    fn a_dump_pauses_writes_the_whole_file_and_unpauses() {
        let (mut hv, mut xs) = host();
        let mut fake = Fake { maps: 0, fail_context: false };
        let (path, r) = dump("good", &mut fake, &mut hv, &mut xs);
        let (done, s) = r.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!((done.domid, s.vcpus, s.pages, s.bytes), (3, 2, 62, bytes.len() as u64));
        assert_eq!(hv.calls, ["pause 3", "unpause 3"]);
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert!(!partial(&path).exists());
        // The last page in the file is frame 63's.
        assert_eq!(bytes[bytes.len() - 1], 63);
    }

    #[test]
    fn a_failed_dump_leaves_no_file_and_the_domain_as_it_was() {
        let (mut hv, mut xs) = host();
        let mut fake = Fake { maps: 0, fail_context: true };
        let (path, r) = dump("bad", &mut fake, &mut hv, &mut xs);
        assert_eq!(r.unwrap_err(), XmError::Failed("gethvmcontext: Device or resource busy".into()));
        assert!(!path.exists() && !partial(&path).exists());
        assert_eq!(hv.calls, ["pause 3", "unpause 3"], "unpaused after the failure");
        // No memory size in xenstore: refused before anything is paused or written.
        xs.rm("/local/domain/3/memory/static-max").unwrap();
        let (path, r) = dump("nosize", &mut Fake { maps: 0, fail_context: false }, &mut hv, &mut xs);
        assert!(r.unwrap_err().to_string().contains("memory/static-max is missing"));
        assert!(!path.exists() && !partial(&path).exists());
        assert_eq!(hv.calls.len(), 2);
    }
}
