//! Inline hypercalls: `xen_version` with this vendor's instruction, and on AMD also with Intel's VMCALL (which
//! Keel must accept there too, as Xen does for guests migrated across vendors).
#![cfg_attr(target_os = "none", no_std, no_main)]

use keel_abi::hypercall::{nr, xenver};
use xtf::ensure;
use xtf::hypercall::{self, Insn};

xtf::guest!(test_main);

fn version_via(insn: Insn) -> xtf::TestResult {
    // SAFETY: XENVER_version takes no buffer.
    let v = unsafe { hypercall::call_with(insn, nr::XEN_VERSION, [xenver::VERSION, 0, 0, 0, 0]) };
    let (major, minor) = keel_abi::XEN_VERSION;
    ensure!(v == i64::from(major << 16 | minor), "xen_version by {insn:?} returned {v:#x}, want {major}.{minor}");
    xtf::println!("xen_version by {insn:?}: {}.{}", v >> 16, v & 0xffff);
    Ok(())
}

fn test_main() -> xtf::TestResult {
    let native = hypercall::insn();
    version_via(native)?;
    if native == Insn::Vmmcall {
        version_via(Insn::Vmcall)?;
    } else {
        xtf::println!("Intel CPU: VMMCALL is not expected to work here, not tried");
    }
    Ok(())
}
