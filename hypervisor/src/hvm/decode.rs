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

/// A general-purpose register operand: its x86 number (0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI,
/// 8-15 R8-R15), its width in bytes, and whether it is the high byte (AH, CH, DH, BH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    /// x86 register number.
    pub number: u8,
    /// 1, 2, 4 or 8.
    pub size: u8,
    /// AH, CH, DH or BH: bits 15:8 of register `number`.
    pub high8: bool,
}

/// A guest instruction that touched emulated MMIO, as Keel can carry it out: a plain load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioInsn {
    /// `size` bytes from memory into `dst`; a 32-bit destination clears its upper half, as the CPU does, and
    /// `movzx` widens the value with zeros.
    Load {
        /// The register written.
        dst: Reg,
        /// Bytes read.
        size: u8,
    },
    /// `size` bytes of a register or an immediate into memory.
    Store {
        /// Where the value comes from.
        src: StoreSrc,
        /// Bytes written.
        size: u8,
    },
}

/// The value a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreSrc {
    /// A register.
    Reg(Reg),
    /// An immediate (already sign-extended to the store's size).
    Imm(u64),
}

/// The MMIO access at the start of `bytes` and its length, if it is one Keel emulates: `mov` between a
/// register and memory (8 to 64 bits), `mov` of an immediate to memory, `movzx` from memory.
pub fn mmio_insn(bytes: &[u8], bitness: u32) -> Option<(MmioInsn, usize)> {
    use iced_x86::OpKind;
    let i = decode(bytes, bitness)?;
    let reg = |r: iced_x86::Register| {
        let n = r as u32;
        let (number, size, high8) = match n {
            1..=4 => (n - 1, 1, false),
            5..=8 => (n - 5, 1, true),
            9..=20 => (n - 5, 1, false),
            21..=36 => (n - 21, 2, false),
            37..=52 => (n - 37, 4, false),
            53..=68 => (n - 53, 8, false),
            _ => return None,
        };
        Some(Reg { number: number as u8, size, high8 })
    };
    let size = match i.code() {
        Code::Mov_rm8_r8 | Code::Mov_r8_rm8 | Code::Mov_rm8_imm8 => 1,
        Code::Movzx_r16_rm8 | Code::Movzx_r32_rm8 | Code::Movzx_r64_rm8 => 1,
        Code::Mov_rm16_r16 | Code::Mov_r16_rm16 | Code::Mov_rm16_imm16 => 2,
        Code::Movzx_r16_rm16 | Code::Movzx_r32_rm16 | Code::Movzx_r64_rm16 => 2,
        Code::Mov_rm32_r32 | Code::Mov_r32_rm32 | Code::Mov_rm32_imm32 => 4,
        _ => 8,
    };
    let insn = match i.code() {
        Code::Mov_rm8_r8 | Code::Mov_rm16_r16 | Code::Mov_rm32_r32 | Code::Mov_rm64_r64
            if i.op0_kind() == OpKind::Memory =>
        {
            MmioInsn::Store { src: StoreSrc::Reg(reg(i.op1_register())?), size }
        }
        Code::Mov_r8_rm8
        | Code::Mov_r16_rm16
        | Code::Mov_r32_rm32
        | Code::Mov_r64_rm64
        | Code::Movzx_r16_rm8
        | Code::Movzx_r32_rm8
        | Code::Movzx_r64_rm8
        | Code::Movzx_r16_rm16
        | Code::Movzx_r32_rm16
        | Code::Movzx_r64_rm16
            if i.op1_kind() == OpKind::Memory =>
        {
            MmioInsn::Load { dst: reg(i.op0_register())?, size }
        }
        Code::Mov_rm8_imm8 | Code::Mov_rm16_imm16 | Code::Mov_rm32_imm32 | Code::Mov_rm64_imm32
            if i.op0_kind() == OpKind::Memory =>
        {
            MmioInsn::Store { src: StoreSrc::Imm(i.immediate(1) & (u64::MAX >> (64 - 8 * u32::from(size)))), size }
        }
        _ => return None,
    };
    Some((insn, i.len()))
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

    #[test]
    fn mmio_loads_and_stores() {
        let r = |number, size| Reg { number, size, high8: false };
        // mov [rax], edx (Linux's writel of the IO-APIC index)
        assert_eq!(mmio_insn(&[0x89, 0x10], 64), Some((MmioInsn::Store { src: StoreSrc::Reg(r(2, 4)), size: 4 }, 2)));
        // mov eax, [rdx+0x10] (readl of the window)
        assert_eq!(mmio_insn(&[0x8b, 0x42, 0x10], 64), Some((MmioInsn::Load { dst: r(0, 4), size: 4 }, 3)));
        // mov r9d, [rax]; mov [rcx], r15
        assert_eq!(mmio_insn(&[0x44, 0x8b, 0x08], 64), Some((MmioInsn::Load { dst: r(9, 4), size: 4 }, 3)));
        assert_eq!(
            mmio_insn(&[0x4c, 0x89, 0x39], 64),
            Some((MmioInsn::Store { src: StoreSrc::Reg(r(15, 8)), size: 8 }, 3))
        );
        // mov byte [rax], ah; mov dil, [rax]
        assert_eq!(
            mmio_insn(&[0x88, 0x20], 64),
            Some((MmioInsn::Store { src: StoreSrc::Reg(Reg { number: 0, size: 1, high8: true }), size: 1 }, 2))
        );
        assert_eq!(mmio_insn(&[0x40, 0x8a, 0x38], 64), Some((MmioInsn::Load { dst: r(7, 1), size: 1 }, 3)));
        // mov dword [rax+4], 0x12345678; mov qword [rax], -1 (imm32 sign-extended)
        assert_eq!(
            mmio_insn(&[0xc7, 0x40, 0x04, 0x78, 0x56, 0x34, 0x12], 64),
            Some((MmioInsn::Store { src: StoreSrc::Imm(0x1234_5678), size: 4 }, 7))
        );
        assert_eq!(
            mmio_insn(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], 64),
            Some((MmioInsn::Store { src: StoreSrc::Imm(u64::MAX), size: 8 }, 7))
        );
        // movzx eax, word [rdx]
        assert_eq!(mmio_insn(&[0x0f, 0xb7, 0x02], 64), Some((MmioInsn::Load { dst: r(0, 4), size: 2 }, 3)));
        // Not emulated: register-to-register moves, arithmetic on memory, string moves.
        assert_eq!(mmio_insn(&[0x89, 0xd0], 64), None);
        assert_eq!(mmio_insn(&[0x01, 0x10], 64), None);
        assert_eq!(mmio_insn(&[0xa5], 64), None);
    }
}
