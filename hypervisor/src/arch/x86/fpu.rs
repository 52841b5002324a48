//! Guest FPU/SSE state kept while a vCPU is off the CPU. Keel itself is built without SSE, so the registers
//! always hold the state of the vCPU that last ran: it is saved whenever a vCPU stops, and restored only when a
//! different vCPU ran on the CPU since, or the vCPU ran on another CPU (the run loop decides, in `run::run_vcpu`).

/// An FXSAVE area.
#[repr(C, align(16))]
pub struct FpuState {
    area: [u8; 512],
    valid: bool,
}

impl Default for FpuState {
    fn default() -> Self {
        Self::new()
    }
}

impl FpuState {
    /// The reset state (restoring it gives FCW 0x37f, MXCSR 0x1f80).
    pub const fn new() -> Self {
        let mut area = [0u8; 512];
        area[0] = 0x7f;
        area[1] = 0x03;
        area[24] = 0x80;
        area[25] = 0x1f;
        Self { area, valid: true }
    }

    /// The FXSAVE image (the registers as last saved, or the reset image).
    pub fn area(&self) -> &[u8; 512] {
        &self.area
    }

    /// Saves the CPU's current FPU/SSE registers here.
    pub fn save(&mut self) {
        // SAFETY: FXSAVE writes exactly 512 bytes to a 16-byte aligned buffer we own; CR4.OSFXSR is set at boot.
        unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) self.area.as_mut_ptr(), options(nostack)) };
        self.valid = true;
    }

    /// Takes a saved FXSAVE image (a restored vCPU's). MXCSR bits this CPU does not implement would make FXRSTOR
    /// fault in Keel itself, so they are cleared, by the CPU's own MXCSR_MASK (0xffbf when it reports none, as the
    /// SDM says); nothing else in an image can make FXRSTOR fault.
    pub fn load_image(&mut self, image: &[u8; 512]) {
        let mut host = Self::new();
        host.save();
        let mask = match u32::from_le_bytes([host.area[28], host.area[29], host.area[30], host.area[31]]) {
            0 => 0xffbf,
            m => m,
        };
        self.area = *image;
        let mxcsr = u32::from_le_bytes([image[24], image[25], image[26], image[27]]) & mask;
        self.area[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        self.valid = true;
    }

    /// Loads these registers into the CPU.
    pub fn restore(&self) {
        if self.valid {
            // SAFETY: the area holds an image produced by FXSAVE, the reset image above, or a loaded image whose
            // MXCSR was masked with the CPU's MXCSR_MASK (`load_image`); 16-byte aligned; FXRSTOR only changes FPU/SSE registers, which Keel never uses.
            unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) self.area.as_ptr(), options(nostack)) };
        }
    }
}

/// Enables FXSAVE/SSE state handling on this CPU (CR4.OSFXSR and OSXMMEXCPT), needed to save guest state, and
/// makes sure caching is on (CR0.CD/NW clear).
pub fn init_this_cpu() {
    // SAFETY: setting OSFXSR/OSXMMEXCPT only lets FXSAVE/FXRSTOR cover the SSE registers; Keel's code uses no SSE.
    unsafe { super::cpu::write_cr4(super::cpu::read_cr4() | super::cpu::cr4::OSFXSR | 1 << 10) };
    let cr0 = super::cpu::read_cr0();
    // CD (bit 30) and NW (bit 29) are also cleared: an AP leaves INIT with caching disabled, and nothing else
    // turns it on (the trampoline does too; this covers any other way in).
    // SAFETY: clearing EM and TS, setting MP and NE: FPU instructions execute natively, errors are reported by
    // exception; clearing CD/NW turns normal caching on; paging and protection bits are untouched.
    unsafe { super::cpu::write_cr0((cr0 & !(1 << 2 | 1 << 3 | 1 << 29 | 1 << 30)) | 1 << 1 | 1 << 5) };
}
