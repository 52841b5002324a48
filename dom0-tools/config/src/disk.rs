//! `disk = [ 'DISKSPEC', ... ]`: xl's disk specification syntax
//! (xl-disk-configuration(5)).
//!
//! A spec is comma-separated parameters. Bare ones fill the positional
//! parameters in order: target, format, vdev, access. `key=value` names
//! one explicitly; `target=` takes the whole rest of the spec, commas
//! included, so it comes last. Flags (`cdrom`, `discard`, ...) stand
//! alone. Each parameter may be given once; an empty value means the
//! default. The deprecated forms xend and old xl accepted still work:
//! prefixes on the target (`phy:`, `file:`, `tap:aio:`, `raw:`,
//! `qcow2:`, `iscsi:` ...), and `vdev:cdrom` / `vdev:disk`.

use std::fmt;

use serde::Serialize;

/// An image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A raw image or a block device (the default).
    Raw,
    /// QEMU's qcow.
    Qcow,
    /// QEMU's qcow2.
    Qcow2,
    /// A VHD image.
    Vhd,
    /// QEMU's qed.
    Qed,
    /// No medium (an empty CD-ROM drive).
    Empty,
}

impl Format {
    fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "" | "raw" => Format::Raw,
            "qcow" => Format::Qcow,
            "qcow2" => Format::Qcow2,
            "vhd" => Format::Vhd,
            "qed" => Format::Qed,
            "empty" => Format::Empty,
            _ => return None,
        })
    }

    /// The name as written in a spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow => "qcow",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Qed => "qed",
            Format::Empty => "empty",
        }
    }
}

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// `ro` / `r`.
    Ro,
    /// `rw` / `w`.
    Rw,
}

/// The backend implementation (`backendtype=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendType {
    /// The kernel's blkback.
    Phy,
    /// blktap's tapback.
    Tap,
    /// QEMU.
    Qdisk,
    /// A standalone virtio backend.
    Standalone,
}

/// One parsed, validated disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// The block device or image path (empty for an empty CD-ROM drive).
    pub target: String,
    /// The image format.
    pub format: Format,
    /// The device as the guest sees it (`xvda`, `hdc`, `d1p2`, ...).
    pub vdev: String,
    /// The vdev's number in the Xen VBD interface (xen-vbd-interface(7)), as xenstore holds it.
    pub vbd: u32,
    /// Read-only or read-write.
    pub access: Access,
    /// A CD-ROM rather than a disk.
    pub cdrom: bool,
    /// The backend domain, if not dom0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The backend implementation, if chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backendtype: Option<BackendType>,
    /// The block script that interprets the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Flags and other settings, as `name` or `name=value` (direct-io-safe, discard, specification=virtio ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl fmt::Display for Disk {
    /// The canonical spec, which parses back to the same disk.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = match self.access {
            Access::Ro => "ro",
            Access::Rw => "rw",
        };
        write!(f, "format={}, vdev={}, access={}", self.format.as_str(), self.vdev, access)?;
        if self.cdrom {
            f.write_str(", devtype=cdrom")?;
        }
        if let Some(b) = &self.backend {
            write!(f, ", backend={b}")?;
        }
        if let Some(t) = self.backendtype {
            let t = match t {
                BackendType::Phy => "phy",
                BackendType::Tap => "tap",
                BackendType::Qdisk => "qdisk",
                BackendType::Standalone => "standalone",
            };
            write!(f, ", backendtype={t}")?;
        }
        if let Some(s) = &self.script {
            write!(f, ", script={s}")?;
        }
        for o in &self.options {
            write!(f, ", {o}")?;
        }
        write!(f, ", target={}", self.target)
    }
}

const FLAGS: &[&str] = &["direct-io-safe", "discard", "no-discard", "trusted", "untrusted", "colo", "no-colo"];
const STRING_KEYS: &[&str] =
    &["specification", "colo-host", "colo-port", "colo-export", "active-disk", "hidden-disk", "grant_usage"];
const IGNORED_PREFIXES: &[&str] = &["tapdisk", "tap", "tap2", "aio", "ioemu", "file", "phy"];
const FORMAT_PREFIXES: &[&str] = &["raw", "qcow", "qcow2", "vhd"];
const SCRIPT_PREFIXES: &[&str] = &["iscsi", "nbd", "enbd", "drbd"];

