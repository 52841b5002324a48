//! The domctls that create and run a guest from dom0 (Xen's toolstack, libxl and libxenguest, builds a PVH domain
//! with them): createdomain, destroydomain, pausedomain, unpausedomain, setdomainhandle and settimeoffset.

use super::{Ctx, XenDomctl};
use crate::domain::{self, CreateError, Domain, DomainConfig, Vcpu};
use crate::hvm::InitState;
use alloc::sync::Arc;
use keel_abi::domctl::{self as dc, cdf, emu};
use keel_abi::hypercall::errno::*;
use keel_abi::Errno;

/// Grant-table versions Keel implements: v1 only.
const MAX_GRANT_VERSION: u32 = 1;
/// `XEN_X86_MSR_RELAXED`, the only x86 misc flag.
const MISC_MSR_RELAXED: u32 = 1;

/// Why a createdomain request is refused (logged), and Xen's errno for it; None when Keel can build it.
fn refusal(cfg: &dc::CreateDomain) -> Option<(&'static str, Errno)> {
    let known = cdf::HVM
        | cdf::HAP
        | cdf::S3_INTEGRITY
        | cdf::OOS_OFF
        | cdf::XS_DOMAIN
        | cdf::IOMMU
        | cdf::NESTED_VIRT
        | cdf::VPMU;
    Some(if cfg.flags & !known != 0 {
        ("unknown flags", EINVAL)
    } else if cfg.flags & cdf::HVM == 0 {
        ("PV guests are not supported (only PVH: CDF_hvm|CDF_hap with the LAPIC alone emulated)", EINVAL)
    } else if cfg.flags & cdf::HAP == 0 {
        ("an HVM guest needs hardware-assisted paging (CDF_hap): Keel has no shadow paging", EINVAL)
    } else if cfg.flags & (cdf::IOMMU | cdf::NESTED_VIRT | cdf::VPMU | cdf::S3_INTEGRITY) != 0 || cfg.iommu_opts != 0 {
        ("IOMMU, nested virtualization, vPMU and S3 integrity are not supported", EINVAL)
    } else if cfg.arch.emulation_flags != emu::LAPIC {
        ("only PVH guests are supported (emulation_flags = LAPIC): HVM with emulated devices comes later", EOPNOTSUPP)
    } else if cfg.arch.misc_flags & !MISC_MSR_RELAXED != 0 {
        ("unknown x86 misc flags", EINVAL)
    } else if cfg.max_vcpus == 0 || cfg.max_vcpus > domain::MAX_VCPUS {
        ("max_vcpus must be 1 to 64", EINVAL)
    } else if limits(cfg).is_err() {
        ("bad grant or maptrack frame limits (1 to 64 grant frames, at most 1024 maptrack frames, or -1)", EINVAL)
    } else if cfg.grant_opts & !0xf != 0 || (cfg.grant_opts & 0xf) == 0 || (cfg.grant_opts & 0xf) > MAX_GRANT_VERSION {
        ("only grant-table version 1 is supported", EINVAL)
    } else if cfg.vmtrace_size != 0 {
        ("vmtrace buffers are not supported", EINVAL)
    } else if cfg.cpupool_id != 0 {
        ("only CPU pool 0 exists", ENOENT)
    } else {
        return None;
    })
}

/// The request's event-channel and grant limits (see [`domain::Limits::from_request`]).
fn limits(cfg: &dc::CreateDomain) -> Result<domain::Limits, Errno> {
    domain::Limits::from_request(cfg.max_evtchn_port, cfg.max_grant_frames, cfg.max_maptrack_frames)
}

