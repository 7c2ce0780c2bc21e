//! Status-line tests: kernel output, every error, the fast path against the
//! slow one, and round trips.

use proptest::prelude::*;

use super::super::args::Args;
use super::super::error::{Result, TargetError};
use super::super::pool::BlockSize;
use super::super::test_support::assert_parse_errors;
use super::pool::POOL;
use super::*;

#[test]
fn parses_kernel_pool_status() {
    // A fresh pool on a 6.x kernel, with the kernel's trailing space.
    let s = PoolStatus::parse("0 10/4096 0/1600 - rw discard_passdown queue_if_no_space - 1024 ")
        .unwrap();
    let a = *s.active().unwrap();
    assert_eq!(
        a,
        ThinPoolStatus {
            transaction_id: 0,
            used_metadata_blocks: 10,
            total_metadata_blocks: 4096,
            used_data_blocks: 0,
            total_data_blocks: 1600,
            held_metadata_root: None,
            mode: PoolMode::ReadWrite,
            discard: DiscardMode::Passdown,
            no_space: NoSpacePolicy::Queue,
            needs_check: false,
            metadata_low_watermark: Some(1024),
        }
    );
    assert_eq!(a.free_data_blocks(), 1600);
    assert_eq!(a.used_metadata_bytes(), Some(40960));
    assert_eq!(a.total_metadata_bytes(), Some(16 << 20));
    let bs = BlockSize::new(128).unwrap();
    assert_eq!(a.total_data_bytes(bs), Some(1600 * 65536));
    assert_eq!(a.usage_bytes(bs).used_data, Some(0));

    let s: ThinPoolStatus =
        "7 100/200 5/10 42 out_of_data_space ignore_discard error_if_no_space needs_check "
            .parse()
            .unwrap();
    assert_eq!(s.held_metadata_root, Some(42));
    assert_eq!(s.mode, PoolMode::OutOfDataSpace);
    assert_eq!(s.discard, DiscardMode::Ignore);
    assert_eq!(s.no_space, NoSpacePolicy::Error);
    assert!(s.needs_check);
    // Older kernels have no low watermark.
    assert_eq!(s.metadata_low_watermark, None);
    let s: ThinPoolStatus = "1 1/2 3/4 - ro no_discard_passdown queue_if_no_space - 5"
        .parse()
        .unwrap();
    assert_eq!(
        (s.mode, s.discard),
        (PoolMode::ReadOnly, DiscardMode::NoPassdown)
    );

    assert_eq!(PoolStatus::parse("Fail "), Ok(PoolStatus::Fail));
    assert_eq!(PoolStatus::parse("Error"), Ok(PoolStatus::Error));
    assert_eq!(PoolStatus::Fail.to_string(), "Fail");
    assert!(ThinPoolStatus::parse("Fail").is_err());
}

#[test]
fn pool_status_every_invalid_input_says_why() {
    let cases: &[(&str, &str)] = &[
        ("", "thin-pool status: input is empty"),
        (" \n", "empty"),
        (
            "x",
            "transaction id: expected a decimal integer, found \"x\"",
        ),
        ("0", "metadata usage is missing"),
        (
            "0 10",
            "metadata usage: expected <used>/<total>, found \"10\"",
        ),
        ("0 10/x", "metadata usage: expected a decimal integer"),
        (
            "0 11/10 0/1",
            "metadata usage: 11 used exceeds the total of 10",
        ),
        ("0 1/10 2/1", "data usage: 2 used exceeds the total of 1"),
        ("0 1/10 0/1", "held metadata root is missing"),
        (
            "0 1/10 0/1 x",
            "held metadata root: expected a decimal integer",
        ),
        (
            "0 1/10 0/1 - rx",
            "mode: unknown value \"rx\", expected rw, ro or out_of_data_space",
        ),
        ("0 1/10 0/1 - rw passdown", "discard mode: unknown value"),
        (
            "0 1/10 0/1 - rw ignore_discard queue",
            "no-space policy: unknown value",
        ),
        (
            "0 1/10 0/1 - rw ignore_discard queue_if_no_space",
            "needs_check is missing",
        ),
        (
            "0 1/10 0/1 - rw ignore_discard queue_if_no_space ok",
            "needs_check: unknown value",
        ),
        (
            "0 1/10 0/1 - rw ignore_discard queue_if_no_space - -",
            "metadata low watermark: expected a decimal",
        ),
        (
            "0 1/10 0/1 - rw ignore_discard queue_if_no_space - 1 2",
            "unexpected extra argument \"2\"",
        ),
        ("Fail now", "unexpected extra argument \"now\""),
        ("18446744073709551616 1/1 1/1", "does not fit in 64 bits"),
        ("0 1/1/1 1/1", "expected a decimal integer, found \"1/1\""),
        ("0 /1 1/1", "expected a decimal integer, found \"\""),
    ];
    assert_parse_errors::<PoolStatus>(cases);
}

#[test]
fn parses_thin_status() {
    assert_eq!(
        ThinStatus::parse("2048 4095"),
        Ok(ThinStatus::Active(ThinUsage {
            mapped_sectors: 2048,
            highest_mapped_sector: Some(4095)
        }))
    );
    let empty = ThinStatus::parse("0 -").unwrap();
    assert_eq!(empty.usage().unwrap().highest_mapped_sector, None);
    assert_eq!(empty.usage().unwrap().mapped_bytes(), Some(0));
    assert_eq!(ThinStatus::parse("- "), Ok(ThinStatus::Unavailable));
    assert_eq!(ThinStatus::parse("Fail"), Ok(ThinStatus::Fail));
    assert_eq!(ThinStatus::parse("Error "), Ok(ThinStatus::Error));
    assert_parse_errors::<ThinStatus>(&[
        ("", "thin status: input is empty"),
        ("12", "highest mapped sector is missing"),
        ("x 1", "mapped sectors: expected a decimal integer"),
        ("1 x", "highest mapped sector: expected a decimal integer"),
        ("1 2 3", "unexpected extra argument \"3\""),
        ("- 1", "unexpected extra argument"),
        (
            "fail",
            "mapped sectors: expected a decimal integer, found \"fail\"",
        ),
    ]);
}

