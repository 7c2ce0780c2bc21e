//! Any `:authority` is accepted: a client that sends something that is not
//! a URI authority, such as the socket's path, gets its answer.
//!
//! h2, the HTTP/2 layer under tonic, resets every request whose `:authority`
//! does not parse as a URI authority with `RST_STREAM(PROTOCOL_ERROR)`
//! (hyperium/h2#442; still so in h2 0.4). A Go client that dials the bare
//! socket path (`grpc.Dial("/run/x.sock", WithContextDialer(..))`) sends
//! exactly that path; containerd dials `unix://` and sends `localhost`.
//! h2 has no switch for it, so [`AnyAuthority`] sits between the socket and
//! the server and rewrites what the client sends: it decodes each header
//! block (HPACK), replaces an `:authority` h2 would refuse with `localhost`,
//! and encodes the block again, every field a literal without indexing, so
//! the server's HPACK table stays empty and cannot disagree with ours. Every
//! other frame, and everything the server writes, passes through untouched.
//!
//! A malformed preface, frame or header block is passed through as it is
//! (from then on the whole connection is), for h2 to refuse with the error
//! it would have given anyway.

use loona_hpack::encoder::encode_integer_into;
use loona_hpack::Decoder;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::{Stream, StreamExt};

/// What a client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;
/// Frames written to the server stay within the size every HTTP/2 peer
/// must take (`SETTINGS_MAX_FRAME_SIZE`'s floor).
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// A header block larger than this ends the connection (no gRPC request's
/// headers come near it).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The HPACK table size h2's server decodes with (its default, which tonic
/// keeps): the client's encoder may use no more.
const HPACK_TABLE_SIZE: usize = 4096;
/// What an `:authority` h2 would refuse becomes.
const REPLACEMENT: &[u8] = b"localhost";

/// The accepted connections of `listener`, each wrapped in [`AnyAuthority`].
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> impl Stream<Item = io::Result<AnyAuthority<tokio::net::UnixStream>>> {
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|c| c.map(AnyAuthority::new))
}

/// A client connection whose header blocks are rewritten on the way in so
/// that any `:authority` is accepted (see the module docs).
pub struct AnyAuthority<S> {
    inner: S,
    rewriter: Rewriter,
    eof: bool,
}

impl<S> AnyAuthority<S> {
    /// Wraps the connection `inner`.
    pub fn new(inner: S) -> Self {
        AnyAuthority {
            inner,
            rewriter: Rewriter::new(),
            eof: false,
        }
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AnyAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.rewriter.take_output(buf) > 0 || this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.rewriter.finish();
                this.eof = true;
            } else {
                this.rewriter.feed(read.filled())?;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where the client's byte stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the preface.
    Preface,
    /// Frame by frame.
    Frames,
    /// Something was malformed: everything passes through as it is.
    Passthrough,
}

/// A header block being collected (a HEADERS frame without END_HEADERS and
/// its CONTINUATION frames).
struct Pending {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    block: Vec<u8>,
    /// The frames as received, for passing through if the block is bad.
    original: Vec<u8>,
}

/// The client-to-server byte stream, rewritten: bytes in, bytes out, no I/O.
pub(crate) struct Rewriter {
    stage: Stage,
    /// Received bytes not yet handled.
    input: Vec<u8>,
    /// Bytes for the server.
    output: Vec<u8>,
    /// Payload bytes of the current non-header frame still to pass on.
    forward: usize,
    pending: Option<Pending>,
    /// The client's HPACK state (its dynamic table).
    decoder: Decoder<'static>,
}

impl Rewriter {
    pub(crate) fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        Rewriter {
            stage: Stage::Preface,
            input: Vec::new(),
            output: Vec::new(),
            forward: 0,
            pending: None,
            decoder,
        }
    }

