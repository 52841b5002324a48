//! QEMU harness for Keel's boot tests (and, in [`bochs`], the Bochs one, which returns the same [`Run`]).
//!
//! [`Qemu`] builds a command line (accelerator, CPU model, `-smp`, `-m`, a `-kernel` PVH boot or a
//! GRUB `-cdrom` boot), runs it under `timeout -k 5 <secs>` with the serial port in a file (or, with
//! [`Qemu::timed`], on a pipe whose lines are timestamped on the host as they arrive: [`run_timed`], which
//! `cargo xtask bench` uses too), and returns a [`Run`]: exit status plus the serial log. Every assertion
//! goes through [`Run`] (or the free functions, which take the log), so a failing test always prints the
//! complete serial log.
//!
//! Environment: `KEEL_ACCEL` (tcg, the default, or kvm), `KEEL_QEMU` (the QEMU binary),
//! `KEEL_LOG_DIR` (keep each run's serial log there as `<name>.log`). `cargo xtask test` also sets the
//! artifact paths read by [`env_path`]: `KEEL_ELF`, `KEEL_ISO`, `KEEL_VMLINUZ`, `KEEL_INITRD`, and
//! `KEEL_GUESTS`, the directory of the test-guest ELFs that [`xtf`] puts on GRUB ISOs ([`iso`]).

pub mod bochs;
pub mod disk;
pub mod iso;
pub mod xtf;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Serial lines Keel prints start with this.
pub const PREFIX: &str = "(KEEL) ";
/// The CPU model under TCG: AMD SVM with nested paging.
pub const TCG_CPU: &str = "qemu64,+svm,+npt";
/// `timeout`'s status when it had to stop QEMU (SIGTERM) or kill it (SIGKILL after `-k 5`).
pub const TIMED_OUT: [i32; 2] = [124, 137];

/// An artifact path from the environment `cargo xtask test` prepares.
pub fn env_path(var: &str) -> PathBuf {
    let Some(value) = std::env::var_os(var) else {
        panic!("{var} is not set: run `cargo xtask test` (it builds the images and sets {var})");
    };
    let path = PathBuf::from(value);
    assert!(path.is_file(), "{var}={} does not exist: run `cargo xtask test`", path.display());
    path
}

/// A string from the environment, or `default`.
pub fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Size in bytes of a file the test compares against Keel's report.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display())).len()
}

/// How QEMU loads Keel.
#[derive(Debug, Clone)]
pub enum Boot {
    /// `-kernel elf -append …` through the ELF's PVH note; `-initrd` becomes the one module.
    Kernel { elf: PathBuf, append: String, initrd: Option<PathBuf> },
    /// GRUB from an ISO (`-cdrom iso -boot d`); the command line and modules are in its grub.cfg.
    Cdrom { iso: PathBuf },
}

/// A QEMU invocation under construction.
#[derive(Debug, Clone)]
pub struct Qemu {
    name: String,
    accel: String,
    cpu: String,
    smp: u32,
    mem: String,
    boot: Boot,
    timeout: Duration,
    extra: Vec<String>,
    timed: bool,
}

impl Qemu {
    /// Accelerator from `KEEL_ACCEL` (default tcg); CPU model to match; 1 CPU, 512M, 90 s.
    pub fn new(boot: Boot) -> Self {
        let accel = env_or("KEEL_ACCEL", "tcg");
        let cpu = if accel == "tcg" { TCG_CPU } else { "host" }.to_string();
        Qemu {
            name: std::thread::current().name().unwrap_or("qemu").rsplit("::").next().unwrap_or("qemu").to_string(),
            accel,
            cpu,
            smp: 1,
            mem: "512M".into(),
            boot,
            timeout: Duration::from_secs(90),
            extra: Vec::new(),
            timed: false,
        }
    }

    /// Boots `elf` through its PVH note with `append` as the command line.
    pub fn kernel(elf: impl Into<PathBuf>, append: &str) -> Self {
        Self::new(Boot::Kernel { elf: elf.into(), append: append.into(), initrd: None })
    }

    /// Boots a GRUB ISO.
    pub fn cdrom(iso: impl Into<PathBuf>) -> Self {
        Self::new(Boot::Cdrom { iso: iso.into() })
    }

