//! `xm migrate [--live] <Domain> <Host>[:<Port>]` and its receiving end (run by `keel-relocd` for each
//! connection, [`receive`]).
//!
//! The stream is the save file's (docs/save-format.md), sent over the relocation channel
//! ([`crate::relocd::channel`]: Noise with the hosts' shared key): CONFIG, HVM_PARAMS, then pages. A live
//! migration turns on log-dirty and sends every frame (round 0), then, round after round, the frames written
//! meanwhile (XEN_DOMCTL_shadow_op CLEAN), until a round's dirty set is small ([`STOP_PAGES`]), stops shrinking,
//! or [`MAX_ROUNDS`] have gone; then it asks the guest to suspend (as `xm save`), takes the last dirty set
//! (CLEAN with LOGDIRTY_FINAL) and sends it with the vCPUs' state (HVM_CONTEXT). Each round ends with a ROUND
//! record. A migration without `--live` suspends first and sends everything once.
//!
//! The receiver makes the domain as `NAME--incoming` (paused) when the stream begins; round 0 populates it, its
//! devices are attached while the later rounds arrive (their hotplug scripts run while the guest still runs on the
//! source), and its rings are introduced once the state is complete. It then answers `ready`. The hand-over is
//! xl's: the sender renames its domain `NAME--migratedaway` and says `go`; the receiver renames its domain to `NAME`,
//! unpauses it and answers `done`; the sender destroys its domain. Before `go`, any failure (the target refusing,
//! a wrong key, the receiver killed, a broken connection, a stream the receiver rejects) cancels the suspend
//! (XEN_DOMCTL_resumedomain, as `xm save`'s failure) and the guest runs on here, and the receiver's domain is
//! destroyed (by the receiver, or by keel-relocd when the receiver itself died). A `failed` answer to `go` renames
//! the domain back and resumes it here. A connection lost after `go` cannot say where the guest runs: the domain
//! stays suspended here as `NAME--migratedaway`, and xm says so.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use keel_config::DomainConfig;
use keel_xenctrl::Xc;

use super::cmdtable::MigrateArgs;
use super::commands::CmdResult;
use super::create;
use super::lifecycle::Ctx;
use super::save::{self, rec, Reader, Record, Writer};
use super::XmError;
use crate::domain::DomainRef;
use crate::relocd::channel::{Channel, DataReader, DataWriter};
use crate::relocd::{self, AWAY_SUFFIX, INCOMING, INCOMING_SUFFIX};

/// A round's dirty set at most this many pages ends the pre-copy (the last copy is then short).
pub const STOP_PAGES: usize = 64;
/// The most pre-copy rounds before the last one.
pub const MAX_ROUNDS: u32 = 30;
/// How long the connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

fn failed(s: impl Into<String>) -> XmError {
    XmError::Failed(s.into())
}

fn mib(pages: u64) -> f64 {
    pages as f64 * 4096.0 / (1 << 20) as f64
}

/// `HOST`, `HOST:PORT` or `[V6]:PORT` (`port` when none is given).
fn split_host(host: &str, port: u16) -> Result<(String, u16), XmError> {
    if let Some(rest) = host.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(|| failed(format!("'{host}': a ']' is missing")))?;
        return match tail.strip_prefix(':') {
            None if tail.is_empty() => Ok((h.to_owned(), port)),
            Some(p) => Ok((h.to_owned(), p.parse().map_err(|_| failed(format!("'{p}' is not a port number")))?)),
            None => Err(failed(format!("'{host}' is not a host"))),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            Ok((h.to_owned(), p.parse().map_err(|_| failed(format!("'{p}' is not a port number")))?))
        }
        _ => Ok((host.to_owned(), port)),
    }
}

/// What the sender did, for its report.
#[derive(Default)]
struct Sent {
    rounds: u32,
    pages: u64,
    /// When the guest was asked to suspend, once it has suspended.
    suspended_at: Option<Instant>,
    /// How long the guest took to suspend, and the last round.
    suspend_ms: u128,
    last_round_ms: u128,
    /// Log-dirty was turned on.
    log_dirty: bool,
}

