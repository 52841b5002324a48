//! Keel under Bochs 2.7 (keel_tests::bochs): every test guest on the CPU models QEMU's TCG cannot give, AMD SVM
//! with NRIP save and flush-by-ASID (`trinity_apu`) and Intel VMX (`corei7_sandy_bridge_2600k`), each model booted
//! once with all the guests at once and its run shared by the tests below. Exits cost ~200 µs each under Bochs, so
//! the guests that loop on exits run shorter there (`guest.` settings in [`BOCHS_ARGS`]). Run them with
//! `cargo xtask test` (the last step, after the QEMU tests), or alone with
//! `cargo xtask test --no-lint --no-unit --only-bochs`. Debian's stock kernel boots as dom0 under the VMX model too.

/// `on_bochs::` in the test names, for a filter that picks these (`cargo xtask test` skips them in its QEMU step).
mod on_bochs {
    use keel_tests::bochs::{self, Bochs, SVM_MODEL, VMX_MODEL};
    use keel_tests::xtf::{self, Expect, Module};
    use keel_tests::Run;
    use keel_tests::{env_path, iso};
    use std::sync::OnceLock;

    /// Shorter runs of the guests that loop on exits (~200 µs each under Bochs against ~30 µs under QEMU TCG), and
    /// later starts for the heavy ones.
    const BOCHS_ARGS: &[(&str, &str)] = &[
        // These start once the timing-sensitive guests (timer) are done: under Bochs their exits slowed the timer's
        // wake-ups past its 1 ms median (balloon's too, under VMX, from 2026-12-04: median 1518 us, every run).
        ("hostile_hypercalls", "guest.calls=20000 guest.rounds=10 guest.start_ms=4000"),
        ("evtchn_errors", "guest.start_ms=4000"),
        ("balloon", "guest.start_ms=4000"),
        ("bench", "guest.iterations=2000"),
        ("spin", "guest.spin_ms=1000"),
    ];

    /// A domain whose first VM entry fails its consistency checks (Keel's `corrupt=guest-state` test setting):
    /// VMX clears RFLAGS bit 1, SVM clears EFER.SVME.
    const BAD_STATE: &str = "bad_state";

    /// Every listed guest (keel_tests::xtf::GUESTS), with the Bochs settings above, and [`BAD_STATE`].
    fn modules() -> Vec<Module> {
        let mut modules: Vec<Module> = xtf::GUESTS
            .iter()
            .map(|g| {
                let mut m = Module::listed(g.name);
                if let Some((_, extra)) = BOCHS_ARGS.iter().find(|(n, _)| *n == g.name) {
                    m.args = format!("{} {extra}", m.args).trim().to_string();
                }
                m
            })
            .collect();
        modules.push(Module::new("cpuid", BAD_STATE, "corrupt=guest-state expect=crash"));
        modules
    }

    /// Boots every guest under `model` as run `name`.
    fn boot(name: &str, model: &str) -> Run {
        bochs::boot_xtf(name, model, &modules(), bochs::DEFAULT_TIMEOUT)
    }

