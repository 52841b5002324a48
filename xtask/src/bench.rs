//! `cargo xtask bench`: how long Keel takes to boot under QEMU TCG, measured on this host.
//!
//! Boots `qemu -kernel keel -append "console=com1 selftest=boot"` (PVH, `-smp 4`, SVM+NPT CPU model)
//! several times; then Debian's stock kernel as dom0 from a GRUB ISO (Xen-style `multiboot2`/`module2`
//! lines, 2 CPUs and 2 vCPUs, busybox `/init` with `keel.init=poweroff`), a few times; then the same dom0 with
//! `keel.init=createbench`, timing `xm create` of the same kernel as a PVH domU up to its init and create/destroy
//! cycles (xtask/assets/createbench.sh, dom0's wall clock). Every serial line is timestamped on the host as it
//! arrives ([`keel_tests::run_timed`]); the figures go to marked sections of docs/benchmarks.md.
//! Nothing is written unless every run finished properly.

use crate::qemu::{self, Accel};
use crate::util::{self, Result};
use crate::{deps, elf, image, initramfs, kernel, ElfArg};
use keel_tests::TimedLine;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CMDLINE: &str = "console=com1 selftest=boot";
const CPUS: u32 = 4;
const MEM: &str = "512M";
const TIMEOUT_SECS: u32 = 120;
const DOC: &str = "docs/benchmarks.md";
const BEGIN: &str = "<!-- xtask-bench:boot begin (written by `cargo xtask bench`; edits here are lost) -->";
const END: &str = "<!-- xtask-bench:boot end -->";

/// The Linux boot: Keel's command line (as one would give Xen), the kernel's, the machine.
const LINUX_KEEL_CMDLINE: &str = "console=com1 dom0_mem=512M dom0_max_vcpus=2 dom0-platform=virtual";
const LINUX_KERNEL_CMDLINE: &str = "console=hvc0 keel.init=poweroff";
const LINUX_CPUS: u32 = 2;
const LINUX_MEM: &str = "2048M";
const LINUX_TIMEOUT_SECS: u32 = 180;
const LINUX_BEGIN: &str = "<!-- xtask-bench:linux begin (written by `cargo xtask bench`; edits here are lost) -->";
const LINUX_END: &str = "<!-- xtask-bench:linux end -->";

#[derive(clap::Args, Clone)]
pub struct Args {
    /// How many boots to time.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// How many Linux (dom0) boots to time; 0 skips them and leaves their section alone.
    #[arg(long, default_value_t = 3)]
    pub linux_runs: usize,
    /// How many dom0 boots that time `xm create` of Debian's kernel as a PVH domU (→ its init) and create/destroy
    /// cycles; 0 skips them and leaves their section alone.
    #[arg(long, default_value_t = 2)]
    pub create_runs: usize,
    /// How many runs of the two-host live migration (two QEMU machines at once, ~4 minutes each); 0 skips it
    /// and leaves its section alone.
    #[arg(long, default_value_t = 1)]
    pub two_host_runs: usize,
    /// Measure only; leave docs/benchmarks.md alone (implied by --elf: the doc records `keel` only).
    #[arg(long)]
    pub no_write: bool,
    /// Instead: Keel side by side with Debian's Xen 4.17 under the same QEMU (guest boot, null hypercall, whole
    /// boot, footprint), into its own section of docs/benchmarks.md.
    #[arg(long)]
    pub vs_xen: bool,
    /// With --vs-xen: runs of each side, alternated.
    #[arg(long, default_value_t = 5)]
    pub vs_xen_runs: usize,
    #[command(flatten)]
    pub elf: ElfArg,
}

/// Host times (from spawning QEMU) at which the interesting serial lines arrived.
#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    banner: Option<Duration>,
    last_svm: Option<Duration>,
    svm_lines: usize,
    power_off: Option<Duration>,
    exit: Duration,
}

impl Marks {
    fn see(&mut self, line: &str, t: Duration) {
        if line.contains("(KEEL) Keel v") && self.banner.is_none() {
            self.banner = Some(t);
        }
        if line.contains(": SVM enabled") {
            self.last_svm = Some(t);
            self.svm_lines += 1;
        }
        if line.contains("(KEEL) Powering off") {
            self.power_off = Some(t);
        }
    }
}

/// Runs `qemu_cmd` (which must send the serial port to stdout) under `timeout`, timestamping each serial line.
/// Returns the lines, or an error with the whole log when QEMU did not exit 0.
pub(crate) fn timed_qemu(qemu_cmd: &Command, timeout_secs: u32) -> Result<keel_tests::Timed> {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &timeout_secs.to_string()]).arg(qemu_cmd.get_program()).args(qemu_cmd.get_args());
    let t = keel_tests::run_timed(&mut cmd).map_err(|e| format!("cannot start {}: {e}", util::describe(&cmd)))?;
    if !t.status.success() {
        return Err(failed(&cmd, &format!("QEMU ended with {} (124: timed out)", t.status), &t.lines));
    }
    Ok(t)
}

/// A failed bench boot: what went wrong, the command and the serial log.
fn failed(cmd: &Command, problem: &str, lines: &[TimedLine]) -> util::Error {
    let log: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
    format!("bench boot failed: {problem}\n$ {}\n--- serial log ---\n{log}--- end ---", util::describe(cmd)).into()
}

