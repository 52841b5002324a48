//! The xenstore client commands of Xen's xenstore-utils, in one program: run as `xenstore-read`, `xenstore-write`,
//! `xenstore-rm`, `xenstore-exists`, `xenstore-list`, `xenstore-ls`, `xenstore-watch` or `xenstore-chmod` (a link
//! of that name), or as `xenstore <command> ...`.
//!
//! It reaches the store as libxenstore does: `$XENSTORED_PATH` when set (a socket, or a device such as the kernel's
//! `/dev/xen/xenbus`, whose requests travel over dom0's ring), else xenstored's socket, else `/dev/xen/xenbus`.

use keel_xenstore::client::{Client, Error};
use keel_xenstore::XsError;

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let prog = std::path::Path::new(&args[0]).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let cmd = match prog.strip_prefix("xenstore-") {
        Some(c) => c.to_string(),
        None => {
            if args.len() < 2 {
                die_usage();
            }
            args.remove(1)
        }
    };
    let rest = &args[1..];
    let mut c = match Client::open() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xenstore-{cmd}: cannot reach xenstore: {e}");
            std::process::exit(1);
        }
    };
    let r = match cmd.as_str() {
        "read" => read(&mut c, rest),
        "write" => write(&mut c, rest),
        "rm" => rm(&mut c, rest),
        "exists" => exists(&mut c, rest),
        "list" => list(&mut c, rest),
        "ls" => ls(&mut c, rest),
        "watch" => watch(&mut c, rest),
        "chmod" => chmod(&mut c, rest),
        _ => die_usage(),
    };
    if let Err(e) = r {
        eprintln!("xenstore-{cmd}: {e}");
        std::process::exit(1);
    }
}

fn die_usage() -> ! {
    eprintln!("usage: xenstore {{read|write|rm|exists|list|ls|watch|chmod}} ARGS (or run as xenstore-<command>)");
    std::process::exit(2);
}

fn need(args: &[String]) -> Result<(), Error> {
    if args.is_empty() {
        die_usage();
    }
    Ok(())
}

fn read(c: &mut Client, args: &[String]) -> Result<(), Error> {
    need(args)?;
    for p in args.iter().filter(|a| !a.starts_with('-')) {
        let v = c.read(0, p).map_err(|e| with_path(e, p))?;
        println!("{}", String::from_utf8_lossy(&v));
    }
    Ok(())
}

fn with_path(e: Error, p: &str) -> Error {
    match e {
        Error::Store(x) => Error::Io(std::io::Error::other(format!("could not access {p}: {x}"))),
        other => other,
    }
}

fn write(c: &mut Client, args: &[String]) -> Result<(), Error> {
    if args.is_empty() || !args.len().is_multiple_of(2) {
        die_usage();
    }
    for pair in args.chunks(2) {
        c.write(0, &pair[0], pair[1].as_bytes()).map_err(|e| with_path(e, &pair[0]))?;
    }
    Ok(())
}

fn rm(c: &mut Client, args: &[String]) -> Result<(), Error> {
    need(args)?;
    for p in args.iter().filter(|a| !a.starts_with('-')) {
        c.rm(0, p).map_err(|e| with_path(e, p))?;
    }
    Ok(())
}

fn exists(c: &mut Client, args: &[String]) -> Result<(), Error> {
    need(args)?;
    for p in args {
        match c.read(0, p) {
            Ok(_) => {}
            Err(Error::Store(XsError::Enoent)) => std::process::exit(1),
            Err(e) => return Err(with_path(e, p)),
        }
    }
    Ok(())
}

fn list(c: &mut Client, args: &[String]) -> Result<(), Error> {
    need(args)?;
    for p in args.iter().filter(|a| !a.starts_with('-')) {
        for n in c.directory(0, p).map_err(|e| with_path(e, p))? {
            println!("{n}");
        }
    }
    Ok(())
}

/// `xenstore-ls [-f] [-p] [PATH]`: the tree below PATH, one node a line (`name = "value"`, indented one space a
/// level; `-f` full paths; `-p` permissions).
fn ls(c: &mut Client, args: &[String]) -> Result<(), Error> {
    let full = args.iter().any(|a| a == "-f");
    let perms = args.iter().any(|a| a == "-p");
    let root = args.iter().find(|a| !a.starts_with('-')).cloned().unwrap_or_else(|| "/".into());
    fn walk(c: &mut Client, dir: &str, depth: usize, full: bool, perms: bool) -> Result<(), Error> {
        for n in c.directory(0, dir)? {
            let p = if dir == "/" { format!("/{n}") } else { format!("{dir}/{n}") };
            let v = c.read(0, &p).unwrap_or_default();
            let shown = String::from_utf8_lossy(&v).escape_default().to_string();
            let mut line = if full { format!("{p} = \"{shown}\"") } else { format!("{:depth$}{n} = \"{shown}\"", "") };
            if perms {
                line.push_str(&format!("  ({})", c.get_perms(0, &p).unwrap_or_default().join(",")));
            }
            println!("{line}");
            walk(c, &p, depth + 1, full, perms)?;
        }
        Ok(())
    }
    walk(c, &root, 0, full, perms).map_err(|e| with_path(e, &root))
}

fn watch(c: &mut Client, args: &[String]) -> Result<(), Error> {
    let mut count: Option<u64> = None;
    let mut path = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-n" {
            count = it.next().and_then(|n| n.parse().ok());
        } else {
            path = Some(a.clone());
        }
    }
    let Some(path) = path else { die_usage() };
    c.watch(&path, "xenstore-watch").map_err(|e| with_path(e, &path))?;
    let mut seen = 0;
    while count.is_none_or(|n| seen < n) {
        let (p, _) = c.wait_event()?;
        println!("{p}");
        seen += 1;
    }
    Ok(())
}

fn chmod(c: &mut Client, args: &[String]) -> Result<(), Error> {
    let plain: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if plain.len() < 2 {
        die_usage();
    }
    let perms: Vec<String> = plain[1..].iter().map(|s| s.to_string()).collect();
    c.set_perms(0, plain[0], &perms).map_err(|e| with_path(e, plain[0]))
}
