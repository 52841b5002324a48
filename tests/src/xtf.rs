//! Keel's test guests (tests/guests) on Keel: the list of guests, GRUB ISOs that carry them as boot modules
//! with Keel in `xtf` mode, and readers for the lines Keel prints about them.
//!
//! Environment (set by `cargo xtask test`): `KEEL_ELF` (the hypervisor) and `KEEL_GUESTS` (the directory of the
//! guest ELFs, `target/x86_64-unknown-none/release`).

use crate::{env_path, iso, Qemu, Run};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Keel's command line for test guests.
pub const XTF_CMDLINE: &str = "console=com1 loglvl=all xtf";
/// Seconds before a test-guest boot is stopped; GRUB and Keel take under 5 s of it.
pub const DEFAULT_TIMEOUT: u64 = 90;

/// How a guest ends when it runs alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `Test result: SUCCESS`.
    Success,
    /// The domain crashes; its module carries `expect=crash`, which makes that a pass.
    Crash,
}

/// One test guest: its binary (tests/guests/src/bin/<name>.rs), module arguments, expected outcome.
#[derive(Clone, Copy, Debug)]
pub struct Guest {
    pub name: &'static str,
    /// Module arguments besides `name=` and `expect=` (`vcpus=`, `memory=`, `weight=`, `cap=`).
    pub args: &'static str,
    pub expect: Expect,
    /// Seconds for a boot with this guest.
    pub timeout: u64,
}

const fn guest(name: &'static str, args: &'static str, expect: Expect) -> Guest {
    Guest { name, args, expect, timeout: DEFAULT_TIMEOUT }
}

/// Every test guest, once. A new guest is a file in tests/guests/src/bin/ plus a line here.
pub const GUESTS: &[Guest] = &[
    guest("cpuid", "vcpus=2", Expect::Success),
    guest("hypercall_page", "", Expect::Success),
    guest("inline_vmcall", "", Expect::Success),
    guest("ctl_eperm", "", Expect::Success),
    guest("prefixed_insns", "", Expect::Success),
    guest("timer", "", Expect::Success),
    guest("exceptions", "", Expect::Success),
    guest("evtchn_errors", "vcpus=2", Expect::Success),
    guest("triple_fault", "", Expect::Crash),
    guest("unmapped_write", "", Expect::Crash),
    // A million random hypercalls (~35 s on Keel under TCG), then the struct-aware phases.
    Guest { timeout: 600, ..guest("hostile_hypercalls", "vcpus=2", Expect::Success) },
    guest("spin", "vcpus=2", Expect::Success),
    guest("sched_second", "", Expect::Success),
    guest("balloon", "memory=4", Expect::Success),
    // 2 × 3 × 100,000 exits: ~1 minute under TCG.
    Guest { timeout: 600, ..guest("bench", "", Expect::Success) },
];

/// Checks the guests make that a known Keel defect still fails, by tag (`Known defect [<tag>]: ...` guest lines,
/// printed by `xtf::known_defect!`), each with the issue item that fixes it. The guest still passes; a boot test
/// fails on a tag not listed here ([`Run::assert_known_defects_only`]). Remove a tag once its fix is merged: the
/// check then becomes a hard one.
pub const KNOWN_DEFECTS: &[(&str, &str)] = &[];

/// Guest binaries that are not booted as Keel's own modules: `fxrstor_race` reproduces the QEMU defect of
/// docs/testing.md and is run by `cargo xtask qemu-defect`, never by the test suite (under QEMU it is meant to
/// fail); `hostile_frontend` needs dom0's block backend, so dom0 starts it as a domU in the xl test
/// (xtask/assets/checks/domu-hostile.sh, judged by tests/tests/xl/hostile.rs); `hostile_netfront` needs its
/// netback (xtask/assets/checks/domu-hostnet.sh).
pub const NOT_TESTS: &[&str] = &["fxrstor_race", "hostile_frontend", "hostile_netfront"];

/// The listed guest called `name`.
#[track_caller]
pub fn listed(name: &str) -> &'static Guest {
    GUESTS.iter().find(|g| g.name == name).unwrap_or_else(|| panic!("{name} is not in keel_tests::xtf::GUESTS"))
}

/// One boot module: a guest binary and its module string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The guest binary (its ELF goes on the ISO as /boot/<elf>.elf).
    pub elf: String,
    /// The domain's name (`name=`); Keel's lines about the domain carry it.
    pub name: String,
    /// Further module arguments.
    pub args: String,
}

impl Module {
    /// A listed guest as it is listed (adds `expect=crash` where listed).
    pub fn listed(name: &str) -> Module {
        let g = listed(name);
        let mut args = g.args.to_string();
        if g.expect == Expect::Crash {
            args = format!("{args} expect=crash").trim().to_string();
        }
        Module { elf: g.name.into(), name: g.name.into(), args }
    }