fn pool_status_strategy() -> impl Strategy<Value = ThinPoolStatus> {
    (
        any::<u64>(),
        (any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u64>()),
        proptest::option::of(any::<u64>()),
        prop_oneof![
            Just(PoolMode::ReadWrite),
            Just(PoolMode::ReadOnly),
            Just(PoolMode::OutOfDataSpace)
        ],
        prop_oneof![
            Just(DiscardMode::Passdown),
            Just(DiscardMode::NoPassdown),
            Just(DiscardMode::Ignore)
        ],
        prop_oneof![Just(NoSpacePolicy::Queue), Just(NoSpacePolicy::Error)],
        any::<bool>(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(tid, (m1, m2), (d1, d2), held, mode, discard, no_space, nc, lwm)| ThinPoolStatus {
                transaction_id: tid,
                used_metadata_blocks: m1.min(m2),
                total_metadata_blocks: m1.max(m2),
                used_data_blocks: d1.min(d2),
                total_data_blocks: d1.max(d2),
                held_metadata_root: held,
                mode,
                discard,
                no_space,
                needs_check: nc,
                metadata_low_watermark: lwm,
            },
        )
}

fn thin_status_strategy() -> impl Strategy<Value = ThinStatus> {
    prop_oneof![
        (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(m, h)| {
            ThinStatus::Active(ThinUsage {
                mapped_sectors: m,
                highest_mapped_sector: h,
            })
        }),
        Just(ThinStatus::Unavailable),
        Just(ThinStatus::Fail),
        Just(ThinStatus::Error),
    ]
}

fn parse_with<const FAST: bool>(s: &str) -> Result<ThinPoolStatus> {
    let mut it = Args::new(s, POOL);
    let first = it
        .next_token()
        .ok_or(TargetError::Empty { context: POOL })?;
    ThinPoolStatus::parse_rest::<FAST>(first, it)
}

#[test]
fn fast_path_edge_cases_match_slow_path() {
    for s in [
        "0 1/2 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1/2 3/4\0 - rw discard_passdown queue_if_no_space -",
        "0 1 /2 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1/ 2 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1//2 3/4 - rw discard_passdown queue_if_no_space -",
        "0 /2 3/4 - rw discard_passdown queue_if_no_space -",
        "0 2/ 3/4 - rw discard_passdown queue_if_no_space -",
        "0 3/2 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1/2/3 3/4 - rw discard_passdown queue_if_no_space -",
        "0 12345678901234567890/99999999999999999999 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1/18446744073709551615 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1/18446744073709551616 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1/2\t3/4\n- rw discard_passdown queue_if_no_space -",
        "0 1/2\x0b3/4\x0b- rw discard_passdown queue_if_no_space -",
        "0\x0b1/\x0b2 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1/2é 3/4 - rw discard_passdown queue_if_no_space -",
        "0 1/2",
        "0 1/2 ",
        "0 1",
    ] {
        assert_eq!(parse_with::<true>(s), parse_with::<false>(s), "{s:?}");
    }
}

proptest! {
    #[test]
    fn fast_path_matches_slow_path(
        parts in proptest::collection::vec(
            prop_oneof![
                "[0-9]{1,21}/[0-9]{1,21}",
                "[0-9/ ]{0,8}",
                "[0-9]{1,3}",
                Just("-".to_string()),
                Just("rw".to_string()),
                Just("discard_passdown".to_string()),
                Just("queue_if_no_space".to_string()),
                "[\\PC]{0,3}",
            ],
            1..12,
        ),
        seps in proptest::collection::vec(prop_oneof![Just(" "), Just("  "), Just("\t"), Just("\x0b"), Just(""), Just("/")], 12),
    ) {
        let mut s = String::new();
        for (p, sep) in parts.iter().zip(seps.iter()) {
            s.push_str(p);
            s.push_str(sep);
        }
        prop_assert_eq!(parse_with::<true>(&s), parse_with::<false>(&s), "{:?}", s);
    }

    #[test]
    fn pool_round_trip(s in pool_status_strategy()) {
        prop_assert_eq!(ThinPoolStatus::parse(&s.to_string()), Ok(s));
        prop_assert_eq!(PoolStatus::parse(&format!("{s} ")), Ok(PoolStatus::Active(s)));
        prop_assert!(s.used_metadata_blocks <= s.total_metadata_blocks);
        let bs = BlockSize::new(2_097_152).unwrap();
        let u = s.usage_bytes(bs);
        if let (Some(a), Some(b)) = (u.used_data, u.total_data) {
            prop_assert!(a <= b);
        }
    }

    #[test]
    fn thin_round_trip(s in thin_status_strategy()) {
        prop_assert_eq!(ThinStatus::parse(&s.to_string()), Ok(s));
        prop_assert_eq!(ThinStatus::parse(&format!("{s} ")), Ok(s));
    }

    #[test]
    fn never_panics(s in "\\PC*") {
        let _ = PoolStatus::parse(&s);
        let _ = ThinStatus::parse(&s);
    }
}
