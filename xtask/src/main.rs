//! Keel's build and test driver: `cargo xtask <command>`.

mod bench;
mod build;
mod deps;
mod elf;
mod image;
mod initramfs;
mod kernel;
mod lint;
mod modgraph;
mod qemu;
mod qemu_defect;
mod test;
mod two_hosts;
mod util;
mod vs_xen;
mod xen;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot, test and measure Keel")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the hypervisor (release, x86_64-unknown-none) and the dom0 tools.
    Build,
    /// Check the host packages (QEMU with SVM+NPT under TCG, GRUB, xorriso, mtools, busybox-static, cpio);
    /// install the missing ones when root. `--bochs` adds the optional group the Bochs runs need.
    Deps(deps::Args),
    /// Fetch Debian's stock amd64 kernel into target/debian/ (cached).
    Kernel,
    /// Build target/initramfs.cpio.gz from busybox-static (plus Xen modules if the kernel is fetched).
    Initramfs,
    /// Build a GRUB (multiboot2) ISO of Keel.
    Image(image::Args),
    /// Boot Keel in QEMU with the serial console on this terminal.
    Run(qemu::RunArgs),
    /// rustfmt and clippy (warnings denied), for the host and for the bare-metal crates.
    Lint,
    /// Lint, host unit tests, boot tests and test guests under QEMU, then the quick guests under Bochs (SVM with NRIP
    /// save and flush-by-ASID, VMX): the CI entry point.
    Test(test::Args),
    /// Time Keel's boot under QEMU TCG and record it in docs/benchmarks.md; `--vs-xen`: side by side with Xen 4.17.
    Bench(bench::Args),
    /// Print the hypervisor's module graph (which top-level module names which) and its import cycles; fails on
    /// a cycle.
    Modgraph,
    /// Boot two Keel machines in QEMU, joined by a virtual network cable and sharing one disk, for
    /// `xm migrate --live GUEST 192.168.77.2` between them.
    TwoHosts(two_hosts::Args),
    /// Run the reproducer of the QEMU TCG nested-SVM defect of docs/testing.md and report whether this QEMU has it.
    QemuDefect(qemu_defect::Args),
}

/// `--elf PATH`: use this ELF instead of building the hypervisor.
#[derive(clap::Args, Clone, Default)]
pub struct ElfArg {
    /// Boot this ELF instead of building `keel` (for harness work while the hypervisor does not build).
    #[arg(long, value_name = "PATH")]
    pub elf: Option<PathBuf>,
}

impl ElfArg {
    /// The given ELF (made absolute), or the freshly built hypervisor.
    pub fn get(&self) -> util::Result<PathBuf> {
        match &self.elf {
            Some(p) => std::path::absolute(p).map_err(|e| format!("bad --elf path {}: {e}", p.display()).into()),
            None => build::hypervisor(),
        }
    }
}

fn dispatch(cmd: Cmd) -> util::Result<()> {
    deps::ensure_rust_targets()?;
    if !matches!(cmd, Cmd::Deps(_) | Cmd::Lint | Cmd::Modgraph) {
        deps::ensure()?;
    }
    match cmd {
        Cmd::Deps(args) => deps::cmd(&args),
        Cmd::Build => build::cmd(),
        Cmd::Kernel => kernel::cmd(),
        Cmd::Initramfs => initramfs::cmd(),
        Cmd::Image(args) => image::cmd(&args),
        Cmd::Lint => lint::cmd(),
        Cmd::Run(args) => qemu::run(&args),
        Cmd::Test(args) => test::cmd(&args),
        Cmd::Bench(args) => bench::cmd(&args),
        Cmd::QemuDefect(args) => qemu_defect::cmd(&args),
        Cmd::Modgraph => modgraph::cmd(),
        Cmd::TwoHosts(args) => two_hosts::cmd(&args),
    }
}

fn main() {
    if let Err(e) = dispatch(Cli::parse().command) {
        eprintln!("xtask: error: {e}");
        std::process::exit(e.code);
    }
}
