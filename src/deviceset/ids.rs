//! Device ids (user-chosen names) and thin ids (the pool's 24-bit device numbers).
//!
//! A device id becomes both a file name (`<id>.json` in the metadata store) and
//! part of a kernel device name (`dmthin-<maj>:<min>-<ino>-<id>`), so it is
//! restricted to `[A-Za-z0-9_.:-]`, may not be `.` or `..`, and is bounded in
//! length by the caller. No id that passes [`validate_device_id`] can name a
//! path outside the directory it is placed in.

use std::fmt;

use crate::dm::MAX_NAME_LEN;
use crate::target::ThinId;

/// Number of thin ids in the 24-bit space.
const THIN_ID_COUNT: usize = ThinId::MAX.get() as usize + 1;
const WORDS: usize = THIN_ID_COUNT / 64;

/// Why a device id or thin id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("device id is empty")]
    Empty,
    /// The id is `.` or `..`, which would name a directory, not a file.
    #[error("device id {id:?} is reserved: \".\" and \"..\" are not allowed")]
    Reserved {
        /// The refused id.
        id: String,
    },
    /// The id holds a character outside `[A-Za-z0-9_.:-]`.
    #[error(
        "device id {id:?} contains {ch:?} at position {position}; \
         only A-Z, a-z, 0-9, '_', '.', ':' and '-' are allowed"
    )]
    InvalidChar {
        /// The refused id.
        id: String,
        /// The first offending character.
        ch: char,
        /// Its 0-based position, counted in characters.
        position: usize,
    },
    /// The id is longer than the caller's limit.
    #[error("device id {id:?} is {len} bytes long, over the limit of {max} bytes")]
    TooLong {
        /// The refused id.
        id: String,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A thin id outside `0..=ThinId::MAX`.
    #[error("thin id {id} is out of range: the pool's limit is {max}", max = ThinId::MAX)]
    ThinIdOutOfRange {
        /// The refused thin id.
        id: u64,
    },
}

/// Whether `c` may appear in a device id.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// The longest id that fits after `prefix` in a kernel device name.
pub fn max_id_len_for_prefix(prefix: &str) -> usize {
    MAX_NAME_LEN.saturating_sub(prefix.len())
}

/// Checks a device id: non-empty, only `[A-Za-z0-9_.:-]`, not `.` or `..`, and
/// at most `max_len` bytes long.
///
/// The checks run in that order, so an id with a bad character is reported for
/// the character even when it is also too long.
pub fn validate_device_id(id: &str, max_len: usize) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id == "." || id == ".." {
        return Err(IdError::Reserved { id: id.to_owned() });
    }
    if let Some((position, ch)) = id.chars().enumerate().find(|&(_, c)| !is_id_char(c)) {
        return Err(IdError::InvalidChar {
            id: id.to_owned(),
            ch,
            position,
        });
    }
    if id.len() > max_len {
        return Err(IdError::TooLong {
            id: id.to_owned(),
            len: id.len(),
            max: max_len,
        });
    }
    Ok(())
}

/// Checks that a thin id lies in the pool's 24-bit space.
pub fn validate_thin_id(id: u64) -> Result<u32, IdError> {
    if id <= u64::from(ThinId::MAX.get()) {
        // Lossless: id <= 0xFFFFFF.
        Ok(id as u32)
    } else {
        Err(IdError::ThinIdOutOfRange { id })
    }
}

/// A bitmap over the 24-bit thin id space (2 MiB), tracking which ids are in use.
///
/// Nothing is reserved here: a caller that keeps id 0 for the base device marks
/// it used.
#[derive(Clone)]
pub struct ThinIdAllocator {
    words: Vec<u64>,
    used: usize,
}

impl fmt::Debug for ThinIdAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThinIdAllocator")
            .field("used", &self.used)
            .field("free", &self.free_count())
            .finish()
    }
}

impl Default for ThinIdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl ThinIdAllocator {
    /// An allocator with every id free.
    pub fn new() -> Self {
        Self {
            words: vec![0; WORDS],
            used: 0,
        }
    }

    fn slot(id: u32) -> Result<(usize, u64), IdError> {
        let id = validate_thin_id(u64::from(id))?;
        Ok(((id / 64) as usize, 1u64 << (id % 64)))
    }

    /// Marks `id` used. Returns whether it was free before.
    pub fn mark_used(&mut self, id: u32) -> Result<bool, IdError> {
        let (w, bit) = Self::slot(id)?;
        let was_free = self.words[w] & bit == 0;
        self.words[w] |= bit;
        if was_free {
            self.used += 1;
        }
        Ok(was_free)
    }

