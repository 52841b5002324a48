//! Hypercalls, Xen 64-bit ABI: RAX = number, arguments in RDI RSI RDX R10 R8, result in RAX (negative errno).
//!
//! Three ways in: inline with the vendor's instruction ([`call`]), inline with a chosen instruction
//! ([`call_with`], for cross-vendor tests), and through the hypercall page Keel fills when its guest-physical
//! address is written to the MSR in CPUID leaf 0x40000002 EBX ([`install_page`], [`call_page`]).

use crate::arch::{self, Vendor};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use keel_abi::cpuid;
use keel_abi::hypercall::{consoleio, nr, schedop, vcpuop, xenver, SchedShutdown, ShutdownReason};
use keel_abi::shared_info::{hvmop, EvtchnBindVirq, XenAddToPhysmap, XenHvmParam};

pub use keel_abi::Errno;

/// `Ok(rc)` for a non-negative hypercall result, the errno otherwise.
pub fn check(rc: i64) -> Result<u64, Errno> {
    match Errno::from_return(rc) {
        Some(e) => Err(e),
        None => Ok(rc as u64),
    }
}

/// The two hypercall instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// Intel's `vmcall` (0F 01 C1).
    Vmcall,
    /// AMD's `vmmcall` (0F 01 D9).
    Vmmcall,
}

impl Insn {
    /// The instruction's bytes.
    pub fn bytes(self) -> [u8; 3] {
        match self {
            Insn::Vmcall => [0x0f, 0x01, 0xc1],
            Insn::Vmmcall => [0x0f, 0x01, 0xd9],
        }
    }
}

/// The instruction this CPU's vendor uses (as Linux picks it).
pub fn insn() -> Insn {
    const UNKNOWN: u8 = 0;
    static CHOSEN: AtomicU8 = AtomicU8::new(UNKNOWN);
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Insn::Vmcall,
        2 => Insn::Vmmcall,
        _ => {
            let i = match arch::vendor() {
                Vendor::Amd => Insn::Vmmcall,
                Vendor::Intel => Insn::Vmcall,
            };
            CHOSEN.store(if i == Insn::Vmcall { 1 } else { 2 }, Ordering::Relaxed);
            i
        }
    }
}

/// A hypercall with the given instruction.
///
/// # Safety
/// Arguments the hypercall treats as pointers must point at memory of the right shape that the hypervisor may
/// read or write, and the hypercall must not change the guest in ways the program does not expect.
pub unsafe fn call_with(insn: Insn, nr: u64, a: [u64; 5]) -> i64 {
    let rc: i64;
    match insn {
        // SAFETY: the caller vouches for the arguments; the five argument registers are clobbered (as Linux
        // assumes), everything else is preserved by the ABI, and memory may change.
        Insn::Vmcall => unsafe {
            asm!("vmcall", inlateout("rax") nr => rc, inlateout("rdi") a[0] => _, inlateout("rsi") a[1] => _,
                 inlateout("rdx") a[2] => _, inlateout("r10") a[3] => _, inlateout("r8") a[4] => _,
                 options(nostack))
        },
        // SAFETY: as above.
        Insn::Vmmcall => unsafe {
            asm!("vmmcall", inlateout("rax") nr => rc, inlateout("rdi") a[0] => _, inlateout("rsi") a[1] => _,
                 inlateout("rdx") a[2] => _, inlateout("r10") a[3] => _, inlateout("r8") a[4] => _,
                 options(nostack))
        },
    }
    rc
}

/// A hypercall with this vendor's instruction.
///
/// # Safety
/// As for [`call_with`].
pub unsafe fn call(nr: u64, a: [u64; 5]) -> i64 {
    // SAFETY: forwarded from the caller.
    unsafe { call_with(insn(), nr, a) }
}

/// The page Keel fills with hypercall stubs (128 stubs of 32 bytes).
#[repr(C, align(4096))]
struct HypercallPage([AtomicU8; 4096]);

