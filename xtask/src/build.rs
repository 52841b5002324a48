//! `cargo xtask build`: the hypervisor ELF and the dom0 tools.

use crate::util::{self, Result};
use std::path::PathBuf;

pub const HV_PACKAGE: &str = "keel-hypervisor";
pub const HV_TARGET: &str = "x86_64-unknown-none";

/// Builds `keel` (release) and returns the path of the ELF.
pub fn hypervisor() -> Result<PathBuf> {
    util::run(util::cargo().args(["build", "--release", "-p", HV_PACKAGE, "--bin", "keel", "--target", HV_TARGET]))?;
    let elf = util::target_dir().join(HV_TARGET).join("release").join("keel");
    if !elf.is_file() {
        return Err(format!("cargo built no {}", elf.display()).into());
    }
    Ok(elf)
}

pub const GUESTS_PACKAGE: &str = "keel-test-guests";

/// Builds the test guests (tests/guests, release, x86_64-unknown-none) and returns the directory of their
/// ELFs (one per file in tests/guests/src/bin/, named after it).
pub fn guests() -> Result<PathBuf> {
    util::run(util::cargo().args(["build", "--release", "-p", GUESTS_PACKAGE, "--target", HV_TARGET]))?;
    let dir = util::target_dir().join(HV_TARGET).join("release");
    if !dir.join("sched_second").is_file() {
        return Err(format!("cargo built no test guests in {}", dir.display()).into());
    }
    Ok(dir)
}

/// The dom0 programs the initramfs carries, each (name, directory it goes to).
pub const DOM0_PROGRAMS: &[(&str, &str)] = &[
    ("xm", "usr/sbin"),
    ("xenstored", "usr/sbin"),
    ("xenstore", "usr/bin"),
    ("keel-devcheck", "usr/bin"),
    ("xenconsoled", "usr/sbin"),
    ("keel-relocd", "usr/sbin"),
];
/// The target dom0's static programs are built for (glibc with crt-static: no other Rust target needed).
pub const DOM0_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds dom0's programs as static executables (they run in dom0's busybox initramfs, which has no libc) and
/// returns the directory that holds them.
pub fn dom0_static() -> Result<PathBuf> {
    util::run(
        util::cargo()
            .args([
                "build",
                "--release",
                "-p",
                "dom0-tools",
                "-p",
                "keel-xenstore",
                "-p",
                "keel-consoled",
                "--target",
                DOM0_TARGET,
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static -C strip=symbols"),
    )?;
    let dir = util::target_dir().join(DOM0_TARGET).join("release");
    for (name, _) in DOM0_PROGRAMS {
        if !dir.join(name).is_file() {
            return Err(format!("cargo built no {}", dir.join(name).display()).into());
        }
    }
    Ok(dir)
}

/// Builds the host tools (`xm` and friends).
pub fn dom0_tools() -> Result<()> {
    util::run(util::cargo().args(["build", "--release", "-p", "dom0-tools"]))
}

pub fn cmd() -> Result<()> {
    let elf = hypervisor()?;
    dom0_tools()?;
    println!("build: {} ({})", elf.display(), util::human_size(util::file_size(&elf)?));
    Ok(())
}
