//! `xm dump-core`'s file: an ELF64 core (`ET_CORE`, x86-64) of a domain, which gdb and readelf read.
//!
//! Layout: the ELF header, then the program headers (one `PT_NOTE`, then one `PT_LOAD` per contiguous
//! guest-physical RAM range, its addresses the guest-physical ones), then the notes, then each range's pages,
//! page-aligned. The notes are, per vCPU, an `NT_PRSTATUS` named "CORE" whose registers are in Linux's x86-64
//! `user_regs_struct` order (so gdb shows them as that thread's registers; thread ids are vCPU + 1), and one note
//! named "Xen" of type `XEN_ELFNOTE_DUMPCORE_HEADER` (magic, vCPUs, pages, page size) as Xen's own dump-core
//! writes, plus its `XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION`.
//!
//! The domain is read through [`CoreSource`] (memory map, pages, vCPU registers), which the tests fake.

use std::io::Write;

use serde::Serialize;

use super::XmError;

/// Guest page size.
pub const PAGE_SIZE: u64 = 4096;

const EHDR_LEN: u64 = 64;
const PHDR_LEN: u64 = 56;
const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_RWX: u32 = 7;
const NT_PRSTATUS: u32 = 1;
/// Size of Linux's x86-64 `struct elf_prstatus`.
const PRSTATUS_LEN: usize = 336;
/// Offset of `pr_reg` in it (after the signal info, pids and four `timeval`s).
const PR_REG_OFFSET: usize = 112;
/// Offset of `pr_pid`.
const PR_PID_OFFSET: usize = 32;
/// Xen's dump-core note types (`public/elfnote.h`).
const XEN_ELFNOTE_DUMPCORE_HEADER: u32 = 0x200_0001;
const XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: u32 = 0x200_0003;
/// `XC_CORE_MAGIC_HVM`: the magic of a dump of an auto-translated (HVM/PVH) guest.
const XC_CORE_MAGIC_HVM: u64 = 0xF00F_EBEE;
/// Format version 0.1, as Xen writes.
const XEN_DUMPCORE_FORMAT_VERSION: u64 = 1;

/// One vCPU's registers, in the order of Linux's x86-64 `struct user_regs_struct`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl VcpuRegs {
    /// The 27 registers, in `user_regs_struct` order.
    pub fn to_array(&self) -> [u64; 27] {
        [
            self.r15,
            self.r14,
            self.r13,
            self.r12,
            self.rbp,
            self.rbx,
            self.r11,
            self.r10,
            self.r9,
            self.r8,
            self.rax,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.orig_rax,
            self.rip,
            self.cs,
            self.rflags,
            self.rsp,
            self.ss,
            self.fs_base,
            self.gs_base,
            self.ds,
            self.es,
            self.fs,
            self.gs,
        ]
    }
}

/// A range of guest-physical RAM: `len` bytes from `gpa`, both page-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemRange {
    pub gpa: u64,
    pub len: u64,
}

