//! The rewriter on crafted client bytes, and a raw HTTP/2 client that sends
//! any `:authority` (tonic's own client cannot: its URIs only hold valid
//! authorities), used by the end-to-end test in `service_tests.rs`.

use super::*;
use loona_hpack::Encoder;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

const TYPE_DATA: u8 = 0x0;
const TYPE_RST_STREAM: u8 = 0x3;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_PING: u8 = 0x6;
const TYPE_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;

/// One frame: type, flags, stream, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn new(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Frame {
        Frame {
            kind,
            flags,
            stream_id,
            payload: payload.to_vec(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame_header(
            &mut out,
            self.payload.len(),
            self.kind,
            self.flags,
            self.stream_id,
        );
        out.extend_from_slice(&self.payload);
        out
    }
}

/// The frames of `bytes` (after the preface, which must be there).
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut rest = bytes.strip_prefix(PREFACE).expect("the preface first");
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, stream_id) = (frame_len(rest), frame_stream_id(rest));
        out.push(Frame::new(
            rest[3],
            rest[4],
            stream_id,
            &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len],
        ));
        rest = &rest[FRAME_HEADER_LEN + len..];
    }
    out
}

/// The header blocks among `frames`, decoded in order with one decoder (as
/// the server does); each with its HEADERS frame's flags.
fn header_blocks(frames: &[Frame]) -> Vec<(u8, Fields)> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    let mut block = Vec::new();
    let mut flags = 0;
    for f in frames {
        match f.kind {
            TYPE_HEADERS => {
                flags = f.flags;
                let skip = if f.flags & FLAG_PRIORITY != 0 {
                    PRIORITY_LEN
                } else {
                    0
                };
                assert_eq!(f.flags & FLAG_PADDED, 0, "the rewriter writes no padding");
                assert!(f.payload.len() <= MAX_FRAME_PAYLOAD);
                block = f.payload[skip..].to_vec();
            }
            TYPE_CONTINUATION => {
                assert!(f.payload.len() <= MAX_FRAME_PAYLOAD);
                block.extend_from_slice(&f.payload);
                flags |= f.flags & FLAG_END_HEADERS;
            }
            _ => continue,
        }
        if f.flags & FLAG_END_HEADERS != 0 {
            out.push((flags, decoder.decode(&block).expect("a valid header block")));
        }
    }
    out
}

fn request_fields(authority: &[u8]) -> Fields {
    [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (
            b":path",
            b"/containerd.services.snapshots.v1.Snapshots/Stat",
        ),
        (b":authority", authority),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.to_vec(), v.to_vec()))
    .collect()
}

fn encode(encoder: &mut Encoder<'_>, fields: &Fields) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
}

fn with_authority(fields: &Fields, authority: &[u8]) -> Fields {
    let mut fields = fields.clone();
    for (n, v) in &mut fields {
        if n == b":authority" {
            *v = authority.to_vec();
        }
    }
    fields
}

/// A client's opening: the preface, SETTINGS, one request per block (stream
/// 1, 3, ...), each with a DATA frame after it.
fn client_bytes(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(Frame::new(TYPE_SETTINGS, 0, 0, &[]).bytes());
    for (i, block) in blocks.iter().enumerate() {
        let stream_id = 1 + 2 * i as u32;
        out.extend(Frame::new(TYPE_HEADERS, FLAG_END_HEADERS, stream_id, block).bytes());
        out.extend(Frame::new(TYPE_DATA, FLAG_END_STREAM, stream_id, b"\0\0\0\0\x02hi").bytes());
    }
    out
}

fn rewrite(input: &[u8]) -> Vec<u8> {
    let mut r = Rewriter::new();
    r.feed(input).unwrap();
    r.take_all()
}

