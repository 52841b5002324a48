//! `cargo xtask bench --vs-xen`: Keel side by side with Debian's Xen 4.17 under the same QEMU.
//!
//! Both sides boot a GRUB ISO on the same machine (`-accel tcg -cpu qemu64,+svm,+npt -smp 2 -m 2048M`) with
//! Debian's stock kernel and the same busybox initramfs (plus `/bin/hcbench`), run alternately (Keel, Xen,
//! Keel, …). The measured guest boots with `keel.init=bench`: it times null hypercalls (`xen_version` through
//! privcmd's hypercall ioctl) and powers off.
//! - Keel: the guest is dom0 (PVH), as Keel boots it; dom0 then times `xm create` of the same kernel as a PVH
//!   domU (xtask/assets/createbench.sh; its initramfs carries the kernel as `/usr/lib/keel/vmlinuz`).
//! - Xen: a PV dom0 (`rdinit=/xen-init`, xtask/assets/xen-dom0-init.sh) brings up xenstored, xen-init-dom0 and
//!   xenconsoled, times `xl create` of the same kernel and domU initrd as a **PV** domU (createbench; Xen 4.17's
//!   PVH domU does not boot under TCG here), then `xl create -c` starts the same kernel and initramfs as a PVH
//!   domU with its console on dom0's, and powers the machine off when the domU has gone.
//!
//! Every serial line is timestamped on the host as it arrives; one run failing (or a whole side) is reported
//! and the other side's figures are still printed. The table goes to a marked section of docs/benchmarks.md.

use crate::bench::{self, Args};
use crate::qemu::{self, Accel};
use crate::util::{self, Result};
use crate::{deps, elf, initramfs, kernel, xen};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CPUS: u32 = 2;
const MEM: &str = "2048M";
/// Both guests get 512 MiB and 2 vCPUs.
const GUEST_MEM_MIB: u32 = 512;
/// With `cpu0-guests=off`, the QEMU TCG defect's workaround (docs/testing.md): it keeps every vCPU, dom0's too, off
/// CPU 0, so Keel's guests get one CPU where Xen's get two. Without it the defect ended both Keel runs of
/// 2026-12-04 15:45 before their domU figures (rows 5 and 6).
const KEEL_CMDLINE: &str = "console=com1 dom0_mem=768M dom0_max_vcpus=2 cpu0-guests=off dom0-platform=virtual";
/// The shared testing notes' recipe, with dom0 held to the same 512 MiB and 2 vCPUs.
const XEN_CMDLINE: &str = "console=com1 com1=115200,8n1 dom0_mem=768M,max:768M dom0_max_vcpus=2 loglvl=all";
const GUEST_CMDLINE: &str = "console=hvc0 keel.init=bench keel.bench.calls=20000";
const XEN_DOM0_CMDLINE: &str = "console=hvc0 rdinit=/xen-init";
/// Long enough for createbench's domU boot and cycles too (xtask/assets/createbench.sh waits up to 300 s).
const KEEL_TIMEOUT_SECS: u32 = 1200;
const XEN_TIMEOUT_SECS: u32 = 1500;
const BEGIN: &str = "<!-- xtask-bench:vs-xen begin (written by `cargo xtask bench --vs-xen`; edits here are lost) -->";
const END: &str = "<!-- xtask-bench:vs-xen end -->";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Keel,
    Xen,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Keel => "Keel",
            Side::Xen => "Xen",
        }
    }
}

/// One run's milestones (host time from spawning QEMU) and figures.
#[derive(Debug, Default, Clone)]
struct Marks {
    /// The hypervisor's first line: `(KEEL) Keel v…` / `(XEN) Xen version …`.
    hv_first: Option<Duration>,
    /// The dom0 kernel's first `Linux version` line (on Keel, dom0 is the measured guest).
    dom0_first: Option<Duration>,
    /// Xen: dom0's `/xen-init` has started (`XEN-DOM0: init reached`), and brought the toolstack up.
    dom0_init: Option<Duration>,
    toolstack: Option<Duration>,
    /// Xen: how the domU ended, from xl's log (`Domain 1 has shut down, reason code 0 0x0`).
    domu_end: Option<String>,
    /// Xen: from the VMCB dump of a domU that stopped before its init.
    domu_vmcb: String,
    /// The measured guest is started: Keel's `dom0: … kernel entry …` line; Xen: `XEN-DOM0: xl create`.
    guest_start: Option<Duration>,
    /// The measured guest's first `Linux version` line.
    guest_first: Option<Duration>,
    /// `KEEL-INIT: busybox init reached` in the measured guest.
    init: Option<Duration>,
    /// The measured guest's hcbench figures, and (Xen) the PV dom0's.
    guest_hc: Hc,
    dom0_hc: Hc,
    /// The guest's first `KEEL-BENCH: hypercall failed: …`.
    hypercall_failure: Option<String>,
    /// RAM the hypervisor keeps for itself, in MiB (see [`Marks::see`]).
    kept_mib: Option<u64>,
    /// Keel: `Memory: <n> MiB usable, …`, and `Memory: <n> MiB free after start-up`.
    usable_mib: Option<u64>,
    free_mib: Option<u64>,
    /// dom0's toolstack (`/bin/toolbench`): `list` and `info` wall times per run, µs (Keel: xm; Xen: xl).
    tool_list_us: Option<u64>,
    tool_info_us: Option<u64>,
    /// dom0's `/bin/createbench`: `xm create` (Keel, PVH domU) or `xl create` (Xen, PV domU) → the domU's init,
    /// and create/destroy cycles.
    create: bench::CreateFigs,
    /// The hypervisor's power-off line (`(KEEL) Powering off`, `(XEN) Entering ACPI S5 state`); without it QEMU
    /// (`-no-reboot`) ended on a reset or triple fault.
    powered_off: bool,
    last_line: String,
    exit: Duration,
}

