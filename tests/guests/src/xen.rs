//! Are we under Xen (or Keel)? And the `shared_info` page: mapped on first use, read with atomics because the
//! hypervisor writes it while we read.

use crate::arch;
use crate::hypercall::{self, Errno};
use core::mem::offset_of;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use keel_abi::cpuid;
use keel_abi::shared_info::{
    xenmem, VcpuInfo, VcpuTimeInfo, XenAddToPhysmap, EVTCHN_MASK_OFFSET, EVTCHN_PENDING_OFFSET, LEGACY_VCPUS,
    WC_NSEC_OFFSET, WC_SEC_OFFSET, WC_VERSION_OFFSET,
};

/// What CPUID says about the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenInfo {
    /// EAX of the base leaf: the largest hypervisor leaf.
    pub max_leaf: u32,
    /// Version leaf EAX: major << 16 | minor.
    pub version: u32,
}

/// `None` unless CPUID leaf 0x40000000 says "XenVMMXenVMM".
pub fn detect() -> Option<XenInfo> {
    let r = arch::cpuid(cpuid::BASE, 0);
    if [r.ebx, r.ecx, r.edx] != cpuid::SIGNATURE {
        return None;
    }
    Some(XenInfo { max_leaf: r.eax, version: arch::cpuid(cpuid::BASE + 1, 0).eax })
}

static UNDER_XEN: AtomicU8 = AtomicU8::new(0);

/// Whether the hypervisor leaves say Xen (cached after the first call).
pub fn under_xen() -> bool {
    match UNDER_XEN.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = detect().is_some();
            UNDER_XEN.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// The frame `shared_info` is mapped over (its RAM is given up to the hypervisor's page).
#[repr(C, align(4096))]
struct Frame([AtomicU64; 512]);

static FRAME: Frame = Frame([const { AtomicU64::new(0) }; 512]);
const UNMAPPED: u8 = 0;
const MAPPING: u8 = 1;
const MAPPED: u8 = 2;
const FAILED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNMAPPED);
static MAP_ERROR: AtomicI64 = AtomicI64::new(0);

/// The mapped `shared_info` page.
#[derive(Clone, Copy, Debug)]
pub struct SharedInfo {
    base: *mut u8,
}

// SAFETY: the page is only accessed through atomics and volatile reads.
unsafe impl Send for SharedInfo {}
// SAFETY: as above.
unsafe impl Sync for SharedInfo {}

/// Maps `shared_info` (XENMEM_add_to_physmap, space shared_info, over a frame of our own) the first time any
/// vCPU asks; later calls return the same page, or the same error.
pub fn shared_info() -> Result<SharedInfo, Errno> {
    let page = SharedInfo { base: FRAME.0.as_ptr() as *mut u8 };
    loop {
        match STATE.compare_exchange(UNMAPPED, MAPPING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                let mut arg = XenAddToPhysmap {
                    domid: keel_abi::DOMID_SELF,
                    size: 0,
                    space: xenmem::SPACE_SHARED_INFO,
                    idx: 0,
                    gpfn: page.base as u64 >> 12,
                };
                // SAFETY: the frame is ours, page-aligned, and only ever read as shared_info.
                let r = unsafe { hypercall::add_to_physmap(&mut arg) };
                if let Err(e) = r {
                    MAP_ERROR.store(e.negated(), Ordering::Relaxed);
                }
                STATE.store(if r.is_ok() { MAPPED } else { FAILED }, Ordering::Release);
            }
            Err(MAPPED) => return Ok(page),
            Err(FAILED) => return Err(Errno::from_return(MAP_ERROR.load(Ordering::Relaxed)).unwrap_or(Errno::EIO)),
            Err(_) => core::hint::spin_loop(),
        }
    }
}

/// The page if some vCPU has mapped it already.
pub fn shared_info_if_mapped() -> Option<SharedInfo> {
    (STATE.load(Ordering::Acquire) == MAPPED).then_some(SharedInfo { base: FRAME.0.as_ptr() as *mut u8 })
}

impl SharedInfo {
    fn vcpu_info(self, vcpu: u32) -> *mut u8 {
        assert!((vcpu as usize) < LEGACY_VCPUS, "vCPU {vcpu} has no vcpu_info in shared_info");
        self.base.wrapping_add(vcpu as usize * size_of::<VcpuInfo>())
    }

