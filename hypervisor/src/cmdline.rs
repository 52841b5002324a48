//! The hypervisor command line: Xen-compatible options parsed into typed values.
//!
//! Options are `name`, `name=value` or `no-name` separated by spaces, as on Xen. Unknown options and malformed
//! values are not fatal: they are reported as [`Warning`]s and the default is kept.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Console log levels, in Xen's order (`loglvl=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing but errors.
    Error,
    /// Errors and warnings.
    Warning,
    /// Informational messages (Keel's default).
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    All,
}

impl LogLevel {
    fn parse(s: &str) -> Option<Self> {
        // Xen accepts `<level>[/<rate-limited level>]`; the rate-limited half has no meaning for Keel.
        let level = s.split('/').next().unwrap_or("");
        Some(match level {
            "none" | "error" => Self::Error,
            "warning" => Self::Warning,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "all" => Self::All,
            _ => return None,
        })
    }

    /// The tag printed for a message of this level.
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::All => "all",
        }
    }
}

/// Parity setting of a serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// `n`
    None,
    /// `o`
    Odd,
    /// `e`
    Even,
    /// `m`
    Mark,
    /// `s`
    Space,
}

/// A serial port as configured by Xen's `com1=<baud>[/<clock>][,DPS[,<io-base>[,<irq>]]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComConfig {
    /// Baud rate; `None` for `auto` (keep what firmware programmed).
    pub baud: Option<u32>,
    /// Data bits, 5 to 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
    /// I/O port base.
    pub io_base: u16,
}

impl Default for ComConfig {
    fn default() -> Self {
        Self { baud: Some(115_200), data_bits: 8, parity: Parity::None, stop_bits: 1, io_base: 0x3f8 }
    }
}

impl ComConfig {
    fn parse(s: &str) -> Result<Self, String> {
        let mut cfg = Self::default();
        let mut parts = s.split(',');
        let speed = parts.next().unwrap_or("");
        let baud = speed.split('/').next().unwrap_or("");
        cfg.baud = match baud {
            "auto" => None,
            b => Some(
                parse_number(b)
                    .filter(|&b| (50..=4_000_000).contains(&b))
                    .ok_or_else(|| format!("'{b}' is not a baud rate"))? as u32,
            ),
        };
        if let Some(dps) = parts.next().filter(|p| !p.is_empty()) {
            let b = dps.as_bytes();
            if b.len() != 3 {
                return Err(format!("'{dps}' is not <data bits><parity><stop bits>, e.g. 8n1"));
            }
            cfg.data_bits = match b[0] {
                b'5'..=b'8' => b[0] - b'0',
                _ => return Err(format!("data bits in '{dps}' must be 5 to 8")),
            };
            cfg.parity = match b[1].to_ascii_lowercase() {
                b'n' => Parity::None,
                b'o' => Parity::Odd,
                b'e' => Parity::Even,
                b'm' => Parity::Mark,
                b's' => Parity::Space,
                _ => return Err(format!("parity in '{dps}' must be one of n, o, e, m, s")),
            };
            cfg.stop_bits = match b[2] {
                b'1' | b'2' => b[2] - b'0',
                _ => return Err(format!("stop bits in '{dps}' must be 1 or 2")),
            };
        }
        if let Some(base) = parts.next().filter(|p| !p.is_empty()) {
            cfg.io_base = parse_number(base)
                .and_then(|v| u16::try_from(v).ok())
                .ok_or_else(|| format!("'{base}' is not an I/O port base"))?;
        }
        Ok(cfg)
    }
}

/// Built-in self tests, selected with `selftest=`; they end by powering the machine off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selftest {
    /// Finish booting, check that every CPU's timer ticks, power off.
    Boot,
    /// CPU 1 touches an unmapped address; CPU 0 must carry on and power off.
    PageFault,
    /// Create and destroy 100 domains; every frame must come back.
    Domains,
    /// Allocate three times the old fixed 16 MiB heap and free it; the heap must grow, and a request it cannot
    /// meet must fail as a value.
    Heap,
}

