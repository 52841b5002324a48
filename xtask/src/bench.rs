//! `cargo xtask bench`: how long Keel takes to boot under QEMU TCG, measured on this host.
//!
//! Boots `qemu -kernel keel -append "console=com1 selftest=boot"` (PVH, `-smp 4`, SVM+NPT CPU model)
//! several times, timestamps every serial line on the host as it arrives, and writes the figures to
//! a section of docs/benchmarks.md. Nothing is written unless every run finished properly.

use crate::qemu::{self, Accel};
use crate::util::{self, Context, Result};
use crate::{deps, elf, image, ElfArg};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CMDLINE: &str = "console=com1 selftest=boot";
const CPUS: u32 = 4;
const MEM: &str = "512M";
const TIMEOUT_SECS: u32 = 120;
const DOC: &str = "docs/benchmarks.md";
const BEGIN: &str = "<!-- xtask-bench:boot begin (written by `cargo xtask bench`; edits here are lost) -->";
const END: &str = "<!-- xtask-bench:boot end -->";

#[derive(clap::Args, Clone)]
pub struct Args {
    /// How many boots to time.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Measure only; leave docs/benchmarks.md alone (implied by --elf: the doc records `keel` only).
    #[arg(long)]
    pub no_write: bool,
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

fn boot_once(elf: &std::path::Path) -> Result<Marks> {
    let mut qemu_cmd = qemu::machine(Accel::Tcg, CPUS, MEM);
    qemu::boot_kernel(&mut qemu_cmd, elf, CMDLINE);
    qemu_cmd.args(["-serial", "stdio", "-monitor", "none"]);
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &TIMEOUT_SECS.to_string()])
        .arg(qemu_cmd.get_program())
        .args(qemu_cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());

    let start = Instant::now();
    let mut child = cmd.spawn().context(format!("cannot start {}", util::describe(&cmd)))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut marks = Marks::default();
    let mut log = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if out.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let t = start.elapsed();
        let text = String::from_utf8_lossy(&line);
        marks.see(&text, t);
        log.push_str(&text);
    }
    let status = child.wait()?;
    marks.exit = start.elapsed();

    let problem = if !status.success() {
        Some(format!("QEMU ended with {status} (124: timed out)"))
    } else if marks.power_off.is_none() {
        Some("no `Powering off` line".to_string())
    } else if marks.svm_lines != CPUS as usize {
        Some(format!("{} `SVM enabled` lines for {CPUS} CPUs", marks.svm_lines))
    } else {
        None
    };
    match problem {
        None => Ok(marks),
        Some(p) => {
            Err(format!("bench boot failed: {p}\n$ {}\n--- serial log ---\n{log}--- end ---", util::describe(&cmd))
                .into())
        }
    }
}

/// (median, min, max); the median of an even count is the mean of the middle two.
fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2 };
    (median, v[0], v[n - 1])
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Replaces the marked section of `doc` with `section`, or appends it.
fn splice(doc: &str, section: &str) -> String {
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{}{}", &doc[..b], section, &doc[e + END.len()..])
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

    type Pick = fn(&Marks) -> Option<Duration>;
    let rows: [(&str, Pick); 4] = [
        ("first Keel line (banner)", |m| m.banner),
        ("last `CPU<n>: SVM enabled` line", |m| m.last_svm),
        ("`Powering off`", |m| m.power_off),
        ("QEMU exited", |m| Some(m.exit)),
    ];
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

    if args.no_write || args.elf.elf.is_some() {
        eprintln!("bench: docs/benchmarks.md left alone (--no-write or --elf)");
        return Ok(());
    }
    let path = util::root().join(DOC);
    let doc = match std::fs::read_to_string(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Benchmarks\n\nFigures measured on real runs; each section says how and where.\n".into()
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, splice(&doc, &section))?;
    eprintln!("bench: wrote {DOC}");
    Ok(())
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
        let first = splice("# Benchmarks\n\nintro\n", &format!("{BEGIN}\nA\n{END}"));
        assert_eq!(first, format!("# Benchmarks\n\nintro\n\n{BEGIN}\nA\n{END}\n"));
        let doc = format!("{first}\n## Other\nkeep\n");
        let second = splice(&doc, &format!("{BEGIN}\nB\n{END}"));
        assert!(second.contains("\nB\n") && !second.contains("\nA\n"));
        assert!(second.ends_with("## Other\nkeep\n"));
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