/// Sends the whole stream of domain `domid`.
#[allow(clippy::too_many_arguments)]
fn send_stream(
    c: &mut Ctx,
    xc: &Xc,
    ch: &mut Channel,
    domid: u16,
    config: &DomainConfig,
    static_max: u64,
    live: bool,
    sent: &mut Sent,
) -> Result<(), XmError> {
    let io = |e: std::io::Error| failed(format!("sending: {e}"));
    let mut w = Writer::stream(DataWriter::new(ch)).map_err(io)?;
    w.record(rec::CONFIG, &[config.to_config_text().as_bytes()]).map_err(io)?;
    w.record(rec::HVM_PARAMS, &[&save::params_record(xc, domid)?]).map_err(io)?;
    let gfns = save::candidate_gfns(static_max);
    let bits = gfns.last().map_or(0, |g| g + 1);
    let dirty_in = |bitmap: &[u8]| -> Vec<u64> {
        gfns.iter()
            .copied()
            .filter(|&g| bitmap.get((g / 8) as usize).is_some_and(|b| b & (1 << (g % 8)) != 0))
            .collect()
    };
    let mut round = 0u32;
    let send_round = |w: &mut Writer<DataWriter<'_>>, todo: &[u64], round: u32, sent: &mut Sent| {
        let t = Instant::now();
        let bar = save::progress_bar(todo.len() as u64, &format!("round {round}"));
        let n = save::send_frames(w, domid, todo, bar.as_ref())?;
        w.round(round, n as u32).map_err(io)?;
        w.out_mut().flush().map_err(io)?;
        let secs = t.elapsed().as_secs_f64();
        println!("round {round}: {n} pages ({:.1} MiB) in {:.2} s, {:.1} MiB/s", mib(n), secs, mib(n) / secs.max(1e-6));
        let _ = std::io::stdout().flush();
        sent.pages += n;
        sent.rounds = round + 1;
        Ok::<u64, XmError>(n)
    };
    let mut todo = gfns.clone();
    if live {
        xc.log_dirty_enable(domid).map_err(|e| failed(format!("cannot turn log-dirty on: {e}")))?;
        sent.log_dirty = true;
        let mut last = usize::MAX;
        loop {
            send_round(&mut w, &todo, round, sent)?;
            round += 1;
            let bitmap = xc.log_dirty_clean(domid, bits, false).map_err(|e| failed(format!("log-dirty clean: {e}")))?;
            todo = dirty_in(&bitmap);
            let shrinking = todo.len() < last;
            last = todo.len();
            if todo.len() <= STOP_PAGES || round >= MAX_ROUNDS || (!shrinking && round >= 3) {
                break;
            }
        }
    }
    let asked = Instant::now();
    // (A guest that does not suspend runs on: only one that did has a suspend to cancel.)
    save::suspend(c, domid)?;
    sent.suspended_at = Some(asked);
    sent.suspend_ms = asked.elapsed().as_millis();
    let last_started = Instant::now();
    if live {
        let bitmap = xc.log_dirty_clean(domid, bits, true).map_err(|e| failed(format!("log-dirty clean: {e}")))?;
        let mut last: Vec<u64> = todo.into_iter().chain(dirty_in(&bitmap)).collect();
        last.sort_unstable();
        last.dedup();
        todo = last;
    }
    send_round(&mut w, &todo, round, sent)?;
    let ctx = xc.hvm_context(domid).map_err(|e| failed(format!("gethvmcontext: {e}")))?;
    w.record(rec::HVM_CONTEXT, &[&ctx]).map_err(io)?;
    let mut out = w.finish().map_err(io)?;
    out.flush().map_err(io)?;
    out.channel.end_data().map_err(failed)?;
    sent.last_round_ms = last_started.elapsed().as_millis();
    Ok(())
}

