//! The migration channel: a TCP stream, a one-line plain-text greeting from the receiver (it says whether this host
//! may migrate to it), then the Noise protocol `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` keyed with the two hosts'
//! shared relocation key (`snow`). Neither side gets past the handshake without the key: the first handshake
//! message is encrypted under it, so a peer with another key is found out at once, and everything after is
//! encrypted and authenticated (a byte changed on the way is an error, never wrong data).
//!
//! On the wire, each Noise message is a big-endian u16 length and the message. Inside, each message is a kind byte
//! and its payload: [`Kind::Data`] carries the migration stream (docs/save-format.md) in pieces, [`Kind::EndOfData`]
//! closes it (what [`DataReader`] reads as the end of the stream), and [`Kind::Control`] carries the text of the
//! hand-over that follows ("ready", "go", "done", or "error: why").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The Noise protocol both ends speak.
pub const NOISE: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// The greeting's first word, with the channel's version.
pub const GREETING: &str = "KEEL-RELOCATION/1";
/// The longest Noise message.
const MESSAGE_MAX: usize = 65535;
/// Plain-text bytes one message carries (the rest is the kind byte and the 16-byte tag).
const CHUNK: usize = MESSAGE_MAX - 16 - 1;
/// How long either end waits for its peer's next message before giving up.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// What a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Data = 1,
    EndOfData = 2,
    Control = 3,
}

/// An error of the channel, in words for the user.
pub type Error = String;

/// An authenticated, encrypted channel to the peer.
pub struct Channel {
    stream: TcpStream,
    noise: snow::TransportState,
    /// Data received and not yet read ([`DataReader`]).
    pending: Vec<u8>,
    at: usize,
    /// The peer closed its data stream.
    data_ended: bool,
    /// Bytes sent and received (on the wire).
    pub sent: u64,
    pub received: u64,
}

fn builder(psk: &[u8; 32]) -> Result<snow::Builder<'_>, Error> {
    let params: snow::params::NoiseParams = NOISE.parse().map_err(|e| format!("noise parameters: {e:?}"))?;
    Ok(snow::Builder::new(params).psk(0, psk))
}

fn write_frame(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    frame.extend_from_slice(msg);
    stream.write_all(&frame)
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut msg)?;
    Ok(msg)
}

fn lost(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the peer closed the connection".into(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("the peer sent nothing for {} s", PEER_TIMEOUT.as_secs())
        }
        _ => format!("the connection failed: {e}"),
    }
}

/// Reads the receiver's greeting line: Ok when it accepts us, the reason it gives otherwise.
fn read_greeting(stream: &mut TcpStream) -> Result<(), Error> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 512 {
        match stream.read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) => return Err(lost(e)),
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    match line.strip_prefix(GREETING) {
        Some(" ready") => Ok(()),
        Some(rest) if rest.starts_with(" refused: ") => Err(format!("refused: {}", &rest[" refused: ".len()..])),
        _ if line.is_empty() => Err("the peer closed the connection without a greeting".into()),
        _ => Err(format!("not a Keel relocation server (it said {line:?})")),
    }
}

/// The receiver's greeting: `None` to accept, or the reason it refuses (the connection is closed after).
pub fn greet(stream: &mut TcpStream, refusal: Option<&str>) -> std::io::Result<()> {
    let line = match refusal {
        None => format!("{GREETING} ready\n"),
        Some(why) => format!("{GREETING} refused: {why}\n"),
    };
    stream.write_all(line.as_bytes())
}

impl Channel {
    fn new(stream: TcpStream, noise: snow::TransportState) -> Self {
        Channel { stream, noise, pending: Vec::new(), at: 0, data_ended: false, sent: 0, received: 0 }
    }