    /// Names the run in messages and in `KEEL_LOG_DIR` (default: the test's name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn accel(mut self, accel: &str) -> Self {
        self.accel = accel.into();
        self
    }

    pub fn accel_name(&self) -> &str {
        &self.accel
    }

    pub fn cpu(mut self, model: &str) -> Self {
        self.cpu = model.into();
        self
    }

    pub fn smp(mut self, cpus: u32) -> Self {
        self.smp = cpus;
        self
    }

    /// Guest memory in QEMU's syntax, e.g. `512M`.
    pub fn mem(mut self, mem: &str) -> Self {
        self.mem = mem.into();
        self
    }

    /// Adds `-initrd` to a `-kernel` boot.
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        match &mut self.boot {
            Boot::Kernel { initrd, .. } => *initrd = Some(path.into()),
            Boot::Cdrom { .. } => {
                panic!("initrd() needs a -kernel boot; an ISO carries its modules")
            }
        }
        self
    }

    pub fn timeout_secs(mut self, secs: u64) -> Self {
        self.timeout = Duration::from_secs(secs);
        self
    }

    /// Any further QEMU argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Serial port on QEMU's stdout (a pipe) instead of a file: every line is timestamped on the host as it
    /// arrives ([`Run::timed_lines`], [`Run::assert_timed_line`]).
    pub fn timed(mut self) -> Self {
        self.timed = true;
        self
    }

    /// QEMU's arguments, with the serial port written to `serial` (to stdout when [`Qemu::timed`]).
    pub fn args(&self, serial: &Path) -> Vec<String> {
        let serial = if self.timed { "stdio".to_string() } else { format!("file:{}", serial.display()) };
        let mut a: Vec<String> = [
            "-accel",
            &self.accel,
            "-cpu",
            &self.cpu,
            "-smp",
            &self.smp.to_string(),
            "-m",
            &self.mem,
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-serial",
            &serial,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &self.boot {
            Boot::Kernel { elf, append, initrd } => {
                a.extend(["-kernel".into(), elf.display().to_string()]);
                a.extend(["-append".into(), append.clone()]);
                if let Some(initrd) = initrd {
                    a.extend(["-initrd".into(), initrd.display().to_string()]);
                }
            }
            Boot::Cdrom { iso } => {
                a.extend(["-cdrom".into(), iso.display().to_string()]);
                a.extend(["-boot".into(), "d".into()]);
            }
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Runs QEMU to the end (power-off, debug exit, or the timeout) and collects the serial log.
    pub fn run(self) -> Run {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let serial = std::env::temp_dir().join(format!(
            "keel-test-{}-{}-{}.serial",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            self.name
        ));
        let qemu = env_or("KEEL_QEMU", "qemu-system-x86_64");
        let secs = self.timeout.as_secs().max(1).to_string();
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &secs, &qemu]).args(self.args(&serial)).stdin(Stdio::null());
        // QEMU also logs CPU resets (a triple fault of Keel itself ends QEMU with status 0 under -no-reboot, like
        // a power-off) and guest errors, into the log directory (or a temporary file); a triple fault's dump joins
        // the failure report.
        let log_dir = std::env::var_os("KEEL_LOG_DIR");
        let debug_log = match &log_dir {
            Some(dir) => Path::new(dir).join(format!("{}.qemu.log", self.name)),
            None => serial.with_extension("qemu.log"),
        };
        let _ = std::fs::create_dir_all(debug_log.parent().expect("a file in a directory"));
        cmd.args(["-d", "cpu_reset,guest_errors", "-D"]).arg(&debug_log);
        let command = describe(&cmd);
        eprintln!("[{}] $ {command}", self.name);

        let (exit_code, log, qemu_output, timed_lines, elapsed) = if self.timed {
            let t = run_timed(&mut cmd).unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
            let log: String = t.lines.iter().map(|l| format!("{}\n", l.text)).collect();
            (t.status.code(), log, t.stderr, t.lines, t.elapsed)
        } else {
            let start = Instant::now();
            let out = cmd.output().unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
            let elapsed = start.elapsed();
            let bytes = std::fs::read(&serial).unwrap_or_default();
            let _ = std::fs::remove_file(&serial);
            let mut qemu_output = String::from_utf8_lossy(&out.stdout).into_owned();
            qemu_output.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.code(), String::from_utf8_lossy(&bytes).replace('\r', ""), qemu_output, Vec::new(), elapsed)
        };
        let mut qemu_output = qemu_output;
        let tail = triple_fault_dump(&debug_log);
        let cpu_triple_fault = tail.is_some();
        if let Some(tail) = tail {
            qemu_output.push_str(&tail);
        }
        if log_dir.is_none() {
            let _ = std::fs::remove_file(&debug_log);
        }
        if let Some(dir) = log_dir {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(Path::new(&dir).join(format!("{}.log", self.name)), &log);
            if self.timed {
                let stamped: String = timed_lines
                    .iter()
                    .map(|l| format!("{:9.3} {:.3} {}\n", l.at.as_secs_f64(), l.unix_secs(), l.text))
                    .collect();
                let _ = std::fs::write(Path::new(&dir).join(format!("{}.timed.log", self.name)), stamped);
            }
        }
        let run = Run {
            name: self.name,
            emulator: "QEMU",
            command,
            exit_code,
            log,
            qemu_output,
            elapsed,
            timed_lines,
            cpu_triple_fault,
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

/// From QEMU's `-d cpu_reset` log: the lines from the first triple fault on (at most 60), if there was one.
fn triple_fault_dump(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let at = text.find("Triple fault")?;
    let dump: Vec<&str> = text[at..].lines().take(60).collect();
    Some(format!("\nQEMU's -d cpu_reset log ({}):\n{}\n", path.display(), dump.join("\n")))
}

/// The shell form of a command, for messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One serial line and when it reached the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    /// Since the program was spawned.
    pub at: Duration,
    /// The host's clock when the line arrived.
    pub wall: SystemTime,
    /// The line without its `\n` and with `\r` removed.
    pub text: String,
}

impl TimedLine {
    /// Host wall-clock time of arrival in seconds since the Unix epoch.
    pub fn unix_secs(&self) -> f64 {
        self.wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }
}

/// A program run by [`run_timed`].
#[derive(Debug)]
pub struct Timed {
    pub status: ExitStatus,
    /// Its stdout, line by line, each timestamped as it arrived.
    pub lines: Vec<TimedLine>,
    /// Its stderr.
    pub stderr: String,
    /// From spawning to its exit.
    pub elapsed: Duration,
}

/// Reads `reader` to its end, timestamping each line (relative to `start`) as it arrives; a last line
/// without `\n` counts too.
pub fn read_timed_lines(reader: impl Read, start: Instant) -> std::io::Result<Vec<TimedLine>> {
    let mut reader = BufReader::new(reader);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(lines);
        }
        let (at, wall) = (start.elapsed(), SystemTime::now());
        let text = String::from_utf8_lossy(&buf).replace(['\r', '\n'], "");
        lines.push(TimedLine { at, wall, text });
    }
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr piped) to its end, timestamping each line of its
/// stdout on arrival: for QEMU with `-serial stdio`, each serial line.
pub fn run_timed(cmd: &mut Command) -> std::io::Result<Timed> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut err = child.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let lines = read_timed_lines(child.stdout.take().expect("piped"), start);
    let status = child.wait()?;
    let elapsed = start.elapsed();
    let stderr = stderr.join().unwrap_or_default();
    Ok(Timed { status, lines: lines?, stderr, elapsed })
}