    /// Guest binary `elf` as a domain called `name` with module arguments `args`.
    pub fn new(elf: &str, name: &str, args: &str) -> Module {
        Module { elf: elf.into(), name: name.into(), args: args.into() }
    }

    /// The module2 line's arguments: `--nounzip /boot/<elf>.elf name=<name> <args>`.
    pub fn grub_line(&self) -> String {
        format!("--nounzip /boot/{}.elf name={} {}", self.elf, self.name, self.args).trim_end().to_string()
    }
}

/// The ELF of guest binary `elf` in `KEEL_GUESTS`.
#[track_caller]
pub fn guest_elf(elf: &str) -> PathBuf {
    let Some(dir) = std::env::var_os("KEEL_GUESTS") else {
        panic!("KEEL_GUESTS is not set: run `cargo xtask test` (it builds the test guests and sets it)");
    };
    let path = Path::new(&dir).join(elf);
    assert!(path.is_file(), "{} does not exist: run `cargo xtask test` (it builds tests/guests)", path.display());
    path
}

/// Builds a GRUB ISO of Keel (`KEEL_ELF`) in `xtf` mode with `modules`; returns its path (in the temp dir).
pub fn xtf_iso(modules: &[Module]) -> PathBuf {
    build_xtf_iso(modules, false)
}

/// [`xtf_iso`] with the debug info taken off Keel and the guests (`objcopy --strip-debug`): 0.4 MB instead of
/// 10 MB for Keel, for Bochs, where GRUB reads slowly.
pub fn small_xtf_iso(modules: &[Module]) -> PathBuf {
    build_xtf_iso(modules, true)
}

fn build_xtf_iso(modules: &[Module], strip: bool) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let tag = format!("keel-xtf-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let stage = std::env::temp_dir().join(&tag);
    let out = std::env::temp_dir().join(format!("{tag}.iso"));
    let boot = stage.join("boot");
    std::fs::create_dir_all(boot.join("grub")).expect("create the ISO staging directory");
    let copy = |from: &Path, to: &Path| {
        if strip {
            iso::strip_debug(from, to).unwrap_or_else(|e| panic!("{e}"));
        } else {
            std::fs::copy(from, to)
                .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
        }
    };
    copy(&env_path("KEEL_ELF"), &boot.join("keel.elf"));
    for m in modules {
        copy(&guest_elf(&m.elf), &boot.join(format!("{}.elf", m.elf)));
    }
    let template = std::fs::read_to_string(iso::template_path()).expect("read boot/grub.cfg.in");
    let lines: Vec<String> = modules.iter().map(Module::grub_line).collect();
    std::fs::write(boot.join("grub/grub.cfg"), iso::render_grub_cfg(&template, XTF_CMDLINE, Some(&lines)))
        .expect("write grub.cfg");
    let made = iso::mkrescue(&stage, &out);
    let _ = std::fs::remove_dir_all(&stage);
    if let Err(e) = made {
        panic!("{e}");
    }
    out
}

/// Boots Keel with `modules` on `smp` CPUs and returns the finished run (the ISO is removed afterwards).
pub fn boot(modules: &[Module], smp: u32, timeout_secs: u64) -> Run {
    let iso = xtf_iso(modules);
    let run = Qemu::cdrom(&iso).smp(smp).mem("1G").timeout_secs(timeout_secs).run();
    let _ = std::fs::remove_file(&iso);
    run
}

/// `(KEEL) xtf: <name>: <WORD>`: the word Keel reported for domain `name`.
pub fn xtf_result<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let head = format!("(KEEL) xtf: {name}: ");
    crate::keel_lines(log).find_map(|l| l.strip_prefix(head.as_str()).map(str::trim_end))
}

/// `(KEEL) xtf: <name>: <WORD>` (WORD being SUCCESS, NO RESULT and the like).
fn is_result_line(line: &str) -> bool {
    line.strip_prefix("(KEEL) xtf: ").and_then(|rest| rest.split_once(": ")).is_some_and(|(name, word)| {
        !name.contains(' ') && word.trim_end().chars().all(|c| c.is_ascii_uppercase() || c == ' ')
    })
}

/// Domain `name`'s id, from Keel's `(KEEL) domain <id> (<name>) ...` lines.
pub fn domain_id(log: &str, name: &str) -> Option<u32> {
    let tag = format!(" ({name}) ");
    crate::keel_lines(log).find_map(|l| {
        let rest = l.strip_prefix("(KEEL) domain ")?;
        let (id, after) = rest.split_once(' ')?;
        format!(" {after}").starts_with(&tag).then(|| id.parse().ok())?
    })
}