/// ns per call from `/bin/hcbench` (xtask/assets/hcbench.c).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Hc {
    /// xen_version through privcmd's hypercall ioctl.
    privcmd: Option<u64>,
    /// A `/sys/hypervisor/version/major` read (the kernel issues xen_version) less a `/sys/hypervisor/type` read.
    sysfs: Option<u64>,
    /// `getppid`.
    syscall: Option<u64>,
}

/// The number after `key` (up to the next space) in `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    bench::number_after(line, key)
}

impl Marks {
    fn see(&mut self, side: Side, line: &str, t: Duration) {
        let first = |slot: &mut Option<Duration>| {
            if slot.is_none() {
                *slot = Some(t);
            }
        };
        if line.contains("(KEEL) Keel v") || line.contains("(XEN) Xen version") {
            first(&mut self.hv_first);
        }
        if line.contains("Linux version") {
            first(&mut self.dom0_first);
            // On Xen the measured guest is the domU, started after `xl create`.
            if side == Side::Keel || self.guest_start.is_some() {
                first(&mut self.guest_first);
            }
        }
        if line.contains("(KEEL) dom0: ") && line.contains(" kernel entry ") {
            first(&mut self.guest_start);
        }
        if line.contains("XEN-DOM0: init reached") {
            first(&mut self.dom0_init);
        }
        if let Some((_, msg)) = line.split_once("XEN-DOM0: domU shut down, ") {
            self.domu_end = Some(msg.trim().to_string());
        }
        // The VMCB dump of a domU that never reached its init: where it stopped.
        if self.domu_end.is_some() && self.init.is_none() {
            for key in ["exitcode = ", "RIP = ", "RFLAGS="] {
                if let Some((_, v)) = line.split_once(key) {
                    let v = v.split_whitespace().next().unwrap_or_default();
                    self.domu_vmcb.push_str(&format!("{} {v}; ", key.trim_end_matches([' ', '=']).trim()));
                }
            }
        }
        if line.contains("XEN-DOM0: toolstack up") {
            first(&mut self.toolstack);
        }
        if line.contains("XEN-DOM0: xl create") {
            first(&mut self.guest_start);
        }
        if line.contains("KEEL-INIT: busybox init reached") {
            first(&mut self.init);
        }
        // On Xen, hcbench runs in the PV dom0 first, then in the domU.
        let in_guest = side == Side::Keel || self.guest_start.is_some();
        let hc = if in_guest { &mut self.guest_hc } else { &mut self.dom0_hc };
        if line.contains("KEEL-BENCH: hypercall via=privcmd ") {
            hc.privcmd = field(line, " ns=");
        }
        if line.contains("KEEL-BENCH: hypercall via=sysfs ") && !line.contains(" ns=-") {
            hc.sysfs = field(line, " ns=");
        }
        if line.contains("KEEL-BENCH: syscall ") {
            hc.syscall = field(line, " ns=");
        }
        if let Some((_, why)) = line.split_once("KEEL-BENCH: hypercall failed: ").filter(|_| in_guest) {
            self.hypercall_failure.get_or_insert_with(|| why.trim().to_string());
        }
        // Keel: RAM not free once the hypervisor has started, before dom0 is built (the GRUB modules included).
        if line.contains("(KEEL) Memory: ") && line.contains(" MiB usable") {
            self.usable_mib = field(line, "(KEEL) Memory: ");
        }
        if line.contains("(KEEL) Memory: ") && line.contains(" MiB free after start-up") {
            self.free_mib = field(line, "(KEEL) Memory: ");
        }
        // A figure counts only when the command succeeded.
        if line.contains("KEEL-BENCH: toolstack ") && line.contains(" status=0") {
            if line.contains(" cmd=list ") {
                self.tool_list_us = field(line, " us=");
            }
            if line.contains(" cmd=info ") {
                self.tool_info_us = field(line, " us=");
            }
        }
        self.create.see(line);
        if line.contains("(KEEL) Powering off") || line.contains("(XEN) Entering ACPI S5 state") {
            self.powered_off = true;
        }
        if !line.trim().is_empty() {
            self.last_line = line.trim().to_string();
        }
        if let (Some(u), Some(f)) = (self.usable_mib, self.free_mib) {
            self.kept_mib = u.checked_sub(f);
        }
        // Xen: `xl info`'s total_memory less free_memory less dom0's allocation, before the domU exists.
        if line.contains("XEN-DOM0: memory ") {
            if let (Some(t), Some(f), Some(d)) = (field(line, "total="), field(line, "free="), field(line, "dom0=")) {
                self.kept_mib = t.checked_sub(f + d);
            }
        }
    }

    /// Whether dom0 got as far as running its benchmarks (Keel: dom0 is the guest and reached its init; Xen: the
    /// PV dom0's toolstack came up).
    fn dom0_init_seen(&self, side: Side) -> bool {
        match side {
            Side::Keel => self.init.is_some(),
            Side::Xen => self.toolstack.is_some(),
        }
    }

    /// What a run must have shown to count.
    fn problem(&self) -> Option<String> {
        let missing = [
            (self.hv_first.is_none(), "no first hypervisor line"),
            (self.guest_first.is_none(), "no `Linux version` line from the measured guest"),
            (self.init.is_none(), "no `KEEL-INIT: busybox init reached` line from the measured guest"),
        ];
        missing.iter().find(|(absent, _)| *absent).map(|(_, what)| what.to_string())
    }
}

/// One run: its marks, or why it failed (with the serial log's tail on stderr).
struct Run {
    marks: Marks,
    failure: Option<String>,
}

