//! `cargo xtask test`: host unit tests, then the boot tests of `keel-tests` under QEMU.

use crate::qemu::Accel;
use crate::util::{self, Result};
use crate::{image, initramfs, kernel, ElfArg};
use std::time::{Duration, Instant};

/// Keel's command line in the test ISO; `keel-tests` reads it from `KEEL_ISO_CMDLINE`.
pub const ISO_CMDLINE: &str = "console=com1 loglvl=all selftest=boot";

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Skip the host unit tests (`cargo test --workspace --exclude keel-tests`).
    #[arg(long)]
    pub no_unit: bool,
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
        self.0.push(Step {
            name,
            took: start.elapsed(),
            ok: result.is_ok(),
        });
        result
    }

    fn summary(&self, total: Duration) {
        eprintln!("\n== cargo xtask test summary ==");
        for s in &self.0 {
            eprintln!(
                "  {:<6} {:<28} {:>8}",
                if s.ok { "ok" } else { "FAILED" },
                s.name,
                util::secs(s.took)
            );
        }
        let ok = self.0.iter().all(|s| s.ok);
        eprintln!(
            "  {} in {}",
            if ok { "PASSED" } else { "FAILED" },
            util::secs(total)
        );
    }
}

pub fn cmd(args: &Args) -> Result<()> {
    let start = Instant::now();
    let mut steps = Steps::default();
    let result = all(args, &mut steps);
    steps.summary(start.elapsed());
    result
}

fn all(args: &Args, steps: &mut Steps) -> Result<()> {
    if !args.no_unit {
        steps.run("host unit tests", || {
            util::run(util::cargo().args(["test", "--workspace", "--exclude", "keel-tests"]))
        })?;
    }
    let elf = steps.run("build hypervisor", || args.elf.get())?;
    let k = steps.run("debian kernel", kernel::ensure)?;
    let initrd = steps.run("initramfs", initramfs::build)?;
    let iso = util::target_dir().join("keel-test.iso");
    steps.run("grub iso", || {
        image::write_iso(
            &image::Contents {
                elf: elf.clone(),
                modules: Some((k.vmlinuz.clone(), initrd.clone())),
            },
            ISO_CMDLINE,
            &iso,
        )
    })?;
    let logs = util::target_dir().join("test-logs");
    util::remove_dir(&logs)?;
    std::fs::create_dir_all(&logs)?;
    eprintln!("serial logs of the boot tests go to {}", util::show(&logs));
    steps.run("boot tests (qemu)", || {
        util::run(
            util::cargo()
                .args(["test", "-p", "keel-tests", "--", "--test-threads=1"])
                .args(&args.harness_args)
                .env("KEEL_ELF", &elf)
                .env("KEEL_ISO", &iso)
                .env("KEEL_ISO_CMDLINE", ISO_CMDLINE)
                .env("KEEL_ACCEL", args.accel.name())
                .env("KEEL_VMLINUZ", &k.vmlinuz)
                .env("KEEL_INITRD", &initrd)
                .env("KEEL_LOG_DIR", &logs),
        )
    })
}