/// A finished QEMU (or Bochs) run: how it ended and what Keel printed.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    /// "QEMU" or "Bochs", for messages.
    pub emulator: &'static str,
    pub command: String,
    /// QEMU's (or `timeout`'s) exit status; `None` if killed by a signal. Bochs runs translate theirs into
    /// QEMU's terms ([`bochs`]): 0 for an ACPI power-off, `(v << 1) | 1` for Keel's debug exit with `v`.
    pub exit_code: Option<i32>,
    /// The serial log, `\r` removed.
    pub log: String,
    /// What QEMU itself wrote to stdout/stderr (for Bochs: the harness's notes and Bochs's panics and errors).
    pub qemu_output: String,
    pub elapsed: Duration,
    /// The serial lines with their host arrival times ([`Qemu::timed`] runs; empty otherwise).
    pub timed_lines: Vec<TimedLine>,
    /// QEMU logged a triple fault of Keel itself (a host CPU, not a guest).
    pub cpu_triple_fault: bool,
}

/// What Keel logs when a guest's last page fault was on an IDT that the guest's page tables map.
const UNREAD_IDT: &str = "the CPU did not read a present IDT";

impl Run {
    /// Whether the run was ended by the defect of QEMU TCG's nested SVM that docs/testing.md describes ("A QEMU
    /// defect") rather than by Keel or its guest, and how it showed: either QEMU logged a triple fault of Keel itself
    /// and Keel had logged no error of its own before it, or a guest triple-faulted and Keel found that its last page
    /// fault was on an IDT its page tables map. None otherwise.
    pub fn emulator_defect(&self) -> Option<String> {
        if let Some(line) = self.keel_lines().find(|l| l.contains(UNREAD_IDT)) {
            return Some(format!("a guest's CPU could not read its mapped IDT: {line}"));
        }
        let keel_error = self.keel_lines().any(|l| {
            l.contains("EXCEPTION") || l.contains("panicked") || l.contains("crashed") || l.contains("Rebooting")
        });
        (self.emulator == "QEMU" && self.cpu_triple_fault && !keel_error)
            .then(|| "Keel itself triple-faulted under QEMU with no error of its own logged before".to_string())
    }

