//! Bochs harness: Keel booted from a GRUB ISO under Bochs 2.7, whose CPU models reach what QEMU's TCG cannot:
//! AMD SVM *with* NRIP save and flush-by-ASID ([`SVM_MODEL`]) and Intel VMX with EPT ([`VMX_MODEL`]). A run
//! returns the same [`Run`] as a QEMU run, so the same assertions (and the full serial log on failure) apply.
//!
//! A run: a bochsrc ([`Bochs::bochsrc`]) and a debugger script in a temporary directory, then
//! `timeout -s KILL -k 5 <secs> script -qfec "bochs -f bochsrc -q -rc cont.rc" /dev/null`. Debian's Bochs has no
//! `nogui` display and starts in its debugger: the `term` display needs a terminal (`script` gives it a pty) and
//! `cont.rc` says `c`. Bochs ignores SIGTERM, so `timeout` sends SIGKILL; `script` dies, the pty closes and Bochs
//! quits on the SIGHUP. COM1 goes to a file, Bochs's own log to another.
//!
//! How a run ends, and the [`Run::exit_code`] it gets (QEMU's terms, so `assert_success` means the same):
//! - Keel powers off through ACPI: Bochs exits by itself ("ACPI control: soft power off" in its log): `Some(0)`.
//! - Keel prints `(KEEL) Exiting with status <v>` and writes `v` to port 0xf4, QEMU's isa-debug-exit, which Bochs
//!   does not have: the harness stops Bochs at that line: `Some((v << 1) | 1)`, as QEMU would exit.
//! - Keel printed its test-mode summary (`(KEEL) xtf: <n> guests, <p> passed, <f> failed`) but neither of the
//!   above followed within [`SUMMARY_GRACE`]: the harness stops Bochs: `None`. So a run never waits for its
//!   timeout unless Keel hangs.
//! - The timeout: 137 ([`crate::TIMED_OUT`]; `timeout -s KILL` kills its own process group, itself included, so
//!   the harness sees SIGKILL and reports it as 137). Anything else: Bochs's own status (1 after a fatal panic).
//!
//! Bochs-specific settings, each measured on the 2-core CI machine:
//! - `ips=100000000` with `clock: sync=none`: emulated time is instructions / ips, and the BIOS's and GRUB's disk
//!   waits are modelled in emulated time, so a lower ips makes them pass sooner in wall time: the same one-guest
//!   boot took 24 s at `ips=500000000` and 7 s at `ips=100000000`. Keel's TSC then reads 100 MHz.
//! - `romimage: ..., options=fastboot` skips the BIOS's "Press F12 for boot menu" wait (50 s at 500 MIPS).
//! - Two CPUs by default. Bochs 2.7's VMRUN loads the guest's RFLAGS before it marks the CPU as in the guest, so
//!   with a guest IF of 0 it masks physical interrupts as if `V_INTR_MASKING` were off, and nothing unmasks them
//!   until the guest changes IF: a vCPU that spins with interrupts off is never preempted by Keel's timer. On one
//!   CPU, `cpuid` with 2 vCPUs hangs for that reason (vCPU 1 spins waiting for vCPU 0); QEMU does not.
//! - `panic: action=fatal` except for the CPUs (`report`): a triple fault inside an SVM guest goes through a Bochs
//!   "panic" before Bochs takes Keel's SHUTDOWN intercept, and would end the run there. It also breaks into the
//!   debugger, so `cont.rc` holds many `c`s. (ACPI power-off ends Bochs whatever the action.)
//! - The ELFs on the ISO lose their debug info ([`crate::xtf::small_xtf_iso`]): GRUB reads ~140 KB/s here.
//!
//! Environment: `KEEL_BOCHS` (the Bochs binary, default `bochs`), `KEEL_LOG_DIR` (each run's serial log as
//! `<name>.log` and Bochs's log as `<name>.bochs.log`).

