//! The VMCS, typed: one enum per field class and width (Intel SDM vol. 3, appendix B). Read-only fields have
//! no writer. This file and its siblings are the only places that name VMCS fields.

use core::arch::asm;

/// Why a VMREAD/VMWRITE or VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmFail;

fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: VMWRITE only changes the current VMCS (loaded by the caller with VMPTRLD); a bad field is
    // reported through the flags, which are checked.
    unsafe {
        asm!("vmwrite {1}, {0}", "setna {2}", in(reg) value, in(reg) field as u64, out(reg_byte) failed,
             options(nostack))
    };
    if failed != 0 {
        Err(VmFail)
    } else {
        Ok(())
    }
}

fn vmread(field: u32) -> u64 {
    let value: u64;
    // SAFETY: VMREAD of the current VMCS has no side effects; on failure the destination is left as 0.
    unsafe { asm!("xor {0:e}, {0:e}", "vmread {0}, {1}", out(reg) value, in(reg) field as u64, options(nostack)) };
    value
}

macro_rules! rw_fields {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident = $v:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name { $($(#[$fm])* $f = $v,)* }
        impl $name {
            /// Reads the field of the current VMCS.
            pub fn read(self) -> u64 { vmread(self as u32) }
            /// Writes the field of the current VMCS.
            pub fn write(self, v: u64) -> Result<(), VmFail> { vmwrite(self as u32, v) }
        }
    };
}

macro_rules! ro_fields {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident = $v:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name { $($(#[$fm])* $f = $v,)* }
        impl $name {
            /// Reads the field of the current VMCS.
            pub fn read(self) -> u64 { vmread(self as u32) }
        }
    };
}

rw_fields!(
    /// 16-bit control fields.
    Control16 { Vpid = 0x0000, }
);
rw_fields!(
    /// 16-bit guest-state fields.
    Guest16 { Es = 0x800, Cs = 0x802, Ss = 0x804, Ds = 0x806, Fs = 0x808, Gs = 0x80a, Ldtr = 0x80c, Tr = 0x80e, }
);
rw_fields!(
    /// 16-bit host-state fields.
    Host16 { Es = 0xc00, Cs = 0xc02, Ss = 0xc04, Ds = 0xc06, Fs = 0xc08, Gs = 0xc0a, Tr = 0xc0c, }
);
rw_fields!(
    /// 64-bit control fields.
    Control64 { IoBitmapA = 0x2000, IoBitmapB = 0x2002, MsrBitmap = 0x2004, TscOffset = 0x2010, EptPointer = 0x201a, }
);
ro_fields!(
    /// 64-bit read-only data fields.
    Exit64 { GuestPhysicalAddress = 0x2400, }
);
rw_fields!(
    /// 64-bit guest-state fields.
    Guest64 { VmcsLinkPointer = 0x2800, DebugCtl = 0x2802, Pat = 0x2804, Efer = 0x2806, }
);
rw_fields!(
    /// 64-bit host-state fields.
    Host64 { Pat = 0x2c00, Efer = 0x2c02, }
);
rw_fields!(
    /// 32-bit control fields.
    Control32 {
        PinBased = 0x4000,
        PrimaryProc = 0x4002,
        ExceptionBitmap = 0x4004,
        Cr3TargetCount = 0x400a,
        ExitControls = 0x400c,
        ExitMsrStoreCount = 0x400e,
        ExitMsrLoadCount = 0x4010,
        EntryControls = 0x4012,
        EntryMsrLoadCount = 0x4014,
        EntryInterruptionInfo = 0x4016,
        EntryExceptionError = 0x4018,
        EntryInstructionLength = 0x401a,
        SecondaryProc = 0x401e,
        PleGap = 0x4020,
        PleWindow = 0x4022,
    }
);
ro_fields!(
    /// 32-bit read-only data fields.
    Exit32 {
        InstructionError = 0x4400,
        Reason = 0x4402,
        InterruptionInfo = 0x4404,
        InterruptionError = 0x4406,
        IdtVectoringInfo = 0x4408,
        IdtVectoringError = 0x440a,
        InstructionLength = 0x440c,
    }
);
rw_fields!(
    /// 32-bit guest-state fields.
    Guest32 {
        EsLimit = 0x4800, CsLimit = 0x4802, SsLimit = 0x4804, DsLimit = 0x4806, FsLimit = 0x4808, GsLimit = 0x480a,
        LdtrLimit = 0x480c, TrLimit = 0x480e, GdtrLimit = 0x4810, IdtrLimit = 0x4812,
        EsAr = 0x4814, CsAr = 0x4816, SsAr = 0x4818, DsAr = 0x481a, FsAr = 0x481c, GsAr = 0x481e, LdtrAr = 0x4820,
        TrAr = 0x4822, Interruptibility = 0x4824, ActivityState = 0x4826, SysenterCs = 0x482a,
    }
);
rw_fields!(
    /// 32-bit host-state fields.
    Host32 { SysenterCs = 0x4c00, }
);
rw_fields!(
    /// Natural-width control fields.
    ControlN { Cr0Mask = 0x6000, Cr4Mask = 0x6002, Cr0ReadShadow = 0x6004, Cr4ReadShadow = 0x6006, }
);
ro_fields!(
    /// Natural-width read-only data fields.
    ExitN { Qualification = 0x6400, GuestLinearAddress = 0x640a, }
);
rw_fields!(
    /// Natural-width guest-state fields.
    GuestN {
        Cr0 = 0x6800, Cr3 = 0x6802, Cr4 = 0x6804, EsBase = 0x6806, CsBase = 0x6808, SsBase = 0x680a,
        DsBase = 0x680c, FsBase = 0x680e, GsBase = 0x6810, LdtrBase = 0x6812, TrBase = 0x6814, GdtrBase = 0x6816,
        IdtrBase = 0x6818, Dr7 = 0x681a, Rsp = 0x681c, Rip = 0x681e, Rflags = 0x6820, PendingDebug = 0x6822,
        SysenterEsp = 0x6824, SysenterEip = 0x6826,
    }
);
rw_fields!(
    /// Natural-width host-state fields.
    HostN {
        Cr0 = 0x6c00, Cr3 = 0x6c02, Cr4 = 0x6c04, FsBase = 0x6c06, GsBase = 0x6c08, TrBase = 0x6c0a,
        GdtrBase = 0x6c0c, IdtrBase = 0x6c0e, SysenterEsp = 0x6c10, SysenterEip = 0x6c12, Rsp = 0x6c14, Rip = 0x6c16,
    }
);

/// Names of VM-instruction error numbers (SDM vol. 3, 31.4).
pub fn instruction_error_name(n: u64) -> &'static str {
    match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "Invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// Converts a VMCB-style compressed segment attribute (access byte, then AVL/L/DB/G in bits 8-11) to the VMCS
/// access-rights format (those four bits at 12-15).
pub const fn ar_from_attrib(attrib: u16) -> u64 {
    ((attrib as u64) & 0xff) | (((attrib as u64) & 0xf00) << 4)
}

/// Access rights of an unusable segment.
pub const AR_UNUSABLE: u64 = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rights() {
        assert_eq!(ar_from_attrib(0xc9b), 0xc09b);
        assert_eq!(ar_from_attrib(0xa9b), 0xa09b);
        assert_eq!(ar_from_attrib(0x8b), 0x8b);
    }

    #[test]
    fn error_names() {
        assert_eq!(instruction_error_name(7), "VM entry with invalid control field(s)");
        assert_eq!(instruction_error_name(99), "unknown VM-instruction error");
    }
}
