//! The migration receiver (`keel-relocd`), Xen's xend relocation server with an authenticated channel. It reads
//! the xend settings Xen's users already have in `/etc/xen/xend-config.sxp`:
//! - `(xend-relocation-server yes)`: serve at all (no: the daemon says so and exits);
//! - `(xend-relocation-port 8002)` and `(xend-relocation-address '')` (empty: every address);
//! - `(xend-relocation-hosts-allow '^localhost$ ...')`: regular expressions, matched from the start (as xend's
//!   `re.match`) against the peer's address and its names in `/etc/hosts` (a loopback peer is also `localhost`);
//!   empty allows every host;
//!
//! and one of Keel's own, since Xen's relocation server authenticates nobody:
//! - `(xend-relocation-psk-file /etc/xen/relocation.psk)`: the pre-shared key (64 hex digits) both hosts hold.
//!   The channel ([`channel`]) is Noise keyed with it: a peer without the key is refused at the handshake and
//!   learns nothing, and every byte after it is encrypted and authenticated. `keel-relocd --generate-psk` makes a
//!   key; copy the file to the other host.
//!
//! Each connection is checked against hosts-allow (a refused host is told why and logged) and against
//! [`MAX_RECEIVERS`] migrations at once, then handed to a child
//! process (`keel-relocd --receive`, the connection as its standard input) that authenticates the peer and receives
//! the domain ([`crate::xm::migrate::receive`]). The child names the domain it makes on its standard error; if the
//! child fails or is killed before the hand-over completes, the daemon destroys that domain, so a failed migration
//! leaves nothing on the target.

pub mod channel;

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Xen keeps xend's settings.
pub const CONFIG_PATH: &str = "/etc/xen/xend-config.sxp";
/// xend's relocation port.
pub const DEFAULT_PORT: u16 = 8002;
/// Where the key is, unless the settings say otherwise.
pub const DEFAULT_PSK_FILE: &str = "/etc/xen/relocation.psk";
/// What a receiving child prints (then the domain id) once it has made the incoming domain.
pub const INCOMING: &str = "incoming domain ";
/// The suffix of an incoming domain's name until the hand-over (as xl's migrate-receive).
pub const INCOMING_SUFFIX: &str = "--incoming";
/// The suffix of the source's name during the hand-over (as xl's migrate).
pub const AWAY_SUFFIX: &str = "--migratedaway";
/// The most migrations received at once; a connection beyond them is refused ("busy"), so that peers that never
/// finish their handshake cannot pile up receivers.
pub const MAX_RECEIVERS: usize = 4;

/// Receivers running now.
static RECEIVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of [`MAX_RECEIVERS`] slots, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        use std::sync::atomic::Ordering;
        RECEIVERS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_RECEIVERS).then_some(n + 1)).ok()?;
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RECEIVERS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The relocation settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub server: bool,
    pub port: u16,
    pub address: String,
    pub hosts_allow: Vec<String>,
    pub psk_file: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: false,
            port: DEFAULT_PORT,
            address: String::new(),
            hosts_allow: Vec::new(),
            psk_file: PathBuf::from(DEFAULT_PSK_FILE),
        }
    }
}

/// An S-expression: an atom (bare or quoted) or a list.
#[derive(Debug, PartialEq, Eq)]
enum Sxp {
    Atom(String),
    List(Vec<Sxp>),
}

/// Parses the top-level lists of an SXP text (`#` comments to the end of a line; `'...'` and `"..."` quoted).
fn parse_sxp(text: &str) -> Result<Vec<Sxp>, String> {
    let mut stack: Vec<Vec<Sxp>> = vec![Vec::new()];
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '(' => stack.push(Vec::new()),
            ')' => {
                let list = stack.pop().filter(|_| !stack.is_empty()).ok_or(format!("line {line}: an unmatched ')'"))?;
                stack.last_mut().expect("the top level").push(Sxp::List(list));
            }
            '\'' | '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("line {line}: an unterminated string")),
                        Some(q) if q == c => break,
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                s.push(n);
                            }
                        }
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            s.push(ch);
                        }
                    }
                }
                stack.last_mut().expect("a list").push(Sxp::Atom(s));
            }
            c if c.is_whitespace() => {}
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || n == '(' || n == ')' {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                stack.last_mut().expect("a list").push(Sxp::Atom(s));
            }
        }
    }
    if stack.len() != 1 {
        return Err("a '(' is never closed".into());
    }
    Ok(stack.pop().expect("the top level"))
}