fn boot_once(elf: &Path) -> Result<Marks> {
    let mut qemu_cmd = qemu::machine(Accel::Tcg, CPUS, MEM);
    qemu::boot_kernel(&mut qemu_cmd, elf, CMDLINE);
    qemu_cmd.args(["-serial", "stdio", "-monitor", "none"]);
    let t = timed_qemu(&qemu_cmd, TIMEOUT_SECS)?;
    let mut marks = Marks { exit: t.elapsed, ..Marks::default() };
    for l in &t.lines {
        marks.see(&l.text, l.at);
    }
    let problem = if marks.power_off.is_none() {
        Some("no `Powering off` line".to_string())
    } else if marks.svm_lines != CPUS as usize {
        Some(format!("{} `SVM enabled` lines for {CPUS} CPUs", marks.svm_lines))
    } else {
        None
    };
    match problem {
        None => Ok(marks),
        Some(p) => Err(failed(&qemu_cmd, &p, &t.lines)),
    }
}

/// Host times (from spawning QEMU) of a Linux boot's milestones, and Keel's end-of-domain figures for dom0.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct LinuxMarks {
    /// Keel's `dom0: <n> MiB, <n> vCPUs, kernel entry …` line: the kernel is unpacked and starts.
    dom0_start: Option<Duration>,
    linux_version: Option<Duration>,
    init_reached: Option<Duration>,
    power_off: Option<Duration>,
    exit: Duration,
    /// `(KEEL) domain 0 (Domain-0) exits <n>`, where Keel prints it.
    exits: Option<u64>,
    /// `(KEEL) domain 0 (Domain-0) cpu time <ms> ms`.
    cpu_ms: Option<u64>,
}

impl LinuxMarks {
    fn see(&mut self, line: &str, t: Duration) {
        if line.contains("(KEEL) dom0: ") && line.contains(" kernel entry ") && self.dom0_start.is_none() {
            self.dom0_start = Some(t);
        }
        if line.contains("Linux version") && self.linux_version.is_none() {
            self.linux_version = Some(t);
        }
        if line.contains("KEEL-INIT: busybox init reached") && self.init_reached.is_none() {
            self.init_reached = Some(t);
        }
        if line.contains("(KEEL) Powering off") {
            self.power_off = Some(t);
        }
        if let Some(n) = dom0_figure(line, "exits ", "") {
            self.exits = Some(n);
        }
        if let Some(ms) = dom0_figure(line, "cpu time ", " ms") {
            self.cpu_ms = Some(ms);
        }
    }
}

/// The number in `(KEEL) domain 0 (Domain-0) <head><n><tail>`.
fn dom0_figure(line: &str, head: &str, tail: &str) -> Option<u64> {
    let rest = &line[line.find("(KEEL) domain 0 (Domain-0) ")? + "(KEEL) domain 0 (Domain-0) ".len()..];
    rest.trim_end().strip_prefix(head)?.strip_suffix(tail)?.trim().parse().ok()
}

fn linux_boot_once(iso: &Path) -> Result<LinuxMarks> {
    let mut qemu_cmd = qemu::machine(Accel::Tcg, LINUX_CPUS, LINUX_MEM);
    qemu::boot_cdrom(&mut qemu_cmd, iso);
    qemu_cmd.args(["-serial", "stdio", "-monitor", "none"]);
    let t = timed_qemu(&qemu_cmd, LINUX_TIMEOUT_SECS)?;
    let mut marks = LinuxMarks { exit: t.elapsed, ..LinuxMarks::default() };
    for l in &t.lines {
        marks.see(&l.text, l.at);
    }
    let missing = [
        (marks.linux_version.is_none(), "`Linux version`"),
        (marks.init_reached.is_none(), "`KEEL-INIT: busybox init reached`"),
        (marks.power_off.is_none(), "`Powering off`"),
    ];
    match missing.iter().find(|(absent, _)| *absent) {
        Some((_, what)) => Err(failed(&qemu_cmd, &format!("no {what} line"), &t.lines)),
        None => Ok(marks),
    }
}

/// dom0's `/bin/createbench` figures (xtask/assets/createbench.sh), ms of dom0's wall clock: `<tool> create` of the
/// Debian domU → its `KEEL-DOMU: init reached` line in its console log, and create/destroy cycles.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CreateFigs {
    /// `KEEL-BENCH: create tool=… type=… ms=… cmd_ms=… destroy_ms=… status=0`.
    pub init_ms: Option<u64>,
    pub cmd_ms: Option<u64>,
    pub destroy_ms: Option<u64>,
    /// The domU's type as createbench reports it (`pvh` on Keel, `pv` on Xen).
    pub guest_type: Option<String>,
    /// `KEEL-BENCH: cycle tool=… runs=… ms=… create_ms=… destroy_ms=… status=0`: per cycle.
    pub cycle_ms: Option<u64>,
    pub cycle_create_ms: Option<u64>,
    pub cycle_destroy_ms: Option<u64>,
    pub cycles: Option<u64>,
    /// `KEEL-BENCH: dev tool=… read_kbs=… write_kbs=… dom0_read_kbs=… dom0_write_kbs=… tcp_kbs=… ping_us=…
    /// status=0` (xtask/assets/devbench.sh): the domU's split devices against dom0's own.
    pub dev: Option<DevFigs>,
    /// `KEEL-BENCH: save tool=… kind=idle|busy save_ms=… restore_ms=… status=0` and `KEEL-BENCH: migrate tool=…
    /// kind=… migrate_ms=… gap_ms=… status=0` (xtask/assets/savebench.sh), per kind.
    pub save: [Option<SaveFigs>; 2],
    /// `KEEL-BENCH: create failed: …`, `… cycle failed: …`, `… dev failed: …` and `… save failed: …`, in order.
    pub failures: Vec<String>,
}

/// dom0's `/bin/savebench` figures for one domU (idle or busy), ms of dom0's wall clock; `downtime_ms` is what
/// `xm migrate` reports (suspend asked → running on the target), which Xen's xl does not.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SaveFigs {
    pub save_ms: u64,
    pub restore_ms: u64,
    pub migrate_ms: Option<u64>,
    pub gap_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
}