use crate::xtf::{self, Module};
use crate::{describe, env_or, Run, TimedLine};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// AMD SVM with NPT, NRIP save, flush-by-ASID, LBR virtualization and pause filter (Bochs's AMD A8-5600K).
pub const SVM_MODEL: &str = "trinity_apu";
/// Intel VMX with EPT, VPID and unrestricted guest (Bochs's Core i7-2600K).
pub const VMX_MODEL: &str = "corei7_sandy_bridge_2600k";
/// Emulated instructions per emulated second (see the module notes).
pub const IPS: u64 = 100_000_000;
/// Seconds before a Bochs boot is stopped; GRUB, Keel and all the test guests take ~25 s.
pub const DEFAULT_TIMEOUT: u64 = 180;
/// How long after the xtf summary line Bochs may take to power off before the harness stops it.
pub const SUMMARY_GRACE: Duration = Duration::from_secs(10);
/// How often the harness looks at the serial log while Bochs runs.
const POLL: Duration = Duration::from_millis(200);
/// `c` commands in the debugger script: one is used at start and one at every guest triple fault.
const CONTINUES: usize = 1000;

const BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
const VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";

/// A Bochs invocation under construction.
#[derive(Debug, Clone)]
pub struct Bochs {
    name: String,
    iso: PathBuf,
    model: String,
    cpus: u32,
    megs: u32,
    ips: u64,
    timeout: Duration,
}

