//! `cargo xtask initramfs`: dom0's system, a small busybox initramfs, `target/initramfs.cpio.gz`.
//!
//! Contents: busybox-static's `/bin/busybox` with a symlink for every applet; `/init` (xtask/assets/init.sh:
//! mounts, prints `KEEL-INIT: busybox init reached`, hands over to busybox init); `/etc/inittab` (a root shell on
//! the console) and `/etc/init.d/rcS`, which starts each `/etc/init.d/S??*` in order (Buildroot's convention):
//! `S20hostdevices` (when dom0 owns the machine's devices: their drivers, the guest-image disk, the network card),
//! `S30xencommons` (the Xen drivers, xenfs on /proc/xen, xenstored) and `S99keel` (the test and benchmark modes
//! chosen with `keel.init=` on dom0's command line), with `/etc/keel/checks.d/*.sh` (xtask/assets/checks/: the
//! checks of `keel.init=checks`, one file per area); `/bin/createbench` (xtask/assets/createbench.sh, the `create`
//! timings of `cargo xtask bench`); dom0's static programs (`xm`, `xenstored`, `xenstore` and
//! its `xenstore-*` names); `/etc/xen`, `/var/lib/xen`, `/var/log/xen`; `/dev/console` when we may create device
//! nodes; and — when `cargo xtask kernel` has fetched the kernel — the Xen driver modules, as
//! `/lib/modules/<name>.ko`.

use crate::util::{self, Context, Result};
use crate::{build, kernel};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("../assets/init.sh");
/// `/etc/...` files: (path, contents, executable).
const ETC: &[(&str, &str, bool)] = &[
    ("etc/inittab", include_str!("../assets/inittab"), false),
    ("etc/init.d/rcS", include_str!("../assets/rcS"), true),
    ("etc/init.d/rcK", include_str!("../assets/rcK"), true),
    ("etc/init.d/S20hostdevices", include_str!("../assets/host-devices"), true),
    ("etc/init.d/S30xencommons", include_str!("../assets/xencommons"), true),
    ("etc/init.d/S99keel", include_str!("../assets/keel-init"), true),
    ("etc/xen/example-pvh", include_str!("../../dom0-tools/config/example-pvh"), false),
    ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n", false),
    // The relocation server's settings (keel-relocd).
    ("etc/xen/xend-config.sxp", include_str!("../assets/xend-config.sxp"), false),
    // The hotplug scripts xm runs for guests' disks and vifs, and dom0's bridge (xtask/assets/xen-scripts/).
    ("etc/xen/scripts/xen-hotplug-common.sh", include_str!("../assets/xen-scripts/xen-hotplug-common.sh"), false),
    ("etc/xen/scripts/block", include_str!("../assets/xen-scripts/block"), true),
    ("etc/xen/scripts/vif-bridge", include_str!("../assets/xen-scripts/vif-bridge"), true),
    ("etc/xen/scripts/network-bridge", include_str!("../assets/xen-scripts/network-bridge"), true),
];
/// `/bin/createbench`: the toolstack's `create` → domU init and create/destroy cycle times in dom0 (S99keel's
/// `keel.init=bench` and `keel.init=createbench`; Xen's `/xen-init` for `cargo xtask bench --vs-xen`).
pub const CREATEBENCH: &str = include_str!("../assets/createbench.sh");
/// `/bin/devbench`: a domU's disk and network against dom0's own (run by createbench).
pub const DEVBENCH: &str = include_str!("../assets/devbench.sh");
/// `/bin/savebench`: save, restore and localhost live migration of a domU, idle and busy (run by createbench).
pub const SAVEBENCH: &str = include_str!("../assets/savebench.sh");
/// The names the `xenstore` program answers to, as xenstore-utils installs them.
const XENSTORE_NAMES: &[&str] = &["read", "write", "rm", "exists", "list", "ls", "watch", "chmod"];
/// The modules S30xencommons loads, in dependency order (xenfs needs xen-privcmd, bridge stp and llc): the Xen
/// drivers and backends, loop devices for disk images, the bridge for guests' networks.
pub const XEN_MODULES: &[&str] = &[
    "xen-evtchn",
    "xen-privcmd",
    "xenfs",
    "xen-gntdev",
    "xen-gntalloc",
    "xen-blkback",
    "xen-netback",
    "loop",
    "llc",
    "stp",
    "bridge",
    // device-mapper, for LVM volumes as `phy:` disks.
    "dm-mod",
];
/// The modules dom0 carries for its domUs' initrds (in /usr/lib/keel/domu-modules/, in load order): the
/// frontends, and ext4 (which also mounts ext2) with what it needs.
pub const DOMU_MODULES: &[&str] =
    &["xen-blkfront", "xen-netfront", "crc16", "mbcache", "jbd2", "crc32c_generic", "ext4"];

