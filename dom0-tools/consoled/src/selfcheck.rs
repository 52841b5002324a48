//! `xenconsoled --self-check`: the devices the daemon uses, on a loopback console inside dom0 (there are no domUs
//! to try them on yet). A "guest" side (a page dom0 grants to itself through gntalloc, an unbound port for dom0)
//! and the daemon's side (that grant mapped through gntdev as a guest's console page is, the port bound through
//! `/dev/xen/evtchn` as a guest's is) pass console bytes both ways with the ring code and events the daemon uses.

use crate::ring::{self, guest};
use keel_xenctrl::devices::{Evtchn, ForeignPage};
use std::io;
use std::os::fd::AsRawFd;

/// Waits (at most 5 s) for an event on `ch` and takes it.
fn wait(ch: &mut Evtchn) -> io::Result<()> {
    let mut pfd = libc::pollfd { fd: ch.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 5000) } != 1 {
        return Err(io::Error::other(format!("no event on port {} within 5 s", ch.local_port())));
    }
    ch.ack().map(drop)
}

/// Runs the loopback; on success, what moved.
pub fn run() -> io::Result<String> {
    let (gpage, gref) = ForeignPage::alloc_grant(0)?;
    let mut gport = Evtchn::bind_unbound(0)?;
    let dpage = ForeignPage::grant(0, gref)?;
    let mut dport = Evtchn::bind_interdomain(0, gport.local_port())?;
    // The bind raises the new port once; take whatever is pending on both ends.
    std::thread::sleep(std::time::Duration::from_millis(50));
    dport.ack()?;
    gport.ack()?;

    let hello = b"keel console loopback\r\n";
    if guest::write(&gpage, hello) != hello.len() {
        return Err(io::Error::other("the guest side's ring had no room"));
    }
    gport.notify()?;
    wait(&mut dport)?;
    let mut out = Vec::new();
    ring::take_output(&dpage, &mut out, usize::MAX).map_err(|e| io::Error::other(e.to_string()))?;
    if out != hello {
        return Err(io::Error::other(format!("output {out:?} through the grant, want {hello:?}")));
    }
    let typed = b"typed";
    ring::put_input(&dpage, typed).map_err(|e| io::Error::other(e.to_string()))?;
    dport.notify()?;
    wait(&mut gport)?;
    let got = guest::read(&gpage);
    if got != typed {
        return Err(io::Error::other(format!("input {got:?} through the grant, want {typed:?}")));
    }
    Ok(format!(
        "gref={gref} ports={}/{} output={} input={}",
        gport.local_port(),
        dport.local_port(),
        out.len(),
        got.len()
    ))
}