#[test]
fn a_path_as_authority_becomes_localhost_and_the_rest_is_unchanged() {
    let fields = request_fields(b"/run/dmthin/snapshotter.sock");
    let input = client_bytes(&[encode(&mut Encoder::new(), &fields)]);
    let output = rewrite(&input);
    let (got, want) = (frames(&output), frames(&input));
    assert_eq!(got.len(), want.len());
    assert_eq!(got[0], want[0], "SETTINGS passes through");
    assert_eq!(got[2], want[2], "DATA passes through");
    let blocks = header_blocks(&got);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, FLAG_END_HEADERS);
    assert_eq!(blocks[0].1, with_authority(&fields, b"localhost"));
}

#[test]
fn a_valid_authority_is_kept() {
    for authority in [&b"localhost"[..], b"example.com:10000", b"[::1]:50051"] {
        let fields = request_fields(authority);
        let output = rewrite(&client_bytes(&[encode(&mut Encoder::new(), &fields)]));
        assert_eq!(header_blocks(&frames(&output))[0].1, fields);
    }
}

#[test]
fn an_empty_authority_becomes_localhost() {
    let fields = request_fields(b"");
    let output = rewrite(&client_bytes(&[encode(&mut Encoder::new(), &fields)]));
    assert_eq!(
        header_blocks(&frames(&output))[0].1,
        with_authority(&fields, b"localhost")
    );
}

/// A request's header block as Go's encoder writes it: `:authority` a
/// literal with incremental indexing in the first request (the client's
/// dynamic table entry 62, the only one) and a reference to entry 62 in the
/// later ones; the other fields literals without indexing.
fn indexing_request_block(authority: &[u8], path: &[u8], first: bool) -> Vec<u8> {
    let mut block = Vec::new();
    if first {
        block.push(0x41); // literal, incremental indexing, name: static 1
        encode_integer_into(authority.len(), 7, 0, &mut block).unwrap();
        block.extend_from_slice(authority);
    } else {
        block.push(0x80 | 62); // indexed: dynamic entry 62
    }
    for (name, value) in [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", path),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ] {
        encode_literal(&mut block, name, value);
    }
    block
}

/// The fields [`indexing_request_block`] encodes, in its order.
fn indexing_request_fields(authority: &[u8], path: &[u8]) -> Fields {
    let mut fields = request_fields(authority);
    fields[2].1 = path.to_vec();
    let authority = fields.remove(3);
    fields.insert(0, authority);
    fields
}

#[test]
fn later_requests_that_index_the_clients_table_decode_right() {
    // The rewriter must follow the client's dynamic table while the
    // server's stays empty.
    let (a, b) = (&b"/S/Stat"[..], &b"/S/Usage"[..]);
    let blocks = [
        indexing_request_block(b"/run/x.sock", a, true),
        indexing_request_block(b"/run/x.sock", b, false),
    ];
    let got = header_blocks(&frames(&rewrite(&client_bytes(&blocks))));
    assert_eq!(got[0].1, indexing_request_fields(b"localhost", a));
    assert_eq!(got[1].1, indexing_request_fields(b"localhost", b));
}

#[test]
fn huffman_coded_indexed_requests_decode_right() {
    // RFC 7541 C.4.1 and C.4.2: Huffman-coded strings, the second request
    // indexing the first's :authority.
    let first = b"\x82\x86\x84\x41\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff".to_vec();
    let second = b"\x82\x86\x84\xbe\x58\x86\xa8\xeb\x10\x64\x9c\xbf".to_vec();
    let got = header_blocks(&frames(&rewrite(&client_bytes(&[first, second]))));
    let fields = |extra: &[(&[u8], &[u8])]| -> Fields {
        [
            (&b":method"[..], &b"GET"[..]),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"www.example.com"),
        ]
        .iter()
        .chain(extra)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
    };
    assert_eq!(got[0].1, fields(&[]));
    assert_eq!(got[1].1, fields(&[(b"cache-control", b"no-cache")]));
}

#[test]
fn byte_by_byte_gives_the_same_output() {
    let mut encoder = Encoder::new();
    let fields = request_fields(b"/run/x.sock");
    let input = client_bytes(&[encode(&mut encoder, &fields), encode(&mut encoder, &fields)]);
    let whole = rewrite(&input);
    let mut r = Rewriter::new();
    let mut pieces = Vec::new();
    for b in &input {
        r.feed(std::slice::from_ref(b)).unwrap();
        pieces.extend(r.take_all());
    }
    assert_eq!(pieces, whole);
}