fn boot(side: Side, iso: &Path, n: usize) -> Result<Run> {
    let mut qemu_cmd = qemu::machine(Accel::Tcg, CPUS, MEM);
    qemu::boot_cdrom(&mut qemu_cmd, iso);
    qemu_cmd.args(["-serial", "stdio", "-monitor", "none"]);
    let timeout = if side == Side::Keel { KEEL_TIMEOUT_SECS } else { XEN_TIMEOUT_SECS };
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &timeout.to_string()]).arg(qemu_cmd.get_program()).args(qemu_cmd.get_args());
    let t = keel_tests::run_timed(&mut cmd).map_err(|e| format!("cannot start {}: {e}", util::describe(&cmd)))?;
    let mut marks = Marks { exit: t.elapsed, ..Marks::default() };
    for l in &t.lines {
        marks.see(side, &l.text, l.at);
    }
    let failure = if !t.status.success() {
        Some(format!("QEMU ended with {} (124: timed out after {timeout} s)", t.status))
    } else {
        marks.problem()
    };
    // Every run's serial log, timestamped, for a look afterwards.
    let log = util::target_dir().join(format!("xen-bench/{}-{n}.log", side.name().to_lowercase()));
    let all: String = t.lines.iter().map(|l| format!("{:9.3} {}\n", l.at.as_secs_f64(), l.text)).collect();
    let _ = std::fs::write(&log, all);
    if let Some(f) = &failure {
        let tail: String = t.lines.iter().rev().take(40).rev().map(|l| format!("  | {}\n", l.text)).collect();
        eprintln!("bench: {} run failed: {f}\n  last serial lines:\n{tail}", side.name());
        eprintln!("bench: whole log in {}", util::show(&log));
    }
    Ok(Run { marks, failure })
}

/// The images one side boots, or why they could not be made.
struct Prepared {
    iso: PathBuf,
    /// The hypervisor image as booted, and unpacked.
    image: u64,
    image_unpacked: u64,
    image_note: String,
}

fn prepare_keel(args: &Args, vmlinuz: &Path, guest_initrd: &Path) -> Result<Prepared> {
    let elf = args.elf.get()?;
    // The guest initramfs plus the kernel as `/usr/lib/keel/vmlinuz`, which dom0's createbench boots as a domU.
    let initrd = util::target_dir().join("xen-bench/keel-dom0.cpio.gz");
    xen::with_domu_kernel(guest_initrd, vmlinuz, &initrd)?;
    let iso = util::target_dir().join("xen-bench/keel.iso");
    keel_tests::iso::dom0_iso(&elf, KEEL_CMDLINE, vmlinuz, GUEST_CMDLINE, Some(&initrd), &iso)?;
    // GRUB loads the ELF as it is; what it loads is the loadable segments. Gzip'd, for comparison with xen.gz.
    let stripped = util::target_dir().join("xen-bench/keel.stripped");
    keel_tests::iso::strip_debug(&elf, &stripped)?;
    let (load_file, load_mem) = elf::load_sizes(&elf)?;
    Ok(Prepared {
        iso,
        image: xen::gzipped_size(&stripped)?,
        image_unpacked: util::file_size(&stripped)?,
        image_note: format!(
            "`keel` without debug info, gzip -9 / as booted (loadable segments {load_file} bytes in the file, \
             {load_mem} in memory)"
        ),
    })
}

fn prepare_xen(vmlinuz: &Path, base: &Path, hcbench: &Path, guest_initrd: &Path) -> Result<Prepared> {
    let x = xen::ensure()?;
    let domu_cfg = format!(
        "name = \"bench\"\ntype = \"pvh\"\nkernel = \"/domu/vmlinuz\"\nramdisk = \"/domu/initrd.img\"\n\
         extra = \"{GUEST_CMDLINE}\"\nmemory = {GUEST_MEM_MIB}\nvcpus = {CPUS}\n\
         on_poweroff = \"preserve\"\non_reboot = \"preserve\"\non_crash = \"preserve\"\n"
    );
    let domu = xen::Domu { vmlinuz, initrd: guest_initrd, config: &domu_cfg };
    let dom0_initrd = xen::dom0_initramfs(&x, base, hcbench, &domu)?;
    let iso = util::target_dir().join("xen-bench/xen.iso");
    keel_tests::iso::dom0_iso(&x.hypervisor, XEN_CMDLINE, vmlinuz, XEN_DOM0_CMDLINE, Some(&dom0_initrd), &iso)?;
    Ok(Prepared {
        iso,
        image: util::file_size(&x.hypervisor)?,
        image_unpacked: xen::gunzipped_size(&x.hypervisor)?,
        image_note: format!("`xen-4.17-amd64.gz` ({}), as booted / gunzipped", x.version),
    })
}

/// `median (min–max)` of the runs that have the figure, `n of m` when some lack it.
fn cell(values: &[Option<f64>], unit: &str, digits: usize) -> (String, Option<f64>) {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return ("n/a".into(), None);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    let mut s = format!("{median:.digits$}{unit} ({:.digits$}–{:.digits$})", v[0], v[n - 1]);
    if n < values.len() {
        s.push_str(&format!(", {n} of {} runs", values.len()));
    }
    (s, Some(median))
}

fn ratio(keel: Option<f64>, xen: Option<f64>) -> String {
    match (keel, xen) {
        (Some(k), Some(x)) if x > 0.0 => format!("{:.2}", k / x),
        _ => "n/a".into(),
    }
}

type Pick = fn(&Marks) -> Option<f64>;

fn secs_between(from: Option<Duration>, to: Option<Duration>) -> Option<f64> {
    Some(to?.checked_sub(from?)?.as_secs_f64())
}

