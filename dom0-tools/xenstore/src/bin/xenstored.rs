//! dom0's xenstore daemon: serves the store on `/run/xenstored/socket` to dom0's tools and on dom0's own ring to
//! dom0's kernel (Linux's XS_LOCAL xenbus: `keel_xenstore::local`), as Xen's xenstored does.
//!
//! domUs' rings (XS_INTRODUCE from the toolstack) are mapped and served the same way ([`keel_xenstore::domain`]),
//! each on its own thread, until XS_RELEASE or the domain's death: `VIRQ_DOM_EXC` makes the daemon look at every
//! introduced domain (getdomaininfo), and one that is dying or gone is released (`@releaseDomain` fires, its ring
//! is unmapped and its port unbound); one that shut down fires `@releaseDomain` once, as C xenstored does.
//!
//! `xenstored [--socket PATH] [--pid-file PATH] [--no-domain-init]`; it stays in the foreground (the init script
//! starts it in the background) and logs to standard error. Without the kernel's ring (not on Xen, or
//! `--no-domain-init`) it serves the socket alone.

use keel_xenstore::domain;
use keel_xenstore::local;
use keel_xenstore::server::Server;
use keel_xenstore::store::{Effect, Quota, Store};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};

/// What the domain manager thread is told.
enum DomEvent {
    Introduce {
        domid: u16,
        mfn: u64,
        port: u32,
    },
    Release {
        domid: u16,
    },
    /// VIRQ_DOM_EXC fired.
    Exc,
}

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
    let (dom_tx, dom_rx) = channel::<DomEvent>();
    let effects_tx = dom_tx.clone();
    let server = Server::new(
        Store::new(Quota::default()),
        Box::new(move |e| match e {
            Effect::Log(line) => eprintln!("xenstored: {line}"),
            Effect::Introduce { domid, mfn, port } => {
                eprintln!("xenstored: domain {domid} introduced (ring mfn {mfn:#x}, port {port})");
                let _ = effects_tx.send(DomEvent::Introduce { domid: *domid, mfn: *mfn, port: *port });
            }
            Effect::Release { domid } => {
                eprintln!("xenstored: domain {domid} released");
                let _ = effects_tx.send(DomEvent::Release { domid: *domid });
            }
        }),
    );
    {
        let s = server.clone();
        std::thread::spawn(move || manage_domains(&s, dom_rx));
    }
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
        std::thread::spawn(move || serve_local_ring(&s, dom_tx));
    }
    if let Err(e) = server.accept_loop(listener) {
        eprintln!("xenstored: {e}");
        std::process::exit(1);
    }
}

/// Serves dom0's kernel on its XS_LOCAL ring (and binds VIRQ_DOM_EXC, as C xenstored does).
fn serve_local_ring(server: &Server, dom_tx: Sender<DomEvent>) {
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
        Ok(p) => {
            eprintln!("xenstored: VIRQ_DOM_EXC on port {p}");
            ev.on_dom_exc(Box::new(move || {
                let _ = dom_tx.send(DomEvent::Exc);
            }));
        }
        Err(e) => eprintln!("xenstored: cannot bind VIRQ_DOM_EXC: {e}"),
    }
    eprintln!("xenstored: serving domain 0's ring (kernel port {port}, ours {})", ev.local_port());
    if let Err(e) = server.serve_ring(0, &page, Box::new(ev)) {
        eprintln!("xenstored: domain 0's ring: {e}");
    }
}

/// Serves domUs' rings: maps and serves each introduced one on its own thread, ends it at its release, and looks
/// at the introduced domains when VIRQ_DOM_EXC fires.
fn manage_domains(server: &Server, rx: Receiver<DomEvent>) {
    let xc =
        keel_xenctrl::Xc::open().map_err(|e| eprintln!("xenstored: no privcmd ({e}): domains' deaths unseen")).ok();
    let mut rings: HashMap<u16, domain::Release> = HashMap::new();
    let mut shut_down: BTreeSet<u16> = BTreeSet::new();
    for ev in rx {
        match ev {
            DomEvent::Introduce { domid, mfn, port } => match domain::connect(domid, mfn, port) {
                Ok((page, events, release)) => {
                    if let Some(old) = rings.insert(domid, release) {
                        old.release();
                    }
                    let s = server.clone();
                    std::thread::spawn(move || {
                        eprintln!("xenstored: serving domain {domid}'s ring (port {port})");
                        match s.serve_ring(domid, &page, Box::new(events)) {
                            Ok(()) => eprintln!("xenstored: domain {domid}'s ring closed"),
                            Err(e) => eprintln!("xenstored: domain {domid}'s ring ends: {e}"),
                        }
                    });
                }
                Err(e) => {
                    eprintln!("xenstored: cannot connect domain {domid}'s ring: {e}");
                    server.domain_gone(domid);
                }
            },
            DomEvent::Release { domid } => {
                shut_down.remove(&domid);
                if let Some(r) = rings.remove(&domid) {
                    r.release();
                }
            }
            DomEvent::Exc => {
                let Some(xc) = &xc else { continue };
                let introduced = server.with_store(|s| s.introduced());
                for d in introduced {
                    use keel_abi::domctl::dominf;
                    match xc.domain_info(d) {
                        Ok(None) => server.domain_gone(d),
                        Ok(Some(i)) if i.flags & dominf::DYING != 0 => server.domain_gone(d),
                        Ok(Some(i)) if i.flags & dominf::SHUTDOWN != 0 => {
                            if shut_down.insert(d) {
                                server.fire_release_domain();
                            }
                        }
                        Ok(Some(_)) => {}
                        Err(e) => eprintln!("xenstored: getdomaininfo of {d}: {e}"),
                    }
                }
            }
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: xenstored [--socket PATH] [--pid-file PATH] [--no-domain-init]");
    std::process::exit(2);
}
