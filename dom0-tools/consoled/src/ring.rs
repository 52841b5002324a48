//! The console ring logic (`struct xencons_interface`, Xen `public/io/console.h`), without I/O: the page is behind
//! [`ConsPage`], so the same code runs on a guest's mapped ring and, in tests, on an in-memory page ([`MemPage`]).
//!
//! The guest produces `out` (2 KiB) and we consume it; we produce `in` (1 KiB) and the guest consumes it. Indexes
//! are free-running `u32`s, masked by the ring size. Both indexes of a ring are read once per call, so a guest that
//! moves them meanwhile costs at most one ring's worth of bytes. Indexes more than a ring apart (the guest scribbled
//! `out_prod` or `in_cons`) are [`Scribbled`]: the caller drops the console; nothing here loops or allocates on the
//! guest's word.

use keel_abi::io::console as layout;

/// Bytes in the input ring (dom0 → guest).
pub const IN_SIZE: u32 = layout::IN_SIZE;
/// Bytes in the output ring (guest → dom0).
pub const OUT_SIZE: u32 = layout::OUT_SIZE;

/// Index and byte access to a console page, at offsets inside it.
pub trait ConsPage: Send {
    /// Reads a 32-bit index the guest updates concurrently (acquire).
    fn load(&self, off: usize) -> u32;
    /// Writes a 32-bit index (release: bytes written or read before it are done).
    fn store(&self, off: usize, v: u32);
    /// Reads one byte.
    fn read(&self, off: usize) -> u8;
    /// Writes one byte.
    fn write(&self, off: usize, b: u8);
}

impl ConsPage for keel_xenctrl::devices::ForeignPage {
    fn load(&self, off: usize) -> u32 {
        keel_xenctrl::devices::ForeignPage::load(self, off)
    }
    fn store(&self, off: usize, v: u32) {
        keel_xenctrl::devices::ForeignPage::store(self, off, v)
    }
    fn read(&self, off: usize) -> u8 {
        keel_xenctrl::devices::ForeignPage::read(self, off)
    }
    fn write(&self, off: usize, b: u8) {
        keel_xenctrl::devices::ForeignPage::write(self, off, b)
    }
}

/// A console page in ordinary memory, shareable between a test's "guest" and the daemon.
#[derive(Clone, Default)]
pub struct MemPage(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl MemPage {
    /// A zeroed page.
    pub fn new() -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(vec![0; 4096])))
    }

    fn page(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConsPage for MemPage {
    fn load(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.page()[off..off + 4].try_into().expect("4 bytes"))
    }
    fn store(&self, off: usize, v: u32) {
        self.page()[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn read(&self, off: usize) -> u8 {
        self.page()[off]
    }
    fn write(&self, off: usize, b: u8) {
        self.page()[off] = b;
    }
}

/// A ring's indexes were more than a ring apart: the guest wrote nonsense into them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scribbled {
    /// Which ring (`"out"` or `"in"`).
    pub ring: &'static str,
    /// The consumer index read.
    pub cons: u32,
    /// The producer index read.
    pub prod: u32,
}

impl std::fmt::Display for Scribbled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = if self.ring == "out" { OUT_SIZE } else { IN_SIZE };
        write!(
            f,
            "{} ring indexes scribbled: prod {:#x} - cons {:#x} = {:#x} > ring size {size}",
            self.ring,
            self.prod,
            self.cons,
            self.prod.wrapping_sub(self.cons)
        )
    }
}

/// Takes the guest's output, at most `max` bytes (and at most one ring's worth), appending it to `to`; advances
/// `out_cons`. Returns how many bytes were taken (the guest should be notified when that is not 0).
pub fn take_output(p: &dyn ConsPage, to: &mut Vec<u8>, max: usize) -> Result<usize, Scribbled> {
    let cons = p.load(layout::OUT_CONS);
    let prod = p.load(layout::OUT_PROD);
    let avail = prod.wrapping_sub(cons);
    if avail > OUT_SIZE {
        return Err(Scribbled { ring: "out", cons, prod });
    }
    let n = (avail as usize).min(max);
    to.reserve(n);
    for i in 0..n as u32 {
        let idx = cons.wrapping_add(i) & (OUT_SIZE - 1);
        to.push(p.read(layout::OUT + idx as usize));
    }
    if n > 0 {
        p.store(layout::OUT_CONS, cons.wrapping_add(n as u32));
    }
    Ok(n)
}

/// Room in the guest's input ring.
pub fn input_room(p: &dyn ConsPage) -> Result<usize, Scribbled> {
    let cons = p.load(layout::IN_CONS);
    let prod = p.load(layout::IN_PROD);
    let used = prod.wrapping_sub(cons);
    if used > IN_SIZE {
        return Err(Scribbled { ring: "in", cons, prod });
    }
    Ok((IN_SIZE - used) as usize)
}

/// Puts as much of `bytes` into the guest's input ring as it has room for, never overrunning it; advances
/// `in_prod`. Returns how many bytes went in.
pub fn put_input(p: &dyn ConsPage, bytes: &[u8]) -> Result<usize, Scribbled> {
    let room = input_room(p)?;
    let prod = p.load(layout::IN_PROD);
    let n = bytes.len().min(room);
    for (i, &b) in bytes[..n].iter().enumerate() {
        let idx = prod.wrapping_add(i as u32) & (IN_SIZE - 1);
        p.write(layout::IN + idx as usize, b);
    }
    if n > 0 {
        p.store(layout::IN_PROD, prod.wrapping_add(n as u32));
    }
    Ok(n)
}