/// A memory size as Xen writes it: a number with an optional `B`, `K`, `M`, `G` or `T` suffix (default KiB).
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'B' | b'b' => (&s[..s.len() - 1], 0),
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 10),
    };
    parse_number(digits)?.checked_mul(1 << shift)
}

/// A decimal or `0x` hexadecimal number.
pub fn parse_number(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// One `<sz>` of `dom0_mem=`: `[-]<size>`, `[-]<frac>%` or `[-]<size>+<frac>%` (a fraction of the memory
/// available to dom0; a leading `-` means "all available memory but this much").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSize {
    /// The absolute part in bytes.
    pub bytes: u64,
    /// The percentage of available memory added to it (below 100).
    pub percent: u8,
    /// Whether the size is subtracted from the available memory.
    pub minus: bool,
}

impl MemSize {
    /// Plain bytes.
    pub const fn bytes(bytes: u64) -> Self {
        Self { bytes, percent: 0, minus: false }
    }

    /// Parses `[-]<size>`, `[-]<frac>%` or `[-]<size>+<frac>%`.
    pub fn parse(s: &str) -> Option<Self> {
        let (minus, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (size, frac) = match s.strip_suffix('%') {
            Some(f) => match f.rsplit_once('+') {
                Some((size, frac)) => (Some(size), Some(frac)),
                None => (None, Some(f)),
            },
            None => (Some(s), None),
        };
        let bytes = match size {
            Some(sz) => parse_size(sz)?,
            None => 0,
        };
        let percent = match frac {
            Some(f) => u8::try_from(parse_number(f)?).ok().filter(|&p| p < 100)?,
            None => 0,
        };
        Some(Self { bytes, percent, minus })
    }

    /// The size in bytes, given `avail` bytes available to dom0.
    pub fn resolve(self, avail: u64) -> u64 {
        let n = self.bytes.saturating_add((u128::from(avail) * u128::from(self.percent) / 100) as u64);
        if self.minus {
            avail.saturating_sub(n)
        } else {
            n
        }
    }
}

/// `dom0_mem=[min:<sz>,][max:<sz>,][<sz>]`, with Xen's meaning: `<sz>` is the initial allocation (all available
/// memory when absent), `min:` and `max:` bound it (`max:` wins over `min:`), and the result never exceeds what
/// is available. Without the option Keel gives dom0 [`Dom0Mem::DEFAULT_BYTES`] (Xen would give it everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dom0Mem {
    /// The plain `<sz>`.
    pub initial: Option<MemSize>,
    /// `min:<sz>`.
    pub min: Option<MemSize>,
    /// `max:<sz>`.
    pub max: Option<MemSize>,
}

impl Default for Dom0Mem {
    fn default() -> Self {
        Self { initial: Some(MemSize::bytes(Self::DEFAULT_BYTES)), min: None, max: None }
    }
}

impl Dom0Mem {
    /// dom0's memory when `dom0_mem=` is absent.
    pub const DEFAULT_BYTES: u64 = 512 << 20;
    /// The most Keel keeps for itself (Xen's dom0 reserve: 1/16 of memory, at most 128 MiB).
    pub const MAX_RESERVE: u64 = 128 << 20;

    /// Parses the value of `dom0_mem=`; a list of items separated by commas, later ones winning.
    pub fn parse(v: &str) -> Result<Self, String> {
        let mut d = Self { initial: None, min: None, max: None };
        for item in v.split(',') {
            let (slot, size) = if let Some(s) = item.strip_prefix("min:") {
                (&mut d.min, s)
            } else if let Some(s) = item.strip_prefix("max:") {
                (&mut d.max, s)
            } else {
                (&mut d.initial, item)
            };
            match MemSize::parse(size) {
                Some(sz) if sz != MemSize::bytes(0) => *slot = Some(sz),
                _ => {
                    return Err(format!(
                        "'{item}' is not a size such as 512M, -1G, 25% or 1G+25% (with an optional min: or max:)"
                    ))
                }
            }
        }
        Ok(d)
    }

