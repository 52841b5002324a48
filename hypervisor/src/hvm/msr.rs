//! Vendor-neutral validity checks for the guest MSRs the backends keep in their control structures (EFER, PAT).
//! A value these refuse is a #GP for the guest; a value they accept can never make the next VM entry fail.

/// IA32_EFER.
pub const EFER: u32 = 0xc000_0080;
/// IA32_PAT.
pub const PAT: u32 = 0x277;

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active (CR0.PG with LME; the CPU maintains it).
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
    /// SVM enable (never the guest's to set: Keel offers no nested virtualization).
    pub const SVME: u64 = 1 << 12;
    /// Fast FXSAVE/FXRSTOR (AMD).
    pub const FFXSR: u64 = 1 << 14;
    /// Translation cache extension (AMD).
    pub const TCE: u64 = 1 << 15;
}

const CR0_PG: u64 = 1 << 31;

/// Why an EFER write is refused (the guest gets #GP; the reason goes to the debug log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EferError {
    /// Bits that are reserved or name a feature the guest's CPUID does not offer.
    Reserved(u64),
    /// LME changed while paging is on.
    LmeWithPaging,
    /// LMA set without LME and CR0.PG.
    LmaInconsistent,
}

/// The EFER bits a guest may set on this CPU: those whose feature the guest's CPUID (the host's, filtered)
/// reports in leaf 0x8000_0001.
pub fn supported_efer_bits() -> u64 {
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max < 0x8000_0001 {
        return 0;
    }
    let r = core::arch::x86_64::__cpuid(0x8000_0001);
    let mut bits = 0;
    for (reg, bit, efer) in [
        (r.edx, 11, efer::SCE),
        (r.edx, 29, efer::LME | efer::LMA),
        (r.edx, 20, efer::NXE),
        (r.edx, 25, efer::FFXSR),
        (r.ecx, 17, efer::TCE),
    ] {
        if reg & (1 << bit) != 0 {
            bits |= efer;
        }
    }
    bits
}

/// [`supported_efer_bits`], read once.
pub fn guest_efer_bits() -> u64 {
    static BITS: spin::Once<u64> = spin::Once::new();
    *BITS.call_once(supported_efer_bits)
}

/// Checks a guest's WRMSR of EFER against its current EFER `old`, its CR0 and the `supported` bits (see
/// [`supported_efer_bits`]), as Xen's `hvm_set_efer` does. Returns the value to install: LMA is not the
/// guest's to write and follows CR0.PG with LME.
pub fn check_efer_write(old: u64, value: u64, cr0: u64, supported: u64) -> Result<u64, EferError> {
    let reserved = value & !supported;
    if reserved != 0 {
        return Err(EferError::Reserved(reserved));
    }
    let paging = cr0 & CR0_PG != 0;
    if (value ^ old) & efer::LME != 0 && paging {
        return Err(EferError::LmeWithPaging);
    }
    if value & efer::LMA != 0 && (value & efer::LME == 0 || !paging) {
        return Err(EferError::LmaInconsistent);
    }
    let lma = if paging && value & efer::LME != 0 { efer::LMA } else { 0 };
    Ok((value & !efer::LMA) | lma)
}

/// Whether `value` is a valid IA32_PAT: every entry one of the memory types 0 (UC), 1 (WC), 4 (WT), 5 (WP),
/// 6 (WB) or 7 (UC-). Anything else is a #GP on hardware and a failed VM entry if installed.
pub fn pat_valid(value: u64) -> bool {
    value.to_le_bytes().iter().all(|&t| matches!(t, 0 | 1 | 4..=7))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::FFXSR | efer::TCE;
    const PG: u64 = CR0_PG | 1;

    #[test]
    fn efer_writes_linux_makes_are_accepted() {
        // Entering long mode: LME with paging off, then CR0.PG turns LMA on (the backends' CR0 path).
        assert_eq!(check_efer_write(0, efer::LME, 1, ALL), Ok(efer::LME));
        // Later writes with paging on that keep LME (and echo LMA back, as a read-modify-write does).
        let lm = efer::LME | efer::LMA;
        assert_eq!(check_efer_write(lm, lm | efer::NXE | efer::SCE, PG, ALL), Ok(lm | efer::NXE | efer::SCE));
        assert_eq!(check_efer_write(lm, efer::LME | efer::SCE, PG, ALL), Ok(lm | efer::SCE), "LMA follows LME+PG");
        // Paging off: any combination of the supported bits without LMA.
        assert_eq!(check_efer_write(0, efer::SCE | efer::NXE, 0, ALL), Ok(efer::SCE | efer::NXE));
    }

    #[test]
    fn bad_efer_writes_are_refused() {
        let lm = efer::LME | efer::LMA;
        // Reserved bits, SVME (no nested virtualization), and features the CPU lacks.
        assert_eq!(check_efer_write(lm, lm | 1 << 1, PG, ALL), Err(EferError::Reserved(1 << 1)));
        assert_eq!(check_efer_write(lm, lm | 1 << 63, PG, ALL), Err(EferError::Reserved(1 << 63)));
        assert_eq!(check_efer_write(lm, lm | efer::SVME, PG, ALL), Err(EferError::Reserved(efer::SVME)));
        assert_eq!(check_efer_write(0, efer::NXE, 0, ALL & !efer::NXE), Err(EferError::Reserved(efer::NXE)));
        // Clearing (or setting) LME while paging is on.
        assert_eq!(check_efer_write(lm, efer::SCE, PG, ALL), Err(EferError::LmeWithPaging));
        assert_eq!(check_efer_write(0, efer::LME, PG, ALL), Err(EferError::LmeWithPaging));
        // LMA without LME or without paging.
        assert_eq!(check_efer_write(0, efer::LMA, 0, ALL), Err(EferError::LmaInconsistent));
        assert_eq!(check_efer_write(efer::LME, efer::LME | efer::LMA, 1, ALL), Err(EferError::LmaInconsistent));
    }

    #[test]
    fn pat_types() {
        assert!(pat_valid(0x0007_0406_0007_0406)); // the reset value
        assert!(pat_valid(0x0007_0106_0007_0106)); // Linux's: WB, WC, UC-, UC, twice
        assert!(!pat_valid(0x0007_0406_0007_0402), "type 2 is reserved");
        assert!(!pat_valid(0x0807_0406_0007_0406), "type 8 is reserved");
    }

    #[test]
    fn this_cpu_supports_long_mode() {
        let s = supported_efer_bits();
        assert_eq!(s & (efer::LME | efer::LMA), efer::LME | efer::LMA);
        assert_eq!(s & efer::SVME, 0);
    }
}
