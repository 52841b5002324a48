//! `xenconsoled [-i] [--log=none|guest|hv|all] [--log-dir=DIR] [--pid-file=FILE]`: dom0's console daemon, with
//! Xen's options (`hv` and `all` also name the hypervisor's log, which Keel's daemon does not write: `xm dmesg`
//! reads it). `--self-check` tries the daemon's devices on a loopback console inside dom0 and exits. Without `-i` it
//! detaches as Xen's does, after its parent wrote the child's pid to the pid file.

use keel_consoled::daemon::{Daemon, Options, Xen};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: xenconsoled [-i|--interactive] [--log=none|guest|hv|all] [--log-dir=DIR] [--pid-file=FILE]";

fn main() -> ExitCode {
    let mut opts = Options::default();
    let mut interactive = false;
    let mut pid_file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{what} needs a value"))
        };
        let r: Result<(), String> = match key.as_str() {
            "-i" | "--interactive" => {
                interactive = true;
                Ok(())
            }
            "--log" => value("--log").and_then(|v| match v.as_str() {
                "none" | "hv" | "guest" | "all" => {
                    opts.log_guest = v == "guest" || v == "all";
                    Ok(())
                }
                other => Err(format!("--log={other}: expected none, guest, hv or all")),
            }),
            "--log-dir" => value("--log-dir").map(|v| opts.log_dir = PathBuf::from(v)),
            "--pid-file" => value("--pid-file").map(|v| pid_file = Some(PathBuf::from(v))),
            "--self-check" => {
                return match keel_consoled::selfcheck::run() {
                    Ok(s) => {
                        println!("xenconsoled: self-check ok {s}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        println!("xenconsoled: self-check failed: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown option {other}")),
        };
        if let Err(e) = r {
            eprintln!("xenconsoled: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    // What cannot work is said before detaching.
    let xen = match Xen::open() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("xenconsoled: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !interactive {
        // SAFETY: no other thread exists yet (the daemon's watch thread starts after this), so the child is a
        // complete copy of this single-threaded process.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            eprintln!("xenconsoled: fork: {}", std::io::Error::last_os_error());
            return ExitCode::FAILURE;
        }
        if pid > 0 {
            if let Some(p) = &pid_file {
                if let Err(e) = std::fs::write(p, format!("{pid}\n")) {
                    eprintln!("xenconsoled: {}: {e}", p.display());
                }
            }
            return ExitCode::SUCCESS;
        }
        // SAFETY: setsid takes no arguments; the child leaves the init script's session.
        unsafe { libc::setsid() };
    } else if let Some(p) = &pid_file {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            eprintln!("xenconsoled: {}: {e}", p.display());
        }
    }
    let log_dir = opts.log_dir.clone();
    let log_guest = opts.log_guest;
    let mut d = match Daemon::new(xen, opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("xenconsoled: {e}");
            return ExitCode::FAILURE;
        }
    };
    d.handle_signals();
    if log_guest {
        eprintln!("xenconsoled: logging guest consoles to {}", log_dir.display());
    }
    match d.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenconsoled: {e}");
            ExitCode::FAILURE
        }
    }
}
