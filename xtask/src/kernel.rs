//! `cargo xtask kernel`: Debian's stock amd64 kernel, the guest Keel must boot unmodified.
//!
//! Result (cached; nothing is fetched when it is all there):
//! - `target/debian/vmlinuz`             the bzImage (`/boot/vmlinuz-<kver>` of the package)
//! - `target/debian/config`              its build configuration
//! - `target/debian/modules/<kver>/`     its modules (`/lib/modules/<kver>`)
//! - `target/debian/VERSION`             `package=`, `version=`, `kernel=` lines

use crate::util::{self, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The meta-package whose dependency names the current ABI's image package.
const META: &str = "linux-image-amd64";

/// The cached kernel.
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `target/debian/modules/<kver>`.
    pub modules: PathBuf,
    pub package: String,
    pub version: String,
}

pub fn dir() -> PathBuf {
    util::target_dir().join("debian")
}

/// The kernel if it is already cached.
pub fn cached() -> Option<Kernel> {
    let dir = dir();
    let info = std::fs::read_to_string(dir.join("VERSION")).ok()?;
    let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')).map(str::to_string);
    let kernel = Kernel {
        vmlinuz: dir.join("vmlinuz"),
        modules: dir.join("modules").join(field("kernel")?),
        package: field("package")?,
        version: field("version")?,
    };
    (kernel.vmlinuz.is_file() && kernel.modules.is_dir()).then_some(kernel)
}

/// The exact image package `linux-image-amd64` depends on, from `apt-cache depends` output.
pub fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| is_image_package(p))
        .map(str::to_string)
}

/// `linux-image-6.1.0-56-amd64` and the like: one flavour, no wildcard, no `-unsigned`/`-dbg`.
fn is_image_package(name: &str) -> bool {
    let Some(abi) = name.strip_prefix("linux-image-").and_then(|r| r.strip_suffix("-amd64")) else {
        return false;
    };
    abi.starts_with(|c: char| c.is_ascii_digit()) && abi.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-')
}

fn resolve_package() -> Result<String> {
    let depends =
        || util::output(Command::new("apt-cache").args(["depends", META])).ok().and_then(|out| parse_depends(&out));
    if let Some(p) = depends() {
        return Ok(p);
    }
    eprintln!("kernel: apt-cache knows no {META}; updating the package lists");
    if !util::is_root() {
        return Err(format!("apt-cache cannot resolve {META}; run `apt-get update` as root, then retry").into());
    }
    util::run(Command::new("apt-get").arg("update"))?;
    depends().ok_or_else(|| format!("`apt-cache depends {META}` names no linux-image-*-amd64").into())
}

/// Downloads and unpacks the kernel unless it is cached.
pub fn ensure() -> Result<Kernel> {
    if let Some(k) = cached() {
        eprintln!("kernel: cached {} {} ({})", k.package, k.version, util::show(&k.vmlinuz));
        return Ok(k);
    }
    let package = resolve_package()?;
    eprintln!("kernel: fetching {package}");

    // Work in a scratch directory and rename it at the end: a half-done fetch is never "cached".
    let final_dir = dir();
    let work = util::target_dir().join("debian.partial");
    util::remove_dir(&work)?;
    std::fs::create_dir_all(&work).context(format!("cannot create {}", work.display()))?;
    let mut download = Command::new("apt-get");
    if util::is_root() {
        // apt's `_apt` sandbox user cannot write into target/; as root it warns and goes on.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    util::run(download.args(["download", &package]).current_dir(&work))?;
    let deb = find_deb(&work, &package)?;
    let version =
        util::output(Command::new("dpkg-deb").args(["--field", &deb.to_string_lossy(), "Version"]))?.trim().to_string();
    let unpacked = work.join("root");
    util::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;

    let vmlinuz_src = find_one(&unpacked.join("boot"), "vmlinuz-")?;
    let kver = vmlinuz_src
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or("odd vmlinuz file name")?
        .to_string();
    // Debian ships /lib/modules (bookworm) or /usr/lib/modules (merged-/usr packages).
    let modules_src = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| unpacked.join(d).join(&kver))
        .find(|p| p.is_dir())
        .ok_or_else(|| format!("{package} has no modules directory for {kver}"))?;

    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).context(format!("cannot move {} to {}", from.display(), to.display()))
    };
    rename(&vmlinuz_src, &work.join("vmlinuz"))?;
    let config = unpacked.join("boot").join(format!("config-{kver}"));
    if config.is_file() {
        rename(&config, &work.join("config"))?;
    }
    std::fs::create_dir_all(work.join("modules"))?;
    rename(&modules_src, &work.join("modules").join(&kver))?;
    util::remove_dir(&unpacked)?;
    std::fs::remove_file(&deb).context(format!("cannot remove {}", deb.display()))?;
    std::fs::write(work.join("VERSION"), format!("package={package}\nversion={version}\nkernel={kver}\n"))?;

    util::remove_dir(&final_dir)?;
    rename(&work, &final_dir)?;
    let k = cached().ok_or("kernel cache incomplete after unpacking")?;
    eprintln!(
        "kernel: {} {} → {} ({})",
        k.package,
        k.version,
        util::show(&k.vmlinuz),
        util::human_size(util::file_size(&k.vmlinuz)?)
    );
    Ok(k)
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix))
        })
        .ok_or_else(|| format!("apt-get download left no {prefix}*.deb in {}", dir.display()).into())
}

/// The single file in `dir` whose name starts with `prefix`.
fn find_one(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .context(format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("expected one {prefix}* in {}, found {}", dir.display(), found.len()).into()),
    }
}

/// `cargo xtask kernel`.
pub fn cmd() -> Result<()> {
    let k = ensure()?;
    println!("package: {}", k.package);
    println!("version: {}", k.version);
    println!("vmlinuz: {}", k.vmlinuz.display());
    println!("modules: {}", k.modules.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_image_package_from_apt_cache_depends() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(parse_depends(out).as_deref(), Some("linux-image-6.1.0-56-amd64"));
        let two = "linux-image-amd64\n  Depends: <linux-image-6.1.0-9-amd64-unsigned>\n  Depends: linux-image-6.1.0-9-amd64\n";
        assert_eq!(parse_depends(two).as_deref(), Some("linux-image-6.1.0-9-amd64"));
        assert_eq!(parse_depends("E: No packages found"), None);
    }

    #[test]
    fn rejects_globs_and_other_flavours() {
        assert!(!is_image_package("linux-image-*-amd64"));
        assert!(!is_image_package("linux-image-6.1.0-56-cloud-amd64"));
        assert!(!is_image_package("linux-image-6.1.0-56-amd64-dbg"));
        assert!(is_image_package("linux-image-6.12.9-amd64"));
    }
}
