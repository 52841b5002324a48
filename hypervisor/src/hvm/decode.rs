//! The length of the guest instruction that caused an exit, where the hardware does not report the next RIP
//! (SVM without NRIP save, as QEMU's TCG offers it): the instruction is decoded with `iced-x86`, so prefixes
//! (operand size `66`, segment overrides, REX, …) are counted instead of assuming the bare opcode's length.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction};

/// The longest x86 instruction, in bytes.
pub const MAX_INSN_LEN: usize = 15;

/// The code segment a vCPU executes from: what decoding and linear addresses depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeSegment {
    /// Segment base (ignored in 64-bit code, where it is 0 for instruction fetches).
    pub base: u64,
    /// 16, 32 or 64: the default operand and address size (CS.L in long mode, else CS.D).
    pub bitness: u32,
}

impl CodeSegment {
    /// The segment from CS.L, CS.D and EFER.LMA.
    pub fn new(base: u64, long: bool, default_32: bool, lma: bool) -> Self {
        let bitness = if lma && long {
            64
        } else if default_32 {
            32
        } else {
            16
        };
        CodeSegment { base: if bitness == 64 { 0 } else { base }, bitness }
    }

    /// The linear address of instruction pointer `ip` in this segment.
    pub fn linear(&self, ip: u64) -> u64 {
        match self.bitness {
            64 => ip,
            32 => self.base.wrapping_add(ip & 0xffff_ffff) & 0xffff_ffff,
            _ => self.base.wrapping_add(ip & 0xffff) & 0xffff_ffff,
        }
    }

    /// The instruction pointer `len` bytes after `ip`, wrapped as the CPU wraps it (EIP, IP).
    pub fn advance(&self, ip: u64, len: usize) -> u64 {
        let next = ip.wrapping_add(len as u64);
        match self.bitness {
            64 => next,
            32 => next & 0xffff_ffff,
            _ => next & 0xffff,
        }
    }
}

/// The length of the instruction at the start of `bytes` in code of `bitness` (16, 32 or 64), or None if
/// `bytes` does not start with a whole valid instruction.
pub fn insn_len(bytes: &[u8], bitness: u32) -> Option<usize> {
    decode(bytes, bitness).map(|i| i.len())
}

/// The length of the instruction at the start of `bytes` if it is VMCALL or VMMCALL (a hypercall by either
/// vendor's instruction, prefixes included), else None.
pub fn hypercall_len(bytes: &[u8], bitness: u32) -> Option<usize> {
    decode(bytes, bitness).filter(|i| matches!(i.code(), Code::Vmcall | Code::Vmmcall)).map(|i| i.len())
}

fn decode(bytes: &[u8], bitness: u32) -> Option<Instruction> {
    if !matches!(bitness, 16 | 32 | 64) {
        return None;
    }
    let bytes = &bytes[..bytes.len().min(MAX_INSN_LEN)];
    let insn = Decoder::new(bitness, bytes, DecoderOptions::NONE).decode();
    (!insn.is_invalid()).then_some(insn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_instructions() {
        assert_eq!(insn_len(&[0x0f, 0xa2], 64), Some(2)); // CPUID
        assert_eq!(insn_len(&[0x0f, 0x32, 0x90], 64), Some(2)); // RDMSR, then NOP
        assert_eq!(insn_len(&[0x0f, 0x30], 32), Some(2)); // WRMSR
        assert_eq!(insn_len(&[0xf4], 16), Some(1)); // HLT
        assert_eq!(insn_len(&[0xf3, 0x90], 64), Some(2)); // PAUSE
        assert_eq!(insn_len(&[0x0f, 0x01, 0xd9], 64), Some(3)); // VMMCALL
        assert_eq!(insn_len(&[0x0f, 0x01, 0xc1], 64), Some(3)); // VMCALL
        assert_eq!(insn_len(&[0xe6, 0xe9], 32), Some(2)); // OUT 0xe9, AL
        assert_eq!(insn_len(&[0xee], 32), Some(1)); // OUT DX, AL
    }

    #[test]
    fn prefixed_instructions_count_their_prefixes() {
        assert_eq!(insn_len(&[0x66, 0x0f, 0xa2], 64), Some(3)); // operand-size CPUID
        assert_eq!(insn_len(&[0x2e, 0x0f, 0x32], 64), Some(3)); // CS-override RDMSR
        assert_eq!(insn_len(&[0x48, 0x0f, 0x30], 64), Some(3)); // REX.W WRMSR
        assert_eq!(insn_len(&[0x66, 0x2e, 0x41, 0x0f, 0xa2], 64), Some(5)); // three prefixes
        assert_eq!(insn_len(&[0x3e, 0x3e, 0x3e, 0x0f, 0x01, 0xd9], 64), Some(6)); // VMMCALL, 3 DS overrides
        assert_eq!(insn_len(&[0x66, 0x0f, 0xa2], 16), Some(3)); // 16-bit code (a real-mode trampoline)
        assert_eq!(insn_len(&[0x66, 0xe5, 0x70], 32), Some(3)); // IN AX, 0x70
    }

    #[test]
    fn hypercall_instructions() {
        assert_eq!(hypercall_len(&[0x0f, 0x01, 0xc1, 0xc3], 64), Some(3)); // VMCALL; RET
        assert_eq!(hypercall_len(&[0x0f, 0x01, 0xd9], 32), Some(3)); // VMMCALL
        assert_eq!(hypercall_len(&[0x2e, 0x0f, 0x01, 0xd9], 64), Some(4));
        assert_eq!(hypercall_len(&[0x3e, 0x48, 0x0f, 0x01, 0xc1], 64), Some(5));
        assert_eq!(hypercall_len(&[0x0f, 0x0b], 64), None); // UD2
        assert_eq!(hypercall_len(&[0x0f, 0x01, 0xd8], 64), None); // VMRUN
        assert_eq!(hypercall_len(&[0x0f, 0x01], 64), None);
        assert_eq!(hypercall_len(&[0xf0, 0x0f, 0x01, 0xc1], 64), None); // LOCK VMCALL: #UD on hardware too
    }

    #[test]
    fn rex_is_an_instruction_outside_long_mode() {
        // In 32-bit code 0x48 is DEC EAX, one byte on its own.
        assert_eq!(insn_len(&[0x48, 0x0f, 0x30], 32), Some(1));
    }

    #[test]
    fn invalid_or_cut_short_is_none() {
        assert_eq!(insn_len(&[0x0f], 64), None); // half an opcode
        assert_eq!(insn_len(&[0x66, 0x0f], 64), None);
        assert_eq!(insn_len(&[], 64), None);
        assert_eq!(insn_len(&[0x0f, 0xa2], 48), None);
        assert_eq!(insn_len(&[0x66; 15], 64), None); // prefixes only: over the 15-byte limit
    }

    #[test]
    fn code_segments() {
        let real = CodeSegment::new(0x9a000, false, false, false);
        assert_eq!(real.bitness, 16);
        assert_eq!(real.linear(0x10), 0x9a010);
        assert_eq!(real.advance(0xffff, 2), 1);
        let prot = CodeSegment::new(0, false, true, false);
        assert_eq!((prot.bitness, prot.advance(0xffff_ffff, 1)), (32, 0));
        let long = CodeSegment::new(0x1234, true, false, true);
        assert_eq!((long.bitness, long.linear(0xffff_8000_0000_0000)), (64, 0xffff_8000_0000_0000));
        // CS.L without EFER.LMA is not 64-bit code.
        assert_eq!(CodeSegment::new(0, true, true, false).bitness, 32);
    }
}