    /// dom0's memory in bytes (a whole number of pages) when `free` bytes are free and the kernel needs
    /// `unpack` bytes of scratch memory besides dom0's own to be unpacked. What is available to dom0 is `free`
    /// less Keel's reserve (1/16 of `free`, at most [`Self::MAX_RESERVE`]) and `unpack`; every size is clamped
    /// to that, so a `dom0_mem=` larger than the machine still boots.
    pub fn resolve(&self, free: u64, unpack: u64) -> u64 {
        let reserve = (free / 16).min(Self::MAX_RESERVE);
        let avail = free.saturating_sub(reserve).saturating_sub(unpack);
        let mut n = self.initial.map_or(avail, |s| s.resolve(avail));
        if let Some(min) = self.min {
            n = n.max(min.resolve(avail));
        }
        if let Some(max) = self.max {
            n = n.min(max.resolve(avail));
        }
        n.min(avail) & !0xfff
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "on" | "yes" | "true" | "enable" => Some(true),
        "0" | "off" | "no" | "false" | "disable" => Some(false),
        _ => None,
    }
}

/// Every option Keel understands, with its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `console=`: whether COM1 carries the console (`com1`); other targets are warned about.
    pub console_com1: bool,
    /// `com1=`
    pub com1: ComConfig,
    /// `loglvl=`
    pub loglvl: LogLevel,
    /// `hvm=<bool>`: allow HVM/PVH guests (enables VMX/SVM).
    pub hvm: bool,
    /// `selftest=boot|pagefault|domains|heap`
    pub selftest: Option<Selftest>,
    /// `dom0_mem=[min:<sz>,][max:<sz>,][<sz>]`.
    pub dom0_mem: Dom0Mem,
    /// `dom0_max_vcpus=<n>`
    pub dom0_max_vcpus: Option<u32>,
    /// `maxcpus=<n>`: bring up at most this many CPUs.
    pub maxcpus: Option<u32>,
    /// `xtf`: every boot module is a test guest (Keel's test mode).
    pub xtf: bool,
    /// `cpu0-guests=<bool>` (Keel's; default on): whether CPU 0 runs guest vCPUs. Off is the narrow workaround for
    /// QEMU TCG's nested-SVM defect (docs/testing.md, "A QEMU defect"), which corrupts only CPU 0's world switches.
    pub cpu0_guests: bool,
    /// `dom0-platform=host|virtual` (Keel's; default `host`): `host` gives dom0 the machine's platform as Xen
    /// gives its hardware domain (the host's e820 shape and ACPI tables, PCI configuration space, its devices'
    /// interrupts and DMA); `virtual` the PVH domU platform (Keel's own ACPI tables, RAM from 0, no device). Test
    /// mode (`xtf`) and the self-tests build no dom0 and ignore it: see [`Options::dom0_owns_devices`].
    pub dom0_host_platform: bool,
    /// `iommu=<bool>` (Xen's, its boolean forms): whether Keel drives the host's IOMMU for the hardware domain's
    /// devices (default on; only with `dom0-platform=host`).
    pub iommu: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            console_com1: true,
            com1: ComConfig::default(),
            loglvl: LogLevel::Info,
            hvm: true,
            selftest: None,
            dom0_mem: Dom0Mem::default(),
            dom0_max_vcpus: None,
            maxcpus: None,
            xtf: false,
            cpu0_guests: true,
            dom0_host_platform: true,
            iommu: true,
        }
    }
}

impl Options {
    /// Whether dom0 gets the machine's platform (`dom0-platform=host`, and a boot that builds a dom0 at all: not
    /// test mode, not a self-test).
    pub fn dom0_owns_devices(&self) -> bool {
        self.dom0_host_platform && !self.xtf && self.selftest.is_none()
    }
}

