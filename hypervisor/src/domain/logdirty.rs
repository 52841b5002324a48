//! Log-dirty tracking of a domain's RAM: Xen's paging log-dirty mode, which save and live migration use to learn
//! which pages changed since they were last copied (XEN_DOMCTL_shadow_op, `hypercall::domctl::shadow`).
//!
//! While it is on, every RAM page the domain owns is either write-protected in its p2m
//! ([`crate::mm::p2m::LOG_DIRTY_BIT`]) or set in the domain's dirty bitmap ([`DirtyLog`]). A guest write to a
//! protected page is a nested page fault ([`Domain::log_dirty_fault`]): the page is marked dirty and made writable
//! again, so that only its first write after each CLEAN costs an exit. Keel's own writes into guest RAM mark the
//! page without a fault: [`Memory::write`] (every hypercall copy-out and emulated string input), a pin (vcpu_info,
//! runstate areas: Keel writes them through cached host addresses, so they are marked when pinned and again on
//! the save's final CLEAN, as Xen marks its own writable mappings), populated RAM (new pages start dirty, as in
//! Xen's guest_physmap_add_entry), and the granter's frame after a writable grant mapping or copy
//! ([`Domain::mark_dirty`], as Xen's gnttab_mark_dirty). A CLEAN reports the bits, clears them and protects those
//! pages again; the invariant above holds throughout, since a page leaves the bitmap only as it is protected.

use super::{Domain, Memory, VcpuState};
use crate::mm::p2m::Unprotected;
use crate::mm::{MachineFrames, PAGE_SIZE};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use keel_abi::hypercall::errno::*;

/// GFNs one chunk of the bitmap covers: a 4 KiB page of bits, as Xen's log-dirty leaves.
pub const CHUNK_GFNS: u64 = PAGE_SIZE * 8;
/// Words of one chunk.
const CHUNK_WORDS: usize = (CHUNK_GFNS / 64) as usize;
/// Chunks a log may hold beyond what the domain's `max_pages` fill when contiguous: room for RAM in a few separate
/// ranges (below the 4 GiB hole, above it, the special pages). A domain that scatters its RAM wider loses marks
/// (counted as failed allocations: CLEAN and PEEK then fail with -ENOMEM, as Xen's when its paging pool runs out)
/// instead of making Keel's heap grow without bound.
const EXTRA_CHUNKS: u64 = 64;
/// Bits of the bitmap CLEAN and PEEK can reach: Xen's four-level log-dirty trie of 4 KiB nodes addresses 2^42
/// GFNs, and a request for more is answered for that many.
pub const MAX_PAGES: u64 = 1 << 42;
/// How long a CLEAN or an enable waits for the domain's running vCPUs to acknowledge the flush of their cached
/// translations.
const FLUSH_WAIT_NS: u64 = 1_000_000_000;

/// A domain's dirty bitmap while log-dirty is on, kept sparse: chunks of [`CHUNK_GFNS`] bits, allocated when a
/// bit in them is first set.
#[derive(Debug, Default)]
pub struct DirtyLog {
    /// Chunk index (GFN / [`CHUNK_GFNS`]) → its bits (bit `g % 64` of word `(g % CHUNK_GFNS) / 64` is GFN `g`).
    chunks: BTreeMap<u64, Box<[u64]>>,
    /// Bits that went from clear to set since the last CLEAN (Xen's `dirty_count`).
    dirty_count: u64,
    /// Write faults taken since the last CLEAN. (Xen counts them only under shadow paging; its HAP reports 0.)
    fault_count: u64,
    /// Marks lost for want of memory since log-dirty went on (Xen's `failed_allocs`).
    failed_allocs: u64,
}

impl DirtyLog {
    /// Sets `gfn`'s bit, allocating its chunk if it is the first there and fewer than `max_chunks` exist.
    fn mark(&mut self, gfn: u64, max_chunks: u64) {
        let (chunk, bit) = (gfn / CHUNK_GFNS, gfn % CHUNK_GFNS);
        if !self.chunks.contains_key(&chunk) {
            let words = match new_chunk() {
                Some(w) if (self.chunks.len() as u64) < max_chunks => w,
                _ => {
                    self.failed_allocs += 1;
                    return;
                }
            };
            self.chunks.insert(chunk, words);
        }
        let Some(words) = self.chunks.get_mut(&chunk) else { return };
        let (w, b) = ((bit / 64) as usize, bit % 64);
        if words[w] & (1 << b) == 0 {
            words[w] |= 1 << b;
            self.dirty_count += 1;
        }
    }

