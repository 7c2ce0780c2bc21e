//! Internal helpers: splitting parameter strings the way the kernel does and
//! reading numbers strictly.

use super::error::{snippet, Result, TargetError};

/// True for the ASCII bytes the kernel's `isspace()` treats as separators
/// (`dm_split_args`): space, `\t`, `\n`, `\v`, `\f` and `\r`.
#[inline]
pub(crate) fn is_kernel_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// True for the same separators as [`is_kernel_space`], as a byte.
#[inline]
fn is_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A cursor over whitespace-separated arguments (a byte scanner: the
/// separators are ASCII, so every cut falls on a char boundary).
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
        self.next_token().ok_or(TargetError::Missing { field })
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
}
