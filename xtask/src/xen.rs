//! Debian's Xen 4.17, the reference `cargo xtask bench --vs-xen` measures Keel against, and the images both
//! sides boot.
//!
//! Cached under `target/xen/` (nothing is fetched when it is there): `root/` holds the unpacked packages
//! (`root/boot/xen-4.17-amd64.gz`, `root/usr/lib/xen-4.17/bin/xl`, …), `VERSION` their version.
//!
//! Built here, afresh each time (a few seconds):
//! - `target/xen-bench/hcbench`: xtask/assets/hcbench.c, `gcc -static`: null hypercalls through privcmd.
//! - `target/xen-bench/guest.cpio.gz`: the test initramfs plus `/bin/hcbench` and `/bin/toolbench`
//!   (xtask/assets/toolbench.sh: `xm`/`xl` list and info wall times in a control domain), one gzip stream
//!   (Xen's domain builder cannot inflate concatenated gzip members). Keel's dom0 and Xen's domU both boot it.
//! - `target/xen-bench/dom0.cpio.gz`: that initramfs plus Xen's tools (xl, xenstored, xenconsoled, xenconsole,
//!   xen-init-dom0 and every library `ldd` names), xtask/assets/xen-dom0-init.sh as `/xen-init` (run it with
//!   `rdinit=/xen-init`), and the domU's kernel, initramfs and `/etc/xen/domu.cfg`.
//! - `target/xl-initramfs.cpio.gz` ([`stock_tools_initramfs`], for `cargo xtask test`'s xl test): Keel's dom0
//!   initramfs plus Debian's unchanged `xl` and xenstore-utils' `xenstore-ls` (`/usr/lib/xen-4.17/bin/`), every
//!   library they load and glibc's loader, and an empty `/etc/xen/xl.conf`; not Xen's xenstored or xenconsoled:
//!   on Keel, dom0's own xenstored serves them; binutils' `readelf` as `/usr/bin/readelf` (the dump-core check
//!   reads core files with it). It also carries Debian's kernel as `/usr/lib/keel/vmlinuz`, which
//!   xtask/assets/checks/create.sh boots as a PVH domU with `xm create`, and the test guests dom0 starts as
//!   domUs ([`DOMU_GUESTS`]) in `/usr/lib/keel/guests/`.