    /// Frees `id`. Returns whether it was used before.
    pub fn release(&mut self, id: u32) -> Result<bool, IdError> {
        let (w, bit) = Self::slot(id)?;
        let was_used = self.words[w] & bit != 0;
        self.words[w] &= !bit;
        if was_used {
            self.used -= 1;
        }
        Ok(was_used)
    }

    /// Whether `id` is used. Ids outside the 24-bit space are never used.
    #[cfg(test)]
    pub fn is_used(&self, id: u32) -> bool {
        match Self::slot(id) {
            Ok((w, bit)) => self.words[w] & bit != 0,
            Err(_) => false,
        }
    }

    /// How many ids are used.
    #[cfg(test)]
    pub fn used_count(&self) -> usize {
        self.used
    }

    /// How many ids are free.
    pub fn free_count(&self) -> usize {
        THIN_ID_COUNT - self.used
    }

    /// The first free id at or after `hint`, wrapping past [`ThinId::MAX`] to 0,
    /// without marking it. `None` when every id is used. A `hint` beyond the
    /// space wraps to 0.
    pub fn next_free(&self, hint: u32) -> Option<u32> {
        if self.used >= THIN_ID_COUNT {
            return None;
        }
        let hint = if hint > ThinId::MAX.get() { 0 } else { hint };
        let start_word = (hint / 64) as usize;
        let start_bit = hint % 64;
        // Free bits at or after the hint within its word.
        let first = !self.words[start_word] & (!0u64 << start_bit);
        if first != 0 {
            return Some(Self::id_at(start_word, first));
        }
        let tail = (start_word + 1..WORDS).chain(0..=start_word);
        for w in tail {
            let free = !self.words[w];
            if free != 0 {
                return Some(Self::id_at(w, free));
            }
        }
        None
    }

    fn id_at(word: usize, free: u64) -> u32 {
        // word < 2^18 and trailing_zeros < 64, so this fits in 24 bits.
        (word as u32) * 64 + free.trailing_zeros()
    }