impl Settings {
    /// The settings in an xend-config.sxp text (unknown entries, xend's many others, are ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut s = Settings::default();
        for item in parse_sxp(text)? {
            let Sxp::List(l) = item else { continue };
            let (Some(Sxp::Atom(key)), Some(Sxp::Atom(value))) = (l.first(), l.get(1)) else { continue };
            match key.as_str() {
                "xend-relocation-server" => {
                    s.server = match value.as_str() {
                        "yes" | "true" | "1" => true,
                        "no" | "false" | "0" => false,
                        v => return Err(format!("xend-relocation-server: '{v}' is neither yes nor no")),
                    }
                }
                "xend-relocation-port" => {
                    s.port = value
                        .parse()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| format!("xend-relocation-port: '{value}' is not a port number"))?
                }
                "xend-relocation-address" => s.address = value.clone(),
                "xend-relocation-hosts-allow" => {
                    s.hosts_allow = value.split_whitespace().map(str::to_owned).collect();
                    for p in &s.hosts_allow {
                        regex::Regex::new(p).map_err(|e| {
                            format!("xend-relocation-hosts-allow: '{p}' is not a regular expression: {e}")
                        })?;
                    }
                }
                "xend-relocation-psk-file" => s.psk_file = PathBuf::from(value),
                _ => {}
            }
        }
        Ok(s)
    }

    /// The settings in `path`; a missing file gives the defaults (no server, port 8002).
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(t) => Settings::parse(&t).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Whether a peer with address `addr` and host names `names` may migrate here.
    pub fn allows(&self, addr: IpAddr, names: &[String]) -> bool {
        if self.hosts_allow.is_empty() {
            return true;
        }
        let addr = addr.to_string();
        self.hosts_allow.iter().any(|p| {
            regex::Regex::new(&format!("^(?:{p})"))
                .is_ok_and(|re| re.is_match(&addr) || names.iter().any(|n| re.is_match(n)))
        })
    }
}

/// The names `/etc/hosts` (`hosts`: its text) gives `addr`; `localhost` for a loopback address it does not name.
pub fn host_names(addr: IpAddr, hosts: &str) -> Vec<String> {
    let mut names: Vec<String> = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let a: IpAddr = w.next()?.parse().ok()?;
            (a == addr).then(|| w.map(str::to_owned).collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    if addr.is_loopback() && names.is_empty() {
        names.push("localhost".into());
    }
    names
}

/// The address of `host`: an address as it is, a name from `/etc/hosts` (`hosts`: its text), `localhost` as
/// 127.0.0.1 when the file does not name it; `None` for a name to ask the resolver about (a static dom0 program
/// may have no resolver configuration at all, so the common cases do not need one).
pub fn address_of(host: &str, hosts: &str) -> Option<IpAddr> {
    if let Ok(a) = host.parse() {
        return Some(a);
    }
    let listed = hosts.lines().map(|l| l.split('#').next().unwrap_or("")).find_map(|l| {
        let mut w = l.split_whitespace();
        let a: IpAddr = w.next()?.parse().ok()?;
        w.any(|n| n.eq_ignore_ascii_case(host)).then_some(a)
    });
    listed.or_else(|| host.eq_ignore_ascii_case("localhost").then(|| IpAddr::from([127, 0, 0, 1])))
}

/// Reads the key in `path`: 64 hex digits (whitespace around them ignored).
pub fn load_psk(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!("cannot read the relocation key {}: {e} (make one with `keel-relocd --generate-psk`)", path.display())
    })?;
    let hex = text.trim();
    let bad = || format!("{}: not a relocation key (64 hexadecimal digits)", path.display());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}

/// Writes a new random key to `path` (readable by root alone); refuses to replace one.
pub fn generate_psk(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, format!("{hex}\n").as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Logs a line of the daemon's (standard output, which the init script sends to /var/log/xen/relocd.log).
pub fn log(line: &str) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    println!("[{}.{:03}] {line}", t.as_secs(), t.subsec_millis());
}

/// Serves migrations until killed: each allowed connection goes to a child `exe --receive --config CONFIG`.
pub fn serve(settings: &Settings, config: &Path, exe: &Path) -> Result<(), String> {
    load_psk(&settings.psk_file)?;
    let bind = if settings.address.is_empty() { "0.0.0.0" } else { settings.address.as_str() };
    let listener = TcpListener::bind((bind, settings.port))
        .map_err(|e| format!("cannot listen on {bind}:{}: {e}", settings.port))?;
    log(&format!("listening on {bind}:{} (hosts-allow: {:?})", settings.port, settings.hosts_allow));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log(&format!("accept: {e}"));
                continue;
            }
        };
        let settings = settings.clone();
        let (config, exe) = (config.to_owned(), exe.to_owned());
        std::thread::spawn(move || handle(stream, &settings, &config, &exe));
    }
    Ok(())
}