    /// Records (with `KEEL_LOG_DIR`, as `<name>.retried`) and prints that this run is being repeated because of
    /// [`Self::emulator_defect`]; `cargo xtask test` lists these notes after its summary.
    pub fn note_emulator_retry(&self, why: &str) {
        let lines: Vec<&str> = self.log.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        let text = format!(
            "{why}\nThis is the QEMU TCG nested-SVM defect of docs/testing.md (\"A QEMU defect\"): the run was repeated \
             once.\nlast serial lines of the first run:\n{tail}\n"
        );
        eprintln!("[{}] WARNING: {text}", self.name);
        if let Some(dir) = std::env::var_os("KEEL_LOG_DIR") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(Path::new(&dir).join(format!("{}.retried", self.name)), &text);
            let _ = std::fs::write(Path::new(&dir).join(format!("{}.first.log", self.name)), &self.log);
        }
    }

    pub fn timed_out(&self) -> bool {
        self.exit_code.is_some_and(|c| TIMED_OUT.contains(&c))
    }

    fn status_text(&self) -> String {
        match self.exit_code {
            Some(c) if TIMED_OUT.contains(&c) => format!("timed out (status {c})"),
            Some(0) => "exit status 0".into(),
            // isa-debug-exit: QEMU exits with (value << 1) | 1.
            Some(c) if c % 2 == 1 => format!("exit status {c} (debug-exit value {:#x})", c >> 1),
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".into(),
        }
    }

    /// Panics with `msg`, the command, how the emulator ended, its own output and the whole serial log.
    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        let mut report = format!("[{}] {msg}\n", self.name);
        let _ = writeln!(report, "--- command ---\n{}", self.command);
        let (emulator, took) = (self.emulator, self.elapsed.as_secs_f64());
        let _ = writeln!(report, "--- {emulator} {} after {took:.1} s ---", self.status_text());
        if !self.qemu_output.trim().is_empty() {
            let _ = writeln!(report, "--- {emulator}'s own output ---\n{}", self.qemu_output.trim_end());
        }
        let _ = write!(report, "{}", log_block(&self.log));
        self.keep_failure(msg);
        panic!("{report}");
    }

    /// With `KEEL_LOG_DIR`, writes `<name>.failed` there: the failure, how the emulator ended and the last serial
    /// lines. `cargo xtask test` prints these files after its summary, where a shortened CI log still shows them.
    fn keep_failure(&self, msg: &str) {
        const TAIL: usize = 25;
        let Some(dir) = std::env::var_os("KEEL_LOG_DIR") else { return };
        let lines: Vec<&str> = self.log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TAIL)..];
        let mut text =
            format!("{msg}\n{} {} after {:.1} s\n", self.emulator, self.status_text(), self.elapsed.as_secs_f64());
        if !self.qemu_output.trim().is_empty() {
            let _ = writeln!(text, "{}'s own output:\n{}", self.emulator, self.qemu_output.trim_end());
        }
        let _ = writeln!(text, "last {} of {} serial lines:\n{}", tail.len(), lines.len(), tail.join("\n"));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(Path::new(&dir).join(format!("{}.failed", self.name)), text);
    }

    /// The emulator exited with status 0 (Keel powered off through ACPI).
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_exit_code(0)
    }

    #[track_caller]
    pub fn assert_exit_code(&self, code: i32) -> &Self {
        if self.exit_code != Some(code) {
            self.fail(&format!("expected {} exit status {code}, got {}", self.emulator, self.status_text()));
        }
        self
    }

    /// The log's lines.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.log.lines()
    }

    /// Keel's lines, each cut to start at its `(KEEL) ` prefix (GRUB may leave escape codes before
    /// the first one on the same line).
    pub fn keel_lines(&self) -> impl Iterator<Item = &str> {
        keel_lines(&self.log)
    }

    /// Lines containing `needle`.
    pub fn lines_matching<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = &'a str> {
        self.lines().filter(move |l| l.contains(needle))
    }

    pub fn count_lines_matching(&self, needle: &str) -> usize {
        count_lines_matching(&self.log, needle)
    }

    /// The first line containing `needle`.
    #[track_caller]
    pub fn assert_line(&self, needle: &str) -> &str {
        match self.lines().find(|l| l.contains(needle)) {
            Some(l) => l,
            None => self.fail(&format!("no serial line contains {needle:?}")),
        }
    }

    /// Some Keel line is exactly `line` (compared from its `(KEEL) ` prefix, trailing blanks ignored).
    #[track_caller]
    pub fn assert_exact_line(&self, line: &str) -> &Self {
        if !self.keel_lines().any(|l| l.trim_end() == line) {
            let prefix: String = line.chars().take_while(|&c| c != ':').collect();
            let near: Vec<&str> = self.keel_lines().filter(|l| l.starts_with(&prefix)).collect();
            self.fail(&format!("no serial line is exactly {line:?}; lines starting {prefix:?}: {near:#?}"));
        }
        self
    }

    /// Some Keel line is `head`, or `head` followed by a space and more (e.g. ` at 0x…`).
    #[track_caller]
    pub fn assert_line_starting(&self, head: &str) -> &str {
        let found = self
            .keel_lines()
            .find(|l| l.trim_end() == head || l.strip_prefix(head).is_some_and(|rest| rest.starts_with(' ')));
        match found {
            Some(l) => l,
            None => {
                let prefix: String = head.chars().take_while(|&c| c != ':').collect();
                let near: Vec<&str> = self.keel_lines().filter(|l| l.starts_with(&prefix)).collect();
                self.fail(&format!("no serial line starts with {head:?}; lines starting {prefix:?}: {near:#?}"))
            }
        }
    }

    #[track_caller]
    pub fn assert_no_line(&self, needle: &str) -> &Self {
        if let Some(l) = self.lines().find(|l| l.contains(needle)) {
            self.fail(&format!("unexpected serial line containing {needle:?}: {l:?}"));
        }
        self
    }

    /// Exactly `n` lines contain `needle`.
    #[track_caller]
    pub fn assert_count(&self, needle: &str, n: usize) -> &Self {
        let got = self.count_lines_matching(needle);
        if got != n {
            self.fail(&format!("expected {n} serial lines containing {needle:?}, found {got}"));
        }
        self
    }

    /// The rest of the first line containing `head`, after `head`, trimmed.
    #[track_caller]
    pub fn assert_value(&self, head: &str) -> &str {
        match self.lines().find_map(|l| l.find(head).map(|i| l[i + head.len()..].trim())) {
            Some(v) => v,
            None => self.fail(&format!("no serial line contains {head:?}")),
        }
    }

    /// The rest of the first line containing `head`, parsed as a `T`.
    #[track_caller]
    pub fn assert_parsed<T: std::str::FromStr>(&self, head: &str) -> T {
        let value = self.assert_value(head);
        match value.parse() {
            Ok(v) => v,
            Err(_) => self.fail(&format!("{head:?} is followed by {value:?}, not a {}", std::any::type_name::<T>())),
        }
    }

    /// The first timestamped line containing `needle` (the run must be [`Qemu::timed`]).
    #[track_caller]
    pub fn assert_timed_line(&self, needle: &str) -> &TimedLine {
        if self.timed_lines.is_empty() {
            self.fail("no timestamped lines: the run needs Qemu::timed()");
        }
        match self.timed_lines.iter().find(|l| l.text.contains(needle)) {
            Some(l) => l,
            None => self.fail(&format!("no serial line contains {needle:?}")),
        }
    }

    /// Each needle first appears on a later line than the needle before it.
    #[track_caller]
    pub fn assert_order(&self, needles: &[&str]) -> &Self {
        let mut after = 0;
        let mut previous = None;
        for needle in needles {
            match self.lines().enumerate().skip(after).find(|(_, l)| l.contains(needle)) {
                Some((i, _)) => after = i + 1,
                None => self.fail(&match previous {
                    Some(p) => format!("no line containing {needle:?} after the line with {p:?}"),
                    None => format!("no serial line contains {needle:?}"),
                }),
            }
            previous = Some(needle);
        }
        self
    }
}