static HYPERCALL_PAGE: HypercallPage = HypercallPage([const { AtomicU8::new(0) }; 4096]);
/// Guest-physical address of the installed page (0 = not installed).
static PAGE_INSTALLED: AtomicU64 = AtomicU64::new(0);

/// Installs the hypercall page: writes its address to the MSR that CPUID leaf base+2 names. Returns the page.
pub fn install_page() -> &'static [AtomicU8; 4096] {
    let msr = arch::cpuid(cpuid::BASE + 2, 0).ebx;
    let page = HYPERCALL_PAGE.0.as_ptr() as u64;
    // SAFETY: the MSR only makes the hypervisor write stubs into our own page-aligned page, which nothing else
    // uses; the identity map makes its address guest-physical.
    unsafe { arch::wrmsr(msr, page) };
    PAGE_INSTALLED.store(page, Ordering::Release);
    &HYPERCALL_PAGE.0
}

/// Calls hypercall `nr` through stub `nr` of the installed hypercall page.
///
/// # Safety
/// As for [`call_with`]; and [`install_page`] must have run (the stub is executed as code).
pub unsafe fn call_page(nr: u64, a: [u64; 5]) -> i64 {
    let page = PAGE_INSTALLED.load(Ordering::Acquire);
    assert!(page != 0, "hypercall page not installed");
    assert!(nr < 128, "no stub for hypercall {nr}");
    let stub = page + nr * keel_abi::cpuid::HYPERCALL_STUB_SIZE as u64;
    let rc: i64;
    // SAFETY: the stub is `mov eax, nr; vmmcall|vmcall; ret` written by the hypervisor; it uses our stack for
    // the return address only (the bare-metal target has no red zone). Clobbers as in `call_with`.
    unsafe {
        asm!("call {stub}", stub = in(reg) stub, inlateout("rax") nr => rc, inlateout("rdi") a[0] => _,
             inlateout("rsi") a[1] => _, inlateout("rdx") a[2] => _, inlateout("r10") a[3] => _,
             inlateout("r8") a[4] => _)
    };
    rc
}

/// `xen_version(XENVER_version)`: major << 16 | minor.
pub fn xen_version() -> i64 {
    // SAFETY: XENVER_version takes no buffer.
    unsafe { call(nr::XEN_VERSION, [xenver::VERSION, 0, 0, 0, 0]) }
}

/// `console_io(CONSOLEIO_write, len, buf)`.
pub fn console_write(bytes: &[u8]) -> i64 {
    // SAFETY: the hypervisor reads `bytes.len()` bytes from `bytes` (identity map: address = guest-physical).
    unsafe { call(nr::CONSOLE_IO, [consoleio::WRITE, bytes.len() as u64, bytes.as_ptr() as u64, 0, 0]) }
}

/// `sched_op(SCHEDOP_yield)`.
pub fn sched_yield() -> i64 {
    // SAFETY: yielding takes no arguments and changes nothing in the guest.
    unsafe { call(nr::SCHED_OP, [schedop::YIELD, 0, 0, 0, 0]) }
}

/// `sched_op(SCHEDOP_poll)` on `ports` until one is pending or Xen system time reaches `timeout_ns` (0: no
/// timeout). Port 0 is reserved and never raised, so polling it just sleeps.
pub fn sched_poll(ports: &[u32], timeout_ns: u64) -> i64 {
    let mut p = keel_abi::shared_info::SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: ports.len() as u32,
        pad: 0,
        timeout: timeout_ns,
    };
    // SAFETY: SCHEDOP_poll only reads the port array and blocks this vCPU for a while.
    unsafe { call(nr::SCHED_OP, [schedop::POLL, &raw mut p as u64, 0, 0, 0]) }
}

/// `sched_op(SCHEDOP_shutdown, {reason})`: returns only if the hypervisor refuses.
pub fn sched_shutdown(reason: ShutdownReason) -> i64 {
    let mut arg = SchedShutdown { reason: reason as u32 };
    // SAFETY: `arg` is a `struct sched_shutdown`.
    unsafe { call(nr::SCHED_OP, [schedop::SHUTDOWN, &raw mut arg as u64, 0, 0, 0]) }
}

