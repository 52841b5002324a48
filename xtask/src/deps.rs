//! `cargo xtask deps`: the host packages Keel's build and tests need, installed when missing.
//!
//! The check is cheap (a few `stat`s and two short QEMU runs), so every other command starts with it.
//! [`BOCHS_NEEDS`] is an optional group: only the Bochs runs (`cargo xtask test`'s last step, `tests/tests/bochs.rs`)
//! need it, so only they ask for it ([`ensure_bochs`], or `cargo xtask deps --bochs`).

use crate::elf;
use crate::util::{self, Result};
use std::path::Path;
use std::process::Command;

/// The QEMU whose TCG offers `svm` + `npt` to the guest (bookworm's 7.2 was never verified).
pub const QEMU: &str = "qemu-system-x86_64";
pub const MIN_QEMU_MAJOR: u32 = 8;

const BACKPORTS_SUITE: &str = "bookworm-backports";
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/keel-backports.sources";
const BACKPORTS_STANZA: &str = "Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// A Debian package and how to tell that what we need from it is there.
struct Need {
    package: &'static str,
    why: &'static str,
    check: fn() -> Result<(), String>,
}

const NEEDS: &[Need] = &[
    Need { package: "qemu-system-x86", why: "qemu-system-x86_64 >= 8 whose TCG offers svm and npt", check: check_qemu },
    Need {
        package: "grub-pc-bin",
        why: "GRUB's i386-pc modules for grub-mkrescue",
        check: || file_exists("/usr/lib/grub/i386-pc/multiboot2.mod"),
    },
    Need { package: "grub-common", why: "grub-mkrescue", check: || program("grub-mkrescue") },
    Need { package: "xorriso", why: "xorriso (ISO writer behind grub-mkrescue)", check: || program("xorriso") },
    Need { package: "mtools", why: "mformat (grub-mkrescue's EFI image)", check: || program("mformat") },
    Need { package: "busybox-static", why: "a static /bin/busybox for the test initramfs", check: check_busybox },
    Need { package: "cpio", why: "cpio to pack the initramfs", check: || program("cpio") },
];

/// What the Bochs runs need besides [`NEEDS`]: Bochs 2.7 with its BIOS, VGA BIOS and text-terminal display
/// (the Debian build has no `nogui` display), objcopy to take the debug info off the ELFs they boot (GRUB reads
/// only ~140 KB/s under Bochs), and kill. (`script` and `timeout` come with every Debian.)
const BOCHS_NEEDS: &[Need] = &[
    Need { package: "bochs", why: "the Bochs emulator", check: || program("bochs") },
    Need {
        package: "bochsbios",
        why: "Bochs's BIOS, /usr/share/bochs/BIOS-bochs-latest",
        check: || file_exists("/usr/share/bochs/BIOS-bochs-latest"),
    },
    Need {
        package: "vgabios",
        why: "/usr/share/vgabios/vgabios.bin",
        check: || file_exists("/usr/share/vgabios/vgabios.bin"),
    },
    Need {
        package: "bochs-term",
        why: "Bochs's text-terminal display (display_library: term)",
        check: check_bochs_term,
    },
    Need {
        package: "binutils",
        why: "objcopy (strips the debug info off the ELFs on Bochs ISOs)",
        check: || program("objcopy"),
    },
    Need { package: "procps", why: "kill (stops Bochs's process group once Keel is done)", check: || program("kill") },
];

/// The Rust targets the build needs besides the host's: the hypervisor and the test guests are
/// `x86_64-unknown-none`. rust-toolchain.toml lists it, but a rustup that does not auto-install (or a toolchain
/// directory laid down by hand) leaves it out, and the build then stops at "can't find crate for `core`".
const RUST_TARGETS: &[&str] = &[crate::build::HV_TARGET];