/// The kinds of domU savebench measures, in [`CreateFigs::save`]'s order.
pub(crate) const SAVE_KINDS: [&str; 2] = ["idle", "busy"];

/// The save rows: label, figure (ms).
pub(crate) type SaveRow = (&'static str, fn(SaveFigs) -> Option<u64>);
pub(crate) const SAVE_ROWS: [SaveRow; 5] = [
    ("`save` of the running domU to a file in dom0", |s| Some(s.save_ms)),
    ("`restore` of that file (returns once the domain runs)", |s| Some(s.restore_ms)),
    ("live migration to localhost, total (`migrate` issued → returned)", |s| s.migrate_ms),
    ("… downtime as the guest saw it (its longest gap between two clock reads, 10 ms steps)", |s| s.gap_ms),
    ("… downtime as `xm migrate` reports it (suspend asked → running on the target)", |s| s.downtime_ms),
];

/// dom0's `/bin/devbench` figures: KiB/s, and µs for the ping.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DevFigs {
    pub read_kbs: u64,
    pub write_kbs: u64,
    pub dom0_read_kbs: u64,
    pub dom0_write_kbs: u64,
    pub tcp_kbs: u64,
    pub ping_us: u64,
}

/// The number after `key` in `line` (digits up to the next non-digit).
pub(crate) fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

impl CreateFigs {
    pub(crate) fn see(&mut self, line: &str) {
        for what in ["create", "cycle", "dev", "save"] {
            if let Some((_, why)) = line.split_once(&format!("KEEL-BENCH: {what} failed: ")) {
                self.failures.push(format!("{what}: {}", why.trim()));
            }
        }
        if let Some((_, rest)) = line.split_once("KEEL-BENCH: save-detail tool=") {
            let kind = SAVE_KINDS.iter().position(|k| rest.contains(&format!(" kind={k} ")));
            if let (Some(i), Some(d)) = (kind, number_after(rest, "downtime ")) {
                if let Some(f) = self.save[i].as_mut() {
                    f.downtime_ms = Some(d);
                }
            }
        }
        // A figure counts only when the toolstack's commands succeeded.
        if !line.contains(" status=0") {
            return;
        }
        if let Some((_, rest)) = line.split_once("KEEL-BENCH: save tool=") {
            let n = |k: &str| number_after(rest, &format!(" {k}="));
            let kind = SAVE_KINDS.iter().position(|k| rest.contains(&format!(" kind={k} ")));
            if let (Some(i), Some(save_ms), Some(restore_ms)) = (kind, n("save_ms"), n("restore_ms")) {
                self.save[i] = Some(SaveFigs { save_ms, restore_ms, ..SaveFigs::default() });
            }
        }
        if let Some((_, rest)) = line.split_once("KEEL-BENCH: migrate tool=") {
            let n = |k: &str| number_after(rest, &format!(" {k}="));
            let kind = SAVE_KINDS.iter().position(|k| rest.contains(&format!(" kind={k} ")));
            if let Some(f) = kind.and_then(|i| self.save[i].as_mut()) {
                (f.migrate_ms, f.gap_ms) = (n("migrate_ms"), n("gap_ms"));
            }
        }
        if let Some((_, rest)) = line.split_once("KEEL-BENCH: create tool=") {
            self.init_ms = number_after(rest, " ms=");
            self.cmd_ms = number_after(rest, " cmd_ms=");
            self.destroy_ms = number_after(rest, " destroy_ms=");
            self.guest_type = rest.split_once(" type=").and_then(|(_, t)| t.split_whitespace().next()).map(Into::into);
        }
        if let Some((_, rest)) = line.split_once("KEEL-BENCH: dev tool=") {
            let n = |k: &str| number_after(rest, &format!(" {k}="));
            if let (
                Some(read_kbs),
                Some(write_kbs),
                Some(dom0_read_kbs),
                Some(dom0_write_kbs),
                Some(tcp_kbs),
                Some(ping_us),
            ) = (n("read_kbs"), n("write_kbs"), n("dom0_read_kbs"), n("dom0_write_kbs"), n("tcp_kbs"), n("ping_us"))
            {
                self.dev = Some(DevFigs { read_kbs, write_kbs, dom0_read_kbs, dom0_write_kbs, tcp_kbs, ping_us });
            }
        }
        if let Some((_, rest)) = line.split_once("KEEL-BENCH: cycle tool=") {
            self.cycle_ms = number_after(rest, " ms=");
            self.cycle_create_ms = number_after(rest, " create_ms=");
            self.cycle_destroy_ms = number_after(rest, " destroy_ms=");
            self.cycles = number_after(rest, " runs=");
            if self.guest_type.is_none() {
                self.guest_type =
                    rest.split_once(" type=").and_then(|(_, t)| t.split_whitespace().next()).map(Into::into);
            }
        }
    }

    /// Whether both figures came.
    pub(crate) fn complete(&self) -> bool {
        self.init_ms.is_some() && self.cycle_ms.is_some()
    }
}

/// (median, min, max); the median of an even count is the mean of the middle two.
fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2 };
    (median, v[0], v[n - 1])
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Replaces the section of `doc` between the `begin` and `end` markers with `section`, or appends it.
fn splice(doc: &str, section: &str, begin: &str, end: &str) -> String {
    match (doc.find(begin), doc.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{}{}", &doc[..b], section, &doc[e + end.len()..])
        }
        _ => {
            let mut out = doc.trim_end().to_string();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(section);
            out.push('\n');
            out
        }
    }
}