    /// Whether `gfn`'s bit is set.
    pub fn is_dirty(&self, gfn: u64) -> bool {
        let bit = gfn % CHUNK_GFNS;
        self.chunks.get(&(gfn / CHUNK_GFNS)).is_some_and(|w| w[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Bytes of the bitmap held.
    pub fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK_WORDS * 8
    }

    /// The counters as the ABI's 32-bit stats.
    fn stats(&self) -> Stats {
        Stats {
            fault_count: self.fault_count.min(u64::from(u32::MAX)) as u32,
            dirty_count: self.dirty_count.min(u64::from(u32::MAX)) as u32,
        }
    }
}

/// A zeroed chunk, or None when the heap has no room for it.
fn new_chunk() -> Option<Box<[u64]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(CHUNK_WORDS).ok()?;
    v.resize(CHUNK_WORDS, 0u64);
    Some(v.into_boxed_slice())
}

/// `xen_domctl_shadow_op_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Write faults since the last CLEAN.
    pub fault_count: u32,
    /// Pages newly dirtied since the last CLEAN.
    pub dirty_count: u32,
}

/// A copy of the set chunks of a dirty bitmap, taken by [`Domain::log_dirty_snapshot`] for a CLEAN or PEEK.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Chunk index → its bits, for the chunks below the request's end that hold a set bit.
    chunks: Vec<(u64, Box<[u64]>)>,
    /// The counters when it was taken (what a CLEAN subtracts).
    counts: (u64, u64),
}

impl Snapshot {
    /// Chunk `index` as bytes in the ABI's layout (bit `i % 8` of byte `i / 8` is the chunk's `i`th GFN), or None
    /// when no bit of it is set.
    pub fn chunk_bytes(&self, index: u64) -> Option<&[u8]> {
        let i = self.chunks.binary_search_by_key(&index, |c| c.0).ok()?;
        Some(bytemuck::cast_slice(&self.chunks[i].1))
    }

    /// The GFNs set in it.
    pub fn gfns(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks.iter().flat_map(|(c, words)| {
            words.iter().enumerate().flat_map(move |(w, &bits)| {
                (0..64).filter(move |b| bits & (1 << b) != 0).map(move |b| c * CHUNK_GFNS + w as u64 * 64 + b)
            })
        })
    }
}

impl Memory {
    /// Whether log-dirty is on.
    pub fn log_dirty_enabled(&self) -> bool {
        self.log.lock().is_some()
    }

    /// Most chunks the domain's log may hold (see [`EXTRA_CHUNKS`]).
    fn log_chunk_limit(&self) -> u64 {
        self.max_pages.div_ceil(CHUNK_GFNS) + EXTRA_CHUNKS
    }

    /// Marks GFNs `first..=last`, which the domain owns, dirty if log-dirty is on.
    pub(super) fn mark_owned(&self, first: u64, last: u64) {
        let limit = self.log_chunk_limit();
        if let Some(log) = self.log.lock().as_mut() {
            for gfn in first..=last {
                log.mark(gfn, limit);
            }
        }
    }

    /// Marks `gfn` dirty if log-dirty is on and the domain owns the frame there (its RAM: Xen's paging_mark_dirty
    /// ignores pages of other owners).
    pub fn mark_dirty(&self, gfn: u64) {
        if !self.log_dirty_enabled() {
            return;
        }
        let Some(gpa) = gfn.checked_mul(PAGE_SIZE) else { return };
        if self.p2m.leaf(&mut MachineFrames, gpa).is_some_and(|l| l.owned) {
            self.mark_owned(gfn, gfn);
        }
    }

    /// The dirty log, for inspection (tests, diagnostics).
    pub fn with_log<R>(&self, f: impl FnOnce(Option<&DirtyLog>) -> R) -> R {
        f(self.log.lock().as_ref())
    }
}

