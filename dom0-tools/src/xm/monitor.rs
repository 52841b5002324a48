//! The per-domain monitor that `xm create` leaves behind, as `xl create` does (tools/xl/xl_vmcontrol.c: the child
//! that waits for the domain's death): a detached process that keeps the parsed config, watches `@releaseDomain`
//! through xenstored, reads getdomaininfo for its domain on each event, and applies `on_poweroff`, `on_reboot` or
//! `on_crash` when the domain shuts down ([`super::onshutdown`]'s rule and loop). After a restart it follows the new
//! domain; it ends when its domain is destroyed (by itself or by `xm destroy`), or left as it is (preserve).
//!
//! - [`spawn`] forks twice (the monitor is re-parented to init and is nobody's zombie), starts a new session,
//!   sends stdin to /dev/null and stdout/stderr to `/var/log/xen/xl-NAME.log` (xl's file), names the process
//!   `xm-monitor`, and runs [`run`].
//! - While it follows domain N, `/run/xen/xm-monitor-N.pid` holds its pid: `xm shutdown -w` / `xm reboot -w`
//!   ([`follows`]) then wait until the monitor has acted (the domain gone, or no longer followed) rather than only
//!   until the domain has shut down.
//! - The coredump actions dump through `xm dump-core`'s own handler ([`dump_core_to`]); a failed dump is logged
//!   and the destroy or restart still happens (as xl).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_config::DomainConfig;
use keel_xenstore::client::Client;

use super::lifecycle::{Ctx, Hypervisor, XcHypervisor};
use super::onshutdown::{watch, Builder, Outcome};
use super::XmError;

/// Where a monitor records the domain it follows.
pub const RUN_DIR: &str = "/run/xen";
/// Where a monitor logs (xl's `XEN_LOG_DIR`).
pub const LOG_DIR: &str = "/var/log/xen";
/// The monitor's process name (`/proc/PID/comm`).
pub const PROCESS_NAME: &str = "xm-monitor";
/// The token of its `@releaseDomain` watch.
const TOKEN: &str = "xm-monitor";

/// The monitor's log for domain `name` (xl's `xl-NAME.log`).
pub fn log_path(name: &str) -> PathBuf {
    Path::new(LOG_DIR).join(format!("xl-{name}.log"))
}

/// The file naming the monitor that follows domain `domid`, under `dir`.
pub fn pid_path(dir: &Path, domid: u16) -> PathBuf {
    dir.join(format!("xm-monitor-{domid}.pid"))
}

/// Whether a live monitor follows domain `domid`.
pub fn follows(domid: u16) -> bool {
    follows_in(Path::new(RUN_DIR), domid)
}

/// [`follows`] with the pid files under `dir`: the file exists and names a live process.
pub fn follows_in(dir: &Path, domid: u16) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_path(dir, domid)) else { return false };
    let Ok(pid) = text.trim().parse::<libc::pid_t>() else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only asks whether process `pid` exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Records that this process follows domain `domid` (under `dir`).
fn claim(dir: &Path, domid: u16) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(pid_path(dir, domid), format!("{}\n", std::process::id()))
}