    fn svm_run() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| boot("bochs_svm_guests", SVM_MODEL))
    }

    fn vmx_run() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| boot("bochs_vmx_guests", VMX_MODEL))
    }

    /// Each guest's `(KEEL) xtf: <name>: ...` line, what the looping guests printed, the summary, and a clean
    /// power-off.
    fn assert_guests_pass(run: &Run) {
        for g in xtf::GUESTS {
            match g.expect {
                Expect::Success => run.assert_xtf(g.name, "SUCCESS"),
                Expect::Crash => run.assert_xtf(g.name, "CRASHED"),
            };
        }
        run.assert_crashed("triple_fault");
        let line = run.assert_crashed("unmapped_write");
        if !line.contains("gpa 0xdead0000") {
            run.fail(&format!("the crash line does not name gpa 0xdead0000: {line:?}"));
        }
        // The shortened guests took their settings and did real work.
        run.assert_line("20000 calls returned: ");
        run.assert_line("phase 6: runstate areas and vcpu_info");
        run.assert_line("ok: 4095 IPI binds, then BIND_IPI -> -28 (ENOSPC)");
        run.assert_line("BENCH: null-hypercall cycles=");
        run.assert_line("BENCH: cpuid-exit cycles=");
        let spin = run.assert_line("spin: ");
        if !spin.contains(" on 2 vCPUs over ") {
            run.fail(&format!("spin did not run on its 2 vCPUs: {spin:?}"));
        }
        // The broken entry ended its own domain only.
        let line = run.assert_crashed(BAD_STATE);
        if !line.contains("VM entry failed") {
            run.fail(&format!("{BAD_STATE} did not crash on its failed VM entry: {line:?}"));
        }
        run.assert_xtf(BAD_STATE, "CRASHED");
        run.assert_no_line("EXCEPTION").assert_known_defects_only().assert_all_passed(xtf::GUESTS.len() + 1);
    }

    /// Keel finds the SVM features TCG lacks, and enables SVM on both CPUs.
    #[test]
    fn svm_features_on_trinity_apu() {
        let run = svm_run();
        let features: Vec<&str> =
            run.assert_value("(KEEL) SVM: features: ").split(';').next().unwrap_or_default().split(' ').collect();
        for want in ["NPT", "NRIP-save", "flush-by-ASID"] {
            if !features.contains(&want) {
                run.fail(&format!("{want} is not among the SVM features Keel found: {features:?}"));
            }
        }
        for n in 0..2 {
            run.assert_line_starting(&format!("(KEEL) CPU{n}: SVM enabled (NPT: yes,"));
        }
    }

    /// Every guest passes on SVM with NRIP save and flush-by-ASID (Keel's branches that TCG cannot reach).
    #[test]
    fn svm_guests_on_trinity_apu() {
        assert_guests_pass(svm_run());
    }

    /// VMX comes up on both CPUs of the Intel model.
    #[test]
    fn vmx_on_sandy_bridge() {
        let run = vmx_run();
        run.assert_no_line("HVM/PVH guests are unavailable");
        // What Keel's VMX backend uses of the model: EPT, RDTSCP, VPID, unrestricted guest (no PAUSE-loop exiting here,
        // so every PAUSE exits).
        run.assert_exact_line("(KEEL) VMX: secondary controls: EPT RDTSCP VPID unrestricted-guest");
        for n in 0..2 {
            run.assert_exact_line(&format!("(KEEL) CPU{n}: VMXON is done"));
        }
    }

    /// The same guests on VMX.
    #[test]
    fn vmx_guests_on_sandy_bridge() {
        assert_guests_pass(vmx_run());
    }

    /// The failed VM entry is diagnosed: the processor's exit reason, then the field Keel's own guest-state check
    /// finds at fault.
    #[test]
    fn vmx_entry_failure_names_the_field() {
        let run = vmx_run();
        run.assert_line("(KEEL) VM entry failed: exit reason 33 (invalid guest state) at guest RIP ");
        run.assert_exact_line("(KEEL) VM entry failed: Keel's guest-state check: RFLAGS: bit 1 must be 1");
    }

    /// Keel (stripped of debug info: GRUB reads ~140 KB/s under Bochs) with Debian's kernel as dom0 and the test
    /// initramfs, from a GRUB ISO with the same stanza as under QEMU, on Bochs's VMX CPU with 512 MiB.
    fn dom0_on_vmx(name: &str, keel_cmdline: &str, dom0_cmdline: &str) -> keel_tests::Run {
        let dir = std::env::temp_dir().join(format!("keel-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let (elf, out) = (dir.join("keel.elf"), dir.join("dom0.iso"));
        let made = iso::strip_debug(&env_path("KEEL_ELF"), &elf).and_then(|()| {
            let (vmlinuz, initrd) = (env_path("KEEL_VMLINUZ"), env_path("KEEL_INITRD"));
            iso::dom0_iso(&elf, keel_cmdline, &vmlinuz, dom0_cmdline, Some(&initrd), &out)
        });
        if let Err(e) = made {
            panic!("{e}");
        }
        let run = Bochs::cdrom(&out).name(name).model(VMX_MODEL).megs(512).timeout_secs(900).run();
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("[{name}] {:.1} s", run.elapsed.as_secs_f64());
        run
    }

    /// Debian's stock kernel as Keel's initial domain on Intel VMX (2 vCPUs on 2 CPUs, 256 MiB), to its busybox
    /// init, an `xm create` and `xm destroy` of a small PVH domU (dom0's create.sh check), and a clean power-off: the same GRUB stanza as under QEMU, with Keel stripped of debug info (GRUB
    /// reads ~140 KB/s under Bochs). About 3.5 minutes here.
    #[test]
    fn stock_linux_boots_on_sandy_bridge_vmx() {
        let run = dom0_on_vmx(
            "bochs_vmx_linux",
            "console=com1 dom0_mem=256M dom0_max_vcpus=2 dom0-platform=virtual",
            // Only create.sh of dom0's checks: `xm create` of its hand-made PVH guest, and its destruction.
            "console=hvc0 keel.init=checks keel.check.loop=1000 keel.checks=create",
        );
        run.assert_exact_line("(KEEL) CPU1: VMXON is done");
        run.assert_order(&[
            "Linux version 6.1",
            "kernel on Xen PVH",
            // As the initial domain Linux rates the xen clocksource below the TSC (as on Xen), so either is fine.
            "clocksource: Switched to clocksource ",
            "KEEL-INIT: busybox init reached",
            // VMX at parity with SVM for the toolstack: dom0 builds, starts and destroys a domU.
            "KEEL-CHECK: create-output Started domain tiny (id=1)",
            "KEEL-CHECK: create-guest-xenstore ran",
            "KEEL-CHECK: create-destroyed listed=0 nodes=0 free-returned=yes",
            "KEEL-CHECK: create-leftover domains=0 free-same=yes",
            "KEEL-CHECK: done",
            "(KEEL) domain 0 (Domain-0) shut down: poweroff",
            "(KEEL) Powering off",
        ]);
        run.assert_no_line("EXCEPTION").assert_no_line("crashed").assert_success();
    }

    /// `dom0-platform=host` on Bochs's i440fx under VMX (issue 15): dom0 gets the host's ACPI tables, e820 shape
    /// with its RAM 1:1, IO-APIC (emulated) and PCI configuration, its ACPI interpreter runs, it lists Bochs's PCI
    /// functions and takes the RTC's alarm interrupt through Keel. About 4 minutes here.
    #[test]
    fn dom0_owns_the_platform_on_sandy_bridge_vmx() {
        let run = dom0_on_vmx(
            "bochs_vmx_platform",
            "console=com1 dom0_mem=256M dom0_max_vcpus=2 dom0-platform=host",
            "console=hvc0 keel.init=platform",
        );
        run.assert_order(&[
            "(KEEL) dom0: the host's platform: ",
            "kernel on Xen PVH",
            "ACPI: Interpreter enabled",
            "KEEL-PLATFORM: pci ",
            "KEEL-INIT: powering off",
        ]);
        // Bochs's i440fx: the host bridge and the PIIX south bridge.
        let pci = run.assert_parsed::<String>("KEEL-PLATFORM: pci ");
        for ids in ["8086:1237", "8086:7000"] {
            if !pci.split(',').any(|d| d.ends_with(&format!("={ids}"))) {
                run.fail(&format!("dom0 does not list {ids}: {pci}"));
            }
        }
        let rtc: u64 = run.assert_parsed("KEEL-PLATFORM: rtc0 interrupts ");
        if rtc == 0 {
            run.fail("the RTC's alarm raised no interrupt in dom0");
        }
        run.assert_no_line("EXCEPTION").assert_no_line("crashed").assert_success();
    }

    /// A failing guest (a triple fault without `expect=crash`): Keel writes its failure status to port 0xf4, which
    /// Bochs ignores; the harness stops Bochs at that line instead of waiting for the timeout.
    #[test]
    fn failure_ends_the_run_early() {
        let modules = [Module::new("triple_fault", "triple_fault", "")];
        let run = bochs::boot_xtf("bochs_failing_guest", SVM_MODEL, &modules, bochs::DEFAULT_TIMEOUT);
        run.assert_crashed("triple_fault");
        run.assert_xtf("triple_fault", "CRASHED")
            .assert_exact_line("(KEEL) xtf: 1 guests, 0 passed, 1 failed")
            .assert_exit_code(3);
        if run.elapsed.as_secs() * 2 > bochs::DEFAULT_TIMEOUT {
            run.fail(&format!("took {:.0} s: the harness waited for the timeout", run.elapsed.as_secs_f64()));
        }
    }
}
