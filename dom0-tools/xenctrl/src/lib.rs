//! dom0's way into the hypervisor, as Xen's libxencall and libxenctrl: hypercalls through Linux's privcmd driver
//! (`IOCTL_PRIVCMD_HYPERCALL`), with every structure the hypervisor reads or writes bounced through a hypercall
//! buffer (pages from `/dev/xen/hypercall`, or locked anonymous memory), and typed sysctl, domctl and xen_version
//! calls over keel-abi's layouts.
//!
//! The hypervisor sees the buffers' user-space addresses and copies through dom0's page tables, so they must stay
//! mapped and present for the call: that is what the hypercall device (or `mlock` and touching every page)
//! guarantees (shared/docs/xen417-toolstack.md §1.3).

mod buffer;
pub mod devices;

pub use buffer::HcBuf;
use keel_abi::domctl::{self, XenDomctl};
use keel_abi::hypercall::{nr, xenver};
use keel_abi::shared_info::{
    evtchnop, hvmop, xenmem, EvtchnAllocUnbound, XenForeignMemoryMap, XenHvmParam, XenMemoryMap, XenMemoryReservation,
};
use keel_abi::start_info::HvmMemmapEntry;
use keel_abi::sysctl::{self, XenSysctl};
use keel_abi::{Errno, Pod, Zeroable};
use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;

/// `IOCTL_PRIVCMD_HYPERCALL`: `_IOC(_IOC_NONE, 'P', 0, sizeof(privcmd_hypercall_t))`.
const IOCTL_PRIVCMD_HYPERCALL: libc::c_ulong = 0x0030_5000;

/// `privcmd_hypercall_t`.
#[repr(C)]
struct PrivcmdHypercall {
    op: u64,
    arg: [u64; 5],
}