/// `set_timer_op(deadline)`: a VIRQ_TIMER event at Xen system time `deadline_ns` (0 cancels).
pub fn set_timer_op(deadline_ns: u64) -> Result<(), Errno> {
    // SAFETY: the argument is a time, not a pointer.
    check(unsafe { call(nr::SET_TIMER_OP, [deadline_ns, 0, 0, 0, 0]) }).map(drop)
}

/// `vcpu_op(cmd, vcpu, arg)` where `arg` is `cmd`'s structure (or `None` for commands without one).
///
/// # Safety
/// `T` must be the structure `cmd` reads or writes.
pub unsafe fn vcpu_op<T>(cmd: u64, vcpu: u32, arg: Option<&mut T>) -> Result<u64, Errno> {
    let p = arg.map_or(0, |a| a as *mut T as u64);
    // SAFETY: the caller vouches that `T` is what `cmd` expects.
    check(unsafe { call(nr::VCPU_OP, [cmd, u64::from(vcpu), p, 0, 0]) })
}

/// `VCPUOP_set_singleshot_timer`: a VIRQ_TIMER event on `vcpu` at system time `deadline_ns`.
pub fn set_singleshot_timer(vcpu: u32, deadline_ns: u64, flags: u32) -> Result<(), Errno> {
    let mut t = keel_abi::hypercall::VcpuSetSingleshotTimer { timeout_abs_ns: deadline_ns, flags, pad: 0 };
    // SAFETY: the structure is `struct vcpu_set_singleshot_timer`.
    unsafe { vcpu_op(vcpuop::SET_SINGLESHOT_TIMER, vcpu, Some(&mut t)) }.map(drop)
}

/// `VCPUOP_stop_periodic_timer` for `vcpu`.
pub fn stop_periodic_timer(vcpu: u32) -> Result<(), Errno> {
    // SAFETY: the command takes no structure.
    unsafe { vcpu_op::<()>(vcpuop::STOP_PERIODIC_TIMER, vcpu, None) }.map(drop)
}

/// `VCPUOP_get_runstate_info` for `vcpu`.
pub fn runstate_info(vcpu: u32) -> Result<keel_abi::shared_info::VcpuRunstateInfo, Errno> {
    let mut info = keel_abi::shared_info::VcpuRunstateInfo::default();
    // SAFETY: the structure is `struct vcpu_runstate_info`.
    unsafe { vcpu_op(vcpuop::GET_RUNSTATE_INFO, vcpu, Some(&mut info)) }.map(|_| info)
}

/// `memory_op(XENMEM_add_to_physmap, arg)`.
///
/// # Safety
/// Whatever `arg` maps replaces the guest frame `arg.gpfn`; nothing may rely on that frame's old contents.
pub unsafe fn add_to_physmap(arg: &mut XenAddToPhysmap) -> Result<(), Errno> {
    let p = arg as *mut XenAddToPhysmap as u64;
    // SAFETY: the caller vouches for the frame; `arg` is a `struct xen_add_to_physmap`.
    check(unsafe { call(nr::MEMORY_OP, [keel_abi::shared_info::xenmem::ADD_TO_PHYSMAP, p, 0, 0, 0]) }).map(drop)
}

/// `hvm_op(HVMOP_set_param, {DOMID_SELF, index, value})`.
pub fn set_hvm_param(index: u32, value: u64) -> Result<(), Errno> {
    let mut p = XenHvmParam { domid: keel_abi::DOMID_SELF, pad: 0, index, value };
    // SAFETY: `p` is a `struct xen_hvm_param`; the parameters a test sets (the callback vector) only change how
    // events reach this guest.
    check(unsafe { call(nr::HVM_OP, [hvmop::SET_PARAM, &raw mut p as u64, 0, 0, 0]) }).map(drop)
}