/// `(KEEL) domain <id> (<name>) cpu time <ms> ms`: domain `name`'s CPU time in ms.
pub fn cpu_time_ms(log: &str, name: &str) -> Option<u64> {
    let tag = format!(" ({name}) cpu time ");
    crate::keel_lines(log).filter(|l| l.starts_with("(KEEL) domain ")).find_map(|l| {
        let rest = &l[l.find(&tag)? + tag.len()..];
        rest.strip_suffix(" ms")?.trim().parse().ok()
    })
}

/// The tags of the `Known defect [<tag>]: ...` lines in `log`, in order (repeats included).
pub fn known_defect_tags(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("Known defect [")? + "Known defect [".len()..];
            rest.split_once("]: ").map(|(tag, _)| tag)
        })
        .collect()
}

impl Run {
    /// Every `Known defect [<tag>]` line the guests printed names a tag in [`KNOWN_DEFECTS`]; prints the ones
    /// seen (so that a run shows which known defects are still there).
    #[track_caller]
    pub fn assert_known_defects_only(&self) -> &Self {
        let mut tags = known_defect_tags(&self.log);
        tags.sort_unstable();
        tags.dedup();
        if !tags.is_empty() {
            eprintln!("known defects still seen: {tags:?}");
        }
        let unknown: Vec<&&str> = tags.iter().filter(|t| !KNOWN_DEFECTS.iter().any(|(k, _)| k == *t)).collect();
        if !unknown.is_empty() {
            self.fail(&format!("guest checks failed on defects not in keel_tests::xtf::KNOWN_DEFECTS: {unknown:?}"));
        }
        self
    }

    /// Keel reported `word` for test guest `name`, once, and nothing else for it.
    #[track_caller]
    pub fn assert_xtf(&self, name: &str, word: &str) -> &Self {
        let head = format!("(KEEL) xtf: {name}: ");
        let got: Vec<&str> = self.keel_lines().filter(|l| l.starts_with(&head)).collect();
        if got.len() != 1 || got[0].trim_end() != format!("{head}{word}") {
            self.fail(&format!("expected one line {:?}, found {got:#?}", format!("{head}{word}")));
        }
        self
    }

    /// Keel printed `n` result lines and the summary `(KEEL) xtf: <n> guests, <n> passed, 0 failed`, and
    /// QEMU exited 0 (Keel powered off).
    #[track_caller]
    pub fn assert_all_passed(&self, n: usize) -> &Self {
        let results: Vec<&str> = self.keel_lines().filter(|l| is_result_line(l)).collect();
        if results.len() != n {
            self.fail(&format!("expected {n} xtf result lines, found {results:#?}"));
        }
        self.assert_exact_line(&format!("(KEEL) xtf: {n} guests, {n} passed, 0 failed")).assert_success()
    }

    /// Domain `name` crashed: returns Keel's `(KEEL) domain <id> (<name>) crashed: <reason>` line.
    #[track_caller]
    pub fn assert_crashed(&self, name: &str) -> &str {
        let tag = format!(" ({name}) crashed: ");
        match self.keel_lines().find(|l| l.starts_with("(KEEL) domain ") && l.contains(&tag)) {
            Some(l) => l,
            None => self.fail(&format!("no \"(KEEL) domain <id> ({name}) crashed: \" line")),
        }
    }

    /// The guest's own last `Test result:` line (Keel prints guest lines as `(d<id>) <text>`) says `word`.
    #[track_caller]
    pub fn assert_guest_result(&self, name: &str, word: &str) -> &Self {
        let Some(id) = domain_id(&self.log, name) else {
            self.fail(&format!("no \"(KEEL) domain <id> ({name}) ...\" line"));
        };
        let head = format!("(d{id}) Test result: ");
        let last = self.lines().filter_map(|l| l.find(&head).map(|i| l[i + head.len()..].trim_end())).last();
        if last != Some(word) {
            self.fail(&format!("domain {id} ({name}): last guest line {head:?}... is {last:?}, want {word:?}"));
        }
        self
    }