/// Why a call failed.
#[derive(Debug)]
pub enum Error {
    /// The hypervisor (or privcmd) refused it with this errno.
    Xen(Errno),
    /// A device could not be opened or mapped.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xen(e) => write!(f, "the hypervisor refused: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An open privcmd.
pub struct Xc {
    privcmd: File,
    hypercall_dev: Option<File>,
}

impl Xc {
    /// Opens `/dev/xen/privcmd` (or `/proc/xen/privcmd`) and, where it exists, `/dev/xen/hypercall`.
    pub fn open() -> Result<Xc> {
        let rw = |p: &str| File::options().read(true).write(true).open(p);
        let privcmd = rw("/dev/xen/privcmd").or_else(|_| rw("/proc/xen/privcmd")).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot open /dev/xen/privcmd ({e}): is this dom0 with xen-privcmd loaded?"),
            ))
        })?;
        Ok(Xc { privcmd, hypercall_dev: rw("/dev/xen/hypercall").ok() })
    }

    /// A zeroed hypercall buffer of at least `len` bytes.
    pub fn buffer(&self, len: usize) -> Result<HcBuf> {
        Ok(HcBuf::new(len, self.hypercall_dev.as_ref())?)
    }

    /// Issues hypercall `op`. Pointer arguments must point into [`HcBuf`]s (or be 0).
    pub fn hypercall(&self, op: u64, args: [u64; 5]) -> Result<i64> {
        let mut call = PrivcmdHypercall { op, arg: args };
        // SAFETY: the ioctl reads a `privcmd_hypercall_t` from `call`, which lives across the call; the hypervisor
        // touches only memory the arguments name, which callers keep in hypercall buffers alive for the call.
        let r = unsafe { libc::ioctl(self.privcmd.as_raw_fd(), IOCTL_PRIVCMD_HYPERCALL, &mut call) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            let code = e.raw_os_error().unwrap_or(0) as i64;
            return Err(Errno::from_return(-code).map_or(Error::Io(e), Error::Xen));
        }
        Ok(r as i64)
    }

    fn bounce<T: Pod>(&self, v: &mut T, op: u64) -> Result<i64> {
        let mut b = self.buffer(size_of::<T>())?;
        b.put(0, v);
        let r = self.hypercall(op, [b.addr(), 0, 0, 0, 0]);
        *v = b.get(0);
        r
    }

    /// A sysctl, with the interface version filled in.
    pub fn sysctl(&self, s: &mut XenSysctl) -> Result<()> {
        s.interface_version = sysctl::INTERFACE_VERSION;
        self.bounce(s, nr::SYSCTL).map(drop)
    }

    /// A domctl, with the interface version filled in.
    pub fn domctl(&self, d: &mut XenDomctl) -> Result<()> {
        d.interface_version = domctl::INTERFACE_VERSION;
        self.bounce(d, nr::DOMCTL).map(drop)
    }

    fn sysctl_member<T: Pod>(&self, cmd: u32, member: &T) -> Result<T> {
        let mut s = XenSysctl::zeroed();
        s.cmd = cmd;
        s.set(member);
        self.sysctl(&mut s)?;
        Ok(s.get())
    }

    fn domctl_member<T: Pod>(&self, cmd: u32, domid: u16, member: &T) -> Result<T> {
        let mut d = XenDomctl::zeroed();
        d.cmd = cmd;
        d.domain = domid;
        d.set(member);
        self.domctl(&mut d)?;
        Ok(d.get())
    }

    /// `xen_version` with an optional out-buffer of `len` bytes: the return value and the buffer.
    pub fn xen_version(&self, cmd: u64, len: usize) -> Result<(i64, Vec<u8>)> {
        if len == 0 {
            return Ok((self.hypercall(nr::XEN_VERSION, [cmd, 0, 0, 0, 0])?, Vec::new()));
        }
        let b = self.buffer(len)?;
        let r = self.hypercall(nr::XEN_VERSION, [cmd, b.addr(), 0, 0, 0])?;
        Ok((r, b.bytes()[..len].to_vec()))
    }

    /// `XENVER_version`: (major, minor).
    pub fn version(&self) -> Result<(u32, u32)> {
        let v = self.xen_version(xenver::VERSION, 0)?.0 as u32;
        Ok((v >> 16, v & 0xffff))
    }

    /// A string sub-op of `xen_version` (extraversion, capabilities, changeset, commandline), NUL-trimmed.
    pub fn version_string(&self, cmd: u64) -> Result<String> {
        let len = match cmd {
            xenver::EXTRAVERSION => 16,
            xenver::CHANGESET => 64,
            _ => 1024,
        };
        let (_, b) = self.xen_version(cmd, len)?;
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        Ok(String::from_utf8_lossy(&b[..end]).into_owned())
    }

    /// `XENVER_compile_info`: (compiler, compile_by, compile_domain, compile_date).
    pub fn compile_info(&self) -> Result<[String; 4]> {
        let (_, b) = self.xen_version(xenver::COMPILE_INFO, size_of::<keel_abi::hypercall::XenCompileInfo>())?;
        let field = |r: core::ops::Range<usize>| {
            let f = &b[r];
            let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        Ok([field(0..64), field(64..80), field(80..112), field(112..144)])
    }

    /// `XENVER_platform_parameters`: where the hypervisor's range starts.
    pub fn virt_start(&self) -> Result<u64> {
        let (_, b) = self.xen_version(xenver::PLATFORM_PARAMETERS, 8)?;
        Ok(u64::from_le_bytes(b[..8].try_into().expect("8 bytes")))
    }

    /// `XEN_SYSCTL_physinfo`.
    pub fn physinfo(&self) -> Result<sysctl::PhysInfo> {
        self.sysctl_member(sysctl::cmd::PHYSINFO, &sysctl::PhysInfo::default())
    }

    /// `XEN_SYSCTL_sched_id`.
    pub fn sched_id(&self) -> Result<u32> {
        Ok(self.sysctl_member(sysctl::cmd::SCHED_ID, &sysctl::SchedId::default())?.sched_id)
    }

    /// `XEN_SYSCTL_getdomaininfolist`: up to `max` domains with ids from `first` on, in id order.
    pub fn domain_info_list(&self, first: u16, max: u32) -> Result<Vec<domctl::GetDomainInfo>> {
        let each = size_of::<domctl::GetDomainInfo>();
        let buf = self.buffer(each * max as usize)?;
        let l = sysctl::GetDomainInfoList {
            first_domain: first,
            max_domains: max,
            buffer: buf.addr(),
            ..Default::default()
        };
        let out = self.sysctl_member(sysctl::cmd::GETDOMAININFOLIST, &l)?;
        Ok((0..out.num_domains.min(max) as usize).map(|i| buf.get(i * each)).collect())
    }

    /// Every domain, in id order.
    pub fn domains(&self) -> Result<Vec<domctl::GetDomainInfo>> {
        let mut all = Vec::new();
        let mut first = 0u16;
        loop {
            let batch = self.domain_info_list(first, 1024)?;
            let Some(last) = batch.last() else { return Ok(all) };
            first = last.domain.saturating_add(1);
            let done = batch.len() < 1024 || last.domain >= keel_abi::DOMID_SELF - 1;
            all.extend(batch);
            if done {
                return Ok(all);
            }
        }
    }

    /// One domain's information, `None` if there is no such domain.
    pub fn domain_info(&self, domid: u16) -> Result<Option<domctl::GetDomainInfo>> {
        Ok(self.domain_info_list(domid, 1)?.into_iter().find(|d| d.domain == domid))
    }

    /// `XEN_SYSCTL_readconsole`: reads from `index` (incremental) into a buffer of `len` bytes; returns the bytes
    /// and the new index.
    pub fn read_console(&self, clear: bool, index: u32, len: usize) -> Result<(Vec<u8>, u32)> {
        let buf = self.buffer(len)?;
        let r = sysctl::ReadConsole {
            clear: clear as u8,
            incremental: 1,
            index,
            buffer: buf.addr(),
            count: len as u32,
            ..Default::default()
        };
        let out = self.sysctl_member(sysctl::cmd::READCONSOLE, &r)?;
        Ok((buf.bytes()[..(out.count as usize).min(len)].to_vec(), out.index))
    }

    /// `XEN_DOMCTL_getvcpuinfo`.
    pub fn vcpu_info(&self, domid: u16, vcpu: u32) -> Result<domctl::GetVcpuInfo> {
        self.domctl_member(domctl::cmd::GETVCPUINFO, domid, &domctl::GetVcpuInfo { vcpu, ..Default::default() })
    }

    /// `XEN_DOMCTL_getvcpuaffinity`: (hard, soft) CPU bitmaps of `bytes` bytes each.
    pub fn vcpu_affinity(&self, domid: u16, vcpu: u32, bytes: usize) -> Result<(Vec<u8>, Vec<u8>)> {
        let hard = self.buffer(bytes)?;
        let soft = self.buffer(bytes)?;
        let bits = (bytes * 8) as u32;
        let a = domctl::VcpuAffinity {
            vcpu,
            flags: domctl::vcpuaffinity::HARD | domctl::vcpuaffinity::SOFT,
            cpumap_hard: domctl::XenctlBitmap { bitmap: hard.addr(), nr_bits: bits, pad: 0 },
            cpumap_soft: domctl::XenctlBitmap { bitmap: soft.addr(), nr_bits: bits, pad: 0 },
        };
        self.domctl_member(domctl::cmd::GETVCPUAFFINITY, domid, &a)?;
        Ok((hard.bytes()[..bytes].to_vec(), soft.bytes()[..bytes].to_vec()))
    }

    /// `XEN_DOMCTL_setvcpuaffinity` of the hard and/or soft map (`None` leaves that one as it is; at least one
    /// must be given). Returns the effective maps the hypervisor writes back, each as long as the map given
    /// (empty for one not given).
    pub fn set_vcpu_affinity(
        &self,
        domid: u16,
        vcpu: u32,
        hard: Option<&[u8]>,
        soft: Option<&[u8]>,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let map = |m: Option<&[u8]>| -> Result<(HcBuf, domctl::XenctlBitmap, usize)> {
            let len = m.map_or(0, <[u8]>::len);
            let b = self.buffer(len.max(1))?;
            let mut bitmap = domctl::XenctlBitmap::default();
            if let Some(m) = m {
                b.bytes_mut()[..len].copy_from_slice(m);
                bitmap = domctl::XenctlBitmap { bitmap: b.addr(), nr_bits: (len * 8) as u32, pad: 0 };
            }
            Ok((b, bitmap, len))
        };
        let (hb, cpumap_hard, hlen) = map(hard)?;
        let (sb, cpumap_soft, slen) = map(soft)?;
        let flags = if hard.is_some() { domctl::vcpuaffinity::HARD } else { 0 }
            | if soft.is_some() { domctl::vcpuaffinity::SOFT } else { 0 };
        let a = domctl::VcpuAffinity { vcpu, flags, cpumap_hard, cpumap_soft };
        self.domctl_member(domctl::cmd::SETVCPUAFFINITY, domid, &a)?;
        Ok((hb.bytes()[..hlen].to_vec(), sb.bytes()[..slen].to_vec()))
    }

    /// Credit scheduler parameters of a domain: (weight, cap).
    pub fn sched_credit(&self, domid: u16) -> Result<(u16, u16)> {
        let op = domctl::SchedulerOp {
            sched_id: domctl::sched_id::CREDIT,
            cmd: domctl::schedop::GETINFO,
            ..Default::default()
        };
        let r = self.domctl_member(domctl::cmd::SCHEDULER_OP, domid, &op)?;
        Ok((r.weight, r.cap))
    }

    /// Sets a domain's credit weight and/or cap (`None` keeps the current value).
    pub fn set_sched_credit(&self, domid: u16, weight: Option<u16>, cap: Option<u16>) -> Result<()> {
        let op = domctl::SchedulerOp {
            sched_id: domctl::sched_id::CREDIT,
            cmd: domctl::schedop::PUTINFO,
            weight: weight.unwrap_or(0),
            cap: cap.unwrap_or(0xffff),
            rest: [0; 3],
        };
        self.domctl_member(domctl::cmd::SCHEDULER_OP, domid, &op).map(drop)
    }

    /// The credit scheduler's global parameters of pool 0 (`XEN_SYSCTL_scheduler_op` getinfo).
    pub fn sched_credit_global(&self) -> Result<sysctl::SchedulerOp> {
        let op = sysctl::SchedulerOp {
            cpupool_id: 0,
            sched_id: domctl::sched_id::CREDIT,
            cmd: sysctl::schedop::GETINFO,
            ..Default::default()
        };
        self.sysctl_member(sysctl::cmd::SCHEDULER_OP, &op)
    }

    /// Sets the credit scheduler's global parameters of pool 0; returns what was applied.
    pub fn set_sched_credit_global(&self, mut p: sysctl::SchedulerOp) -> Result<sysctl::SchedulerOp> {
        p.cpupool_id = 0;
        p.sched_id = domctl::sched_id::CREDIT;
        p.cmd = sysctl::schedop::PUTINFO;
        self.sysctl_member(sysctl::cmd::SCHEDULER_OP, &p)
    }

    // ---- Building and running a guest (the domctls and ops Xen's libxl and libxenguest use) ----

    /// `XEN_DOMCTL_createdomain`: returns the new domain's id. `domid` 0 (or DOMID_INVALID) lets the hypervisor
    /// pick one; a real id asks for that one (-EEXIST when taken). The domain is empty, its vCPUs down, paused.
    pub fn create_domain(&self, domid: u16, cfg: &domctl::CreateDomain) -> Result<u16> {
        let mut d = XenDomctl::zeroed();
        d.cmd = domctl::cmd::CREATEDOMAIN;
        d.domain = domid;
        d.set(cfg);
        self.domctl(&mut d)?;
        Ok(d.domain)
    }

    fn domctl_plain(&self, cmd: u32, domid: u16) -> Result<()> {
        let mut d = XenDomctl::zeroed();
        d.cmd = cmd;
        d.domain = domid;
        self.domctl(&mut d)
    }

    /// `XEN_DOMCTL_destroydomain`.
    pub fn destroy_domain(&self, domid: u16) -> Result<()> {
        self.domctl_plain(domctl::cmd::DESTROYDOMAIN, domid)
    }

    /// `XEN_DOMCTL_pausedomain`.
    pub fn pause_domain(&self, domid: u16) -> Result<()> {
        self.domctl_plain(domctl::cmd::PAUSEDOMAIN, domid)
    }

    /// `XEN_DOMCTL_unpausedomain`: at the last pause, vCPUs given a start state begin running.
    pub fn unpause_domain(&self, domid: u16) -> Result<()> {
        self.domctl_plain(domctl::cmd::UNPAUSEDOMAIN, domid)
    }

    /// `XEN_DOMCTL_resumedomain`: a domain that has shut down (a cancelled suspend) runs again.
    pub fn resume_domain(&self, domid: u16) -> Result<()> {
        self.domctl_plain(domctl::cmd::RESUMEDOMAIN, domid)
    }

    /// `XEN_DOMCTL_shadow_op` ENABLE_LOGDIRTY: the hypervisor starts logging the pages the domain writes.
    pub fn log_dirty_enable(&self, domid: u16) -> Result<()> {
        let s = domctl::ShadowOp { op: domctl::shadow_op::ENABLE_LOGDIRTY, ..Default::default() };
        self.domctl_member(domctl::cmd::SHADOW_OP, domid, &s).map(drop)
    }

    /// `XEN_DOMCTL_shadow_op` OFF: log-dirty ends.
    pub fn log_dirty_off(&self, domid: u16) -> Result<()> {
        let s = domctl::ShadowOp { op: domctl::shadow_op::OFF, ..Default::default() };
        self.domctl_member(domctl::cmd::SHADOW_OP, domid, &s).map(drop)
    }

    /// `XEN_DOMCTL_shadow_op` CLEAN (`final_round`: with LOGDIRTY_FINAL) of the first `pages` frames: the dirty
    /// bitmap (bit `g` of byte `g / 8` for frame `g`), cleared in the hypervisor for the next round.
    pub fn log_dirty_clean(&self, domid: u16, pages: u64, final_round: bool) -> Result<Vec<u8>> {
        let bytes = pages.div_ceil(8) as usize;
        let buf = self.buffer(bytes.max(1))?;
        let mode = if final_round { domctl::shadow_mode::LOGDIRTY_FINAL } else { 0 };
        let s = domctl::ShadowOp {
            op: domctl::shadow_op::CLEAN,
            mode,
            dirty_bitmap: buf.addr(),
            pages,
            ..Default::default()
        };
        self.domctl_member(domctl::cmd::SHADOW_OP, domid, &s)?;
        Ok(buf.bytes()[..bytes].to_vec())
    }

    /// `XEN_DOMCTL_setdomainhandle`.
    pub fn set_domain_handle(&self, domid: u16, handle: [u8; 16]) -> Result<()> {
        self.domctl_member(domctl::cmd::SETDOMAINHANDLE, domid, &domctl::SetDomainHandle { handle }).map(drop)
    }

    /// `XEN_DOMCTL_settimeoffset`: the domain's wall clock runs `seconds` from the host's.
    pub fn set_time_offset(&self, domid: u16, seconds: i64) -> Result<()> {
        let t = domctl::SetTimeOffset { time_offset_seconds: seconds };
        self.domctl_member(domctl::cmd::SETTIMEOFFSET, domid, &t).map(drop)
    }

    /// `XEN_DOMCTL_max_mem`: the most memory the domain may hold, in KiB.
    pub fn set_max_mem(&self, domid: u16, kib: u64) -> Result<()> {
        self.domctl_member(domctl::cmd::MAX_MEM, domid, &domctl::MaxMem { max_memkb: kib }).map(drop)
    }

    /// `XENMEM_populate_physmap` into `domid`: an extent of 2^`order` pages at each GFN of `gfns`. All or an
    /// error: fewer extents done than asked is -ENOMEM (libxc's populate_physmap_exact says -EBUSY).
    pub fn populate_physmap(&self, domid: u16, gfns: &[u64], order: u32) -> Result<()> {
        let mut list = self.buffer(gfns.len().max(1) * 8)?;
        for (i, g) in gfns.iter().enumerate() {
            list.put(i * 8, g);
        }
        let mut r = self.buffer(size_of::<XenMemoryReservation>())?;
        let res = XenMemoryReservation {
            extent_start: list.addr(),
            nr_extents: gfns.len() as u64,
            extent_order: order,
            domid,
            ..Default::default()
        };
        r.put(0, &res);
        let done = self.hypercall(nr::MEMORY_OP, [xenmem::POPULATE_PHYSMAP, r.addr(), 0, 0, 0])?;
        if done != gfns.len() as i64 {
            return Err(Error::Xen(keel_abi::hypercall::errno::ENOMEM));
        }
        Ok(())
    }

    /// `XENMEM_set_memory_map`: the E820 map `domid` reads with XENMEM_memory_map.
    pub fn set_memory_map(&self, domid: u16, map: &[HvmMemmapEntry]) -> Result<()> {
        let bytes = e820_bytes(map);
        let buf = self.buffer(bytes.len().max(1))?;
        buf.bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
        let m = XenForeignMemoryMap {
            domid,
            pad: [0; 3],
            map: XenMemoryMap { nr_entries: map.len() as u32, pad: 0, buffer: buf.addr() },
        };
        let mut a = self.buffer(size_of::<XenForeignMemoryMap>())?;
        a.put(0, &m);
        self.hypercall(nr::MEMORY_OP, [xenmem::SET_MEMORY_MAP, a.addr(), 0, 0, 0]).map(drop)
    }

    /// `HVMOP_set_param` on `domid`.
    pub fn set_hvm_param(&self, domid: u16, index: u32, value: u64) -> Result<()> {
        let mut p = XenHvmParam { domid, pad: 0, index, value };
        self.bounce_op(&mut p, nr::HVM_OP, hvmop::SET_PARAM).map(drop)
    }

    /// `HVMOP_get_param` on `domid`.
    pub fn hvm_param(&self, domid: u16, index: u32) -> Result<u64> {
        let mut p = XenHvmParam { domid, pad: 0, index, value: 0 };
        self.bounce_op(&mut p, nr::HVM_OP, hvmop::GET_PARAM)?;
        Ok(p.value)
    }

    /// `EVTCHNOP_alloc_unbound` in `dom`'s table, for `remote` to bind: the new port.
    pub fn evtchn_alloc_unbound(&self, dom: u16, remote: u16) -> Result<u32> {
        let mut a = EvtchnAllocUnbound { dom, remote_dom: remote, port: 0 };
        self.bounce_op(&mut a, nr::EVENT_CHANNEL_OP, evtchnop::ALLOC_UNBOUND)?;
        Ok(a.port)
    }

    /// `XEN_DOMCTL_gethvmcontext`: the domain's HVM record stream (HEADER first, END last).
    pub fn hvm_context(&self, domid: u16) -> Result<Vec<u8>> {
        let size = self.domctl_member(domctl::cmd::GETHVMCONTEXT, domid, &domctl::HvmContext::default())?.size;
        let buf = self.buffer(size.max(1) as usize)?;
        let h = domctl::HvmContext { size, pad: 0, buffer: buf.addr() };
        let got = self.domctl_member(domctl::cmd::GETHVMCONTEXT, domid, &h)?.size as usize;
        Ok(buf.bytes()[..got.min(size as usize)].to_vec())
    }

    /// `XEN_DOMCTL_sethvmcontext` with a record stream.
    pub fn set_hvm_context(&self, domid: u16, stream: &[u8]) -> Result<()> {
        let buf = self.buffer(stream.len().max(1))?;
        buf.bytes_mut()[..stream.len()].copy_from_slice(stream);
        let h = domctl::HvmContext { size: stream.len() as u32, pad: 0, buffer: buf.addr() };
        self.domctl_member(domctl::cmd::SETHVMCONTEXT, domid, &h).map(drop)
    }

    /// Gives vCPU `vcpu` of a domain being built the PVH entry state (EIP = `entry`, EBX = `start_info`), as
    /// libxenguest does: the domain's own HEADER record, the CPU record, END.
    pub fn set_pvh_boot_vcpu(&self, domid: u16, vcpu: u16, entry: u32, start_info: u32) -> Result<()> {
        let ctx = self.hvm_context(domid)?;
        let stream =
            pvh_boot_stream(&ctx, vcpu, entry, start_info).ok_or(Error::Xen(keel_abi::hypercall::errno::EINVAL))?;
        self.set_hvm_context(domid, &stream)
    }

    /// Hypercall `op` sub-command `cmd` with one structure bounced through a buffer.
    fn bounce_op<T: Pod>(&self, v: &mut T, op: u64, cmd: u64) -> Result<i64> {
        let mut b = self.buffer(size_of::<T>())?;
        b.put(0, v);
        let r = self.hypercall(op, [cmd, b.addr(), 0, 0, 0]);
        *v = b.get(0);
        r
    }
}

