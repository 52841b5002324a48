//! dom0's xenstore daemon: serves the store on `/run/xenstored/socket` to dom0's tools.
//!
//! `xenstored [--socket PATH] [--pid-file PATH]`; it stays in the foreground (the init script starts it in the
//! background) and logs to standard error.

use keel_xenstore::server::Server;
use keel_xenstore::store::{Effect, Quota, Store};
use std::path::PathBuf;

fn main() {
    let mut socket = PathBuf::from(keel_xenstore::client::SOCKET);
    let mut pid_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // Xen's xenstored also takes `--opt=value`.
        let (a, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a, None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).unwrap_or_else(|| usage());
        match a.as_str() {
            "--socket" => socket = PathBuf::from(value()),
            "--pid-file" | "-F" => pid_file = Some(PathBuf::from(value())),
            "-h" | "--help" => {
                println!("usage: xenstored [--socket PATH] [--pid-file PATH]");
                return;
            }
            _ => usage(),
        }
    }
    let server = Server::new(
        Store::new(Quota::default()),
        Box::new(|e| match e {
            Effect::Log(line) => eprintln!("xenstored: {line}"),
            Effect::Introduce { domid, mfn, port } => {
                eprintln!("xenstored: domain {domid} introduced (ring mfn {mfn:#x}, port {port})")
            }
            Effect::Release { domid } => eprintln!("xenstored: domain {domid} released"),
        }),
    );
    let listener = match server.bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("xenstored: cannot listen on {}: {e}", socket.display());
            std::process::exit(1);
        }
    };
    if let Some(p) = pid_file {
        if let Err(e) = std::fs::write(&p, format!("{}\n", std::process::id())) {
            eprintln!("xenstored: cannot write {}: {e}", p.display());
        }
    }
    eprintln!("xenstored: serving {}", socket.display());
    if let Err(e) = server.accept_loop(listener) {
        eprintln!("xenstored: {e}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: xenstored [--socket PATH] [--pid-file PATH]");
    std::process::exit(2);
}
