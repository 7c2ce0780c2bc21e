//! The one tokenizer of the target layer: splitting table parameters,
//! messages and status lines the way the kernel does, and reading numbers
//! strictly.

use super::device::DeviceRef;
use super::error::{snippet, Result, TargetError};

/// True for the bytes the kernel's `isspace()` takes as separators in
/// `dm_split_args` (`_S` in lib/ctype.c): space, `\t`, `\n`, `\v`, `\f` and `\r`.
///
/// The kernel's table also marks 0xA0 (Latin-1 no-break space). In UTF-8 text
/// that byte only occurs inside a multi-byte character, so it separates
/// nothing here (every cut stays on a char boundary); device paths holding it
/// are refused instead (see `DeviceRef`).
#[inline]
pub(crate) const fn is_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// [`is_space_byte`] for a `char`: only ASCII characters can separate.
#[inline]
pub(crate) fn is_kernel_space(c: char) -> bool {
    c.is_ascii() && is_space_byte(c as u8)
}

/// Writes ` {v}` if `v` is some: an optional trailing argument of a table or
/// status line.
pub(crate) fn write_opt<T: std::fmt::Display>(
    f: &mut std::fmt::Formatter<'_>,
    v: Option<T>,
) -> std::fmt::Result {
    match v {
        Some(v) => write!(f, " {v}"),
        None => Ok(()),
    }
}

/// A cursor over arguments separated by [`is_space_byte`] (a byte scanner
/// that never allocates: the separators are ASCII, so every cut falls on a
/// char boundary). Tables, messages and status lines all split through it.
#[derive(Clone)]
pub(crate) struct Args<'a> {
    s: &'a str,
    pos: usize,
    context: &'static str,
}

impl<'a> Args<'a> {
    /// Splits `s` on the kernel's separators; `context` names the target in errors.
    pub(crate) fn new(s: &'a str, context: &'static str) -> Self {
        Args { s, pos: 0, context }
    }

    /// Like [`Args::new`], but [`TargetError::Empty`] if `s` holds no token.
    pub(crate) fn non_empty(s: &'a str, context: &'static str) -> Result<Self> {
        let a = Args::new(s, context);
        if a.is_empty() {
            return Err(TargetError::Empty { context });
        }
        Ok(a)
    }

