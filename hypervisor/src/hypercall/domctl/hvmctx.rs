//! XEN_DOMCTL_gethvmcontext / gethvmcontext_partial / sethvmcontext: how libxenguest gives a PVH guest's boot vCPU
//! its start state, how the toolstack reads a domain's vCPU state (`xm dump-core`, `xm save`), and how a saved
//! domain's vCPUs resume (`xm restore`). Segment attributes are in Xen's packed form (type 0-3, S 4, DPL 5-6, P 7,
//! AVL 8, L 9, D/B 10, G 11: a flat 32-bit code segment is 0xc9b). Keel handles the records a build, a core dump
//! and a save need (HEADER, CPU, LAPIC, LAPIC_REGS, MTRR, END):
//! - get: as Xen, the domain is paused around the save (its vCPUs leave their CPUs; -EBUSY if one does not within
//!   the pause's bound), so the state is consistent. HEADER, a CPU record per vCPU, then LAPIC, LAPIC_REGS and MTRR
//!   records per vCPU (Xen's order: by type, then vCPU), END. A started vCPU's CPU record is its real saved state
//!   ([`crate::hvm::HwVcpu::save_cpu`], SVM or VMX, with its FPU image); a vCPU not started but given a start state
//!   has that state; a vCPU that is down (never started, or taken down by the guest) has none, as in Xen.
//! - get_partial: one CPU, LAPIC, LAPIC_REGS or MTRR record's payload (Xen's hvm_save_one): -EINVAL for other
//!   types (Keel saves no such state), -ENOENT for a vCPU without that record, -ENOBUFS for a buffer too small; a
//!   null buffer asks for the length.
//! - set: a HEADER with Xen's magic and version first (-EINVAL otherwise). A CPU record holds either the PVH entry
//!   state (a build) or a saved vCPU's state (a restore), which must be one VMRUN and VM entry would take
//!   ([`unrestorable`]; -EINVAL otherwise, logged); LAPIC records must describe an APIC enabled in x2APIC mode, the
//!   only mode Keel's vCPUs have, and LAPIC_REGS records set the APIC's registers (a running timer resumes with the
//!   count it had left); a restore starts with every event-channel port masked ([`crate::domain::evtchn::mask_all`]);
//!   MTRR records set the vCPU's MTRRs; the per-vCPU CPU_XSAVE, VMCE, TSC_ADJUST and CPU_MSR
//!   records are accepted and ignored; records of devices a PVH domain has not (PIC, IOAPIC, PIT, RTC, HPET, …)
//!   and unknown types are -EINVAL. As Xen's hvm_load, a load leaves down every vCPU it carries no CPU record for.
//!   Nothing is applied unless the whole stream is valid, and only before any vCPU has started (-EBUSY after),
//!   with one exception: a domain that has shut down (a suspend the toolstack cancels, as libxc's
//!   xc_domain_resume does) may have its vCPUs' general-purpose registers (not RSP) changed, when nothing else in
//!   their CPU records differs from their state ([`set_started`]); its other records are then left as they are.

use super::XenDomctl;
use crate::domain::{Domain, DomainState, Vcpu, VcpuState};
use crate::hvm::vlapic::Vlapic;
use crate::hvm::{Gprs, InitState};
use crate::hypercall::Ctx;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use keel_abi::domctl::{
    hvm_save as rec, seg, HvmContext, HvmContextPartial, HvmHwCpu, HvmHwLapic, HvmHwLapicRegs, HvmHwMtrr,
    SaveDescriptor, SaveHeader,
};
use keel_abi::hypercall::errno::*;
use keel_abi::{Errno, Pod, Zeroable};

/// The largest context a caller may hand in (a HEADER, CPU, MTRR and a few ignored records per vCPU fit easily).
pub const MAX_CONTEXT: u32 = 256 * 1024;

const MSR_PAT: u32 = 0x277;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_MTRR_PHYS_BASE0: u32 = 0x200;
/// The eleven fixed-range MTRRs, in the record's order.
const MSR_MTRR_FIXED: [u32; 11] = [0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f];
/// The power-on PAT value (reported; PAT itself is the hardware's guest PAT, not an MSR Keel stores).
const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// MTRRs enabled, default type write-back: what Keel's vCPUs read when nothing was set.
const MTRR_DEF_WB_ENABLED: u64 = 1 << 11 | 6;