/// The drivers of the machine's own devices dom0 loads when it owns them (`dom0-platform=host`; in
/// /usr/lib/keel/host-modules/, in load order): AHCI and SCSI disks, virtio over PCI (disk and network), Intel's
/// e1000 and e1000e NICs, with what they need.
pub const HOST_DEVICE_MODULES: &[&str] = &[
    "scsi_common",
    "scsi_mod",
    "libata",
    "libahci",
    "ahci",
    "crct10dif_common",
    "crct10dif_generic",
    "crc-t10dif",
    "crc64",
    "crc64-rocksoft",
    "t10-pi",
    "sd_mod",
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "e1000",
    "e1000e",
];

pub fn path() -> PathBuf {
    util::target_dir().join("initramfs.cpio.gz")
}

/// Builds the initramfs (always afresh: it takes well under a second) and returns its path.
pub fn build() -> Result<PathBuf> {
    let stage = util::target_dir().join("initramfs-root");
    util::remove_dir(&stage)?;
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "etc/init.d",
        "etc/xen",
        "etc/xen/scripts",
        "var/lib/xen",
        "var/log/xen",
        "lib/modules",
    ] {
        std::fs::create_dir_all(stage.join(dir))?;
    }
    symlink("../run", stage.join("var/run")).context("cannot link /var/run")?;

    std::fs::copy(BUSYBOX, stage.join("bin/busybox")).context(format!("cannot copy {BUSYBOX}"))?;
    let applets = util::output(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let link = stage.join(applet);
        if applet == "bin/busybox" || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        symlink(BUSYBOX, &link).context(format!("cannot link {}", link.display()))?;
    }

    let init = stage.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    for (path, text, exec) in ETC {
        let f = stage.join(path);
        std::fs::write(&f, text)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(if *exec { 0o755 } else { 0o644 }))?;
    }
    for (name, text) in [("bin/createbench", CREATEBENCH), ("bin/devbench", DEVBENCH), ("bin/savebench", SAVEBENCH)] {
        std::fs::write(stage.join(name), text)?;
        std::fs::set_permissions(stage.join(name), std::fs::Permissions::from_mode(0o755))?;
    }

    // The checks of `keel.init=checks`, one file per area, sourced by S99keel in name order.
    let checks = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/checks");
    let checks_d = stage.join("etc/keel/checks.d");
    std::fs::create_dir_all(&checks_d)?;
    for entry in std::fs::read_dir(&checks).context(format!("cannot read {}", checks.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sh") {
            std::fs::copy(&path, checks_d.join(path.file_name().unwrap_or_default()))?;
        }
    }

    let programs = build::dom0_static()?;
    for (name, dir) in build::DOM0_PROGRAMS {
        let src = programs.join(name);
        std::fs::copy(&src, stage.join(dir).join(name)).context(format!("cannot copy {}", src.display()))?;
    }
    for n in XENSTORE_NAMES {
        symlink("xenstore", stage.join(format!("usr/bin/xenstore-{n}")))?;
    }

    // The kernel opens /dev/console before /init runs; creating the node needs root,
    // and /init reopens the console after mounting devtmpfs when it is absent.
    if util::is_root() {
        util::run(Command::new("mknod").args(["-m", "600"]).arg(stage.join("dev/console")).args(["c", "5", "1"]))?;
    }

    let modules = copy_modules(XEN_MODULES, &stage.join("lib/modules"))?;
    std::fs::create_dir_all(stage.join("usr/lib/keel/domu-modules"))?;
    copy_modules(DOMU_MODULES, &stage.join("usr/lib/keel/domu-modules"))?;
    std::fs::write(stage.join("usr/lib/keel/domu-modules/order"), DOMU_MODULES.join("\n") + "\n")?;
    std::fs::create_dir_all(stage.join("usr/lib/keel/host-modules"))?;
    copy_modules(HOST_DEVICE_MODULES, &stage.join("usr/lib/keel/host-modules"))?;
    std::fs::write(stage.join("usr/lib/keel/host-modules/order"), HOST_DEVICE_MODULES.join("\n") + "\n")?;

    // Optional (`KEEL_DOMU=1`): Debian's kernel once more, as `/usr/lib/keel/vmlinuz`, for the check that `xm create`
    // boots it as a domU (xtask/assets/checks/create.sh). Off by default: it adds 8 MB to every dom0 boot.
    if std::env::var_os("KEEL_DOMU").is_some_and(|v| v == "1") {
        if let Some(k) = kernel::cached() {
            std::fs::create_dir_all(stage.join("usr/lib/keel"))?;
            std::fs::copy(&k.vmlinuz, stage.join("usr/lib/keel/vmlinuz"))
                .context(format!("cannot copy {}", k.vmlinuz.display()))?;
        }
    }

    let out = path();
    pack(&stage, &out)?;
    eprintln!(
        "initramfs: {} ({}; {} Xen modules)",
        util::show(&out),
        util::human_size(util::file_size(&out)?),
        modules
    );
    Ok(out)
}

