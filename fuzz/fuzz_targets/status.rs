//! Status-line and message parsing from arbitrary bytes.
//!
//! Nothing may panic; whatever parses must format back to text that parses
//! to the same value, with or without the kernel's trailing space.
#![no_main]

use dmthin::target::{DeviceRef, PoolMessage, PoolStatus, ThinPoolStatus, ThinStatus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;

    if let Ok(p) = PoolStatus::parse(s) {
        let f = p.to_string();
        assert_eq!(PoolStatus::parse(&f), Ok(p), "{f:?}");
        assert_eq!(PoolStatus::parse(&format!("{f} ")), Ok(p));
        if let Some(a) = p.active() {
            assert!(a.used_metadata_blocks <= a.total_metadata_blocks);
            assert!(a.used_data_blocks <= a.total_data_blocks);
            assert_eq!(ThinPoolStatus::parse(&f).as_ref(), Ok(a));
        }
    }
    if let Ok(t) = ThinStatus::parse(s) {
        let f = t.to_string();
        assert_eq!(ThinStatus::parse(&f), Ok(t), "{f:?}");
    }
    if let Ok(m) = PoolMessage::parse(s) {
        let f = m.to_string();
        assert_eq!(PoolMessage::parse(&f), Ok(m), "{f:?}");
    }
    if let Ok(d) = s.parse::<DeviceRef>() {
        let f = d.to_string();
        assert!(
            !f.is_empty() && !f.chars().any(char::is_whitespace),
            "{f:?}"
        );
        assert_eq!(f.parse::<DeviceRef>(), Ok(d));
    }
});
