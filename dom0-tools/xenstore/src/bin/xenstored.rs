//! dom0's xenstore daemon: serves the store on `/run/xenstored/socket` to dom0's tools and on dom0's own ring to
//! dom0's kernel (Linux's XS_LOCAL xenbus: `keel_xenstore::local`), as Xen's xenstored does.
//!
//! `xenstored [--socket PATH] [--pid-file PATH] [--no-domain-init]`; it stays in the foreground (the init script
//! starts it in the background) and logs to standard error. Without the kernel's ring (not on Xen, or
//! `--no-domain-init`) it serves the socket alone.

use keel_xenstore::local;
use keel_xenstore::server::Server;
use keel_xenstore::store::{Effect, Quota, Store};
use std::path::PathBuf;

fn main() {
    let mut socket = PathBuf::from(keel_xenstore::client::SOCKET);
    let mut pid_file = None;
    let mut domain_init = true;
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
            "--no-domain-init" | "-D" => domain_init = false,
            "-h" | "--help" => {
                println!("usage: xenstored [--socket PATH] [--pid-file PATH] [--no-domain-init]");
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
    if domain_init {
        let s = server.clone();
        std::thread::spawn(move || serve_local_ring(&s));
    }
    if let Err(e) = server.accept_loop(listener) {
        eprintln!("xenstored: {e}");
        std::process::exit(1);
    }
}

/// Serves dom0's kernel on its XS_LOCAL ring (and binds VIRQ_DOM_EXC, as C xenstored does).
fn serve_local_ring(server: &Server) {
    let (page, port) = match local::local_ring() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("xenstored: no local ring of dom0's kernel ({e}): serving the socket only");
            return;
        }
    };
    let mut ev = match local::Evtchn::bind_interdomain(0, port) {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("xenstored: cannot bind the kernel's store port {port}: {e}");
            return;
        }
    };
    match ev.bind_dom_exc() {
        Ok(p) => eprintln!("xenstored: VIRQ_DOM_EXC on port {p}"),
        Err(e) => eprintln!("xenstored: cannot bind VIRQ_DOM_EXC: {e}"),
    }
    eprintln!("xenstored: serving domain 0's ring (kernel port {port}, ours {})", ev.local_port());
    if let Err(e) = server.serve_ring(0, &page, Box::new(ev)) {
        eprintln!("xenstored: domain 0's ring: {e}");
    }
}

fn usage() -> ! {
    eprintln!("usage: xenstored [--socket PATH] [--pid-file PATH] [--no-domain-init]");
    std::process::exit(2);
}
