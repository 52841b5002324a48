//! Debian installs a **bzImage** (`/boot/vmlinuz-*`), not the ELF `vmlinux` whose `XEN_ELFNOTE_PHYS32_ENTRY`
//! note a PVH loader needs. This module finds the compressed payload through the x86 boot protocol's setup
//! header and decompresses it into a caller-provided buffer: XZ (the compression of Debian's amd64 kernels),
//! gzip and zstd (`CONFIG_KERNEL_GZIP`, `CONFIG_KERNEL_ZSTD`). bzip2, LZMA, LZO and LZ4 are recognised and
//! refused by name.
//!
//! # The bzImage layout (Linux `Documentation/x86/boot.rst`, `arch/x86/boot/header.S`)
//!
//! | Offset  | Field            | Use here                                                                     |
//! |---------|------------------|------------------------------------------------------------------------------|
//! | `0x1F1` | `setup_sects` u8 | real-mode setup is `setup_sects` 512-byte sectors after the boot sector; 0 means 4 |
//! | `0x1FE` | `boot_flag` u16  | `0xAA55`                                                                     |
//! | `0x202` | `header` u32     | `"HdrS"`                                                                     |
//! | `0x206` | `version` u16    | boot protocol; `payload_offset`/`payload_length` exist from 2.08 on          |
//! | `0x248` | `payload_offset` | u32, relative to the protected-mode code at `(setup_sects + 1) * 512`         |
//! | `0x24C` | `payload_length` | u32                                                                          |
//!
//! # The size trailer
//!
//! For every compressor but gzip, Linux's `arch/x86/boot/compressed/Makefile` builds the payload with the
//! `*_with_size` commands of `scripts/Makefile.lib`, which append the uncompressed size as a little-endian u32
//! (`size_append`) after the compressed stream; the decompressor stub's `mkpiggy` reads it back from the last
//! four bytes. gzip needs no trailer: its own last four bytes (ISIZE) are the size modulo 2^32.
//! Checked against Debian's `linux-image-6.1.0-56-amd64` (6.1.192-2): payload 8,122,480 bytes = an 8,122,476-byte
//! XZ stream (`xz -lvv`: one block, CRC32 check, `--x86 --lzma2=dict=32MiB`, 65,906,612 bytes uncompressed) +
//! the trailer `b4 a7 ed 03` = 65,906,612; `xz -dc` of the stream gives exactly that many bytes. The trailer of
//! the other compressors is per the Makefile, not checked against a real image.
//!
//! # What the payload decompresses to
//!
//! `vmlinux.bin`: the stripped ELF `vmlinux`, followed on kernels built with `CONFIG_X86_NEED_RELOCS`
//! (`RANDOMIZE_BASE`, as Debian's is) by `vmlinux.relocs`. For 6.1.0-56-amd64 the ELF (headers, PT_LOADs,
//! section table) ends at byte 65,014,640 and the remaining 891,972 bytes are the relocation table; an ELF
//! loader reads only what the headers point at, so it can take the whole buffer.
//!
//! # Decoder choice: `xz4rust`
//!
//! Evaluated for `x86_64-unknown-none` (both build there with `no_std`): `xz4rust` 0.2.3
//! (`default-features = false`, features `bcj`, `crc64`, `no_unsafe`) and `lzma-rust2` 0.25.0
//! (`default-features = false`, feature `xz`). Both decode Debian's kernel correctly, x86 BCJ filter included
//! (host, release: xz4rust 0.91 s, lzma-rust2 0.77 s, `xz -dc` 0.81 s). `xz4rust` is used because:
//! - Linux compresses with `--lzma2=dict=32MiB` (`scripts/xz_wrap.sh`) and the kernel is bigger than 32 MiB,
//!   so the decoder needs a full **32 MiB dictionary**: twice Keel's 16 MiB heap. `xz4rust` decodes into a
//!   dictionary *slice the caller provides* (`XzDecoder::with_fixed_size_dict`), so it can live in the same
//!   physical memory as the output; `lzma-rust2` always grows its window as a heap `Vec` (to 32 MiB, with a
//!   reallocation copy on the way).
//! - It needs no allocator at all for that mode (the `alloc` feature is off), has no dependencies
//!   (`lzma-rust2`'s `xz` feature pulls `sha2`, `digest` and friends), and with `no_unsafe` it is built
//!   with `deny(unsafe_code)`: all safe Rust.
//!
//! Costs: the decoder state (`XzDecoder`, about 29 KiB: range decoder probabilities and buffers) lives on the
//! stack of [`decompress_xz_with_dict`]. Measured on the host, a release-mode decode of the Debian kernel runs
//! on a 36 KiB thread stack and overflows a 32 KiB one; Keel's boot and AP stacks are 64 KiB. No heap memory is
//! used.
//!
//! # gzip and zstd
//!
//! gzip (RFC 1952: a 10-byte header, optional extra field, name, comment and header CRC, raw DEFLATE, then
//! CRC32 and ISIZE) is inflated by `miniz_oxide`'s core inflater straight into the output buffer (a
//! non-wrapping output buffer is its own 32 KiB window: no other memory but the ~11 KiB inflater state, which is
//! boxed); the CRC32 and ISIZE are checked. zstd (RFC 8878) is decoded by `ruzstd`, whose window is a heap
//! buffer: the caller bounds it ([`decompress_with`]), and a frame asking for more is refused before anything
//! is allocated; the frame's content checksum (XXH64), when present, is checked.
//!
//! # Bounds
//!
//! The output is never larger than the size the payload announces (its trailer, or gzip's ISIZE), and that
//! size is refused above [`MAX_UNPACKED`]: a payload that decodes to more is [`BzError::OutputTooSmall`],
//! one that announces more is [`BzError::TooLarge`].

use alloc::boxed::Box;
use core::fmt;
use xz4rust::{XzDecoder, XzError, XzNextBlockResult};