/// A problem found in the command line; boot goes on with the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);

/// Parses a command line. Never fails: problems come back as warnings.
pub fn parse(cmdline: &str) -> (Options, Vec<Warning>) {
    let mut o = Options::default();
    let mut warnings = Vec::new();
    for word in cmdline.split_ascii_whitespace() {
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (word, None),
        };
        let mut bad = |what: &str| warnings.push(Warning(format!("option '{word}': {what}; using the default")));
        match (name, value) {
            ("console", Some(v)) => {
                o.console_com1 = false;
                for target in v.split(',') {
                    match target {
                        "com1" => o.console_com1 = true,
                        "none" => {}
                        other => bad(&format!("console target '{other}' is not supported (only com1)")),
                    }
                }
            }
            ("com1", Some(v)) => match ComConfig::parse(v) {
                Ok(c) => o.com1 = c,
                Err(e) => bad(&e),
            },
            ("loglvl", Some(v)) => match LogLevel::parse(v) {
                Some(l) => o.loglvl = l,
                None => bad("level must be one of none, error, warning, info, debug, all"),
            },
            ("hvm", v) => match v.map_or(Some(true), parse_bool) {
                Some(b) => o.hvm = b,
                None => bad("expected a boolean"),
            },
            ("no-hvm", None) => o.hvm = false,
            ("cpu0-guests", v) => match v.map_or(Some(true), parse_bool) {
                Some(b) => o.cpu0_guests = b,
                None => bad("expected a boolean"),
            },
            ("xtf", None) => o.xtf = true,
            ("iommu", v) => match v.map_or(Some(true), parse_bool) {
                Some(b) => o.iommu = b,
                None => bad("expected a boolean"),
            },
            ("dom0-platform", Some("host")) => o.dom0_host_platform = true,
            ("dom0-platform", Some("virtual")) => o.dom0_host_platform = false,
            ("dom0-platform", _) => bad("expected host or virtual"),
            ("selftest", Some(v)) => match v {
                "boot" => o.selftest = Some(Selftest::Boot),
                "pagefault" => o.selftest = Some(Selftest::PageFault),
                "domains" => o.selftest = Some(Selftest::Domains),
                "heap" => o.selftest = Some(Selftest::Heap),
                _ => bad("self tests are 'boot', 'pagefault' and 'domains'"),
            },
            ("dom0_mem", Some(v)) => match Dom0Mem::parse(v) {
                Ok(d) => o.dom0_mem = d,
                Err(e) => bad(&e),
            },
            ("dom0_max_vcpus", Some(v)) => {
                // `dom0_max_vcpus=<min>-<max>` is accepted; the maximum is used.
                let max = v.rsplit('-').next().unwrap_or("");
                match parse_number(max) {
                    Some(n) if n > 0 && n <= u32::MAX as u64 => o.dom0_max_vcpus = Some(n as u32),
                    _ => bad("expected a vCPU count"),
                }
            }
            ("maxcpus", Some(v)) => match parse_number(v) {
                Some(n) if n > 0 && n <= u32::MAX as u64 => o.maxcpus = Some(n as u32),
                _ => bad("expected a CPU count"),
            },
            _ => warnings.push(Warning(format!("unknown command-line option '{word}' ignored"))),
        }
    }
    (o, warnings)
}

/// Keel's command line as it was given (for `XENVER_commandline`), kept once at boot.
static RAW: spin::Once<alloc::string::String> = spin::Once::new();

/// Keeps the command line Keel was booted with.
pub fn remember(raw: &str) {
    RAW.call_once(|| raw.into());
}