pub fn cmd(args: &Args) -> Result<()> {
    if args.vs_xen {
        return crate::vs_xen::cmd(args);
    }
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let elf = args.elf.get()?;
    let iso = image::build(&image::Args { elf: ElfArg { elf: Some(elf.clone()) }, ..image::Args::default() })?;

    let mut runs = Vec::new();
    for i in 1..=args.runs {
        let m = boot_once(&elf)?;
        eprintln!(
            "bench: run {i}/{}: banner {:.3} s, last SVM enabled {:.3} s, Powering off {:.3} s, exit {:.3} s",
            args.runs,
            m.banner.unwrap_or_default().as_secs_f64(),
            m.last_svm.unwrap_or_default().as_secs_f64(),
            m.power_off.unwrap_or_default().as_secs_f64(),
            m.exit.as_secs_f64()
        );
        runs.push(m);
    }

    let linux = if args.linux_runs == 0 { None } else { Some(linux_section(&elf, args.linux_runs)?) };
    let create = if args.create_runs == 0 { None } else { Some(create_section(&elf, args.create_runs)?) };
    let roundtrips = roundtrip_section(&elf)?;
    let two_hosts =
        if args.two_host_runs == 0 { None } else { Some(crate::two_hosts::bench_section(&elf, args.two_host_runs)?) };

    let rows: [Row<Marks>; 4] = [
        ("first Keel line (banner)", |m| m.banner),
        ("last `CPU<n>: SVM enabled` line", |m| m.last_svm),
        ("`Powering off`", |m| m.power_off),
        ("QEMU exited", |m| Some(m.exit)),
    ];
    let table = time_table(&runs, &rows);

    let (load_file, load_mem) = elf::load_sizes(&elf)?;
    let sizes = format!(
        "| Artifact | Size |\n|---|---:|\n\
         | `keel` ELF file (release, with debug info) | {} |\n\
         | `keel` loadable segments (file / memory) | {} / {} bytes |\n\
         | `keel.iso` (GRUB + keel + Debian vmlinuz + initramfs) | {} |\n",
        util::human_size(util::file_size(&elf)?),
        load_file,
        load_mem,
        util::human_size(util::file_size(&iso)?)
    );

    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let qemu = deps::qemu_version_line()?;
    let section = format!(
        "{BEGIN}\n## Keel boot under QEMU TCG\n\n\
         Measured {date} by `cargo xtask bench` on {cpu} ({ncpu} host CPUs), {qemu}.\n\n\
         `qemu-system-x86_64 -accel tcg -cpu {tcg} -smp {CPUS} -m {MEM} -kernel keel -append \"{CMDLINE}\"` \
         (PVH entry), {n} boots; each serial line is timestamped on the host as it arrives, \
         from the moment QEMU is spawned.\n\n{table}\n{sizes}{END}",
        date = date.trim(),
        cpu = cpu_model(),
        ncpu = host_cpus(),
        tcg = qemu::TCG_CPU,
        n = args.runs,
    );
    println!("{section}");
    if let Some(linux) = &linux {
        println!("\n{linux}");
    }
    if let Some(create) = &create {
        println!("\n{create}");
    }
    println!("\n{roundtrips}");
    if let Some(two) = &two_hosts {
        println!("\n{two}");
    }

    if args.no_write || args.elf.elf.is_some() {
        eprintln!("bench: docs/benchmarks.md left alone (--no-write or --elf)");
        return Ok(());
    }
    let mut sections = vec![(section.as_str(), BEGIN, END)];
    if let Some(linux) = &linux {
        sections.push((linux, LINUX_BEGIN, LINUX_END));
    }
    if let Some(create) = &create {
        sections.push((create, CREATE_BEGIN, CREATE_END));
    }
    sections.push((&roundtrips, EXITS_BEGIN, EXITS_END));
    if let Some(two) = &two_hosts {
        sections.push((two, crate::two_hosts::BENCH_BEGIN, crate::two_hosts::BENCH_END));
    }
    write_sections(&sections)
}

/// Puts each `(section, begin, end)` between its markers in docs/benchmarks.md (created if absent).
fn write_sections(sections: &[(&str, &str, &str)]) -> Result<()> {
    let path = util::root().join(DOC);
    let mut doc = match std::fs::read_to_string(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Benchmarks\n\nFigures measured on real runs; each section says how and where.\n".into()
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    for (section, begin, end) in sections {
        doc = splice(&doc, section, begin, end);
    }
    std::fs::write(&path, doc)?;
    eprintln!("bench: wrote {DOC}");
    Ok(())
}

/// One marked section of docs/benchmarks.md.
pub(crate) fn write_section(section: &str, begin: &str, end: &str) -> Result<()> {
    write_sections(&[(section, begin, end)])
}

const EXITS_BEGIN: &str = "<!-- xtask-bench:exits begin (written by `cargo xtask bench`; edits here are lost) -->";
const EXITS_END: &str = "<!-- xtask-bench:exits end -->";

/// Round trips measured inside the `bench` test guest (tests/guests/src/bin/bench.rs): a null hypercall and a
/// CPUID exit, 100,000 each per run, median of 3 runs, in guest TSC cycles and ns of Xen system time.
fn roundtrip_section(elf: &Path) -> Result<String> {
    let guests = crate::build::guests()?;
    std::env::set_var("KEEL_ELF", elf);
    std::env::set_var("KEEL_GUESTS", &guests);
    let run = keel_tests::xtf::boot(&[keel_tests::xtf::Module::listed("bench")], 2, 600);
    run.assert_success();
    let pick = |what: &str| -> Result<(String, String)> {
        let line = run.assert_line(&format!("BENCH: {what} "));
        let field = |k: &str| {
            line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string).unwrap_or_else(|| "n/a".into())
        };
        Ok((field("cycles="), field("ns=")))
    };
    let (hc_cycles, hc_ns) = pick("null-hypercall")?;
    let (id_cycles, id_ns) = pick("cpuid-exit")?;
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    Ok(format!(
        "{EXITS_BEGIN}\n## Exit and hypercall round trips under QEMU TCG\n\n\
         Measured {date} by `cargo xtask bench` on {cpu} ({ncpu} host CPUs), {qemu}: the `bench` test guest on \
         Keel (`xtf`, `-cpu {tcg} -smp 2`), 100,000 calls per run, median of 3 runs. Under TCG these figures only \
         compare Keel with itself over time.\n\n\
         | Round trip | guest TSC cycles | ns (Xen system time) |\n|---|---:|---:|\n\
         | null hypercall (`xen_version`, VMMCALL) | {hc_cycles} | {hc_ns} |\n\
         | CPUID exit (leaf 0) | {id_cycles} | {id_ns} |\n{EXITS_END}",
        date = date.trim(),
        cpu = cpu_model(),
        ncpu = host_cpus(),
        qemu = deps::qemu_version_line()?,
        tcg = qemu::TCG_CPU,
    ))
}

