//! `cargo xtask two-hosts`: two Keel machines in QEMU (q35, dom0 owning the machine's devices), joined by a virtual
//! network cable (a socket netdev between their e1000e cards, which each dom0 bridges into xenbr0: 192.168.77.1
//! and 192.168.77.2) and sharing one disk image as each one's virtio-blk disk (`/dev/vda`, as a SAN's volume is
//! shared; `file.locking=off`), so that `xm migrate --live GUEST 192.168.77.2` moves a guest between them.
//!
//! Both dom0s get the same relocation settings, as a sysadmin would copy them: a key made here for the pair and
//! `xend-relocation-hosts-allow` naming the cable's network, in a small second initramfs archive after dom0's own
//! (Linux unpacks both). Host 1's serial console is this terminal (Ctrl-A X quits it); host 2's is a TCP port
//! (`telnet 127.0.0.1 PORT`, or `nc`), and QEMU for host 2 stops when host 1's does.

use crate::deps::QEMU;
use crate::qemu::{self, Accel};
use crate::util::{self, Context, Result};
use crate::{initramfs, kernel, ElfArg};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Each of the two machines.
    #[command(flatten)]
    pub machine: qemu::MachineArgs,
    /// The shared disk [default: target/two-hosts/shared.img, made on first use: 256 MiB with an ext4 filesystem].
    #[arg(long, value_name = "PATH")]
    pub disk: Option<PathBuf>,
    /// Keel's command line on both machines.
    #[arg(long, default_value = "console=com1 dom0-platform=host dom0_mem=512M")]
    pub cmdline: String,
    /// The TCP port of host 2's serial console.
    #[arg(long, default_value_t = 4556)]
    pub console_port: u16,
    #[command(flatten)]
    pub elf: ElfArg,
}

/// The relocation settings both hosts share (xend-config.sxp's syntax).
const XEND_CONFIG: &str = "(xend-relocation-server yes)\n(xend-relocation-port 8002)\n(xend-relocation-address '')\n\
(xend-relocation-hosts-allow '^localhost$ ^192\\\\.168\\\\.77\\\\.[0-9]+$')\n\
(xend-relocation-psk-file /etc/xen/relocation.psk)\n";

pub fn cmd(args: &Args) -> Result<()> {
    let dir = util::target_dir().join("two-hosts");
    std::fs::create_dir_all(&dir)?;
    let elf = args.elf.get()?;
    let k = kernel::ensure()?;
    // dom0 carries Debian's kernel for its guests (/usr/lib/keel/vmlinuz), as `xm create` of a PVH guest needs one.
    std::env::set_var("KEEL_DOMU", "1");
    let base = initramfs::build()?;
    let initrd = dir.join("initrd.img");
    let mut bytes = std::fs::read(&base).context(format!("cannot read {}", base.display()))?;
    bytes.extend(settings_archive(&dir)?);
    std::fs::write(&initrd, bytes)?;

    let disk = match &args.disk {
        Some(d) => std::path::absolute(d)?,
        None => dir.join("shared.img"),
    };
    if !disk.exists() {
        let f = std::fs::File::create(&disk).context(format!("cannot create {}", disk.display()))?;
        f.set_len(256 << 20)?;
        util::output(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk))?;
        eprintln!("two-hosts: made the shared disk {} (256 MiB, ext4)", util::show(&disk));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();

    let machine = |role: u32| -> Result<Command> {
        let iso = dir.join(format!("host{role}.iso"));
        let dom0 = format!("console=hvc0 keel.dom0.ip=192.168.77.{role}/24");
        keel_tests::iso::dom0_iso(&elf, &args.cmdline, &k.vmlinuz, &dom0, Some(&initrd), &iso)?;
        let mut cmd = qemu::machine(args.machine.accel, args.machine.cpus, &args.machine.mem);
        qemu::boot_cdrom(&mut cmd, &iso);
        let cable = if role == 1 { format!("listen=127.0.0.1:{port}") } else { format!("connect=127.0.0.1:{port}") };
        cmd.args(["-machine", "q35"])
            .arg("-drive")
            .arg(format!("file={},if=none,id=vd0,format=raw,file.locking=off", disk.display()))
            .args(["-device", "virtio-blk-pci,drive=vd0"])
            .args(["-netdev", &format!("socket,id=cable,{cable}")])
            .args(["-device", &format!("e1000e,netdev=cable,mac=52:54:00:77:00:0{role}")]);
        Ok(cmd)
    };
    let mut first = machine(1)?;
    first.args(["-serial", "mon:stdio"]);
    let mut second = machine(2)?;
    second
        .args(["-serial", &format!("mon:telnet:127.0.0.1:{},server=on,wait=off", args.console_port)])
        .args(["-monitor", "none"])
        .stdin(Stdio::null());
    eprintln!("two-hosts: host 1 (dom0 192.168.77.1) on this terminal: Ctrl-A X quits, Ctrl-A C is its monitor");
    eprintln!("two-hosts: host 2 (dom0 192.168.77.2): telnet 127.0.0.1 {}", args.console_port);
    eprintln!("two-hosts: shared disk {} is /dev/vda on both; e.g. in host 1's dom0:", util::show(&disk));
    eprintln!("    xm create /etc/xen/NAME   (disk = [ 'phy:/dev/vda,xvda,w' ], vif = [ 'bridge=xenbr0' ])");
    eprintln!("    xm migrate --live NAME 192.168.77.2");
    // Host 1 listens on the cable: it starts first, and host 2 connects to it.
    let mut one = first.spawn().context(format!("cannot start {QEMU}"))?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut two = second.spawn().context(format!("cannot start {QEMU}"))?;
    let status = one.wait()?;
    let _ = two.kill();
    let _ = two.wait();
    if status.success() {
        Ok(())
    } else {
        Err(format!("host 1's QEMU ended with {status}").into())
    }
}