/// `hvm_op(HVMOP_get_param, {DOMID_SELF, index})`: the parameter's value.
pub fn get_hvm_param(index: u32) -> Result<u64, Errno> {
    let mut p = XenHvmParam { domid: keel_abi::DOMID_SELF, pad: 0, index, value: 0 };
    // SAFETY: `p` is a `struct xen_hvm_param`; getting a parameter only writes its value there.
    check(unsafe { call(nr::HVM_OP, [hvmop::GET_PARAM, &raw mut p as u64, 0, 0, 0]) })?;
    Ok(p.value)
}

/// `event_channel_op(EVTCHNOP_alloc_unbound, {DOMID_SELF, remote})`: a port of ours that domain `remote` may
/// bind; returns it.
pub fn evtchn_alloc_unbound(remote: u16) -> Result<u32, Errno> {
    let mut a = keel_abi::shared_info::EvtchnAllocUnbound { dom: keel_abi::DOMID_SELF, remote_dom: remote, port: 0 };
    // SAFETY: `a` is a `struct evtchn_alloc_unbound`.
    check(unsafe {
        call(nr::EVENT_CHANNEL_OP, [keel_abi::shared_info::evtchnop::ALLOC_UNBOUND, &raw mut a as u64, 0, 0, 0])
    })?;
    Ok(a.port)
}

/// `event_channel_op(EVTCHNOP_bind_virq)`: returns the port.
pub fn evtchn_bind_virq(virq: u32, vcpu: u32) -> Result<u32, Errno> {
    let mut b = EvtchnBindVirq { virq, vcpu, port: 0 };
    // SAFETY: `b` is a `struct evtchn_bind_virq`.
    check(unsafe {
        call(nr::EVENT_CHANNEL_OP, [keel_abi::shared_info::evtchnop::BIND_VIRQ, &raw mut b as u64, 0, 0, 0])
    })?;
    Ok(b.port)
}

/// `hypercall(nr, cmd, &mut arg)`: a sub-command whose one argument is a pointer to `arg`; the raw return value
/// (negative errnos included), for tests that check the exact number a guest sees.
///
/// # Safety
/// As for [`call_with`]: `(nr, cmd)` must not change the guest in ways the program does not expect (whatever it
/// writes into `arg` is harmless: `T` is plain data).
pub unsafe fn op_raw<T: keel_abi::Pod>(nr: u64, cmd: u64, arg: &mut T) -> i64 {
    // SAFETY: forwarded from the caller; `arg` is valid for writes of `size_of::<T>()` bytes.
    unsafe { call(nr, [cmd, arg as *mut T as u64, 0, 0, 0]) }
}

/// `event_channel_op(cmd, &mut arg)`: the raw return value. Not for EVTCHNOP_reset, init_control or
/// expand_array, which change how every event reaches the guest.
pub fn evtchn_op<T: keel_abi::Pod>(cmd: u64, arg: &mut T) -> i64 {
    use keel_abi::shared_info::evtchnop::{INIT_CONTROL, RESET};
    assert!(!(RESET..=INIT_CONTROL + 1).contains(&cmd), "EVTCHNOP {cmd} changes the event ABI");
    // SAFETY: the other event-channel commands only bind, signal or describe ports (and write `arg`).
    unsafe { op_raw(nr::EVENT_CHANNEL_OP, cmd, arg) }
}

/// `event_channel_op(cmd, {port})` for the commands whose structure is just a port (close, send, unmask).
pub fn evtchn_port_op(cmd: u64, port: u32) -> Result<(), Errno> {
    use keel_abi::shared_info::evtchnop::{CLOSE, SEND, UNMASK};
    assert!([CLOSE, SEND, UNMASK].contains(&cmd), "not a port-only command");
    let mut p = port;
    // SAFETY: `struct evtchn_close`, `evtchn_send` and `evtchn_unmask` are one `evtchn_port_t`.
    check(unsafe { call(nr::EVENT_CHANNEL_OP, [cmd, &raw mut p as u64, 0, 0, 0]) }).map(drop)
}
