//! QEMU command lines, and `cargo xtask run`.

use crate::deps::QEMU;
use crate::util::{self, Result};
use crate::{image, ElfArg};
use std::path::Path;
use std::process::Command;

/// The CPU model for TCG: AMD SVM with nested paging (TCG cannot offer VMX).
pub const TCG_CPU: &str = "qemu64,+svm,+npt";

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's emulator; SVM + NPT via `-cpu qemu64,+svm,+npt`.
    #[default]
    Tcg,
    /// Hardware virtualization (needs real nested virtualization; `-cpu host`).
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    pub fn cpu(self) -> &'static str {
        match self {
            Accel::Tcg => TCG_CPU,
            Accel::Kvm => "host",
        }
    }
}

/// A QEMU machine for Keel: accelerator, CPUs, memory, no display, no reboot, the debug-exit port.
pub fn machine(accel: Accel, cpus: u32, mem: &str) -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", accel.name(), "-cpu", accel.cpu()])
        .args(["-smp", &cpus.to_string(), "-m", mem])
        .args(["-display", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd
}

/// Boots `elf` directly through its PVH note.
pub fn boot_kernel(cmd: &mut Command, elf: &Path, cmdline: &str) {
    cmd.arg("-kernel").arg(elf).args(["-append", cmdline]);
}

/// Boots a GRUB ISO from the CD drive (`-boot d`: no floppy probe first).
pub fn boot_cdrom(cmd: &mut Command, iso: &Path) {
    cmd.arg("-cdrom").arg(iso).args(["-boot", "d"]);
}

/// The machine QEMU emulates: accelerator, CPUs, memory (shared by `run` and `two-hosts`).
#[derive(clap::Args, Clone)]
pub struct MachineArgs {
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Number of CPUs (`-smp`).
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Guest memory (`-m`), e.g. 2048M or 2G.
    #[arg(long, default_value = "2048M")]
    pub mem: String,
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Boot the ELF directly via its PVH note (`-kernel`) instead of the GRUB ISO.
    #[arg(long)]
    pub kernel: bool,
    /// Keel's command line.
    #[arg(long, default_value = image::DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// ISO only: leave out the dom0 kernel and initramfs.
    #[arg(long)]
    pub no_modules: bool,
    #[command(flatten)]
    pub elf: ElfArg,
}

/// `cargo xtask run`: serial console and QEMU monitor multiplexed on this terminal.
pub fn run(args: &RunArgs) -> Result<()> {
    let mut cmd = machine(args.machine.accel, args.machine.cpus, &args.machine.mem);
    if args.kernel {
        let elf = args.elf.get()?;
        boot_kernel(&mut cmd, &elf, &args.cmdline);
    } else {
        let iso = image::build(&image::Args {
            cmdline: args.cmdline.clone(),
            no_modules: args.no_modules,
            out: None,
            elf: args.elf.clone(),
        })?;
        boot_cdrom(&mut cmd, &iso);
    }
    // -boot d is harmless with -kernel and keeps both command lines alike.
    if args.kernel {
        cmd.args(["-boot", "d"]);
    }
    cmd.args(["-serial", "mon:stdio"]);
    eprintln!("run: Ctrl-A X quits QEMU, Ctrl-A C switches to its monitor");
    util::run(&mut cmd)
}
