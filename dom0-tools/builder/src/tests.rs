//! The builder against an in-memory fake of the hypercalls.

use super::*;
use keel_abi::start_info::{HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// One guest's memory and the calls made to it.
#[derive(Default)]
struct Guest {
    populated: BTreeSet<u64>,
    pages: BTreeMap<u64, Vec<u8>>,
    memmap: Vec<HvmMemmapEntry>,
    params: BTreeMap<u32, u64>,
    grants: BTreeMap<u32, (u16, u64)>,
    vcpu: Option<BootVcpu>,
    unpaused: bool,
    next_port: u32,
    calls: Vec<String>,
    /// Fail the call whose name starts with this.
    fail: Option<&'static str>,
}

impl Guest {
    fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let a = gpa + i;
                self.pages.get(&(a / PAGE_SIZE)).map_or(0, |p| p[(a % PAGE_SIZE) as usize])
            })
            .collect()
    }
    fn val<T: bytemuck::Pod>(&self, gpa: u64) -> T {
        bytemuck::pod_read_unaligned(&self.read(gpa, std::mem::size_of::<T>()))
    }
    fn string(&self, gpa: u64) -> String {
        let b = self.read(gpa, 4096);
        String::from_utf8(b[..b.iter().position(|&c| c == 0).unwrap()].to_vec()).unwrap()
    }
}

struct Fake(Rc<RefCell<Guest>>);

/// A mapping: a copy of the pages, written back when dropped (as a real mapping writes through).
struct Mapping {
    guest: Rc<RefCell<Guest>>,
    first: u64,
    buf: Vec<u8>,
}

impl std::ops::Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}
impl std::ops::DerefMut for Mapping {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}
impl Drop for Mapping {
    fn drop(&mut self) {
        let mut g = self.guest.borrow_mut();
        for (i, page) in self.buf.chunks(PAGE_SIZE as usize).enumerate() {
            g.pages.insert(self.first + i as u64, page.to_vec());
        }
    }
}

impl Fake {
    fn call(&self, name: String) -> Result<(), String> {
        let mut g = self.0.borrow_mut();
        let fail = g.fail.is_some_and(|f| name.starts_with(f));
        g.calls.push(name);
        if fail {
            Err("EINVAL".into())
        } else {
            Ok(())
        }
    }
}

impl DomainOps for Fake {
    type Mapping = Mapping;
    fn populate_physmap(&mut self, domid: u16, first_pfn: u64, count: u64) -> Result<(), String> {
        self.call(format!("populate d{domid} {first_pfn:#x}+{count:#x}"))?;
        let mut g = self.0.borrow_mut();
        for p in first_pfn..first_pfn + count {
            if !g.populated.insert(p) {
                return Err(format!("pfn {p:#x} populated twice"));
            }
        }
        Ok(())
    }
    fn map_foreign(&mut self, domid: u16, first_pfn: u64, count: u64) -> Result<Mapping, String> {
        self.call(format!("map d{domid} {first_pfn:#x}+{count:#x}"))?;
        let g = self.0.borrow();
        if let Some(p) = (first_pfn..first_pfn + count).find(|p| !g.populated.contains(p)) {
            return Err(format!("pfn {p:#x} not populated (EFAULT)"));
        }
        let mut buf = Vec::with_capacity((count * PAGE_SIZE) as usize);
        for p in first_pfn..first_pfn + count {
            buf.extend_from_slice(g.pages.get(&p).map_or(&[0xee; PAGE_SIZE as usize][..], |v| &v[..]));
        }
        Ok(Mapping { guest: self.0.clone(), first: first_pfn, buf })
    }
    fn set_memory_map(&mut self, domid: u16, map: &[HvmMemmapEntry]) -> Result<(), String> {
        self.call(format!("memmap d{domid}"))?;
        self.0.borrow_mut().memmap = map.to_vec();
        Ok(())
    }
    fn set_hvm_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), String> {
        self.call(format!("param d{domid} {index}"))?;
        self.0.borrow_mut().params.insert(index, value);
        Ok(())
    }
    fn alloc_unbound_evtchn(&mut self, domid: u16, remote: u16) -> Result<u32, String> {
        self.call(format!("evtchn d{domid} for d{remote}"))?;
        let mut g = self.0.borrow_mut();
        g.next_port += 1;
        Ok(g.next_port)
    }
    fn seed_grant(&mut self, domid: u16, gref: u32, grantee: u16, pfn: u64) -> Result<(), String> {
        self.call(format!("grant d{domid} {gref}"))?;
        self.0.borrow_mut().grants.insert(gref, (grantee, pfn));
        Ok(())
    }
    fn set_boot_vcpu(&mut self, domid: u16, vcpu: BootVcpu) -> Result<(), String> {
        self.call(format!("vcpu d{domid}"))?;
        self.0.borrow_mut().vcpu = Some(vcpu);
        Ok(())
    }
    fn unpause(&mut self, domid: u16) -> Result<(), String> {
        self.call(format!("unpause d{domid}"))?;
        self.0.borrow_mut().unpaused = true;
        Ok(())
    }
}