    /// Domain `name`'s CPU time in ms.
    #[track_caller]
    pub fn cpu_time_ms(&self, name: &str) -> u64 {
        cpu_time_ms(&self.log, name)
            .unwrap_or_else(|| self.fail(&format!("no \"(KEEL) domain <id> ({name}) cpu time <ms> ms\" line")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\x1b[0m(KEEL) xtf: started d1 (spin_w512) with 2 vCPUs\n\
                       (KEEL) (d1) Test result: SUCCESS\n\
                       (KEEL) domain 1 (spin_w512) shut down: poweroff\n\
                       (KEEL) domain 1 (spin_w512) cpu time 5333 ms\n\
                       (KEEL) xtf: spin_w512: SUCCESS\n\
                       (KEEL) domain 2 (triple_fault) crashed: triple fault (vCPU 0, RIP 0x100182)\n\
                       (KEEL) domain 2 (triple_fault) cpu time 8 ms\n\
                       (KEEL) xtf: triple_fault: CRASHED\n\
                       (KEEL) xtf: 2 guests, 2 passed, 0 failed\n";

    fn run(log: &str) -> Run {
        Run {
            name: "unit".into(),
            emulator: "QEMU",
            command: "qemu".into(),
            exit_code: Some(0),
            log: log.into(),
            qemu_output: String::new(),
            elapsed: std::time::Duration::ZERO,
            timed_lines: Vec::new(),
            cpu_triple_fault: false,
        }
    }

    #[test]
    fn reads_results_and_cpu_time() {
        assert_eq!(xtf_result(LOG, "spin_w512"), Some("SUCCESS"));
        assert_eq!(xtf_result(LOG, "triple_fault"), Some("CRASHED"));
        assert_eq!(xtf_result(LOG, "spin"), None);
        assert_eq!(cpu_time_ms(LOG, "spin_w512"), Some(5333));
        assert_eq!(cpu_time_ms(LOG, "triple_fault"), Some(8));
        assert_eq!(cpu_time_ms(LOG, "spin"), None);
        assert_eq!(domain_id(LOG, "triple_fault"), Some(2));
        assert_eq!(domain_id(LOG, "spin_w512"), Some(1));
        assert_eq!(domain_id(LOG, "spin"), None);
        let r = run(LOG);
        r.assert_guest_result("spin_w512", "SUCCESS");
        r.assert_xtf("spin_w512", "SUCCESS").assert_xtf("triple_fault", "CRASHED").assert_all_passed(2);
        assert!(r.assert_crashed("triple_fault").contains("triple fault"));
    }

    #[test]
    fn known_defect_lines() {
        let log = "(KEEL) (d1) Known defect [7.10-virq-orphaned]: BIND_VIRQ returned -17\n\
                   (KEEL) (d1) ok: x\n(KEEL) (d2) Known defect [no-such-tag]: y\n";
        assert_eq!(known_defect_tags(log), ["7.10-virq-orphaned", "no-such-tag"]);
        run(LOG).assert_known_defects_only();
        let err = std::panic::catch_unwind(|| {
            run(log).assert_known_defects_only();
        })
        .expect_err("an unlisted tag must fail");
        let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
        // A listed tag is tolerated, an unlisted one named (every defect the guests knew of is fixed, so the list
        // is empty today and both are named).
        let listed = KNOWN_DEFECTS.iter().any(|(t, _)| *t == "7.10-virq-orphaned");
        assert!(text.contains("no-such-tag"), "{text}");
        assert_eq!(text.contains("\"7.10-virq-orphaned\""), !listed, "{text}");
    }

    #[test]
    fn a_second_result_line_fails() {
        let doubled = format!("{LOG}(KEEL) xtf: spin_w512: SUCCESS\n");
        let err = std::panic::catch_unwind(|| {
            run(&doubled).assert_xtf("spin_w512", "SUCCESS");
        })
        .expect_err("two result lines for one guest must fail");
        let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("expected one line"), "{text}");
    }

    #[test]
    fn module_lines() {
        assert_eq!(
            Module::listed("triple_fault").grub_line(),
            "--nounzip /boot/triple_fault.elf name=triple_fault expect=crash"
        );
        assert_eq!(Module::listed("cpuid").grub_line(), "--nounzip /boot/cpuid.elf name=cpuid vcpus=2");
        assert_eq!(
            Module::new("spin", "spin_cap25", "cap=25").grub_line(),
            "--nounzip /boot/spin.elf name=spin_cap25 cap=25"
        );
        assert_eq!(Module::listed("sched_second").grub_line(), "--nounzip /boot/sched_second.elf name=sched_second");
    }

    /// The list (with [`NOT_TESTS`]) and tests/guests/src/bin/ name the same guests.
    #[test]
    fn every_guest_binary_is_listed_once() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/src/bin");
        let mut bins: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".rs").map(str::to_string)
            })
            .collect();
        bins.sort();
        let mut listed: Vec<String> =
            GUESTS.iter().map(|g| g.name).chain(NOT_TESTS.iter().copied()).map(str::to_string).collect();
        listed.sort();
        assert_eq!(bins, listed, "tests/guests/src/bin/*.rs vs keel_tests::xtf::GUESTS");
    }
}