    fn u64_at(self, offset: usize) -> &'static AtomicU64 {
        let p = self.base.wrapping_add(offset) as *mut u64;
        debug_assert!(offset.is_multiple_of(8) && offset < 4096);
        // SAFETY: 8-byte aligned (the page is page-aligned) inside our static frame, which lives forever and is
        // only accessed atomically.
        unsafe { AtomicU64::from_ptr(p) }
    }

    fn u32_at(self, offset: usize) -> &'static AtomicU32 {
        let p = self.base.wrapping_add(offset) as *mut u32;
        debug_assert!(offset.is_multiple_of(4) && offset < 4096);
        // SAFETY: as in `u64_at`, 4-byte aligned.
        unsafe { AtomicU32::from_ptr(p) }
    }

    /// `vcpu_info[vcpu].evtchn_upcall_pending`.
    pub fn upcall_pending(self, vcpu: u32) -> &'static AtomicU8 {
        let p = self.vcpu_info(vcpu).wrapping_add(offset_of!(VcpuInfo, evtchn_upcall_pending));
        // SAFETY: inside our static frame, which is only accessed atomically.
        unsafe { AtomicU8::from_ptr(p) }
    }

    /// `vcpu_info[vcpu].evtchn_pending_sel`.
    pub fn pending_sel(self, vcpu: u32) -> &'static AtomicU64 {
        self.u64_at(vcpu as usize * size_of::<VcpuInfo>() + offset_of!(VcpuInfo, evtchn_pending_sel))
    }

    /// Word `word` (0..64) of `evtchn_pending`.
    pub fn evtchn_pending(self, word: usize) -> &'static AtomicU64 {
        assert!(word < 64);
        self.u64_at(EVTCHN_PENDING_OFFSET + word * 8)
    }

    /// Word `word` (0..64) of `evtchn_mask`.
    pub fn evtchn_mask(self, word: usize) -> &'static AtomicU64 {
        assert!(word < 64);
        self.u64_at(EVTCHN_MASK_OFFSET + word * 8)
    }

    /// A consistent copy of `vcpu_info[vcpu].time` (retries while the hypervisor is updating it).
    pub fn vcpu_time(self, vcpu: u32) -> VcpuTimeInfo {
        let t = vcpu as usize * size_of::<VcpuInfo>() + offset_of!(VcpuInfo, time);
        let version = self.u32_at(t + offset_of!(VcpuTimeInfo, version));
        loop {
            let v1 = version.load(Ordering::Acquire);
            let tsc_timestamp = self.u64_at(t + offset_of!(VcpuTimeInfo, tsc_timestamp)).load(Ordering::Acquire);
            let system_time = self.u64_at(t + offset_of!(VcpuTimeInfo, system_time)).load(Ordering::Acquire);
            // mul (u32 @24), shift (i8 @28), flags (u8 @29) share one aligned u64 with the padding.
            let word = self.u64_at(t + offset_of!(VcpuTimeInfo, tsc_to_system_mul)).load(Ordering::Acquire);
            let v2 = version.load(Ordering::Acquire);
            if v1 == v2 && v1.is_multiple_of(2) {
                return VcpuTimeInfo {
                    version: v1,
                    pad0: 0,
                    tsc_timestamp,
                    system_time,
                    tsc_to_system_mul: word as u32,
                    tsc_shift: (word >> 32) as u8 as i8,
                    flags: (word >> 40) as u8,
                    pad1: [0; 2],
                };
            }
            core::hint::spin_loop();
        }
    }

    /// Wall-clock time at system time 0: (seconds, nanoseconds).
    pub fn wallclock(self) -> (u32, u32) {
        let version = self.u32_at(WC_VERSION_OFFSET);
        loop {
            let v1 = version.load(Ordering::Acquire);
            let sec = self.u32_at(WC_SEC_OFFSET).load(Ordering::Acquire);
            let nsec = self.u32_at(WC_NSEC_OFFSET).load(Ordering::Acquire);
            if v1.is_multiple_of(2) && version.load(Ordering::Acquire) == v1 {
                return (sec, nsec);
            }
            core::hint::spin_loop();
        }
    }
}

const _: () = {
    // `vcpu_time` reads mul, shift and flags as one u64.
    assert!(offset_of!(VcpuTimeInfo, tsc_to_system_mul) % 8 == 0);
    assert!(offset_of!(VcpuTimeInfo, tsc_shift) == offset_of!(VcpuTimeInfo, tsc_to_system_mul) + 4);
    assert!(offset_of!(VcpuTimeInfo, flags) == offset_of!(VcpuTimeInfo, tsc_to_system_mul) + 5);
    assert!(offset_of!(VcpuInfo, time) % 8 == 0);
};
