//! Domain configuration files (`/etc/xen/NAME`) in the syntax of Xen's
//! `xl` (xl.cfg(5)): the parser ([`syntax`]), and the typed, defaulted,
//! validated [`DomainConfig`] that `xm create` builds a domain from.
//!
//! Reading a configuration gives the config and a list of warnings
//! (unknown keys, as xl ignores them; settings that others override), or
//! one error naming the file, the line and the key and what was
//! expected: `/etc/xen/web:7: memory: expected a number of MiB, found
//! "lots"`. `KEY=VALUE` settings from the command line apply after the
//! file, as xl appends them to it; a value that is not config syntax
//! (`name=web2`, `extra=console=hvc0`) is taken as a string, as xm did.
//!
//! Defaults are xl's (libxl's): `maxmem` = `memory` (and `memory` =
//! `maxmem` if only that is given, 32 MiB if neither), `vcpus` 1,
//! `maxvcpus` = `vcpus`, `cpu_weight` 256, `cap` 0, `on_poweroff`
//! destroy, `on_reboot` restart, `on_crash` destroy, the command line from
//! `cmdline`, else `root=ROOT EXTRA`. Keel's own: the guest type defaults
//! to PVH (xl's x86 default is PV, which Keel has not built), and PV and
//! HVM are refused until they are built. Stricter than xl, which leaves
//! these to libxl or lets them pass: `vcpus = 0` (xl makes it 1), `maxmem`
//! below `memory`, a CPU list that selects no CPU, two disks with the same
//! vdev (compared as VBD numbers, so `xvda` and `d0` clash), and two vifs
//! with the same devid, MAC or vifname are errors here.

pub mod cpus;
pub mod disk;
pub mod syntax;
pub mod vif;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

pub use cpus::{CpuList, Cpus};
pub use disk::Disk;
use syntax::{Op, Value};
pub use vif::Vif;

/// Where `xm create NAME` looks for a bare NAME, as xm.
pub const CONFIG_DIR: &str = "/etc/xen";
/// libxl's memory when a config gives neither `memory` nor `maxmem`, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 32;
/// The most memory a config may give, in MiB (16 TiB).
pub const MAX_MEMORY_MIB: u64 = 16 << 20;
/// The most vCPUs a guest may have (Xen's HVM_MAX_VCPUS, which PVH shares).
pub const MAX_VCPUS: u32 = 128;
/// The credit scheduler's default weight.
pub const DEFAULT_WEIGHT: u32 = 256;
/// Domain names are at most this long.
pub const MAX_NAME_LEN: usize = 64;
/// Characters allowed in a domain name besides ASCII letters and digits (as `xm`'s names).
pub const NAME_PUNCTUATION: &[char] = &['-', '_', '.', ':', '+'];

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Location {
    /// A line of a file, or the file as a whole (`line` is `None`) for a key it lacks.
    File {
        /// The file as named.
        path: String,
        /// The line, from 1.
        line: Option<u32>,
    },
    /// A `KEY=VALUE` argument of the command line.
    Arg(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path, line: Some(line) } => write!(f, "{path}:{line}"),
            Location::File { path, line: None } => f.write_str(path),
            Location::Arg(arg) => write!(f, "command line '{arg}'"),
        }
    }
}

/// An error or a warning about a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where (none when the file could not be read at all).
    pub location: Option<Location>,
    /// The key concerned, if any.
    pub key: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
    /// A warning rather than an error.
    pub warning: bool,
}

