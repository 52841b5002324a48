//! The toolstack's hypercalls from an unprivileged domain: every domctl, sysctl and platform_op command number (0
//! to 127, each with the interface version Xen 4.17's tools send) must come back -EPERM, as Xen's default XSM
//! policy answers, and must leave the guest and Keel running.
#![cfg_attr(target_os = "none", no_std, no_main)]

use keel_abi::hypercall::nr;
use keel_abi::{domctl, sysctl, Errno, Zeroable};
use xtf::ensure;
use xtf::hypercall;

xtf::guest!(test_main);

/// `XENPF_INTERFACE_VERSION`.
const PLATFORM_VERSION: u32 = 0x0300_0001;

/// One request buffer, big enough for any of the three.
#[repr(C, align(4096))]
struct Buf([u8; 4096]);

static mut BUF: Buf = Buf([0; 4096]);

fn call(op: u64, request: &[u8]) -> i64 {
    // SAFETY: BUF is this guest's own page, written only here on vCPU 0; the hypervisor reads it (and might write
    // it) during the call only.
    unsafe {
        let buf = &mut *core::ptr::addr_of_mut!(BUF);
        buf.0[..request.len()].copy_from_slice(request);
        hypercall::call(op, [buf.0.as_ptr() as u64, 0, 0, 0, 0])
    }
}

fn test_main() -> xtf::TestResult {
    let mut counted = 0;
    for cmd in 0..128u32 {
        let mut d = domctl::XenDomctl::zeroed();
        d.cmd = cmd;
        d.interface_version = domctl::INTERFACE_VERSION;
        let rc = call(nr::DOMCTL, bytemuck::bytes_of(&d));
        ensure!(rc == Errno::EPERM.negated(), "domctl {cmd} returned {rc}, want -1 (EPERM)");
        let mut s = sysctl::XenSysctl::zeroed();
        s.cmd = cmd;
        s.interface_version = sysctl::INTERFACE_VERSION;
        let rc = call(nr::SYSCTL, bytemuck::bytes_of(&s));
        ensure!(rc == Errno::EPERM.negated(), "sysctl {cmd} returned {rc}, want -1 (EPERM)");
        let p = [cmd, PLATFORM_VERSION];
        let rc = call(nr::PLATFORM_OP, bytemuck::bytes_of(&p));
        ensure!(rc == Errno::EPERM.negated(), "platform_op {cmd} returned {rc}, want -1 (EPERM)");
        counted += 3;
    }
    xtf::println!("ok: {counted} domctl, sysctl and platform_op calls, each -1 (EPERM)");
    Ok(())
}
