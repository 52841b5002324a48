//! Keel's own consistency check of the VMX guest-state area, after the checks a processor makes on VM entry
//! (Intel SDM vol. 3, "Checks on the Guest State Area"). The processor only says that the guest state is invalid
//! (exit reason 33); this check, run on a snapshot of the VMCS when that happens, names the field and the rule.
//! It is pure, so the host unit tests below cover it.

/// One segment register as the VMCS holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// Access rights in the VMCS format (type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13, D/B 14, G 15, unusable 16).
    pub ar: u32,
}

/// Access-rights bits.
pub mod ar {
    pub const TYPE: u32 = 0xf;
    pub const S: u32 = 1 << 4;
    pub const DPL_SHIFT: u32 = 5;
    pub const P: u32 = 1 << 7;
    pub const L: u32 = 1 << 13;
    pub const DB: u32 = 1 << 14;
    pub const G: u32 = 1 << 15;
    pub const UNUSABLE: u32 = 1 << 16;
    /// Bits 11:8 and 31:17, which must be 0 in a usable segment.
    pub const RESERVED: u32 = 0xf00 | 0xfffe_0000;
}

impl Seg {
    fn usable(&self) -> bool {
        self.ar & ar::UNUSABLE == 0
    }
    fn ty(&self) -> u32 {
        self.ar & ar::TYPE
    }
    fn dpl(&self) -> u32 {
        (self.ar >> ar::DPL_SHIFT) & 3
    }
    fn rpl(&self) -> u32 {
        self.selector as u32 & 3
    }
}

/// The guest-state fields (and the controls and fixed bits they are checked against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    pub cr0: u64,
    pub cr4: u64,
    pub dr7: u64,
    pub efer: u64,
    pub rflags: u64,
    pub rip: u64,
    pub cs: Seg,
    pub ss: Seg,
    pub ds: Seg,
    pub es: Seg,
    pub fs: Seg,
    pub gs: Seg,
    pub tr: Seg,
    pub ldtr: Seg,
    pub gdtr_base: u64,
    pub gdtr_limit: u32,
    pub idtr_base: u64,
    pub idtr_limit: u32,
    pub activity: u32,
    pub interruptibility: u32,
    pub vmcs_link: u64,
    /// VM-entry control "IA-32e mode guest".
    pub ia32e_guest: bool,
    /// Secondary control "unrestricted guest".
    pub unrestricted: bool,
    /// IA32_VMX_CR0_FIXED0/1 and IA32_VMX_CR4_FIXED0/1.
    pub cr0_fixed: (u64, u64),
    pub cr4_fixed: (u64, u64),
}

/// The first rule the state breaks: the field and what is wrong with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: &'static str,
    pub rule: &'static str,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_PCIDE: u64 = 1 << 17;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// EFER bits a guest may have: SCE, LME, LMA, NXE.
const EFER_KNOWN: u64 = 1 | EFER_LME | EFER_LMA | 1 << 11;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS bits that must be 0: 63:22, 15, 5, 3.
const RFLAGS_RESERVED: u64 = !((1 << 22) - 1) | 1 << 15 | 1 << 5 | 1 << 3;

fn canonical(a: u64) -> bool {
    let top = (a as i64) >> 47;
    top == 0 || top == -1
}

/// The limit and the granularity bit agree: limit bits 11:0 all ones if G is set, bits 31:20 all zero if not.
fn limit_matches_granularity(s: &Seg) -> bool {
    let g = s.ar & ar::G != 0;
    (s.limit & 0xfff == 0xfff || !g) && (s.limit >> 20 == 0 || g)
}

fn fail(field: &'static str, rule: &'static str) -> Result<(), Violation> {
    Err(Violation { field, rule })
}

macro_rules! ensure {
    ($cond:expr, $field:expr, $rule:expr) => {
        if !$cond {
            return fail($field, $rule);
        }
    };
}

/// Checks `s`; the first rule broken, in the SDM's order, is the answer.
pub fn check(s: &GuestState) -> Result<(), Violation> {
    control_registers(s)?;
    segments(s)?;
    ensure!(canonical(s.gdtr_base), "GDTR base", "must be canonical");
    ensure!(canonical(s.idtr_base), "IDTR base", "must be canonical");
    ensure!(s.gdtr_limit >> 16 == 0, "GDTR limit", "bits 31:16 must be 0");
    ensure!(s.idtr_limit >> 16 == 0, "IDTR limit", "bits 31:16 must be 0");
    rip_rflags(s)?;
    non_register(s)
}

