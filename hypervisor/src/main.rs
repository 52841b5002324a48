//! Keel's start-up order. Each step lives in its own module; this file only lists them.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("keel runs on bare metal: build it with `cargo xtask build` and boot it with `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod bare {
    extern crate alloc;

    use alloc::vec::Vec;
    use core::sync::atomic::Ordering;
    use keel::arch::x86::{acpi, apic, cpu, fpu, gdt, paging, percpu, power, rtc, serial, smp, time, trap};
    use keel::bootinfo::{self, BootInfo, MemKind, ModuleKind, PhysMem, Protocol};
    use keel::cmdline::{self, Options, Selftest};
    use keel::mm::heap::{self, HEAP};
    use keel::mm::{self, frame::FrameAllocator};
    use keel::{console, error, info, warning};
    use keel::{hvm, sched, xtf};

    core::arch::global_asm!(
        include_str!("../../boot/entry.S"),
        xen_elfnote_phys32_entry = const keel_abi::elfnote::PHYS32_ENTRY,
        options(att_syntax)
    );
    core::arch::global_asm!(include_str!("../../boot/ap_trampoline.S"), options(att_syntax));

    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
        static ap_tramp_start: u8;
        static ap_tramp_end: u8;
        static ap_tramp_cr3: u8;
        static ap_tramp_stack: u8;
        static ap_tramp_entry: u8;
        static ap_tramp_arg: u8;
        static ap_tramp_started: u8;
    }

    /// The bootstrap heap: enough until the frame allocator is installed; the heap then grows from it.
    const BOOT_HEAP_SIZE: usize = 1 << 20;
    #[repr(C, align(4096))]
    struct HeapArea([u8; BOOT_HEAP_SIZE]);
    static mut HEAP_AREA: HeapArea = HeapArea([0; BOOT_HEAP_SIZE]);

    static OPTIONS: spin::Once<Options> = spin::Once::new();

    /// Physical memory as the boot parsers see it: identity-mapped by the boot page tables (first 4 GiB).
    struct BootMem;
    impl PhysMem for BootMem {
        fn bytes(&self, paddr: u64, len: usize) -> Option<&[u8]> {
            let end = paddr.checked_add(len as u64)?;
            if paddr == 0 || end > 1 << 32 {
                return None;
            }
            // SAFETY: the boot page tables identity-map the first 4 GiB; the loader's structures live there and
            // are not modified while Keel parses them.
            Some(unsafe { core::slice::from_raw_parts(paddr as *const u8, len) })
        }
    }

    fn image_range() -> (u64, u64) {
        (core::ptr::addr_of!(__image_start) as u64, core::ptr::addr_of!(__image_end) as u64)
    }

    /// Fills the unused part of the boot stack with [`percpu::STACK_FILL`] and records it as CPU 0's stack.
    fn fill_boot_stack() {
        extern "C" {
            static boot_stack_bottom: u8;
            static boot_stack_top: u8;
        }
        let (bottom, top) = (core::ptr::addr_of!(boot_stack_bottom) as u64, core::ptr::addr_of!(boot_stack_top) as u64);
        let rsp: u64;
        // SAFETY: reads the stack pointer only.
        unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
        // Leave a margin below the live frames.
        let end = rsp.saturating_sub(1024).max(bottom);
        // SAFETY: [bottom, end) is the unused part of the boot stack (entry.S reserves it in .bss), below every
        // live frame; nothing else uses it.
        unsafe { core::ptr::write_bytes(bottom as *mut u8, percpu::STACK_FILL, (end - bottom) as usize) };
        percpu::cpu(0).set_stack(bottom, top - bottom);
    }

    /// Called by `boot/entry.S` on the boot CPU, in long mode on the boot stack.
    #[no_mangle]
    extern "C" fn keel_start_bsp(protocol: u32, info_paddr: u32) -> ! {
        percpu::install(0, 0);
        fill_boot_stack();
        console::set_cpu_id_fn(percpu::current_index);
        // SAFETY: HEAP_AREA is used by nothing but the allocator, given to it exactly once, here.
        unsafe { HEAP.add_region(core::ptr::addr_of_mut!(HEAP_AREA).cast::<u8>(), BOOT_HEAP_SIZE) };

        let mut boot = match read_boot_info(protocol, info_paddr) {
            Ok(b) => b,
            Err(e) => {
                // No command line yet: use COM1 at its defaults so the reason is seen.
                let _ = serial::init(&cmdline::ComConfig::default());
                error!("cannot read boot information: {}", e.0);
                cpu::halt_forever();
            }
        };
        let (opts, warnings) = cmdline::parse(&boot.cmdline);
        cmdline::remember(&boot.cmdline);
        console::set_level(opts.loglvl);
        if opts.console_com1 {
            if let Err(e) = serial::init(&opts.com1) {
                error!("COM1: {e}; console output kept in memory only");
            }
        }
        info!("Keel v{} (Xen-compatible hypervisor)", env!("CARGO_PKG_VERSION"));
        info!("Boot loader: {}", boot.loader);
        info!("Command line: {}", boot.cmdline);
        for w in &warnings {
            warning!("{}", w.0);
        }
        for why in boot.check_modules(image_range()) {
            warning!("{why}");
        }
        if opts.dom0_owns_devices() && !boot.modules.is_empty() {
            clear_dom0_kernel_window(&mut boot);
        }
        let opts = OPTIONS.call_once(|| opts);

        let cr3 = setup_memory(&boot);
        list_modules(&boot);

        gdt::init_this_cpu();
        trap::init_idt();
        trap::load_idt();
        trap::register_handler(apic::TIMER_VECTOR, timer_tick);
        trap::register_handler(apic::SPURIOUS_VECTOR, |_| {});
        trap::register_handler(apic::ERROR_VECTOR, |_| {
            warning!("CPU{}: local APIC error", percpu::current_index());
            apic::eoi();
        });

        let host = read_acpi(&boot);
        mask_8259();
        apic::select_mode(host.topology.lapic_address);
        apic::init_this_cpu();
        percpu::install(0, apic::id());
        let cal = time::calibrate();
        info!(
            "Local APIC: {} mode, id {}, version {:#x}; timer {} kHz",
            if apic::is_x2apic() { "x2APIC" } else { "xAPIC" },
            apic::id(),
            apic::version() & 0xff,
            cal.apic_timer_hz / 1000
        );
        info!("TSC: {}.{:03} MHz ({:?})", cal.tsc_hz / 1_000_000, cal.tsc_hz / 1000 % 1000, cal.source);
        rtc::init();
        sched::init();

        let id = cpu::identify();
        info!(
            "CPU: {} family {:#x} model {:#x} stepping {} \"{}\"",
            id.vendor_string, id.family, id.model, id.stepping, id.brand
        );
        let support = hvm::set_support(hvm::detect(id.vendor, opts.hvm));
        hvm::log_summary(support);

        cpu_online(0);

        let apic_ids: Vec<u32> = host.topology.cpus.iter().filter(|c| c.enabled).map(|c| c.apic_id).collect();
        let tramp = trampoline();
        let online = smp::start_aps(&tramp, &apic_ids, cr3, ap_entry, opts.maxcpus.map_or(usize::MAX, |m| m as usize));
        info!("Brought up {} CPUs", online);
        sched::set_online_cpus(online as u32);
        if !opts.cpu0_guests {
            if sched::keep_guests_off_cpu0() {
                warning!(
                    "cpu0-guests=off: CPU 0 runs no guests (the QEMU TCG nested-SVM defect workaround, docs/testing.md)"
                );
            } else {
                warning!("cpu0-guests=off ignored: CPU 0 is the only CPU");
            }
        }
        let free = mm::with_frames(|f| f.free_frames()).unwrap_or(0);
        let h = HEAP.stats();
        info!(
            "Memory: {} MiB free after start-up; heap {} KiB in {} region(s) ({} KiB taken from free frames), {} KiB used",
            (free * mm::PAGE_SIZE) >> 20,
            h.size >> 10,
            h.regions,
            h.grown >> 10,
            h.used >> 10
        );

        match opts.selftest {
            Some(Selftest::Boot) => selftest_boot(online),
            Some(Selftest::PageFault) => selftest_pagefault(),
            Some(Selftest::Domains) => selftest_domains(support),
            Some(Selftest::Heap) => selftest_heap(),
            None => {}
        }
        // CPU 0 hands serial input to dom0's console or Keel's debug keys between guest entries.
        keel::run::add_poller(keel::dom0::input::poll_serial);
        // The machine's interrupt lines that dom0 routes through its emulated IO-APIC.
        keel::domain::irq::init();
        keel::run::add_poller(keel::domain::irq::drain);
        // The IOMMU's fault events (dom0-platform=host with an IOMMU): logged by CPU 0.
        keel::run::add_poller(keel::iommu::report_faults);
        if opts.xtf {
            xtf::start(&boot.modules, support);
        } else if !boot.modules.is_empty() {
            let host = opts.dom0_owns_devices().then_some(keel::dom0::builder::HostPlatform {
                memory: &boot.memory,
                acpi: boot.acpi,
                iommu: opts.iommu,
            });
            keel::dom0::build(&boot.modules, opts, support, online as u32, host);
        }
        keel::run::cpu_loop()
    }

    fn read_boot_info(protocol: u32, info_paddr: u32) -> Result<BootInfo, bootinfo::Error> {
        match Protocol::from_raw(protocol) {
            // SAFETY: the loader put its multiboot2 information at `info_paddr` (EAX carried the magic).
            Some(Protocol::Multiboot2) => unsafe { bootinfo::from_multiboot2(info_paddr as u64) },
            Some(Protocol::Pvh) => bootinfo::from_pvh(&BootMem, info_paddr as u64),
            None => Err(bootinfo::Error("entered without multiboot2 magic or PVH note".into())),
        }
    }

    /// Moves the boot modules that lie where a 1:1 dom0's kernel must load (`DOM0_KERNEL_WINDOW`) to the top of
    /// RAM below 4 GiB, before anything else uses memory. A module that fits nowhere stays, and dom0's build will
    /// say the window is not free.
    fn clear_dom0_kernel_window(boot: &mut BootInfo) {
        let window = keel::dom0::builder::DOM0_KERNEL_WINDOW;
        let plan = match boot.relocation_plan(window, image_range()) {
            Ok(p) => p,
            Err(e) => {
                warning!("dom0's kernel window {:#x}-{:#x}: {e}", window.0, window.1);
                return;
            }
        };
        for (i, to) in plan {
            let m = &mut boot.modules[i];
            let len = m.size() as usize;
            // SAFETY: both ranges lie in usable RAM below 4 GiB, which the boot page tables identity-map; the
            // destination was chosen clear of Keel's image, the boot information and every module's old and new
            // place (`relocation_plan`), and nothing has allocated memory yet; the source is only read, and
            // `copy` allows overlap all the same.
            unsafe { core::ptr::copy(m.start as *const u8, to as *mut u8, len) };
            info!("Module {i}: moved from {:#x} to {to:#x}, out of dom0's kernel window", m.start);
            (m.start, m.end) = (to, to + len as u64);
        }
    }

    /// Frame allocator and Keel's own page tables. Returns the CR3 value.
    fn setup_memory(boot: &BootInfo) -> u64 {
        for r in &boot.memory {
            let kind = match r.kind {
                MemKind::Usable => "usable",
                MemKind::AcpiReclaimable => "ACPI data",
                MemKind::AcpiNvs => "ACPI NVS",
                MemKind::Bad => "unusable",
                MemKind::Reserved => "reserved",
            };
            info!(" {:016x} - {:016x} ({kind})", r.start, r.end);
        }
        let top = boot.memory.iter().filter(|r| r.kind == MemKind::Usable).map(|r| r.end).max().unwrap_or(0);
        // The first megabyte (real-mode IVT, BDA, EBDA, AP trampoline), the image, the boot data.
        let (img_start, img_end) = image_range();
        let mut reserved = boot.occupied_ranges();
        reserved.extend([(0, 0x10_0000), (img_start, img_end)]);
        if OPTIONS.get().is_some_and(|o| o.dom0_owns_devices()) && !boot.modules.is_empty() {
            // Kept for a 1:1 dom0's kernel until dom0 is built (`dom0::builder::release_for_dom0`).
            reserved.push(keel::dom0::builder::DOM0_KERNEL_WINDOW);
        }
        let early = early_heap_region(boot, top, &reserved);
        let mut frames = FrameAllocator::new(top);
        for r in boot.memory.iter().filter(|r| r.kind == MemKind::Usable) {
            frames.add_free_range(r.start, r.end);
        }
        for &(s, e) in reserved.iter().chain(&early) {
            frames.reserve_range(s, e);
        }
        info!(
            "Memory: {} MiB usable, image {} KiB at {:#x}, {} MiB free",
            (frames.total_frames() * mm::PAGE_SIZE) >> 20,
            (img_end - img_start) >> 10,
            img_start,
            (frames.free_frames() * mm::PAGE_SIZE) >> 20
        );
        let cr3 = match paging::build(&mut frames, top) {
            Ok(c) => c,
            Err(_) => {
                error!("out of memory building Keel's page tables");
                cpu::halt_forever();
            }
        };
        // SAFETY: the new tables identity-map all RAM and the MMIO hole, so code, stack, heap and boot data stay
        // where they are.
        unsafe { cpu::write_cr3(cr3) };
        mm::install_frames(frames);
        cr3
    }

    /// Gives the heap a region of free RAM (below 4 GiB, which the boot page tables map) big enough for the frame
    /// allocator's bitmap, which the small bootstrap heap could not hold on a large machine. Returns its range, for
    /// the frame allocator to reserve.
    fn early_heap_region(boot: &BootInfo, top: u64, reserved: &[(u64, u64)]) -> Option<(u64, u64)> {
        let bitmap = mm::align_up(top, mm::PAGE_SIZE) / mm::PAGE_SIZE / 8;
        let size = mm::align_up(bitmap, mm::PAGE_SIZE) + (64 << 10);
        let usable: Vec<(u64, u64)> =
            boot.memory.iter().filter(|r| r.kind == MemKind::Usable).map(|r| (r.start, r.end)).collect();
        let Some(start) = heap::find_free_range(&usable, reserved, size, mm::PAGE_SIZE, 1 << 32) else {
            warning!("heap: no {} KiB of free RAM below 4 GiB for the frame bitmap", size >> 10);
            return None;
        };
        // SAFETY: the range is usable RAM below 4 GiB (identity-mapped by the boot page tables) that holds neither
        // the image nor the boot data, and the frame allocator reserves it before it hands out any frame.
        if !unsafe { HEAP.add_region(start as *mut u8, size as usize) } {
            return None;
        }
        info!("Heap: {} KiB early region at {start:#x} for the frame bitmap", size >> 10);
        Some((start, start + size))
    }

    fn list_modules(boot: &BootInfo) {
        if boot.modules.is_empty() {
            info!("No boot modules");
        }
        for (i, m) in boot.modules.iter().enumerate() {
            let head_len = core::cmp::min(m.size(), 0x400) as usize;
            // SAFETY: module memory is identity-mapped and reserved from the allocator; at most its own bytes
            // are read.
            let head = unsafe { core::slice::from_raw_parts(m.start as *const u8, head_len) };
            info!(
                "Module {i}: type={} size={} cmdline=\"{}\" at {:#x}",
                ModuleKind::guess(head).name(),
                m.size(),
                m.cmdline,
                m.start
            );
        }
    }

    fn read_acpi(boot: &BootInfo) -> acpi::HostAcpi {
        let Some(root) = boot.acpi else {
            warning!("ACPI: the boot loader passed no RSDP; running on the boot CPU only");
            return acpi::HostAcpi { topology: default_topology(), ..Default::default() };
        };
        match acpi::read(root) {
            Ok(mut h) => {
                for n in &h.notes {
                    warning!("ACPI: {n}");
                }
                if h.topology.cpus.is_empty() {
                    h.topology = default_topology();
                }
                let t = &h.topology;
                let ids: Vec<u32> = t.cpus.iter().filter(|c| c.enabled).map(|c| c.apic_id).collect();
                info!("ACPI: {} CPUs enabled in the MADT, APIC ids {:?}", ids.len(), ids);
                for io in &t.ioapics {
                    info!("ACPI: IO-APIC id {} at {:#x}, GSI base {}", io.id, io.address, io.gsi_base);
                }
                keel::arch::x86::ioapic::init(
                    &t.ioapics.iter().map(|io| (io.id, io.address, io.gsi_base)).collect::<Vec<_>>(),
                );
                power::init(h.power.clone());
                if let Some((port, wide)) = h.power.pm_timer {
                    time::set_pm_timer(port, wide);
                }
                h
            }
            Err(e) => {
                warning!("{e}; running on the boot CPU only");
                acpi::HostAcpi { topology: default_topology(), ..Default::default() }
            }
        }
    }

    fn default_topology() -> acpi::Topology {
        acpi::Topology { lapic_address: 0xfee0_0000, ..Default::default() }
    }

    fn mask_8259() {
        // SAFETY: 0x21/0xA1 are the 8259 PIC data ports; masking every line keeps legacy interrupts away while
        // Keel uses the local APIC.
        unsafe {
            cpu::outb(0x21, 0xff);
            cpu::outb(0xa1, 0xff);
        }
    }

    fn trampoline() -> smp::Trampoline {
        let base = core::ptr::addr_of!(ap_tramp_start) as usize;
        let off = |p: *const u8| p as usize - base;
        let len = core::ptr::addr_of!(ap_tramp_end) as usize - base;
        smp::Trampoline {
            // SAFETY: the linker places the trampoline's bytes contiguously between the two symbols, in .rodata.
            image: unsafe { core::slice::from_raw_parts(base as *const u8, len) },
            cr3: off(core::ptr::addr_of!(ap_tramp_cr3)),
            stack: off(core::ptr::addr_of!(ap_tramp_stack)),
            entry: off(core::ptr::addr_of!(ap_tramp_entry)),
            arg: off(core::ptr::addr_of!(ap_tramp_arg)),
            started: off(core::ptr::addr_of!(ap_tramp_started)),
        }
    }

    /// Per-CPU steps shared by the boot CPU and the APs, once descriptor tables and the APIC are up.
    fn cpu_online(index: u32) {
        fpu::init_this_cpu();
        if let Some(s) = hvm::support() {
            hvm::enable_this_cpu(s, index);
        }
        apic::timer_oneshot_ns(sched::TICK_NS);
        percpu::this().set_state(percpu::CpuState::Online);
        cpu::enable_interrupts();
    }

    extern "C" fn ap_entry(index: u64) -> ! {
        // Interim: the AP's own APIC id becomes known once its APIC is on.
        percpu::install(index as usize, 0);
        gdt::init_this_cpu();
        trap::load_idt();
        apic::init_this_cpu();
        percpu::install(index as usize, apic::id());
        cpu_online(index as u32);
        keel::run::cpu_loop()
    }

    fn timer_tick(_: &mut trap::TrapFrame) {
        percpu::this().ticks.fetch_add(1, Ordering::Relaxed);
        // The scheduler re-arms nearer deadlines itself; this keeps a tick going when nothing else does.
        apic::timer_oneshot_ns(sched::TICK_NS);
        apic::eoi();
    }

    fn selftest_boot(online: usize) -> ! {
        // Every CPU must take timer interrupts: wait for 5 ticks each (50 ms at 100 Hz), for at most 10 s.
        let deadline = time::now_ns() + 10_000_000_000;
        loop {
            let all = percpu::started().all(|c| c.ticks.load(Ordering::Relaxed) >= 5);
            if all || time::now_ns() > deadline {
                break;
            }
            cpu::enable_interrupts_and_halt();
        }
        let ticks: Vec<u64> = percpu::started().map(|c| c.ticks.load(Ordering::Relaxed)).collect();
        if ticks.iter().all(|&t| t >= 5) && ticks.len() == online {
            info!("selftest: timer ticking on all {} CPUs (ticks {:?})", online, ticks);
        } else {
            error!("selftest: timers not ticking everywhere (ticks {:?})", ticks);
        }
        finish()
    }

    fn selftest_pagefault() -> ! {
        let victim = percpu::cpu(1);
        if victim.state() != percpu::CpuState::Online {
            error!("selftest: pagefault needs a second CPU");
            finish();
        }
        victim.fault_request.store(true, Ordering::Release);
        let deadline = time::now_ns() + 10_000_000_000;
        while victim.state() != percpu::CpuState::Dead && time::now_ns() < deadline {
            cpu::enable_interrupts_and_halt();
        }
        if victim.state() == percpu::CpuState::Dead {
            info!("selftest: CPU0 carries on after CPU1's fault");
        } else {
            error!("selftest: CPU1 did not report its fault");
        }
        finish()
    }

    /// Creates and destroys 100 domains (2 vCPUs with hardware contexts, 8 MiB each) and checks that every
    /// frame came back.
    fn selftest_domains(support: &hvm::Support) -> ! {
        let before = mm::free_frames();
        for i in 0..100 {
            let cfg = keel::domain::DomainConfig {
                name: alloc::format!("leak{i}"),
                vcpus: 2,
                memory: 8 << 20,
                weight: sched::DEFAULT_WEIGHT,
                cap: 0,
                expect_crash: false,
                limits: keel::domain::Limits::DEFAULT,
            };
            match keel::domain::create(cfg, support) {
                Ok(d) => {
                    for v in &d.vcpus {
                        let hw = hvm::HwVcpu::new(
                            support,
                            d.mem.lock().p2m.root(),
                            hvm::InitState::Pvh { entry: 0x10_0000, start_info: 0x9000 },
                        );
                        if let Ok(hw) = hw {
                            *v.hw.lock() = Some(hw);
                        }
                    }
                    d.shutdown(keel_abi::hypercall::ShutdownReason::Poweroff);
                    let _ = keel::domain::destroy(&d);
                }
                Err(e) => {
                    error!("selftest: domain {i} not created: {}", e.0);
                    finish();
                }
            }
        }
        let after = mm::free_frames();
        info!(
            "selftest: 100 domains created and destroyed; free frames before {before}, after {after}{}",
            if before == after { "" } else { " (LEAK)" }
        );
        finish()
    }

    /// Ends a self test: power off, or halt if that fails.
    /// Holds 48 MiB of 1 MiB buffers (three times the old fixed heap), frees them, and asks for more than the
    /// machine has: the heap must grow, and the impossible request must fail as a value.
    fn selftest_heap() -> ! {
        let before = HEAP.stats();
        match heap::exercise(48, 1 << 20) {
            Ok(held) => {
                let s = HEAP.stats();
                info!(
                    "selftest: heap held {} MiB: grew from {} KiB in {} region(s) to {} MiB in {}; {} KiB used after",
                    held >> 20,
                    before.size >> 10,
                    before.regions,
                    s.size >> 20,
                    s.regions,
                    s.used >> 10
                );
            }
            Err(e) => error!("selftest: heap could not hold 48 MiB: {e}"),
        }
        let too_much = (mm::free_frames() * mm::PAGE_SIZE + (1 << 30)) as usize;
        match heap::try_filled(too_much, 0) {
            Ok(_) => error!("selftest: heap gave {} MiB, more than the machine has", too_much >> 20),
            Err(_) => info!("selftest: heap refused {} MiB as a value", too_much >> 20),
        }
        finish()
    }

    fn finish() -> ! {
        power::power_off();
        cpu::halt_forever()
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        error!("PANIC on CPU{}: {}", percpu::current_index(), info);
        percpu::this().set_state(percpu::CpuState::Dead);
        cpu::halt_forever()
    }
}