/// A table row: its label, and how to pick its time out of one run's marks.
type Row<'a, M> = (&'a str, fn(&M) -> Option<Duration>);

/// `| QEMU start → | median | min | max |` rows, one per picked time.
fn time_table<M>(runs: &[M], rows: &[Row<M>]) -> String {
    let mut table = String::from("| QEMU start → | median | min | max |\n|---|---:|---:|---:|\n");
    for (what, pick) in rows {
        let Some(times) = runs.iter().map(pick).collect::<Option<Vec<_>>>() else {
            table.push_str(&format!("| {what} | not seen in every run | | |\n"));
            continue;
        };
        let (med, min, max) = stats(times);
        table.push_str(&format!(
            "| {what} | {:.3} s | {:.3} s | {:.3} s |\n",
            med.as_secs_f64(),
            min.as_secs_f64(),
            max.as_secs_f64()
        ));
    }
    table
}

/// `median (min–max)` of a count every run reported, else `n/a`.
fn count_cell(values: &[Option<u64>], unit: &str) -> String {
    match values.iter().copied().collect::<Option<Vec<u64>>>() {
        Some(mut v) if !v.is_empty() => {
            v.sort_unstable();
            let n = v.len();
            let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2 };
            format!("{median}{unit} ({}–{}{unit})", v[0], v[n - 1])
        }
        _ => "n/a".into(),
    }
}

/// Boots the stock kernel as dom0 `runs` times and returns the docs/benchmarks.md section.
fn linux_section(elf: &Path, runs: usize) -> Result<String> {
    let k = kernel::ensure()?;
    let initrd = initramfs::build()?;
    let iso = util::target_dir().join("bench-linux.iso");
    keel_tests::iso::dom0_iso(elf, LINUX_KEEL_CMDLINE, &k.vmlinuz, LINUX_KERNEL_CMDLINE, Some(&initrd), &iso)?;

    let mut marks = Vec::new();
    for i in 1..=runs {
        let m = linux_boot_once(&iso)?;
        let secs = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64();
        eprintln!(
            "bench: linux run {i}/{runs}: dom0 start {:.3} s, Linux version {:.3} s, busybox init {:.3} s, \
             Powering off {:.3} s, exit {:.3} s, dom0 exits {}, dom0 cpu time {}",
            secs(m.dom0_start),
            secs(m.linux_version),
            secs(m.init_reached),
            secs(m.power_off),
            m.exit.as_secs_f64(),
            m.exits.map_or("n/a".into(), |n| n.to_string()),
            m.cpu_ms.map_or("n/a".into(), |ms| format!("{ms} ms")),
        );
        marks.push(m);
    }
    let _ = std::fs::remove_file(&iso);

    let rows: [Row<LinuxMarks>; 5] = [
        ("Keel starts dom0 (`dom0: … kernel entry …`)", |m| m.dom0_start),
        ("first `Linux version` line", |m| m.linux_version),
        ("`KEEL-INIT: busybox init reached`", |m| m.init_reached),
        ("`Powering off`", |m| m.power_off),
        ("QEMU exited", |m| Some(m.exit)),
    ];
    let table = time_table(&marks, &rows);
    let exits = count_cell(&marks.iter().map(|m| m.exits).collect::<Vec<_>>(), "");
    let cpu = count_cell(&marks.iter().map(|m| m.cpu_ms).collect::<Vec<_>>(), " ms");
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    Ok(format!(
        "{LINUX_BEGIN}\n## Debian's stock Linux as dom0 under QEMU TCG\n\n\
         Measured {date} by `cargo xtask bench` on {cpu_model} ({ncpu} host CPUs), {qemu}; kernel {kpkg} \
         ({kver}).\n\n\
         `qemu-system-x86_64 -accel tcg -cpu {tcg} -smp {LINUX_CPUS} -m {LINUX_MEM} -cdrom <iso> -boot d`, GRUB \
         `multiboot2 /boot/keel.elf {LINUX_KEEL_CMDLINE}`, `module2 --nounzip /boot/vmlinuz \
         {LINUX_KERNEL_CMDLINE}`, `module2 --nounzip /boot/initrd.img` (busybox `/init` powers off once it \
         has run); {runs} boots, each serial line timestamped on the host as it arrives, from the moment QEMU is \
         spawned. The times include GRUB reading the modules and Keel unpacking the XZ kernel; the kernel's first \
         messages (`Linux version` among them) are buffered until its console comes up, so they arrive later \
         than they were logged.\n\n{table}\n\
         | dom0 over the whole boot (Keel's end-of-domain report) | median (min–max) |\n|---|---:|\n\
         | VM exits | {exits} |\n\
         | CPU time | {cpu} |\n{LINUX_END}",
        date = date.trim(),
        cpu_model = cpu_model(),
        ncpu = host_cpus(),
        qemu = deps::qemu_version_line()?,
        kpkg = k.package,
        kver = k.version,
        tcg = qemu::TCG_CPU,
    ))
}