/// A gzip'd cpio archive with /etc/xen/relocation.psk (a key made now, 64 hex digits) and /etc/xen/xend-config.sxp,
/// to follow dom0's initramfs: the same relocation settings on both hosts.
fn settings_archive(dir: &Path) -> Result<Vec<u8>> {
    let stage = dir.join("settings");
    util::remove_dir(&stage)?;
    std::fs::create_dir_all(stage.join("etc/xen"))?;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let psk = stage.join("etc/xen/relocation.psk");
    std::fs::write(&psk, format!("{hex}\n"))?;
    std::fs::set_permissions(&psk, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::write(stage.join("etc/xen/xend-config.sxp"), XEND_CONFIG)?;
    let out = dir.join("settings.cpio.gz");
    initramfs::pack(&stage, &out)?;
    util::remove_dir(&stage)?;
    Ok(std::fs::read(&out)?)
}

pub(crate) const BENCH_BEGIN: &str =
    "<!-- xtask-bench:two-hosts begin (written by `cargo xtask bench`; edits here are lost) -->";
pub(crate) const BENCH_END: &str = "<!-- xtask-bench:two-hosts end -->";
/// Keel's command line on both machines of the bench (and of the test, tests/tests/xl.rs).
const BENCH_KEEL_CMDLINE: &str = "console=com1 dom0_mem=512M dom0_max_vcpus=2 dom0-platform=host cpu0-guests=off";

/// One migration as `xm migrate` reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trip {
    pub total_ms: u64,
    pub downtime_ms: u64,
    /// MiB sent on the wire, tenths.
    pub wire_tenths: u64,
}

/// The trip in `xm migrate`'s last line (`Migrated domain … (12.3 MiB on the wire), total N ms, downtime N ms …`).
pub(crate) fn trip(line: &str) -> Option<Trip> {
    let line = line.split_once("Migrated domain ")?.1;
    let wire = line.split_once(" MiB on the wire")?.0.rsplit([' ', '(']).next()?;
    let (whole, tenth) = wire.split_once('.').unwrap_or((wire, "0"));
    Some(Trip {
        total_ms: crate::bench::number_after(line, "total ")?,
        downtime_ms: crate::bench::number_after(line, "downtime ")?,
        wire_tenths: whole.parse::<u64>().ok()? * 10 + tenth.get(..1)?.parse::<u64>().ok()?,
    })
}

