//! Boot tests: Keel under QEMU TCG, judged by its serial log. Run them with `cargo xtask test`
//! (it builds the ELF, the ISO, the kernel and the initramfs, and passes their paths in).

use keel_tests::{env_or, env_path, file_size, Qemu, Run};

/// Seconds before `timeout` stops QEMU. A PVH boot with `selftest=boot` takes well under 10 s.
const PVH_TIMEOUT: u64 = 90;
/// GRUB loads ~9 MB of modules through the BIOS first.
const ISO_TIMEOUT: u64 = 120;
const SELFTEST_BOOT: &str = "console=com1 loglvl=all selftest=boot";

fn pvh(append: &str) -> Qemu {
    Qemu::kernel(env_path("KEEL_ELF"), append).timeout_secs(PVH_TIMEOUT)
}

/// The checks every clean `selftest=boot` run must pass.
fn clean_power_off(run: &Run) {
    run.assert_success();
    run.assert_line_starting("(KEEL) Keel v0.1.0");
    run.assert_no_line("EXCEPTION").assert_line("(KEEL) Powering off");
}

#[test]
fn svm_on_every_cpu() {
    let run = pvh(SELFTEST_BOOT).smp(4).run();
    clean_power_off(&run);
    for n in 0..4 {
        run.assert_count(&format!("(KEEL) CPU{n}: SVM enabled (NPT: yes, ASIDs: "), 1);
    }
    run.assert_count(": SVM enabled (NPT: yes", 4)
        .assert_no_line("HVM/PVH guests are unavailable")
        .assert_exact_line("(KEEL) Brought up 4 CPUs")
        .assert_order(&["(KEEL) Brought up 4 CPUs", "(KEEL) Powering off"]);
}

#[test]
fn no_svm_cpu() {
    // QEMU's plain qemu64 model has SVM (without NPT): take it away explicitly.
    let run = pvh(SELFTEST_BOOT).cpu("qemu64,-svm").smp(2).run();
    clean_power_off(&run);
    run.assert_line("(KEEL) HVM/PVH guests are unavailable: ");
    run.assert_no_line("SVM enabled").assert_no_line("VMXON is done").assert_exact_line("(KEEL) Brought up 2 CPUs");
}

#[test]
fn svm_without_npt() {
    let run = pvh(SELFTEST_BOOT).cpu("qemu64").smp(2).run();
    clean_power_off(&run);
    for n in 0..2 {
        run.assert_count(&format!("(KEEL) CPU{n}: SVM enabled (NPT: no, ASIDs: "), 1);
    }
    run.assert_no_line("NPT: yes").assert_exact_line("(KEEL) Brought up 2 CPUs");
}

#[test]
fn hvm_off_switch() {
    let run = pvh(&format!("{SELFTEST_BOOT} hvm=off")).smp(2).run();
    clean_power_off(&run);
    let line = run.assert_line("(KEEL) HVM/PVH guests are unavailable: ");
    if !line.contains("hvm=off") {
        run.fail(&format!("the unavailable line does not mention hvm=off: {line:?}"));
    }
    run.assert_no_line("SVM enabled");
}

#[test]
fn pvh_boot_reports_loader() {
    let run = pvh(SELFTEST_BOOT).run();
    clean_power_off(&run);
    let line = run.assert_line("(KEEL) Boot loader: ");
    if !line.contains("Boot loader: PVH") {
        run.fail(&format!("the -kernel boot should report PVH: {line:?}"));
    }
    run.assert_exact_line(&format!("(KEEL) Command line: {SELFTEST_BOOT}"));
}

#[test]
fn grub_modules_listed() {
    let iso = env_path("KEEL_ISO");
    let vmlinuz = file_size(&env_path("KEEL_VMLINUZ"));
    let initrd = file_size(&env_path("KEEL_INITRD"));
    let cmdline = env_or("KEEL_ISO_CMDLINE", SELFTEST_BOOT);

    let run = Qemu::cdrom(iso).smp(2).timeout_secs(ISO_TIMEOUT).run();
    clean_power_off(&run);
    run.assert_line("(KEEL) Boot loader: GRUB");
    run.assert_exact_line(&format!("(KEEL) Command line: {cmdline}")).assert_count("(KEEL) Module ", 2);
    // Keel may add more after the cmdline (its load address); the modules are passed as they are
    // (grub.cfg uses --nounzip, or GRUB would gunzip the initramfs).
    run.assert_line_starting(&format!("(KEEL) Module 0: type=bzImage size={vmlinuz} cmdline=\"console=hvc0\""));
    run.assert_line_starting(&format!("(KEEL) Module 1: type=gzip size={initrd} cmdline=\"\""));
}

#[test]
fn pagefault_on_cpu1_does_not_stop_cpu0() {
    let run = pvh("console=com1 loglvl=all selftest=pagefault").smp(2).run();
    run.assert_success();
    let header = run.assert_line("(KEEL) *** CPU1 EXCEPTION #PF (vector 14) error=0x");
    if !header.trim_end().ends_with("***") {
        run.fail(&format!("odd exception header: {header:?}"));
    }
    // The dump's register lines follow its header, in whatever order Keel prints them.
    for reg in ["RIP=", "RSP=", "CR2=0x00007fffdead0000"] {
        run.assert_order(&["*** CPU1 EXCEPTION #PF", reg]);
    }
    run.assert_order(&["*** CPU1 EXCEPTION #PF", "(KEEL) CPU1 halted after fatal exception"])
        .assert_order(&[
            "*** CPU1 EXCEPTION #PF",
            "(KEEL) selftest: CPU0 carries on after CPU1's fault",
            "(KEEL) Powering off",
        ])
        .assert_count("EXCEPTION", 1)
        .assert_no_line("CPU0 EXCEPTION");
}

#[test]
fn hundred_domains_leak_nothing() {
    let run = pvh("console=com1 selftest=domains").smp(2).run();
    run.assert_success();
    let line = run.assert_line("(KEEL) selftest: 100 domains created and destroyed; free frames before ");
    let nums: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    // "100", before, after
    if nums.len() < 3 || nums[1] != nums[2] || nums[1] == 0 {
        run.fail(&format!("free frame counts differ: {line:?}"));
    }
    run.assert_count("shut down: poweroff", 100).assert_no_line("LEAK").assert_line("(KEEL) Powering off");
}

#[test]
fn heap_grows_past_its_bootstrap_region() {
    // Regression (issue 10): the heap was a fixed 16 MiB; running out panicked. Now it grows from the frame
    // allocator, and a request larger than the machine fails as a value.
    let run = pvh("console=com1 selftest=heap").run();
    run.assert_success();
    run.assert_line("(KEEL) selftest: heap held 48 MiB: grew from ");
    run.assert_line("(KEEL) selftest: heap refused ");
    run.assert_line("(KEEL) heap exhausted: ");
    run.assert_no_line("PANIC").assert_line("(KEEL) Powering off");
}

#[test]
fn guests_refused_without_npt() {
    // `selftest=domains` tries to create domains; without NPT Keel must refuse them cleanly.
    let run = pvh("console=com1 selftest=domains").cpu("qemu64").smp(2).run();
    run.assert_success();
    run.assert_line("HVM/PVH guests need nested paging (NPT)");
    run.assert_no_line("EXCEPTION").assert_line("(KEEL) Powering off");
}