fn control_registers(s: &GuestState) -> Result<(), Violation> {
    // Under unrestricted guest, PE and PG are exempt from CR0_FIXED0.
    let fixed0 = if s.unrestricted { s.cr0_fixed.0 & !(CR0_PE | CR0_PG) } else { s.cr0_fixed.0 };
    ensure!(s.cr0 & fixed0 == fixed0, "CR0", "a bit fixed to 1 in VMX operation is 0");
    ensure!(s.cr0 & !s.cr0_fixed.1 == 0, "CR0", "a bit fixed to 0 in VMX operation is 1");
    ensure!(s.cr0 & CR0_PG == 0 || s.cr0 & CR0_PE != 0, "CR0", "PG set without PE");
    ensure!(s.cr4 & s.cr4_fixed.0 == s.cr4_fixed.0, "CR4", "a bit fixed to 1 in VMX operation is 0");
    ensure!(s.cr4 & !s.cr4_fixed.1 == 0, "CR4", "a bit fixed to 0 in VMX operation is 1");
    ensure!(s.dr7 >> 32 == 0, "DR7", "bits 63:32 must be 0");
    if s.ia32e_guest {
        ensure!(s.cr0 & CR0_PG != 0, "CR0", "IA-32e mode guest without PG");
        ensure!(s.cr4 & CR4_PAE != 0, "CR4", "IA-32e mode guest without PAE");
    } else {
        ensure!(s.cr4 & CR4_PCIDE == 0, "CR4", "PCIDE set outside IA-32e mode");
    }
    ensure!(s.efer & !EFER_KNOWN == 0, "IA32_EFER", "reserved bits set");
    ensure!((s.efer & EFER_LMA != 0) == s.ia32e_guest, "IA32_EFER", "LMA differs from the IA-32e mode guest control");
    ensure!(
        s.cr0 & CR0_PG == 0 || (s.efer & EFER_LMA != 0) == (s.efer & EFER_LME != 0),
        "IA32_EFER",
        "LMA differs from LME while CR0.PG is set"
    );
    Ok(())
}

fn segments(s: &GuestState) -> Result<(), Violation> {
    ensure!(s.tr.selector & 4 == 0, "TR selector", "TI flag must be 0");
    ensure!(!s.ldtr.usable() || s.ldtr.selector & 4 == 0, "LDTR selector", "TI flag must be 0");
    if s.rflags & RFLAGS_VM != 0 {
        // Virtual-8086 mode: every data and code segment is a real-mode one.
        for (name, seg) in [("CS", &s.cs), ("SS", &s.ss), ("DS", &s.ds), ("ES", &s.es), ("FS", &s.fs), ("GS", &s.gs)] {
            ensure!(seg.base == (seg.selector as u64) << 4, name, "virtual-8086 base must be selector << 4");
            ensure!(seg.limit == 0xffff, name, "virtual-8086 limit must be 0xffff");
            ensure!(seg.ar == 0xf3, name, "virtual-8086 access rights must be 0xf3");
        }
    } else {
        protected_segments(s)?;
    }
    // Bases.
    ensure!(canonical(s.tr.base), "TR base", "must be canonical");
    ensure!(canonical(s.fs.base), "FS base", "must be canonical");
    ensure!(canonical(s.gs.base), "GS base", "must be canonical");
    ensure!(!s.ldtr.usable() || canonical(s.ldtr.base), "LDTR base", "must be canonical");
    ensure!(s.cs.base >> 32 == 0, "CS base", "bits 63:32 must be 0");
    for (name, seg) in [("SS base", &s.ss), ("DS base", &s.ds), ("ES base", &s.es)] {
        ensure!(!seg.usable() || seg.base >> 32 == 0, name, "bits 63:32 must be 0");
    }
    // TR and LDTR.
    let tr = &s.tr;
    ensure!(tr.usable(), "TR access rights", "TR must be usable");
    ensure!(tr.ty() == 11 || (!s.ia32e_guest && tr.ty() == 3), "TR access rights", "type must be a busy TSS");
    ensure!(tr.ar & ar::S == 0, "TR access rights", "S must be 0 (a system segment)");
    ensure!(tr.ar & ar::P != 0, "TR access rights", "P must be 1");
    ensure!(tr.ar & ar::RESERVED == 0, "TR access rights", "reserved bits set");
    ensure!(limit_matches_granularity(tr), "TR limit", "disagrees with the G bit");
    let ldtr = &s.ldtr;
    if ldtr.usable() {
        ensure!(ldtr.ty() == 2, "LDTR access rights", "type must be 2 (LDT)");
        ensure!(ldtr.ar & ar::S == 0, "LDTR access rights", "S must be 0 (a system segment)");
        ensure!(ldtr.ar & ar::P != 0, "LDTR access rights", "P must be 1");
        ensure!(ldtr.ar & ar::RESERVED == 0, "LDTR access rights", "reserved bits set");
        ensure!(limit_matches_granularity(ldtr), "LDTR limit", "disagrees with the G bit");
    }
    Ok(())
}