/// libxl's createdomain request for a PVH guest: CDF_hvm|CDF_hap, the LAPIC alone emulated, grant table v1,
/// `max_vcpus` vCPUs, Xen's default grant and maptrack limits (-1).
pub fn pvh_domain_config(max_vcpus: u32, handle: [u8; 16]) -> domctl::CreateDomain {
    domctl::CreateDomain {
        handle,
        flags: domctl::cdf::HVM | domctl::cdf::HAP,
        max_vcpus,
        max_evtchn_port: 1023,
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: 1,
        arch: domctl::ArchDomainConfig { emulation_flags: domctl::emu::LAPIC, misc_flags: 0 },
        ..Default::default()
    }
}

/// E820 entries as XENMEM_set_memory_map takes them: 20 bytes each, packed (addr, size, type).
pub fn e820_bytes(map: &[HvmMemmapEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(map.len() * 20);
    for e in map {
        out.extend_from_slice(&e.addr.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.typ.to_le_bytes());
    }
    out
}

/// The stream that gives vCPU `vcpu` the PVH entry state: the HEADER record of `ctx` (a domain's context, as
/// gethvmcontext returns it), the CPU record, END. None when `ctx` does not start with a HEADER record.
pub fn pvh_boot_stream(ctx: &[u8], vcpu: u16, entry: u32, start_info: u32) -> Option<Vec<u8>> {
    let dlen = size_of::<domctl::SaveDescriptor>();
    let d: domctl::SaveDescriptor = bytemuck::pod_read_unaligned(ctx.get(..dlen)?);
    if d.typecode != domctl::hvm_save::HEADER {
        return None;
    }
    let mut out = ctx.get(..dlen + d.length as usize)?.to_vec();
    let cpu = domctl::HvmHwCpu::pvh_entry(entry, start_info);
    let desc =
        domctl::SaveDescriptor { typecode: domctl::hvm_save::CPU, instance: vcpu, length: size_of_val(&cpu) as u32 };
    out.extend_from_slice(bytemuck::bytes_of(&desc));
    out.extend_from_slice(bytemuck::bytes_of(&cpu));
    out.extend_from_slice(bytemuck::bytes_of(&domctl::SaveDescriptor::default()));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_entries_are_packed_20_bytes() {
        let b = e820_bytes(&[HvmMemmapEntry { addr: 0x1000, size: 0x2000, typ: 1, reserved: 0 }]);
        assert_eq!(b.len(), 20);
        assert_eq!(&b[0..8], &0x1000u64.to_le_bytes());
        assert_eq!(&b[8..16], &0x2000u64.to_le_bytes());
        assert_eq!(&b[16..20], &1u32.to_le_bytes());
    }

    #[test]
    fn the_boot_stream_is_header_cpu_end() {
        let header = domctl::SaveHeader { magic: domctl::hvm_save::MAGIC, version: 1, ..Default::default() };
        let mut ctx = bytemuck::bytes_of(&domctl::SaveDescriptor { typecode: 1, instance: 0, length: 24 }).to_vec();
        ctx.extend_from_slice(bytemuck::bytes_of(&header));
        ctx.extend_from_slice(&[0u8; 8]);
        let s = pvh_boot_stream(&ctx, 0, 0x10_0000, 0x9000).unwrap();
        assert_eq!(s.len(), 8 + 24 + 8 + 1032 + 8);
        let cpu: domctl::SaveDescriptor = bytemuck::pod_read_unaligned(&s[32..40]);
        assert_eq!((cpu.typecode, cpu.instance, cpu.length), (domctl::hvm_save::CPU, 0, 1032));
        let rec: domctl::HvmHwCpu = bytemuck::pod_read_unaligned(&s[40..40 + 1032]);
        assert_eq!((rec.rip, rec.rbx, rec.cr0, rec.arbytes[0]), (0x10_0000, 0x9000, 0x11, 0xc9b));
        assert_eq!(&s[s.len() - 8..], &[0u8; 8]);
        assert!(pvh_boot_stream(&[0u8; 8], 0, 0, 0).is_none(), "no HEADER first");
    }
}