/// Most bytes a payload may unpack to: 1 GiB (Debian's 6.1 kernel unpacks to 63 MiB).
pub const MAX_UNPACKED: u64 = 1 << 30;
/// The zstd window [`decompress`] allows: 8 MiB of heap. Linux's `zstd -22 --ultra` may ask for up to 128 MiB
/// on a piped kernel; a builder with the memory for that passes its own bound to [`decompress_with`].
pub const DEFAULT_ZSTD_WINDOW_MAX: u64 = 8 << 20;

/// Oldest boot protocol with `payload_offset`/`payload_length` (2.08, Linux 2.6.26).
pub const MIN_PROTOCOL: u16 = 0x0208;
/// The setup header must reach the end of `payload_length`.
const HEADER_END: usize = 0x250;

/// How the payload is compressed (Linux `CONFIG_KERNEL_*`), from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `1f 8b` (or the old `1f 9e`).
    Gzip,
    /// `"BZh"`.
    Bzip2,
    /// `5d 00 00`: LZMA "alone" format, properties lc=3 lp=0 pb=2.
    Lzma,
    /// `fd "7zXZ" 00`.
    Xz,
    /// `89 "LZO"`.
    Lzo,
    /// `02 21 4c 18`: the LZ4 legacy frame.
    Lz4,
    /// `28 b5 2f fd`.
    Zstd,
}

impl Compression {
    /// The name Linux's `CONFIG_KERNEL_*` and the tools use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Bzip2 => "bzip2",
            Self::Lzma => "lzma",
            Self::Xz => "xz",
            Self::Lzo => "lzo",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// Recognises a compressed stream by its magic (Linux `lib/decompress.c`).
    pub fn detect(data: &[u8]) -> Option<Self> {
        const MAGICS: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x1f, 0x9e], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
        ];
        MAGICS.iter().find(|(magic, _)| data.starts_with(magic)).map(|&(_, kind)| kind)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is wrong with a bzImage or its compressed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BzError {
    /// Too short to hold a boot-protocol 2.08 setup header.
    Truncated {
        /// Bytes in the image.
        len: usize,
    },
    /// Not a bzImage: the named magic is missing.
    NotBzImage(&'static str),
    /// Boot protocol older than 2.08: no payload fields.
    ProtocolTooOld {
        /// The `version` field, e.g. `0x0207`.
        version: u16,
    },
    /// `payload_offset`/`payload_length` point outside the image (or the payload is empty).
    PayloadOutOfBounds {
        /// Offset of the payload from the start of the image.
        start: u64,
        /// `payload_length`.
        length: u32,
        /// Bytes in the image.
        image_len: usize,
    },
    /// The payload starts with no known compression magic.
    UnknownCompression {
        /// Its first bytes (zero-padded when shorter).
        magic: [u8; 4],
    },
    /// A known compression this module cannot decode.
    UnsupportedCompression(Compression),
    /// The stream ended before its end marker.
    TruncatedStream {
        /// The stream's format.
        kind: Compression,
        /// Bytes of input it had.
        len: usize,
    },
    /// The stream is corrupt or uses options the decoder does not support.
    CorruptStream {
        /// The stream's format.
        kind: Compression,
        /// Input bytes consumed when the problem showed, where the decoder says.
        offset: Option<usize>,
        /// The decoder's diagnosis.
        reason: &'static str,
    },
    /// The buffer given to [`decompress`] is smaller than [`Payload::buffer_size`].
    BufferTooSmall {
        /// Bytes given.
        len: usize,
        /// Bytes needed: the uncompressed size plus the LZMA2 dictionary.
        needed: usize,
    },
    /// The output buffer filled up before the stream ended.
    OutputTooSmall {
        /// Bytes the output could hold.
        capacity: usize,
    },
    /// The stream's dictionary does not fit the memory given for it.
    DictionaryTooLarge {
        /// Bytes the stream's LZMA2 dictionary needs.
        needed: u64,
        /// Bytes available for it.
        available: usize,
    },
    /// The payload announces more than [`MAX_UNPACKED`] bytes.
    TooLarge {
        /// Bytes announced.
        size: u64,
        /// [`MAX_UNPACKED`].
        max: u64,
    },
    /// A zstd frame's window is larger than the caller allows.
    WindowTooLarge {
        /// Bytes the frame asks for.
        needed: u64,
        /// Bytes allowed.
        max: u64,
    },
    /// The decoded size differs from the one the size trailer announces.
    SizeMismatch {
        /// Bytes decoded.
        decoded: usize,
        /// Bytes announced.
        expected: u64,
    },
}

impl fmt::Display for BzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { len } => {
                write!(f, "not a bzImage: {len} bytes is too short for a setup header (need {HEADER_END})")
            }
            Self::NotBzImage(what) => write!(f, "not a bzImage: {what}"),
            Self::ProtocolTooOld { version } => write!(
                f,
                "boot protocol {}.{:02} is too old: payload fields need 2.08 or later",
                version >> 8,
                version & 0xff
            ),
            Self::PayloadOutOfBounds { start, length, image_len } => {
                write!(f, "payload out of bounds: {length} bytes at offset {start:#x} in a {image_len}-byte image")
            }
            Self::UnknownCompression { magic } => write!(
                f,
                "unknown payload compression (magic {:02x} {:02x} {:02x} {:02x})",
                magic[0], magic[1], magic[2], magic[3]
            ),
            Self::UnsupportedCompression(kind) => write!(
                f,
                "unsupported compression \"{kind}\" (xz, gzip and zstd are decoded: rebuild the kernel with one of them)"
            ),
            Self::TruncatedStream { kind, len } => {
                write!(f, "{kind} stream truncated: ends after {len} bytes")
            }
            Self::CorruptStream { kind, offset: Some(offset), reason } => {
                write!(f, "corrupt {kind} stream near input byte {offset}: {reason}")
            }
            Self::CorruptStream { kind, offset: None, reason } => write!(f, "corrupt {kind} stream: {reason}"),
            Self::TooLarge { size, max } => {
                write!(f, "the payload unpacks to {size} bytes, more than the {max} allowed")
            }
            Self::WindowTooLarge { needed, max } => {
                write!(f, "zstd window of {needed} bytes is larger than the {max} bytes allowed for it")
            }
            Self::BufferTooSmall { len, needed } => {
                write!(f, "buffer of {len} bytes too small: {needed} needed (uncompressed size + LZMA2 dictionary)")
            }
            Self::OutputTooSmall { capacity } => {
                write!(f, "output buffer too small: {capacity} bytes filled before the stream ended")
            }
            Self::DictionaryTooLarge { needed, available } => {
                write!(f, "LZMA2 dictionary of {needed} bytes does not fit the {available} bytes given for it")
            }
            Self::SizeMismatch { decoded, expected } => {
                write!(f, "decoded {decoded} bytes but the payload's size trailer says {expected}")
            }
        }
    }
}