/// Adds each missing target in [`RUST_TARGETS`] to the toolchain `rustc` resolves to here, with rustup; without
/// rustup, says exactly what to install.
pub fn ensure_rust_targets() -> Result<()> {
    let out = Command::new("rustc").args(["--print", "sysroot"]).current_dir(util::root()).output()?;
    let sysroot = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let missing: Vec<&str> =
        RUST_TARGETS.iter().copied().filter(|t| !sysroot.join("lib/rustlib").join(t).join("lib").is_dir()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let toolchain = sysroot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !util::have_program("rustup") {
        return Err(format!(
            "the Rust standard library for {} is missing from {} and there is no rustup to add it: install it \
             (rustup target add {})",
            missing.join(", "),
            sysroot.display(),
            missing.join(" ")
        )
        .into());
    }
    eprintln!("deps: adding the Rust target(s) {} to toolchain {toolchain}", missing.join(", "));
    util::run(Command::new("rustup").args(["target", "add", "--toolchain", &toolchain]).args(&missing))
}

/// The package names of a group, for messages.
fn names(needs: &[Need]) -> String {
    needs.iter().map(|n| n.package).collect::<Vec<_>>().join(", ")
}

fn program(name: &str) -> Result<(), String> {
    if util::have_program(name) {
        Ok(())
    } else {
        Err(format!("`{name}` not found in PATH"))
    }
}

fn file_exists(path: &str) -> Result<(), String> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(format!("{path} is missing"))
    }
}

/// The term display plugin, wherever the multiarch plugin directory is.
fn check_bochs_term() -> Result<(), String> {
    let dirs = ["/usr/lib/x86_64-linux-gnu/bochs/plugins", "/usr/lib/bochs/plugins", "/usr/lib64/bochs/plugins"];
    let found = dirs.iter().any(|d| {
        std::fs::read_dir(d)
            .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libbx_term_gui.so")))
            .unwrap_or(false)
    });
    if found {
        Ok(())
    } else {
        Err(format!("no libbx_term_gui.so in {}", dirs.join(" or ")))
    }
}

fn check_busybox() -> Result<(), String> {
    file_exists("/bin/busybox")?;
    match elf::is_static(Path::new("/bin/busybox")) {
        Ok(true) => Ok(()),
        Ok(false) => Err("/bin/busybox is dynamically linked (package `busybox`)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `QEMU emulator version 10.0.2 (Debian ...)` → (10, 0).
pub fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The first line of `qemu-system-x86_64 --version`.
pub fn qemu_version_line() -> Result<String> {
    let out = util::output(Command::new(QEMU).arg("--version"))?;
    Ok(out.lines().next().unwrap_or_default().trim().to_string())
}

fn check_qemu() -> Result<(), String> {
    program(QEMU)?;
    let line = qemu_version_line().map_err(|e| e.to_string())?;
    let (major, minor) =
        parse_qemu_version(&line).ok_or_else(|| format!("cannot read QEMU's version from {line:?}"))?;
    if major < MIN_QEMU_MAJOR {
        return Err(format!("QEMU {major}.{minor} is too old (need >= {MIN_QEMU_MAJOR}, for SVM+NPT under TCG)"));
    }
    // The CPUID flags QEMU knows are listed after "Recognized CPUID flags:".
    let help = util::output(Command::new(QEMU).args(["-cpu", "help"])).map_err(|e| e.to_string())?;
    let flags: Vec<&str> = help.split("CPUID flags:").nth(1).unwrap_or_default().split_whitespace().collect();
    for flag in ["svm", "npt"] {
        if !flags.contains(&flag) {
            return Err(format!("{QEMU} -cpu help does not list the `{flag}` flag"));
        }
    }
    Ok(())
}

/// `ID` and `VERSION_CODENAME` from /etc/os-release.
fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (field("ID"), field("VERSION_CODENAME"))
}

fn backports_configured() -> bool {
    let mut files = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources")),
        );
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains(BACKPORTS_SUITE))
    })
}

/// The packages of `group` whose check fails, each reported.
fn missing(group: &[Need]) -> Vec<&Need> {
    group
        .iter()
        .filter(|n| match (n.check)() {
            Ok(()) => false,
            Err(why) => {
                eprintln!("deps: {} missing: {why} (needed: {})", n.package, n.why);
                true
            }
        })
        .collect()
}