use crate::util::{self, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The hypervisor and the tools its PV dom0 needs to create a domU (docs: shared testing.md).
pub const PACKAGES: &[&str] = &[
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "xen-utils-common",
    "libxenmisc4.17",
    "libxencall1",
    "libxendevicemodel1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenhypfs1",
    "libxenstore4",
    "libxentoollog1",
    "libxentoolcore1",
    "libyajl2",
    "xenstore-utils",
    // binutils' readelf (and the libraries it loads that a bare Debian may lack), for the xl test's dom0: the
    // dump-core check reads the core file with it (xtask/assets/checks/domu-dumpcore.sh).
    "binutils-x86-64-linux-gnu",
    "libbinutils",
    "libctf-nobfd0",
    // LVM's `lvm` for the xl test's dom0 (a `phy:` disk on a logical volume, xtask/assets/checks/domu-disk.sh), with
    // the libraries a bare Debian may lack.
    "lvm2",
    "libdevmapper1.02.1",
    "libdevmapper-event1.02.1",
    "libaio1",
    "libedit2",
    "libbsd0",
    "libmd0",
];
/// Where the packages put the hypervisor and the tools.
const HYPERVISOR: &str = "boot/xen-4.17-amd64.gz";
const TOOLS_DIR: &str = "usr/lib/xen-4.17/bin";
/// The tools `/xen-init` runs (and libxl-save-helper, which `xl save`, `restore` and `migrate` run).
const TOOLS: &[&str] = &["xl", "xenstored", "xenconsoled", "xenconsole", "xen-init-dom0", "libxl-save-helper"];
/// The stock tools run on Keel ([`stock_tools_initramfs`]): `(where the packages put it, its name in TOOLS_DIR)`.
/// xenstore-utils' `xenstore` is one program that acts by the name it is run as (`xenstore-ls` lists).
pub const STOCK_TOOLS: &[(&str, &str)] = &[("usr/lib/xen-4.17/bin/xl", "xl"), ("usr/bin/xenstore", "xenstore-ls")];
/// binutils' readelf: where its package puts it, where the xl test's dom0 has it.
pub const READELF: (&str, &str) = ("usr/bin/x86_64-linux-gnu-readelf", "usr/bin/readelf");
/// LVM's one binary (`lvm pvcreate ...`): `(where lvm2 puts it, where the xl test's dom0 has it)`.
pub const LVM: (&str, &str) = ("sbin/lvm", "sbin/lvm");
/// dom0 has no udev: LVM makes its device nodes itself and keeps no metadata backups.
const LVM_CONF: &str = "devices { obtain_device_list_from_udev = 0 }\n\
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\n\
backup { backup = 0 archive = 0 }\n";
/// Loaded by glibc at run time (xl's threads), so `ldd` does not name it.
const DLOPENED: &[&str] = &["/lib/x86_64-linux-gnu/libgcc_s.so.1"];
const DOM0_INIT: &str = include_str!("../assets/xen-dom0-init.sh");
/// `/bin/toolbench`: the toolstack's wall times in dom0 (Keel: xm, from S99keel's bench mode; Xen: xl, from
/// `/xen-init`).
const TOOLBENCH: &str = include_str!("../assets/toolbench.sh");

/// The unpacked packages.
pub struct Xen {
    pub root: PathBuf,
    /// `xen.gz`, as GRUB's `multiboot2` line takes it.
    pub hypervisor: PathBuf,
    pub version: String,
}

pub fn dir() -> PathBuf {
    util::target_dir().join("xen")
}

fn work_dir() -> PathBuf {
    util::target_dir().join("xen-bench")
}

pub fn cached() -> Option<Xen> {
    let dir = dir();
    let info = std::fs::read_to_string(dir.join("VERSION")).ok()?;
    let version = info.lines().find_map(|l| l.strip_prefix("version="))?.to_string();
    let root = dir.join("root");
    let xen = Xen { hypervisor: root.join(HYPERVISOR), root, version };
    let tools = TOOLS.iter().all(|t| xen.root.join(TOOLS_DIR).join(t).is_file());
    let stock = STOCK_TOOLS.iter().all(|(t, _)| xen.root.join(t).is_file());
    let readelf = xen.root.join(READELF.0).is_file();
    let lvm = xen.root.join(LVM.0).is_file();
    (xen.hypervisor.is_file() && tools && stock && readelf && lvm).then_some(xen)
}

/// Downloads (`apt-get download`) and unpacks (`dpkg -x`) the packages unless they are cached.
pub fn ensure() -> Result<Xen> {
    if let Some(x) = cached() {
        eprintln!("xen: cached {} ({})", x.version, util::show(&x.hypervisor));
        return Ok(x);
    }
    eprintln!("xen: fetching {}", PACKAGES.join(" "));
    // A scratch directory renamed at the end: a half-done fetch is never "cached".
    let work = util::target_dir().join("xen.partial");
    util::remove_dir(&work)?;
    let debs = work.join("debs");
    std::fs::create_dir_all(&debs).context(format!("cannot create {}", debs.display()))?;
    let mut download = Command::new("apt-get");
    if util::is_root() {
        // apt's `_apt` sandbox user cannot write into target/; as root it warns and goes on.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    util::run(download.arg("download").args(PACKAGES).current_dir(&debs))?;
    let mut version = None;
    for entry in std::fs::read_dir(&debs)? {
        let deb = entry?.path();
        util::run(Command::new("dpkg").arg("-x").arg(&deb).arg(work.join("root")))?;
        let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("xen-hypervisor-") {
            let v = util::output(Command::new("dpkg-deb").args(["--field", &deb.to_string_lossy(), "Version"]))?;
            version = Some(v.trim().to_string());
        }
    }
    let version = version.ok_or("apt-get download left no xen-hypervisor-*.deb")?;
    util::remove_dir(&debs)?;
    std::fs::write(work.join("VERSION"), format!("version={version}\n"))?;
    util::remove_dir(&dir())?;
    std::fs::rename(&work, dir()).context("cannot move target/xen.partial to target/xen")?;
    let x = cached().ok_or("target/xen incomplete after unpacking")?;
    eprintln!("xen: {} → {}", x.version, util::show(&x.hypervisor));
    Ok(x)
}

/// Compiles xtask/assets/hcbench.c into a static binary.
pub fn hcbench() -> Result<PathBuf> {
    let out = work_dir().join("hcbench");
    std::fs::create_dir_all(work_dir())?;
    let src = util::root().join("xtask/assets/hcbench.c");
    util::run(Command::new("gcc").args(["-static", "-O2", "-s", "-Wall", "-o"]).arg(&out).arg(&src))
        .map_err(|e| format!("{e}\n(hcbench needs gcc and libc6-dev for a static binary)"))?;
    Ok(out)
}

/// `base` (a gzip'd cpio) with the files under `stage` added, as one gzip stream in `out`.
fn extend_initramfs(base: &Path, stage: &Path, out: &Path) -> Result<()> {
    let script = "{ gzip -dc \"$1\" && find . | sort | cpio -o -H newc -R 0:0 --quiet; } | gzip -6n > \"$2\"";
    util::run(Command::new("sh").args(["-ec", script, "sh"]).arg(base).arg(out).current_dir(stage))
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to).context(format!("cannot copy {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Writes `/bin/toolbench` into `stage`.
fn stage_toolbench(stage: &Path) -> Result<()> {
    std::fs::create_dir_all(stage.join("bin"))?;
    std::fs::write(stage.join("bin/toolbench"), TOOLBENCH)?;
    std::fs::set_permissions(stage.join("bin/toolbench"), std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The guest initramfs: `base` plus `/bin/hcbench` and `/bin/toolbench`.
pub fn guest_initramfs(base: &Path, hcbench: &Path) -> Result<PathBuf> {
    let stage = work_dir().join("guest-root");
    util::remove_dir(&stage)?;
    copy_exec(hcbench, &stage.join("bin/hcbench"))?;
    stage_toolbench(&stage)?;
    let out = work_dir().join("guest.cpio.gz");
    extend_initramfs(base, &stage, &out)?;
    util::remove_dir(&stage)?;
    Ok(out)
}

/// The shared libraries `ldd` names for `binaries`, finding the packages' own under `root`.
fn libraries(root: &Path, binaries: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let lib_path = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
        .iter()
        .map(|d| root.join(d).to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let mut libs: Vec<PathBuf> = DLOPENED.iter().map(PathBuf::from).collect();
    for bin in binaries {
        let out = util::output(Command::new("ldd").arg(bin).env("LD_LIBRARY_PATH", &lib_path))?;
        for line in out.lines() {
            if line.contains("not found") {
                return Err(format!("ldd {}: {}", bin.display(), line.trim()).into());
            }
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.push(PathBuf::from(p));
            }
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// The images a Xen dom0 needs to start the domU.
pub struct Domu<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// `/etc/xen/domu.cfg`.
    pub config: &'a str,
}

/// Copies `tools` (`(path under the packages' root, name in TOOLS_DIR)`) into `stage`'s TOOLS_DIR with every
/// library they load: the loader where their PT_INTERP names it (`/lib64`), the rest in `/lib/x86_64-linux-gnu`;
/// and an empty `/etc/xen/xl.conf` (xl reads it, and complains on every call when it is missing).
fn stage_tools(xen: &Xen, tools: &[(&str, &str)], stage: &Path) -> Result<()> {
    let paths: Vec<PathBuf> = tools.iter().map(|(from, _)| xen.root.join(from)).collect();
    for (from, (_, name)) in paths.iter().zip(tools) {
        copy_exec(from, &stage.join(TOOLS_DIR).join(name))?;
    }
    stage_libraries(xen, &paths, stage)?;
    std::fs::create_dir_all(stage.join("etc/xen"))?;
    std::fs::write(stage.join("etc/xen/xl.conf"), "")?;
    Ok(())
}

/// Copies every library `binaries` load into `stage`: the loader where their PT_INTERP names it (`/lib64`), the
/// rest in `/lib/x86_64-linux-gnu`.
fn stage_libraries(xen: &Xen, binaries: &[PathBuf], stage: &Path) -> Result<()> {
    for lib in libraries(&xen.root, binaries)? {
        let name = lib.file_name().expect("a library file");
        let dest = if lib.starts_with("/lib64") { stage.join("lib64") } else { stage.join("lib/x86_64-linux-gnu") };
        copy_exec(&lib, &dest.join(name))?;
    }
    Ok(())
}

/// The dom0 initramfs: `base`, Xen's tools and libraries, `/xen-init`, `/bin/hcbench`, `/bin/toolbench`, and the
/// domU's kernel (`/domu/vmlinuz`), initramfs (`/domu/initrd.img`) and configuration (`/etc/xen/domu.cfg`).
pub fn dom0_initramfs(xen: &Xen, base: &Path, hcbench: &Path, domu: &Domu) -> Result<PathBuf> {
    let stage = work_dir().join("dom0-root");
    util::remove_dir(&stage)?;
    copy_exec(hcbench, &stage.join("bin/hcbench"))?;
    stage_toolbench(&stage)?;
    let tools: Vec<String> = TOOLS.iter().map(|t| format!("{TOOLS_DIR}/{t}")).collect();
    let tools: Vec<(&str, &str)> = tools.iter().map(String::as_str).zip(TOOLS.iter().copied()).collect();
    stage_tools(xen, &tools, &stage)?;
    copy_exec(domu.vmlinuz, &stage.join("domu/vmlinuz"))?;
    std::fs::copy(domu.initrd, stage.join("domu/initrd.img"))?;
    std::fs::write(stage.join("etc/xen/domu.cfg"), domu.config)?;
    std::fs::write(stage.join("xen-init"), DOM0_INIT)?;
    std::fs::set_permissions(stage.join("xen-init"), std::fs::Permissions::from_mode(0o755))?;
    let out = work_dir().join("dom0.cpio.gz");
    extend_initramfs(base, &stage, &out)?;
    util::remove_dir(&stage)?;
    Ok(out)
}

/// Test guests (tests/guests, ELFs in the directory [`crate::build::guests`] returns) that dom0 boots as domUs with
/// `xm create` in the xl test: `hostile_frontend` (xtask/assets/checks/domu-hostile.sh) and `hostile_netfront`
/// (xtask/assets/checks/domu-hostnet.sh).
pub const DOMU_GUESTS: &[&str] = &["hostile_frontend", "hostile_netfront"];

/// Keel's dom0 initramfs `base` plus Debian's stock `xl` and `xenstore-ls` ([`STOCK_TOOLS`]), readelf and LVM's
/// `lvm`, and their libraries, in `target/xl-initramfs.cpio.gz`: what the xl test (tests/tests/xl.rs) boots.
/// xtask/assets/checks/xl.sh runs the tools when they are there.
pub fn stock_tools_initramfs(xen: &Xen, base: &Path, domu_kernel: &Path, guests: &Path) -> Result<PathBuf> {
    let stage = util::target_dir().join("xl-initramfs-root");
    util::remove_dir(&stage)?;
    stage_tools(xen, STOCK_TOOLS, &stage)?;
    let readelf = xen.root.join(READELF.0);
    copy_exec(&readelf, &stage.join(READELF.1))?;
    let lvm = xen.root.join(LVM.0);
    copy_exec(&lvm, &stage.join(LVM.1))?;
    std::fs::create_dir_all(stage.join("etc/lvm"))?;
    std::fs::write(stage.join("etc/lvm/lvm.conf"), LVM_CONF)?;
    stage_libraries(xen, &[readelf, lvm], &stage)?;
    // The domU kernel of xtask/assets/checks/create.sh: this boot also has dom0 start Debian's kernel as a domU.
    copy_exec(domu_kernel, &stage.join("usr/lib/keel/vmlinuz"))?;
    for name in DOMU_GUESTS {
        copy_exec(&guests.join(name), &stage.join("usr/lib/keel/guests").join(name))?;
    }
    let out = util::target_dir().join("xl-initramfs.cpio.gz");
    extend_initramfs(base, &stage, &out)?;
    util::remove_dir(&stage)?;
    Ok(out)
}

/// `initrd` (a gzip'd cpio) plus Debian's kernel as `/usr/lib/keel/vmlinuz`, in `out`: a Keel dom0 initramfs whose
/// bench modes run `/bin/createbench xm pvh /usr/lib/keel/vmlinuz` (xtask/assets/keel-init).
pub fn with_domu_kernel(initrd: &Path, vmlinuz: &Path, out: &Path) -> Result<()> {
    let mut stage = out.as_os_str().to_owned();
    stage.push(".stage");
    let stage = PathBuf::from(stage);
    util::remove_dir(&stage)?;
    copy_exec(vmlinuz, &stage.join("usr/lib/keel/vmlinuz"))?;
    extend_initramfs(initrd, &stage, out)?;
    util::remove_dir(&stage)
}

/// `gzip -dc`'s output size: the uncompressed hypervisor image.
pub fn gunzipped_size(path: &Path) -> Result<u64> {
    let out = util::output(Command::new("sh").args(["-ec", "gzip -dc \"$1\" | wc -c", "sh"]).arg(path))?;
    out.trim().parse().map_err(|_| format!("cannot size the unpacked {}", path.display()).into())
}

/// `gzip -9`'s output size, to compare an uncompressed image with a gzip'd one.
pub fn gzipped_size(path: &Path) -> Result<u64> {
    let out = util::output(Command::new("sh").args(["-ec", "gzip -9c \"$1\" | wc -c", "sh"]).arg(path))?;
    out.trim().parse().map_err(|_| format!("cannot size the gzip'd {}", path.display()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dom0_script_runs_the_tools_it_is_given() {
        for tool in ["xenstored", "xen-init-dom0", "xenconsoled", "xl create -c /etc/xen/domu.cfg"] {
            assert!(DOM0_INIT.contains(tool), "{tool}");
        }
        // (libxl-save-helper is run by xl, not by the script.)
        assert!(TOOLS.iter().filter(|t| **t != "libxl-save-helper").all(|t| DOM0_INIT.contains(t)));
        assert!(DOM0_INIT.contains("/bin/toolbench xl"));
        assert!(DOM0_INIT.contains("/bin/createbench xl pv /domu/vmlinuz"));
    }

    /// Runs `script` with `sh` on this host (no Xen, no /usr/lib/xen-4.17): (exit status, stdout + stderr).
    fn run_here(script: &str) -> (bool, String) {
        let out = Command::new("sh").args(["-c", script]).output().expect("run sh");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// Xen's domU boots the same initramfs as Keel's dom0: outside a control domain toolbench runs nothing.
    #[test]
    fn toolbench_does_nothing_outside_a_control_domain() {
        assert!(!std::fs::read_to_string("/proc/xen/capabilities").is_ok_and(|c| c.contains("control_d")));
        assert_eq!(run_here(TOOLBENCH), (true, String::new()));
    }

    /// The same goes for createbench, which every dom0 initramfs carries.
    #[test]
    fn createbench_does_nothing_outside_a_control_domain() {
        assert_eq!(run_here(crate::initramfs::CREATEBENCH), (true, String::new()));
    }

    /// Every boot test's dom0 sources checks/xl.sh; only the xl test's initramfs has the stock tools.
    #[test]
    fn the_xl_checks_do_nothing_without_the_stock_tools() {
        assert!(!Path::new("/usr/lib/xen-4.17/bin/xl").exists());
        assert_eq!(run_here(include_str!("../assets/checks/xl.sh")), (true, String::new()));
    }
}