/// Per-vCPU records Keel accepts and ignores: CPU_XSAVE (16; the CPU record's FXSAVE image carries the x87/SSE
/// state Keel's vCPUs have), VMCE_VCPU (18), TSC_ADJUST (19), CPU_MSR (20).
const IGNORED: [u16; 4] = [16, 18, 19, 20];

/// EFER bits a restored vCPU may have: SCE, LME, LMA, NXE (SVME is Keel's own).
const EFER_RESTORABLE: u64 = 1 | 1 << 8 | 1 << 10 | 1 << 11;

/// Why a saved CPU record cannot be resumed, if it cannot: the consistency rules VMRUN and VM entry check that a
/// save of a real vCPU always meets (CR0.PG needs PE; EFER only SCE/LME/LMA/NXE (SVME ignored), LMA exactly when
/// LME and PG, PAE in long mode; a 64-bit code segment only in long mode, and never with D set).
fn unrestorable(c: &HvmHwCpu) -> Option<&'static str> {
    let (pe, pg) = (c.cr0 & 1 != 0, c.cr0 & (1 << 31) != 0);
    let efer = c.msr_efer & !(1 << 12);
    let (lme, lma) = (efer & (1 << 8) != 0, efer & (1 << 10) != 0);
    let cs = c.arbytes[seg::CS];
    if c.cr0 >> 32 != 0 || (pg && !pe) {
        Some("CR0 is inconsistent (reserved bits, or PG without PE)")
    } else if efer & !EFER_RESTORABLE != 0 {
        Some("EFER has bits a vCPU cannot have")
    } else if lma != (lme && pg) || (lma && c.cr4 & (1 << 5) == 0) {
        Some("long mode is inconsistent (EFER.LMA, LME, CR0.PG, CR4.PAE)")
    } else if cs & 0x200 != 0 && (!lma || cs & 0x400 != 0) {
        Some("CS is 64-bit outside long mode, or with D set")
    } else if c.cr4 >> 32 != 0 {
        Some("CR4 has reserved bits")
    } else {
        None
    }
}

/// The PVH start state as an HVM CPU record (what libxenguest's vcpu_hvm writes).
pub fn pvh_record(entry: u32, start_info: u32) -> HvmHwCpu {
    HvmHwCpu::pvh_entry(entry, start_info)
}

/// The start state a CPU record describes, if it is the PVH entry state.
fn pvh_state(c: &HvmHwCpu) -> Option<InitState> {
    let flat = |s: usize, code: bool| {
        let ar = c.arbytes[s];
        let present = ar & 0x80 != 0;
        // Xen's packed attribute format: type 0-3, S 4, DPL 5-6, P 7, AVL 8, L 9, D/B 10, G 11.
        let big = ar & 0x400 != 0 && ar & 0x200 == 0;
        let kind = if code { ar & 0x18 == 0x18 } else { ar & 0x18 == 0x10 && ar & 0x2 != 0 };
        present && big && kind && c.base[s] == 0 && c.limit[s] == u32::MAX
    };
    let protected_flat = c.cr0 & 1 != 0 && c.cr0 & (1 << 31) == 0 && c.msr_efer & (1 << 10) == 0;
    let segments = flat(seg::CS, true) && [seg::DS, seg::ES, seg::SS].iter().all(|&s| flat(s, false));
    if !(protected_flat && segments) {
        return None;
    }
    Some(InitState::Pvh { entry: u32::try_from(c.rip).ok()?, start_info: u32::try_from(c.rbx).ok()? })
}

fn push<T: Pod>(out: &mut Vec<u8>, typecode: u16, instance: u16, v: &T) {
    let bytes = bytemuck::bytes_of(v);
    let d = SaveDescriptor { typecode, instance, length: bytes.len() as u32 };
    out.extend_from_slice(bytemuck::bytes_of(&d));
    out.extend_from_slice(bytes);
}

fn header() -> SaveHeader {
    let cpuid = core::arch::x86_64::__cpuid(1).eax;
    let gtsc_khz = (crate::arch::x86::time::tsc_hz() / 1000) as u32;
    SaveHeader { magic: rec::MAGIC, version: rec::VERSION, changeset: 0, cpuid, gtsc_khz }
}