/// XEN_DOMCTL_createdomain: an empty PVH domain (no RAM, vCPUs down, paused once, the request's event-channel and
/// grant limits), the id in the header's `domain` (the one asked for if it is free and real, else Keel's pick),
/// the request copied back.
pub fn create(c: &Ctx, arg: u64, d: &mut XenDomctl) -> Result<(), Errno> {
    let cfg: dc::CreateDomain = d.get();
    if let Some((why, e)) = refusal(&cfg) {
        crate::warning!("createdomain refused ({}): {why}", e.negated());
        return Err(e);
    }
    let support = support().ok_or(EOPNOTSUPP)?;
    let config = DomainConfig {
        name: "domU".into(),
        vcpus: cfg.max_vcpus,
        memory: 0,
        weight: crate::sched::DEFAULT_WEIGHT,
        cap: 0,
        expect_crash: false,
        limits: limits(&cfg)?,
    };
    let dom = domain::create_empty(d.domain, config, &support)?;
    *dom.handle.lock() = cfg.handle;
    crate::info!("domain {} created by the toolstack: PVH, {} vCPUs, paused", dom.id, cfg.max_vcpus);
    d.domain = dom.id;
    c.write(arg, d)
}

/// What the machine offers for guests (host unit tests: [`crate::hvm::test_machine`]).
fn support() -> Option<crate::hvm::Support> {
    crate::hvm::machine()
}

/// Starts a vCPU in the state the toolstack gave it. Host unit tests have no hardware context to build: the
/// vCPU is only made runnable there.
pub(super) fn start(v: &Arc<Vcpu>, init: InitState) -> Result<(), CreateError> {
    #[cfg(test)]
    {
        let _ = init;
        v.set_state(crate::domain::VcpuState::Runnable);
        Ok(())
    }
    #[cfg(not(test))]
    {
        let s = crate::hvm::support().ok_or_else(|| CreateError("no hardware virtualization".into()))?;
        domain::start_vcpu(v, s, init)
    }
}

/// The caller may not act on itself this way (Xen: -EINVAL for pausing or destroying oneself).
fn not_self(c: &Ctx, target: &Arc<Domain>) -> Result<(), Errno> {
    if Arc::ptr_eq(target, c.dom) {
        Err(EINVAL)
    } else {
        Ok(())
    }
}

/// XEN_DOMCTL_destroydomain: the domain leaves the registry at once and its vCPUs stop; its memory returns to
/// the allocator when the last reference goes (frames others map stay until they unmap them). dom0 is told with
/// VIRQ_DOM_EXC. A second destroy finds no domain: -ESRCH.
pub fn destroy(c: &Ctx, target: &Arc<Domain>) -> Result<(), Errno> {
    not_self(c, target)?;
    if domain::destroy(target) {
        crate::info!("domain {} destroyed by the toolstack", target.id);
    }
    Ok(())
}

/// XEN_DOMCTL_pausedomain.
pub fn pause(c: &Ctx, target: &Arc<Domain>) -> Result<(), Errno> {
    not_self(c, target)?;
    target.pause()
}

/// XEN_DOMCTL_unpausedomain: at the last pause, vCPUs given a start state begin there.
pub fn unpause(c: &Ctx, target: &Arc<Domain>) -> Result<(), Errno> {
    not_self(c, target)?;
    target.unpause(start)
}

/// XEN_DOMCTL_resumedomain (see [`Domain::resume`]).
pub fn resume(c: &Ctx, target: &Arc<Domain>) -> Result<(), Errno> {
    not_self(c, target)?;
    target.resume()
}

/// XEN_DOMCTL_setdomainhandle.
pub fn set_handle(target: &Domain, d: &XenDomctl) -> Result<(), Errno> {
    let h: dc::SetDomainHandle = d.get();
    *target.handle.lock() = h.handle;
    Ok(())
}

/// XEN_DOMCTL_settimeoffset: the domain's wall clock (shared_info) runs this many seconds from the host's.
pub fn set_time_offset(target: &Domain, d: &XenDomctl) -> Result<(), Errno> {
    let t: dc::SetTimeOffset = d.get();
    target.time_offset.store(t.time_offset_seconds, core::sync::atomic::Ordering::Relaxed);
    crate::domain::pvclock::write_wallclock(target);
    Ok(())
}