impl Diagnostic {
    fn error(location: &Location, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: Some(location.clone()),
            key: Some(key.to_owned()),
            message: message.into(),
            warning: false,
        }
    }

    fn warning(location: &Location, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic { warning: true, ..Diagnostic::error(location, key, message) }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        if self.warning {
            f.write_str("warning: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// A number as xl reads one (C's `strtol` with base 0): `0x` hex, a leading `0` octal, else decimal.
pub fn parse_c_number(s: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// A domain's UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parses the 8-4-4-4-12 hex form (either case), as libxl.
    pub fn parse(s: &str) -> Option<Uuid> {
        let groups: Vec<&str> = s.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        hex.bytes().all(|b| b.is_ascii_hexdigit()).then_some(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for Uuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The guest type. Only PVH is built; the others are parsed so that they can be refused clearly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    /// PVH: an HVM container without a device model, booted at the kernel's PVH entry.
    Pvh,
}

/// What to do when the guest powers off, reboots or crashes (xl.cfg(5)'s event actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Destroy the domain.
    Destroy,
    /// Destroy it and create a new one from the same config.
    Restart,
    /// Keep it, for inspection.
    Preserve,
    /// Rename it, then create a new one from the same config.
    RenameRestart,
    /// Write a core dump, then destroy it.
    CoredumpDestroy,
    /// Write a core dump, then restart it.
    CoredumpRestart,
}

impl Action {
    const ALL: [Action; 6] = [
        Action::Destroy,
        Action::Restart,
        Action::Preserve,
        Action::RenameRestart,
        Action::CoredumpDestroy,
        Action::CoredumpRestart,
    ];

    /// The name as written in a config.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::Preserve => "preserve",
            Action::RenameRestart => "rename-restart",
            Action::CoredumpDestroy => "coredump-destroy",
            Action::CoredumpRestart => "coredump-restart",
        }
    }
}

/// A parsed, defaulted and validated domain configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainConfig {
    /// The domain's name.
    pub name: String,
    /// Its UUID; `None`: a fresh one is generated when the domain is created.
    pub uuid: Option<Uuid>,
    /// The guest type.
    #[serde(rename = "type")]
    pub guest_type: GuestType,
    /// The kernel image to boot.
    pub kernel: String,
    /// The initial ramdisk, if any.
    pub ramdisk: Option<String>,
    /// The kernel command line (from `cmdline`, or built from `root` and `extra`).
    pub cmdline: String,
    /// Memory at boot, MiB.
    pub memory: u64,
    /// The most memory the guest may balloon up to, MiB.
    pub maxmem: u64,
    /// vCPUs online at boot.
    pub vcpus: u32,
    /// The most vCPUs it may bring online.
    pub maxvcpus: u32,
    /// Hard affinity of its vCPUs; `None`: no pinning.
    pub cpus: Option<Cpus>,
    /// Credit scheduler weight.
    pub cpu_weight: u32,
    /// Credit scheduler cap, percent of one CPU (0: none).
    pub cap: u32,
    /// Action when the guest powers off.
    pub on_poweroff: Action,
    /// Action when it reboots.
    pub on_reboot: Action,
    /// Action when it crashes.
    pub on_crash: Action,
    /// Its disks.
    pub disk: Vec<Disk>,
    /// Its network interfaces.
    pub vif: Vec<Vif>,
    /// Where each key given was set (for errors found later, e.g. a missing kernel file).
    #[serde(skip)]
    pub locations: BTreeMap<String, Location>,
}

/// A configuration that was read, with the warnings to print.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: DomainConfig,
    /// Warnings (print them to stderr).
    pub warnings: Vec<Diagnostic>,
}

/// The keys this crate reads; any other is warned about and ignored.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "uuid",
    "type",
    "builder",
    "memory",
    "maxmem",
    "vcpus",
    "maxvcpus",
    "cpus",
    "cpu_weight",
    "cap",
    "cpu_cap",
    "kernel",
    "ramdisk",
    "extra",
    "root",
    "cmdline",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "disk",
    "vif",
];

/// The file `xm create NAME` reads: NAME itself if it names a path (has a `/`) or exists, else `/etc/xen/NAME`.
pub fn find_config(name: &Path) -> PathBuf {
    if name.is_absolute() || name.components().count() > 1 || name.exists() {
        name.to_path_buf()
    } else {
        Path::new(CONFIG_DIR).join(name)
    }
}

/// Reads the config file at `path` (exactly there: see [`find_config`]) with `overrides` (`KEY`, `VALUE`) applied.
pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Loaded, Diagnostic> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| Diagnostic {
        location: Some(Location::File { path: shown.clone(), line: None }),
        key: None,
        message: format!("cannot read the configuration file: {e}"),
        warning: false,
    })?;
    let text = String::from_utf8(text).map_err(|e| Diagnostic {
        location: Some(Location::File { path: shown.clone(), line: None }),
        key: None,
        message: format!("the configuration file is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        warning: false,
    })?;
    from_text(&shown, &text, overrides)
}

/// One key's final value.
struct Setting {
    value: Value,
    location: Location,
}