const CREATE_BEGIN: &str = "<!-- xtask-bench:create begin (written by `cargo xtask bench`; edits here are lost) -->";
const CREATE_END: &str = "<!-- xtask-bench:create end -->";
const CREATE_KERNEL_CMDLINE: &str = "console=hvc0 keel.init=createbench";

/// The split-device rows (xtask/assets/devbench.sh): label, unit, figure.
pub(crate) type DevRow = (&'static str, &'static str, fn(DevFigs) -> u64);
pub(crate) const DEV_ROWS: [DevRow; 7] = [
    ("domU disk (`phy:` loop device, blkfront → dom0's blkback): sequential read, O_DIRECT 1 MiB", " KiB/s", |d| {
        d.read_kbs
    }),
    ("… dom0 reading the same loop device itself", " KiB/s", |d| d.dom0_read_kbs),
    ("domU disk: sequential write, O_DIRECT 1 MiB", " KiB/s", |d| d.write_kbs),
    ("… dom0 writing the same loop device itself", " KiB/s", |d| d.dom0_write_kbs),
    ("domU → dom0 TCP over netfront/netback and xenbr0 (64 MiB, busybox nc)", " KiB/s", |d| d.tcp_kbs),
    ("domU → dom0 ping, average round trip (20 pings)", " µs", |d| d.ping_us),
    ("domU read as a share of dom0's (per mille)", " ‰", |d| d.read_kbs * 1000 / d.dom0_read_kbs.max(1)),
];
const CREATE_TIMEOUT_SECS: u32 = 1200;
/// The domain-creation boots keep every vCPU off CPU 0 (`cpu0-guests=off`, dom0's too): the narrow workaround for
/// the QEMU TCG nested-SVM defect of docs/testing.md, which otherwise ends about one boot in two that builds domUs.
const CREATE_KEEL_CMDLINE: &str = "console=com1 dom0_mem=768M dom0_max_vcpus=2 cpu0-guests=off dom0-platform=virtual";

