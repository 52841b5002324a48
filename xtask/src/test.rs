//! `cargo xtask test`: lint, host unit tests, then the boot tests and test guests of `keel-tests` under QEMU, then
//! every test guest under Bochs (`tests/tests/bochs.rs`: AMD SVM with NRIP save and flush-by-ASID, Intel VMX).

use crate::qemu::Accel;
use crate::util::{self, Result};
use crate::{build, deps, image, initramfs, kernel, lint, xen, ElfArg};
use std::time::{Duration, Instant};

/// Keel's command line in the test ISO; `keel-tests` reads it from `KEEL_ISO_CMDLINE`.
pub const ISO_CMDLINE: &str = "console=com1 loglvl=all selftest=boot";

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Skip `cargo xtask lint` (rustfmt and clippy).
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the host unit tests (`cargo test --workspace`, less keel-tests and keel-test-guests).
    #[arg(long)]
    pub no_unit: bool,
    /// Skip the Bochs runs (tests/tests/bochs.rs), the last step.
    #[arg(long, conflicts_with = "only_bochs")]
    pub no_bochs: bool,
    /// Of the boot tests, run only the Bochs ones (no Debian kernel, initramfs or QEMU runs).
    #[arg(long)]
    pub only_bochs: bool,
    #[command(flatten)]
    pub elf: ElfArg,
    /// Passed to the boot-test harness, e.g. a test name filter.
    #[arg(last = true)]
    pub harness_args: Vec<String>,
}

struct Step {
    name: &'static str,
    took: Duration,
    ok: bool,
}

#[derive(Default)]
struct Steps(Vec<Step>);

impl Steps {
    fn run<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("==> {name}");
        let start = Instant::now();
        let result = f();
        self.0.push(Step { name, took: start.elapsed(), ok: result.is_ok() });
        result
    }

    fn summary(&self, total: Duration) {
        eprintln!("\n== cargo xtask test summary ==");
        for s in &self.0 {
            eprintln!("  {:<6} {:<28} {:>8}", if s.ok { "ok" } else { "FAILED" }, s.name, util::secs(s.took));
        }
        let ok = self.0.iter().all(|s| s.ok);
        eprintln!("  {} in {}", if ok { "PASSED" } else { "FAILED" }, util::secs(total));
    }
}

pub fn cmd(args: &Args) -> Result<()> {
    let start = Instant::now();
    let mut steps = Steps::default();
    let result = all(args, &mut steps);
    steps.summary(start.elapsed());
    let logs = util::target_dir().join("test-logs");
    // Runs repeated because the QEMU defect of docs/testing.md ended them (`keel_tests::Run::emulator_defect`), whether
    // or not the repeat passed, so that they are never silent.
    print_notes(&logs, "retried", "repeated run", ("first run's serial log", "first.log"));
    if result.is_err() {
        // The failure and the last serial lines of each failed run, printed last so that a CI log cut short in the
        // middle still shows them.
        print_notes(&logs, "failed", "failed run", ("full serial log", "log"));
    }
    result
}

/// Prints each `<name>.<ext>` note the boot-test harness left in `logs` under a `== <title> <name> ==` heading that
/// points at a serial log: `log` is its description and its extension (`<name>.<extension>`).
fn print_notes(logs: &std::path::Path, ext: &str, title: &str, log: (&str, &str)) {
    let Ok(entries) = std::fs::read_dir(logs) else { return };
    let mut notes: Vec<_> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == ext)).collect();
    notes.sort();
    for path in notes {
        let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let (what, log_ext) = log;
        eprintln!(
            "\n== {title} {name} ({what}: {}) ==\n{}",
            util::show(&path.with_extension(log_ext)),
            text.trim_end()
        );
    }
}