/// One connection: hosts-allow, then the receiving child, then the clean-up of a failed receive.
fn handle(mut stream: TcpStream, settings: &Settings, config: &Path, exe: &Path) {
    let Ok(peer) = stream.peer_addr() else { return };
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let names = host_names(peer.ip(), &hosts);
    if !settings.allows(peer.ip(), &names) {
        let why = format!("host {} ({}) is not in xend-relocation-hosts-allow", peer.ip(), names.join(" "));
        log(&format!("refused {peer}: {why}"));
        let _ = channel::greet(&mut stream, Some(&why));
        return;
    }
    let Some(_slot) = Slot::take() else {
        let why = format!("busy: {MAX_RECEIVERS} migrations are being received already");
        log(&format!("refused {peer}: {why}"));
        let _ = channel::greet(&mut stream, Some(&why));
        return;
    };
    if let Err(e) = channel::greet(&mut stream, None) {
        log(&format!("{peer}: {e}"));
        return;
    }
    let child = Command::new(exe)
        .args(["--receive", "--config"])
        .arg(config)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(stream)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            log(&format!("{peer}: cannot start the receiver: {e}"));
            return;
        }
    };
    log(&format!("{peer}: receiving (process {})", child.id()));
    let mut incoming = None;
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix(INCOMING).and_then(|r| r.trim().parse::<u16>().ok()) {
                incoming = Some(id);
            }
            log(&format!("{peer}: {line}"));
        }
    }
    let status = child.wait();
    match status {
        Ok(s) if s.success() => log(&format!("{peer}: migration received")),
        other => {
            log(&format!("{peer}: the receiver failed ({other:?})"));
            if let Some(id) = incoming {
                match crate::xm::migrate::discard_incoming(id) {
                    Ok(true) => log(&format!("{peer}: destroyed incoming domain {id}")),
                    Ok(false) => {}
                    Err(e) => log(&format!("{peer}: cannot destroy incoming domain {id}: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xend_settings_are_read_from_sxp() {
        let s = Settings::parse(
            "# xend\n(xend-relocation-server yes)\n(xend-relocation-port 8003)\n(xend-address '')\n\
             (xend-relocation-hosts-allow '^localhost$ ^host2\\\\.example\\\\.org$')\n\
             (xend-relocation-psk-file /etc/xen/k.psk)\n(network-script 'network-bridge netdev=eth0')\n",
        )
        .unwrap();
        assert!(s.server);
        assert_eq!(s.port, 8003);
        assert_eq!(s.hosts_allow, ["^localhost$", "^host2\\.example\\.org$"]);
        assert_eq!(s.psk_file, PathBuf::from("/etc/xen/k.psk"));
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
        assert!(Settings::parse("(xend-relocation-port x)").unwrap_err().contains("not a port"));
        assert!(Settings::parse("(xend-relocation-hosts-allow '(')").unwrap_err().contains("regular expression"));
        assert!(Settings::parse("(xend-relocation-server yes").is_err());
    }

    #[test]
    fn hosts_allow_matches_addresses_and_names_from_the_start() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.3.7".parse().unwrap();
        let s = Settings { hosts_allow: vec!["^localhost$".into(), "10\\.0\\.3\\.".into()], ..Default::default() };
        assert!(s.allows(lo, &host_names(lo, "")));
        assert!(s.allows(other, &[]));
        assert!(!s.allows("10.0.4.1".parse().unwrap(), &[]));
        assert!(!s.allows("192.168.0.1".parse().unwrap(), &["x10.0.3.1".into()]), "anchored at the start");
        let none = Settings { hosts_allow: vec!["^nothere$".into()], ..Default::default() };
        assert!(!none.allows(lo, &host_names(lo, "")));
        assert!(Settings::default().allows(other, &[]), "empty: every host");
        assert_eq!(host_names(other, "10.0.3.7 host2 host2.lan # x\n"), ["host2", "host2.lan"]);
        assert_eq!(address_of("localhost", ""), Some(lo));
        assert_eq!(address_of("host2.lan", "10.0.3.7 host2 host2.lan\n"), Some(other));
        assert_eq!(address_of("10.0.3.7", ""), Some(other));
        assert_eq!(address_of("elsewhere", ""), None);
    }

    #[test]
    fn receivers_are_bounded() {
        let slots: Vec<Slot> = std::iter::from_fn(Slot::take).take(MAX_RECEIVERS + 1).collect();
        assert_eq!(slots.len(), MAX_RECEIVERS);
        assert!(Slot::take().is_none());
        drop(slots);
        assert!(Slot::take().is_some(), "given back");
    }

    #[test]
    fn keys_are_64_hex_digits() {
        let dir = std::env::temp_dir().join(format!("keel-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.psk");
        generate_psk(&p).unwrap();
        let k = load_psk(&p).unwrap();
        assert_eq!(load_psk(&p).unwrap(), k);
        assert!(generate_psk(&p).is_err(), "never replaced");
        std::fs::write(&p, "abcd\n").unwrap();
        assert!(load_psk(&p).unwrap_err().contains("64 hexadecimal"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