impl Domain {
    /// Log-dirty on (XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY): an empty bitmap, and write access taken from every
    /// writable RAM page; returns once every vCPU that may be in the guest has flushed its cached translations,
    /// so that every write from then on either faults or is Keel's own (and marked). -EINVAL when it is on
    /// already (as Xen); -EBUSY, and log-dirty stays off, when a running vCPU does not acknowledge the flush in
    /// time.
    pub fn log_dirty_enable(&self) -> Result<(), Errno> {
        {
            let mut mem = self.mem.lock();
            let log = mem.log.get_mut();
            if log.is_some() {
                return Err(EINVAL);
            }
            *log = Some(DirtyLog::default());
            let pages = mem.p2m.log_dirty_protect_all(&mut MachineFrames);
            crate::debug!("d{}: log-dirty on, {pages} pages write-protected", self.id);
        }
        if !self.flush_and_wait() {
            crate::warning!("d{}: log-dirty not enabled: a running vCPU did not flush its translations", self.id);
            self.log_dirty_disable();
            return Err(EBUSY);
        }
        Ok(())
    }

    /// Log-dirty off (XEN_DOMCTL_SHADOW_OP_OFF): every protected page is writable again and the bitmap is freed.
    /// Nothing to flush (rights only grow; a fault already on its way finds the page writable and is retried).
    /// Nothing happens when it is off.
    pub fn log_dirty_disable(&self) {
        let mut mem = self.mem.lock();
        if mem.log.get_mut().take().is_some() {
            let pages = mem.p2m.log_dirty_restore_all(&mut MachineFrames);
            crate::debug!("d{}: log-dirty off, {pages} pages writable again", self.id);
        }
    }

    /// A guest write to `gpa` faulted in the nested page table: true when it was a log-dirty write fault (the
    /// page, or the whole 2 MiB leaf when no table frame was left to split it, is marked dirty and writable
    /// again) or the page has become writable since the exit (another vCPU's fault or log-dirty off got there
    /// first): the guest retries the write. False for anything else, which ends the guest.
    pub fn log_dirty_fault(&self, gpa: u64) -> bool {
        let mut mem = self.mem.lock();
        let Some(leaf) = mem.p2m.leaf(&mut MachineFrames, gpa) else { return false };
        if !leaf.log_dirty {
            return leaf.perms.write;
        }
        let gfn = gpa >> 12;
        let (first, last) = match mem.p2m.log_dirty_unprotect(&mut MachineFrames, gpa) {
            Unprotected::Nothing => return false,
            Unprotected::Page => (gfn, gfn),
            Unprotected::Large(base) => (base >> 12, (base >> 12) + 511),
        };
        if let Some(log) = mem.log.get_mut() {
            log.fault_count += 1;
        }
        mem.mark_owned(first, last);
        true
    }

    /// Marks `gfn` dirty if log-dirty is on and it is the domain's RAM (see [`Memory::mark_dirty`]).
    pub fn mark_dirty(&self, gfn: u64) {
        self.mem.lock().mark_dirty(gfn);
    }

    /// The first step of a CLEAN or PEEK: the counters, and a copy of the bitmap's first `pages` bits (at most
    /// [`MAX_PAGES`]; bits from `pages` on are neither reported nor, by the CLEAN, cleared, where Xen clears the
    /// rest of the last 4 KiB leaf it reports from). With `final_round` (XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL) the
    /// frames Keel writes through cached host addresses (the pinned ones) are marked first. Log-dirty off: zero
    /// counters and an empty copy, as Xen answers. -ENOMEM (the counters still given) when a mark was lost for
    /// want of memory since log-dirty went on, or the copy finds no memory.
    pub fn log_dirty_snapshot(&self, pages: u64, final_round: bool) -> (Stats, Result<Snapshot, Errno>) {
        let mem = self.mem.lock();
        if final_round {
            let pinned: Vec<u64> = mem.pinned.keys().copied().collect();
            for gfn in pinned {
                mem.mark_dirty(gfn);
            }
        }
        let log = mem.log.lock();
        let Some(log) = log.as_ref() else { return (Stats::default(), Ok(Snapshot::default())) };
        let stats = log.stats();
        if log.failed_allocs != 0 {
            crate::warning!("d{}: {} dirty pages could not be logged for want of memory", self.id, log.failed_allocs);
            return (stats, Err(ENOMEM));
        }
        let pages = pages.min(MAX_PAGES);
        let end = pages.div_ceil(CHUNK_GFNS);
        let mut snap = Snapshot { chunks: Vec::new(), counts: (log.fault_count, log.dirty_count) };
        let wanted = log.chunks.range(..end).count();
        if snap.chunks.try_reserve_exact(wanted).is_err() {
            return (stats, Err(ENOMEM));
        }
        for (&index, words) in log.chunks.range(..end) {
            let Some(mut copy) = new_chunk() else { return (stats, Err(ENOMEM)) };
            copy.copy_from_slice(words);
            // The chunk `pages` ends in keeps only the bits below it (`index` < `end`, so at least one).
            let keep = pages - index * CHUNK_GFNS;
            if keep < CHUNK_GFNS {
                for (w, word) in copy.iter_mut().enumerate() {
                    *word &= match keep.saturating_sub(w as u64 * 64) {
                        0 => 0,
                        n if n >= 64 => u64::MAX,
                        n => (1 << n) - 1,
                    };
                }
            }
            snap.chunks.push((index, copy));
        }
        (stats, Ok(snap))
    }