/// Boots dom0 `runs` times with `keel.init=createbench` (xtask/assets/createbench.sh: `xm create` of Debian's
/// kernel as a PVH domU → its init line, then 3 create/destroy cycles) and returns the docs/benchmarks.md section.
fn create_section(elf: &Path, runs: usize) -> Result<String> {
    let k = kernel::ensure()?;
    let base = initramfs::build()?;
    let initrd = util::target_dir().join("bench-create.cpio.gz");
    crate::xen::with_domu_kernel(&base, &k.vmlinuz, &initrd)?;
    let iso = util::target_dir().join("bench-create.iso");
    keel_tests::iso::dom0_iso(elf, CREATE_KEEL_CMDLINE, &k.vmlinuz, CREATE_KERNEL_CMDLINE, Some(&initrd), &iso)?;

    let mut figs = Vec::new();
    for i in 1..=runs {
        let mut qemu_cmd = qemu::machine(Accel::Tcg, LINUX_CPUS, LINUX_MEM);
        qemu::boot_cdrom(&mut qemu_cmd, &iso);
        qemu_cmd.args(["-serial", "stdio", "-monitor", "none"]);
        let t = timed_qemu(&qemu_cmd, CREATE_TIMEOUT_SECS)?;
        let mut f = CreateFigs::default();
        for l in &t.lines {
            f.see(&l.text);
        }
        let ms = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        eprintln!(
            "bench: create run {i}/{runs}: xm create → init {} ms (create {} ms, destroy {} ms), cycle {} ms \
             (create {} ms, destroy {} ms){}",
            ms(f.init_ms),
            ms(f.cmd_ms),
            ms(f.destroy_ms),
            ms(f.cycle_ms),
            ms(f.cycle_create_ms),
            ms(f.cycle_destroy_ms),
            if f.failures.is_empty() { String::new() } else { format!(" — {}", f.failures.join("; ")) },
        );
        if !f.complete() {
            let problem = f.failures.first().cloned().unwrap_or_else(|| "no `KEEL-BENCH: create`/`cycle` line".into());
            return Err(failed(&qemu_cmd, &problem, &t.lines));
        }
        figs.push(f);
    }
    let _ = std::fs::remove_file(&iso);
    let _ = std::fs::remove_file(&initrd);

    let cycles = figs.first().and_then(|f| f.cycles).unwrap_or_default();
    type Pick = fn(&CreateFigs) -> Option<u64>;
    let rows: [(&str, Pick); 6] = [
        ("`xm create` issued → `KEEL-DOMU: init reached` in the domU's console log", |f| f.init_ms),
        ("`xm create` itself (returns once the domain is built and unpaused)", |f| f.cmd_ms),
        ("`xm destroy` of the booted domU", |f| f.destroy_ms),
        ("create/destroy cycle (`xm create`, then `xm destroy` at once), per cycle", |f| f.cycle_ms),
        ("… its `xm create`", |f| f.cycle_create_ms),
        ("… its `xm destroy`", |f| f.cycle_destroy_ms),
    ];
    let mut table = String::from("| dom0 wall clock | median (min–max) |\n|---|---:|\n");
    for (what, pick) in rows {
        let cell = count_cell(&figs.iter().map(pick).collect::<Vec<_>>(), " ms");
        table.push_str(&format!("| {what} | {cell} |\n"));
    }
    for (what, unit, pick) in DEV_ROWS {
        let cell = count_cell(&figs.iter().map(|f| f.dev.map(pick)).collect::<Vec<_>>(), unit);
        table.push_str(&format!("| {what} | {cell} |\n"));
    }
    for (i, kind) in SAVE_KINDS.iter().enumerate() {
        for (what, pick) in SAVE_ROWS {
            let cell = count_cell(&figs.iter().map(|f| f.save[i].and_then(pick)).collect::<Vec<_>>(), " ms");
            table.push_str(&format!("| 256 MiB domU, {kind}: {what} | {cell} |\n"));
        }
    }
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    Ok(format!(
        "{CREATE_BEGIN}\n## `xm create` of a PVH domU from dom0 under QEMU TCG\n\n\
         Measured {date} by `cargo xtask bench` on {cpu_model} ({ncpu} host CPUs), {qemu}; kernel {kpkg} \
         ({kver}) as dom0 and as domU.\n\n\
         The Linux machine above (`-smp {LINUX_CPUS} -m {LINUX_MEM}`, `multiboot2 /boot/keel.elf \
         {CREATE_KEEL_CMDLINE}`: CPU 0 runs no vCPU, docs/testing.md's workaround for QEMU's nested-SVM defect, so \
         dom0 and the domU share CPU 1), dom0 with `{CREATE_KERNEL_CMDLINE}` and an initramfs that also carries the kernel \
         as `/usr/lib/keel/vmlinuz`; {runs} boot{plural}. In each, dom0's `/bin/createbench` (xtask/assets/createbench.sh) \
         runs `xm create` of a **PVH** domU (`type = \"pvh\"`, 256 MiB, 2 vCPUs, `extra = \"console=hvc0\"`; \
         Debian's kernel with the busybox initrd of xtask/assets/checks/0domu.sh, whose init prints `KEEL-DOMU: \
         init reached`), waits for that line in the console log dom0's xenconsoled writes \
         (`/var/log/xen/console/guest-createbench.log`, polled every 50 ms), destroys the domU, then runs {cycles} \
         create/destroy cycles of the same domU back to back without waiting for it to boot. Times are dom0's wall \
         clock (`adjtimex`, ms), so they include `xm`'s own start-up and the XZ kernel unpacked in dom0 user space \
         by the domain builder. Then `/bin/devbench` (xtask/assets/devbench.sh) gives a 1-vCPU domU a 64 MiB \
         loop device of dom0's as `phy:` disk and a vif on `xenbr0`, and times its stock blkfront and netfront \
         against dom0 using the same loop device directly (`/proc/uptime`, 10 ms). Last, `/bin/savebench` \
         (xtask/assets/savebench.sh) saves, restores and live-migrates to localhost (keel-relocd) a 256 MiB, \
         2-vCPU domU whose task counts in a tight loop, once idle and once busy (rewriting 4 MiB of its memory \
         every second).\n\n{table}{CREATE_END}",
        date = date.trim(),
        cpu_model = cpu_model(),
        ncpu = host_cpus(),
        qemu = deps::qemu_version_line()?,
        kpkg = k.package,
        kver = k.version,
        plural = if runs == 1 { "" } else { "s" },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let ms = |v: &[u64]| v.iter().map(|&x| Duration::from_millis(x)).collect();
        let (med, min, max) = stats(ms(&[500, 100, 300]));
        assert_eq!((med.as_millis(), min.as_millis(), max.as_millis()), (300, 100, 500));
        let (med, _, _) = stats(ms(&[400, 100, 300, 200]));
        assert_eq!(med.as_millis(), 250);
    }

    #[test]
    fn splice_replaces_only_its_section() {
        let first = splice("# Benchmarks\n\nintro\n", &format!("{BEGIN}\nA\n{END}"), BEGIN, END);
        assert_eq!(first, format!("# Benchmarks\n\nintro\n\n{BEGIN}\nA\n{END}\n"));
        let doc = format!("{first}\n## Other\nkeep\n");
        let second = splice(&doc, &format!("{BEGIN}\nB\n{END}"), BEGIN, END);
        assert!(second.contains("\nB\n") && !second.contains("\nA\n"));
        assert!(second.ends_with("## Other\nkeep\n"));
        // The Linux section goes after, and replacing it leaves the boot section alone.
        let third = splice(&second, &format!("{LINUX_BEGIN}\nL1\n{LINUX_END}"), LINUX_BEGIN, LINUX_END);
        assert!(third.ends_with(&format!("keep\n\n{LINUX_BEGIN}\nL1\n{LINUX_END}\n")));
        let fourth = splice(&third, &format!("{LINUX_BEGIN}\nL2\n{LINUX_END}"), LINUX_BEGIN, LINUX_END);
        assert!(fourth.contains("\nB\n") && fourth.contains("\nL2\n") && !fourth.contains("L1"));
    }

    #[test]
    fn linux_marks_follow_the_serial_lines() {
        let mut m = LinuxMarks::default();
        let s = Duration::from_secs;
        m.see("(KEEL) dom0: 512 MiB, 2 vCPUs, kernel entry 0x1000850, command line \"console=hvc0\"", s(11));
        m.see("(KEEL) (d0) [    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)", s(14));
        m.see("(KEEL) (d0) [    3.000000] Linux version again", s(15));
        m.see("(KEEL) (d0) KEEL-INIT: busybox init reached", s(18));
        m.see("(KEEL) domain 0 (Domain-0) shut down: poweroff", s(19));
        assert_eq!(m.exits, None);
        m.see("(KEEL) domain 0 (Domain-0) exits 161749", s(19));
        m.see("(KEEL) domain 0 (Domain-0) cpu time 50719 ms", s(19));
        m.see("(KEEL) domain 1 (other) exits 5", s(19));
        m.see("(KEEL) Powering off", s(20));
        assert_eq!(m.dom0_start, Some(s(11)));
        assert_eq!((m.linux_version, m.init_reached, m.power_off), (Some(s(14)), Some(s(18)), Some(s(20))));
        assert_eq!((m.exits, m.cpu_ms), (Some(161749), Some(50719)));
    }

    #[test]
    fn create_figures_follow_the_createbench_lines() {
        let mut f = CreateFigs::default();
        f.see("(KEEL) (d0) KEEL-BENCH: create tool=xm type=pvh ms=6123 cmd_ms=812 destroy_ms=95 status=0");
        f.see("(KEEL) (d0) KEEL-BENCH: cycle tool=xm type=pvh runs=3 ms=903 create_ms=801 destroy_ms=102 status=0");
        assert_eq!((f.init_ms, f.cmd_ms, f.destroy_ms), (Some(6123), Some(812), Some(95)));
        assert_eq!(f.guest_type.as_deref(), Some("pvh"));
        assert_eq!(
            (f.cycle_ms, f.cycle_create_ms, f.cycle_destroy_ms, f.cycles),
            (Some(903), Some(801), Some(102), Some(3))
        );
        assert!(f.complete() && f.failures.is_empty());
        assert_eq!(f.dev, None);
        f.see(
            "KEEL-BENCH: dev tool=xm type=pvh read_kbs=20480 write_kbs=10240 dom0_read_kbs=40960 \
             dom0_write_kbs=30720 tcp_kbs=5120 ping_us=850 status=0",
        );
        let d = f.dev.expect("the dev line");
        assert_eq!((d.read_kbs, d.write_kbs, d.dom0_read_kbs, d.dom0_write_kbs), (20480, 10240, 40960, 30720));
        assert_eq!((d.tcp_kbs, d.ping_us), (5120, 850));
        assert_eq!(DEV_ROWS[6].2(d), 500, "half of dom0's read rate");
        // A failed destroy does not count, nor does a line without figures; failures are kept in order.
        let mut g = CreateFigs::default();
        g.see("KEEL-BENCH: create tool=xl type=pv ms=20000 cmd_ms=15000 destroy_ms=300 status=1");
        g.see(
            "KEEL-BENCH: create failed: no \"KEEL-DOMU: init reached\" in /var/log/xen/console/guest-x.log after 300 s",
        );
        g.see("KEEL-BENCH: cycle failed: xl create exited 3: libxl: error");
        g.see("KEEL-BENCH: dev failed: no bridge xenbr0 in dom0");
        assert_eq!((g.init_ms, g.cycle_ms, g.guest_type.as_deref()), (None, None, None));
        assert!(!g.complete());
        assert_eq!(g.failures.len(), 3);
        assert_eq!(g.failures[2], "dev: no bridge xenbr0 in dom0");
        assert!(
            g.failures[0].starts_with("create: no \"KEEL-DOMU")
                && g.failures[1] == "cycle: xl create exited 3: libxl: error"
        );
        assert_eq!(number_after("a ms= b", " ms="), None);
        assert_eq!(number_after("a ms=12 b", "ms="), Some(12));
    }

    #[test]
    fn save_figures_follow_the_savebench_lines() {
        let mut f = CreateFigs::default();
        for l in [
            "KEEL-BENCH: save tool=xl kind=idle save_ms=9000 restore_ms=8000 status=0",
            "KEEL-BENCH: save failed: xl migrate: xc: error: Failed to enable logdirty",
            "KEEL-BENCH: save tool=xm kind=busy save_ms=12 restore_ms=7 status=0",
            "KEEL-BENCH: migrate tool=xm kind=busy migrate_ms=34000 gap_ms=270 status=0",
            "KEEL-BENCH: save-detail tool=xm kind=busy Migrated domain 3 (sbbusy) ..., downtime 2640 ms (suspend 1 ms)",
        ] {
            f.see(l);
        }
        let idle = SaveFigs { save_ms: 9000, restore_ms: 8000, ..SaveFigs::default() };
        assert_eq!(f.save[0], Some(idle), "save and restore count without the migration");
        let busy = SaveFigs {
            save_ms: 12,
            restore_ms: 7,
            migrate_ms: Some(34000),
            gap_ms: Some(270),
            downtime_ms: Some(2640),
        };
        assert_eq!(f.save[1], Some(busy));
        assert_eq!(f.failures, ["save: xl migrate: xc: error: Failed to enable logdirty"]);
    }

    #[test]
    fn counts_need_every_run() {
        assert_eq!(count_cell(&[Some(30), Some(10), Some(20)], ""), "20 (10–30)");
        assert_eq!(count_cell(&[Some(3), Some(1)], " ms"), "2 ms (1–3 ms)");
        assert_eq!(count_cell(&[Some(3), None], ""), "n/a");
        assert_eq!(count_cell(&[], ""), "n/a");
    }

    #[test]
    fn marks_follow_the_serial_lines() {
        let mut m = Marks::default();
        let s = Duration::from_secs;
        m.see("(KEEL) Keel v0.1.0\n", s(1));
        m.see("(KEEL) CPU0: SVM enabled (NPT: yes, ASIDs: 16)\n", s(2));
        m.see("(KEEL) CPU1: SVM enabled (NPT: yes, ASIDs: 16)\n", s(3));
        m.see("(KEEL) Powering off\n", s(4));
        assert_eq!(m.banner, Some(s(1)));
        assert_eq!((m.last_svm, m.svm_lines), (Some(s(3)), 2));
        assert_eq!(m.power_off, Some(s(4)));
    }
}