/// The guest's side of a ring, for tests (a guest's `hvc_xen`): writes output and reads input.
pub mod guest {
    use super::*;

    /// Writes as much of `bytes` into the output ring as fits; returns how many went in.
    pub fn write(p: &dyn ConsPage, bytes: &[u8]) -> usize {
        let cons = p.load(layout::OUT_CONS);
        let prod = p.load(layout::OUT_PROD);
        let room = OUT_SIZE.saturating_sub(prod.wrapping_sub(cons)) as usize;
        let n = bytes.len().min(room);
        for (i, &b) in bytes[..n].iter().enumerate() {
            p.write(layout::OUT + (prod.wrapping_add(i as u32) & (OUT_SIZE - 1)) as usize, b);
        }
        p.store(layout::OUT_PROD, prod.wrapping_add(n as u32));
        n
    }

    /// Reads everything in the input ring.
    pub fn read(p: &dyn ConsPage) -> Vec<u8> {
        let cons = p.load(layout::IN_CONS);
        let prod = p.load(layout::IN_PROD);
        let n = prod.wrapping_sub(cons).min(IN_SIZE);
        let v = (0..n).map(|i| p.read(layout::IN + (cons.wrapping_add(i) & (IN_SIZE - 1)) as usize)).collect();
        p.store(layout::IN_CONS, cons.wrapping_add(n));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(p: &MemPage, cons: u32) {
        p.store(layout::OUT_CONS, cons);
        p.store(layout::OUT_PROD, cons);
        p.store(layout::IN_CONS, cons);
        p.store(layout::IN_PROD, cons);
    }

    #[test]
    fn output_arrives_in_pieces_and_wraps() {
        // Start near the end of the ring and of the u32 range, so both wrap.
        let p = MemPage::new();
        at(&p, u32::MAX - 100);
        let mut got = Vec::new();
        let mut sent = Vec::new();
        for round in 0..10u8 {
            let chunk: Vec<u8> = (0..700u32).map(|i| (i as u8).wrapping_mul(round + 1)).collect();
            assert_eq!(guest::write(&p, &chunk), 700);
            sent.extend_from_slice(&chunk);
            // Taken in two pieces, the first limited by `max`.
            assert_eq!(take_output(&p, &mut got, 300), Ok(300));
            assert_eq!(take_output(&p, &mut got, 4096), Ok(400));
            assert_eq!(take_output(&p, &mut got, 4096), Ok(0));
        }
        assert_eq!(got, sent);
        assert!(p.load(layout::OUT_CONS) < 10_000, "the index wrapped past u32::MAX");
    }

    #[test]
    fn a_full_output_ring_is_taken_whole() {
        let p = MemPage::new();
        at(&p, 1000);
        let data: Vec<u8> = (0..OUT_SIZE).map(|i| i as u8).collect();
        assert_eq!(guest::write(&p, &data), OUT_SIZE as usize);
        assert_eq!(guest::write(&p, b"more"), 0, "the guest's ring is full");
        let mut got = Vec::new();
        assert_eq!(take_output(&p, &mut got, usize::MAX), Ok(OUT_SIZE as usize));
        assert_eq!(got, data);
    }

    #[test]
    fn input_never_overruns_the_ring() {
        let p = MemPage::new();
        at(&p, u32::MAX - 10);
        let typed: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        // The guest reads nothing: exactly one ring's worth goes in, then nothing.
        assert_eq!(put_input(&p, &typed), Ok(IN_SIZE as usize));
        assert_eq!(input_room(&p), Ok(0));
        assert_eq!(put_input(&p, &typed[1024..]), Ok(0));
        // The guest reads; the rest follows in ring-sized pieces, in order.
        let mut seen = guest::read(&p);
        let mut off = IN_SIZE as usize;
        while off < typed.len() {
            off += put_input(&p, &typed[off..]).unwrap();
            seen.extend(guest::read(&p));
        }
        assert_eq!(seen, typed);
    }

    #[test]
    fn scribbled_indexes_are_reported_not_followed() {
        let p = MemPage::new();
        p.store(layout::OUT_CONS, 5);
        p.store(layout::OUT_PROD, 5 + OUT_SIZE + 1);
        let mut got = Vec::new();
        let e = take_output(&p, &mut got, usize::MAX).unwrap_err();
        assert_eq!(e, Scribbled { ring: "out", cons: 5, prod: 5 + OUT_SIZE + 1 });
        assert!(e.to_string().contains("out ring indexes scribbled"), "{e}");
        assert!(got.is_empty());
        assert_eq!(p.load(layout::OUT_CONS), 5, "nothing consumed");
        // prod behind cons is a huge distance too.
        p.store(layout::OUT_PROD, 4);
        assert!(take_output(&p, &mut got, usize::MAX).is_err());
        // The guest moved in_cons past in_prod.
        p.store(layout::IN_PROD, 7);
        p.store(layout::IN_CONS, 9);
        assert_eq!(input_room(&p), Err(Scribbled { ring: "in", cons: 9, prod: 7 }));
        assert!(put_input(&p, b"x").is_err());
        assert_eq!(p.load(layout::IN_PROD), 7, "nothing produced");
    }
}
