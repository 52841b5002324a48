//! AMD SVM: capabilities (CPUID 0x8000000A), enabling (VM_CR, EFER.SVME, the host save area), and the vCPU
//! backend (`vcpu`, `vmcb`).

pub mod vcpu;
pub mod vmcb;

pub use vcpu::SvmVcpu;

use crate::arch::x86::cpu::{self, efer, Msr};

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// SVM features Keel cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Nested paging (NPT).
    pub npt: bool,
    /// NRIP save (next RIP in the VMCB on exits).
    pub nrip_save: bool,
    /// Flush by ASID (TLB_CONTROL values 3 and 7).
    pub flush_by_asid: bool,
    /// Virtual GIF.
    pub vgif: bool,
    /// Decode assists.
    pub decode_assists: bool,
    /// VMCB clean bits.
    pub vmcb_clean: bool,
    /// LBR virtualization.
    pub lbr_virt: bool,
    /// Pause filter.
    pub pause_filter: bool,
    /// AVIC.
    pub avic: bool,
    /// Number of ASIDs.
    pub asids: u32,
}

impl Capabilities {
    /// Reads CPUID 0x8000000A on this CPU.
    pub fn read() -> Self {
        match raw_cpuid::CpuId::new().get_svm_info() {
            Some(s) => Self {
                npt: s.has_nested_paging(),
                nrip_save: s.has_nrip(),
                flush_by_asid: s.has_flush_by_asid(),
                vgif: s.has_gif(),
                decode_assists: s.has_decode_assists(),
                vmcb_clean: s.has_vmcb_clean_bits(),
                lbr_virt: s.has_lbr_virtualization(),
                pause_filter: s.has_pause_filter(),
                avic: s.has_avic(),
                asids: s.supported_asids(),
            },
            None => Self::default(),
        }
    }

    fn features(&self) -> [(&'static str, bool); 9] {
        [
            ("NPT", self.npt),
            ("NRIP-save", self.nrip_save),
            ("flush-by-ASID", self.flush_by_asid),
            ("VGIF", self.vgif),
            ("decode-assists", self.decode_assists),
            ("VMCB-clean", self.vmcb_clean),
            ("LBR-virt", self.lbr_virt),
            ("pause-filter", self.pause_filter),
            ("AVIC", self.avic),
        ]
    }

    /// Logs which features are present and which are missing.
    pub fn log_summary(&self) {
        let (have, lack): (Vec<_>, Vec<_>) = self.features().into_iter().partition(|f| f.1);
        let names = |v: &[(&str, bool)]| match v.len() {
            0 => String::from("none"),
            _ => v.iter().map(|f| f.0).collect::<Vec<_>>().join(" "),
        };
        crate::info!("SVM: features: {}; ASIDs: {}", names(&have), self.asids);
        if !lack.is_empty() {
            crate::info!("SVM: not available: {}", names(&lack));
        }
        if !self.npt {
            crate::warning!("SVM: no nested paging (NPT): HVM/PVH guests need it and will be refused");
        }
    }
}

/// VM_CR bits.
const VM_CR_LOCK: u64 = 1 << 3;
const VM_CR_SVMDIS: u64 = 1 << 4;

/// Why SVM could not be enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// VM_CR.SVMDIS is set by the firmware.
    DisabledByFirmware {
        /// And VM_CR is locked, so Keel cannot clear it.
        locked: bool,
    },
    /// No memory for the host save area.
    NoMemory,
}

impl core::fmt::Display for EnableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::DisabledByFirmware { locked: true } => write!(
                f,
                "SVM is disabled and locked by the firmware (VM_CR.SVMDIS): enable \"SVM Mode\" / \"AMD-V\" in the BIOS setup"
            ),
            Self::DisabledByFirmware { locked: false } => write!(f, "SVM is disabled by VM_CR.SVMDIS"),
            Self::NoMemory => write!(f, "no memory for the host save area"),
        }
    }
}

/// Decides from VM_CR whether SVM can be turned on.
pub fn check_vm_cr(vm_cr: u64) -> Result<(), EnableError> {
    if vm_cr & VM_CR_SVMDIS != 0 {
        return Err(EnableError::DisabledByFirmware { locked: vm_cr & VM_CR_LOCK != 0 });
    }
    Ok(())
}

/// Turns SVM on for the calling CPU.
pub fn enable_this_cpu(caps: &Capabilities, cpu: u32) -> Result<(), String> {
    // SAFETY: VM_CR exists on every CPU that reports SVM in CPUID (checked by `detect`).
    let vm_cr = unsafe { cpu::rdmsr(Msr::VmCr) };
    check_vm_cr(vm_cr).map_err(|e| format!("{e}"))?;
    let hsave = crate::mm::alloc_frame().map_err(|_| format!("{}", EnableError::NoMemory))?;
    let host_vmcb = crate::mm::alloc_frame().map_err(|_| format!("{}", EnableError::NoMemory))?;
    crate::arch::x86::percpu::this().set_svm_host_vmcb(host_vmcb);
    // SAFETY: SVM is present and not disabled; the host save area is a fresh, page-aligned frame owned by this
    // CPU for ever; setting EFER.SVME only allows SVM instructions and changes nothing else.
    unsafe {
        cpu::wrmsr(Msr::VmHsavePa, hsave);
        let e = cpu::rdmsr(Msr::Efer);
        cpu::wrmsr(Msr::Efer, e | efer::SVME);
    }
    crate::info!(
        "CPU{cpu}: SVM enabled (NPT: {}, ASIDs: {})",
        if Capabilities::read().npt { "yes" } else { "no" },
        caps.asids
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_cr_decisions() {
        assert_eq!(check_vm_cr(0), Ok(()));
        assert_eq!(check_vm_cr(VM_CR_SVMDIS), Err(EnableError::DisabledByFirmware { locked: false }));
        let e = check_vm_cr(VM_CR_SVMDIS | VM_CR_LOCK).unwrap_err();
        assert_eq!(e, EnableError::DisabledByFirmware { locked: true });
        assert!(format!("{e}").contains("BIOS"));
    }
}
