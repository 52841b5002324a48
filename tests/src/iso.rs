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
