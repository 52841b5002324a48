//! The Xen CPUID leaves at 0x40000000: signature, largest leaf, version 4.17, the hypercall-page MSR, and the
//! vCPU id in leaf 4 on every vCPU; and CPUID.1:ECX bit 31 (running under a hypervisor).
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU32, Ordering};
use keel_abi::cpuid::{hvm_flags, BASE, HYPERCALL_PAGE_MSR, LEAF1_ECX_HYPERVISOR, SIGNATURE};
use xtf::arch::cpuid;
use xtf::{ensure, error, smp, time};

xtf::guest!(test_main);

/// Leaf 4 as each vCPU saw it: EAX flags and EBX, or u32::MAX until the vCPU has looked.
static SEEN_FLAGS: [AtomicU32; xtf::MAX_VCPUS] = [const { AtomicU32::new(u32::MAX) }; xtf::MAX_VCPUS];
static SEEN_ID: [AtomicU32; xtf::MAX_VCPUS] = [const { AtomicU32::new(u32::MAX) }; xtf::MAX_VCPUS];

fn look(vcpu: u32) {
    let r = cpuid(BASE + 4, 0);
    SEEN_ID[vcpu as usize].store(r.ebx, Ordering::Relaxed);
    SEEN_FLAGS[vcpu as usize].store(r.eax, Ordering::Release);
}

fn test_main() -> xtf::TestResult {
    let base = cpuid(BASE, 0);
    ensure!(
        [base.ebx, base.ecx, base.edx] == SIGNATURE,
        "leaf {BASE:#x}: signature {:#x} {:#x} {:#x}",
        base.ebx,
        base.ecx,
        base.edx
    );
    ensure!(base.eax >= BASE + 4, "leaf {BASE:#x}: largest leaf {:#x}, want at least {:#x}", base.eax, BASE + 4);
    xtf::println!("leaf {BASE:#x}: XenVMMXenVMM, largest leaf {:#x}", base.eax);

    let version = cpuid(BASE + 1, 0).eax;
    let (major, minor) = keel_abi::XEN_VERSION;
    ensure!(
        version == major << 16 | minor,
        "leaf {:#x}: version {}.{}, want {major}.{minor}",
        BASE + 1,
        version >> 16,
        version & 0xffff
    );

    let hc = cpuid(BASE + 2, 0);
    ensure!(hc.eax == 1, "leaf {:#x}: {} hypercall pages, want 1", BASE + 2, hc.eax);
    ensure!(
        hc.ebx == HYPERCALL_PAGE_MSR,
        "leaf {:#x}: hypercall MSR {:#x}, want {HYPERCALL_PAGE_MSR:#x}",
        BASE + 2,
        hc.ebx
    );

    let leaf1 = cpuid(1, 0).ecx;
    ensure!(leaf1 & LEAF1_ECX_HYPERVISOR != 0, "CPUID.1:ECX = {leaf1:#x}: hypervisor bit 31 clear");

    // Leaf 4 on every vCPU: the flag, and EBX = that vCPU's id (the runtime's id comes from its stack).
    let n = smp::vcpu_count().map_err(|e| error!("counting vCPUs with VCPUOP_get_runstate_info: {e}"))?;
    xtf::println!("{n} vCPUs");
    look(0);
    smp::start_aps(look);
    if let Err(done) = smp::wait_aps(n - 1, 10 * time::SECOND) {
        return Err(error!("only {done} of {} other vCPUs ran", n - 1));
    }
    for v in 0..n {
        let flags = SEEN_FLAGS[v as usize].load(Ordering::Acquire);
        let id = SEEN_ID[v as usize].load(Ordering::Relaxed);
        ensure!(
            flags & hvm_flags::VCPU_ID_PRESENT != 0,
            "vCPU {v}: leaf {:#x} EAX {flags:#x} lacks VCPU_ID_PRESENT",
            BASE + 4
        );
        ensure!(id == v, "vCPU {v}: leaf {:#x} EBX (vCPU id) = {id}", BASE + 4);
    }
    xtf::println!("leaf {:#x}: VCPU_ID_PRESENT, EBX = vCPU id on all {n}", BASE + 4);
    Ok(())
}