/// `cargo xtask bench`'s two-host section: `runs` times, the test's scenario (xtask/assets/checks/twohost.sh: a
/// 128 MiB domU migrated live from host 1 to host 2 and back), each migration's total and downtime.
pub(crate) fn bench_section(elf: &Path, runs: usize) -> Result<String> {
    let dir = util::target_dir().join("two-hosts-bench");
    std::fs::create_dir_all(&dir)?;
    let k = kernel::ensure()?;
    std::env::set_var("KEEL_DOMU", "1");
    let initrd = initramfs::build()?;
    let mut trips: Vec<(Trip, Trip)> = Vec::new();
    for run in 1..=runs {
        let disk = dir.join("shared.img");
        std::fs::File::create(&disk)?.set_len(64 << 20)?;
        util::output(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut hosts = Vec::new();
        for role in 1..=2u32 {
            let iso = dir.join(format!("host{role}.iso"));
            let dom0 = format!(
                "console=hvc0 keel.init=checks keel.check.loop=1000 keel.checks=twohost keel.twohost={role} \
                 keel.dom0.ip=192.168.77.{role}/24"
            );
            keel_tests::iso::dom0_iso(elf, BENCH_KEEL_CMDLINE, &k.vmlinuz, &dom0, Some(&initrd), &iso)?;
            let mut cmd = qemu::machine(Accel::Tcg, 3, "2048M");
            qemu::boot_cdrom(&mut cmd, &iso);
            let cable =
                if role == 1 { format!("listen=127.0.0.1:{port}") } else { format!("connect=127.0.0.1:{port}") };
            cmd.args(["-machine", "q35", "-monitor", "none", "-serial", "stdio"])
                .arg("-drive")
                .arg(format!("file={},if=none,id=vd0,format=raw,file.locking=off", disk.display()))
                .args(["-device", "virtio-blk-pci,drive=vd0"])
                .args(["-netdev", &format!("socket,id=cable,{cable}")])
                .args(["-device", &format!("e1000e,netdev=cable,mac=52:54:00:77:00:0{role}")]);
            hosts.push(std::thread::spawn(move || crate::bench::timed_qemu(&cmd, 1500)));
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        let mut out = Vec::new();
        for h in hosts {
            let t = h.join().map_err(|_| "a host's thread panicked")??;
            let last = t.lines.iter().rev().find(|l| l.text.contains("KEEL-TWO-MIGRATE: ")).map(|l| l.text.clone());
            out.push(
                last.as_deref()
                    .and_then(trip)
                    .ok_or_else(|| format!("bench: two hosts, run {run}: no completed migration (last: {last:?})"))?,
            );
        }
        eprintln!("bench: two hosts, run {run}/{runs}: there {:?}, back {:?}", out[0], out[1]);
        trips.push((out[0], out[1]));
    }
    let cell = |f: &dyn Fn(&(Trip, Trip)) -> u64| {
        let mut v: Vec<u64> = trips.iter().map(f).collect();
        v.sort_unstable();
        format!("{} ({}-{})", v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let tenths = |t: u64| format!("{}.{}", t / 10, t % 10);
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    Ok(format!(
        "{BENCH_BEGIN}\n## Live migration between two hosts under QEMU TCG\n\n\
         Measured {date} by `cargo xtask bench` on {cpu} ({ncpu} host CPUs), {qemu}; kernel {kpkg} ({kver}) as dom0 \
         and as domU.\n\n\
         Two q35 machines at once (`-smp 3 -m 2048M` each, guests off CPU 0, `multiboot2 /boot/keel.elf {BENCH_KEEL_CMDLINE}`), \
         their e1000e cards joined by a QEMU socket netdev and bridged into each dom0's xenbr0, one disk image \
         shared as each one's virtio-blk disk; dom0 runs xtask/assets/checks/twohost.sh, as the test \
         `xl::guest_migrates_between_two_hosts` does: a 128 MiB, 1-vCPU PVH domU with its disk on the shared image \
         counts in a tight loop, writes to its disk and pings both dom0s, and is migrated live with \
         `xm migrate --live` to host 2 and back. Figures as `xm migrate` reports them (median (min-max) of {runs} \
         run{plural}); downtime runs from the suspend request to the guest running on the target. The seed's \
         figure is 512 MiB in 5-6 s over gigabit Ethernet on real machines; Xen 4.17 cannot be measured here (its \
         PV domUs have no log-dirty mode in Debian's build, docs/testing.md).\n\n\
         | | host 1 → host 2 | host 2 → host 1 |\n|---|---:|---:|\n\
         | total (ms) | {t1} | {t2} |\n| downtime (ms) | {d1} | {d2} |\n| MiB on the wire (last run) | {w1} | {w2} |\n\
         {BENCH_END}",
        date = date.trim(),
        cpu = crate::bench::cpu_model(),
        ncpu = crate::bench::host_cpus(),
        qemu = crate::deps::qemu_version_line()?,
        kpkg = k.package,
        kver = k.version,
        plural = if runs == 1 { "" } else { "s" },
        t1 = cell(&|t| t.0.total_ms),
        t2 = cell(&|t| t.1.total_ms),
        d1 = cell(&|t| t.0.downtime_ms),
        d2 = cell(&|t| t.1.downtime_ms),
        w1 = tenths(trips.last().map_or(0, |t| t.0.wire_tenths)),
        w2 = tenths(trips.last().map_or(0, |t| t.1.wire_tenths)),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn trips_follow_xm_migrate() {
        let line = "KEEL-TWO-MIGRATE: Migrated domain 1 (twohost) to 192.168.77.2:8002: 5 rounds, 34489 pages \
                    (134.7 MiB, 76.0 MiB on the wire), total 16962 ms, downtime 811 ms (suspend 83 ms, last round \
                    441 ms, hand-over 287 ms)";
        assert_eq!(super::trip(line), Some(super::Trip { total_ms: 16962, downtime_ms: 811, wire_tenths: 760 }));
        assert_eq!(super::trip("KEEL-TWO-MIGRATE: xm: 'migrate' failed: refused"), None);
    }
}