/// The table's timed rows: label, unit, digits, Keel's pick, Xen's pick, a note on what each side measures.
fn rows() -> Vec<(&'static str, &'static str, usize, Pick, Pick)> {
    fn s(d: Option<Duration>) -> Option<f64> {
        d.map(|d| d.as_secs_f64())
    }
    vec![
        (
            "1. Guest boot: first guest kernel line (`Linux version`) → init marker",
            " s",
            2,
            |m| secs_between(m.guest_first, m.init),
            |m| secs_between(m.guest_first, m.init),
        ),
        (
            "1. Guest boot: guest started → init marker (Keel: `dom0: … kernel entry`; Xen: `xl create` issued)",
            " s",
            2,
            |m| secs_between(m.guest_start, m.init),
            |m| secs_between(m.guest_start, m.init),
        ),
        (
            "2. Null hypercall, kernel side: a `/sys/hypervisor/version/major` read (the kernel issues \
             `xen_version`) less a `/sys/hypervisor/type` read, ns per call",
            " ns",
            0,
            |m| m.guest_hc.sysfs.map(|n| n as f64),
            |m| m.guest_hc.sysfs.map(|n| n as f64),
        ),
        (
            "2. Null hypercall through privcmd's `IOCTL_PRIVCMD_HYPERCALL` in the guest, ns per call",
            " ns",
            0,
            |m| m.guest_hc.privcmd.map(|n| n as f64),
            |m| m.guest_hc.privcmd.map(|n| n as f64),
        ),
        (
            "2. (reference) `getppid` system call in the guest, ns per call",
            " ns",
            0,
            |m| m.guest_hc.syscall.map(|n| n as f64),
            |m| m.guest_hc.syscall.map(|n| n as f64),
        ),
        (
            "2. (reference) null hypercall in dom0, kernel side as above (Keel: the PVH dom0 above; Xen: its PV \
             dom0), ns per call",
            " ns",
            0,
            |m| m.guest_hc.sysfs.map(|n| n as f64),
            |m| m.dom0_hc.sysfs.map(|n| n as f64),
        ),
        (
            "2. (reference) null hypercall in dom0 through privcmd (Keel: the PVH dom0 above; Xen: its PV dom0), \
             ns per call",
            " ns",
            0,
            |m| m.guest_hc.privcmd.map(|n| n as f64),
            |m| m.dom0_hc.privcmd.map(|n| n as f64),
        ),
        (
            "2. Toolstack in dom0: `xm list` (Keel) against `xl list` (Xen), ms per run (20 runs back to back)",
            " ms",
            0,
            |m| m.tool_list_us.map(|n| n as f64 / 1000.0),
            |m| m.tool_list_us.map(|n| n as f64 / 1000.0),
        ),
        (
            "2. Toolstack in dom0: `xm info` (Keel) against `xl info` (Xen), ms per run (20 runs back to back)",
            " ms",
            0,
            |m| m.tool_info_us.map(|n| n as f64 / 1000.0),
            |m| m.tool_info_us.map(|n| n as f64 / 1000.0),
        ),
        ("3. Whole boot: QEMU start → hypervisor's first line", " s", 2, |m| s(m.hv_first), |m| s(m.hv_first)),
        (
            "3. Whole boot: QEMU start → dom0 kernel's first line (on Keel dom0 is the guest)",
            " s",
            2,
            |m| s(m.dom0_first),
            |m| s(m.dom0_first),
        ),
        (
            "3. Whole boot: QEMU start → dom0 init (Keel: the guest's init marker; Xen: PV dom0's `/xen-init`)",
            " s",
            2,
            |m| s(m.init),
            |m| s(m.dom0_init),
        ),
        (
            "3. (reference) dom0 boot: dom0's first `Linux version` → dom0 init (Keel: PVH; Xen: PV)",
            " s",
            2,
            |m| secs_between(m.guest_first, m.init),
            |m| secs_between(m.dom0_first, m.dom0_init),
        ),
        ("3. Whole boot: QEMU start → Xen dom0 toolstack up", " s", 2, |_| None, |m| s(m.toolstack)),
        (
            "3. Whole boot: QEMU start → measured guest's first line (Xen: the domU's)",
            " s",
            2,
            |m| s(m.guest_first),
            |m| s(m.guest_first),
        ),
        ("3. Whole boot: QEMU start → guest init marker", " s", 2, |m| s(m.init), |m| s(m.init)),
        (
            "3. Whole boot: QEMU start → QEMU exited",
            " s",
            2,
            |m| Some(m.exit.as_secs_f64()),
            |m| Some(m.exit.as_secs_f64()),
        ),
        (
            "4. RAM the hypervisor keeps, MiB (Keel: usable − free after start-up; Xen: total − free − dom0)",
            " MiB",
            0,
            |m| m.kept_mib.map(|n| n as f64),
            |m| m.kept_mib.map(|n| n as f64),
        ),
    ]
}

/// The domain-creation rows (dom0's `/bin/createbench`), after the image sizes.
fn create_rows() -> Vec<(&'static str, &'static str, usize, Pick, Pick)> {
    vec![
        (
            "5. Domain creation: `create` issued → the domU's `KEEL-DOMU: init reached` in its console log (Keel: \
             `xm create`, PVH domU; Xen: `xl create`, PV domU)",
            " s",
            2,
            |m| m.create.init_ms.map(|n| n as f64 / 1000.0),
            |m| m.create.init_ms.map(|n| n as f64 / 1000.0),
        ),
        (
            "5. Domain creation: the `create` command itself (returns once the domain is built and unpaused)",
            " s",
            2,
            |m| m.create.cmd_ms.map(|n| n as f64 / 1000.0),
            |m| m.create.cmd_ms.map(|n| n as f64 / 1000.0),
        ),
        (
            "5. Domain creation: `destroy` of the booted domU",
            " ms",
            0,
            |m| m.create.destroy_ms.map(|n| n as f64),
            |m| m.create.destroy_ms.map(|n| n as f64),
        ),
        (
            "5. Create/destroy cycle (`create`, then `destroy` at once), per cycle",
            " s",
            2,
            |m| m.create.cycle_ms.map(|n| n as f64 / 1000.0),
            |m| m.create.cycle_ms.map(|n| n as f64 / 1000.0),
        ),
        (
            "5. Create/destroy cycle: its `destroy`",
            " ms",
            0,
            |m| m.create.cycle_destroy_ms.map(|n| n as f64),
            |m| m.create.cycle_destroy_ms.map(|n| n as f64),
        ),
    ]
}