#[derive(Default)]
struct Spec {
    target: Option<String>,
    format: Option<Format>,
    vdev: Option<String>,
    access: Option<Access>,
    access_given: bool,
    cdrom: Option<bool>,
    backend: Option<String>,
    backendtype: Option<BackendType>,
    script: Option<String>,
    options: Vec<String>,
    had_prefix: bool,
}

/// Sets `slot` unless it already holds a non-empty value (an empty one may be given again, as in xl).
fn set_once(slot: &mut Option<String>, name: &str, value: &str) -> Result<(), String> {
    match slot {
        Some(old) if !old.is_empty() => Err(format!("{name} given twice ({old:?} and {value:?})")),
        _ => {
            *slot = Some(value.to_owned());
            Ok(())
        }
    }
}

/// `None` for an empty value: the default.
fn parse_access(s: &str) -> Result<Option<Access>, String> {
    match s {
        "" => Ok(None),
        "r" | "ro" => Ok(Some(Access::Ro)),
        "w" | "rw" => Ok(Some(Access::Rw)),
        _ => Err(format!("access {s:?} is not one of ro, r, rw, w")),
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("format {s:?} is not one of raw, qcow, qcow2, vhd, qed, empty"))
}

/// Splits `vdev:cdrom` / `vdev:disk`; `None` if there is no colon.
fn vdev_and_devtype(s: &str) -> Option<Result<(String, bool), String>> {
    let (vdev, kind) = s.rsplit_once(':')?;
    Some(match kind {
        "cdrom" => Ok((vdev.to_owned(), true)),
        "disk" => Ok((vdev.to_owned(), false)),
        _ => Err(format!("{kind:?} after ':' in {s:?} is not a device type (cdrom or disk)")),
    })
}

impl Spec {
    fn set_format(&mut self, f: Format) -> Result<(), String> {
        if self.format.is_some_and(|old| old != f) {
            return Err("format given twice".into());
        }
        self.format = Some(f);
        Ok(())
    }

    fn set_vdev_devtype(&mut self, vdev: String, cdrom: bool) -> Result<(), String> {
        set_once(&mut self.vdev, "vdev", &vdev)?;
        self.cdrom = Some(cdrom);
        Ok(())
    }

    /// Strips the deprecated `prefix:` forms from the start of a positional parameter.
    fn strip_prefixes<'a>(&mut self, mut s: &'a str) -> Result<&'a str, String> {
        while let Some((word, rest)) = s.split_once(':') {
            let is_word = word.starts_with(|c: char| c.is_ascii_lowercase())
                && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            // xl: a prefix is a lowercase word and a colon *not* followed by another letter or digit
            // (so `xvda:cdrom` is a vdev, not a prefix), except for the known prefixes.
            let known =
                IGNORED_PREFIXES.contains(&word) || FORMAT_PREFIXES.contains(&word) || SCRIPT_PREFIXES.contains(&word);
            if !is_word {
                break;
            }
            if !known {
                if rest.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
                    break;
                }
                return Err(format!("unknown deprecated disk prefix '{word}:'"));
            }
            self.had_prefix = true;
            if FORMAT_PREFIXES.contains(&word) {
                self.set_format(parse_format(word)?)?;
            } else if SCRIPT_PREFIXES.contains(&word) {
                set_once(&mut self.script, "script", &format!("block-{word}"))?;
            }
            s = rest;
        }
        Ok(s)
    }

    fn positional(&mut self, raw: &str) -> Result<(), String> {
        let p = self.strip_prefixes(raw)?;
        if self.target.is_none() {
            self.target = Some(p.to_owned());
        } else if !self.had_prefix && self.format.is_none() {
            // The second positional is the format, except in xend's `,vdev:devtype,access` (empty target).
            if self.target.as_deref() == Some("") {
                if let Some(split) = vdev_and_devtype(p) {
                    let (vdev, cdrom) = split?;
                    self.format = Some(Format::Empty);
                    return self.set_vdev_devtype(vdev, cdrom);
                }
            }
            self.format = Some(parse_format(p)?);
        } else if self.vdev.is_none() {
            match vdev_and_devtype(p) {
                Some(split) => {
                    let (vdev, cdrom) = split?;
                    self.set_vdev_devtype(vdev, cdrom)?;
                }
                None => self.vdev = Some(p.to_owned()),
            }
        } else if !self.access_given {
            self.access_given = true;
            self.access = parse_access(p)?;
        } else {
            return Err(format!("too many positional parameters at {p:?} (target, format, vdev, access)"));
        }
        Ok(())
    }

    fn keyed(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "format" => self.set_format(parse_format(value)?),
            "vdev" => set_once(&mut self.vdev, "vdev", value),
            "access" => {
                if self.access_given {
                    return Err("access given twice".into());
                }
                self.access_given = true;
                self.access = parse_access(value)?;
                Ok(())
            }
            "devtype" => {
                self.cdrom = Some(match value {
                    "cdrom" => true,
                    "disk" => false,
                    _ => return Err(format!("devtype {value:?} is not one of cdrom, disk")),
                });
                Ok(())
            }
            "backend" => set_once(&mut self.backend, "backend", value),
            "backendtype" => {
                self.backendtype = Some(match value {
                    "phy" => BackendType::Phy,
                    "tap" => BackendType::Tap,
                    "qdisk" => BackendType::Qdisk,
                    "standalone" => BackendType::Standalone,
                    _ => return Err(format!("backendtype {value:?} is not one of phy, tap, qdisk, standalone")),
                });
                Ok(())
            }
            "script" => set_once(&mut self.script, "script", value),
            "specification" if !matches!(value, "xen" | "virtio") => {
                Err(format!("specification {value:?} is not one of xen, virtio"))
            }
            "grant_usage" if !matches!(value, "0" | "1") => Err(format!("grant_usage {value:?} is not 0 or 1")),
            _ if STRING_KEYS.contains(&key) => {
                self.options.push(format!("{key}={value}"));
                Ok(())
            }
            _ => Err(format!("unknown parameter '{key}'")),
        }
    }
}