/// The serial log between markers, for failure messages.
fn log_block(log: &str) -> String {
    format!(
        "--- serial log ({} lines) ---\n{}{}--- end of serial log ---\n",
        log.lines().count(),
        log,
        if log.is_empty() || log.ends_with('\n') { "" } else { "\n" }
    )
}

/// Keel's lines of `log`, each starting at its `(KEEL) ` prefix.
pub fn keel_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines().filter_map(|l| l.find(PREFIX).map(|i| &l[i..]))
}

/// How many lines of `log` contain `needle`.
pub fn count_lines_matching(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The first line of `log` containing `needle`; panics with the whole log if there is none.
#[track_caller]
pub fn assert_line<'a>(log: &'a str, needle: &str) -> &'a str {
    match log.lines().find(|l| l.contains(needle)) {
        Some(l) => l,
        None => panic!("no serial line contains {needle:?}\n{}", log_block(log)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\x1b[2J\x1b[H(KEEL) Keel v0.1.0\n(KEEL) Boot loader: GRUB 2.06\n\
                       (KEEL) CPU0: SVM enabled (NPT: yes, ASIDs: 16)\n\
                       (KEEL) CPU1: SVM enabled (NPT: yes, ASIDs: 16)\n(KEEL) Powering off\n";

    fn run(log: &str, code: i32) -> Run {
        Run {
            name: "unit".into(),
            emulator: "QEMU",
            command: "qemu".into(),
            exit_code: Some(code),
            log: log.into(),
            qemu_output: String::new(),
            elapsed: Duration::ZERO,
            timed_lines: Vec::new(),
            cpu_triple_fault: false,
        }
    }

    #[test]
    fn emulator_defect_is_recognised_only_by_its_signs() {
        let guest = "(KEEL) domain 0 (Domain-0) crashed: triple fault (vCPU 1, RIP 0x1, last injected None)\n\
                     (KEEL) d0v1: its last page fault (CR2 0xfffffe0000000080) was on its IDT, which its page tables \
                     map: the CPU did not read a present IDT\n";
        assert!(run(guest, 0).emulator_defect().is_some_and(|w| w.contains("mapped IDT")));
        let mut host = run(LOG, 0);
        assert_eq!(host.emulator_defect(), None);
        host.cpu_triple_fault = true;
        assert!(host.emulator_defect().is_some_and(|w| w.contains("Keel itself")));
        // A triple fault after Keel reported an error of its own is Keel's, not the emulator's.
        let mut after_error = run("(KEEL) EXCEPTION #GP on CPU0\n", 0);
        after_error.cpu_triple_fault = true;
        assert_eq!(after_error.emulator_defect(), None);
        let plain_crash = "(KEEL) domain 0 (Domain-0) crashed: triple fault (vCPU 1, RIP 0x1, last injected None)\n";
        assert_eq!(run(plain_crash, 0).emulator_defect(), None);
    }

    #[test]
    fn finds_and_counts_lines() {
        assert_eq!(count_lines_matching(LOG, "SVM enabled (NPT: yes"), 2);
        assert_eq!(assert_line(LOG, "Boot loader"), "(KEEL) Boot loader: GRUB 2.06");
        let r = run(LOG, 0);
        r.assert_line_starting("(KEEL) Boot loader: GRUB");
        r.assert_success()
            .assert_exact_line("(KEEL) Keel v0.1.0")
            .assert_count("SVM enabled", 2)
            .assert_order(&["CPU0: SVM", "CPU1: SVM", "Powering off"])
            .assert_no_line("EXCEPTION");
    }

    #[test]
    fn keel_lines_start_at_the_prefix() {
        assert_eq!(keel_lines(LOG).next(), Some("(KEEL) Keel v0.1.0"));
    }

    fn panic_text(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).expect_err("should panic");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn failures_carry_the_whole_log() {
        let text = panic_text(|| {
            run(LOG, 0).assert_line("Brought up 2 CPUs");
        });
        assert!(text.contains("no serial line contains \"Brought up 2 CPUs\""));
        assert!(text.contains("(KEEL) CPU1: SVM enabled"));
        assert!(text.contains("--- end of serial log ---"));

        let text = panic_text(|| {
            run(LOG, 124).assert_success();
        });
        assert!(text.contains("timed out") && text.contains("(KEEL) Powering off"));

        let text = panic_text(|| {
            assert_line(LOG, "nothing");
        });
        assert!(text.contains("(KEEL) Keel v0.1.0"));
    }

    #[test]
    fn line_starts_end_at_a_word() {
        let r = run("(KEEL) Module 0: type=gzip size=12 cmdline=\"\" at 0x1000\n", 0);
        r.assert_line_starting("(KEEL) Module 0: type=gzip size=12 cmdline=\"\"");
        let text = panic_text(|| {
            r.assert_line_starting("(KEEL) Module 0: type=gzip size=1");
        });
        assert!(text.contains("no serial line starts with"));
    }

    #[test]
    fn order_is_checked() {
        let text = panic_text(|| {
            run(LOG, 0).assert_order(&["Powering off", "CPU0: SVM"]);
        });
        assert!(text.contains("after the line with \"Powering off\""));
    }

    #[test]
    fn debug_exit_status_is_decoded() {
        assert_eq!(run("", 3).status_text(), "exit status 3 (debug-exit value 0x1)");
    }

    #[test]
    fn command_line_has_the_fixed_parts() {
        let q = Qemu::kernel("/k", "console=com1 selftest=boot").accel("tcg").cpu(TCG_CPU).smp(4);
        let a = q.args(Path::new("/tmp/s"));
        let joined = a.join(" ");
        for part in [
            "-accel tcg",
            "-cpu qemu64,+svm,+npt",
            "-smp 4",
            "-m 512M",
            "-display none",
            "-monitor none",
            "-no-reboot",
            "-device isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-serial file:/tmp/s",
            "-kernel /k",
        ] {
            assert!(joined.contains(part), "{part} missing from {joined}");
        }
        assert!(a.contains(&"console=com1 selftest=boot".to_string()));
        let iso = Qemu::cdrom("/k.iso").args(Path::new("/tmp/s")).join(" ");
        assert!(iso.contains("-cdrom /k.iso -boot d"));
        let timed = Qemu::cdrom("/k.iso").timed().args(Path::new("/tmp/s")).join(" ");
        assert!(timed.contains("-serial stdio") && !timed.contains("file:"));
    }

    #[test]
    fn timed_lines_are_split_and_stamped() {
        let start = Instant::now();
        let lines = read_timed_lines(&b"(KEEL) one\r\n\n(KEEL) (d0) two\nthree"[..], start).unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["(KEEL) one", "", "(KEEL) (d0) two", "three"]);
        assert!(lines.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(lines[0].unix_secs() > 1.0e9);

        let t = run_timed(Command::new("sh").args(["-c", "echo a; sleep 0.3; echo b; echo oops >&2; exit 3"])).unwrap();
        assert_eq!(t.status.code(), Some(3));
        assert_eq!(t.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let gap = t.lines[1].at - t.lines[0].at;
        assert!(gap >= Duration::from_millis(250), "{gap:?}");
        assert_eq!(t.stderr, "oops\n");
    }

    #[test]
    fn values_are_read_after_their_head() {
        let r = run("(KEEL) (d0) KEEL-CHECK: nproc 4 \n(KEEL) (d0) KEEL-CHECK: steal x\n", 0);
        assert_eq!(r.assert_value("KEEL-CHECK: nproc "), "4");
        assert_eq!(r.assert_parsed::<u32>("KEEL-CHECK: nproc "), 4);
        let text = panic_text(|| {
            r.assert_parsed::<u64>("KEEL-CHECK: steal ");
        });
        assert!(text.contains("not a u64"), "{text}");
        let text = panic_text(|| {
            r.assert_timed_line("nproc");
        });
        assert!(text.contains("needs Qemu::timed()"), "{text}");
    }
}
