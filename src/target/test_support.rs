//! Test scaffolding shared by the target modules.

use std::fmt::Debug;
use std::str::FromStr;

use proptest::prop_assert_eq;
use proptest::test_runner::TestCaseError;

use super::{TableLine, TargetError, TargetTable};

/// The two property tests of a type with a text form: `round_trip` (every
/// value from `$strategy` formats and parses back to itself; `table:` adds the
/// [`check_table`] checks) and `never_panics` (no string makes its parser
/// panic).
macro_rules! parse_proptests {
    (table: $t:ty, $strategy:expr) => {
        parse_proptests!(@ $t, $strategy, check_table);
    };
    ($t:ty, $strategy:expr) => {
        parse_proptests!(@ $t, $strategy, check_text);
    };
    (@ $t:ty, $strategy:expr, $check:ident) => {
        proptest::proptest! {
            #[test]
            fn round_trip(v in $strategy) {
                $crate::target::test_support::$check::<$t>(&v)?;
            }

            #[test]
            fn never_panics(s in "\\PC*") {
                let _ = s.parse::<$t>();
            }
        }
    };
}

/// `v` formats to text that parses back to `v`.
pub(crate) fn check_text<T>(v: &T) -> Result<(), TestCaseError>
where
    T: FromStr<Err = TargetError> + ToString + Clone + PartialEq + Debug,
{
    prop_assert_eq!(v.to_string().parse::<T>(), Ok(v.clone()));
    Ok(())
}

/// [`check_text`], also with the kernel's trailing space, and `t` comes back
/// from a table line of any range.
pub(crate) fn check_table<T>(t: &T) -> Result<(), TestCaseError>
where
    T: TargetTable + FromStr<Err = TargetError> + Clone + PartialEq + Debug,
    for<'a> T: TryFrom<&'a TableLine, Error = TargetError>,
{
    check_text(t)?;
    prop_assert_eq!(format!("{t} ").parse::<T>(), Ok(t.clone()));
    for (start, length) in [(0, 1), (u64::MAX, u64::MAX)] {
        prop_assert_eq!(T::try_from(&t.to_line(start, length)), Ok(t.clone()));
    }
    Ok(())
}

/// For every `(input, want)`: parsing `input` as `T` fails with a message
/// that contains `want`.
#[track_caller]
pub(crate) fn assert_parse_errors<T>(cases: &[(&str, &str)])
where
    T: FromStr<Err = TargetError> + Debug,
{
    for (input, want) in cases {
        let e = input.parse::<T>().unwrap_err();
        assert!(
            e.to_string().contains(want),
            "{input:?}: got {e}, want {want:?}"
        );
    }
}
