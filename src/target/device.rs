//! Block device references in table lines: `major:minor` or a path.

use std::fmt;
use std::str::FromStr;

use super::error::{snippet, Result, TargetError};

/// Largest major number a Linux `dev_t` holds (12 bits).
pub const MAX_MAJOR: u32 = (1 << 12) - 1;
/// Largest minor number a Linux `dev_t` holds (20 bits).
pub const MAX_MINOR: u32 = (1 << 20) - 1;
/// Longest path accepted, in bytes (`PATH_MAX` less the NUL).
pub const MAX_PATH_LEN: usize = 4095;

/// A block device as a table line names it.
///
/// The kernel itself always reports devices as `major:minor`. A path is only
/// safe in a table line if the kernel will read it back as one argument and
/// as the same string: [`DeviceRef::validate`] enforces that, and every table
/// constructor and parser in this module calls it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceRef {
    /// A device number, written `major:minor`.
    MajorMinor(u32, u32),
    /// A path to a block device node, such as `/dev/loop0`.
    Path(String),
}

impl DeviceRef {
    /// A validated path reference.
    pub fn path(path: impl Into<String>) -> Result<Self> {
        let d = DeviceRef::Path(path.into());
        d.validate_field("device")?;
        Ok(d)
    }

    /// A validated `major:minor` reference.
    pub fn major_minor(major: u32, minor: u32) -> Result<Self> {
        let d = DeviceRef::MajorMinor(major, minor);
        d.validate_field("device")?;
        Ok(d)
    }

    /// Checks that the reference can go into a table line and mean the same
    /// thing to the kernel.
    ///
    /// A path is refused when it is empty, longer than [`MAX_PATH_LEN`], holds
    /// whitespace (it would split the line: an injection hole), control
    /// characters or NUL, a backslash (the kernel's escape character), the
    /// byte `0xA0` (whitespace to the kernel's `isspace()`), or has the form
    /// `<digits>:<digits>` (the kernel would take it as a device number).
    /// A device number is refused when it does not fit a `dev_t`.
    pub fn validate(&self) -> Result<()> {
        self.validate_field("device")
    }

    pub(crate) fn validate_field(&self, field: &'static str) -> Result<()> {
        match self {
            DeviceRef::MajorMinor(major, minor) => {
                if *major > MAX_MAJOR || *minor > MAX_MINOR {
                    return Err(TargetError::DeviceNumberOutOfRange {
                        field,
                        major: u64::from(*major),
                        minor: u64::from(*minor),
                    });
                }
                Ok(())
            }
            DeviceRef::Path(p) => match path_problem(p) {
                None => Ok(()),
                Some(reason) => Err(TargetError::InvalidPath {
                    field,
                    path: snippet(p),
                    reason,
                }),
            },
        }
    }

    /// Parses one table argument: `major:minor` if it has that form, else a path.
    pub(crate) fn parse_field(field: &'static str, s: &str) -> Result<Self> {
        if let Some((maj, min)) = split_major_minor(s) {
            let major = parse_dev_part(maj);
            let minor = parse_dev_part(min);
            let fit = |v: Option<u64>, max: u32| {
                v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v <= max)
            };
            return match (fit(major, MAX_MAJOR), fit(minor, MAX_MINOR)) {
                (Some(major), Some(minor)) => Ok(DeviceRef::MajorMinor(major, minor)),
                _ => Err(TargetError::DeviceNumberOutOfRange {
                    field,
                    major: major.unwrap_or(u64::MAX),
                    minor: minor.unwrap_or(u64::MAX),
                }),
            };
        }
        let d = DeviceRef::Path(s.to_owned());
        d.validate_field(field)?;
        Ok(d)
    }

    /// True for a `major:minor` reference.
    pub fn is_major_minor(&self) -> bool {
        matches!(self, DeviceRef::MajorMinor(..))
    }
}

/// Splits `s` into two all-digit halves around one `:`, if it has that form.
fn split_major_minor(s: &str) -> Option<(&str, &str)> {
    let (a, b) = s.split_once(':')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    (digits(a) && digits(b)).then_some((a, b))
}

/// Parses an all-digit string, `None` if it overflows a u64.
fn parse_dev_part(s: &str) -> Option<u64> {
    s.bytes().try_fold(0u64, |acc, c| {
        acc.checked_mul(10)?
            .checked_add(u64::from(c.wrapping_sub(b'0')))
    })
}

/// Why `p` cannot be used as a device path in a table line, if it cannot.
fn path_problem(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        return Some("it is empty");
    }
    if p.len() > MAX_PATH_LEN {
        return Some("it is longer than 4095 bytes");
    }
    if p.bytes().any(|b| b == 0) {
        return Some("it contains a NUL byte");
    }
    if p.chars().any(char::is_whitespace) {
        return Some("it contains whitespace, which would split the table line");
    }
    if p.chars().any(char::is_control) {
        return Some("it contains a control character");
    }
    if p.contains('\\') {
        return Some("it contains a backslash, which the kernel takes as an escape character");
    }
    if p.bytes().any(|b| b == 0xA0) {
        return Some("it contains the byte 0xA0, which the kernel takes as whitespace");
    }
    if looks_like_dev_number(p) {
        return Some("it has the form major:minor, so the kernel would read it as a device number");
    }
    None
}