/// Where a core's contents come from.
pub trait CoreSource {
    /// The domain's RAM, as guest-physical ranges.
    fn memory_map(&mut self) -> Result<Vec<MemRange>, XmError>;
    /// The contents of guest page `gfn`.
    fn read_page(&mut self, gfn: u64, page: &mut [u8; PAGE_SIZE as usize]) -> Result<(), XmError>;
    /// Each vCPU's registers, by vCPU id.
    fn vcpu_regs(&mut self) -> Result<Vec<VcpuRegs>, XmError>;
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoreSummary {
    /// The RAM ranges, one `PT_LOAD` each (merged where contiguous).
    pub ranges: Vec<MemRange>,
    /// vCPUs (one `NT_PRSTATUS` each).
    pub vcpus: usize,
    /// Pages written.
    pub pages: u64,
    /// File size, bytes.
    pub bytes: u64,
}

/// Sorts and merges `ranges`, refusing unaligned, empty-overflowing or overlapping ones.
pub fn normalise(mut ranges: Vec<MemRange>) -> Result<Vec<MemRange>, XmError> {
    ranges.retain(|r| r.len != 0);
    ranges.sort_by_key(|r| r.gpa);
    let mut out: Vec<MemRange> = Vec::new();
    for r in ranges {
        if !r.gpa.is_multiple_of(PAGE_SIZE) || !r.len.is_multiple_of(PAGE_SIZE) || r.gpa.checked_add(r.len).is_none() {
            return Err(XmError::Failed(format!("bad memory range {:#x}+{:#x} in the domain's map", r.gpa, r.len)));
        }
        match out.last_mut() {
            Some(last) if last.gpa + last.len > r.gpa => {
                return Err(XmError::Failed(format!("overlapping memory ranges at {:#x} in the domain's map", r.gpa)))
            }
            Some(last) if last.gpa + last.len == r.gpa => last.len += r.len,
            _ => out.push(r),
        }
    }
    Ok(out)
}

fn note(out: &mut Vec<u8>, name: &str, ty: u32, desc: &[u8]) {
    let name = [name.as_bytes(), &[0]].concat();
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&name);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The notes: one `NT_PRSTATUS` per vCPU, then Xen's header and format-version notes.
fn notes(regs: &[VcpuRegs], pages: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in regs.iter().enumerate() {
        let mut desc = vec![0u8; PRSTATUS_LEN];
        desc[PR_PID_OFFSET..PR_PID_OFFSET + 4].copy_from_slice(&(i as u32 + 1).to_le_bytes());
        for (k, v) in r.to_array().iter().enumerate() {
            let at = PR_REG_OFFSET + 8 * k;
            desc[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        note(&mut out, "CORE", NT_PRSTATUS, &desc);
    }
    let header: Vec<u8> =
        [XC_CORE_MAGIC_HVM, regs.len() as u64, pages, PAGE_SIZE].iter().flat_map(|v| v.to_le_bytes()).collect();
    note(&mut out, "Xen", XEN_ELFNOTE_DUMPCORE_HEADER, &header);
    note(&mut out, "Xen", XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION, &XEN_DUMPCORE_FORMAT_VERSION.to_le_bytes());
    out
}

fn phdr(out: &mut Vec<u8>, ty: u32, flags: u32, offset: u64, addr: u64, size: u64, align: u64) {
    for v in [ty, flags] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [offset, addr, addr, size, size, align] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Writes `src`'s core to `out`.
pub fn write_core(src: &mut dyn CoreSource, out: &mut dyn Write) -> Result<CoreSummary, XmError> {
    let io = |e: std::io::Error| XmError::Failed(format!("cannot write the core file: {e}"));
    let ranges = normalise(src.memory_map()?)?;
    let regs = src.vcpu_regs()?;
    let pages: u64 = ranges.iter().map(|r| r.len / PAGE_SIZE).sum();
    let phnum = u16::try_from(ranges.len() + 1)
        .map_err(|_| XmError::Failed(format!("too many memory ranges ({}) for one core file", ranges.len())))?;
    let notes = notes(&regs, pages);
    let notes_at = EHDR_LEN + PHDR_LEN * u64::from(phnum);
    let mut data_at = (notes_at + notes.len() as u64).next_multiple_of(PAGE_SIZE);

    let mut head = Vec::with_capacity(data_at as usize);
    head.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    head.resize(16, 0);
    head.extend_from_slice(&ET_CORE.to_le_bytes());
    head.extend_from_slice(&EM_X86_64.to_le_bytes());
    head.extend_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    head.extend_from_slice(&EHDR_LEN.to_le_bytes()); // e_phoff
    head.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    head.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [EHDR_LEN as u16, PHDR_LEN as u16, phnum, 64, 0, 0] {
        head.extend_from_slice(&v.to_le_bytes());
    }
    phdr(&mut head, PT_NOTE, 0, notes_at, 0, notes.len() as u64, 4);
    for r in &ranges {
        phdr(&mut head, PT_LOAD, PF_RWX, data_at, r.gpa, r.len, PAGE_SIZE);
        data_at += r.len;
    }
    head.extend_from_slice(&notes);
    head.resize(head.len().next_multiple_of(PAGE_SIZE as usize), 0);
    out.write_all(&head).map_err(io)?;

    let mut page = [0u8; PAGE_SIZE as usize];
    for r in &ranges {
        for gfn in r.gpa / PAGE_SIZE..(r.gpa + r.len) / PAGE_SIZE {
            src.read_page(gfn, &mut page)?;
            out.write_all(&page).map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(CoreSummary { ranges, vcpus: regs.len(), pages, bytes: data_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A domain of two RAM ranges (the second given in two touching pieces) and two vCPUs.
    struct Fake;

    impl CoreSource for Fake {
        fn memory_map(&mut self) -> Result<Vec<MemRange>, XmError> {
            Ok(vec![
                MemRange { gpa: 0x10_0000, len: 0x1000 },
                MemRange { gpa: 0, len: 0x2000 },
                MemRange { gpa: 0x10_1000, len: 0x2000 },
            ])
        }
        fn read_page(&mut self, gfn: u64, page: &mut [u8; 4096]) -> Result<(), XmError> {
            page.fill(gfn as u8 ^ 0x5a);
            page[..8].copy_from_slice(&gfn.to_le_bytes());
            Ok(())
        }
        fn vcpu_regs(&mut self) -> Result<Vec<VcpuRegs>, XmError> {
            Ok((0..2)
                .map(|i| VcpuRegs {
                    rip: 0xffff_ffff_8100_0000 + i,
                    rsp: 0xffff_c900_0000_8000,
                    rax: 0x1234,
                    cs: 0x10,
                    ss: 0x18,
                    rflags: 0x246,
                    ..Default::default()
                })
                .collect())
        }
    }

    fn core_file(tag: &str) -> (std::path::PathBuf, CoreSummary) {
        let path = std::env::temp_dir().join(format!("keel-core-{tag}-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        let s = write_core(&mut Fake, &mut f).unwrap();
        (path, s)
    }

    #[test]
    fn ranges_are_merged_and_checked() {
        let r = |gpa, len| MemRange { gpa, len };
        assert_eq!(normalise(Fake.memory_map().unwrap()).unwrap(), [r(0, 0x2000), r(0x10_0000, 0x3000)]);
        assert!(normalise(vec![r(0, 0x2000), r(0x1000, 0x1000)]).is_err(), "overlap");
        assert!(normalise(vec![r(0x800, 0x1000)]).is_err(), "unaligned");
        assert_eq!(normalise(vec![r(0x1000, 0)]).unwrap(), []);
    }

    #[test]
    fn the_core_holds_each_page_at_its_load_offset() {
        let (path, s) = core_file("pages");
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!((s.pages, s.vcpus, s.bytes), (5, 2, bytes.len() as u64));
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]), ET_CORE);
        assert_eq!(u16::from_le_bytes([bytes[56], bytes[57]]), 3, "e_phnum: a note and two loads");
        // The second PT_LOAD (third header): guest-physical 0x100000, three pages.
        let ph = 64 + 2 * 56;
        let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let (off, paddr, size) = (field(ph + 8), field(ph + 24), field(ph + 32));
        assert_eq!((paddr, size), (0x10_0000, 0x3000));
        assert_eq!(off % PAGE_SIZE, 0);
        let gfn_at = |o: u64| u64::from_le_bytes(bytes[o as usize..o as usize + 8].try_into().unwrap());
        assert_eq!([gfn_at(off), gfn_at(off + 0x1000), gfn_at(off + 0x2000)], [0x100, 0x101, 0x102]);
        assert_eq!(bytes[off as usize + 8], 0x100u64 as u8 ^ 0x5a);
    }

    #[test]
    fn readelf_reads_the_notes_and_loads() {
        let (path, _) = core_file("readelf");
        let out = Command::new("readelf").args(["-h", "-l", "-n"]).arg(&path).output();
        let Ok(out) = out else {
            let _ = std::fs::remove_file(&path);
            eprintln!("readelf is not installed; skipped");
            return;
        };
        let _ = std::fs::remove_file(&path);
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("{text}");
        assert!(out.status.success() && out.stderr.is_empty(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("CORE (Core file)"), "{text}");
        assert!(text.contains("Advanced Micro Devices X86-64"), "{text}");
        assert_eq!(text.matches("NT_PRSTATUS").count(), 2, "{text}");
        assert_eq!(text.matches("  LOAD ").count(), 2, "{text}");
        assert!(text.contains("0x0000000000100000 0x0000000000100000"), "{text}");
        assert_eq!(text.matches("Xen ").count(), 2, "{text}");
    }

    #[test]
    fn gdb_reads_each_vcpus_registers() {
        let (path, _) = core_file("gdb");
        let out = Command::new("gdb")
            .args(["-nx", "-batch", "-ex", "set auto-load off", "-ex", "set architecture i386:x86-64", "-c"])
            .arg(&path)
            .args(["-ex", "info registers rip rsp rax", "-ex", "thread 2", "-ex", "info registers rip"])
            .output();
        let _ = std::fs::remove_file(&path);
        let Ok(out) = out else {
            eprintln!("gdb is not installed; skipped");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("0xffffffff81000000"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("0xffffc90000008000"), "{text}");
        assert!(text.contains("0x1234"), "{text}");
        assert!(text.contains("0xffffffff81000001"), "vCPU 1 is gdb's thread 2: {text}");
    }
}