fn protected_segments(s: &GuestState) -> Result<(), Violation> {
    let (cs, ss) = (&s.cs, &s.ss);
    let pe = s.cr0 & CR0_PE != 0;
    ensure!(s.unrestricted || ss.rpl() == cs.rpl(), "SS selector", "RPL must equal CS.RPL");
    // CS.
    ensure!(
        matches!(cs.ty(), 9 | 11 | 13 | 15) || (s.unrestricted && cs.ty() == 3),
        "CS access rights",
        "type must be accessed code (or read/write accessed data under unrestricted guest)"
    );
    ensure!(cs.ar & ar::S != 0, "CS access rights", "S must be 1 (code or data)");
    match cs.ty() {
        3 => ensure!(cs.dpl() == 0, "CS access rights", "DPL must be 0 for a data-type CS"),
        9 | 11 => ensure!(cs.dpl() == ss.dpl(), "CS access rights", "non-conforming CS DPL must equal SS.DPL"),
        _ => ensure!(cs.dpl() <= ss.dpl(), "CS access rights", "conforming CS DPL must not exceed SS.DPL"),
    }
    ensure!(cs.ar & ar::P != 0, "CS access rights", "P must be 1");
    ensure!(cs.ar & ar::RESERVED == 0, "CS access rights", "reserved bits set");
    ensure!(
        !(s.ia32e_guest && cs.ar & ar::L != 0 && cs.ar & ar::DB != 0),
        "CS access rights",
        "L and D/B both set in IA-32e mode"
    );
    ensure!(limit_matches_granularity(cs), "CS limit", "disagrees with the G bit");
    // SS.
    if ss.usable() {
        ensure!(matches!(ss.ty(), 3 | 7), "SS access rights", "type must be read/write data");
        ensure!(ss.ar & ar::S != 0, "SS access rights", "S must be 1 (code or data)");
        ensure!(ss.ar & ar::P != 0, "SS access rights", "P must be 1");
        ensure!(ss.ar & ar::RESERVED == 0, "SS access rights", "reserved bits set");
        ensure!(limit_matches_granularity(ss), "SS limit", "disagrees with the G bit");
    }
    ensure!(s.unrestricted || ss.dpl() == ss.rpl(), "SS access rights", "DPL must equal the selector's RPL");
    let real_mode = cs.ty() == 3 || !pe;
    ensure!(!real_mode || ss.dpl() == 0, "SS access rights", "DPL must be 0 in real mode");
    // DS, ES, FS, GS.
    for (name, seg) in [
        ("DS access rights", &s.ds),
        ("ES access rights", &s.es),
        ("FS access rights", &s.fs),
        ("GS access rights", &s.gs),
    ] {
        if !seg.usable() {
            continue;
        }
        ensure!(seg.ty() & 1 != 0, name, "type must be accessed");
        ensure!(seg.ty() & 8 == 0 || seg.ty() & 2 != 0, name, "a code segment must be readable");
        ensure!(seg.ar & ar::S != 0, name, "S must be 1 (code or data)");
        ensure!(
            s.unrestricted || seg.ty() > 11 || seg.dpl() >= seg.rpl(),
            name,
            "DPL must not be below the selector's RPL"
        );
        ensure!(seg.ar & ar::P != 0, name, "P must be 1");
        ensure!(seg.ar & ar::RESERVED == 0, name, "reserved bits set");
        ensure!(limit_matches_granularity(seg), name, "the limit disagrees with the G bit");
    }
    Ok(())
}