    /// Takes in bytes from the client; fails (ending the connection) only
    /// on a header block over [`MAX_HEADER_BLOCK`].
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.input.extend_from_slice(bytes);
        self.process()
    }

    /// The client closed its side: whatever is left passes through as it is.
    pub(crate) fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            self.output.extend_from_slice(&p.original);
        }
        self.output.append(&mut self.input);
        self.stage = Stage::Passthrough;
    }

    /// Moves rewritten bytes into `buf`; returns how many.
    fn take_output(&mut self, buf: &mut ReadBuf<'_>) -> usize {
        let n = self.output.len().min(buf.remaining());
        buf.put_slice(&self.output[..n]);
        self.output.drain(..n);
        n
    }

    /// Everything rewritten so far, taken (for the tests).
    #[cfg(test)]
    pub(crate) fn take_all(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.stage {
                Stage::Passthrough => {
                    self.output.append(&mut self.input);
                    return Ok(());
                }
                Stage::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.stage = Stage::Passthrough;
                    } else if n < PREFACE.len() {
                        return Ok(());
                    } else {
                        self.output.extend(self.input.drain(..n));
                        self.stage = Stage::Frames;
                    }
                }
                Stage::Frames => {
                    if self.forward > 0 {
                        let n = self.forward.min(self.input.len());
                        if n == 0 {
                            return Ok(());
                        }
                        self.output.extend(self.input.drain(..n));
                        self.forward -= n;
                        continue;
                    }
                    let Some(header) = self.input.get(..FRAME_HEADER_LEN) else {
                        return Ok(());
                    };
                    let len = frame_len(header);
                    let kind = header[3];
                    if kind != TYPE_HEADERS && kind != TYPE_CONTINUATION {
                        if self.pending.is_some() {
                            // Another frame inside a header block: a
                            // protocol error for h2 to report.
                            self.pass_through_from_here();
                            continue;
                        }
                        self.output.extend(self.input.drain(..FRAME_HEADER_LEN));
                        self.forward = len;
                        continue;
                    }
                    let collected = self.pending.as_ref().map_or(0, |p| p.block.len());
                    if collected + len > MAX_HEADER_BLOCK {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("an HTTP/2 header block over {MAX_HEADER_BLOCK} bytes"),
                        ));
                    }
                    if self.input.len() < FRAME_HEADER_LEN + len {
                        return Ok(());
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER_LEN + len).collect();
                    self.header_frame(&frame);
                }
            }
        }
    }

    /// Gives up rewriting: a pending block's frames and all that follows
    /// pass through as received.
    fn pass_through_from_here(&mut self) {
        if let Some(p) = self.pending.take() {
            self.output.extend_from_slice(&p.original);
        }
        self.stage = Stage::Passthrough;
    }

    /// One whole HEADERS or CONTINUATION frame.
    fn header_frame(&mut self, frame: &[u8]) {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = frame_stream_id(frame);
        let payload = &frame[FRAME_HEADER_LEN..];
        match (kind, self.pending.as_mut()) {
            (TYPE_HEADERS, None) => match split_headers_payload(flags, payload) {
                Some((priority, fragment)) => {
                    self.pending = Some(Pending {
                        stream_id,
                        end_stream: flags & FLAG_END_STREAM != 0,
                        priority,
                        block: fragment.to_vec(),
                        original: frame.to_vec(),
                    })
                }
                None => {
                    self.output.extend_from_slice(frame);
                    self.stage = Stage::Passthrough;
                    return;
                }
            },
            (TYPE_CONTINUATION, Some(p)) if p.stream_id == stream_id => {
                p.block.extend_from_slice(payload);
                p.original.extend_from_slice(frame);
            }
            _ => {
                self.pass_through_from_here();
                self.output.extend_from_slice(frame);
                return;
            }
        }
        if flags & FLAG_END_HEADERS != 0 {
            if let Some(p) = self.pending.take() {
                self.rewrite_block(p);
            }
        }
    }

    /// Decodes a whole header block, fixes its `:authority`, and writes it
    /// out again as HEADERS (and CONTINUATION) frames.
    fn rewrite_block(&mut self, p: Pending) {
        let fields = match self.decoder.decode(&p.block) {
            Ok(fields) => fields,
            Err(e) => {
                log::debug!(
                    "HTTP/2 stream {}: bad header block ({e}); passed on as it is",
                    p.stream_id
                );
                self.output.extend_from_slice(&p.original);
                self.stage = Stage::Passthrough;
                return;
            }
        };
        let mut block = Vec::with_capacity(p.block.len() + 64);
        for (name, value) in &fields {
            let value = if name == b":authority" && !is_valid_authority(value) {
                log::debug!(
                    "HTTP/2 stream {}: :authority {:?} is not a URI authority; served as {:?}",
                    p.stream_id,
                    String::from_utf8_lossy(value),
                    String::from_utf8_lossy(REPLACEMENT)
                );
                REPLACEMENT
            } else {
                value.as_slice()
            };
            encode_literal(&mut block, name, value);
        }
        write_header_frames(&mut self.output, &p, &block);
    }
}

/// A HEADERS payload's priority fields and header block fragment, without
/// the padding; `None` if the lengths do not add up.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; PRIORITY_LEN]>, &[u8])> {
    let mut rest = payload;
    if flags & FLAG_PADDED != 0 {
        let (&pad, after) = rest.split_first()?;
        rest = after.get(..after.len().checked_sub(usize::from(pad))?)?;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let fields = rest.get(..PRIORITY_LEN)?;
        priority = Some(fields.try_into().ok()?);
        rest = &rest[PRIORITY_LEN..];
    }
    Some((priority, rest))
}

/// Whether h2 takes `value` as an `:authority` (it parses it with the same
/// `http` crate).
fn is_valid_authority(value: &[u8]) -> bool {
    tonic::codegen::http::uri::Authority::try_from(value).is_ok()
}

/// Appends a field as "literal header field without indexing, new name"
/// (RFC 7541 §6.2.2), strings without Huffman coding.
fn encode_literal(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    block.push(0x00);
    for s in [name, value] {
        // Writing into a Vec cannot fail.
        let _ = encode_integer_into(s.len(), 7, 0x00, block);
        block.extend_from_slice(s);
    }
}

/// Writes `block` as one HEADERS frame and as many CONTINUATION frames as
/// it needs, with the stream, END_STREAM and priority of `p`.
fn write_header_frames(out: &mut Vec<u8>, p: &Pending, block: &[u8]) {
    let priority_len = if p.priority.is_some() {
        PRIORITY_LEN
    } else {
        0
    };
    let first_len = block.len().min(MAX_FRAME_PAYLOAD - priority_len);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = if p.end_stream { FLAG_END_STREAM } else { 0 };
    if p.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame_header(
        out,
        priority_len + first.len(),
        TYPE_HEADERS,
        flags,
        p.stream_id,
    );
    if let Some(fields) = &p.priority {
        out.extend_from_slice(fields);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
        rest = after;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame_header(out, chunk.len(), TYPE_CONTINUATION, flags, p.stream_id);
        out.extend_from_slice(chunk);
    }
}

/// The payload length in a frame header (its first 9 bytes; at least those).
fn frame_len(header: &[u8]) -> usize {
    usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2])
}

/// The stream id in a frame header (its first 9 bytes; at least those).
fn frame_stream_id(header: &[u8]) -> u32 {
    u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff
}

/// An HTTP/2 frame header; `len` is at most [`MAX_FRAME_PAYLOAD`].
fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

#[cfg(test)]
#[path = "authority_tests.rs"]
pub(crate) mod tests;
