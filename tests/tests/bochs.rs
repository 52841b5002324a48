//! Keel under Bochs 2.7 (keel_tests::bochs): the quick test guests on the CPU models QEMU's TCG cannot give, AMD SVM
//! with NRIP save and flush-by-ASID (`trinity_apu`) and Intel VMX (`corei7_sandy_bridge_2600k`), each model booted
//! once (~15 s) and its run shared by the tests below. Exits cost ~200 µs each under Bochs, so the slow guests
//! (hostile_hypercalls, bench, spin) stay on QEMU. Run them with `cargo xtask test` (the last step, after the
//! QEMU tests), or alone with `cargo xtask test --no-lint --no-unit --only-bochs`.

/// `on_bochs::` in the test names, for a filter that picks these (`cargo xtask test` skips them in its QEMU step).
mod on_bochs {
    use keel_tests::bochs::{self, SVM_MODEL, VMX_MODEL};
    use keel_tests::xtf::{self, Expect, Module};
    use keel_tests::Run;
    use std::sync::OnceLock;

    /// The guests every model boots, all at once on 2 CPUs.
    const QUICK: &[&str] = &[
        "cpuid",
        "hypercall_page",
        "inline_vmcall",
        "exceptions",
        "timer",
        "triple_fault",
        "unmapped_write",
        "sched_second",
    ];

    /// Boots the quick guests under `model` as run `name`.
    fn boot(name: &str, model: &str) -> Run {
        let modules: Vec<Module> = QUICK.iter().map(|n| Module::listed(n)).collect();
        bochs::boot_xtf(name, model, &modules, bochs::DEFAULT_TIMEOUT)
    }

    fn svm_run() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| boot("bochs_svm_quick_guests", SVM_MODEL))
    }

    fn vmx_run() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| boot("bochs_vmx_quick_guests", VMX_MODEL))
    }

    /// Each quick guest's `(KEEL) xtf: <name>: ...` line, the summary, and a clean power-off.
    fn assert_quick_guests_pass(run: &Run) {
        for g in QUICK.iter().map(|n| xtf::listed(n)) {
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
        run.assert_no_line("EXCEPTION").assert_all_passed(QUICK.len());
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

    /// The quick guests pass on SVM with NRIP save and flush-by-ASID (Keel's branches that TCG cannot reach).
    #[test]
    fn svm_guests_on_trinity_apu() {
        assert_quick_guests_pass(svm_run());
    }

    /// VMX comes up on both CPUs of the Intel model.
    #[test]
    fn vmx_on_sandy_bridge() {
        let run = vmx_run();
        run.assert_no_line("HVM/PVH guests are unavailable");
        for n in 0..2 {
            run.assert_exact_line(&format!("(KEEL) CPU{n}: VMXON is done"));
        }
    }

    /// The same quick guests on VMX.
    #[test]
    fn vmx_guests_on_sandy_bridge() {
        assert_quick_guests_pass(vmx_run());
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