fn table(keel: &[Run], xen: &[Run], keel_img: Option<&Prepared>, xen_img: Option<&Prepared>) -> String {
    // Every run counts for the figures it has; a cell says when some runs lack its figure.
    let ok = |runs: &[Run]| runs.iter().map(|r| r.marks.clone()).collect::<Vec<_>>();
    let (k, x) = (ok(keel), ok(xen));
    let mut t = String::from(
        "| Measure | Keel median (min–max) | Xen 4.17 median (min–max) | Keel/Xen |\n|---|---:|---:|---:|\n",
    );
    for (label, unit, digits, pick_k, pick_x) in rows() {
        let (kc, km) = cell(&k.iter().map(pick_k).collect::<Vec<_>>(), unit, digits);
        let (xc, xm) = cell(&x.iter().map(pick_x).collect::<Vec<_>>(), unit, digits);
        let _ = writeln!(t, "| {label} | {kc} | {xc} | {} |", ratio(km, xm));
    }
    let size = |p: Option<&Prepared>, f: fn(&Prepared) -> u64| p.map(|p| f(p) as f64);
    let kb = |v: Option<f64>| v.map_or("n/a".into(), |b| format!("{:.0} KiB", b / 1024.0));
    for (label, f) in [
        ("4. Hypervisor image, compressed (gzip)", (|p: &Prepared| p.image) as fn(&Prepared) -> u64),
        ("4. Hypervisor image, uncompressed", |p: &Prepared| p.image_unpacked),
    ] {
        let (ks, xs) = (size(keel_img, f), size(xen_img, f));
        let _ = writeln!(t, "| {label} | {} | {} | {} |", kb(ks), kb(xs), ratio(ks, xs));
    }
    for (label, unit, digits, pick_k, pick_x) in create_rows() {
        let (kc, km) = cell(&k.iter().map(pick_k).collect::<Vec<_>>(), unit, digits);
        let (xc, xm) = cell(&x.iter().map(pick_x).collect::<Vec<_>>(), unit, digits);
        let _ = writeln!(t, "| {label} | {kc} | {xc} | {} |", ratio(km, xm));
    }
    // The split devices (xtask/assets/devbench.sh): Keel's PVH domU against Xen's PV domU.
    for (label, unit, pick) in bench::DEV_ROWS {
        let dev = |runs: &[Marks]| runs.iter().map(|m| m.create.dev.map(|d| pick(d) as f64)).collect::<Vec<_>>();
        let (kc, km) = cell(&dev(&k), unit, 0);
        let (xc, xm) = cell(&dev(&x), unit, 0);
        let _ = writeln!(t, "| 6. Split devices: {label} | {kc} | {xc} | {} |", ratio(km, xm));
    }
    // Save, restore and localhost live migration (xtask/assets/savebench.sh): Keel's xm and keel-relocd against
    // Xen's xl save/restore/migrate, each with its own domU type.
    for (i, kind) in bench::SAVE_KINDS.iter().enumerate() {
        for (label, pick) in bench::SAVE_ROWS {
            let f = |runs: &[Marks]| {
                runs.iter().map(|m| m.create.save[i].and_then(pick).map(|v| v as f64 / 1000.0)).collect::<Vec<_>>()
            };
            let (kc, km) = cell(&f(&k), " s", 2);
            let (xc, xm) = cell(&f(&x), " s", 2);
            let _ = writeln!(t, "| 7. 256 MiB domU, {kind}: {label} | {kc} | {xc} | {} |", ratio(km, xm));
        }
    }
    t
}

/// The domU types createbench reported (`type=pvh`), or that it reported none.
fn guest_types(runs: &[Run]) -> String {
    let mut types: Vec<&str> = runs.iter().filter_map(|r| r.marks.create.guest_type.as_deref()).collect();
    types.sort_unstable();
    types.dedup();
    if types.is_empty() {
        "no run reported its type".into()
    } else {
        format!("`type={}` as reported", types.join("`, `type="))
    }
}

fn failures(side: Side, runs: &[Run]) -> String {
    let mut s = String::new();
    for (i, r) in runs.iter().enumerate() {
        if let Some(f) = &r.failure {
            let _ = writeln!(s, "- {} run {}: failed: {f}", side.name(), i + 1);
        }
        if let Some(end) = r.marks.domu_end.as_ref().filter(|_| r.failure.is_some()) {
            let _ = writeln!(s, "- {} run {}: domU {end}; its VMCB: {}", side.name(), i + 1, r.marks.domu_vmcb.trim());
        }
        if let Some(h) = &r.marks.hypercall_failure {
            let _ = writeln!(s, "- {} run {}: hypercall program: {h}", side.name(), i + 1);
        }
        for f in &r.marks.create.failures {
            let _ = writeln!(s, "- {} run {}: createbench {f}", side.name(), i + 1);
        }
        if !r.marks.create.complete() && r.marks.create.failures.is_empty() && r.marks.dom0_init_seen(side) {
            let _ = writeln!(s, "- {} run {}: createbench: no create/cycle figures", side.name(), i + 1);
        }
        if !r.marks.powered_off && r.marks.hv_first.is_some() {
            let _ = writeln!(
                s,
                "- {} run {}: the machine stopped without the hypervisor's power-off line (QEMU runs with \
                 `-no-reboot`: a reset or triple fault), after `{}`",
                side.name(),
                i + 1,
                r.marks.last_line.replace('`', "'")
            );
        }
    }
    s
}

