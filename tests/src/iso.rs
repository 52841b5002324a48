//! GRUB (multiboot2) ISOs of Keel: grub.cfg from boot/grub.cfg.in, and grub-mkrescue. Shared by
//! `cargo xtask image` and the test-guest ISOs of [`crate::xtf`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// boot/grub.cfg.in, the template every Keel ISO's grub.cfg comes from.
pub fn template_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../boot/grub.cfg.in")
}

/// Fills in the grub.cfg template: drops its `#` comments and puts in Keel's command line. `modules`:
/// `None` keeps the template's `module2` lines; `Some(lines)` puts `module2 <line>` for each of `lines` where
/// the template's first `module2` line was, and drops the template's own.
pub fn render_grub_cfg(template: &str, cmdline: &str, modules: Option<&[String]>) -> String {
    let mut out = String::new();
    let mut replaced = false;
    for line in template.lines().filter(|l| !l.starts_with('#')) {
        let trimmed = line.trim_start();
        if let (Some(mine), true) = (modules, trimmed.starts_with("module2")) {
            if !replaced {
                let indent = &line[..line.len() - trimmed.len()];
                for m in mine {
                    out.push_str(&format!("{indent}module2 {m}\n"));
                }
                replaced = true;
            }
            continue;
        }
        out.push_str(&line.replace("@KEEL_CMDLINE@", cmdline));
        out.push('\n');
    }
    out
}

/// Runs grub-mkrescue on `stage` (a directory holding boot/grub/grub.cfg and the files it names), writing
/// `out`. A serial-console GRUB needs no fonts, themes or translations (they were 6 of its 11 MB).
/// xorriso is chatty on stderr: that is shown only in the error.
pub fn mkrescue(stage: &Path, out: &Path) -> Result<(), String> {
    let mut cmd = Command::new("grub-mkrescue");
    cmd.args(["--fonts=", "--locales=", "--themes="]).arg("-o").arg(out).arg(stage).stdin(Stdio::null());
    eprintln!("$ {}", crate::describe(&cmd));
    let result = cmd.output().map_err(|e| format!("cannot start grub-mkrescue: {e}"))?;
    if result.status.success() {
        Ok(())
    } else {
        Err(format!(
            "grub-mkrescue {} -> {} failed ({}):\n{}{}",
            stage.display(),
            out.display(),
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        ))
    }
}