    /// Takes the first free id at or after `hint` (wrapping), marks it used and
    /// returns it. `None` when the space is exhausted.
    pub fn allocate_from(&mut self, hint: u32) -> Option<u32> {
        let id = self.next_free(hint)?;
        let (w, bit) = Self::slot(id).ok()?;
        self.words[w] |= bit;
        self.used += 1;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "4e8a3b1f0c9d2e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

    #[test]
    fn worst_case_prefix_leaves_room_for_sha256() {
        let prefix = format!("dmthin-{}:{}-{}-", u32::MAX, u32::MAX, u64::MAX);
        let max = max_id_len_for_prefix(&prefix);
        assert!(max >= 64, "max {max}");
        assert_eq!(SHA.len(), 64);
        validate_device_id(SHA, max).unwrap();
        assert!(prefix.len() + SHA.len() <= MAX_NAME_LEN);
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(validate_device_id("", 10), Err(IdError::Empty));
        assert!(matches!(
            validate_device_id("..", 10),
            Err(IdError::Reserved { .. })
        ));
        let e = validate_device_id("ab/c", 10).unwrap_err();
        assert_eq!(
            e,
            IdError::InvalidChar {
                id: "ab/c".into(),
                ch: '/',
                position: 2
            }
        );
        assert!(e.to_string().contains("'/' at position 2"), "{e}");
        let e = validate_device_id("abcdef", 5).unwrap_err();
        assert!(
            e.to_string().contains("6 bytes long, over the limit of 5"),
            "{e}"
        );
        let e = validate_device_id("é", 5).unwrap_err();
        assert!(matches!(
            e,
            IdError::InvalidChar {
                ch: 'é',
                position: 0,
                ..
            }
        ));
    }

    #[test]
    fn allocator_basics() {
        let mut a = ThinIdAllocator::new();
        assert_eq!(a.allocate_from(0), Some(0));
        assert_eq!(a.allocate_from(0), Some(1));
        assert!(a.is_used(1));
        assert_eq!(a.release(0), Ok(true));
        assert_eq!(a.release(0), Ok(false));
        assert_eq!(a.allocate_from(0), Some(0));
        assert_eq!(a.used_count(), 2);
        assert!(a.mark_used(THIN_ID_MAX + 1).is_err());
        assert!(!a.is_used(THIN_ID_MAX + 1));
        assert_eq!(a.next_free(THIN_ID_MAX + 5), Some(2));
    }

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    const THIN_ID_MAX: u32 = ThinId::MAX.get();
    /// The limit for the longest prefix the set can have.
    const MAX_ID: usize = MAX_NAME_LEN - 50;

    #[test]
    fn sha256_id_fits_worst_case_prefix() {
        // maj/min as u32, ino as u64: the longest prefix possible.
        let prefix = format!("dmthin-{}:{}-{}-", u32::MAX, u32::MAX, u64::MAX);
        let max = max_id_len_for_prefix(&prefix);
        assert_eq!(max, MAX_ID);
        validate_device_id(SHA, max).unwrap();
        assert!((prefix + SHA).len() <= MAX_NAME_LEN);
    }

    #[test]
    fn id_refusals() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (".", "reserved"),
            ("..", "reserved"),
            ("../x", "'/' at position 2"),
            ("a/b", "'/' at position 1"),
            ("/etc", "'/' at position 0"),
            ("a b", "' ' at position 1"),
            ("a\nb", "'\\n' at position 1"),
            ("naïve", "'ï' at position 2"),
            ("a\0", "'\\0' at position 1"),
            ("x~1", "'~' at position 1"),
            ("a\\b", "'\\\\' at position 1"),
        ];
        for (id, want) in cases {
            let err = validate_device_id(id, MAX_ID).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{id:?}: {msg}");
        }
        let long = "a".repeat(MAX_ID + 1);
        let err = validate_device_id(&long, MAX_ID).unwrap_err();
        assert_eq!(
            err,
            IdError::TooLong {
                id: long.clone(),
                len: MAX_ID + 1,
                max: MAX_ID
            }
        );
        assert!(err.to_string().contains(&format!(
            "{} bytes long, over the limit of {MAX_ID} bytes",
            MAX_ID + 1
        )));
        for ok in [
            "a",
            "...",
            ".hidden",
            "A-b_c.d:e",
            "sha256:abc",
            &"z".repeat(MAX_ID),
        ] {
            validate_device_id(ok, MAX_ID).unwrap();
        }
    }

    #[test]
    fn allocator_wraps_around() {
        let mut a = ThinIdAllocator::new();
        a.mark_used(THIN_ID_MAX).unwrap();
        a.mark_used(THIN_ID_MAX - 1).unwrap();
        a.mark_used(0).unwrap();
        assert_eq!(a.allocate_from(THIN_ID_MAX - 1), Some(1));
        assert_eq!(a.allocate_from(THIN_ID_MAX - 2), Some(THIN_ID_MAX - 2));
        a.release(THIN_ID_MAX).unwrap();
        assert_eq!(a.next_free(THIN_ID_MAX), Some(THIN_ID_MAX));
        // Within one word, below the hint, is found last.
        let mut b = ThinIdAllocator::new();
        for id in 64..128 {
            b.mark_used(id).unwrap();
        }
        b.mark_used(200).unwrap();
        assert_eq!(b.next_free(70), Some(128));
        assert_eq!(b.next_free(200), Some(201));
    }

    #[test]
    fn allocator_exhaustion() {
        let mut a = ThinIdAllocator::new();
        let mut next = 5;
        for _ in 0..=THIN_ID_MAX {
            let id = a.allocate_from(next).expect("space left");
            next = id.wrapping_add(1);
        }
        assert_eq!(a.free_count(), 0);
        assert_eq!(a.used_count(), THIN_ID_MAX as usize + 1);
        assert_eq!(a.allocate_from(0), None);
        assert_eq!(a.next_free(123), None);
        a.release(777).unwrap();
        assert_eq!(a.allocate_from(0), Some(777));
        assert_eq!(a.allocate_from(0), None);
        assert!(matches!(
            a.release(THIN_ID_MAX + 1),
            Err(IdError::ThinIdOutOfRange { .. })
        ));
    }

    proptest! {
        #[test]
        fn allocator_matches_model(ops in prop::collection::vec((0u8..3, 0u32..300), 1..200)) {
            // Ids near both ends of the space, to exercise wrapping.
            let map = |x: u32| if x < 150 { x } else { THIN_ID_MAX - (x - 150) };
            let mut a = ThinIdAllocator::new();
            let mut model = BTreeSet::new();
            for (op, x) in ops {
                let id = map(x);
                match op {
                    0 => prop_assert_eq!(a.mark_used(id).unwrap(), model.insert(id)),
                    1 => prop_assert_eq!(a.release(id).unwrap(), model.remove(&id)),
                    _ => {
                        let want = model_next_free(&model, id);
                        let got = a.allocate_from(id);
                        prop_assert_eq!(got, want);
                        if let Some(g) = got { model.insert(g); }
                    }
                }
                prop_assert_eq!(a.used_count(), model.len());
            }
        }
    }

    fn model_next_free(used: &BTreeSet<u32>, hint: u32) -> Option<u32> {
        (hint..=THIN_ID_MAX)
            .chain(0..hint)
            .find(|id| !used.contains(id))
    }
}
