//! `XEN_DOMCTL_shadow_op` (10) for Keel's domains, which are all HAP (NPT or EPT): what Xen 4.17's
//! paging_domctl, paging_log_dirty_op and hap_domctl answer. Log-dirty on (ENABLE_LOGDIRTY, or ENABLE with the
//! LOG_DIRTY mode), CLEAN and PEEK of the dirty bitmap, OFF (see [`crate::domain::logdirty`]), and the paging
//! pool size in MiB (GET/SET_ALLOCATION: Keel allocates p2m tables on demand, so its "pool" is the cap on the
//! domain's table frames). libxenguest's save calls ENABLE_LOGDIRTY (and OFF then ENABLE_LOGDIRTY again if that
//! fails), CLEAN for each round with `pages` = the domain's p2m size, expecting `pages` back unchanged, CLEAN
//! with LOGDIRTY_FINAL once the guest is suspended, PEEK to verify, and OFF.

use super::{Ctx, XenDomctl};
use crate::domain::logdirty::{CHUNK_GFNS, MAX_PAGES};
use crate::domain::Domain;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use keel_abi::domctl::{shadow_mode, shadow_op as op, ShadowOp};
use keel_abi::hypercall::errno::*;
use keel_abi::Errno;

/// Bytes of the caller's bitmap one chunk fills (Xen copies the bitmap a 4 KiB leaf at a time).
const CHUNK_BYTES: u64 = CHUNK_GFNS / 8;

/// `XEN_DOMCTL_shadow_op` on `target`: runs the operation and writes the member back into `d` whatever the
/// outcome (the dispatcher copies the whole request back, as Xen does for this command even on failure).
pub fn shadow_op(c: &Ctx, target: &Arc<Domain>, d: &mut XenDomctl) -> Result<(), Errno> {
    let mut s: ShadowOp = d.get();
    let r = run(c, target, &mut s);
    d.set(&s);
    r
}

/// Xen's checks, in its order: the caller's own domain is -EINVAL, a dying domain is left alone (0), then the
/// operation; ENABLE without LOG_DIRTY, the legacy ENABLE_TEST and ENABLE_TRANSLATE, and unknown operations are
/// -EINVAL (hap_domctl's answer); CLEAN and PEEK take no mode but LOGDIRTY_FINAL.
fn run(c: &Ctx, target: &Arc<Domain>, s: &mut ShadowOp) -> Result<(), Errno> {
    if Arc::ptr_eq(target, c.dom) {
        return Err(EINVAL);
    }
    if target.dying.load(Ordering::Acquire) {
        return Ok(());
    }
    match s.op {
        op::ENABLE_LOGDIRTY => target.log_dirty_enable(),
        op::ENABLE if s.mode & shadow_mode::LOG_DIRTY != 0 => target.log_dirty_enable(),
        op::OFF => {
            target.log_dirty_disable();
            Ok(())
        }
        op::CLEAN | op::PEEK if s.mode & !shadow_mode::LOGDIRTY_FINAL != 0 => Err(EINVAL),
        op::CLEAN | op::PEEK => bitmap(c, target, s),
        op::GET_ALLOCATION => {
            s.mb = allocation_mb(target);
            Ok(())
        }
        op::SET_ALLOCATION => {
            // Xen shifts the 32-bit MiB count to pages in 32 bits.
            let frames = u64::from(s.mb << 8);
            let mut mem = target.mem.lock();
            let used = mem.p2m.table_frames();
            mem.p2m.set_table_limit(frames.max(used));
            drop(mem);
            s.mb = allocation_mb(target);
            Ok(())
        }
        _ => Err(EINVAL),
    }
}

/// The domain's paging pool in MiB, rounded up as Xen's hap_get_allocation: Keel's cap on its p2m table frames.
fn allocation_mb(target: &Domain) -> u32 {
    let frames = target.mem.lock().p2m.table_limit();
    u32::try_from(frames.div_ceil(256)).unwrap_or(u32::MAX)
}

/// CLEAN or PEEK: the counters into the stats, then the first `pages` bits of the bitmap into the caller's
/// buffer (none when it is null: the caller wants only the stats, or only to clean), in 4 KiB pieces as Xen
/// writes them (the last one rounded up to whole bytes; where no bit is set, zeros). A CLEAN then clears the bits
/// it reported and protects those pages again. `pages` comes back as asked, or [`MAX_PAGES`] if more was asked.
/// -EFAULT when the buffer cannot be written: nothing is cleared then (Xen would have cleared what it copied).
fn bitmap(c: &Ctx, target: &Domain, s: &mut ShadowOp) -> Result<(), Errno> {
    let (stats, snap) = target.log_dirty_snapshot(s.pages, s.mode & shadow_mode::LOGDIRTY_FINAL != 0);
    s.fault_count = stats.fault_count;
    s.dirty_count = stats.dirty_count;
    let snap = snap?;
    let pages = s.pages.min(MAX_PAGES);
    if s.dirty_bitmap != 0 {
        let zeros = [0u8; CHUNK_BYTES as usize];
        let mut done = 0u64;
        while done < pages {
            let bytes = ((pages - done).div_ceil(8)).min(CHUNK_BYTES);
            let bits = snap.chunk_bytes(done / CHUNK_GFNS).unwrap_or(&zeros);
            let at = s.dirty_bitmap.checked_add(done / 8).ok_or(EFAULT)?;
            c.write_bytes(at, &bits[..bytes as usize])?;
            done += bytes * 8;
        }
    }
    if s.op == op::CLEAN {
        target.log_dirty_clean(&snap);
    }
    s.pages = pages;
    Ok(())
}