fn rip_rflags(s: &GuestState) -> Result<(), Violation> {
    let long_cs = s.ia32e_guest && s.cs.ar & ar::L != 0;
    ensure!(long_cs || s.rip >> 32 == 0, "RIP", "bits 63:32 must be 0 outside 64-bit code");
    ensure!(!long_cs || canonical(s.rip), "RIP", "must be canonical in 64-bit code");
    ensure!(s.rflags & RFLAGS_RESERVED == 0, "RFLAGS", "reserved bits set (63:22, 15, 5 or 3)");
    ensure!(s.rflags & 2 != 0, "RFLAGS", "bit 1 must be 1");
    ensure!(
        s.rflags & RFLAGS_VM == 0 || (!s.ia32e_guest && s.cr0 & CR0_PE != 0),
        "RFLAGS",
        "VM set in IA-32e mode or with CR0.PE clear"
    );
    Ok(())
}

fn non_register(s: &GuestState) -> Result<(), Violation> {
    ensure!(s.activity <= 3, "activity state", "must be 0-3");
    ensure!(s.activity != 1 || s.ss.dpl() == 0, "activity state", "HLT needs SS.DPL 0");
    let i = s.interruptibility;
    ensure!(i >> 5 == 0, "interruptibility state", "bits 31:5 must be 0");
    ensure!(i & 3 != 3, "interruptibility state", "blocking by STI and by MOV SS both set");
    ensure!(i & 1 == 0 || s.rflags & RFLAGS_IF != 0, "interruptibility state", "blocking by STI with RFLAGS.IF clear");
    ensure!(s.vmcs_link == u64::MAX, "VMCS link pointer", "must be all ones (no VMCS shadowing)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(selector: u16, ar: u32) -> Seg {
        Seg { selector, base: 0, limit: 0xffff_ffff, ar }
    }

    /// Keel's PVH start state: 32-bit protected mode, flat segments, unrestricted guest.
    fn pvh() -> GuestState {
        GuestState {
            // PE | ET as the guest wrote it, plus NE, which VMX fixes to 1 (Keel's set_cr0 adds it).
            cr0: 0x31,
            cr4: 1 << 13,
            dr7: 0x400,
            efer: 0,
            rflags: 2,
            rip: 0x10_0000,
            cs: flat(0x08, 0xc09b),
            ss: flat(0x10, 0xc093),
            ds: flat(0x10, 0xc093),
            es: flat(0x10, 0xc093),
            fs: flat(0x10, 0xc093),
            gs: flat(0x10, 0xc093),
            tr: Seg { selector: 0x18, base: 0, limit: 0x67, ar: 0x8b },
            ldtr: Seg { selector: 0, base: 0, limit: 0xffff, ar: 0x82 },
            gdtr_base: 0,
            gdtr_limit: 0xffff,
            idtr_base: 0,
            idtr_limit: 0xffff,
            activity: 0,
            interruptibility: 0,
            vmcs_link: u64::MAX,
            ia32e_guest: false,
            unrestricted: true,
            cr0_fixed: (0x8000_0021, 0xffff_ffff),
            cr4_fixed: (1 << 13, 0x3767ff),
        }
    }

    /// An AP after INIT-SIPI: real mode at vector:0.
    fn sipi() -> GuestState {
        let real = |ar| Seg { selector: 0, base: 0, limit: 0xffff, ar };
        GuestState {
            cr0: 0x10 | 1 << 5,
            rip: 0,
            cs: Seg { selector: 0x9a00, base: 0x9a000, limit: 0xffff, ar: 0x9b },
            ss: real(0x93),
            ds: real(0x93),
            es: real(0x93),
            fs: real(0x93),
            gs: real(0x93),
            tr: Seg { selector: 0, base: 0, limit: 0xffff, ar: 0x8b },
            ..pvh()
        }
    }

    /// A 64-bit kernel.
    fn long_mode() -> GuestState {
        GuestState {
            cr0: 0x8005_0033,
            cr4: 1 << 13 | CR4_PAE,
            efer: EFER_LME | EFER_LMA | 1 << 11 | 1,
            rflags: 0x246,
            rip: 0xffff_ffff_8100_0000,
            cs: flat(0x10, 0xa09b),
            ss: flat(0x18, 0xc093),
            ia32e_guest: true,
            ..pvh()
        }
    }

    fn broken(f: impl FnOnce(&mut GuestState)) -> Violation {
        let mut s = pvh();
        f(&mut s);
        check(&s).expect_err("the broken state passed")
    }

    #[test]
    fn states_keel_builds_pass() {
        assert_eq!(check(&pvh()), Ok(()));
        assert_eq!(check(&sipi()), Ok(()));
        assert_eq!(check(&long_mode()), Ok(()));
    }

    #[test]
    fn each_broken_field_is_named() {
        assert_eq!(broken(|s| s.rflags = 0), Violation { field: "RFLAGS", rule: "bit 1 must be 1" });
        assert_eq!(broken(|s| s.rflags |= 1 << 15).field, "RFLAGS");
        assert_eq!(broken(|s| s.cr0 = (s.cr0 | CR0_PG) & !CR0_PE).rule, "PG set without PE");
        assert_eq!(broken(|s| s.cr0 &= !(1 << 5)).field, "CR0");
        assert_eq!(broken(|s| s.cr4 = 0).field, "CR4");
        assert_eq!(broken(|s| s.dr7 = 1 << 40).field, "DR7");
        assert_eq!(broken(|s| s.efer = EFER_LMA).rule, "LMA differs from the IA-32e mode guest control");
        assert_eq!(broken(|s| s.cs.ar = 0xc093 & !1).field, "CS access rights");
        assert_eq!(broken(|s| s.cs.limit = 0xfff0).field, "CS limit");
        assert_eq!(broken(|s| s.ss.ar = 0xc09b).rule, "type must be read/write data");
        assert_eq!(broken(|s| s.ds.ar = 0xc092).rule, "type must be accessed");
        assert_eq!(broken(|s| s.tr.ar = 0x89).rule, "type must be a busy TSS");
        assert_eq!(broken(|s| s.tr.ar |= ar::UNUSABLE).rule, "TR must be usable");
        assert_eq!(broken(|s| s.tr.selector = 0x1c).field, "TR selector");
        assert_eq!(broken(|s| s.ldtr.ar = 0x83).field, "LDTR access rights");
        assert_eq!(broken(|s| s.gdtr_limit = 0x1_0000).field, "GDTR limit");
        assert_eq!(broken(|s| s.rip = 1 << 40).field, "RIP");
        assert_eq!(broken(|s| s.interruptibility = 1).rule, "blocking by STI with RFLAGS.IF clear");
        assert_eq!(broken(|s| s.activity = 7).field, "activity state");
        assert_eq!(broken(|s| s.vmcs_link = 0).field, "VMCS link pointer");
        assert_eq!(broken(|s| s.fs.base = 1 << 60).field, "FS base");
    }

    #[test]
    fn long_mode_rules() {
        let mut s = long_mode();
        s.cs.ar |= ar::DB;
        assert_eq!(check(&s).unwrap_err().rule, "L and D/B both set in IA-32e mode");
        let mut s = long_mode();
        s.cr4 &= !CR4_PAE;
        assert_eq!(check(&s).unwrap_err().rule, "IA-32e mode guest without PAE");
        let mut s = long_mode();
        s.rip = 0x0000_8000_0000_0000;
        assert_eq!(check(&s).unwrap_err().rule, "must be canonical in 64-bit code");
    }

    #[test]
    fn restricted_guests_keep_pe_pg_and_rpl_rules() {
        let mut s = sipi();
        s.unrestricted = false;
        assert_eq!(check(&s).unwrap_err().rule, "a bit fixed to 1 in VMX operation is 0");
        let mut s = pvh();
        s.unrestricted = false;
        s.cr0 |= CR0_PG | 1 << 5;
        s.ss.selector = 0x13;
        assert_eq!(check(&s).unwrap_err().rule, "RPL must equal CS.RPL");
    }
}
