//! Keel's test guests (tests/guests) booted on Keel in `xtf` mode, judged by the serial log: each listed
//! guest alone, crashing guests beside a healthy one, and the credit scheduler's weights and caps measured
//! with `spin`. Run them with `cargo xtask test` (it builds Keel and the guests and passes their paths in).

use keel_tests::xtf::{self, Expect, Module};

/// Boots one listed guest alone on 2 CPUs and checks the outcome the list gives.
fn alone(name: &str) {
    let g = xtf::listed(name);
    let run = xtf::boot(&[Module::listed(name)], 2, g.timeout);
    match g.expect {
        Expect::Success => {
            run.assert_guest_result(name, "SUCCESS").assert_xtf(name, "SUCCESS");
        }
        Expect::Crash => {
            run.assert_crashed(name);
            run.assert_xtf(name, "CRASHED");
        }
    }
    run.assert_no_line("EXCEPTION").assert_known_defects_only().assert_all_passed(1);
}

/// One test per listed guest (`alone::<name>`), and the names for the check that none is missing.
macro_rules! alone {
    ($($name:ident),* $(,)?) => {
        mod alone {
            $(#[test]
            fn $name() {
                super::alone(stringify!($name));
            })*
        }
        const ALONE: &[&str] = &[$(stringify!($name)),*];
    };
}

alone!(
    cpuid,
    hypercall_page,
    inline_vmcall,
    ctl_eperm,
    prefixed_insns,
    timer,
    exceptions,
    evtchn_errors,
    triple_fault,
    unmapped_write,
    hostile_hypercalls,
    spin,
    sched_second,
    bench,
    balloon,
);

#[test]
fn every_listed_guest_runs_alone() {
    let mut listed: Vec<&str> = xtf::GUESTS.iter().map(|g| g.name).collect();
    let mut tested = ALONE.to_vec();
    listed.sort_unstable();
    tested.sort_unstable();
    assert_eq!(listed, tested, "keel_tests::xtf::GUESTS vs the alone! list");
}

/// The quick guests together on 4 CPUs: every domain gets its own result, and all pass.
#[test]
fn quick_guests_together_on_four_cpus() {
    let names = [
        "cpuid",
        "hypercall_page",
        "inline_vmcall",
        "timer",
        "exceptions",
        "triple_fault",
        "unmapped_write",
        "sched_second",
    ];
    let modules: Vec<Module> = names.iter().map(|n| Module::listed(n)).collect();
    let run = xtf::boot(&modules, 4, xtf::DEFAULT_TIMEOUT);
    for g in names.iter().map(|n| xtf::listed(n)) {
        match g.expect {
            Expect::Success => run.assert_xtf(g.name, "SUCCESS"),
            Expect::Crash => run.assert_xtf(g.name, "CRASHED"),
        };
    }
    run.assert_all_passed(names.len());
}

#[test]
fn triple_fault_leaves_the_other_domain_alone() {
    let run = xtf::boot(&[Module::listed("triple_fault"), Module::listed("sched_second")], 2, xtf::DEFAULT_TIMEOUT);
    run.assert_crashed("triple_fault");
    run.assert_xtf("triple_fault", "CRASHED").assert_xtf("sched_second", "SUCCESS").assert_all_passed(2);
}

/// A domain whose VM entry fails (SVM: VMRUN refuses a state without EFER.SVME, Keel's `corrupt=guest-state` test
/// setting) is crashed with the failure named; the domain beside it carries on.
#[test]
fn failed_vm_entry_ends_only_its_domain() {
    let modules =
        [Module::new("cpuid", "bad_state", "corrupt=guest-state expect=crash"), Module::listed("sched_second")];
    let run = xtf::boot(&modules, 2, xtf::DEFAULT_TIMEOUT);
    let line = run.assert_crashed("bad_state");
    if !line.contains("VM entry failed: invalid guest state") {
        run.fail(&format!("the crash line does not name the failed entry: {line:?}"));
    }
    run.assert_xtf("bad_state", "CRASHED").assert_xtf("sched_second", "SUCCESS").assert_all_passed(2);
}