fn mtrr_record(v: &Vcpu) -> HvmHwMtrr {
    let msrs = v.msrs.lock();
    let get = |i: u32, d: u64| msrs.get(&i).copied().unwrap_or(d);
    let mut m = HvmHwMtrr::zeroed();
    m.msr_pat_cr = get(MSR_PAT, PAT_RESET);
    for (i, r) in m.msr_mtrr_var.iter_mut().enumerate() {
        *r = get(MSR_MTRR_PHYS_BASE0 + i as u32, 0);
    }
    for (r, &i) in m.msr_mtrr_fixed.iter_mut().zip(&MSR_MTRR_FIXED) {
        *r = get(i, 0);
    }
    m.msr_mtrr_cap = 0x508;
    m.msr_mtrr_def_type = get(MSR_MTRR_DEF_TYPE, MTRR_DEF_WB_ENABLED);
    m
}

/// Whether a vCPU of `dom` has started (has a hardware context; one being run now holds its lock).
fn started(dom: &Domain) -> bool {
    dom.vcpus.iter().any(|v| v.hw.try_lock().is_none_or(|h| h.is_some()))
}

/// A vCPU's CPU record: its saved state once started (with its FPU image), its start state before, none while
/// it is down.
fn cpu_record(v: &Vcpu) -> Option<HvmHwCpu> {
    if let Some(hw) = v.hw.lock().as_ref() {
        if v.state() == VcpuState::Offline {
            return None; // taken down by the guest
        }
        let mut c = hw.save_cpu();
        c.fpu_regs = *v.fpu.lock().area();
        c.flags = rec::FPU_INITIALISED;
        return Some(c);
    }
    match &*v.boot.lock() {
        Some(InitState::Pvh { entry, start_info }) => Some(pvh_record(*entry, *start_info)),
        Some(InitState::Restore(c)) => Some(**c),
        _ => None,
    }
}

/// The per-vCPU records of a paused domain, in stream order: (type, vCPU, payload).
fn records(dom: &Domain) -> Vec<(u16, u16, Vec<u8>)> {
    let mut out = Vec::new();
    for v in &dom.vcpus {
        if let Some(c) = cpu_record(v) {
            out.push((rec::CPU, v.id as u16, bytemuck::bytes_of(&c).to_vec()));
        }
    }
    let now = crate::arch::x86::time::now_ns();
    let lapics: Vec<_> = dom.vcpus.iter().map(|v| v.lapic.lock().save(v.id == 0, now)).collect();
    for (v, (l, _)) in dom.vcpus.iter().zip(&lapics) {
        out.push((rec::LAPIC, v.id as u16, bytemuck::bytes_of(l).to_vec()));
    }
    for (v, (_, r)) in dom.vcpus.iter().zip(&lapics) {
        out.push((rec::LAPIC_REGS, v.id as u16, bytemuck::bytes_of(r).to_vec()));
    }
    for v in &dom.vcpus {
        out.push((rec::MTRR, v.id as u16, bytemuck::bytes_of(&mtrr_record(v)).to_vec()));
    }
    out
}

/// Runs `f` with `dom` paused, as Xen's save does (domain_pause around it): -EBUSY if a vCPU is still on a CPU
/// when the pause's wait ends. The pause is dropped again; it starts nothing (a paused domain stays paused, and
/// an unpaused one has started its vCPUs already).
fn while_paused<T>(dom: &Arc<Domain>, f: impl FnOnce() -> T) -> Result<T, Errno> {
    dom.pause()?;
    let r = if dom.vcpus.iter().any(|v| v.state() == VcpuState::Running) {
        crate::warning!("gethvmcontext d{}: a vCPU did not leave its CPU", dom.id);
        Err(EBUSY)
    } else {
        Ok(f())
    };
    dom.unpause(super::lifecycle::start)?;
    r
}

/// The domain's context as a record stream.
fn save(dom: &Arc<Domain>) -> Result<Vec<u8>, Errno> {
    let recs = while_paused(dom, || records(dom))?;
    let mut out = Vec::new();
    push(&mut out, rec::HEADER, 0, &header());
    for (typ, instance, payload) in &recs {
        let d = SaveDescriptor { typecode: *typ, instance: *instance, length: payload.len() as u32 };
        out.extend_from_slice(bytemuck::bytes_of(&d));
        out.extend_from_slice(payload);
    }
    out.extend_from_slice(bytemuck::bytes_of(&SaveDescriptor { typecode: rec::END, instance: 0, length: 0 }));
    Ok(out)
}

/// XEN_DOMCTL_gethvmcontext: a null buffer asks for the size; a buffer too small is -ENOSPC; `size` comes back
/// as the bytes written.
pub fn get(c: &Ctx, dom: &Arc<Domain>, d: &mut XenDomctl) -> Result<(), Errno> {
    let mut h: HvmContext = d.get();
    let ctx = save(dom)?;
    if h.buffer != 0 {
        if (h.size as usize) < ctx.len() {
            return Err(ENOSPC);
        }
        c.write_bytes(h.buffer, &ctx)?;
    }
    h.size = ctx.len() as u32;
    d.set(&h);
    Ok(())
}