pub fn cmd(args: &Args) -> Result<()> {
    let started = std::time::Instant::now();
    let runs = args.vs_xen_runs.max(1);
    let k = kernel::ensure()?;
    let base = initramfs::build()?;
    let hcbench = xen::hcbench()?;
    let guest_initrd = xen::guest_initramfs(&base, &hcbench)?;

    let keel_img = prepare_keel(args, &k.vmlinuz, &guest_initrd).map_err(|e| eprintln!("bench: Keel: {e}")).ok();
    let xen_img = match prepare_xen(&k.vmlinuz, &base, &hcbench, &guest_initrd) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("bench: Xen side cannot run: {e}");
            None
        }
    };
    let mut side_errors = String::new();
    for (side, img) in [(Side::Keel, &keel_img), (Side::Xen, &xen_img)] {
        if img.is_none() {
            let _ = writeln!(side_errors, "- {}: images could not be built (see the command's output)", side.name());
        }
    }

    let (mut keel_runs, mut xen_runs) = (Vec::new(), Vec::new());
    for i in 1..=runs {
        for (side, img, out) in [(Side::Keel, &keel_img, &mut keel_runs), (Side::Xen, &xen_img, &mut xen_runs)] {
            let Some(img) = img else { continue };
            let run = boot(side, &img.iso, i).unwrap_or_else(|e| Run { marks: Marks::default(), failure: Some(e.msg) });
            let m = &run.marks;
            let secs = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()));
            eprintln!(
                "bench: {} run {i}/{runs}: hv {} s, dom0 Linux {} s, guest start {} s, guest Linux {} s, init {} s, \
                 exit {:.2} s, hypercall (sysfs) {} ns, (privcmd) {} ns, syscall {} ns, kept {} MiB, create → domU \
                 init {} ms, create/destroy cycle {} ms{}",
                side.name(),
                secs(m.hv_first),
                secs(m.dom0_first),
                secs(m.guest_start),
                secs(m.guest_first),
                secs(m.init),
                m.exit.as_secs_f64(),
                m.guest_hc.sysfs.map_or("-".into(), |n| n.to_string()),
                m.guest_hc.privcmd.map_or("-".into(), |n| n.to_string()),
                m.guest_hc.syscall.map_or("-".into(), |n| n.to_string()),
                m.kept_mib.map_or("-".into(), |n| n.to_string()),
                m.create.init_ms.map_or("-".into(), |n| n.to_string()),
                m.create.cycle_ms.map_or("-".into(), |n| n.to_string()),
                run.failure.as_ref().map_or(String::new(), |f| format!(" — FAILED: {f}")),
            );
            out.push(run);
        }
    }

    let table = table(&keel_runs, &xen_runs, keel_img.as_ref(), xen_img.as_ref());
    let notes = format!("{side_errors}{}{}", failures(Side::Keel, &keel_runs), failures(Side::Xen, &xen_runs));
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let elapsed = started.elapsed().as_secs_f64() / 60.0;
    let count = |v: &[Run]| v.iter().filter(|r| r.failure.is_none()).count();
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let section = format!(
        "{BEGIN}\n## Keel against Debian's Xen 4.17 under the same QEMU\n\n\
         Measured {date} by `cargo xtask {command}` on {cpu} ({ncpu} host CPUs), \
         {qemu}; kernel {kpkg} ({kver}) for every guest. Runs alternate Keel, Xen, Keel, …; Keel {kn} of \
         {kt} runs and Xen {xn} of {xt} runs finished; the whole command took {elapsed:.1} min.\n\n\
         Machine: `qemu-system-x86_64 -accel tcg -cpu {tcg} -smp {CPUS} -m {MEM} -cdrom <iso> -boot d`, GRUB \
         (multiboot2). Every serial line is timestamped on the host as it arrives, from the moment QEMU is spawned.\n\
         - **Keel**: `multiboot2 keel.elf {KEEL_CMDLINE}`, `module2 vmlinuz {GUEST_CMDLINE}`, the initramfs \
         (plus the kernel as `/usr/lib/keel/vmlinuz`, for rows 5). The \"guest\" of rows 1–3 is **dom0** (PVH), \
         Keel's own boot of the kernel; rows 5 are `xm create` of a PVH domU from that dom0. `cpu0-guests=off` \
         (docs/testing.md's workaround for QEMU's nested-SVM defect, which otherwise ends most Keel runs that build \
         domUs) keeps every vCPU off CPU 0: **Keel's dom0 and domU share one CPU, where Xen's use two**.\n\
         - **Xen**: `multiboot2 xen.gz {XEN_CMDLINE}`, `module2 vmlinuz {XEN_DOM0_CMDLINE}`, a dom0 initramfs \
         (the same busybox one plus Xen's tools). Dom0 is **PV** (Xen's default); its `/xen-init` starts \
         xenstored, xen-init-dom0 and xenconsoled, then `xl create -c` a **PVH domU** (`type=\"pvh\"`, \
         {GUEST_MEM_MIB} MiB, {CPUS} vCPUs) running the same vmlinuz and initramfs with `{GUEST_CMDLINE}`; \
         when the domU stops before its init, `/xen-init` reports xl's reason code and Xen's dump of its VMCB. \
         Xen's whole boot is its PV dom0 plus the domU; \"guest started\" includes libxl building the domain \
         (unpacking the XZ bzImage in dom0 user space).\n\
         - Guest: busybox `/init`, then `/bin/hcbench` (xtask/assets/hcbench.c, static; 20,000 calls per \
         figure, CLOCK_MONOTONIC in the guest; under TCG compare only side by side), then the guest powers off. \
         It times `xen_version` (hypercall 17, `XENVER_version`) two ways: through `/dev/xen/privcmd`'s \
         `IOCTL_PRIVCMD_HYPERCALL`, which this Linux (6.1.192) refuses outside a real dom0 (`xen_privcmd: No \
         target domain found, blocking all hypercalls`: EPERM), and kernel-side, as the cost of reading \
         `/sys/hypervisor/version/major` (each read issues `xen_version`) less that of reading \
         `/sys/hypervisor/type` (no hypercall). It also times `getppid` (the bare system call). On Xen it runs \
         in the PV dom0 too, before the domU, for reference.\n\
         - Toolstack: `/bin/toolbench` (xtask/assets/toolbench.sh) runs `list` and `info` 20 times each in \
         dom0, timed by `/proc/uptime`: on Keel Keel's own `xm` (static Rust) in its PVH dom0, from the \
         guest's bench mode; on Xen Debian's `xl` (libxl) in its PV dom0, before the domU. Both read the \
         hypervisor through privcmd and dom0's xenstored.\n\
         - Domain creation (rows 5): dom0's `/bin/createbench` (xtask/assets/createbench.sh), the same script on \
         both sides, boots the same Debian kernel with the same busybox initrd (xtask/assets/checks/0domu.sh; its \
         init prints `KEEL-DOMU: init reached`) as a 256 MiB, 2-vCPU domU with `extra = \"console=hvc0\"`: on \
         Keel `xm create` of a **PVH** domU ({keel_type}), on Xen `xl create` of a **PV** domU ({xen_type}), because \
         Xen 4.17's PVH domU does not boot under this TCG machine (see below) while its PV domU does. So rows 5 \
         compare Keel's PVH path with Xen's PV one, not like for like: a PV guest starts at the kernel's PV entry \
         with paravirtualised page tables that libxl sets up for it, a PVH guest in an HVM container at its PVH \
         entry. It times, by dom0's wall clock (`adjtimex`, ms), `create` \
         issued → that line in the console log xenconsoled writes (`--log=guest`, polled every 50 ms), then \
         `destroy`; then {cycles} create/destroy cycles back to back without waiting for the guest to boot \
         (mean per cycle in each run). Both toolstacks unpack the XZ bzImage in dom0 user space; on Xen the \
         commands run in a PV dom0, on Keel in a PVH one. This runs before the guest's power-off, so it lengthens \
         row 3's \"QEMU exited\".\n\
         - Save, restore, migration (rows 7): dom0's `/bin/savebench` (xtask/assets/savebench.sh), the same \
         script on both sides, runs a 256 MiB, 2-vCPU domU (the same kernel; on Keel PVH, on Xen PV) whose task \
         counts in a tight loop reading `/proc/uptime`, idle and busy (rewriting 4 MiB of its memory every \
         second): `save` to a file in dom0, `restore`, then live migration to the same host (Keel: `xm migrate \
         --live` to keel-relocd over its authenticated channel; Xen: `xl migrate -s \"\" NAME \"xl \
         migrate-receive\"`, xl's receiver run locally). The downtime is the guest's longest gap between two of its \
         clock reads around the migration. Xen's migration rows stay empty: Debian's Xen 4.17 is built without \
         shadow paging (`# CONFIG_SHADOW_PAGING is not set` in its `/boot/xen-4.17-amd64.config`), which is how \
         Xen tracks a PV guest's dirty pages, so its log-dirty domctl answers -EOPNOTSUPP (`xc: error: Failed to \
         enable logdirty: 95`) on any machine; its PVH domU, which would use HAP's log-dirty, does not boot \
         under this TCG machine.\n\
         - The kernel's first lines are buffered until its console comes up, so `Linux version` arrives later than \
         it was logged; on Xen's domU it arrives through xenconsoled and `xl console`.\n\n\
         {table}\n{img_notes}{notes_block}{END}",
        date = date.trim(),
        cpu = bench::cpu_model(),
        ncpu = bench::host_cpus(),
        qemu = deps::qemu_version_line()?,
        kpkg = k.package,
        kver = k.version,
        tcg = qemu::TCG_CPU,
        keel_type = guest_types(&keel_runs),
        xen_type = guest_types(&xen_runs),
        cycles = keel_runs.iter().chain(&xen_runs).find_map(|r| r.marks.create.cycles).unwrap_or(3),
        kn = count(&keel_runs),
        kt = keel_runs.len(),
        xn = count(&xen_runs),
        xt = xen_runs.len(),
        img_notes = [(Side::Keel, &keel_img), (Side::Xen, &xen_img)]
            .iter()
            .filter_map(|(s, p)| p.as_ref().map(|p| format!("Image, {}: {}.\n", s.name(), p.image_note)))
            .collect::<String>(),
        notes_block = if notes.is_empty() { String::new() } else { format!("\nFailures and refusals:\n{notes}") },
    );
    println!("{section}");
    if args.no_write || args.elf.elf.is_some() {
        eprintln!("bench: docs/benchmarks.md left alone (--no-write or --elf)");
        return Ok(());
    }
    bench::write_section(&section, BEGIN, END)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keel_marks_follow_the_serial_lines() {
        let s = Duration::from_secs;
        let mut m = Marks::default();
        m.see(Side::Keel, "(KEEL) Keel v0.1.0", s(1));
        m.see(Side::Keel, "(KEEL) Memory: 2047 MiB usable, image 900 KiB at 0x200000, 2030 MiB free", s(1));
        m.see(Side::Keel, "(KEEL) Memory: 2020 MiB free after start-up", s(2));
        m.see(Side::Keel, "(KEEL) dom0: 512 MiB, 2 vCPUs, kernel entry 0x1000850, command line \"x\"", s(3));
        m.see(Side::Keel, "(KEEL) (d0) [    0.000000] Linux version 6.1.0-56-amd64", s(5));
        m.see(Side::Keel, "(KEEL) (d0) KEEL-INIT: busybox init reached", s(9));
        m.see(Side::Keel, "(KEEL) (d0) KEEL-BENCH: hypercall failed: ioctl(…): Operation not permitted", s(10));
        m.see(Side::Keel, "(KEEL) (d0) KEEL-BENCH: hypercall via=sysfs calls=20000 ns=4321 raw=5000 base=679", s(10));
        m.see(Side::Keel, "(KEEL) (d0) KEEL-BENCH: syscall calls=20000 ns=999", s(10));
        assert_eq!(
            (m.hv_first, m.guest_start, m.guest_first, m.init),
            (Some(s(1)), Some(s(3)), Some(s(5)), Some(s(9)))
        );
        assert_eq!(m.guest_hc, Hc { privcmd: None, sysfs: Some(4321), syscall: Some(999) });
        assert_eq!(m.kept_mib, Some(27));
        assert_eq!(m.hypercall_failure.as_deref(), Some("ioctl(…): Operation not permitted"));
        assert_eq!(m.problem(), None);
        m.see(Side::Keel, "(KEEL) (d0) KEEL-BENCH: toolstack tool=xm cmd=list runs=20 us=41500 status=0", s(11));
        m.see(Side::Keel, "(KEEL) (d0) KEEL-BENCH: toolstack tool=xm cmd=info runs=20 us=52000 status=1", s(12));
        assert_eq!((m.tool_list_us, m.tool_info_us), (Some(41500), None));
        m.see(
            Side::Keel,
            "(KEEL) (d0) KEEL-BENCH: create tool=xm type=pvh ms=7012 cmd_ms=950 destroy_ms=80 status=0",
            s(20),
        );
        m.see(
            Side::Keel,
            "(KEEL) (d0) KEEL-BENCH: cycle tool=xm type=pvh runs=3 ms=1100 create_ms=1000 destroy_ms=100 status=0",
            s(23),
        );
        assert_eq!((m.create.init_ms, m.create.cmd_ms, m.create.destroy_ms), (Some(7012), Some(950), Some(80)));
        assert_eq!((m.create.cycle_ms, m.create.cycle_destroy_ms), (Some(1100), Some(100)));
        assert_eq!(m.create.guest_type.as_deref(), Some("pvh"));
        assert!(!m.powered_off);
        m.see(Side::Keel, "(KEEL) domain 1 created by the toolstack: PVH, 2 vCPUs, paused", s(24));
        let stopped = failures(Side::Keel, &[Run { marks: m.clone(), failure: None }]);
        assert!(stopped.contains("run 1: the machine stopped without") && stopped.ends_with("2 vCPUs, paused`\n"));
        m.see(Side::Keel, "(KEEL) Powering off", s(25));
        assert!(m.powered_off && !failures(Side::Keel, &[Run { marks: m.clone(), failure: None }]).contains("stopped"));
        let run = Run { marks: m, failure: None };
        let t = table(std::slice::from_ref(&run), &[], None, None);
        assert!(t.contains("| 5. Domain creation: `create` issued → the domU's `KEEL-DOMU: init reached`"));
        assert!(t.contains("PV domU) | 7.01 s (7.01–7.01) | n/a | n/a |"), "{t}");
        assert!(t.contains("per cycle | 1.10 s (1.10–1.10) | n/a | n/a |"), "{t}");
        assert_eq!(guest_types(&[run]), "`type=pvh` as reported");
    }

    #[test]
    fn xen_guest_is_the_domu() {
        let s = Duration::from_secs;
        let mut m = Marks::default();
        m.see(Side::Xen, "(XEN) Xen version 4.17.7 (Debian)", s(4));
        m.see(Side::Xen, "[    0.000000] Linux version 6.1.0-56-amd64", s(20));
        assert_eq!((m.dom0_first, m.guest_first), (Some(s(20)), None));
        m.see(Side::Xen, "XEN-DOM0: memory total=2047 free=1510 dom0=512", s(30));
        m.see(Side::Xen, "KEEL-BENCH: hypercall via=privcmd calls=20000 ns=777 version=4.17", s(30));
        m.see(Side::Xen, "KEEL-BENCH: syscall calls=20000 ns=55", s(30));
        m.see(Side::Xen, "XEN-DOM0: xl create", s(31));
        m.see(Side::Xen, "[    0.000000] Linux version 6.1.0-56-amd64", s(50));
        m.see(Side::Xen, "KEEL-BENCH: hypercall failed: ioctl: Operation not permitted", s(60));
        assert_eq!((m.guest_start, m.guest_first, m.kept_mib), (Some(s(31)), Some(s(50)), Some(25)));
        assert_eq!(m.hypercall_failure.as_deref(), Some("ioctl: Operation not permitted"));
        assert_eq!(m.dom0_hc, Hc { privcmd: Some(777), sysfs: None, syscall: Some(55) });
        assert_eq!(m.guest_hc, Hc::default());
        m.see(Side::Xen, "KEEL-BENCH: hypercall via=sysfs calls=20000 ns=-5 raw=5000 base=5005", s(60));
        assert_eq!(m.guest_hc.sysfs, None);
        m.see(Side::Xen, "XEN-DOM0: domU shut down, state ---s--, reason code 0 (0 poweroff)", s(61));
        assert_eq!(m.domu_end.as_deref(), Some("state ---s--, reason code 0 (0 poweroff)"));
        m.see(Side::Xen, "(XEN) exitcode = 0x78 exit_int_info = 0", s(62));
        m.see(Side::Xen, "(XEN) RSP = 0xffffffff82a03e68  RIP = 0xffffffff81a592f9", s(62));
        m.see(Side::Xen, "(XEN) RAX = 0x0000000000000000  RFLAGS=0x0000000000000082", s(62));
        assert_eq!(m.domu_vmcb, "exitcode 0x78; RIP 0xffffffff81a592f9; RFLAGS 0x0000000000000082; ");
        assert!(m.problem().unwrap().contains("KEEL-INIT"));
        // createbench in the PV dom0: a PV domU that never printed its init line, and cycles that worked.
        m.see(
            Side::Xen,
            "KEEL-BENCH: create failed: no \"KEEL-DOMU: init reached\" in /var/log/x.log after 300 s",
            s(63),
        );
        m.see(
            Side::Xen,
            "KEEL-BENCH: cycle tool=xl type=pv runs=3 ms=16500 create_ms=16000 destroy_ms=500 status=0",
            s(64),
        );
        assert_eq!((m.create.init_ms, m.create.cycle_ms), (None, Some(16500)));
        let run = Run { marks: m, failure: Some("no init".into()) };
        let notes = failures(Side::Xen, std::slice::from_ref(&run));
        assert!(notes.contains("- Xen run 1: createbench create: no \"KEEL-DOMU: init reached\""), "{notes}");
        assert_eq!(guest_types(&[run]), "`type=pv` as reported");
    }

    #[test]
    fn cells_and_ratios() {
        assert_eq!(cell(&[Some(3.0), Some(1.0), Some(2.0)], " s", 1), ("2.0 s (1.0–3.0)".into(), Some(2.0)));
        assert_eq!(cell(&[Some(4.0), None], " ns", 0).0, "4 ns (4–4), 1 of 2 runs");
        assert_eq!(cell(&[None], " s", 2), ("n/a".into(), None));
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25");
        assert_eq!(ratio(Some(1.0), None), "n/a");
    }
}