    /// The next token, or [`TargetError::Empty`]: for the first one of an
    /// input that must hold something.
    pub(crate) fn first(&mut self) -> Result<&'a str> {
        self.next_token().ok_or(TargetError::Empty {
            context: self.context,
        })
    }

    /// The next non-empty token, if any.
    #[inline]
    pub(crate) fn next_token(&mut self) -> Option<&'a str> {
        let b = self.s.as_bytes();
        let mut i = self.pos;
        while b.get(i).is_some_and(|c| is_space_byte(*c)) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(|c| !is_space_byte(*c)) {
            i += 1;
        }
        self.pos = i;
        if start == i {
            None
        } else {
            self.s.get(start..i)
        }
    }

    /// True if no token is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.clone().next_token().is_none()
    }

    /// The next token, or [`TargetError::Missing`] naming `field`.
    #[inline]
    pub(crate) fn required(&mut self, field: &'static str) -> Result<&'a str> {
        match self.next_token() {
            Some(t) => Ok(t),
            None => Err(missing(field)),
        }
    }

    /// The next token as a `u64`.
    #[inline]
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        parse_u64(field, self.required(field)?)
    }

    /// The next token as a `u32`.
    #[inline]
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        parse_u32(field, self.required(field)?)
    }

    /// The next token as a device (`major:minor` or a path).
    pub(crate) fn device(&mut self, field: &'static str) -> Result<DeviceRef> {
        DeviceRef::parse_field(field, self.required(field)?)
    }

    /// Fails if any token is left.
    pub(crate) fn finish(mut self) -> Result<()> {
        match self.next_token() {
            None => Ok(()),
            Some(t) => Err(TargetError::UnexpectedArgument {
                context: self.context,
                found: snippet(t),
            }),
        }
    }

    /// Counts the tokens left, without moving the cursor.
    pub(crate) fn remaining(&self) -> u64 {
        let mut c = self.clone();
        let mut n: u64 = 0;
        while c.next_token().is_some() {
            n = n.saturating_add(1);
        }
        n
    }

    /// The context name given at construction.
    pub(crate) fn context(&self) -> &'static str {
        self.context
    }

    /// Fast path for a number of at most 19 digits ending at a separator or
    /// the end (or, with `before_slash`, at a `/`). On anything else the
    /// position is left unchanged and `None` returned, so the caller can take
    /// the token and report precisely.
    #[inline]
    fn fast_u64(&mut self, before_slash: bool) -> Option<u64> {
        let b = self.s.as_bytes();
        let mut i = self.pos;
        while b.get(i).is_some_and(|c| is_space_byte(*c)) {
            i += 1;
        }
        let start = i;
        let mut v: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                // The used half of a ratio ends at `/`; a number ends at a separator.
                if (before_slash && c == b'/') || (!before_slash && is_space_byte(c)) {
                    break;
                }
                return None;
            }
            // At most 19 digits (checked below), which cannot wrap.
            v = v.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 19 || (before_slash && b.get(i) != Some(&b'/')) {
            return None;
        }
        self.pos = i;
        Some(v)
    }

    /// Fast path for `<used>/<total>` with `used <= total`; see
    /// [`Self::fast_u64`]. [`parse_ratio`] on the next token is the slow path.
    #[inline]
    pub(crate) fn fast_ratio(&mut self) -> Option<(u64, u64)> {
        let save = self.pos;
        let r = (|| {
            let used = self.fast_u64(true)?;
            // fast_u64(true) stopped on a `/`.
            self.pos += 1;
            // No separator may follow the slash.
            if self
                .s
                .as_bytes()
                .get(self.pos)
                .is_none_or(|c| is_space_byte(*c))
            {
                return None;
            }
            let total = self.fast_u64(false)?;
            (used <= total).then_some((used, total))
        })();
        if r.is_none() {
            self.pos = save;
        }
        r
    }
}

/// Parses a non-empty run of ASCII digits (no sign, no spaces) as a `u64`.
#[inline]
pub(crate) fn parse_u64(field: &'static str, s: &str) -> Result<u64> {
    let bytes = s.as_bytes();
    if !bytes.is_empty() && bytes.len() <= 19 {
        // Fast path: 19 digits are at most 9_999_999_999_999_999_999 < u64::MAX,
        // so the wrapping operations below never actually wrap.
        let mut v: u64 = 0;
        for &b in bytes {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return Err(not_a_number(field, s));
            }
            v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        }
        return Ok(v);
    }
    let mut v: u64 = 0;
    let mut overflow = false;
    for &b in bytes {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(not_a_number(field, s));
        }
        match v.checked_mul(10).and_then(|x| x.checked_add(u64::from(d))) {
            Some(x) => v = x,
            None => overflow = true,
        }
    }
    if bytes.is_empty() {
        return Err(not_a_number(field, s));
    }
    if overflow {
        return Err(too_large(field, s, 64));
    }
    Ok(v)
}

#[cold]
fn not_a_number(field: &'static str, s: &str) -> TargetError {
    TargetError::NotANumber {
        field,
        found: snippet(s),
    }
}

#[cold]
fn too_large(field: &'static str, s: &str, bits: u32) -> TargetError {
    TargetError::NumberTooLarge {
        field,
        found: snippet(s),
        bits,
    }
}