/// Forgets that this process follows domain `domid` (under `dir`); a file another monitor wrote is left alone.
fn release(dir: &Path, domid: u16) {
    let path = pid_path(dir, domid);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == std::process::id().to_string()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Starts the detached monitor of domain `domid`, created from `config`. Returns once the monitor runs on its own
/// (the caller's stdout and stderr are not kept open by it).
pub fn spawn(config: &DomainConfig, domid: u16) -> Result<(), XmError> {
    let fail = |what: &str, e: std::io::Error| XmError::Failed(format!("monitor: {what}: {e}"));
    std::fs::create_dir_all(LOG_DIR).map_err(|e| fail(LOG_DIR, e))?;
    let path = log_path(&config.name);
    let log = File::options().create(true).append(true).open(&path).map_err(|e| fail(&path.to_string_lossy(), e))?;
    let null = File::options().read(true).write(true).open("/dev/null").map_err(|e| fail("/dev/null", e))?;
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
    // SAFETY: xm is single-threaded here (nothing it ran before spawned a thread), so the child is a complete copy
    // of the process; the child only forks again and exits, or runs the monitor.
    match unsafe { libc::fork() } {
        -1 => Err(fail("fork", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: setsid and fork act on this (single-threaded) child only; _exit ends it without unwinding
            // into the parent's code.
            unsafe {
                libc::setsid();
                match libc::fork() {
                    0 => {}
                    -1 => libc::_exit(1),
                    _ => libc::_exit(0),
                }
            }
            detach(&log, &null);
            drop((log, null));
            let code = run(config, domid);
            // SAFETY: ends the monitor; nothing of the parent's xm runs after the monitor's work.
            unsafe { libc::_exit(code) }
        }
        child => {
            let mut status = 0;
            // SAFETY: waits for the intermediate child just forked, writing its status into a local.
            unsafe { libc::waitpid(child, &mut status, 0) };
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err(XmError::Failed("monitor: the second fork failed".into()))
            }
        }
    }
}

/// Points stdin at /dev/null and stdout/stderr at `log`, leaves the caller's directory, and names the process.
fn detach(log: &File, null: &File) {
    // SAFETY: dup2 replaces descriptors 0-2 with ones this process owns (both files outlive the calls); chdir gets
    // a NUL-terminated literal; PR_SET_NAME reads a NUL-terminated name of at most 16 bytes.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
        libc::chdir(c"/".as_ptr());
        libc::prctl(libc::PR_SET_NAME, c"xm-monitor".as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// One monitor log line (stderr is the log file once detached).
fn log(line: String) {
    eprintln!("{line}");
}

/// The hypervisor as the monitor sees it: getdomaininfo and the domctls through privcmd, and [`Hypervisor::wait`]
/// blocking until `@releaseDomain` fires (or, if xenstored is gone, a second).
struct Watching {
    hv: XcHypervisor,
    events: Option<Client>,
}

impl Hypervisor for Watching {
    super::lifecycle::pass_domctls_to!(hv);
    fn domain_info(&mut self, domid: u16) -> Result<Option<keel_abi::domctl::GetDomainInfo>, XmError> {
        self.hv.domain_info(domid)
    }
    fn wait(&mut self) {
        if let Some(events) = &mut self.events {
            match events.wait_event() {
                Ok(_) => return,
                Err(e) => {
                    log(format!("xenstore watch lost ({e}): polling the domain every second"));
                    self.events = None;
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Rebuilds the domain from its config (a restart), and moves the monitor's pid file to the new domain.
struct Rebuilder {
    run_dir: PathBuf,
    following: u16,
}

impl Builder for Rebuilder {
    fn create(&mut self, config: &DomainConfig) -> Result<u16, XmError> {
        let id = super::create::start_domain(config, false)?;
        release(&self.run_dir, self.following);
        if let Err(e) = claim(&self.run_dir, id) {
            log(format!("cannot record the monitor of domain {id}: {e}"));
        }
        self.following = id;
        log(format!("Started domain {} (id={id})", config.name));
        log(format!("Waiting for domain {} (domid {id}) to die [pid {}]", config.name, std::process::id()));
        Ok(id)
    }
    fn dump_core(&mut self, domid: u16, path: &Path) -> Result<(), XmError> {
        dump_core_to(domid, path)
    }
}

/// Dumps domain `domid`'s core to `path` as `xm dump-core` does (the domain paused around it, not destroyed: the
/// action that follows does that). The dump directory is made first.
pub fn dump_core_to(domid: u16, path: &Path) -> Result<(), XmError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| XmError::Failed(format!("{}: {e}", dir.display())))?;
    }
    let summary = super::dumpcore::dump_domain_core(domid, path)?;
    log(format!("dumped domain {domid}'s core to {}: {summary:?}", path.display()));
    Ok(())
}

/// The monitor of domain `domid` (created from `config`), in the foreground: follows it until it is destroyed or
/// left; the exit status (0, or 1 when the monitor could not do its job).
pub fn run(config: &DomainConfig, domid: u16) -> i32 {
    let run_dir = PathBuf::from(RUN_DIR);
    log(format!("Waiting for domain {} (domid {domid}) to die [pid {}]", config.name, std::process::id()));
    let xc = match keel_xenctrl::Xc::open() {
        Ok(xc) => xc,
        Err(e) => {
            log(format!("cannot open privcmd: {e}"));
            return 1;
        }
    };
    let open = || Client::open().map_err(|e| format!("cannot reach xenstore: {e}"));
    let (mut events, mut xs) = match (open(), open()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            log(e);
            return 1;
        }
    };
    // The watch first: an event after this is queued, so a shutdown between a look and the wait is not missed.
    if let Err(e) = events.watch("@releaseDomain", TOKEN) {
        log(format!("cannot watch @releaseDomain: {e}"));
        return 1;
    }
    if let Err(e) = claim(&run_dir, domid) {
        log(format!("cannot record the monitor of domain {domid}: {e}"));
    }
    let mut hv = Watching { hv: XcHypervisor(xc), events: Some(events) };
    let mut builder = Rebuilder { run_dir: run_dir.clone(), following: domid };
    let mut now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let outcome = watch(&mut Ctx { hv: &mut hv, xs: &mut xs }, &mut builder, domid, config, &mut now, &mut log);
    release(&run_dir, builder.following);
    match outcome {
        Ok(Outcome::Left) => {
            log(format!("Domain {} is left as it is: no longer watched", builder.following));
            0
        }
        Ok(_) => {
            log(format!("Domain {} has been destroyed.", builder.following));
            0
        }
        Err(e) => {
            log(format!("monitor of domain {} ends: {e}", builder.following));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keel-monitor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_pid_file_names_a_live_monitor() {
        let d = dir("pid");
        assert!(!follows_in(&d, 7), "no file");
        claim(&d, 7).unwrap();
        assert_eq!(std::fs::read_to_string(pid_path(&d, 7)).unwrap(), format!("{}\n", std::process::id()));
        assert!(follows_in(&d, 7), "this process is alive");
        assert!(!follows_in(&d, 8));
        release(&d, 7);
        assert!(!pid_path(&d, 7).exists());
        assert!(!follows_in(&d, 7));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_dead_or_foreign_monitor_does_not_count_and_is_not_removed() {
        let d = dir("dead");
        std::fs::create_dir_all(&d).unwrap();
        // A child that has exited (and been reaped): its pid names no process.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        std::fs::write(pid_path(&d, 3), format!("{pid}\n")).unwrap();
        assert!(!follows_in(&d, 3));
        for junk in ["", "x\n", "0\n", "-1\n"] {
            std::fs::write(pid_path(&d, 4), junk).unwrap();
            assert!(!follows_in(&d, 4), "{junk:?}");
        }
        // Another process's file stays.
        release(&d, 3);
        assert!(pid_path(&d, 3).exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_log_is_xls() {
        assert_eq!(log_path("web"), PathBuf::from("/var/log/xen/xl-web.log"));
        assert!(PROCESS_NAME.len() < 16, "fits the kernel's comm");
    }
}