    /// The last step of a CLEAN, once the caller has the bits: clears the bits `snap` holds and protects those
    /// pages again, takes the snapshot's counts off the counters (bits set since the snapshot stay, counted), and
    /// returns once every vCPU that may be in the guest has flushed its cached translations.
    ///
    /// Why no write is lost: a page leaves the bitmap only here, under the memory lock, as it is protected. A
    /// write through a translation cached from before can land only until the flush below completes, and only
    /// on a page this CLEAN reported (every other page was protected and flushed by an earlier enable or CLEAN,
    /// or is still set in the bitmap); the caller copies the reported pages after this returns, so it copies
    /// such a write too. Every later write faults and is logged. If a running vCPU does not acknowledge the
    /// flush in time, the reported pages are marked dirty again so that the next round sends them once more.
    pub fn log_dirty_clean(&self, snap: &Snapshot) {
        let protected = {
            let mut mem = self.mem.lock();
            let Some(log) = mem.log.get_mut().as_mut() else { return };
            for (index, words) in &snap.chunks {
                if let Some(live) = log.chunks.get_mut(index) {
                    for (l, s) in live.iter_mut().zip(words.iter()) {
                        *l &= !s;
                    }
                    if live.iter().all(|&w| w == 0) {
                        log.chunks.remove(index);
                    }
                }
            }
            log.fault_count = log.fault_count.saturating_sub(snap.counts.0);
            log.dirty_count = log.dirty_count.saturating_sub(snap.counts.1);
            let mut n = 0u64;
            for gfn in snap.gfns() {
                if mem.p2m.log_dirty_reprotect(&mut MachineFrames, gfn * PAGE_SIZE) {
                    n += 1;
                }
            }
            n
        };
        if protected != 0 && !self.flush_and_wait() {
            crate::warning!("d{}: a running vCPU did not flush its translations: the pages stay dirty", self.id);
            let mem = self.mem.lock();
            for gfn in snap.gfns() {
                mem.mark_dirty(gfn);
            }
        }
    }

    /// Write access was taken away from guest pages: every vCPU flushes its cached guest translations before it
    /// next enters the guest ([`Domain::p2m_changed`]), and this waits, at most [`FLUSH_WAIT_NS`], until none can
    /// still be in the guest with a translation from before: each vCPU has acknowledged the new generation (it
    /// then flushes before its next entry, see [`super::Vcpu::ack_flush`]) or is not running (it checks its flush
    /// flag, set before, ahead of its next entry). False when one did not in time.
    pub(super) fn flush_and_wait(&self) -> bool {
        let gen = self.p2m_changed();
        let deadline = crate::arch::x86::time::now_ns().saturating_add(FLUSH_WAIT_NS);
        loop {
            core::sync::atomic::fence(Ordering::SeqCst);
            if self.vcpus.iter().all(|v| v.flush_ack.load(Ordering::SeqCst) >= gen || v.state() != VcpuState::Running) {
                return true;
            }
            if crate::arch::x86::time::now_ns() >= deadline {
                return false;
            }
            core::hint::spin_loop();
        }
    }
}
