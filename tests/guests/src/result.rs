//! What a test returns: [`TestResult`], and [`Msg`], a message that needs no heap.

use core::fmt::{self, Write};

/// `Ok(())` is SUCCESS; anything else says why not.
pub type TestResult = Result<(), Outcome>;

/// A test that did not succeed.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The test does not apply here (`Test result: SKIP`).
    Skip(Msg),
    /// The test could not do its job (`Test result: ERROR`).
    Error(Msg),
    /// The behaviour under test is wrong (`Test result: FAILURE`).
    Failure(Msg),
}

impl Outcome {
    /// The word after `Test result: `.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Skip(_) => "SKIP",
            Outcome::Error(_) => "ERROR",
            Outcome::Failure(_) => "FAILURE",
        }
    }

    /// The detail line printed before the result.
    pub fn msg(&self) -> &Msg {
        match self {
            Outcome::Skip(m) | Outcome::Error(m) | Outcome::Failure(m) => m,
        }
    }
}

/// A hypercall error, where a test has nothing better to say, is an ERROR.
impl From<crate::Errno> for Outcome {
    fn from(e: crate::Errno) -> Self {
        crate::error!("hypercall failed: {e}")
    }
}

/// A formatted message of at most [`Msg::CAPACITY`] bytes (longer ones are cut).
#[derive(Clone)]
pub struct Msg {
    buf: [u8; Msg::CAPACITY],
    len: usize,
}

impl Msg {
    /// Bytes a message keeps.
    pub const CAPACITY: usize = 200;

    /// Formats `args`.
    pub fn new(args: fmt::Arguments) -> Self {
        let mut m = Msg { buf: [0; Self::CAPACITY], len: 0 };
        let _ = m.write_fmt(args);
        m
    }

    /// The text (a character cut at the end is dropped).
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(Self::CAPACITY - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
