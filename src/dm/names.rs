//! Validation of device names and uuids, done before any ioctl.

use super::error::{DmError, Result};
use super::{MAX_NAME_LEN, MAX_UUID_LEN};

/// How strictly names and uuids are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NamePolicy {
    /// Only libdm's udev-safe set `[0-9A-Za-z#+-.:=@_]` (the default).
    #[default]
    UdevSafe,
    /// Any printable, non-whitespace ASCII except `/`.
    Printable,
}

fn check(what: &'static str, value: &str, max: usize, policy: NamePolicy) -> Result<()> {
    let fail = |reason: String| {
        Err(DmError::InvalidArgument {
            what,
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return fail("it is empty".into());
    }
    if value.len() > max {
        return fail(format!(
            "it is {} bytes long; the kernel allows at most {max}",
            value.len()
        ));
    }
    if what == "device name" && (value == "." || value == ".." || value == "control") {
        return fail("it is reserved".into());
    }
    for (pos, ch) in value.char_indices() {
        let ok = match policy {
            NamePolicy::UdevSafe => {
                ch.is_ascii_alphanumeric()
                    || matches!(ch, '#' | '+' | '-' | '.' | ':' | '=' | '@' | '_')
            }
            NamePolicy::Printable => ch.is_ascii_graphic() && ch != '/',
        };
        if !ok {
            let why = if ch == '/' {
                "'/' is not allowed".to_string()
            } else if ch.is_whitespace() || ch.is_control() {
                format!("whitespace or control character {ch:?} is not allowed")
            } else {
                format!("character {ch:?} is outside the udev-safe set [0-9A-Za-z#+-.:=@_]")
            };
            return fail(format!("{why} (at byte {pos})"));
        }
    }
    Ok(())
}

/// Checks a device name: 1..=127 bytes, no `/`, no whitespace or control characters.
pub fn validate_name(name: &str, policy: NamePolicy) -> Result<()> {
    check("device name", name, MAX_NAME_LEN, policy)
}

/// Checks a device uuid: 1..=128 bytes, same character rules as names.
pub fn validate_uuid(uuid: &str, policy: NamePolicy) -> Result<()> {
    check("device uuid", uuid, MAX_UUID_LEN, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_udev_safe_names() {
        validate_name("dmthin-253:0-1234-pool", NamePolicy::UdevSafe).unwrap();
        validate_name(&"a".repeat(127), NamePolicy::UdevSafe).unwrap();
        validate_uuid(&"u".repeat(128), NamePolicy::UdevSafe).unwrap();
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "", "a/b", "a b", "a\nb", "tab\t", "..", ".", "control", "é", "a$b",
        ] {
            let err = validate_name(bad, NamePolicy::UdevSafe)
                .unwrap_err()
                .to_string();
            assert!(err.contains("invalid device name"), "{bad:?}: {err}");
        }
        let err = validate_name(&"a".repeat(128), NamePolicy::UdevSafe).unwrap_err();
        assert!(err.to_string().contains("at most 127"), "{err}");
        let err = validate_uuid(&"a".repeat(129), NamePolicy::UdevSafe).unwrap_err();
        assert!(err.to_string().contains("at most 128"), "{err}");
    }

    #[test]
    fn printable_policy_is_wider_but_still_refuses_slash_and_space() {
        validate_name("a$b", NamePolicy::Printable).unwrap();
        assert!(validate_name("a/b", NamePolicy::Printable).is_err());
        assert!(validate_name("a b", NamePolicy::Printable).is_err());
    }
}
