//! Decoding kernel reply buffers with the `dm` decoders, from arbitrary bytes.
//!
//! The first byte picks the decoder; the rest is the reply (a whole buffer
//! with header for the header and payload paths, a bare payload otherwise).
//! Nothing may panic or read out of bounds, whatever the kernel wrote.
#![no_main]

use dmthin::dm::{Command, Version};
use dmthin::internals as codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 7 {
        0 => {
            // A whole reply: header, then its payload bounded by data_size.
            if let Ok(h) = codec::decode_header(Command::TableStatus, rest) {
                let _ = codec::device_info(&h);
                if let Ok(p) = codec::payload(Command::TableStatus, &h, rest) {
                    assert!(p.len() <= rest.len());
                    let _ = codec::decode_specs(Command::TableStatus, p, h.target_count);
                    let _ = codec::decode_message_reply(&h, p);
                }
            }
        }
        // The three layouts of the per-name trailer: event_nr, flags and
        // uuid (4.45+); event_nr only (4.38 to 4.44); nothing (older).
        1 => name_list(rest, Version::new(4, 45, 0)),
        2 => name_list(rest, Version::new(4, 37, 0)),
        6 => name_list(rest, Version::new(4, 43, 0)),
        3 => {
            let count = rest.first().copied().unwrap_or(0) as u32;
            if let Ok(lines) =
                codec::decode_specs(Command::DevWait, rest.get(1..).unwrap_or(&[]), count)
            {
                assert_eq!(lines.len(), count as usize);
            }
        }
        4 => {
            if let Ok(devs) = codec::decode_deps(rest) {
                assert!(devs.len() * 8 + 8 <= rest.len());
            }
        }
        _ => {
            let _ = codec::decode_versions(Command::ListVersions, rest);
        }
    }
});

/// The borrowing iterator: entries, at most one error, then nothing; and the
/// owned decoder gives the same entries or the same error.
fn name_list(payload: &[u8], version: Version) {
    let list = codec::name_list(payload, version);
    let mut it = list.iter();
    let mut entries = Vec::new();
    let mut error = None;
    for e in it.by_ref() {
        match e {
            Ok(e) => {
                assert!(e.name.len() <= payload.len() * 3);
                entries.push(e.into_owned());
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    assert!(it.next().is_none(), "fused");
    match list.to_vec() {
        Ok(owned) => assert!(error.is_none() && owned == entries),
        Err(e) => assert_eq!(Some(e.to_string()), error),
    }
}
