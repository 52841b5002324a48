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