impl Bochs {
    /// Boots a GRUB ISO on the SVM model, 2 CPUs, 512 MB, [`IPS`], [`DEFAULT_TIMEOUT`].
    pub fn cdrom(iso: impl Into<PathBuf>) -> Self {
        Bochs {
            name: std::thread::current().name().unwrap_or("bochs").rsplit("::").next().unwrap_or("bochs").to_string(),
            iso: iso.into(),
            model: SVM_MODEL.into(),
            cpus: 2,
            megs: 512,
            ips: IPS,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT),
        }
    }

    /// Names the run in messages and in `KEEL_LOG_DIR` (default: the test's name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// A Bochs CPU model (`bochs --help cpu` lists them).
    pub fn model(mut self, model: &str) -> Self {
        self.model = model.into();
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn megs(mut self, megs: u32) -> Self {
        self.megs = megs;
        self
    }

    pub fn ips(mut self, ips: u64) -> Self {
        self.ips = ips;
        self
    }

    pub fn timeout_secs(mut self, secs: u64) -> Self {
        self.timeout = Duration::from_secs(secs);
        self
    }

    /// The bochsrc, with COM1 written to `serial` and Bochs's log to `log`.
    pub fn bochsrc(&self, serial: &Path, log: &Path) -> String {
        let lines = [
            "display_library: term".to_string(),
            "sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy".into(),
            "speaker: enabled=0".into(),
            format!("megs: {}", self.megs),
            format!("cpu: model={}, count={}, ips={}, reset_on_triple_fault=0", self.model, self.cpus, self.ips),
            "clock: sync=none, time0=local".into(),
            format!("romimage: file={BIOS}, options=fastboot"),
            format!("vgaromimage: file={VGA_BIOS}"),
            format!("ata0-master: type=cdrom, path={}, status=inserted", self.iso.display()),
            "boot: cdrom".into(),
            format!("com1: enabled=1, mode=file, dev={}", serial.display()),
            "port_e9_hack: enabled=1".into(),
            format!("log: {}", log.display()),
            format!(
                "panic: action=fatal, {}",
                (0..self.cpus).map(|n| format!("cpu{n}=report")).collect::<Vec<_>>().join(", ")
            ),
        ];
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Runs Bochs to the end (see the module notes) and collects the serial log.
    pub fn run(self) -> Run {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "keel-bochs-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            self.name
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let (rc, cont, serial, log) =
            (dir.join("keel.bxrc"), dir.join("cont.rc"), dir.join("serial.log"), dir.join("bochs.log"));
        let write = |path: &Path, text: String| {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        };
        let bochsrc = self.bochsrc(&serial, &log);
        write(&rc, bochsrc.clone());
        write(&cont, "c\n".repeat(CONTINUES));
        let terminal = std::fs::File::create(dir.join("terminal.txt")).expect("create the terminal capture");

        let bochs = env_or("KEEL_BOCHS", "bochs");
        let inner = format!("{bochs} -f {} -q -rc {}", rc.display(), cont.display());
        let secs = self.timeout.as_secs().max(1).to_string();
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "-k", "5", &secs, "script", "-qfec", &inner, "/dev/null"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(terminal.try_clone().expect("clone a file handle"))
            .stderr(terminal)
            // Its own process group, so that stopping it early reaches `script` below `timeout`.
            .process_group(0);
        let command = describe(&cmd);
        eprintln!("[{}] $ {command}", self.name);

        let start = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let mut summary_at = None;
        let mut stopped = None;
        let mut timed_lines = Vec::new();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for timeout/script/bochs") {
                break status;
            }
            let text = read_serial(&serial);
            stamp_new_lines(&text, start, &mut timed_lines);
            if summary_at.is_none() && xtf_summary(&text).is_some() {
                summary_at = Some(Instant::now());
            }
            let stop = match (debug_exit_value(&text), summary_at) {
                (Some(v), _) => Some(Stop::DebugExit(v)),
                (None, Some(at)) if at.elapsed() >= SUMMARY_GRACE => Some(Stop::AfterSummary),
                _ => None,
            };
            if let Some(stop) = stop {
                // Let Keel's last lines reach the file, then end the whole group (SIGHUP ends Bochs).
                std::thread::sleep(Duration::from_millis(500));
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
                stopped = Some(stop);
                let status = child.wait().expect("wait for timeout/script/bochs");
                // Bochs itself (below `script`, in the pty's session) quits on the hang-up: give it a moment to
                // finish its log.
                let quit = Instant::now();
                while quit.elapsed() < Duration::from_secs(3)
                    && !String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).contains("quit_sim called")
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                break status;
            }
            std::thread::sleep(POLL);
        };
        let elapsed = start.elapsed();

        let log_text = read_serial(&serial);
        if !log_text.is_empty() {
            // A last line without its newline counts too.
            stamp_new_lines(
                &format!("{}\n", log_text.strip_suffix('\n').unwrap_or(&log_text)),
                start,
                &mut timed_lines,
            );
        }
        let bochs_log = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        // `timeout -s KILL` sends SIGKILL to its whole process group, itself included: that is its timeout.
        let code = status.code().or_else(|| (status.signal() == Some(9)).then_some(137));
        let exit_code = exit_code(code, stopped, &bochs_log);
        let mut notes = String::new();
        match stopped {
            Some(Stop::DebugExit(v)) => notes.push_str(&format!(
                "[harness] Keel asked for debug exit {v} (port 0xf4, which Bochs lacks): stopped Bochs; status reported as \
                 QEMU's isa-debug-exit would: {}\n",
                (u32::from(v) << 1) | 1
            )),
            Some(Stop::AfterSummary) => notes.push_str(&format!(
                "[harness] Keel printed its xtf summary but neither powered off nor asked for a debug exit within {} s: \
                 stopped Bochs\n",
                SUMMARY_GRACE.as_secs()
            )),
            None => {}
        }
        notes.push_str(&significant_lines(&bochs_log));
        if let Some(dir) = std::env::var_os("KEEL_LOG_DIR") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(Path::new(&dir).join(format!("{}.log", self.name)), &log_text);
            let _ = std::fs::write(Path::new(&dir).join(format!("{}.bochs.log", self.name)), &bochs_log);
            let stamped: String =
                timed_lines.iter().map(|l| format!("{:9.3} {}\n", l.at.as_secs_f64(), l.text)).collect();
            let _ = std::fs::write(Path::new(&dir).join(format!("{}.timed.log", self.name)), stamped);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let run = Run {
            name: self.name,
            emulator: "Bochs",
            command: format!("{command}\n--- bochsrc ---\n{}", bochsrc.trim_end()),
            exit_code,
            log: log_text,
            qemu_output: notes,
            elapsed,
            timed_lines,
            cpu_triple_fault: false,
        };
        eprintln!(
            "[{}] {}, {:.1} s, {} serial lines",
            run.name,
            run.status_text(),
            elapsed.as_secs_f64(),
            run.log.lines().count()
        );
        run
    }
}

/// Why the harness stopped Bochs itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Keel wrote this value to port 0xf4.
    DebugExit(u8),
    /// [`SUMMARY_GRACE`] after the xtf summary.
    AfterSummary,
}

