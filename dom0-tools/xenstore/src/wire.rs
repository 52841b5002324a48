//! The xenstore wire protocol: a 16-byte little-endian header (type, request id, transaction id, payload length)
//! followed by the payload, whose arguments are NUL-separated strings (`public/io/xs_wire.h`,
//! `docs/misc/xenstore.txt`).

/// Message types (`enum xsd_sockmsg_type`).
pub mod typ {
    pub const CONTROL: u32 = 0;
    pub const DIRECTORY: u32 = 1;
    pub const READ: u32 = 2;
    pub const GET_PERMS: u32 = 3;
    pub const WATCH: u32 = 4;
    pub const UNWATCH: u32 = 5;
    pub const TRANSACTION_START: u32 = 6;
    pub const TRANSACTION_END: u32 = 7;
    pub const INTRODUCE: u32 = 8;
    pub const RELEASE: u32 = 9;
    pub const GET_DOMAIN_PATH: u32 = 10;
    pub const WRITE: u32 = 11;
    pub const MKDIR: u32 = 12;
    pub const RM: u32 = 13;
    pub const SET_PERMS: u32 = 14;
    pub const WATCH_EVENT: u32 = 15;
    pub const ERROR: u32 = 16;
    pub const IS_DOMAIN_INTRODUCED: u32 = 17;
    pub const RESUME: u32 = 18;
    pub const SET_TARGET: u32 = 19;
    pub const RESET_WATCHES: u32 = 21;
    pub const DIRECTORY_PART: u32 = 22;
}

/// Largest payload (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Header size.
pub const HEADER_LEN: usize = 16;

/// One message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub typ: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

impl Msg {
    /// A message with a payload.
    pub fn new(typ: u32, req_id: u32, tx_id: u32, payload: impl Into<Vec<u8>>) -> Msg {
        Msg { typ, req_id, tx_id, payload: payload.into() }
    }

    /// Header and payload as sent.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        for x in [self.typ, self.req_id, self.tx_id, self.payload.len() as u32] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&self.payload);
        v
    }

    /// The payload's NUL-terminated (or final unterminated) strings.
    pub fn args(&self) -> Vec<&[u8]> {
        let p = self.payload.strip_suffix(&[0]).unwrap_or(&self.payload);
        if p.is_empty() {
            return Vec::new();
        }
        p.split(|&b| b == 0).collect()
    }
}

/// A framing error: the peer broke the protocol and its connection should be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header announced a payload longer than [`PAYLOAD_MAX`].
    TooLong(u32),
}

/// Assembles messages from bytes as they arrive (a request may come in several pieces). Holds at most one header
/// plus [`PAYLOAD_MAX`] bytes of an incomplete message.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// How many more bytes the decoder can take before it must yield a message: callers read at most this much.
    pub fn wanted(&self) -> usize {
        if self.buf.len() < HEADER_LEN {
            return HEADER_LEN - self.buf.len();
        }
        let len = u32::from_le_bytes(self.buf[12..16].try_into().expect("4 bytes")) as usize;
        (HEADER_LEN + len.min(PAYLOAD_MAX)).saturating_sub(self.buf.len())
    }

    /// Takes up to [`Decoder::wanted`] bytes from `bytes` (returns how many) and, once a message is complete, that
    /// message.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(usize, Option<Msg>), FrameError> {
        let n = bytes.len().min(self.wanted());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() < HEADER_LEN {
            return Ok((n, None));
        }
        let word = |i: usize| u32::from_le_bytes(self.buf[i..i + 4].try_into().expect("4 bytes"));
        let len = word(12);
        if len as usize > PAYLOAD_MAX {
            return Err(FrameError::TooLong(len));
        }
        if self.buf.len() < HEADER_LEN + len as usize {
            return Ok((n, None));
        }
        let msg = Msg { typ: word(0), req_id: word(4), tx_id: word(8), payload: self.buf[HEADER_LEN..].to_vec() };
        self.buf.clear();
        Ok((n, Some(msg)))
    }

    /// Feeds a whole buffer, returning every complete message.
    pub fn feed_all(&mut self, mut bytes: &[u8]) -> Result<Vec<Msg>, FrameError> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (n, m) = self.feed(bytes)?;
            bytes = &bytes[n..];
            out.extend(m);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_and_split_arguments() {
        let m = Msg::new(typ::WRITE, 3, 0, b"a/b\0value".to_vec());
        let e = m.encode();
        assert_eq!(&e[..16], &[11, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(m.args(), vec![&b"a/b"[..], &b"value"[..]]);
        assert_eq!(Msg::new(typ::WATCH, 0, 0, b"p\0t\0".to_vec()).args(), vec![&b"p"[..], &b"t"[..]]);
        assert!(Msg::new(typ::RESET_WATCHES, 0, 0, vec![]).args().is_empty());
    }

    #[test]
    fn messages_arrive_in_pieces() {
        let a = Msg::new(typ::READ, 1, 0, b"name\0".to_vec());
        let b = Msg::new(typ::WRITE, 2, 5, vec![b'x'; 2000]);
        let mut bytes = a.encode();
        bytes.extend(b.encode());
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(7) {
            got.extend(d.feed_all(chunk).unwrap());
        }
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn an_oversized_header_is_a_protocol_error() {
        let mut d = Decoder::default();
        let mut h = Msg::new(typ::READ, 1, 0, vec![]).encode();
        h[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert_eq!(d.feed_all(&h), Err(FrameError::TooLong(4097)));
        let mut d = Decoder::default();
        h[12..16].copy_from_slice(&4096u32.to_le_bytes());
        assert_eq!(d.feed_all(&h), Ok(vec![]));
        assert_eq!(d.wanted(), 4096);
    }
}