#[test]
fn padding_priority_and_continuation_frames_are_handled() {
    let fields = request_fields(b"/run/x.sock");
    let block = encode(&mut Encoder::new(), &fields);
    let (a, b) = block.split_at(block.len() / 2);
    let priority = [0x80, 0, 0, 0, 15];
    let mut headers = vec![3]; // pad length
    headers.extend_from_slice(&priority);
    headers.extend_from_slice(a);
    headers.extend_from_slice(&[0, 0, 0]);
    let mut input = PREFACE.to_vec();
    let flags = FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM;
    input.extend(Frame::new(TYPE_HEADERS, flags, 1, &headers).bytes());
    input.extend(Frame::new(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b).bytes());
    let got = frames(&rewrite(&input));
    assert_eq!(got.len(), 1, "one HEADERS frame, unpadded: {got:?}");
    assert_eq!(got[0].payload[..PRIORITY_LEN], priority);
    let blocks = header_blocks(&got);
    assert_eq!(
        blocks[0].0,
        FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS
    );
    assert_eq!(blocks[0].1, with_authority(&fields, b"localhost"));
}

#[test]
fn a_large_block_goes_out_in_continuation_frames() {
    let mut fields = request_fields(b"/run/x.sock");
    fields.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
    // In frames of the most the server takes.
    let block = encode(&mut Encoder::new(), &fields);
    let mut input = PREFACE.to_vec();
    let mut chunks = block.chunks(MAX_FRAME_PAYLOAD).peekable();
    let mut kind = TYPE_HEADERS;
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            FLAG_END_HEADERS
        } else {
            0
        };
        input.extend(Frame::new(kind, flags, 1, chunk).bytes());
        kind = TYPE_CONTINUATION;
    }
    let got = frames(&rewrite(&input));
    assert_eq!(got.len(), 3);
    assert_eq!(
        got.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [TYPE_HEADERS, TYPE_CONTINUATION, TYPE_CONTINUATION]
    );
    assert_eq!(
        header_blocks(&got)[0].1,
        with_authority(&fields, b"localhost")
    );
}

#[test]
fn what_is_not_http2_or_not_valid_hpack_passes_through_as_it_is() {
    let http1 = b"GET / HTTP/1.1\r\nHost: /run/x.sock\r\n\r\n".to_vec();
    assert_eq!(rewrite(&http1), http1);
    // An index past both tables.
    let bad = client_bytes(&[vec![0xff, 0xff, 0x7f]]);
    assert_eq!(rewrite(&bad), bad);
    // A DATA frame inside a header block.
    let mut interleaved = PREFACE.to_vec();
    interleaved.extend(Frame::new(TYPE_HEADERS, 0, 1, &[0x82]).bytes());
    interleaved.extend(Frame::new(TYPE_DATA, 0, 1, b"x").bytes());
    interleaved.extend(Frame::new(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x84]).bytes());
    assert_eq!(rewrite(&interleaved), interleaved);
}

#[test]
fn a_header_block_over_the_limit_ends_the_connection() {
    let mut input = PREFACE.to_vec();
    input.extend(Frame::new(TYPE_HEADERS, 0, 1, &[0; 16_000]).bytes());
    let mut r = Rewriter::new();
    r.feed(&input).unwrap();
    let continuation = Frame::new(TYPE_CONTINUATION, 0, 1, &[0; 16_000]).bytes();
    let err = (0..100)
        .find_map(|_| r.feed(&continuation).err())
        .expect("refused before 1.6 MB");
    assert!(err.to_string().contains("header block over"), "{err}");
}

/// The answer to one raw gRPC call.
#[derive(Debug)]
pub(crate) struct RawAnswer {
    /// The `grpc-status` trailer.
    pub grpc_status: Option<String>,
    /// The response message, without gRPC's 5-byte prefix.
    pub message: Vec<u8>,
}