/// XEN_DOMCTL_gethvmcontext_partial: one record's payload; `bufsz` comes back as its length.
pub fn get_partial(c: &Ctx, dom: &Arc<Domain>, d: &mut XenDomctl) -> Result<(), Errno> {
    let mut p: HvmContextPartial = d.get();
    let typ = u16::try_from(p.typ).map_err(|_| EINVAL)?;
    if ![rec::CPU, rec::LAPIC, rec::LAPIC_REGS, rec::MTRR].contains(&typ) {
        return Err(EINVAL);
    }
    let vcpu = dom.vcpus.get(p.instance as usize).ok_or(ENOENT)?;
    let payload = while_paused(dom, || {
        let lapic = || vcpu.lapic.lock().save(vcpu.id == 0, crate::arch::x86::time::now_ns());
        match typ {
            rec::CPU => cpu_record(vcpu).map(|c| bytemuck::bytes_of(&c).to_vec()),
            rec::LAPIC => Some(bytemuck::bytes_of(&lapic().0).to_vec()),
            rec::LAPIC_REGS => Some(bytemuck::bytes_of(&lapic().1).to_vec()),
            _ => Some(bytemuck::bytes_of(&mtrr_record(vcpu)).to_vec()),
        }
    })?
    .ok_or(ENOENT)?;
    if p.buffer != 0 {
        if p.bufsz < payload.len() as u64 {
            return Err(ENOBUFS);
        }
        c.write_bytes(p.buffer, &payload)?;
    }
    p.bufsz = payload.len() as u64;
    d.set(&p);
    Ok(())
}

/// What a valid stream sets, per vCPU.
#[derive(Default, Clone)]
struct Load {
    cpu: Option<InitState>,
    mtrr: Option<HvmHwMtrr>,
    lapic_regs: Option<HvmHwLapicRegs>,
}

fn read_at<T: Pod>(buf: &[u8], at: usize, len: usize) -> Result<T, Errno> {
    if len != core::mem::size_of::<T>() {
        return Err(EINVAL);
    }
    let bytes = buf.get(at..at.checked_add(len).ok_or(EINVAL)?).ok_or(EINVAL)?;
    Ok(bytemuck::pod_read_unaligned(bytes))
}

/// Parses a record stream for `dom` (nothing applied).
fn parse(dom: &Domain, buf: &[u8]) -> Result<Vec<Load>, Errno> {
    let dlen = core::mem::size_of::<SaveDescriptor>();
    let mut loads = vec![Load::default(); dom.vcpus.len()];
    let mut at = 0usize;
    let mut first = true;
    loop {
        let desc: SaveDescriptor = read_at(buf, at, dlen)?;
        at += dlen;
        let len = desc.length as usize;
        if buf.len() - at < len {
            return Err(EINVAL);
        }
        let vcpu = usize::from(desc.instance);
        if first {
            let h: SaveHeader = read_at(buf, at, len)?;
            if desc.typecode != rec::HEADER || h.magic != rec::MAGIC || h.version != rec::VERSION {
                crate::warning!("sethvmcontext d{}: the stream does not start with Xen's HVM header", dom.id);
                return Err(EINVAL);
            }
            first = false;
        } else {
            match desc.typecode {
                rec::END => return Ok(loads),
                rec::CPU => {
                    let cpu: HvmHwCpu = read_at(buf, at, len)?;
                    let l = loads.get_mut(vcpu).ok_or(EINVAL)?;
                    l.cpu = Some(match pvh_state(&cpu) {
                        Some(state) => state,
                        None => {
                            if let Some(why) = unrestorable(&cpu) {
                                crate::warning!("sethvmcontext d{}: vCPU {vcpu}'s CPU record: {why}", dom.id);
                                return Err(EINVAL);
                            }
                            InitState::Restore(alloc::boxed::Box::new(cpu))
                        }
                    });
                }
                rec::LAPIC => {
                    let l: HvmHwLapic = read_at(buf, at, len)?;
                    if vcpu >= dom.vcpus.len() {
                        return Err(EINVAL);
                    }
                    if let Err(why) = Vlapic::loadable(&l) {
                        crate::warning!("sethvmcontext d{}: vCPU {vcpu}'s LAPIC record: {why}", dom.id);
                        return Err(EINVAL);
                    }
                }
                rec::LAPIC_REGS => {
                    let r: HvmHwLapicRegs = read_at(buf, at, len)?;
                    loads.get_mut(vcpu).ok_or(EINVAL)?.lapic_regs = Some(r);
                }
                rec::MTRR => {
                    let m: HvmHwMtrr = read_at(buf, at, len)?;
                    loads.get_mut(vcpu).ok_or(EINVAL)?.mtrr = Some(m);
                }
                t if IGNORED.contains(&t) => {
                    if vcpu >= dom.vcpus.len() {
                        return Err(EINVAL);
                    }
                }
                t => {
                    crate::warning!(
                        "sethvmcontext d{}: record type {t} (a device a PVH domain lacks, or unknown)",
                        dom.id
                    );
                    return Err(EINVAL);
                }
            }
        }
        at += len;
    }
}

