//! `cargo xtask image`: a GRUB (multiboot2) ISO of Keel with dom0's kernel and initramfs as modules.

use crate::util::{self, Context, Result};
use crate::{initramfs, kernel, ElfArg};
use std::path::{Path, PathBuf};

pub const DEFAULT_CMDLINE: &str = "console=com1 loglvl=all";

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Keel's command line (the multiboot2 line's arguments).
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Leave out the dom0 kernel and initramfs modules.
    #[arg(long)]
    pub no_modules: bool,
    /// Where to write the ISO [default: target/keel.iso].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub elf: ElfArg,
}

impl Default for Args {
    fn default() -> Self {
        Args { cmdline: DEFAULT_CMDLINE.into(), no_modules: false, out: None, elf: ElfArg::default() }
    }
}

pub fn default_path() -> PathBuf {
    util::target_dir().join("keel.iso")
}

/// Fills in the grub.cfg template: drops its `#` comments, puts in the command line,
/// keeps or drops the `module2` lines.
pub fn render_grub_cfg(template: &str, cmdline: &str, modules: bool) -> String {
    keel_tests::iso::render_grub_cfg(template, cmdline, if modules { None } else { Some(&[]) })
}

/// What goes onto the ISO besides GRUB.
pub struct Contents {
    pub elf: PathBuf,
    /// (vmlinuz, initramfs) when the image carries modules.
    pub modules: Option<(PathBuf, PathBuf)>,
}

/// Builds what `args` asks for (hypervisor, kernel, initramfs), then the ISO; returns its path.
pub fn build(args: &Args) -> Result<PathBuf> {
    let elf = args.elf.get()?;
    let modules = if args.no_modules {
        None
    } else {
        let k = kernel::ensure()?;
        Some((k.vmlinuz, initramfs::build()?))
    };
    let out = match &args.out {
        Some(p) => std::path::absolute(p)?,
        None => default_path(),
    };
    write_iso(&Contents { elf, modules }, &args.cmdline, &out)?;
    Ok(out)
}

/// Stages `contents` in target/iso-root/ and runs grub-mkrescue.
pub fn write_iso(contents: &Contents, cmdline: &str, out: &Path) -> Result<()> {
    if cmdline.contains(['\n', '\r']) {
        return Err("the command line must be one line".into());
    }
    let template_path = keel_tests::iso::template_path();
    let template =
        std::fs::read_to_string(&template_path).context(format!("cannot read {}", template_path.display()))?;

    let stage = util::target_dir().join("iso-root");
    util::remove_dir(&stage)?;
    let boot = stage.join("boot");
    std::fs::create_dir_all(boot.join("grub"))?;
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, boot.join(name)).context(format!("cannot copy {}", from.display()))
    };
    copy(&contents.elf, "keel.elf")?;
    if let Some((vmlinuz, initrd)) = &contents.modules {
        copy(vmlinuz, "vmlinuz")?;
        copy(initrd, "initrd.img")?;
    }
    std::fs::write(boot.join("grub/grub.cfg"), render_grub_cfg(&template, cmdline, contents.modules.is_some()))?;

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    keel_tests::iso::mkrescue(&stage, out)?;
    eprintln!(
        "image: {} ({}, cmdline {cmdline:?}, {})",
        util::show(out),
        util::human_size(util::file_size(out)?),
        if contents.modules.is_some() { "with vmlinuz + initramfs modules" } else { "no modules" }
    );
    Ok(())
}

pub fn cmd(args: &Args) -> Result<()> {
    let out = build(args)?;
    println!("image: {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> String {
        std::fs::read_to_string(keel_tests::iso::template_path()).unwrap()
    }

    #[test]
    fn grub_cfg_with_modules() {
        let cfg = render_grub_cfg(&template(), "console=com1 selftest=boot", true);
        assert!(cfg.contains("multiboot2 /boot/keel.elf console=com1 selftest=boot\n"));
        assert!(cfg.contains("module2 --nounzip /boot/vmlinuz console=hvc0\n"));
        assert!(cfg.contains("module2 --nounzip /boot/initrd.img\n"));
        assert!(cfg.contains("set timeout=0"));
        assert!(cfg.contains("terminal_output serial"));
        assert!(!cfg.contains('@'));
    }

    #[test]
    fn grub_cfg_without_modules() {
        let cfg = render_grub_cfg(&template(), DEFAULT_CMDLINE, false);
        assert!(cfg.contains("multiboot2 /boot/keel.elf console=com1 loglvl=all\n"));
        assert!(!cfg.contains("module2"));
        assert!(cfg.contains("boot\n"));
    }
}