/// The serial log so far, `\r` removed.
fn read_serial(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace('\r', "")
}

/// Appends the complete lines of `text` past those already in `lines`, stamped now (to within [`POLL`]).
fn stamp_new_lines(text: &str, start: Instant, lines: &mut Vec<TimedLine>) {
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    for l in complete.split('\n').skip(lines.len()) {
        lines.push(TimedLine { at: start.elapsed(), wall: SystemTime::now(), text: l.to_string() });
    }
}

/// `v` of Keel's `(KEEL) Exiting with status <v>`, printed just before it writes `v` to port 0xf4.
fn debug_exit_value(log: &str) -> Option<u8> {
    crate::keel_lines(log).find_map(|l| l.strip_prefix("(KEEL) Exiting with status ")?.trim().parse().ok())
}

/// `(guests, passed, failed)` from Keel's `(KEEL) xtf: <n> guests, <p> passed, <f> failed`.
pub fn xtf_summary(log: &str) -> Option<(u32, u32, u32)> {
    crate::keel_lines(log).find_map(|l| {
        let rest = l.strip_prefix("(KEEL) xtf: ")?;
        let (n, rest) = rest.split_once(" guests, ")?;
        let (p, rest) = rest.split_once(" passed, ")?;
        let f = rest.trim_end().strip_suffix(" failed")?;
        Some((n.parse().ok()?, p.parse().ok()?, f.parse().ok()?))
    })
}

/// The run's exit status in QEMU's terms (see the module notes), from the status of `timeout` (`code`), whether
/// the harness stopped Bochs, and Bochs's log.
fn exit_code(code: Option<i32>, stopped: Option<Stop>, bochs_log: &str) -> Option<i32> {
    match stopped {
        Some(Stop::DebugExit(v)) => Some((i32::from(v) << 1) | 1),
        Some(Stop::AfterSummary) => None,
        None if bochs_log.contains("ACPI control: soft power off") => Some(0),
        None => code,
    }
}

/// Bochs's panics and errors (and its last line), for failure reports: at most 40 of them, repeats folded.
fn significant_lines(bochs_log: &str) -> String {
    // Bochs's log lines: `<ticks><level>[<module>] <text>`, level being one of d, i, e, p.
    let level = |l: &str| l.trim_start_matches(|c: char| c.is_ascii_digit()).chars().next();
    let mut out: Vec<String> = Vec::new();
    let mut last = String::new();
    let mut repeats = 0;
    for l in bochs_log.lines().filter(|l| matches!(level(l), Some('e' | 'p'))) {
        let text = l.trim_start_matches(|c: char| c.is_ascii_digit()).to_string();
        if text == last {
            repeats += 1;
            continue;
        }
        if repeats > 0 {
            out.push(format!("  (repeated {repeats} more times)"));
            repeats = 0;
        }
        out.push(l.to_string());
        last = text;
    }
    if repeats > 0 {
        out.push(format!("  (repeated {repeats} more times)"));
    }
    let shown = out.len().min(40);
    let mut text = String::new();
    if !out.is_empty() {
        text.push_str("Bochs's errors and panics:\n");
        text.push_str(&out[..shown].join("\n"));
        text.push('\n');
        if out.len() > shown {
            text.push_str(&format!("  ... {} more (KEEL_LOG_DIR keeps the whole log)\n", out.len() - shown));
        }
    }
    if let Some(l) = bochs_log.lines().rev().find(|l| !l.trim().is_empty()) {
        text.push_str(&format!("Bochs's last log line: {l}\n"));
    }
    text
}