    /// The sender's end: reads the greeting, then the handshake's initiator.
    pub fn connect(mut stream: TcpStream, psk: &[u8; 32]) -> Result<Self, Error> {
        stream.set_read_timeout(Some(PEER_TIMEOUT)).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        read_greeting(&mut stream)?;
        let mut hs = builder(psk)?.build_initiator().map_err(|e| format!("noise: {e:?}"))?;
        let mut buf = vec![0u8; MESSAGE_MAX];
        let n = hs.write_message(&[], &mut buf).map_err(|e| format!("noise: {e:?}"))?;
        write_frame(&mut stream, &buf[..n]).map_err(lost)?;
        let reply = read_frame(&mut stream).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "authentication failed: the receiver closed the connection (its relocation key is not ours)".to_string()
            }
            _ => lost(e),
        })?;
        hs.read_message(&reply, &mut buf)
            .map_err(|_| "authentication failed: the receiver does not hold our relocation key".to_string())?;
        let noise = hs.into_transport_mode().map_err(|e| format!("noise: {e:?}"))?;
        Ok(Channel::new(stream, noise))
    }

    /// The receiver's end, after its greeting: the handshake's responder. A peer without the key fails here.
    pub fn accept(mut stream: TcpStream, psk: &[u8; 32]) -> Result<Self, Error> {
        stream.set_read_timeout(Some(PEER_TIMEOUT)).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut hs = builder(psk)?.build_responder().map_err(|e| format!("noise: {e:?}"))?;
        let mut buf = vec![0u8; MESSAGE_MAX];
        let first = read_frame(&mut stream).map_err(lost)?;
        hs.read_message(&first, &mut buf)
            .map_err(|_| "authentication failed: the peer does not hold our relocation key".to_string())?;
        let n = hs.write_message(&[], &mut buf).map_err(|e| format!("noise: {e:?}"))?;
        write_frame(&mut stream, &buf[..n]).map_err(lost)?;
        let noise = hs.into_transport_mode().map_err(|e| format!("noise: {e:?}"))?;
        Ok(Channel::new(stream, noise))
    }

    /// Sends one message of `kind` (`payload` at most [`CHUNK`] bytes).
    fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<(), Error> {
        debug_assert!(payload.len() <= CHUNK);
        let mut plain = Vec::with_capacity(payload.len() + 1);
        plain.push(kind as u8);
        plain.extend_from_slice(payload);
        let mut out = vec![0u8; plain.len() + 16];
        let n = self.noise.write_message(&plain, &mut out).map_err(|e| format!("noise: {e:?}"))?;
        write_frame(&mut self.stream, &out[..n]).map_err(lost)?;
        self.sent += n as u64 + 2;
        Ok(())
    }

    /// The next message.
    fn recv(&mut self) -> Result<(Kind, Vec<u8>), Error> {
        let msg = read_frame(&mut self.stream).map_err(lost)?;
        self.received += msg.len() as u64 + 2;
        let mut plain = vec![0u8; msg.len()];
        let n = self
            .noise
            .read_message(&msg, &mut plain)
            .map_err(|_| "a message failed authentication (changed on the way?)".to_string())?;
        plain.truncate(n);
        let kind = match plain.first() {
            Some(1) => Kind::Data,
            Some(2) => Kind::EndOfData,
            Some(3) => Kind::Control,
            _ => return Err("a message of an unknown kind".into()),
        };
        plain.remove(0);
        Ok((kind, plain))
    }

    /// Sends stream bytes, in messages of up to [`CHUNK`] bytes.
    pub fn send_data(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            let n = data.len().min(CHUNK);
            self.send(Kind::Data, &data[..n])?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Ends the data stream.
    pub fn end_data(&mut self) -> Result<(), Error> {
        self.send(Kind::EndOfData, &[])
    }

    /// Sends a control line.
    pub fn send_control(&mut self, text: &str) -> Result<(), Error> {
        self.send(Kind::Control, text.as_bytes())
    }

    /// Waits for the next control line (data is not expected any more).
    pub fn recv_control(&mut self) -> Result<String, Error> {
        match self.recv()? {
            (Kind::Control, t) => Ok(String::from_utf8_lossy(&t).into_owned()),
            (k, _) => Err(format!("expected a control message, got {k:?}")),
        }
    }
}

/// The data stream as a [`Write`], buffered into full messages.
pub struct DataWriter<'a> {
    pub channel: &'a mut Channel,
    buf: Vec<u8>,
}

impl<'a> DataWriter<'a> {
    pub fn new(channel: &'a mut Channel) -> Self {
        DataWriter { channel, buf: Vec::with_capacity(CHUNK) }
    }
}

fn io_err(e: Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl Write for DataWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let data = std::mem::take(&mut self.buf);
            self.channel.send_data(&data).map_err(io_err)?;
            self.buf = data;
            self.buf.clear();
        }
        Ok(())
    }
}

/// The data stream as a [`Read`]: its end is the sender's [`Kind::EndOfData`].
pub struct DataReader<'a> {
    pub channel: &'a mut Channel,
}

impl Read for DataReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let c = &mut *self.channel;
        while c.at == c.pending.len() {
            if c.data_ended {
                return Ok(0);
            }
            match c.recv().map_err(io_err)? {
                (Kind::Data, d) => {
                    c.pending = d;
                    c.at = 0;
                }
                (Kind::EndOfData, _) => c.data_ended = true,
                (Kind::Control, t) => {
                    return Err(io_err(format!("the sender gave up: {}", String::from_utf8_lossy(&t))));
                }
            }
        }
        let n = out.len().min(c.pending.len() - c.at);
        out[..n].copy_from_slice(&c.pending[c.at..c.at + n]);
        c.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(sender_key: [u8; 32], receiver_key: [u8; 32]) -> (Result<Channel, Error>, Result<Channel, Error>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            greet(&mut s, None).unwrap();
            Channel::accept(s, &receiver_key)
        });
        let c = Channel::connect(TcpStream::connect(addr).unwrap(), &sender_key);
        (c, t.join().unwrap())
    }

    #[test]
    fn data_and_control_cross_with_the_same_key() {
        let (c, r) = pair([7; 32], [7; 32]);
        let (mut c, mut r) = (c.unwrap(), r.unwrap());
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            DataReader { channel: &mut r }.read_to_end(&mut got).unwrap();
            let line = r.recv_control().unwrap();
            r.send_control("done").unwrap();
            (got, line)
        });
        let mut w = DataWriter::new(&mut c);
        w.write_all(&big).unwrap();
        w.flush().unwrap();
        c.end_data().unwrap();
        c.send_control("go").unwrap();
        assert_eq!(c.recv_control().unwrap(), "done");
        let (got, line) = t.join().unwrap();
        assert_eq!(got, big);
        assert_eq!(line, "go");
    }

    #[test]
    fn a_wrong_key_fails_the_handshake_on_both_ends() {
        let (c, r) = pair([7; 32], [8; 32]);
        assert!(r.err().unwrap().contains("does not hold our relocation key"));
        assert!(c.err().unwrap().starts_with("authentication failed"));
    }

    #[test]
    fn a_refusal_is_reported_with_its_reason() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            greet(&mut s, Some("host 127.0.0.1 is not in xend-relocation-hosts-allow")).unwrap();
        });
        let e = Channel::connect(TcpStream::connect(addr).unwrap(), &[1; 32]).err().unwrap();
        t.join().unwrap();
        assert_eq!(e, "refused: host 127.0.0.1 is not in xend-relocation-hosts-allow");
    }
}