/// An ELF32 PVH kernel (as XTF builds them): 0x1800 bytes of code at 1 MiB, 0x3000 of bss, entry 1 MiB + 0x10.
fn kernel() -> Vec<u8> {
    let mut b = vec![0u8; 0x2000];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4..7].copy_from_slice(&[1, 1, 1]);
    b[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    b[28..32].copy_from_slice(&52u32.to_le_bytes());
    b[42..44].copy_from_slice(&32u16.to_le_bytes());
    b[44..46].copy_from_slice(&2u16.to_le_bytes());
    let ph = |b: &mut Vec<u8>, at: usize, f: [u32; 6]| {
        for (i, v) in f.iter().enumerate() {
            b[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    };
    // type, offset, vaddr, paddr, filesz, memsz
    ph(&mut b, 52, [1, 0x800, 0x10_0000, 0x10_0000, 0x1800, 0x4800]);
    ph(&mut b, 84, [4, 0x100, 0, 0, 20, 20]);
    b[0x100..0x104].copy_from_slice(&4u32.to_le_bytes());
    b[0x104..0x108].copy_from_slice(&4u32.to_le_bytes());
    b[0x108..0x10c].copy_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    b[0x10c..0x110].copy_from_slice(b"Xen\0");
    b[0x110..0x114].copy_from_slice(&0x10_0010u32.to_le_bytes());
    for (i, x) in b[0x800..].iter_mut().enumerate() {
        *x = (i % 251) as u8 | 1;
    }
    b
}

fn fake() -> (Fake, Rc<RefCell<Guest>>) {
    let g = Rc::new(RefCell::new(Guest::default()));
    (Fake(g.clone()), g)
}

#[test]
fn plans_a_pvh_domain_as_libxenguest_does() {
    let k = kernel();
    let rd = vec![0x5a; 10_000];
    let spec =
        DomainSpec { ramdisk: Some(&rd), cmdline: "console=hvc0 root=/dev/ram0", ..DomainSpec::new(&k, 64 << 20, 2) };
    let l = plan(&spec).unwrap();
    assert_eq!(l.entry, 0x10_0010);
    assert_eq!((l.lowmem_end, l.highmem), (64 << 20, 0));
    // Kernel 0x10_0000..0x10_4800, the initrd on the next page, start_info on the page after it.
    assert_eq!(l.ramdisk, Some((0x10_5000, 10_000)));
    assert_eq!(l.start_info, 0x10_8000);
    assert_eq!((l.console_pfn, l.store_pfn), (0xfefff, 0xfeffc));
    assert_eq!(l.acpi.0, 0xfc00_0000);
    assert_eq!(l.acpi.2, 0xfc00_0000, "RSDP first");
    let e = |addr, size, typ| HvmMemmapEntry { addr, size, typ, reserved: 0 };
    assert_eq!(
        l.memmap,
        [
            e(0, 0x10_8000, 1),
            e(0x10_8000, 0x3000, 2),
            e(0x10_b000, (64 << 20) - 0x10_b000, 1),
            e(0xfc00_0000, 0x1000, 3),
            e(0xfeff_8000, 0x8000, 2),
        ]
    );
    assert_eq!(l.populate_runs(), [(0, 0x4000), (0xfc000, 1), (0xfeff8, 8)]);
    // Memory above the 0xFC000000 hole goes to 4 GiB.
    let big = plan(&DomainSpec::new(&k, 5 << 30, 1)).unwrap();
    assert_eq!((big.lowmem_end, big.highmem), (0xfc00_0000, (5 << 30) - 0xfc00_0000));
    assert_eq!(big.memmap.last(), Some(&e(1 << 32, (5 << 30) - 0xfc00_0000, 1)));
    assert_eq!(big.populate_runs()[1], (0x10_0000, ((5 << 30) - 0xfc00_0000) / 4096));
}

#[test]
fn builds_through_the_hypercalls() {
    let k = kernel();
    let rd: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let spec = DomainSpec {
        ramdisk: Some(&rd),
        cmdline: "console=hvc0",
        console_domid: 0,
        store_domid: 3,
        ..DomainSpec::new(&k, 32 << 20, 2)
    };
    let l = plan(&spec).unwrap();
    let (mut ops, g) = fake();
    let built = build(&mut ops, 7, &spec, &l).unwrap();
    let g = g.borrow();
    assert_eq!(g.populated.len(), 0x2000 + 1 + 8);
    // The kernel's bytes, its bss zeroed (the fake's fresh pages read 0xee until written).
    assert_eq!(g.read(0x10_0000, 0x1800), k[0x800..]);
    assert!(g.read(0x10_1800, 0x3000).iter().all(|&b| b == 0));
    assert_eq!(g.read(0x10_5000, rd.len()), rd);
    // start_info: magic, command line, the initrd as module 0, the memory map, the RSDP.
    let si: HvmStartInfo = g.val(l.start_info);
    assert_eq!((si.magic, si.version, si.flags, si.nr_modules), (HVM_START_MAGIC, 1, 0, 1));
    assert_eq!(g.string(si.cmdline_paddr), "console=hvc0");
    let m: HvmModlistEntry = g.val(si.modlist_paddr);
    assert_eq!((m.paddr, m.size, m.cmdline_paddr), (0x10_5000, 10_000, 0));
    let map: Vec<HvmMemmapEntry> = (0..si.memmap_entries as u64).map(|i| g.val(si.memmap_paddr + 24 * i)).collect();
    assert_eq!(map, l.memmap);
    assert_eq!(g.memmap, l.memmap);
    assert_eq!(si.rsdp_paddr, 0xfc00_0000);
    assert_eq!(g.read(0xfc00_0000, 8), b"RSD PTR ");
    // The special pages cleared; params, event channels, grants, the boot vCPU; unpaused last.
    assert!(g.read(0xfeff_8000, 0x8000).iter().all(|&b| b == 0));
    assert_eq!(built, Built { console_pfn: 0xfefff, console_port: 1, store_pfn: 0xfeffc, store_port: 2 });
    let p = &g.params;
    assert_eq!(
        (
            p[&hvm_param::STORE_PFN],
            p[&hvm_param::STORE_EVTCHN],
            p[&hvm_param::CONSOLE_PFN],
            p[&hvm_param::CONSOLE_EVTCHN]
        ),
        (0xfeffc, 2, 0xfefff, 1)
    );
    assert_eq!(g.grants[&GNTTAB_RESERVED_CONSOLE], (0, 0xfefff));
    assert_eq!(g.grants[&GNTTAB_RESERVED_XENSTORE], (3, 0xfeffc));
    assert!(g.calls.contains(&"evtchn d7 for d3".to_string()));
    assert_eq!(g.vcpu, Some(BootVcpu { entry: 0x10_0010, start_info: l.start_info as u32 }));
    assert!(g.unpaused);
    assert_eq!(g.calls.last().map(String::as_str), Some("unpause d7"));
    // Mappings stay within MAP_CHUNK_PAGES.
    assert!(g.calls.iter().filter(|c| c.starts_with("map")).all(|c| {
        let n = u64::from_str_radix(c.rsplit("+0x").next().unwrap(), 16).unwrap();
        n <= MAP_CHUNK_PAGES
    }));
}

#[test]
fn a_failed_hypercall_names_its_step_and_leaves_the_domain_paused() {
    let k = kernel();
    let spec = DomainSpec::new(&k, 32 << 20, 1);
    let l = plan(&spec).unwrap();
    for (fail, want) in [
        ("populate", "populating pfns 0x0+0x2000: EINVAL"),
        ("map", "mapping kernel segment 0 (pfn 0x100): EINVAL"),
        ("memmap", "setting the memory map: EINVAL"),
        ("evtchn", "console event channel: EINVAL"),
        ("param", "setting HVM_PARAM_STORE_PFN: EINVAL"),
        ("grant", "granting the console ring: EINVAL"),
        ("vcpu", "setting the boot vCPU: EINVAL"),
    ] {
        let (mut ops, g) = fake();
        g.borrow_mut().fail = Some(fail);
        assert_eq!(build(&mut ops, 1, &spec, &l), Err(BuildError(want.into())));
        assert!(!g.borrow().unpaused, "{fail}");
    }
}

#[test]
fn bad_specs_are_one_line_errors() {
    let k = kernel();
    let e = |s: DomainSpec<'_>| plan(&s).unwrap_err().0;
    assert!(e(DomainSpec::new(&k, 8 << 20, 1)).contains("at least 16 MiB"));
    assert!(e(DomainSpec::new(&k, (32 << 20) + 1, 1)).contains("whole number of pages"));
    assert!(e(DomainSpec::new(&k, 32 << 20, 0)).contains("0 vCPUs"));
    assert!(e(DomainSpec::new(&k, 32 << 20, 5000)).contains("5000 vCPUs"));
    // A corrupt kernel, a kernel that is no kernel, an empty one.
    let mut bad = k.clone();
    bad[0x110..0x114].copy_from_slice(&0x20_0000u32.to_le_bytes());
    assert_eq!(
        e(DomainSpec::new(&bad, 32 << 20, 1)),
        "kernel: the PVH entry point 0x200000 is outside every loaded segment"
    );
    assert!(e(DomainSpec::new(b"#!/bin/sh\n", 32 << 20, 1)).starts_with("kernel: not a kernel image"));
    assert!(e(DomainSpec::new(&k[..40], 32 << 20, 1)).starts_with("kernel: not an ELF image"));
    // An initrd too big for the memory.
    let rd = vec![0; 17 << 20];
    let s = DomainSpec { ramdisk: Some(&rd), ..DomainSpec::new(&k, 16 << 20, 1) };
    assert_eq!(e(s), "the initrd (17408 KiB) does not fit after the kernel in 16 MiB of memory below 4 GiB");
    // A kernel loaded above 1 GiB leaves no room for start_info below it.
    let mut high = k.clone();
    high[52 + 12..52 + 16].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    high[0x110..0x114].copy_from_slice(&0x4000_0010u32.to_le_bytes());
    assert!(e(DomainSpec::new(&high, 2 << 30, 1)).contains("start_info (it must lie below 1 GiB)"));
    // A command line too long for the start_info area.
    let long = "x".repeat(13_000);
    let s = DomainSpec { cmdline: &long, ..DomainSpec::new(&k, 32 << 20, 1) };
    assert!(e(s).starts_with("start_info: "));
}

/// Debian's kernel (`KEEL_VMLINUZ`; skipped without it) planned for a 512 MiB, 2-vCPU domU.
#[test]
fn debian_kernel_plans() {
    let Some(path) = std::env::var_os("KEEL_VMLINUZ") else {
        eprintln!("KEEL_VMLINUZ not set: skipped");
        return;
    };
    let k = std::fs::read(&path).unwrap();
    let rd = vec![0u8; 4 << 20];
    let spec = DomainSpec { ramdisk: Some(&rd), cmdline: "console=hvc0", ..DomainSpec::new(&k, 512 << 20, 2) };
    let l = plan(&spec).unwrap();
    let (rd_at, _) = l.ramdisk.unwrap();
    assert!(rd_at > 16 << 20 && rd_at.is_multiple_of(PAGE_SIZE));
    assert!(l.start_info > rd_at && l.start_info < 1 << 30);
    assert!(l.chunks.iter().any(|c| c.what == "kernel segment 0"));
}
