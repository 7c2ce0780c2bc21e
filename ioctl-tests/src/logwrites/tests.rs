//! The replayer on synthetic logs laid out the way dm-log-writes writes them.

use super::*;
use crate::TempDir;

/// Builds a log as the kernel lays it out: the super in sector 0, then each
/// entry's header sector followed by its data.
struct LogBuilder {
    sector_size: u64,
    bytes: Vec<u8>,
    entries: u64,
}

impl LogBuilder {
    fn new(sector_size: u64) -> LogBuilder {
        LogBuilder {
            sector_size,
            bytes: vec![0; sector_size as usize],
            entries: 0,
        }
    }

    fn raw(&mut self, sector: u64, nr_sectors: u64, flags: u64, data_len: u64, tail: &[u8]) {
        let mut header = vec![0u8; self.sector_size as usize];
        for (i, v) in [sector, nr_sectors, flags, data_len].iter().enumerate() {
            header[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        header[ENTRY_LEN..ENTRY_LEN + tail.len()].copy_from_slice(tail);
        self.bytes.extend_from_slice(&header);
        self.entries += 1;
    }

    fn write(&mut self, sector: u64, flags: u64, data: &[u8]) -> &mut Self {
        assert_eq!(data.len() as u64 % self.sector_size, 0);
        self.raw(sector, data.len() as u64 / self.sector_size, flags, 0, &[]);
        self.bytes.extend_from_slice(data);
        self
    }

    fn flush(&mut self) -> &mut Self {
        self.raw(0, 0, LOG_FLUSH_FLAG, 0, &[]);
        self
    }

    fn discard(&mut self, sector: u64, nr_sectors: u64) -> &mut Self {
        self.raw(sector, nr_sectors, LOG_DISCARD_FLAG, 0, &[]);
        self
    }

    fn mark(&mut self, name: &str) -> &mut Self {
        self.raw(0, 0, LOG_MARK_FLAG, name.len() as u64, name.as_bytes());
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out[0..8].copy_from_slice(&WRITE_LOG_MAGIC.to_le_bytes());
        out[8..16].copy_from_slice(&WRITE_LOG_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.entries.to_le_bytes());
        out[24..28].copy_from_slice(&(self.sector_size as u32).to_le_bytes());
        out
    }
}

fn fill(byte: u8, len: usize) -> Vec<u8> {
    vec![byte; len]
}

/// The log's bytes in a file of `dir`, parsed.
fn parse(dir: &TempDir, bytes: &[u8]) -> io::Result<Log> {
    let path = dir.path().join("log");
    std::fs::write(&path, bytes).unwrap();
    Log::open(&path)
}

/// A target file of `len` bytes, each `byte`, open for reading and writing.
fn target(dir: &TempDir, len: usize, byte: u8) -> (std::path::PathBuf, File) {
    let path = dir.path().join("target");
    std::fs::write(&path, fill(byte, len)).unwrap();
    let f = File::options().read(true).write(true).open(&path).unwrap();
    (path, f)
}

/// A write, a discard, a flush, a FUA write, a mark and a flush with data,
/// onto an 8-sector device.
fn sample_log() -> Vec<u8> {
    LogBuilder::new(512)
        .write(2, 0, &fill(b'a', 1024))
        .discard(0, 1)
        .flush()
        .write(3, LOG_FUA_FLAG | LOG_METADATA_FLAG, &fill(b'b', 512))
        .mark("acked add-1")
        .write(0, LOG_FLUSH_FLAG, &fill(b'c', 512))
        .finish()
}

#[test]
fn entries_and_replay_points_are_read_in_log_order() {
    let dir = TempDir::new("lw-parse");
    let log = parse(&dir, &sample_log()).unwrap();
    assert_eq!(log.sector_size(), 512);
    let e = log.entries();
    assert_eq!(e.len(), 6);
    assert_eq!((e[0].sector, e[0].nr_sectors, e[0].flags), (2, 2, 0));
    assert!(e[1].is_discard() && e[1].changes_device());
    assert!(e[2].is_flush() && !e[2].changes_device());
    assert!(e[3].is_fua());
    assert_eq!(e[4].mark.as_deref(), Some("acked add-1"));
    assert!(e[4].is_mark() && !e[4].changes_device());
    assert!(e[5].is_flush() && e[5].changes_device());
    let points: Vec<usize> = (0..e.len()).filter(|&i| e[i].is_replay_point()).collect();
    assert_eq!(points, [2, 3, 4, 5]);
    assert_eq!(log.find_mark("acked add-1"), Some(4));
    assert_eq!(log.find_mark("acked add-2"), None);
}

#[test]
fn replay_applies_each_prefix_of_the_log() {
    let dir = TempDir::new("lw-replay");
    let log = parse(&dir, &sample_log()).unwrap();
    let (path, file) = target(&dir, 8 * 512, b'.');
    let mut r = Replayer::new(&log, file).unwrap();
    let sectors = || {
        let b = std::fs::read(&path).unwrap();
        b.chunks(512)
            .map(|s| {
                assert!(s.iter().all(|&x| x == s[0]), "a sector is torn");
                s[0]
            })
            .collect::<Vec<u8>>()
    };
    assert_eq!(sectors(), b"........");
    r.replay_to(1).unwrap();
    assert_eq!(sectors(), b"..aa....");
    r.replay_to(2).unwrap();
    assert_eq!(sectors(), b"\0.aa....", "a discard reads as zeros");
    r.replay_to(5).unwrap();
    assert_eq!(r.applied(), 5);
    assert_eq!(sectors(), b"\0.ab....");
    r.replay_to(6).unwrap();
    r.sync().unwrap();
    assert_eq!(sectors(), b"c.ab....");
    let err = r.replay_to(3).unwrap_err();
    assert!(err.to_string().contains("6 applied"), "{err}");
    let err = r.replay_to(7).unwrap_err();
    assert!(err.to_string().contains("6 in the log"), "{err}");
}

#[test]
fn sectors_are_in_the_logged_devices_block_size() {
    let dir = TempDir::new("lw-4k");
    let bytes = LogBuilder::new(4096)
        .write(1, 0, &fill(b'x', 8192))
        .mark("after")
        .finish();
    let log = parse(&dir, &bytes).unwrap();
    assert_eq!(log.entries()[0].nr_sectors, 2);
    let (path, file) = target(&dir, 4 * 4096, 0);
    let mut r = Replayer::new(&log, file).unwrap();
    r.replay_to(2).unwrap();
    let b = std::fs::read(&path).unwrap();
    assert!(b[..4096].iter().all(|&x| x == 0));
    assert!(b[4096..12288].iter().all(|&x| x == b'x'));
    assert!(b[12288..].iter().all(|&x| x == 0));
}

#[test]
fn a_write_past_the_target_is_refused() {
    let dir = TempDir::new("lw-past");
    let bytes = LogBuilder::new(512).write(7, 0, &fill(1, 1024)).finish();
    let log = parse(&dir, &bytes).unwrap();
    let (_, file) = target(&dir, 8 * 512, 0);
    let err = Replayer::new(&log, file).unwrap().replay_to(1).unwrap_err();
    assert!(err.to_string().contains("entry 0: sectors 7..9"), "{err}");
}

#[test]
fn damaged_logs_are_refused_with_the_reason() {
    let dir = TempDir::new("lw-bad");
    let good = LogBuilder::new(512)
        .write(0, 0, &fill(1, 512))
        .mark("m")
        .finish();
    assert!(parse(&dir, &good).is_ok());
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with(0, &[0; 8]), "not a dm-log-writes log"),
        (with(8, &2u64.to_le_bytes()), "log version 2"),
        (with(24, &1000u32.to_le_bytes()), "sector size 1000"),
        (with(24, &256u32.to_le_bytes()), "sector size 256"),
        (with(16, &u64::MAX.to_le_bytes()), "entries cannot fit"),
        (
            good[..good.len() - 1].to_vec(),
            "entry 1 at byte 1536 runs past",
        ),
        (good[..1200].to_vec(), "entry 0 at byte 512 runs past"),
        (
            with(512 + 16, &(1u64 << 9).to_le_bytes()),
            "unknown flags 0x200",
        ),
        (
            with(512 + 24, &7u64.to_le_bytes()),
            "entry 0: 7 bytes of inline data",
        ),
        (
            with(1536 + 24, &500u64.to_le_bytes()),
            "a mark of 500 bytes",
        ),
        (
            with(512 + 8, &u64::MAX.to_le_bytes()),
            "entry 0 at byte 512 runs past",
        ),
        (with(512, &u64::MAX.to_le_bytes()), "entry 0: sector"),
        (vec![0; 10], "cannot read the super"),
    ];
    for (bytes, want) in cases {
        let err = parse(&dir, &bytes).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{want}: {err}");
        assert!(err.to_string().contains(want), "want {want:?}, got: {err}");
    }
}

#[test]
fn an_empty_log_has_no_entries() {
    let dir = TempDir::new("lw-empty");
    let log = parse(&dir, &LogBuilder::new(512).finish()).unwrap();
    assert!(log.entries().is_empty());
    let (_, file) = target(&dir, 512, 0);
    let mut r = Replayer::new(&log, file).unwrap();
    r.replay_to(0).unwrap();
    assert!(r.replay_to(1).is_err());
}