/// The command line Keel was booted with ("" before [`remember`]).
pub fn raw() -> &'static str {
    RAW.get().map_or("", |s| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_gives_defaults() {
        let (o, w) = parse("");
        assert_eq!(o, Options::default());
        assert!(w.is_empty());
    }

    #[test]
    fn xen_style_console_options() {
        let (o, w) = parse("console=com1 com1=115200,8n1 loglvl=all");
        assert!(w.is_empty(), "{w:?}");
        assert!(o.console_com1);
        assert_eq!(o.com1.baud, Some(115_200));
        assert_eq!((o.com1.data_bits, o.com1.parity, o.com1.stop_bits), (8, Parity::None, 1));
        assert_eq!(o.loglvl, LogLevel::All);
    }

    #[test]
    fn com1_full_syntax() {
        let (o, w) = parse("com1=9600/1843200,7e2,0x2f8");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            o.com1,
            ComConfig { baud: Some(9600), data_bits: 7, parity: Parity::Even, stop_bits: 2, io_base: 0x2f8 }
        );
        let (o, _) = parse("com1=auto");
        assert_eq!(o.com1.baud, None);
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let (o, w) = parse("com1=fast,9x1 loglvl=loud hvm=maybe");
        assert_eq!(o, Options::default());
        assert_eq!(w.len(), 3);
        assert!(w[0].0.contains("com1=fast,9x1"));
        assert!(w[1].0.contains("loglvl"));
    }

    #[test]
    fn unknown_options_are_reported() {
        let (_, w) = parse("frobnicate=7 console=com1");
        assert_eq!(w, [Warning("unknown command-line option 'frobnicate=7' ignored".into())]);
    }

    #[test]
    fn loglvl_rate_limited_suffix() {
        assert_eq!(parse("loglvl=debug/warning").0.loglvl, LogLevel::Debug);
        assert_eq!(parse("loglvl=warning").0.loglvl, LogLevel::Warning);
    }

    #[test]
    fn hvm_switch_forms() {
        assert!(!parse("hvm=off").0.hvm);
        assert!(!parse("no-hvm").0.hvm);
        assert!(parse("hvm=1").0.hvm);
        assert!(parse("hvm").0.hvm);
        assert!(parse("").0.cpu0_guests);
        assert!(!parse("cpu0-guests=off").0.cpu0_guests);
        assert!(parse("dom0-platform=host").0.dom0_host_platform);
        assert!(parse("").0.dom0_owns_devices() && !parse("xtf").0.dom0_owns_devices());
        assert!(!parse("selftest=boot").0.dom0_owns_devices());
        assert!(parse("").0.iommu && !parse("iommu=0").0.iommu && !parse("iommu=off").0.iommu);
        assert_eq!(parse("iommu=maybe").1.len(), 1, "one warning");
        assert!(!parse("dom0-platform=virtual").0.dom0_host_platform);
        assert_eq!(parse("dom0-platform=real").1.len(), 1, "one warning");
    }

    #[test]
    fn dom0_options() {
        let (o, w) = parse("dom0_mem=512M,max:1G dom0_max_vcpus=1-4 maxcpus=2");
        assert!(w.is_empty(), "{w:?}");
        let sz = |b: u64| Some(MemSize::bytes(b));
        assert_eq!(o.dom0_mem, Dom0Mem { initial: sz(512 << 20), min: None, max: sz(1 << 30) });
        assert_eq!(o.dom0_max_vcpus, Some(4));
        assert_eq!(o.maxcpus, Some(2));
        assert_eq!(parse("dom0_mem=262144").0.dom0_mem.initial, sz(256 << 20));
    }

    #[test]
    fn dom0_mem_syntax() {
        let d = |v: &str| Dom0Mem::parse(v);
        let sz = |b: u64| Some(MemSize::bytes(b));
        assert_eq!(d("min:1G,max:2G"), Ok(Dom0Mem { initial: None, min: sz(1 << 30), max: sz(2 << 30) }));
        assert_eq!(d("max:1G,768M").unwrap().initial, sz(768 << 20));
        assert_eq!(d("-512M").unwrap().initial, Some(MemSize { bytes: 512 << 20, percent: 0, minus: true }));
        assert_eq!(d("25%").unwrap().initial, Some(MemSize { bytes: 0, percent: 25, minus: false }));
        assert_eq!(d("1G+25%").unwrap().initial, Some(MemSize { bytes: 1 << 30, percent: 25, minus: false }));
        assert_eq!(d("min:-2048m").unwrap().min, Some(MemSize { bytes: 2 << 30, percent: 0, minus: true }));
        for bad in ["", "0", "max:", "512X", "100%", "1G+", "foo:1G", "1G,,2G"] {
            assert!(d(bad).is_err(), "{bad:?} accepted");
        }
        // A bad value is a warning and keeps the default.
        let (o, w) = parse("dom0_mem=lots");
        assert_eq!(o.dom0_mem, Dom0Mem::default());
        assert!(w[0].0.contains("'lots' is not a size"), "{w:?}");
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn dom0_mem_larger_than_the_machine_is_clamped_and_leaves_room() {
        // A 2 GiB machine with about 1.9 GiB free, and Debian's bzImage needing 94 MiB to unpack.
        let free = 1900 * MIB;
        let unpack = 94 * MIB;
        let reserve = free / 16; // under the 128 MiB cap
        let got = Dom0Mem::parse("4096M").unwrap().resolve(free, unpack);
        assert_eq!(got, (free - reserve - unpack) & !0xfff);
        assert!(free - got >= unpack + reserve, "room to unpack the kernel and Keel's reserve are kept");
        // The reserve is capped at 128 MiB on large machines.
        let free = 64 << 30;
        assert_eq!(Dom0Mem::parse("1T").unwrap().resolve(free, unpack), free - 128 * MIB - unpack);
        // A request that fits is given as is.
        assert_eq!(Dom0Mem::parse("512M").unwrap().resolve(free, unpack), 512 * MIB);
        // Nothing free: nothing to give (domain creation then says so).
        assert_eq!(Dom0Mem::parse("512M").unwrap().resolve(50 * MIB, unpack), 0);
    }

    #[test]
    fn dom0_mem_min_max_and_relative_sizes() {
        let free = 4096 * MIB;
        let avail = free - 128 * MIB; // 1/16 of 4 GiB is 256 MiB: the reserve is the 128 MiB cap
        let r = |v: &str| Dom0Mem::parse(v).unwrap().resolve(free, 0);
        assert_eq!(r("min:1G"), avail, "no initial size: everything available, at least the minimum");
        assert_eq!(r("max:1G"), 1024 * MIB);
        assert_eq!(r("512M,max:256M"), 256 * MIB);
        assert_eq!(r("512M,min:1G"), 1024 * MIB);
        assert_eq!(r("min:1G,max:512M"), 512 * MIB, "max wins over min");
        assert_eq!(r("min:8G"), avail, "a minimum beyond the machine is clamped too");
        assert_eq!(r("-1G"), avail - 1024 * MIB);
        assert_eq!(r("-8G"), 0);
        assert_eq!(r("25%"), (avail / 4) & !0xfff);
        assert_eq!(r("1G+25%"), (1024 * MIB + avail / 4) & !0xfff);
        assert_eq!(r("max:-1G"), avail - 1024 * MIB);
        // Without the option: Keel's default.
        assert_eq!(Dom0Mem::default().resolve(free, 0), Dom0Mem::DEFAULT_BYTES);
    }

    #[test]
    fn selftests() {
        assert_eq!(parse("selftest=boot").0.selftest, Some(Selftest::Boot));
        assert_eq!(parse("selftest=pagefault").0.selftest, Some(Selftest::PageFault));
        assert_eq!(parse("selftest=heap").0.selftest, Some(Selftest::Heap));
        assert_eq!(parse("selftest=nope").1.len(), 1);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096B"), Some(4096));
        assert_eq!(parse_size("0x10M"), Some(16 << 20));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }
}