/// Parses like [`parse_u64`] and checks the value fits a `u32`.
#[inline]
pub(crate) fn parse_u32(field: &'static str, s: &str) -> Result<u32> {
    let v = parse_u64(field, s).map_err(|e| match e {
        TargetError::NumberTooLarge { field, found, .. } => TargetError::NumberTooLarge {
            field,
            found,
            bits: 32,
        },
        other => other,
    })?;
    u32::try_from(v).map_err(|_| too_large(field, s, 32))
}

/// Parses `<used>/<total>` (two [`parse_u64`] numbers) with `used <= total`.
#[inline]
pub(crate) fn parse_ratio(field: &'static str, tok: &str) -> Result<(u64, u64)> {
    let Some(slash) = tok.bytes().position(|b| b == b'/') else {
        return Err(not_a_ratio(field, tok));
    };
    // `/` is ASCII, so both sides are on char boundaries.
    let (Some(u), Some(t)) = (tok.get(..slash), tok.get(slash + 1..)) else {
        return Err(not_a_ratio(field, tok));
    };
    let used = parse_u64(field, u)?;
    let total = parse_u64(field, t)?;
    if used > total {
        return Err(TargetError::UsedExceedsTotal { field, used, total });
    }
    Ok((used, total))
}

#[cold]
fn missing(field: &'static str) -> TargetError {
    TargetError::Missing { field }
}

#[cold]
fn not_a_ratio(field: &'static str, tok: &str) -> TargetError {
    TargetError::NotARatio {
        field,
        found: snippet(tok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_u64("f", "0"), Ok(0));
        assert_eq!(parse_u64("f", "007"), Ok(7));
        assert_eq!(parse_u64("f", "18446744073709551615"), Ok(u64::MAX));
        assert!(matches!(
            parse_u64("f", "18446744073709551616"),
            Err(TargetError::NumberTooLarge { bits: 64, .. })
        ));
        for bad in ["", "+1", "-1", "1 ", " 1", "0x10", "1e3", "１"] {
            assert!(
                matches!(parse_u64("f", bad), Err(TargetError::NotANumber { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(parse_u32("f", "4294967295"), Ok(u32::MAX));
        assert!(matches!(
            parse_u32("f", "4294967296"),
            Err(TargetError::NumberTooLarge { bits: 32, .. })
        ));
        assert!(matches!(
            parse_u32("f", "99999999999999999999999"),
            Err(TargetError::NumberTooLarge { bits: 32, .. })
        ));
    }

    #[test]
    fn splits_like_the_kernel() {
        let mut a = Args::new(" a\tb\x0bc\x0cd\r\ne \u{a0}é ", "t");
        assert_eq!(a.remaining(), 6);
        assert!(!a.is_empty());
        let toks: Vec<_> = std::iter::from_fn(|| a.next_token()).collect();
        assert_eq!(toks, ["a", "b", "c", "d", "e", "\u{a0}é"]);
        assert!(a.is_empty());
        assert!(a.finish().is_ok());
    }

    #[test]
    fn vertical_tab_separates_in_tables_and_status_lines() {
        use super::super::{LinearTable, PoolStatus, ThinStatus, ThinUsage};
        // Table parameters.
        let t: LinearTable = "7:0\x0b2048\x0b".parse().unwrap();
        assert_eq!(t.offset(), 2048);
        // Status lines: the thin status, and the pool status through both
        // its fast path (`used/total` scanned in place) and its token path.
        assert_eq!(
            ThinStatus::parse("2048\x0b4095"),
            Ok(ThinStatus::Active(ThinUsage {
                mapped_sectors: 2048,
                highest_mapped_sector: Some(4095)
            }))
        );
        let spaced = "0 10/4096 0/1600 - rw discard_passdown queue_if_no_space - 1024";
        let want = PoolStatus::parse(spaced).unwrap();
        assert_eq!(PoolStatus::parse(&spaced.replace(' ', "\x0b")), Ok(want));
        assert_eq!(PoolStatus::parse(&format!("{spaced}\x0b")), Ok(want));
    }
}