#[test]
fn unmapped_write_is_reported_with_its_address() {
    let run = xtf::boot(&[Module::listed("unmapped_write"), Module::listed("sched_second")], 2, xtf::DEFAULT_TIMEOUT);
    let line = run.assert_crashed("unmapped_write");
    if !line.contains("gpa 0xdead0000") {
        run.fail(&format!("the crash line does not name gpa 0xdead0000: {line:?}"));
    }
    run.assert_xtf("unmapped_write", "CRASHED").assert_xtf("sched_second", "SUCCESS").assert_all_passed(2);
}

/// `evtchn_errors` as domain 2 beside `spin` (domain 1, busy for 2 s, so that it surely exists while domain 2,
/// built after it, runs): ALLOC_UNBOUND for domain 1, which exists and is not ours, must say -EPERM (alone, the
/// guest accepts -ESRCH for a domain that does not exist).
#[test]
fn evtchn_errors_with_a_foreign_domain() {
    let modules = [
        Module::new("spin", "spin", "vcpus=1 guest.spin_ms=2000"),
        Module::new("evtchn_errors", "evtchn_errors", "vcpus=2 guest.peer=1"),
    ];
    let run = xtf::boot(&modules, 2, xtf::DEFAULT_TIMEOUT);
    if xtf::domain_id(&run.log, "spin") != Some(1) {
        run.fail("spin is not domain 1");
    }
    run.assert_line("ok: ALLOC_UNBOUND for foreign domain 1 -> -1 (EPERM)");
    run.assert_xtf("evtchn_errors", "SUCCESS")
        .assert_xtf("spin", "SUCCESS")
        .assert_known_defects_only()
        .assert_all_passed(2);
}

#[test]
fn hostile_hypercalls_beside_another_domain() {
    let run = xtf::boot(
        &[Module::listed("hostile_hypercalls"), Module::listed("sched_second")],
        2,
        xtf::listed("hostile_hypercalls").timeout,
    );
    run.assert_xtf("hostile_hypercalls", "SUCCESS")
        .assert_xtf("sched_second", "SUCCESS")
        .assert_no_line("EXCEPTION")
        .assert_known_defects_only()
        .assert_all_passed(2);
}

/// `spin` runs for this long on every vCPU (tests/guests/src/bin/spin.rs).
const SPIN_MS: f64 = 4000.0;

/// Two 2-vCPU domains on 2 CPUs, weights 512 and 256: CPU time 2:1, within 10%.
#[test]
fn weights_share_cpu_time() {
    let run = xtf::boot(
        &[
            Module::new("spin", "spin_w512", "vcpus=2 weight=512"),
            Module::new("spin", "spin_w256", "vcpus=2 weight=256"),
        ],
        2,
        xtf::DEFAULT_TIMEOUT,
    );
    run.assert_xtf("spin_w512", "SUCCESS").assert_xtf("spin_w256", "SUCCESS").assert_all_passed(2);
    let (heavy, light) = (run.cpu_time_ms("spin_w512"), run.cpu_time_ms("spin_w256"));
    let ratio = heavy as f64 / light.max(1) as f64;
    eprintln!("cpu time: spin_w512 {heavy} ms, spin_w256 {light} ms, ratio {ratio:.2}");
    if !(1.8..=2.2).contains(&ratio) {
        run.fail(&format!("weight 512 vs 256 got {heavy} ms vs {light} ms of CPU: ratio {ratio:.2}, want 2.0 ± 10%"));
    }
}

/// A 1-vCPU domain capped at 25% beside an uncapped one: 25% ± 5 points of its 4 s.
#[test]
fn cap_limits_cpu_time() {
    let run = xtf::boot(
        &[Module::new("spin", "spin_cap25", "vcpus=1 cap=25"), Module::new("spin", "spin_w256", "vcpus=1 weight=256")],
        2,
        xtf::DEFAULT_TIMEOUT,
    );
    run.assert_xtf("spin_cap25", "SUCCESS").assert_xtf("spin_w256", "SUCCESS").assert_all_passed(2);
    let capped = run.cpu_time_ms("spin_cap25");
    let share = capped as f64 / SPIN_MS * 100.0;
    eprintln!("cpu time: spin_cap25 {capped} ms = {share:.1}% of {SPIN_MS} ms");
    if !(20.0..=30.0).contains(&share) {
        run.fail(&format!("cap=25 domain used {capped} ms of CPU in {SPIN_MS} ms: {share:.1}%, want 25 ± 5"));
    }
}