/// `xm migrate [--live] <Domain> <Host>[:<Port>]`.
pub fn migrate(args: &MigrateArgs) -> CmdResult {
    let settings = relocd::Settings::load(Path::new(relocd::CONFIG_PATH)).map_err(failed)?;
    let psk = relocd::load_psk(&settings.psk_file).map_err(failed)?;
    let (host, port) = split_host(args.host.as_str(), args.port.unwrap_or(settings.port))?;
    let xc = Xc::open().map_err(|e| failed(e.to_string()))?;
    super::lifecycle::with_host(|c| {
        let (d, name) = c.find(&args.domain)?;
        if d.domain == 0 {
            return Err(failed("cannot migrate domain 0"));
        }
        let domid = d.domain;
        let config = save::current_config(c, domid)?;
        let static_max = save::static_max_bytes(c, domid)?;
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let addr = match relocd::address_of(&host, &hosts) {
            Some(ip) => std::net::SocketAddr::new(ip, port),
            None => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| failed(format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| failed(format!("{host} has no address")))?,
        };
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| failed(format!("cannot reach the relocation server at {host}:{port}: {e}")))?;
        let mut ch = Channel::connect(stream, &psk).map_err(|e| failed(format!("{host}:{port}: {e}")))?;
        let kind = if args.live { "live" } else { "suspended" };
        println!("Migrating domain {domid} ({name}) to {host}:{port} ({kind})");
        let started = Instant::now();
        let mut sent = Sent::default();
        let r = send_stream(c, &xc, &mut ch, domid, &config, static_max, args.live, &mut sent).and_then(|()| match ch
            .recv_control()
        {
            Ok(t) if t == "ready" => Ok(()),
            Ok(t) => Err(failed(format!("the target refused the domain: {}", t.trim_start_matches("error: ")))),
            Err(e) => Err(failed(format!("the target did not take the domain: {e}"))),
        });
        if sent.log_dirty {
            let _ = xc.log_dirty_off(domid);
        }
        // The guest stays here: running on if it never suspended, its suspend cancelled if it did.
        let give_back = |why: String, sent: &Sent| -> XmError {
            if sent.suspended_at.is_none() {
                return failed(format!("migration failed: {why}; domain {domid} ({name}) keeps running here"));
            }
            failed(match save::resume_cancelled(&xc, domid) {
                Ok(()) => format!("migration failed: {why}; domain {domid} ({name}) resumed here"),
                Err(e) => format!("migration failed: {why}; domain {domid} ({name}) could not be resumed ({e})"),
            })
        };
        if let Err(e) = r {
            let why = e.into_reason();
            return Err(give_back(why, &sent));
        }
        let me = by_id(domid)?;
        let away = format!("{name}{AWAY_SUFFIX}");
        if let Err(e) = c.rename(&me, &away) {
            let _ = ch.send_control("error: the sender cannot hand over");
            return Err(give_back(format!("cannot rename the domain {away}: {e}"), &sent));
        }
        let answer = ch.send_control("go").and_then(|()| ch.recv_control());
        match answer {
            Ok(t) if t == "done" => {}
            Ok(t) => {
                let _ = c.rename(&me, &name);
                return Err(give_back(format!("the target could not start the domain: {t}"), &sent));
            }
            Err(e) => {
                return Err(failed(format!(
                    "the target did not confirm the start ({e}): the domain may be running there; it stays \
                     suspended here as {away} (domain {domid})"
                )));
            }
        }
        let down = sent.suspended_at.map(|t| t.elapsed()).unwrap_or_default();
        c.destroy(&me)?;
        println!(
            "Migrated domain {domid} ({name}) to {host}:{port}: {} rounds, {} pages ({:.1} MiB, {:.1} MiB on the \
             wire), total {} ms, downtime {} ms (suspend {} ms, last round {} ms, hand-over {} ms)",
            sent.rounds,
            sent.pages,
            mib(sent.pages),
            ch.sent as f64 / (1 << 20) as f64,
            started.elapsed().as_millis(),
            down.as_millis(),
            sent.suspend_ms,
            sent.last_round_ms,
            down.as_millis().saturating_sub(sent.suspend_ms + sent.last_round_ms)
        );
        Ok(())
    })
}

/// The receiving end of one migration, on a connection keel-relocd accepted (`keel-relocd --receive`). Its
/// progress goes to standard error, the incoming domain's id first ([`INCOMING`]).
pub fn receive(stream: TcpStream, psk: &[u8; 32]) -> Result<(), String> {
    let mut ch = Channel::accept(stream, psk)?;
    eprintln!("authenticated");
    let r = receive_domain(&mut ch);
    match r {
        Ok((id, name, config)) => {
            ch.send_control("ready")?;
            let go = ch.recv_control();
            if go.as_deref() != Ok("go") {
                discard(id);
                return Err(format!("no go from the sender ({go:?}): domain {id} destroyed"));
            }
            // The guest runs first (the downtime ends here); its name and monitor follow.
            let xc = Xc::open().map_err(|e| e.to_string());
            if let Err(e) = xc.and_then(|xc| xc.unpause_domain(id).map_err(|e| format!("unpause: {e}"))) {
                discard(id);
                let _ = ch.send_control(&format!("error: {e}"));
                return Err(format!("cannot start domain {id}: {e}"));
            }
            ch.send_control("done")?;
            if let Err(e) = super::lifecycle::with_host(|c| c.rename(&by_id(id)?, &name).map(drop)) {
                eprintln!("warning: domain {id} runs, but cannot be renamed {name}: {e}");
            }
            if let Err(e) = super::monitor::spawn(&config, id) {
                eprintln!("warning: domain {id} runs without its monitor (on_poweroff/on_reboot/on_crash): {e}");
            }
            eprintln!("domain {id} ({name}) running");
            Ok(())
        }
        Err(e) => {
            let _ = ch.send_control(&format!("error: {e}"));
            Err(e)
        }
    }
}