/// The compressed kernel inside a bzImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    /// Boot protocol version (`0x020f` for Linux 6.1).
    pub protocol: u16,
    /// The compression.
    pub kind: Compression,
    /// The compressed stream, without the size trailer (gzip: the whole payload).
    pub data: &'a [u8],
    /// Uncompressed size from the trailer, a u32 (gzip: ISIZE, the size modulo 2^32); `None` when the payload
    /// is too short to have one.
    pub uncompressed_size: Option<u64>,
}

impl Payload<'_> {
    /// Bytes the `out` buffer of [`decompress`] must have: the uncompressed size plus, for xz, the LZMA2
    /// dictionary placed after it (Debian 6.1: 65,906,612 + 32 MiB). An announced size above [`MAX_UNPACKED`]
    /// is an error.
    pub fn buffer_size(&self) -> Result<usize, BzError> {
        if !matches!(self.kind, Compression::Xz | Compression::Gzip | Compression::Zstd) {
            return Err(BzError::UnsupportedCompression(self.kind));
        }
        let size = self.uncompressed_size.ok_or(BzError::TruncatedStream { kind: self.kind, len: self.data.len() })?;
        if size > MAX_UNPACKED {
            return Err(BzError::TooLarge { size, max: MAX_UNPACKED });
        }
        let size = size as usize; // at most 1 GiB
        Ok(match self.kind {
            Compression::Xz => size + xz_dict_size(self.data)?,
            _ => size,
        })
    }
}

/// Bytes of scratch memory [`decompress`] needs for `kernel`, rounded up to whole pages: what must stay free
/// besides dom0's own memory to unpack it. 0 for anything that is not a bzImage with an xz payload (an ELF
/// kernel is loaded in place).
pub fn unpack_room(kernel: &[u8]) -> u64 {
    payload(kernel).and_then(|p| p.buffer_size()).map_or(0, |n| (n as u64).div_ceil(4096) * 4096)
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Validates the setup header of `bz` and returns its compressed payload.
pub fn payload(bz: &[u8]) -> Result<Payload<'_>, BzError> {
    if bz.len() < HEADER_END {
        return Err(BzError::Truncated { len: bz.len() });
    }
    // Reads below are within HEADER_END.
    if u16_at(bz, 0x1fe) != 0xaa55 {
        return Err(BzError::NotBzImage("no 0xAA55 boot flag at 0x1FE"));
    }
    if &bz[0x202..0x206] != b"HdrS" {
        return Err(BzError::NotBzImage("no \"HdrS\" magic at 0x202"));
    }
    let protocol = u16_at(bz, 0x206);
    if protocol < MIN_PROTOCOL {
        return Err(BzError::ProtocolTooOld { version: protocol });
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let pm_start = (setup_sects + 1) * 512;
    let offset = u32_at(bz, 0x248);
    let length = u32_at(bz, 0x24c);
    let start = pm_start + u64::from(offset);
    let end = start + u64::from(length);
    if length == 0 || end > bz.len() as u64 {
        return Err(BzError::PayloadOutOfBounds { start, length, image_len: bz.len() });
    }
    // `end` fits the image, so both fit usize.
    let raw = &bz[start as usize..end as usize];
    let kind = Compression::detect(raw).ok_or_else(|| {
        let mut magic = [0; 4];
        let n = raw.len().min(4);
        magic[..n].copy_from_slice(&raw[..n]);
        BzError::UnknownCompression { magic }
    })?;
    let trailer = raw.len().checked_sub(4).map(|t| (t, u32_at(raw, t)));
    let (data, uncompressed_size) = match (kind, trailer) {
        (Compression::Gzip, Some((_, isize))) => (raw, Some(isize.into())),
        (_, Some((t, size))) => (&raw[..t], Some(size.into())),
        (_, None) => (raw, None),
    };
    Ok(Payload { protocol, kind, data, uncompressed_size })
}

/// Decompresses `p` into `out` and checks the result against the size trailer. For xz, `out` holds the data
/// and then the dictionary (see [`decompress_xz`] and [`Payload::buffer_size`]). Returns the decoded length.
/// A zstd window may take up to [`DEFAULT_ZSTD_WINDOW_MAX`] of heap.
pub fn decompress(p: &Payload<'_>, out: &mut [u8]) -> Result<usize, BzError> {
    decompress_with(p, out, DEFAULT_ZSTD_WINDOW_MAX)
}

/// [`decompress`], with a zstd window of up to `zstd_window_max` bytes of heap.
pub fn decompress_with(p: &Payload<'_>, out: &mut [u8], zstd_window_max: u64) -> Result<usize, BzError> {
    let needed = p.buffer_size()?;
    if out.len() < needed {
        return Err(BzError::BufferTooSmall { len: out.len(), needed });
    }
    let n = match p.kind {
        Compression::Xz => decompress_xz(p.data, out)?,
        Compression::Gzip => decompress_gzip(p.data, &mut out[..needed])?,
        Compression::Zstd => decompress_zstd(p.data, &mut out[..needed], zstd_window_max)?,
        k => return Err(BzError::UnsupportedCompression(k)),
    };
    match p.uncompressed_size {
        Some(expected) if expected != n as u64 => Err(BzError::SizeMismatch { decoded: n, expected }),
        _ => Ok(n),
    }
}

/// The LZMA2 dictionary size an xz stream's first block declares (Linux kernels: 32 MiB). Reads the stream
/// header and the first block header's filter flags (xz file format 1.0.4, §2.1.1 and §3.1); their CRC32s
/// are left to the decoder. A stream with no block needs the decoder's 4 KiB minimum.
pub fn xz_dict_size(input: &[u8]) -> Result<usize, BzError> {
    let corrupt =
        |offset: usize, reason| BzError::CorruptStream { kind: Compression::Xz, offset: Some(offset), reason };
    let truncated = || BzError::TruncatedStream { kind: Compression::Xz, len: input.len() };
    if !input.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Err(corrupt(0, "no xz stream header magic"));
    }
    let header_byte = *input.get(12).ok_or_else(truncated)?;
    if header_byte == 0 {
        return Ok(xz4rust::DICT_SIZE_MIN); // the index follows at once: an empty stream
    }
    let block = input.get(12..12 + (usize::from(header_byte) + 1) * 4).ok_or_else(truncated)?;
    // The block header without its size byte and its CRC32.
    let mut c = Cursor { bytes: &block[1..block.len() - 4], pos: 0 };
    let bad = |c: &Cursor<'_>, reason| corrupt(13 + c.pos, reason);
    let short = "block header too short";
    let flags = c.byte().ok_or_else(|| bad(&c, short))?;
    if flags & 0x3c != 0 {
        return Err(bad(&c, "reserved block flags set"));
    }
    for present in [flags & 0x40 != 0, flags & 0x80 != 0] {
        if present {
            c.vli().ok_or_else(|| bad(&c, short))?; // compressed, then uncompressed size
        }
    }
    for _ in 0..=(flags & 3) {
        let id = c.vli().ok_or_else(|| bad(&c, short))?;
        let props_len = c.vli().ok_or_else(|| bad(&c, short))?;
        if id == 0x21 {
            // LZMA2, always last: one property byte, the dictionary size.
            let p = c.byte().ok_or_else(|| bad(&c, short))?;
            if props_len != 1 || p > 39 {
                return Err(bad(&c, "invalid LZMA2 dictionary size"));
            }
            return Ok((2 | usize::from(p & 1)) << (p / 2 + 11));
        }
        for _ in 0..props_len {
            c.byte().ok_or_else(|| bad(&c, short))?;
        }
    }
    Err(corrupt(12, "first block has no LZMA2 filter"))
}