/// Parses `text` (read from `source`, the name errors give) with `overrides` applied.
pub fn from_text(source: &str, text: &str, overrides: &[(String, String)]) -> Result<Loaded, Diagnostic> {
    let statements = syntax::parse(text).map_err(|e| Diagnostic {
        location: Some(Location::File { path: source.to_owned(), line: Some(e.line) }),
        key: e.key,
        message: e.message,
        warning: false,
    })?;
    let mut settings: BTreeMap<String, Setting> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let file_loc = |line| Location::File { path: source.to_owned(), line: Some(line) };
    let arg_values = overrides.iter().map(|(k, v)| {
        let value = syntax::parse_value(v).unwrap_or_else(|| Value::string(v.clone()));
        (k.clone(), Op::Assign, value, Location::Arg(format!("{k}={v}")))
    });
    for (key, op, value, location) in
        statements.into_iter().map(|s| (s.key, s.op, s.value, file_loc(s.line))).chain(arg_values)
    {
        let value = match (op, settings.get(&key)) {
            (Op::Append, Some(old)) => match (&old.value, value) {
                (Value::Atom { text: a, quoted, .. }, Value::Atom { text: b, line, .. }) => {
                    Value::Atom { text: format!("{a}{b}"), quoted: *quoted, line }
                }
                (Value::List(a), Value::List(b)) => Value::List(a.iter().cloned().chain(b).collect()),
                _ => {
                    return Err(Diagnostic::error(
                        &location,
                        &key,
                        "cannot add a list to a string or a string to a list",
                    ))
                }
            },
            (_, _) => value,
        };
        if !order.contains(&key) {
            order.push(key.clone());
        }
        settings.insert(key, Setting { value, location });
    }
    let mut warnings = Vec::new();
    for key in &order {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            let loc = &settings[key].location;
            warnings.push(Diagnostic::warning(loc, key, "unknown key, ignored"));
        }
    }
    let whole_file = Location::File { path: source.to_owned(), line: None };
    let config = Reader { settings: &settings, warnings: &mut warnings, whole_file }.config()?;
    Ok(Loaded { config, warnings })
}

struct Reader<'a> {
    settings: &'a BTreeMap<String, Setting>,
    warnings: &'a mut Vec<Diagnostic>,
    whole_file: Location,
}