/// Receives the stream into a new paused domain: its id, final name and configuration.
fn receive_domain(ch: &mut Channel) -> Result<(u16, String, DomainConfig), String> {
    let mut r = Reader::stream(DataReader { channel: ch })?;
    let Some(Record::Config(text)) = r.next_record()? else {
        return Err("the stream does not start with the domain's configuration".into());
    };
    let config = keel_config::from_text("(migration stream)", &text, &[])
        .map_err(|e| format!("the domain's configuration: {e}"))?
        .config;
    let Some(Record::HvmParams(params)) = r.next_record()? else {
        return Err("the stream has no HVM parameters after the configuration".into());
    };
    let mut incoming = config.clone();
    incoming.name = format!("{}{INCOMING_SUFFIX}", config.name);
    let r = RefCell::new(r);
    let populated = RefCell::new(HashSet::new());
    let mut context = None;
    let start = Instant::now();
    // Records up to the end of a round (`Ok(true)`) or of the stream (`Ok(false)`).
    let pump = |xc: &Xc, id: u16, context: &mut Option<Vec<u8>>| -> Result<bool, XmError> {
        loop {
            let next = r.borrow_mut().next_record().map_err(failed)?;
            match next {
                Some(Record::Pages(gfns, data)) => {
                    save::load_pages(xc, id, &gfns, &data, &mut populated.borrow_mut()).map_err(failed)?
                }
                Some(Record::Zeros(gfns)) => {
                    save::load_pages(xc, id, &gfns, &[], &mut populated.borrow_mut()).map_err(failed)?
                }
                Some(Record::Round(n, pages)) => {
                    eprintln!("round {n}: {pages} pages at {} ms", start.elapsed().as_millis());
                    return Ok(true);
                }
                Some(Record::HvmContext(c)) => *context = Some(c),
                Some(_) => return Err(failed("an unexpected record in the stream")),
                None => return Ok(false),
            }
        }
    };
    let mut ctx0 = None;
    let id = create::make_domain_staged(
        &incoming,
        &mut |xc, id| {
            eprintln!("{INCOMING}{id}");
            if !pump(xc, id, &mut ctx0)? {
                return Err(failed("the stream ended before its first round did"));
            }
            save::apply_params(xc, id, &params).map_err(failed)
        },
        &mut |xc, id| {
            while pump(xc, id, &mut context)? {}
            let ctx = context.take().ok_or_else(|| failed("the stream carried no vCPU state"))?;
            xc.set_hvm_context(id, &ctx).map_err(|e| failed(format!("sethvmcontext: {e}")))
        },
    )
    .map_err(XmError::into_reason)?;
    eprintln!("domain {id} complete ({} pages) at {} ms", populated.borrow().len(), start.elapsed().as_millis());
    Ok((id, config.name.clone(), config))
}

/// A reference to domain `id`.
fn by_id(id: u16) -> Result<DomainRef, XmError> {
    crate::domain::DomainId::try_from(u32::from(id)).map(DomainRef::Id).map_err(|e| failed(e.to_string()))
}

fn discard(id: u16) {
    let _ = discard_incoming(id);
}

/// Destroys domain `id` if it is still an incoming one (its name ends in `--incoming`): what keel-relocd does when
/// a receiver dies. Whether it did.
pub fn discard_incoming(id: u16) -> Result<bool, XmError> {
    super::lifecycle::with_host(|c| {
        let name = c.name(id);
        if !name.ends_with(INCOMING_SUFFIX) || c.hv.domain_info(id)?.is_none() {
            return Ok(false);
        }
        c.destroy(&by_id(id)?)?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_an_optional_port() {
        assert_eq!(split_host("localhost", 8002).unwrap(), ("localhost".into(), 8002));
        assert_eq!(split_host("host2:8003", 8002).unwrap(), ("host2".into(), 8003));
        assert_eq!(split_host("[::1]:9", 8002).unwrap(), ("::1".into(), 9));
        assert_eq!(split_host("::1", 8002).unwrap(), ("::1".into(), 8002));
        assert!(split_host("h:x", 8002).is_err());
    }
}