/// Boots Keel in `xtf` mode with `modules` on a stripped ISO ([`xtf::small_xtf_iso`]) under Bochs CPU `model` on
/// 2 CPUs as run `name`, and returns the finished run (the ISO is removed afterwards).
pub fn boot_xtf(name: &str, model: &str, modules: &[Module], timeout_secs: u64) -> Run {
    let iso = xtf::small_xtf_iso(modules);
    let run = Bochs::cdrom(&iso).name(name).model(model).timeout_secs(timeout_secs).run();
    let _ = std::fs::remove_file(&iso);
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_has_the_headless_recipe() {
        let rc = Bochs::cdrom("/t/k.iso").model(VMX_MODEL).cpus(2).bochsrc(Path::new("/t/s"), Path::new("/t/b"));
        for line in [
            "display_library: term\n",
            "speaker: enabled=0\n",
            "cpu: model=corei7_sandy_bridge_2600k, count=2, ips=100000000, reset_on_triple_fault=0\n",
            "clock: sync=none, time0=local\n",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot\n",
            "ata0-master: type=cdrom, path=/t/k.iso, status=inserted\n",
            "boot: cdrom\n",
            "com1: enabled=1, mode=file, dev=/t/s\n",
            "log: /t/b\n",
            "panic: action=fatal, cpu0=report, cpu1=report\n",
        ] {
            assert!(rc.contains(line), "{line:?} missing from\n{rc}");
        }
        assert!(Bochs::cdrom("/k.iso")
            .bochsrc(Path::new("/s"), Path::new("/b"))
            .contains("model=trinity_apu, count=2"));
    }

    #[test]
    fn how_runs_end() {
        let keel = "\x1b[0m(KEEL) xtf: cpuid: CRASHED\n(KEEL) xtf: 1 guests, 0 passed, 1 failed\n\
                    (KEEL) Memory: 494 MiB free after the test guests\n(KEEL) Exiting with status 1\n";
        assert_eq!(xtf_summary(keel), Some((1, 0, 1)));
        assert_eq!(xtf_summary("(KEEL) xtf: 8 guests, 8 passed, 0 failed\n"), Some((8, 8, 0)));
        assert_eq!(xtf_summary("(KEEL) xtf: cpuid: SUCCESS\n"), None);
        assert_eq!(debug_exit_value(keel), Some(1));
        assert_eq!(debug_exit_value("(KEEL) Powering off\n"), None);

        let off = "02109384900p[ACPI  ] >>PANIC<< ACPI control: soft power off\n";
        assert_eq!(exit_code(Some(1), None, off), Some(0));
        assert_eq!(exit_code(None, Some(Stop::DebugExit(1)), ""), Some(3));
        assert_eq!(exit_code(None, Some(Stop::AfterSummary), ""), None);
        assert_eq!(exit_code(Some(137), None, "quit_sim"), Some(137));
        assert_eq!(exit_code(Some(1), None, "p[CPU0  ] >>PANIC<< exception(): 3rd (13)"), Some(1));
    }

    #[test]
    fn lines_are_stamped_once_complete() {
        let (start, mut lines) = (Instant::now(), Vec::new());
        let texts = |lines: &[TimedLine]| lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>();
        stamp_new_lines("(KEEL) a\n(KEEL) b", start, &mut lines);
        assert_eq!(texts(&lines), ["(KEEL) a"]);
        stamp_new_lines("(KEEL) a\n(KEEL) b\n\n(KEEL) c\n", start, &mut lines);
        assert_eq!(texts(&lines), ["(KEEL) a", "(KEEL) b", "", "(KEEL) c"]);
        assert!(lines.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn errors_are_folded() {
        let log = "00001i[CPU0  ] fine\n00002e[CPU0  ] RDMSR: Unknown register 0xc0010114\n\
                   00003e[CPU0  ] interrupt(long mode): vector must be within IDT table limits\n\
                   00003e[CPU0  ] interrupt(long mode): vector must be within IDT table limits\n\
                   00003e[CPU0  ] interrupt(long mode): vector must be within IDT table limits\n\
                   00004p[ACPI  ] >>PANIC<< ACPI control: soft power off\n00004i[SIM   ] quit_sim called with exit code 1\n";
        let text = significant_lines(log);
        assert!(text.contains("Unknown register 0xc0010114\n"), "{text}");
        assert_eq!(text.matches("vector must be within").count(), 1, "{text}");
        assert!(text.contains("(repeated 2 more times)"), "{text}");
        assert!(!text.contains("fine"), "{text}");
        assert!(text.ends_with("Bochs's last log line: 00004i[SIM   ] quit_sim called with exit code 1\n"), "{text}");
    }
}