fn all(args: &Args, steps: &mut Steps) -> Result<()> {
    if !args.no_lint {
        steps.run("lint (rustfmt, clippy)", lint::cmd)?;
    }
    if !args.no_unit {
        // The bzImage unit test decompresses Debian's real kernel: fetch it first (cached under target/).
        let k = steps.run("debian kernel (for unit tests)", kernel::ensure)?;
        // keel-tests boots QEMU (below); the test guests only build for bare metal.
        steps.run("host unit tests", || {
            util::run(
                util::cargo()
                    .args(["test", "--workspace", "--exclude", "keel-tests", "--exclude", build::GUESTS_PACKAGE])
                    .env("KEEL_VMLINUZ", &k.vmlinuz),
            )
        })?;
    }
    let elf = steps.run("build hypervisor", || args.elf.get())?;
    let guests = steps.run("build test guests", build::guests)?;
    let logs = util::target_dir().join("test-logs");
    util::remove_dir(&logs)?;
    std::fs::create_dir_all(&logs)?;
    eprintln!("serial logs of the boot tests go to {}", util::show(&logs));
    let qemu = if args.only_bochs { Ok(()) } else { qemu_tests(args, steps, &elf, &guests, &logs) };
    // The Bochs runs go on after a QEMU failure: they test other branches, and CI shows both.
    let bochs = if args.no_bochs {
        Ok(())
    } else {
        steps.run("bochs deps", deps::ensure_bochs).and_then(|()| {
            // The Linux run under Bochs VMX needs the Debian kernel and the initramfs (cached after the QEMU step).
            let k = steps.run("debian kernel", kernel::ensure)?;
            let initrd = steps.run("initramfs", initramfs::build)?;
            steps.run("bochs tests (svm, vmx, linux)", || {
                util::run(
                    util::cargo()
                        .args(["test", "-p", "keel-tests", "--test", "bochs", "--", "--test-threads=1"])
                        .args(&args.harness_args)
                        .env("KEEL_ELF", &elf)
                        .env("KEEL_GUESTS", &guests)
                        .env("KEEL_VMLINUZ", &k.vmlinuz)
                        .env("KEEL_INITRD", &initrd)
                        .env("KEEL_LOG_DIR", &logs),
                )
            })
        })
    };
    qemu.and(bochs)
}

/// The Debian kernel, the initramfs (and one with Xen 4.17's stock tools) and the test ISO, then every
/// `keel-tests` test but the Bochs ones.
fn qemu_tests(
    args: &Args,
    steps: &mut Steps,
    elf: &std::path::Path,
    guests: &std::path::Path,
    logs: &std::path::Path,
) -> Result<()> {
    let k = steps.run("debian kernel", kernel::ensure)?;
    let initrd = steps.run("initramfs", initramfs::build)?;
    let iso = util::target_dir().join("keel-test.iso");
    steps.run("grub iso", || {
        image::write_iso(
            &image::Contents { elf: elf.to_path_buf(), modules: Some((k.vmlinuz.clone(), initrd.clone())) },
            ISO_CMDLINE,
            &iso,
        )
    })?;
    // Debian's stock xl and xenstore-ls for tests/tests/xl.rs (fetched with apt-get download like the kernel).
    let xl_initrd = steps
        .run("xen 4.17 tools (xl test)", || xen::stock_tools_initramfs(&xen::ensure()?, &initrd, &k.vmlinuz, guests))?;
    steps.run("boot tests (qemu)", || {
        util::run(
            util::cargo()
                // Every test file runs even when an earlier one failed: one failure must not hide the others.
                .args(["test", "-p", "keel-tests", "--no-fail-fast", "--", "--test-threads=1", "--skip", "on_bochs::"])
                .args(&args.harness_args)
                .env("KEEL_ELF", elf)
                .env("KEEL_ISO", &iso)
                .env("KEEL_ISO_CMDLINE", ISO_CMDLINE)
                .env("KEEL_ACCEL", args.accel.name())
                .env("KEEL_VMLINUZ", &k.vmlinuz)
                .env("KEEL_INITRD", &initrd)
                .env("KEEL_XL_INITRD", &xl_initrd)
                .env("KEEL_GUESTS", guests)
                .env("KEEL_LOG_DIR", logs),
        )
    })
}