/// Reads bytes and xz variable-length integers from a block header.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Up to nine bytes, seven bits each, least significant first; the top bit says another follows.
    fn vli(&mut self) -> Option<u64> {
        let mut v = 0;
        for i in 0..9 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

/// Decompresses the xz stream at the start of `input` into `out`, using the end of `out` as the LZMA2
/// dictionary: `out` must hold the uncompressed data plus [`xz_dict_size`] bytes (Debian 6.1: 65,906,612 +
/// 33,554,432). On success `out[..n]` holds the data and the rest of `out` is scratch. Bytes after the stream
/// (e.g. a size trailer) are ignored. Nothing is allocated.
pub fn decompress_xz(input: &[u8], out: &mut [u8]) -> Result<usize, BzError> {
    let dict_size = xz_dict_size(input)?;
    let split = out
        .len()
        .checked_sub(dict_size)
        .ok_or(BzError::DictionaryTooLarge { needed: dict_size as u64, available: out.len() })?;
    let (data, dict) = out.split_at_mut(split);
    decompress_xz_with_dict(input, data, dict)
}

/// Decompresses the xz stream at the start of `input` into `out`, with `dict` as the LZMA2 dictionary (it
/// must be at least [`xz_dict_size`] bytes; its contents do not matter). Checks the stream's integrity check
/// (CRC32 for kernels; CRC64 supported too, SHA-256 not). Bytes after the stream are ignored.
pub fn decompress_xz_with_dict(input: &[u8], out: &mut [u8], dict: &mut [u8]) -> Result<usize, BzError> {
    let available = dict.len();
    let mut decoder = XzDecoder::with_fixed_size_dict(dict);
    let (mut read, mut written) = (0, 0);
    let kind = Compression::Xz;
    loop {
        match decoder.decode(&input[read..], &mut out[written..]) {
            Ok(XzNextBlockResult::EndOfStream(_, o)) => return Ok(written + o),
            Ok(XzNextBlockResult::NeedMoreData(i, o)) => {
                read += i;
                written += o;
                if i != 0 || o != 0 {
                    continue;
                }
            }
            Err(XzError::NeedsLargerInputBuffer) => {}
            Err(XzError::DictionaryTooLarge(needed)) => return Err(BzError::DictionaryTooLarge { needed, available }),
            Err(e) => return Err(BzError::CorruptStream { kind, offset: Some(read), reason: xz_reason(&e) }),
        }
        // No progress. With the output full, ask for one byte more: data means the output is too small.
        if written == out.len() {
            match decoder.decode(&input[read..], &mut [0u8; 1]) {
                Ok(XzNextBlockResult::EndOfStream(_, 0)) => return Ok(written),
                Ok(r) if r.output_produced() > 0 => return Err(BzError::OutputTooSmall { capacity: written }),
                _ => {}
            }
        }
        return Err(if read == input.len() {
            BzError::TruncatedStream { kind, len: input.len() }
        } else {
            BzError::CorruptStream { kind, offset: Some(read), reason: "decoder made no progress" }
        });
    }
}

/// The table of the CRC-32 of gzip (IEEE 802.3, reflected polynomial 0xEDB88320).
const CRC32_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// gzip's CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| CRC32_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

/// Decompresses the gzip member at the start of `input` into `out` (which bounds the output) and checks its
/// CRC32 and ISIZE. Returns the decoded length. Bytes after the member are ignored.
pub fn decompress_gzip(input: &[u8], out: &mut [u8]) -> Result<usize, BzError> {
    use miniz_oxide::inflate::core::{decompress as inflate, inflate_flags, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let kind = Compression::Gzip;
    let truncated = || BzError::TruncatedStream { kind, len: input.len() };
    let corrupt = |offset, reason| BzError::CorruptStream { kind, offset: Some(offset), reason };
    let header = input.get(..10).ok_or_else(truncated)?;
    if header[..2] != [0x1f, 0x8b] {
        return Err(corrupt(0, "not a gzip member (magic 1f 8b)"));
    }
    if header[2] != 8 {
        return Err(corrupt(2, "compression method is not DEFLATE"));
    }
    let flags = header[3];
    if flags & 0xe0 != 0 {
        return Err(corrupt(3, "reserved header flags set"));
    }
    let mut pos = 10usize;
    if flags & FEXTRA != 0 {
        let xlen = input.get(pos..pos + 2).ok_or_else(truncated)?;
        pos += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for field in [FNAME, FCOMMENT] {
        if flags & field != 0 {
            let nul = input.get(pos..).and_then(|r| r.iter().position(|&b| b == 0)).ok_or_else(truncated)?;
            pos += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    let body = input.get(pos..).ok_or_else(truncated)?;
    let mut state = Box::new(DecompressorOxide::new());
    let (status, used, written) =
        inflate(&mut state, body, out, 0, inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF);
    match status {
        TINFLStatus::Done => {}
        TINFLStatus::HasMoreOutput => return Err(BzError::OutputTooSmall { capacity: written }),
        TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => return Err(truncated()),
        _ => return Err(corrupt(pos + used, "invalid DEFLATE data")),
    }
    let end = pos + used;
    let trailer = input.get(end..end + 8).ok_or_else(truncated)?;
    let (crc, isize) = (u32_at(trailer, 0), u32_at(trailer, 4));
    if crc32(&out[..written]) != crc {
        return Err(corrupt(end, "CRC32 of the data does not match"));
    }
    if isize != written as u32 {
        return Err(corrupt(end + 4, "ISIZE does not match the data"));
    }
    Ok(written)
}

/// Decompresses the zstd frames of `input` into `out` (which bounds the output), with a window of at most
/// `window_max` bytes (checked against each frame header before the window is allocated). Checks the content
/// checksum of the last frame when it has one. Returns the decoded length.
pub fn decompress_zstd(input: &[u8], out: &mut [u8], window_max: u64) -> Result<usize, BzError> {
    use ruzstd::decoding::errors::FrameDecoderError as E;
    let kind = Compression::Zstd;
    let mut d = ruzstd::decoding::FrameDecoder::new();
    d.set_max_window_size(window_max);
    let capacity = out.len();
    let reason = match d.decode_all(input, out) {
        Ok(n) => {
            return match (d.get_checksum_from_data(), d.get_calculated_checksum()) {
                (Some(want), Some(got)) if want != got => {
                    Err(BzError::CorruptStream { kind, offset: None, reason: "content checksum does not match" })
                }
                _ => Ok(n),
            }
        }
        Err(E::WindowSizeTooBig { requested, .. }) => {
            return Err(BzError::WindowTooLarge { needed: requested, max: window_max })
        }
        Err(E::TargetTooSmall) => return Err(BzError::OutputTooSmall { capacity }),
        Err(E::ReadFrameHeaderError(_) | E::FrameHeaderError(_) | E::FailedToInitialize(_)) => {
            "bad frame header (truncated?)"
        }
        Err(E::FailedToReadBlockHeader(_)) => "bad or missing block header (truncated?)",
        Err(E::FailedToReadBlockBody(_)) => "corrupt or truncated block",
        Err(E::FailedToReadChecksum(_)) => "missing content checksum (truncated?)",
        Err(E::DictNotProvided { .. } | E::DictionaryDecodeError(_)) => "needs a dictionary",
        Err(_) => "corrupt compressed data",
    };
    Err(BzError::CorruptStream { kind, offset: None, reason })
}

fn xz_reason(e: &XzError) -> &'static str {
    match e {
        XzError::ContentCrc32Mismatch(..) => "CRC32 of the data does not match",
        XzError::ContentCrc64Mismatch(..) => "CRC64 of the data does not match",
        XzError::IndexCrc32Mismatch(..) => "CRC32 of the index does not match",
        XzError::StreamHeaderMagicNumberMismatch => "no xz stream header magic",
        XzError::StreamHeaderCrc32Mismatch(..) => "CRC32 of the stream header does not match",
        XzError::BlockHeaderCrc32Mismatch(..) => "CRC32 of a block header does not match",
        XzError::FooterMagicNumberMismatch => "no xz stream footer magic",
        XzError::FooterCheckTypeMismatch(..) => "stream footer and header disagree on the check",
        XzError::FooterCrc32Mismatch(..) => "CRC32 of the stream footer does not match",
        XzError::FooterDecoderIndexMismatch(..) => "index does not match the blocks",
        XzError::UnsupportedCheckType(_) | XzError::Sha256NotSupported => {
            "unsupported integrity check (CRC32 and CRC64 are supported)"
        }
        XzError::UnsupportedBcjFilter(_) | XzError::DeltaFilterUnsupported => {
            "unsupported filter (x86 BCJ and LZMA2 are supported)"
        }
        XzError::UnsupportedStreamHeaderOption | XzError::UnsupportedBlockHeaderOption => {
            "unsupported stream or block option"
        }
        XzError::UnsupportedLzmaProperties(_)
        | XzError::LzmaPropertiesTooLarge
        | XzError::LzmaPropertiesInvalid
        | XzError::LzmaPropertiesMissing => "invalid LZMA properties",
        XzError::MoreDataInBlockBodyThanHeaderIndicated
        | XzError::LessDataInBlockBodyThanHeaderIndicated
        | XzError::CorruptedCompressedLengthVliInBlockHeader
        | XzError::CorruptedUncompressedLengthVliInBlockHeader
        | XzError::BlockHeaderTooSmall => "block sizes inconsistent with its header",
        XzError::CorruptedDataInBlockIndex => "corrupt index",
        _ => "corrupt compressed data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A synthetic bzImage: boot sector + `setup_sects` setup sectors + protected-mode code holding `payload`
    /// at `payload_offset`; the header's payload fields are set from the arguments.
    fn image(setup_sects: u8, version: u16, offset: u32, length: u32, payload: &[u8]) -> Vec<u8> {
        let sects = if setup_sects == 0 { 4 } else { setup_sects as usize };
        let pm = (sects + 1) * 512;
        let mut b = vec![0u8; pm + offset as usize + payload.len()];
        b[0x1f1] = setup_sects;
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&length.to_le_bytes());
        b[pm + offset as usize..].copy_from_slice(payload);
        b
    }

    /// An xz stream compressed like Linux's (`xz --check=crc32 --x86 --lzma2=dict=4KiB`, smaller dictionary)
    /// from [`small_plain`]; its x86 code makes the BCJ filter change the data.
    const SMALL_XZ: [u8; 164] = [
        0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01, 0x69, 0x22, 0xde, 0x36, 0x02, 0x01, 0x04, 0x00, 0x21, 0x01,
        0x00, 0x00, 0xda, 0x33, 0xad, 0x03, 0xe0, 0x00, 0xdf, 0x00, 0x66, 0x5d, 0x00, 0x25, 0x99, 0x6c, 0xd8, 0x20,
        0x36, 0x1b, 0xe7, 0x6e, 0xc8, 0x20, 0x57, 0xdd, 0x5f, 0xec, 0xac, 0x36, 0x9a, 0x0b, 0xf6, 0xd6, 0xff, 0x9e,
        0xc6, 0x5c, 0xdc, 0x96, 0xa1, 0x26, 0xb5, 0x6e, 0x46, 0xfa, 0x41, 0x28, 0x0e, 0x25, 0x75, 0xfe, 0x1b, 0x88,
        0x62, 0xad, 0x62, 0x77, 0x10, 0x08, 0xfc, 0x24, 0x7a, 0xb6, 0x66, 0xc7, 0x3c, 0x93, 0x64, 0x46, 0xee, 0x03,
        0x7d, 0x00, 0x83, 0x64, 0xf5, 0x9e, 0x13, 0x97, 0x0a, 0x3a, 0x69, 0xf9, 0x4c, 0xff, 0x19, 0x4d, 0x05, 0xa5,
        0x72, 0xfe, 0x96, 0x52, 0xa0, 0xde, 0x46, 0x9a, 0xf6, 0x73, 0xfc, 0x9d, 0x89, 0x3d, 0x56, 0x7d, 0xe8, 0x32,
        0xe8, 0x15, 0xab, 0xc2, 0x47, 0x80, 0x00, 0x00, 0x00, 0x00, 0x08, 0x98, 0x16, 0x96, 0x00, 0x01, 0x7e, 0xe0,
        0x01, 0x00, 0x00, 0x00, 0xd6, 0x18, 0x15, 0x62, 0x3e, 0x30, 0x0d, 0x8b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x59, 0x5a,
    ];

    /// Text, eight `push rbp; mov rbp, rsp; call rel32; jmp rel32; nop; ret` sequences, text: 224 bytes.
    fn small_plain() -> Vec<u8> {
        let text = b"Keel loads Linux: bzImage -> xz -> ELF vmlinux.\n";
        let mut v = text.to_vec();
        for i in 0..8i32 {
            v.extend_from_slice(&[0x55, 0x48, 0x89, 0xe5, 0xe8]);
            v.extend_from_slice(&(0x100 + i * 0x40).to_le_bytes());
            v.push(0xe9);
            v.extend_from_slice(&(-0x20 - i).to_le_bytes());
            v.extend_from_slice(&[0x90, 0xc3]);
        }
        v.extend_from_slice(text);
        v
    }

    /// The small stream as a Linux payload: stream + size trailer.
    fn small_payload() -> Vec<u8> {
        let mut p = SMALL_XZ.to_vec();
        p.extend_from_slice(&224u32.to_le_bytes());
        p
    }

    #[test]
    fn header_fields() {
        let p = small_payload();
        let bz = image(0x1b, 0x020f, 0x2cc, p.len() as u32, &p);
        let got = payload(&bz).unwrap();
        assert_eq!(got.protocol, 0x020f);
        assert_eq!(got.kind, Compression::Xz);
        assert_eq!(got.data, &SMALL_XZ[..]);
        assert_eq!(got.uncompressed_size, Some(224));
        // setup_sects 0 means 4: the payload is found at 5 * 512.
        let bz = image(0, 0x0208, 0, p.len() as u32, &p);
        assert_eq!(payload(&bz).unwrap().data, &SMALL_XZ[..]);
        assert_eq!(&bz[5 * 512..5 * 512 + 6], b"\xfd7zXZ\0");
    }

    #[test]
    fn truncated_and_bad_magic() {
        let p = small_payload();
        let bz = image(1, 0x020f, 0, p.len() as u32, &p);
        for len in [0, 1, 0x1f2, 0x206, HEADER_END - 1] {
            assert_eq!(payload(&bz[..len]), Err(BzError::Truncated { len }));
        }
        let mut bad = bz.clone();
        bad[0x202] = b'h';
        assert!(matches!(payload(&bad), Err(BzError::NotBzImage(m)) if m.contains("HdrS")));
        let mut bad = bz.clone();
        bad[0x1fe] = 0;
        assert!(matches!(payload(&bad), Err(BzError::NotBzImage(m)) if m.contains("AA55")));
        let old = image(1, 0x0207, 0, p.len() as u32, &p);
        let e = payload(&old).unwrap_err();
        assert_eq!(e, BzError::ProtocolTooOld { version: 0x0207 });
        assert!(alloc::format!("{e}").contains("2.07"));
        assert!(payload(b"MZ this is an EFI PE image, not a Linux bzImage").is_err());
    }

    #[test]
    fn payload_out_of_bounds() {
        let p = small_payload();
        let n = p.len() as u32;
        let bz = image(1, 0x020f, 16, n, &p);
        let len = bz.len();
        let oob = |b: &[u8]| matches!(payload(b), Err(BzError::PayloadOutOfBounds { .. }));
        // One byte short, cut in the middle, offset or length at the u32 maximum, empty payload.
        assert!(oob(&bz[..len - 1]));
        assert!(oob(&bz[..len - 40]));
        for (field, value) in [(0x248, n + 1), (0x248, u32::MAX), (0x24c, n + 17), (0x24c, u32::MAX), (0x24c, 0)] {
            let mut b = bz.clone();
            b[field..field + 4].copy_from_slice(&value.to_le_bytes());
            assert!(oob(&b), "field {field:#x} = {value:#x}");
        }
        let e = payload(&bz[..len - 1]).unwrap_err();
        assert_eq!(
            alloc::format!("{e}"),
            alloc::format!("payload out of bounds: {n} bytes at offset 0x410 in a {}-byte image", len - 1)
        );
        // Every single-byte corruption of the header is an error or a payload inside the image, never a panic.
        for i in 0..HEADER_END {
            for v in [0, 0x7f, 0xff] {
                let mut b = bz.clone();
                b[i] = v;
                if let Ok(got) = payload(&b) {
                    let range = got.data.as_ptr_range();
                    assert!(b.as_ptr_range().start <= range.start && range.end <= b.as_ptr_range().end);
                }
            }
        }
    }

    #[test]
    fn compressions() {
        let cases: [(&[u8], Compression); 8] = [
            (b"\x1f\x8b\x08\0", Compression::Gzip),
            (b"\x1f\x9e", Compression::Gzip),
            (b"BZh9", Compression::Bzip2),
            (b"\x5d\0\0\x80\0", Compression::Lzma),
            (b"\xfd7zXZ\0", Compression::Xz),
            (b"\x89LZO\0", Compression::Lzo),
            (b"\x02\x21\x4c\x18", Compression::Lz4),
            (b"\x28\xb5\x2f\xfd", Compression::Zstd),
        ];
        for (magic, kind) in cases {
            let mut p = magic.to_vec();
            p.extend_from_slice(&[1, 2, 3, 4, 0x78, 0x56, 0x34, 0x12]);
            let bz = image(2, 0x020f, 0, p.len() as u32, &p);
            let got = payload(&bz).unwrap();
            assert_eq!(got.kind, kind);
            assert_eq!(got.uncompressed_size, Some(0x1234_5678));
            // gzip's ISIZE is part of the stream; the others' trailer is not.
            let stream_len = if kind == Compression::Gzip { p.len() } else { p.len() - 4 };
            assert_eq!(got.data.len(), stream_len, "{kind}");
            if matches!(kind, Compression::Gzip | Compression::Zstd) {
                // Decoded now: the 0x12345678-byte size the trailer announces needs that much buffer.
                let e = decompress(&got, &mut [0; 16]).unwrap_err();
                assert_eq!(e, BzError::BufferTooSmall { len: 16, needed: 0x1234_5678 });
            } else if kind != Compression::Xz {
                let e = decompress(&got, &mut [0; 16]).unwrap_err();
                assert_eq!(e, BzError::UnsupportedCompression(kind));
                assert!(alloc::format!("{e}").contains(&alloc::format!("\"{kind}\"")));
            }
        }
        let bz = image(2, 0x020f, 0, 3, b"\x7fEL");
        assert_eq!(payload(&bz), Err(BzError::UnknownCompression { magic: [0x7f, b'E', b'L', 0] }));
    }

    #[test]
    fn small_xz_stream() {
        let plain = small_plain();
        assert_eq!(xz_dict_size(&SMALL_XZ), Ok(4096));
        let p = small_payload();
        let bz = image(1, 0x020f, 0, p.len() as u32, &p);
        let got = payload(&bz).unwrap();
        assert_eq!(got.buffer_size(), Ok(224 + 4096));
        let mut out = vec![0u8; 224 + 4096];
        assert_eq!(decompress(&got, &mut out), Ok(224));
        assert_eq!(&out[..224], &plain[..]);
        // Separate dictionary, larger output buffer; trailing bytes after the stream are ignored.
        let (mut out, mut dict) = (vec![0u8; 1000], vec![0u8; 4096]);
        assert_eq!(decompress_xz_with_dict(&p, &mut out, &mut dict), Ok(224));
        assert_eq!(&out[..224], &plain[..]);
        let mut short = vec![0u8; 224 + 4095];
        assert_eq!(decompress(&got, &mut short), Err(BzError::BufferTooSmall { len: 224 + 4095, needed: 224 + 4096 }));
        // A wrong trailer is caught.
        let mut wrong = got;
        wrong.uncompressed_size = Some(225);
        let mut out = vec![0u8; 225 + 4096];
        assert_eq!(decompress(&wrong, &mut out), Err(BzError::SizeMismatch { decoded: 224, expected: 225 }));
    }

    #[test]
    fn small_xz_errors() {
        let mut dict = vec![0u8; 4096];
        let mut out = vec![0u8; 224];
        // Output too small, dictionary too small (both ways of giving it).
        assert_eq!(
            decompress_xz_with_dict(&SMALL_XZ, &mut out[..223], &mut dict),
            Err(BzError::OutputTooSmall { capacity: 223 })
        );
        assert_eq!(
            decompress_xz_with_dict(&SMALL_XZ, &mut out, &mut dict[..4095]),
            Err(BzError::DictionaryTooLarge { needed: 4096, available: 4095 })
        );
        assert_eq!(
            decompress_xz(&SMALL_XZ, &mut out),
            Err(BzError::DictionaryTooLarge { needed: 4096, available: 224 })
        );
        // Every truncation is an error, none a panic.
        for len in 0..SMALL_XZ.len() {
            let r = decompress_xz_with_dict(&SMALL_XZ[..len], &mut out, &mut dict);
            assert!(r.is_err(), "truncated to {len}: {r:?}");
        }
        assert_eq!(
            decompress_xz_with_dict(&SMALL_XZ[..150], &mut out, &mut dict),
            Err(BzError::TruncatedStream { kind: Compression::Xz, len: 150 })
        );
        // Every single-bit flip is detected (CRC32 over headers, data and index), none panics. Except in byte
        // 30: the LZMA2 range coder's first byte, always 0, which xz4rust skips as Linux's own XZ decoder does
        // (liblzma rejects a non-zero one); the output is then still right, as its CRC32 says.
        let mut big = vec![0u8; 1 << 20];
        for i in 0..SMALL_XZ.len() {
            for bit in 0..8 {
                let mut s = SMALL_XZ;
                s[i] ^= 1 << bit;
                let r = decompress_xz(&s, &mut big);
                if i == 30 {
                    assert_eq!((r, &big[..224]), (Ok(224), &small_plain()[..]));
                } else {
                    assert!(r.is_err(), "byte {i} bit {bit} flipped: {r:?}");
                }
            }
        }
        // The data CRC32 (bytes 136..140, after the block padding, before the index).
        let mut s = SMALL_XZ;
        s[137] ^= 1;
        let e = decompress_xz_with_dict(&s, &mut out, &mut dict).unwrap_err();
        assert!(matches!(e, BzError::CorruptStream { reason, .. } if reason.contains("CRC32 of the data")), "{e:?}");
        assert!(alloc::format!("{e}").starts_with("corrupt xz stream near input byte"));
    }

    /// The bzImage to test against: `KEEL_VMLINUZ`, else what `cargo xtask kernel` fetches.
    fn vmlinuz_path() -> std::path::PathBuf {
        if let Some(p) = std::env::var_os("KEEL_VMLINUZ") {
            return p.into();
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("workspace root");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), |d| root.join(d));
        target.join("debian/vmlinuz")
    }

    #[test]
    fn debian_kernel() {
        let path = vmlinuz_path();
        let bz = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read the Debian kernel at {} ({e}): run `cargo xtask kernel` to fetch it, or set \
                 KEEL_VMLINUZ to a bzImage",
                path.display()
            )
        });
        let p = payload(&bz).unwrap();
        assert_eq!(p.kind, Compression::Xz);
        assert_eq!(xz_dict_size(p.data), Ok(32 << 20));
        let size = p.uncompressed_size.expect("size trailer") as usize;
        let mut out = vec![0u8; p.buffer_size().unwrap()];
        assert_eq!(unpack_room(&bz), (out.len() as u64).div_ceil(4096) * 4096);
        assert!(unpack_room(&bz) > 90 << 20, "Debian's kernel needs about 94 MiB to unpack");
        assert_eq!(unpack_room(b"\x7fELF"), 0);
        let t = std::time::Instant::now();
        let n = decompress(&p, &mut out).unwrap();
        std::eprintln!("{}: {} -> {n} bytes in {:?}", path.display(), p.data.len(), t.elapsed());
        assert_eq!(n, size);
        let elf = &out[..n];
        assert!(elf.starts_with(b"\x7fELF"));
        let image = crate::elf::parse_elf(elf).unwrap();
        assert!(image.pvh_entry.is_some(), "no XEN_ELFNOTE_PHYS32_ENTRY");
        // Its entry point lies in a loaded segment, and it fits the 512 MiB dom0 the tests give it.
        assert_eq!(image.check_pvh(512 << 20).map(Some), Ok(image.pvh_entry));
        let plan = crate::kernel::plan(elf, 512 << 20).unwrap();
        assert_eq!(Some(plan.entry), image.pvh_entry);
        assert!((16 << 20..128 << 20).contains(&plan.end()), "Debian's kernel ends at {:#x}", plan.end());

        // Byte for byte what xz(1) makes of the same stream.
        let tmp = std::env::temp_dir().join(alloc::format!("keel-bzimage-{}.xz", std::process::id()));
        std::fs::write(&tmp, p.data).unwrap();
        let xz = std::process::Command::new("xz").arg("-dc").arg(&tmp).output();
        let _ = std::fs::remove_file(&tmp);
        let xz = xz.unwrap_or_else(|e| panic!("cannot run `xz` ({e}): install xz-utils"));
        assert!(xz.status.success(), "xz -dc failed: {}", alloc::string::String::from_utf8_lossy(&xz.stderr));
        assert_eq!(xz.stdout.len(), n, "xz -dc output length");
        if xz.stdout[..] != *elf {
            let i = (0..n).find(|&i| xz.stdout[i] != elf[i]).unwrap_or(n);
            panic!("differs from xz -dc from byte {i}");
        }
    }
}