/// Parses one disk spec. The error says what is wrong with it (the caller adds where).
pub fn parse(spec: &str) -> Result<Disk, String> {
    let mut s = Spec::default();
    let mut rest = spec;
    while !rest.is_empty() {
        rest = rest.trim_start_matches([' ', '\t', '\n']);
        if rest.is_empty() {
            break;
        }
        if let Some(target) = rest.strip_prefix("target=") {
            // Takes the rest of the spec, commas and all; it may follow an empty positional target.
            set_once(&mut s.target, "target", target)?;
            break;
        }
        let (param, next) = match rest.find(',') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        rest = next;
        if param == "cdrom" {
            s.cdrom = Some(true);
        } else if FLAGS.contains(&param) {
            s.options.push(param.to_owned());
        } else if let Some((key, value)) = param.split_once('=') {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("{param:?} is not a parameter (KEY=VALUE)"));
            }
            s.keyed(key, value)?;
        } else {
            s.positional(param)?;
        }
    }

    let cdrom = s.cdrom.unwrap_or(false);
    let target = s.target.unwrap_or_default();
    let vdev = s.vdev.filter(|v| !v.is_empty()).ok_or("no vdev (the device the guest sees, e.g. xvda)")?;
    let vbd = vbd_number(&vdev)?;
    let mut format = s.format.unwrap_or(Format::Raw);
    if target.is_empty() {
        if !cdrom {
            return Err("no target (the image file or block device)".into());
        }
        format = Format::Empty;
    }
    let access = s.access.unwrap_or(if cdrom { Access::Ro } else { Access::Rw });
    if cdrom && s.access == Some(Access::Rw) {
        return Err("a CD-ROM cannot be read-write".into());
    }
    Ok(Disk {
        target,
        format,
        vdev,
        vbd,
        access,
        cdrom,
        backend: s.backend.filter(|b| !b.is_empty()),
        backendtype: s.backendtype,
        script: s.script.filter(|b| !b.is_empty()),
        options: s.options,
    })
}

/// Disk number of the letters after `xvd`/`sd`/`hd`: a=0 ... z=25, aa=26 ... (bijective base 26).
fn letters_to_disk(letters: &str) -> Option<u32> {
    let mut n: u32 = 0;
    for b in letters.bytes() {
        n = n.checked_mul(26)?.checked_add(u32::from(b - b'a') + 1)?;
    }
    n.checked_sub(1)
}

fn split_letters_digits(s: &str) -> Option<(&str, Option<u32>)> {
    let i = s.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(s.len());
    let (letters, digits) = s.split_at(i);
    if letters.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    Some((letters, if digits.is_empty() { None } else { Some(digits.parse().ok()?) }))
}