/// Copies the modules `names` of the fetched kernel, if any, into `dest`; returns how many.
fn copy_modules(names: &[&str], dest: &Path) -> Result<usize> {
    let Some(k) = kernel::cached() else {
        eprintln!("initramfs: no kernel fetched yet (`cargo xtask kernel`); no Xen modules");
        return Ok(0);
    };
    let mut found = Vec::new();
    find_files(&k.modules.join("kernel"), &mut found)?;
    let mut copied = 0;
    for name in names {
        let file = format!("{name}.ko");
        match found.iter().find(|p| p.file_name().is_some_and(|n| *n == *file)) {
            Some(src) => {
                std::fs::copy(src, dest.join(&file)).context(format!("cannot copy {}", src.display()))?;
                copied += 1;
            }
            None => eprintln!("initramfs: {file} not found in {}", util::show(&k.modules)),
        }
    }
    Ok(copied)
}

fn find_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).context(format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            find_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// `find . | sort | cpio -o -H newc --reproducible -R 0:0 | gzip -9n > out`.
pub(crate) fn pack(stage: &Path, out: &Path) -> Result<()> {
    let mut entries = Vec::new();
    collect(stage, Path::new("."), &mut entries)?;
    entries.sort();
    // Same inputs, same bytes: every entry gets the same mtime (cpio --reproducible and gzip -n
    // take care of inode numbers and the gzip header).
    util::output(Command::new("touch").args(["-h", "-d", "@0", "--"]).args(&entries).current_dir(stage))?;
    let list: String = entries.iter().map(|e| format!("{e}\n")).collect();

    let file = std::fs::File::create(out).context(format!("cannot create {}", out.display()))?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--reproducible", "-R", "0:0", "--quiet"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cpio")?;
    let mut gzip = Command::new("gzip")
        .args(["-9", "-n"])
        .stdin(cpio.stdout.take().expect("piped"))
        .stdout(file)
        .spawn()
        .context("cannot start gzip")?;
    {
        use std::io::Write;
        let mut stdin = cpio.stdin.take().expect("piped");
        stdin.write_all(list.as_bytes())?;
    }
    let cpio_status = cpio.wait()?;
    let gzip_status = gzip.wait()?;
    if !cpio_status.success() || !gzip_status.success() {
        return Err(format!("packing the initramfs failed (cpio: {cpio_status}, gzip: {gzip_status})").into());
    }
    Ok(())
}

/// Every path under `dir`, as `./relative` names for cpio.
fn collect(base: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
    out.push(rel.to_string_lossy().into_owned());
    let full = base.join(rel);
    if full.is_symlink() || !full.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(&full)? {
        collect(base, &rel.join(entry?.file_name()), out)?;
    }
    Ok(())
}

pub fn cmd() -> Result<()> {
    let out = build()?;
    println!("initramfs: {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::BUSYBOX;
    use std::path::Path;
    use std::process::Command;

    /// dom0's init sources every checks file into one shell: a syntax error busybox's ash finds (ash is stricter
    /// than bash, e.g. about function names) would end the checks and hang a boot test until its timeout.
    #[test]
    fn dom0_scripts_parse_in_busybox_ash() {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut scripts = vec![
            assets.join("keel-init"),
            assets.join("init.sh"),
            assets.join("xencommons"),
            assets.join("createbench.sh"),
            assets.join("devbench.sh"),
            assets.join("savebench.sh"),
            assets.join("xen-dom0-init.sh"),
        ];
        for entry in std::fs::read_dir(assets.join("xen-scripts")).expect("assets/xen-scripts") {
            scripts.push(entry.expect("a directory entry").path());
        }
        for entry in std::fs::read_dir(assets.join("checks")).expect("assets/checks") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "sh") {
                scripts.push(path);
            }
        }
        for script in scripts {
            let out = Command::new(BUSYBOX).args(["sh", "-n"]).arg(&script).output().expect("busybox-static's busybox");
            assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
        }
    }
}
