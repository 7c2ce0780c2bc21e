//! Positioned reads of 4 KiB metadata blocks, each checked (checksum, its
//! own block number, the device's bounds), and the superblock's layout.

use std::io;

use super::crc::block_checksum;
use super::{Error, Problem, Result};

/// Size of a metadata block; the only size this reader supports.
pub(crate) const BLOCK_SIZE: usize = 4096;

/// Checksum salts, one per block type.
pub(crate) const SUPERBLOCK_XOR: u32 = 160_774;
pub(crate) const BTREE_XOR: u32 = 121_107;
pub(crate) const BITMAP_XOR: u32 = 240_779;

/// The superblock magic ("27022010").
pub(crate) const MAGIC: u64 = 27_022_010;

/// Source of metadata bytes read at absolute offsets: a `File` (positioned
/// reads, no shared cursor) or a byte slice (tests, fuzzing).
pub trait ReadAt {
    /// Fills `buf` from `offset`; a short source is `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Bytes the source holds: the metadata device's real size, which
    /// bounds what the counts written in it may claim (and so what the
    /// reader allocates for them).
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileTypeExt;
        let meta = self.metadata()?;
        if !meta.file_type().is_block_device() {
            return Ok(meta.len());
        }
        // A block device's inode says 0 bytes; its end says its size. The
        // cursor is put back (reads here are positioned and never use it).
        let mut file = self;
        let at = file.stream_position()?;
        let end = file.seek(SeekFrom::End(0))?;
        file.seek(SeekFrom::Start(at))?;
        Ok(end)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..)?.get(..buf.len()))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        self.as_slice().size()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

/// Little-endian u64 at `off`; 0 if out of range (callers check layouts
/// first, so that never happens on a validated block).
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    b.get(off..)
        .and_then(|s| s.first_chunk::<8>())
        .map_or(0, |a| u64::from_le_bytes(*a))
}

/// Little-endian u32 at `off`; 0 if out of range.
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..)
        .and_then(|s| s.first_chunk::<4>())
        .map_or(0, |a| u32::from_le_bytes(*a))
}

/// Checksum a block of type `xor` must carry, computed over all but its
/// first four bytes.
pub(crate) fn expected_checksum(block: &[u8], xor: u32) -> u32 {
    block_checksum(block.get(4..).unwrap_or(&[]), xor)
}

/// Validated block reads from the metadata device.
pub(crate) struct Blocks<R> {
    reader: R,
    /// Blocks in the metadata device, from the superblock (bounds pointers).
    pub(crate) nr_blocks: u64,
}

impl<R: ReadAt> Blocks<R> {
    pub(crate) fn new(reader: R) -> Self {
        Blocks {
            reader,
            nr_blocks: 1,
        }
    }

    /// Whole blocks the metadata device really holds (not what its
    /// superblock says).
    pub(crate) fn device_blocks(&self) -> Result<u64> {
        let bytes = self
            .reader
            .size()
            .map_err(|source| Error::Size { source })?;
        Ok(bytes / BLOCK_SIZE as u64)
    }

    /// Reads block `nr` and checks that it lies inside the device, that its
    /// checksum (type `xor`) matches and that it names itself as block `nr`.
    pub(crate) fn read(&self, nr: u64, xor: u32) -> Result<Vec<u8>> {
        let corrupt = |problem| Error::Corrupt { block: nr, problem };
        if nr >= self.nr_blocks {
            return Err(corrupt(Problem::OutsideDevice {
                nr_blocks: self.nr_blocks,
            }));
        }
        let offset = nr
            .checked_mul(BLOCK_SIZE as u64)
            .ok_or(corrupt(Problem::PastEnd))?;
        let mut buf = vec![0u8; BLOCK_SIZE];
        self.reader
            .read_exact_at(&mut buf, offset)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => corrupt(Problem::PastEnd),
                _ => Error::Read {
                    block: nr,
                    source: e,
                },
            })?;
        let found = le32(&buf, 0);
        let expected = expected_checksum(&buf, xor);
        if found != expected {
            return Err(corrupt(Problem::Checksum { found, expected }));
        }
        let named = le64(&buf, 8);
        if named != nr {
            return Err(corrupt(Problem::WrongBlocknr(named)));
        }
        Ok(buf)
    }
}

/// Root of an on-disk space map (`disk_sm_root`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SmRoot {
    pub(crate) nr_blocks: u64,
    pub(crate) bitmap_root: u64,
}

/// The fields of a superblock this reader uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Superblock {
    pub(crate) transaction_id: u64,
    pub(crate) held_root: u64,
    pub(crate) data_sm: SmRoot,
    pub(crate) data_mapping_root: u64,
    pub(crate) device_details_root: u64,
    /// Data block size in 512-byte sectors.
    pub(crate) data_block_sectors: u32,
    /// Blocks of the metadata device as the pool uses it: the metadata
    /// space map's count, which the kernel keeps current when the device
    /// grows (the superblock's own `metadata_nr_blocks` is written only
    /// when the metadata is formatted, so after a growth it is too small).
    pub(crate) metadata_nr_blocks: u64,
}

impl Superblock {
    /// Reads and checks the superblock at block `nr` (0 for the live one,
    /// `held_root` for a metadata snapshot's copy).
    pub(crate) fn read<R: ReadAt>(blocks: &Blocks<R>, nr: u64) -> Result<Self> {
        let b = blocks.read(nr, SUPERBLOCK_XOR)?;
        let corrupt = |problem| Error::Corrupt { block: nr, problem };
        let magic = le64(&b, 32);
        if magic != MAGIC {
            return Err(corrupt(Problem::Magic(magic)));
        }
        let version = le32(&b, 40);
        if !(1..=2).contains(&version) {
            return Err(corrupt(Problem::Version(version)));
        }
        let metadata_block_sectors = le32(&b, 340);
        if metadata_block_sectors != (BLOCK_SIZE / 512) as u32 {
            return Err(corrupt(Problem::MetadataBlockSize(metadata_block_sectors)));
        }
        let data_block_sectors = le32(&b, 336);
        if data_block_sectors == 0 {
            return Err(corrupt(Problem::DataBlockSize));
        }
        Ok(Superblock {
            transaction_id: le64(&b, 48),
            held_root: le64(&b, 56),
            data_sm: SmRoot {
                nr_blocks: le64(&b, 64),
                bitmap_root: le64(&b, 80),
            },
            data_mapping_root: le64(&b, 320),
            device_details_root: le64(&b, 328),
            data_block_sectors,
            // The metadata space map's nr_blocks (its root starts at 192).
            metadata_nr_blocks: le64(&b, 344).max(le64(&b, 192)),
        })
    }
}