/// The VBD number of a vdev, as xen-vbd-interface(7) encodes it.
pub fn vbd_number(vdev: &str) -> Result<u32, String> {
    let bad = || {
        format!("vdev {vdev:?} is not a virtual device (xvdN, sdN, hdN with a letter for N, optionally a partition number, or dNpP)")
    };
    let extended = |disk: u32, part: u32| -> Result<u32, String> {
        if disk >= 1 << 20 || part > 255 {
            return Err(format!("vdev {vdev:?} is out of range (disks below 1048576, partitions up to 255)"));
        }
        Ok(1 << 28 | disk << 8 | part)
    };
    if let Some(rest) = vdev.strip_prefix("xvd") {
        let (letters, part) = split_letters_digits(rest).ok_or_else(bad)?;
        let disk = letters_to_disk(letters).ok_or_else(bad)?;
        let part = part.unwrap_or(0);
        return if disk < 16 && part < 16 { Ok(202 << 8 | disk << 4 | part) } else { extended(disk, part) };
    }
    if let Some(rest) = vdev.strip_prefix("sd") {
        let (letters, part) = split_letters_digits(rest).ok_or_else(bad)?;
        let disk = letters_to_disk(letters).ok_or_else(bad)?;
        let part = part.unwrap_or(0);
        if disk >= 16 || part >= 16 {
            return Err(format!("vdev {vdev:?} is out of range (sda to sdp, partitions up to 15)"));
        }
        return Ok(8 << 8 | disk << 4 | part);
    }
    if let Some(rest) = vdev.strip_prefix("hd") {
        let (letters, part) = split_letters_digits(rest).ok_or_else(bad)?;
        let disk = letters_to_disk(letters).ok_or_else(bad)?;
        let part = part.unwrap_or(0);
        if disk >= 4 || part >= 64 {
            return Err(format!("vdev {vdev:?} is out of range (hda to hdd, partitions up to 63)"));
        }
        return Ok(if disk < 2 { 3 << 8 | disk << 6 | part } else { 22 << 8 | (disk - 2) << 6 | part });
    }
    if let Some(rest) = vdev.strip_prefix('d') {
        let (disk, part) = match rest.split_once('p') {
            Some((d, p)) => (d, p),
            None => (rest, "0"),
        };
        let num = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
        };
        let (disk, part) = (num(disk).ok_or_else(bad)?, num(part).ok_or_else(bad)?);
        return if disk < 16 && part < 16 { Ok(202 << 8 | disk << 4 | part) } else { extended(disk, part) };
    }
    // A bare number is written to xenstore as it is (hex, octal or decimal), for old guests.
    crate::parse_c_number(vdev).and_then(|n| u32::try_from(n).ok()).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(spec: &str) -> Disk {
        parse(spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
    }

    fn err(spec: &str) -> String {
        parse(spec).map(|d| panic!("{spec:?} parsed: {d:?}")).unwrap_err()
    }

    #[test]
    fn the_equivalent_forms_of_the_manual() {
        let want = disk("/dev/vg/guest-volume,raw,hda,rw");
        assert_eq!(want.target, "/dev/vg/guest-volume");
        assert_eq!((want.format, want.vdev.as_str(), want.access, want.cdrom), (Format::Raw, "hda", Access::Rw, false));
        for spec in [
            "/dev/vg/guest-volume,,hda",
            "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
            "raw:/dev/vg/guest-volume,hda,w",
            "phy:/dev/vg/guest-volume,hda,w",
        ] {
            assert_eq!(disk(spec), want, "{spec}");
        }
        let cd = disk("/root/image.iso,,hdc,cdrom");
        assert_eq!((cd.access, cd.cdrom, cd.vbd), (Access::Ro, true, 22 << 8));
        for spec in [
            "/root/image.iso,,hdc,,cdrom",
            "/root/image.iso,raw,hdc,devtype=cdrom",
            "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
            "raw:/root/image.iso,hdc:cdrom,ro",
        ] {
            assert_eq!(disk(spec), cd, "{spec}");
        }
    }

    #[test]
    fn other_forms() {
        let d = disk("/dev/zvol/tank/guest-volume,raw,xvda,rw");
        assert_eq!(d.vbd, 51712);
        assert_eq!(disk("file:/img,xvdb,r").access, Access::Ro);
        assert_eq!(disk("tap:aio:/img,xvdb,w").target, "/img");
        assert_eq!(disk("tap:qcow2:/img,xvdb,w").format, Format::Qcow2);
        assert_eq!(disk("iscsi:iqn.x,xvdc,w").script.as_deref(), Some("block-iscsi"));
        // target= takes the rest, commas included.
        assert_eq!(disk("vdev=xvda,target=/images/a,b.img").target, "/images/a,b.img");
        // xend's empty CD-ROM.
        let empty = disk(",hdc:cdrom,r");
        assert_eq!((empty.target.as_str(), empty.format, empty.cdrom), ("", Format::Empty, true));
        assert_eq!(disk("vdev=xvdd, devtype=cdrom").format, Format::Empty);
        let flags = disk("/img,qcow2,xvde,rw,discard,direct-io-safe,backend=drv,backendtype=qdisk");
        assert_eq!(flags.options, ["discard", "direct-io-safe"]);
        assert_eq!((flags.backend.as_deref(), flags.backendtype), (Some("drv"), Some(BackendType::Qdisk)));
        assert_eq!(disk("  /img ,, xvda").vdev, "xvda");
        // Trailing whitespace and a trailing comma are ignored.
        assert_eq!(disk("/img,,xvda,rw, "), disk("/img,,xvda,rw,"));
        assert_eq!(disk("/img,,xvda,rw,").access, Access::Rw);
    }

    #[test]
    fn the_canonical_form_reads_back() {
        for spec in [
            "/img,,xvda",
            "/root/a.iso,,hdc,cdrom",
            "tap:qcow2:/i,xvdb,r",
            ",hdc:cdrom,r",
            "/x,raw,d3p1,rw,trusted,specification=xen",
        ] {
            let d = disk(spec);
            assert_eq!(disk(&d.to_string()), d, "{spec} -> {d}");
        }
    }

    #[test]
    fn bad_specs() {
        assert_eq!(err("/img"), "no vdev (the device the guest sees, e.g. xvda)");
        assert_eq!(err("vdev=xvda"), "no target (the image file or block device)");
        assert_eq!(err("/img,fat,xvda"), "format \"fat\" is not one of raw, qcow, qcow2, vhd, qed, empty");
        assert_eq!(err("/img,,xvda,rx"), "access \"rx\" is not one of ro, r, rw, w");
        assert_eq!(
            err("/img,,xvda,rw,extra"),
            "too many positional parameters at \"extra\" (target, format, vdev, access)"
        );
        assert_eq!(err("/img,,xvda,colour=red"), "unknown parameter 'colour'");
        assert_eq!(err("/img,,xvda,vdev=xvdb"), "vdev given twice (\"xvda\" and \"xvdb\")");
        assert_eq!(err("/img,,xvda,devtype=tape"), "devtype \"tape\" is not one of cdrom, disk");
        assert_eq!(err("foo:/img,xvda,w"), "unknown deprecated disk prefix 'foo:'");
        assert_eq!(err("/img,,vda"), "vdev \"vda\" is not a virtual device (xvdN, sdN, hdN with a letter for N, optionally a partition number, or dNpP)");
        assert_eq!(err("/img,,hde"), "vdev \"hde\" is out of range (hda to hdd, partitions up to 63)");
        assert_eq!(err("/a.iso,,hdc,rw,cdrom"), "a CD-ROM cannot be read-write");
        assert_eq!(err("/img,,hdc:tape"), "\"tape\" after ':' in \"hdc:tape\" is not a device type (cdrom or disk)");
    }

    #[test]
    fn vbd_numbers() {
        for (vdev, n) in [
            ("xvda", 202 << 8),
            ("xvdb2", 202 << 8 | 1 << 4 | 2),
            ("d1p2", 202 << 8 | 1 << 4 | 2),
            ("d0", 202 << 8),
            ("xvdq", 1 << 28 | 16 << 8),
            ("xvdaa", 1 << 28 | 26 << 8),
            ("d536p37", 1 << 28 | 536 << 8 | 37),
            ("xvdtq37", 1 << 28 | 536 << 8 | 37),
            ("sdb3", 8 << 8 | 1 << 4 | 3),
            ("hdc2", 22 << 8 | 2),
            ("hdb", 3 << 8 | 1 << 6),
            ("51712", 51712),
            ("0xca00", 51712),
        ] {
            assert_eq!(vbd_number(vdev), Ok(n), "{vdev}");
        }
        for bad in ["xvd", "xvdA", "xvda0", "sdq", "d", "dxp1", "d1p256x", "zz"] {
            assert!(vbd_number(bad).is_err(), "{bad}");
        }
    }
}