impl Reader<'_> {
    fn loc(&self, key: &str) -> &Location {
        self.settings.get(key).map_or(&self.whole_file, |s| &s.location)
    }

    fn err(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.loc(key), key, message)
    }

    /// A single value (string or number) as text.
    fn atom(&self, key: &str, what: &str) -> Result<Option<String>, Diagnostic> {
        match self.settings.get(key).map(|s| &s.value) {
            None => Ok(None),
            Some(Value::Atom { text, .. }) => Ok(Some(text.clone())),
            Some(v) => Err(self.err(key, format!("expected {what}, found {}", v.describe()))),
        }
    }

    fn number(&self, key: &str, what: &str, min: u64, max: u64) -> Result<Option<u64>, Diagnostic> {
        let expected = format!("expected {what} from {min} to {max}");
        match self.settings.get(key).map(|s| &s.value) {
            None => Ok(None),
            Some(v @ Value::List(_)) => Err(self.err(key, format!("{expected}, found {}", v.describe()))),
            Some(Value::Atom { text, quoted, .. }) => match parse_c_number(text) {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => {
                    let found = if *quoted { format!("{text:?}") } else { text.clone() };
                    Err(self.err(key, format!("{expected}, found {found}")))
                }
            },
        }
    }

    /// A list of strings (numbers read as their text), for `disk` and `vif`.
    /// Where an entry of `key`'s list is: its own line in the file, else where the key was set.
    fn item_loc(&self, key: &str, item: &Value) -> Location {
        match (self.loc(key), item.line()) {
            (Location::File { path, .. }, Some(line)) => Location::File { path: path.clone(), line: Some(line) },
            (loc, _) => loc.clone(),
        }
    }

    /// Each entry's text and where it is.
    fn string_list(&self, key: &str, example: &str) -> Result<Vec<(String, Location)>, Diagnostic> {
        let expected = format!("expected a list of strings like {key} = [ {example} ]");
        match self.settings.get(key).map(|s| &s.value) {
            None => Ok(Vec::new()),
            Some(Value::List(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Atom { text, .. } => Ok((text.clone(), self.item_loc(key, item))),
                    Value::List(_) => Err(self.err(key, format!("{expected}, found a list as entry {}", i + 1))),
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("{expected}, found {}", v.describe()))),
        }
    }

    fn action(&self, key: &str, default: Action) -> Result<Action, Diagnostic> {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        let what = format!("one of {}", names.join(", "));
        let Some(text) = self.atom(key, &what)? else { return Ok(default) };
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| self.err(key, format!("expected {what}, found {text:?}")))
    }

    fn guest_type(&self) -> Result<GuestType, Diagnostic> {
        let not_built = |kind: &str| format!("{kind} guests are not built yet in Keel (only type = \"pvh\" is)");
        let ty = self.atom("type", "one of pvh, pv, hvm")?;
        match ty.as_deref() {
            None | Some("pvh") => {}
            Some("pv") => return Err(self.err("type", not_built("PV"))),
            Some("hvm") => return Err(self.err("type", not_built("HVM"))),
            Some(other) => return Err(self.err("type", format!("expected one of pvh, pv, hvm, found {other:?}"))),
        }
        if let Some(builder) = self.atom("builder", "one of generic, hvm")? {
            let (kind, as_type) = match builder.as_str() {
                "generic" => ("PV", "pv"),
                "hvm" => ("HVM", "hvm"),
                other => return Err(self.err("builder", format!("expected one of generic, hvm, found {other:?}"))),
            };
            return Err(if ty.is_some() {
                self.err("builder", format!("builder = {builder:?} ({as_type}) contradicts type = \"pvh\""))
            } else {
                self.err("builder", not_built(kind))
            });
        }
        Ok(GuestType::Pvh)
    }

    fn name(&self) -> Result<String, Diagnostic> {
        let name = self
            .atom("name", "a domain name")?
            .ok_or_else(|| self.err("name", "missing: every domain needs a name (e.g. name = \"web\")"))?;
        let problem = if name.is_empty() {
            Some("a domain name cannot be empty".to_owned())
        } else if name.len() > MAX_NAME_LEN {
            Some(format!("{name:?} is {} bytes long (at most {MAX_NAME_LEN})", name.len()))
        } else if let Some(c) = name.chars().find(|&c| !(c.is_ascii_alphanumeric() || NAME_PUNCTUATION.contains(&c))) {
            Some(format!("{c:?} is not allowed in a domain name (use ASCII letters, digits and any of - _ . : +)"))
        } else if name.bytes().all(|b| b.is_ascii_digit()) {
            Some(format!("{name:?} cannot be a domain name: a name made only of digits reads as a domain id"))
        } else {
            None
        };
        match problem {
            Some(p) => Err(self.err("name", p)),
            None => Ok(name),
        }
    }

    fn path(&self, key: &str) -> Result<Option<String>, Diagnostic> {
        match self.atom(key, "a file name")? {
            Some(p) if p.is_empty() => Err(self.err(key, "expected a file name, found \"\"")),
            other => Ok(other),
        }
    }

    fn cpus(&mut self, maxvcpus: u32) -> Result<Option<Cpus>, Diagnostic> {
        let Some(setting) = self.settings.get("cpus") else { return Ok(None) };
        let list = |text: &str| CpuList::parse(text).map_err(|e| self.err("cpus", e));
        match &setting.value {
            Value::Atom { text, .. } => Ok(Some(Cpus::All(list(text)?))),
            Value::List(items) => {
                if items.is_empty() {
                    return Err(self.err("cpus", "expected a CPU list per vCPU, found an empty list"));
                }
                let mut lists = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Atom { text, .. } => lists.push(CpuList::parse(text).map_err(|e| {
                            Diagnostic::error(&self.item_loc("cpus", item), "cpus", format!("vCPU {i}: {e}"))
                        })?),
                        Value::List(_) => {
                            return Err(self.err("cpus", format!("vCPU {i}: expected a CPU list, found a list")))
                        }
                    }
                }
                if lists.len() > maxvcpus as usize {
                    let loc = setting.location.clone();
                    self.warnings.push(Diagnostic::warning(
                        &loc,
                        "cpus",
                        format!(
                            "{} lists for {maxvcpus} vCPUs: the last {} are ignored",
                            lists.len(),
                            lists.len() - maxvcpus as usize
                        ),
                    ));
                }
                Ok(Some(Cpus::PerVcpu(lists)))
            }
        }
    }

    fn cmdline(&mut self) -> Result<String, Diagnostic> {
        let cmdline = self.atom("cmdline", "a string")?;
        let root = self.atom("root", "a string")?;
        let extra = self.atom("extra", "a string")?;
        if let Some(c) = cmdline {
            if root.is_some() || extra.is_some() {
                let loc = self.loc("cmdline").clone();
                self.warnings.push(Diagnostic::warning(
                    &loc,
                    "cmdline",
                    "root and extra are ignored in favour of cmdline",
                ));
            }
            return Ok(c);
        }
        Ok(match (root, extra) {
            (Some(r), Some(e)) => format!("root={r} {e}"),
            (Some(r), None) => format!("root={r}"),
            (None, Some(e)) => e,
            (None, None) => String::new(),
        })
    }

    fn disks(&self) -> Result<Vec<Disk>, Diagnostic> {
        let specs = self.string_list("disk", "'/dev/vg/guest,raw,xvda,rw'")?;
        let mut disks: Vec<Disk> = Vec::new();
        for (i, (spec, loc)) in specs.iter().enumerate() {
            let err = |m: String| Diagnostic::error(loc, "disk", m);
            let d = disk::parse(spec).map_err(|e| err(format!("entry {} ({spec:?}): {e}", i + 1)))?;
            if let Some(j) = disks.iter().position(|o| o.vbd == d.vbd) {
                return Err(err(format!(
                    "entries {} and {} are both the guest's {} (vdev {:?} and {:?})",
                    j + 1,
                    i + 1,
                    d.vdev,
                    disks[j].vdev,
                    d.vdev
                )));
            }
            disks.push(d);
        }
        Ok(disks)
    }

    fn vifs(&self) -> Result<Vec<Vif>, Diagnostic> {
        let specs = self.string_list("vif", "'bridge=xenbr0'")?;
        let mut vifs: Vec<Vif> = Vec::new();
        for (i, (spec, loc)) in specs.iter().enumerate() {
            let err = |m: String| Diagnostic::error(loc, "vif", m);
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let v = vif::parse(spec, index).map_err(|e| err(format!("entry {} ({spec:?}): {e}", i + 1)))?;
            for (j, o) in vifs.iter().enumerate() {
                let clash = if o.devid == v.devid {
                    Some(format!("devid {}", v.devid))
                } else if v.mac.is_some() && o.mac == v.mac {
                    Some(format!("mac {}", v.mac.map(|m| m.to_string()).unwrap_or_default()))
                } else if v.vifname.is_some() && o.vifname == v.vifname {
                    Some(format!("vifname {}", v.vifname.clone().unwrap_or_default()))
                } else {
                    None
                };
                if let Some(what) = clash {
                    return Err(err(format!("entries {} and {} have the same {what}", j + 1, i + 1)));
                }
            }
            vifs.push(v);
        }
        Ok(vifs)
    }

    fn config(mut self) -> Result<DomainConfig, Diagnostic> {
        let name = self.name()?;
        let uuid = match self.atom("uuid", "a UUID")? {
            None => None,
            Some(text) => Some(Uuid::parse(&text).ok_or_else(|| {
                self.err("uuid", format!("expected a UUID like 01234567-89ab-cdef-0123-456789abcdef, found {text:?}"))
            })?),
        };
        let guest_type = self.guest_type()?;
        let kernel = self.path("kernel")?.ok_or_else(|| {
            self.err("kernel", "missing: a PVH guest boots a kernel image (e.g. kernel = \"/boot/vmlinuz\")")
        })?;
        let ramdisk = self.path("ramdisk")?;
        let cmdline = self.cmdline()?;

        let memory = self.number("memory", "a number of MiB", 1, MAX_MEMORY_MIB)?;
        let maxmem = self.number("maxmem", "a number of MiB", 1, MAX_MEMORY_MIB)?;
        let (memory, maxmem) = match (memory, maxmem) {
            (Some(m), Some(x)) => (m, x),
            (Some(m), None) => (m, m),
            (None, Some(x)) => (x, x),
            (None, None) => (DEFAULT_MEMORY_MIB, DEFAULT_MEMORY_MIB),
        };
        if maxmem < memory {
            return Err(self.err(
                "maxmem",
                format!("{maxmem} MiB is less than memory ({memory} MiB): maxmem must be at least memory"),
            ));
        }

        let max = u64::from(MAX_VCPUS);
        let vcpus = self.number("vcpus", "a number of vCPUs", 1, max)?.map_or(1, |n| n as u32);
        let maxvcpus = self.number("maxvcpus", "a number of vCPUs", 1, max)?.map_or(vcpus, |n| n as u32);
        if maxvcpus < vcpus {
            return Err(self
                .err("maxvcpus", format!("{maxvcpus} is less than vcpus ({vcpus}): maxvcpus must be at least vcpus")));
        }
        let cpus = self.cpus(maxvcpus)?;

        let cpu_weight = self.number("cpu_weight", "a weight", 1, 65535)?.map_or(DEFAULT_WEIGHT, |n| n as u32);
        // xl's key is `cap`; xm's was `cpu_cap`. The one set last wins.
        let cap_key = match (self.settings.contains_key("cap"), self.settings.contains_key("cpu_cap")) {
            (true, true) if self.order_of("cpu_cap") > self.order_of("cap") => "cpu_cap",
            (false, true) => "cpu_cap",
            _ => "cap",
        };
        let cap = self.number(cap_key, "a cap in percent of one CPU", 0, 65535)?.map_or(0, |n| n as u32);

        let on_poweroff = self.action("on_poweroff", Action::Destroy)?;
        let on_reboot = self.action("on_reboot", Action::Restart)?;
        let on_crash = self.action("on_crash", Action::Destroy)?;
        let disk = self.disks()?;
        let vif = self.vifs()?;
        let locations = self.settings.iter().map(|(k, s)| (k.clone(), s.location.clone())).collect();
        Ok(DomainConfig {
            name,
            uuid,
            guest_type,
            kernel,
            ramdisk,
            cmdline,
            memory,
            maxmem,
            vcpus,
            maxvcpus,
            cpus,
            cpu_weight,
            cap,
            on_poweroff,
            on_reboot,
            on_crash,
            disk,
            vif,
            locations,
        })
    }

    /// An order between two settings' locations: command-line arguments after file lines, lines in order.
    fn order_of(&self, key: &str) -> (u8, u32) {
        match self.loc(key) {
            Location::File { line, .. } => (0, line.unwrap_or(0)),
            Location::Arg(_) => (1, 0),
        }
    }
}