/// Unary gRPC calls, one after another on one HTTP/2 connection to `sock`,
/// each `(path, request message)`, sending `authority` as `:authority`, as a
/// Go client dialing the bare socket path does. Blocking; a reset stream or
/// connection is an error naming its HTTP/2 error code.
pub(crate) fn raw_unary_calls(
    sock: &Path,
    authority: &str,
    calls: &[(&str, Vec<u8>)],
) -> Result<Vec<RawAnswer>, String> {
    let mut conn = std::os::unix::net::UnixStream::connect(sock).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let send = |conn: &mut std::os::unix::net::UnixStream, bytes: &[u8]| {
        conn.write_all(bytes).map_err(|e| format!("writing: {e}"))
    };
    let mut opening = PREFACE.to_vec();
    opening.extend(Frame::new(TYPE_SETTINGS, 0, 0, &[]).bytes());
    send(&mut conn, &opening)?;
    let mut decoder = Decoder::new();
    let mut answers = Vec::new();
    for (i, (path, message)) in calls.iter().enumerate() {
        let stream_id = 1 + 2 * i as u32;
        let block = indexing_request_block(authority.as_bytes(), path.as_bytes(), i == 0);
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        let mut request = Frame::new(TYPE_HEADERS, FLAG_END_HEADERS, stream_id, &block).bytes();
        request.extend(Frame::new(TYPE_DATA, FLAG_END_STREAM, stream_id, &body).bytes());
        send(&mut conn, &request)?;
        let mut answer = RawAnswer {
            grpc_status: None,
            message: Vec::new(),
        };
        loop {
            let mut header = [0u8; FRAME_HEADER_LEN];
            conn.read_exact(&mut header)
                .map_err(|e| format!("reading a frame: {e}"))?;
            let mut payload = vec![0; frame_len(&header)];
            conn.read_exact(&mut payload)
                .map_err(|e| format!("reading a frame: {e}"))?;
            let (kind, flags) = (header[3], header[4]);
            let id = frame_stream_id(&header);
            match kind {
                TYPE_SETTINGS if flags & FLAG_ACK == 0 => send(
                    &mut conn,
                    &Frame::new(TYPE_SETTINGS, FLAG_ACK, 0, &[]).bytes(),
                )?,
                TYPE_PING if flags & FLAG_ACK == 0 => send(
                    &mut conn,
                    &Frame::new(TYPE_PING, FLAG_ACK, 0, &payload).bytes(),
                )?,
                TYPE_RST_STREAM | TYPE_GOAWAY => {
                    // The error code is the last 4 bytes of both.
                    let code = payload
                        .get(payload.len().saturating_sub(4)..)
                        .and_then(|c| <[u8; 4]>::try_from(c).ok())
                        .map_or(u32::MAX, u32::from_be_bytes);
                    let name = if code == 1 { " (PROTOCOL_ERROR)" } else { "" };
                    let what = if kind == TYPE_GOAWAY {
                        "GOAWAY"
                    } else {
                        "RST_STREAM"
                    };
                    return Err(format!("stream {id}: {what}, error code {code}{name}"));
                }
                TYPE_HEADERS if id == stream_id => {
                    if flags & FLAG_END_HEADERS == 0 {
                        return Err("a response header block in several frames".into());
                    }
                    let fields = decoder
                        .decode(&payload)
                        .map_err(|e| format!("response headers: {e}"))?;
                    for (name, value) in fields {
                        if name == b"grpc-status" {
                            answer.grpc_status = Some(String::from_utf8_lossy(&value).into());
                        }
                    }
                }
                TYPE_DATA if id == stream_id => answer.message.extend_from_slice(&payload),
                _ => {}
            }
            let on_stream = id == stream_id && (kind == TYPE_HEADERS || kind == TYPE_DATA);
            if on_stream && flags & FLAG_END_STREAM != 0 {
                break;
            }
        }
        if answer.message.len() >= 5 {
            answer.message.drain(..5);
        }
        answers.push(answer);
    }
    Ok(answers)
}