/// Checks every package Keel's build and QEMU tests need; installs what is missing when root, else prints the
/// commands and fails.
pub fn ensure() -> Result<()> {
    install(NEEDS)
}

/// The same for the optional Bochs group ([`BOCHS_NEEDS`]), which only the Bochs runs need.
pub fn ensure_bochs() -> Result<()> {
    install(BOCHS_NEEDS)
}

fn install(group: &[Need]) -> Result<()> {
    let missing = missing(group);
    if missing.is_empty() {
        return Ok(());
    }

    let (id, codename) = os_release();
    let bookworm = id == "debian" && codename == "bookworm";
    let qemu_missing = missing.iter().any(|n| n.package == "qemu-system-x86");
    let plain: Vec<&str> =
        missing.iter().map(|n| n.package).filter(|p| !(bookworm && *p == "qemu-system-x86")).collect();

    let mut commands: Vec<Vec<String>> = vec![vec!["apt-get".into(), "update".into()]];
    let install = |extra: &[&str]| -> Vec<String> {
        ["apt-get", "install", "-y"].iter().chain(extra).map(|s| s.to_string()).collect()
    };
    if !plain.is_empty() {
        commands.push(install(&plain));
    }
    if bookworm && qemu_missing {
        commands.push(install(&["-t", BACKPORTS_SUITE, "qemu-system-x86"]));
    }
    let add_backports = bookworm && qemu_missing && !backports_configured();

    if !util::is_root() {
        eprintln!("deps: not root; run these as root, then retry:");
        if add_backports {
            eprintln!("  printf '%s' '{BACKPORTS_STANZA}' > {BACKPORTS_SOURCE}");
        }
        for c in &commands {
            eprintln!("  {}", c.join(" "));
        }
        return Err("missing host packages".into());
    }

    if add_backports {
        eprintln!("deps: adding {BACKPORTS_SUITE} as {BACKPORTS_SOURCE}");
        std::fs::write(BACKPORTS_SOURCE, BACKPORTS_STANZA)
            .map_err(|e| format!("cannot write {BACKPORTS_SOURCE}: {e}"))?;
    }
    for c in &commands {
        util::run(Command::new(&c[0]).args(&c[1..]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    let still: Vec<String> =
        group.iter().filter_map(|n| (n.check)().err().map(|e| format!("{}: {e}", n.package))).collect();
    if still.is_empty() {
        eprintln!("deps: all host packages present ({})", names(group));
        Ok(())
    } else {
        Err(format!("still missing after apt-get: {}", still.join("; ")).into())
    }
}

#[derive(clap::Args, Clone, Default)]
pub struct Args {
    /// Also check (and, as root, install) the optional group the Bochs runs need: bochs, bochsbios, vgabios,
    /// bochs-term, binutils, procps.
    #[arg(long)]
    pub bochs: bool,
}

/// `cargo xtask deps`: [`ensure`] plus a report of what is there; the Bochs group is installed with `--bochs`,
/// otherwise only reported.
pub fn cmd(args: &Args) -> Result<()> {
    ensure()?;
    println!("deps: {}", qemu_version_line()?);
    println!("deps: ok ({})", names(NEEDS));
    if args.bochs {
        ensure_bochs()?;
        println!("deps: Bochs group ok ({})", names(BOCHS_NEEDS));
    } else {
        let lacking: Vec<&str> = BOCHS_NEEDS.iter().filter(|n| (n.check)().is_err()).map(|n| n.package).collect();
        if lacking.is_empty() {
            println!("deps: Bochs group ok ({})", names(BOCHS_NEEDS));
        } else {
            println!(
                "deps: Bochs group (optional, for the Bochs runs) lacks {}: `cargo xtask deps --bochs` installs it",
                lacking.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions() {
        assert_eq!(
            parse_qemu_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some((10, 0))
        );
        assert_eq!(parse_qemu_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u7)"), Some((7, 2)));
        assert_eq!(parse_qemu_version("something else"), None);
    }
}