/// True if the kernel's `sscanf("%u:%u")` could read `p` as a device number.
fn looks_like_dev_number(p: &str) -> bool {
    let Some((a, b)) = p.split_once(':') else {
        return false;
    };
    let num = |x: &str| {
        let x = x.strip_prefix(['+', '-']).unwrap_or(x);
        !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit())
    };
    num(a) && b.split_once(':').is_none() && num(b)
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRef::MajorMinor(a, b) => write!(f, "{a}:{b}"),
            DeviceRef::Path(p) => f.write_str(p),
        }
    }
}

impl FromStr for DeviceRef {
    type Err = TargetError;

    /// Parses `major:minor` or a path, validating either.
    fn from_str(s: &str) -> Result<Self> {
        DeviceRef::parse_field("device", s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_major_minor_and_paths() {
        assert_eq!("7:0".parse(), Ok(DeviceRef::MajorMinor(7, 0)));
        assert_eq!("253:12".parse(), Ok(DeviceRef::MajorMinor(253, 12)));
        assert_eq!(
            "4095:1048575".parse(),
            Ok(DeviceRef::MajorMinor(4095, 1048575))
        );
        assert_eq!(
            "/dev/loop0".parse(),
            Ok(DeviceRef::Path("/dev/loop0".into()))
        );
        assert_eq!(
            "/dev/disk/by-path/pci-0000:00:1f.2".parse(),
            Ok(DeviceRef::Path("/dev/disk/by-path/pci-0000:00:1f.2".into()))
        );
        assert_eq!("/dev/é".parse(), Ok(DeviceRef::Path("/dev/é".into())));
    }

    #[test]
    fn refuses_out_of_range_numbers() {
        for s in ["4096:0", "0:1048576", "99999999999999999999999:1"] {
            assert!(
                matches!(
                    s.parse::<DeviceRef>(),
                    Err(TargetError::DeviceNumberOutOfRange { .. })
                ),
                "{s}"
            );
        }
        assert!(DeviceRef::major_minor(4096, 0).is_err());
        assert!(DeviceRef::major_minor(0, 1 << 20).is_err());
    }

    #[test]
    fn path_with_space_is_rejected() {
        // The injection hole: "/dev/a 0 linear /dev/b" would become extra arguments.
        let e = DeviceRef::path("/dev/loop0 1:2").unwrap_err();
        assert!(e.to_string().contains("whitespace"), "{e}");
        assert!(DeviceRef::path("/dev/a\tb").is_err());
        assert!(DeviceRef::path("/dev/a\nb").is_err());
        assert!(DeviceRef::path("/dev/a\u{a0}b").is_err());
        assert!(DeviceRef::path("/dev/a\u{2003}b").is_err());
        assert!(DeviceRef::path("/dev/a\x0bb").is_err());
    }

    #[test]
    fn other_bad_paths_are_rejected_with_reasons() {
        let cases: [(&str, &str); 8] = [
            ("", "empty"),
            ("/dev/a\0b", "NUL"),
            ("/dev/a\x1bb", "control"),
            ("/dev/a\u{7f}", "control"),
            ("/dev/a\\x20b", "backslash"),
            ("/dev/à", "0xA0"),
            ("8:0x", ""),
            ("+8:1", "major:minor"),
        ];
        for (p, why) in cases {
            let r = DeviceRef::path(p);
            if p == "8:0x" {
                assert!(r.is_ok(), "{p:?}");
                continue;
            }
            let e = r.unwrap_err();
            assert!(e.to_string().contains(why), "{p:?}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(DeviceRef::path(long)
            .unwrap_err()
            .to_string()
            .contains("4095"));
        // A path variant built directly is caught by validate().
        assert!(DeviceRef::Path("7:0".into()).validate().is_err());
    }

    /// `major:minor`, for brevity in the tests.
    pub(crate) fn mm(major: u32, minor: u32) -> DeviceRef {
        DeviceRef::MajorMinor(major, minor)
    }

    pub(crate) fn path_strategy() -> impl Strategy<Value = String> {
        "/[A-Za-z0-9_.:/é#+=@-]{0,40}"
    }

    pub(crate) fn device_strategy() -> impl Strategy<Value = DeviceRef> {
        prop_oneof![
            (0..=MAX_MAJOR, 0..=MAX_MINOR).prop_map(|(a, b)| DeviceRef::MajorMinor(a, b)),
            path_strategy().prop_map(DeviceRef::Path),
        ]
    }

    parse_proptests!(DeviceRef, device_strategy());

    proptest! {
        #[test]
        fn accepted_paths_are_one_token(s in any::<String>()) {
            if let Ok(d) = DeviceRef::path(s.clone()) {
                prop_assert_eq!(s.split_ascii_whitespace().count(), 1);
                prop_assert!(!s.contains('\\'));
                prop_assert_eq!(d.to_string(), s);
            }
        }
    }
}