/// XEN_DOMCTL_sethvmcontext.
pub fn set(c: &Ctx, dom: &Domain, d: &XenDomctl) -> Result<(), Errno> {
    let h: HvmContext = d.get();
    if h.size > MAX_CONTEXT {
        return Err(EINVAL);
    }
    let mut buf = vec![0u8; h.size as usize];
    c.read_bytes(h.buffer, &mut buf)?;
    let loads = parse(dom, &buf)?;
    if started(dom) {
        return set_started(dom, &loads);
    }
    // A restore: the saved guest's event-channel masks are not carried over (see `evtchn::mask_all`).
    if loads.iter().any(|l| matches!(l.cpu, Some(InitState::Restore(_)))) {
        crate::domain::evtchn::mask_all(dom);
    }
    let now = crate::arch::x86::time::now_ns();
    for (v, l) in dom.vcpus.iter().zip(loads) {
        *v.boot.lock() = l.cpu;
        if let Some(r) = &l.lapic_regs {
            v.lapic.lock().load(r, now);
        }
        if let Some(m) = l.mtrr {
            let mut msrs = v.msrs.lock();
            for (i, r) in m.msr_mtrr_var.iter().enumerate() {
                msrs.insert(MSR_MTRR_PHYS_BASE0 + i as u32, *r);
            }
            for (r, &i) in m.msr_mtrr_fixed.iter().zip(&MSR_MTRR_FIXED) {
                msrs.insert(i, *r);
            }
            msrs.insert(MSR_MTRR_DEF_TYPE, m.msr_mtrr_def_type);
        }
    }
    Ok(())
}

/// A CPU record with what [`set_started`] may change (the general-purpose registers but RSP) and what moves on
/// its own (the TSC) cleared.
fn fixed_part(c: &HvmHwCpu) -> HvmHwCpu {
    let mut c = *c;
    (c.rax, c.rbx, c.rcx, c.rdx, c.rbp, c.rsi, c.rdi, c.r8_r15, c.tsc) = (0, 0, 0, 0, 0, 0, 0, [0; 8], 0);
    c
}

/// sethvmcontext on a domain whose vCPUs have run: allowed only once it has shut down and every vCPU is off its
/// CPU, and only to change general-purpose registers (libxc's cancelled-suspend resume sets RAX, the suspend
/// hypercall's result, to 1). -EBUSY, logged, for anything else.
fn set_started(dom: &Domain, loads: &[Load]) -> Result<(), Errno> {
    let refuse = |why: &str| {
        crate::warning!("sethvmcontext d{}: {why}", dom.id);
        Err(EBUSY)
    };
    if !matches!(dom.state(), DomainState::Shutdown(_)) || !crate::domain::all_vcpus_stopped(dom) {
        return refuse("a vCPU has started; Keel loads whole states only before (registers after a shutdown)");
    }
    let mut changes = Vec::new();
    for (v, l) in dom.vcpus.iter().zip(loads) {
        match &l.cpu {
            None => {}
            Some(InitState::Restore(c)) if v.hw.lock().is_some() => {
                if cpu_record(v).map(|n| fixed_part(&n)) != Some(fixed_part(c)) {
                    return refuse("after a shutdown, only a vCPU's general-purpose registers (not RSP) may change");
                }
                changes.push((v, Gprs::from_record(c)));
            }
            Some(_) => return refuse("a vCPU that never ran cannot be given a state once the domain has run"),
        }
    }
    for (v, g) in changes {
        if let Some(hw) = v.hw.lock().as_mut() {
            *hw.gprs() = g;
        }
    }
    Ok(())
}