impl DomainConfig {
    /// Where `key` was set, or `None` if it took its default.
    pub fn location(&self, key: &str) -> Option<&Location> {
        self.locations.get(key)
    }

    /// Checks that the kernel and ramdisk files can be read (the part of validation that looks at dom0's files).
    pub fn check_files(&self) -> Result<(), Diagnostic> {
        for (key, path) in [("kernel", Some(&self.kernel)), ("ramdisk", self.ramdisk.as_ref())] {
            let Some(path) = path else { continue };
            let problem = match std::fs::metadata(path) {
                Ok(m) if m.is_file() => std::fs::File::open(path).err().map(|e| e.to_string()),
                Ok(_) => Some("not a regular file".to_owned()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(p) = problem {
                let loc = self.location(key).cloned();
                return Err(Diagnostic {
                    location: loc,
                    key: Some(key.to_owned()),
                    message: format!("cannot read {path}: {p}"),
                    warning: false,
                });
            }
        }
        Ok(())
    }

    /// The configuration as a config file (every default written out), which reads back to the same config.
    pub fn to_config_text(&self) -> String {
        use syntax::quote;
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
        line("name", quote(&self.name));
        if let Some(u) = self.uuid {
            line("uuid", quote(&u.to_string()));
        }
        line("type", quote("pvh"));
        line("kernel", quote(&self.kernel));
        if let Some(r) = &self.ramdisk {
            line("ramdisk", quote(r));
        }
        line("cmdline", quote(&self.cmdline));
        line("memory", self.memory.to_string());
        line("maxmem", self.maxmem.to_string());
        line("vcpus", self.vcpus.to_string());
        line("maxvcpus", self.maxvcpus.to_string());
        match &self.cpus {
            None => {}
            Some(Cpus::All(l)) => line("cpus", quote(&l.to_string())),
            Some(Cpus::PerVcpu(ls)) => line("cpus", list(ls.iter().map(|l| l.to_string()))),
        }
        line("cpu_weight", self.cpu_weight.to_string());
        line("cap", self.cap.to_string());
        line("on_poweroff", quote(self.on_poweroff.as_str()));
        line("on_reboot", quote(self.on_reboot.as_str()));
        line("on_crash", quote(self.on_crash.as_str()));
        line("disk", list(self.disk.iter().map(|d| d.to_string())));
        line("vif", list(self.vif.iter().map(|v| v.to_string())));
        if self.uuid.is_none() {
            out.push_str("# uuid: none given; a fresh one is generated when the domain is created\n");
        }
        out
    }
}

/// A list of strings in config syntax: inline when short, else one entry per line.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|s| syntax::quote(&s)).collect();
    match items.len() {
        0 => "[ ]".to_owned(),
        1 if items[0].len() < 60 => format!("[ {} ]", items[0]),
        _ => format!("[\n{}]", items.iter().map(|i| format!("    {i},\n")).collect::<String>()),
    }
}

#[cfg(test)]
mod tests;