/// Copies ELF `from` to `to` without its debug sections (`objcopy --strip-debug`, from binutils).
pub fn strip_debug(from: &Path, to: &Path) -> Result<(), String> {
    let mut cmd = Command::new("objcopy");
    cmd.arg("--strip-debug").arg(from).arg(to).stdin(Stdio::null());
    let out = cmd.output().map_err(|e| format!("cannot start objcopy (package binutils): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({}):\n{}", crate::describe(&cmd), out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// A GRUB ISO booting Keel like Xen: `multiboot2 /boot/keel.elf <keel_cmdline>`, `module2 --nounzip
/// /boot/vmlinuz <kernel_cmdline>` and, given one, `module2 --nounzip /boot/initrd.img`. Stages the files in a
/// directory beside `out` (removed afterwards). Used by the Linux boot tests and `cargo xtask bench`.
pub fn dom0_iso(
    keel: &Path,
    keel_cmdline: &str,
    kernel: &Path,
    kernel_cmdline: &str,
    initrd: Option<&Path>,
    out: &Path,
) -> Result<(), String> {
    if [keel_cmdline, kernel_cmdline].iter().any(|c| c.contains(['\n', '\r'])) {
        return Err("command lines must be one line each".into());
    }
    let mut stage = out.as_os_str().to_owned();
    stage.push(".stage");
    let stage = PathBuf::from(stage);
    let _ = std::fs::remove_dir_all(&stage);
    let boot = stage.join("boot");
    let made = (|| {
        std::fs::create_dir_all(boot.join("grub")).map_err(|e| format!("cannot create {}: {e}", boot.display()))?;
        let copy = |from: &Path, name: &str| {
            std::fs::copy(from, boot.join(name)).map(drop).map_err(|e| format!("cannot copy {}: {e}", from.display()))
        };
        copy(keel, "keel.elf")?;
        copy(kernel, "vmlinuz")?;
        let mut modules = vec![format!("--nounzip /boot/vmlinuz {kernel_cmdline}").trim_end().to_string()];
        if let Some(initrd) = initrd {
            copy(initrd, "initrd.img")?;
            modules.push("--nounzip /boot/initrd.img".into());
        }
        let template = std::fs::read_to_string(template_path()).map_err(|e| format!("boot/grub.cfg.in: {e}"))?;
        std::fs::write(boot.join("grub/grub.cfg"), render_grub_cfg(&template, keel_cmdline, Some(&modules)))
            .map_err(|e| format!("cannot write grub.cfg: {e}"))?;
        mkrescue(&stage, out)
    })();
    let _ = std::fs::remove_dir_all(&stage);
    made
}

/// What a dom0 boot test boots: Keel's ELF (`KEEL_ELF`) with `keel_cmdline`, `kernel` as module 0 with
/// `kernel_cmdline`, `initrd` as module 1, on `smp` CPUs with 2 GiB, for at most `timeout` seconds; a run ended by
/// the QEMU defect is repeated up to `retries` times.
pub struct Dom0Boot<'a> {
    pub name: &'a str,
    pub keel_cmdline: &'a str,
    pub kernel: &'a Path,
    pub kernel_cmdline: &'a str,
    pub initrd: &'a Path,
    pub smp: u32,
    pub timeout: u64,
    pub retries: u32,
    /// More QEMU arguments (a machine type, devices).
    pub qemu_args: &'a [String],
}

impl Dom0Boot<'_> {
    /// Builds the ISO in the temporary directory, boots it under QEMU and returns the run; the ISO is removed
    /// afterwards.
    ///
    /// A run ended by the QEMU TCG nested-SVM defect (docs/testing.md, "A QEMU defect": a CPU fails to read page
    /// tables that map what it reads, in roughly one Linux boot in 25, more often in boots that build domUs) is
    /// repeated, up to `retries` times, with a warning and a `<name>.retried` note that `cargo xtask test` prints;
    /// the repeat is judged like any run.
    pub fn run(&self) -> crate::Run {
        let out = std::env::temp_dir().join(format!("keel-dom0-{}-{}.iso", std::process::id(), self.name));
        let keel = crate::env_path("KEEL_ELF");
        if let Err(e) = dom0_iso(&keel, self.keel_cmdline, self.kernel, self.kernel_cmdline, Some(self.initrd), &out) {
            panic!("{e}");
        }
        let qemu = || {
            let q = crate::Qemu::cdrom(&out).smp(self.smp).mem("2048M").timeout_secs(self.timeout).timed();
            self.qemu_args.iter().fold(q, |q, a| q.arg(a)).run()
        };
        let mut run = qemu();
        for _ in 0..self.retries {
            let Some(why) = run.emulator_defect() else { break };
            run.note_emulator_retry(&why);
            run = qemu();
        }
        let _ = std::fs::remove_file(&out);
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> String {
        std::fs::read_to_string(template_path()).unwrap()
    }

    #[test]
    fn template_modules_kept_or_replaced() {
        let kept = render_grub_cfg(&template(), "console=com1", None);
        assert!(kept.contains("multiboot2 /boot/keel.elf console=com1\n"));
        assert!(kept.contains("module2 --nounzip /boot/vmlinuz console=hvc0\n"));
        assert!(!kept.contains('@') && !kept.lines().any(|l| l.starts_with('#')));

        let none = render_grub_cfg(&template(), "x", Some(&[]));
        assert!(!none.contains("module2"));
        assert!(none.contains("    boot\n"));

        let mods =
            ["--nounzip /boot/spin.elf name=a vcpus=2".to_string(), "--nounzip /boot/spin.elf name=b".to_string()];
        let two = render_grub_cfg(&template(), "console=com1 xtf", Some(&mods));
        assert!(two.contains(
            "multiboot2 /boot/keel.elf console=com1 xtf\n    module2 --nounzip /boot/spin.elf name=a vcpus=2\n    \
             module2 --nounzip /boot/spin.elf name=b\n    boot\n"
        ));
        assert_eq!(two.matches("module2").count(), 2);
    }
}
