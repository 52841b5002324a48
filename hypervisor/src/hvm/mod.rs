//! Hardware virtualization: which extension this machine has, and turning it on per CPU.
//!
//! The vendor is chosen once at boot from CPUID; common code sees only [`Support`]. The VMCB/VMCS live in the
//! vendor modules and nowhere else.

pub mod svm;
pub mod vmx;

use crate::arch::x86::cpu::Vendor;
use alloc::string::String;

/// What the boot CPU offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// AMD-V.
    Svm(svm::Capabilities),
    /// Intel VT-x.
    Vmx(vmx::Capabilities),
    /// Neither usable; the reason is printed once.
    Unavailable(String),
}

/// Detects the extension on the boot CPU. `allowed` is the `hvm=` option.
pub fn detect(vendor: Vendor, allowed: bool) -> Support {
    if !allowed {
        return Support::Unavailable("disabled by hvm=off on the command line".into());
    }
    let c = raw_cpuid::CpuId::new();
    let has_vmx = c.get_feature_info().is_some_and(|f| f.has_vmx());
    let has_svm = c
        .get_extended_processor_and_feature_identifiers()
        .is_some_and(|f| f.has_svm());
    match vendor {
        Vendor::Amd if has_svm => Support::Svm(svm::Capabilities::read()),
        Vendor::Intel if has_vmx => Support::Vmx(vmx::Capabilities::read()),
        _ if has_svm => Support::Svm(svm::Capabilities::read()),
        _ if has_vmx => Support::Vmx(vmx::Capabilities::read()),
        _ => Support::Unavailable("the CPU has neither VMX nor SVM".into()),
    }
}

/// Logs the summary of the boot CPU's features (once).
pub fn log_summary(s: &Support) {
    match s {
        Support::Svm(c) => c.log_summary(),
        Support::Vmx(c) => c.log_summary(),
        Support::Unavailable(why) => crate::warning!("HVM/PVH guests are unavailable: {why}"),
    }
}

/// Enables the extension on the calling CPU and logs the per-CPU line. On failure HVM stays off on this CPU and
/// the reason is logged; Keel carries on.
pub fn enable_this_cpu(s: &Support, cpu: u32) -> bool {
    let r = match s {
        Support::Svm(c) => svm::enable_this_cpu(c, cpu),
        Support::Vmx(c) => vmx::enable_this_cpu(c, cpu),
        Support::Unavailable(_) => return false,
    };
    match r {
        Ok(()) => true,
        Err(e) => {
            crate::error!("CPU{cpu}: hardware virtualization not enabled: {e}");
            false
        }
    }
}
