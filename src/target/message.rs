//! Messages to a thin-pool (`TARGET_MSG`, sector 0).

use std::fmt;

use super::args::Args;
use super::error::{Result, TargetError};
use super::thin::ThinId;

const CONTEXT: &str = "thin-pool message";

/// A message the thin-pool target understands. Each success commits the
/// pool's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMessage {
    /// `create_thin <id>`: a new, empty thin device (EEXIST if taken).
    CreateThin(ThinId),
    /// `create_snap <id> <origin>`: a snapshot of `origin` (suspend an active
    /// origin around it).
    CreateSnap {
        /// The new device.
        id: ThinId,
        /// The device snapshotted.
        origin: ThinId,
    },
    /// `delete <id>`: removes a thin device (EBUSY while active).
    Delete(ThinId),
    /// `set_transaction_id <current> <new>`: EINVAL unless `current` matches.
    SetTransactionId {
        /// The id the pool must have now.
        current: u64,
        /// The id to set.
        new: u64,
    },
    /// `reserve_metadata_snap`: takes a metadata snapshot (EBUSY if one is held).
    ReserveMetadataSnap,
    /// `release_metadata_snap`: drops it (EINVAL if none is held).
    ReleaseMetadataSnap,
}

impl PoolMessage {
    /// The sector to send pool messages to.
    pub const SECTOR: u64 = 0;

    /// `create_thin` with a checked id.
    pub fn create_thin(id: u32) -> Result<Self> {
        Ok(PoolMessage::CreateThin(ThinId::checked(
            "create_thin id",
            id.into(),
        )?))
    }

    /// `create_snap` with checked ids.
    pub fn create_snap(id: u32, origin: u32) -> Result<Self> {
        Ok(PoolMessage::CreateSnap {
            id: ThinId::checked("create_snap id", id.into())?,
            origin: ThinId::checked("create_snap origin id", origin.into())?,
        })
    }

    /// `delete` with a checked id.
    pub fn delete(id: u32) -> Result<Self> {
        Ok(PoolMessage::Delete(ThinId::checked(
            "delete id",
            id.into(),
        )?))
    }

    /// The message name.
    pub const fn name(&self) -> &'static str {
        match self {
            PoolMessage::CreateThin(_) => "create_thin",
            PoolMessage::CreateSnap { .. } => "create_snap",
            PoolMessage::Delete(_) => "delete",
            PoolMessage::SetTransactionId { .. } => "set_transaction_id",
            PoolMessage::ReserveMetadataSnap => "reserve_metadata_snap",
            PoolMessage::ReleaseMetadataSnap => "release_metadata_snap",
        }
    }

    /// Parses a message; the name is case-insensitive, as in the kernel.
    pub fn parse(s: &str) -> Result<Self> {
        let mut a = Args::new(s, CONTEXT);
        let name = a.first()?;
        let lower = |n: &str| name.eq_ignore_ascii_case(n);
        let msg = if lower("create_thin") {
            PoolMessage::CreateThin(ThinId::parse_field(
                "create_thin id",
                a.required("create_thin id")?,
            )?)
        } else if lower("create_snap") {
            let id = ThinId::parse_field("create_snap id", a.required("create_snap id")?)?;
            let origin = ThinId::parse_field(
                "create_snap origin id",
                a.required("create_snap origin id")?,
            )?;
            PoolMessage::CreateSnap { id, origin }
        } else if lower("delete") {
            PoolMessage::Delete(ThinId::parse_field("delete id", a.required("delete id")?)?)
        } else if lower("set_transaction_id") {
            let current = a.u64("set_transaction_id current id")?;
            let new = a.u64("set_transaction_id new id")?;
            PoolMessage::SetTransactionId { current, new }
        } else if lower("reserve_metadata_snap") {
            PoolMessage::ReserveMetadataSnap
        } else if lower("release_metadata_snap") {
            PoolMessage::ReleaseMetadataSnap
        } else {
            return Err(TargetError::unknown(
                "thin-pool message name",
                name,
                "create_thin, create_snap, delete, set_transaction_id, \
                 reserve_metadata_snap or release_metadata_snap",
            ));
        };
        a.finish()?;
        Ok(msg)
    }
}

impl fmt::Display for PoolMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolMessage::CreateThin(id) => write!(f, "create_thin {id}"),
            PoolMessage::CreateSnap { id, origin } => write!(f, "create_snap {id} {origin}"),
            PoolMessage::Delete(id) => write!(f, "delete {id}"),
            PoolMessage::SetTransactionId { current, new } => {
                write!(f, "set_transaction_id {current} {new}")
            }
            PoolMessage::ReserveMetadataSnap => f.write_str("reserve_metadata_snap"),
            PoolMessage::ReleaseMetadataSnap => f.write_str("release_metadata_snap"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::assert_parse_errors;
    use super::super::thin::tests::thin_id_strategy;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats() {
        assert_eq!(
            PoolMessage::create_thin(0).unwrap().to_string(),
            "create_thin 0"
        );
        assert_eq!(
            PoolMessage::create_snap(2, 1).unwrap().to_string(),
            "create_snap 2 1"
        );
        assert_eq!(
            PoolMessage::delete(0xFF_FFFF).unwrap().to_string(),
            "delete 16777215"
        );
        assert_eq!(
            PoolMessage::SetTransactionId { current: 3, new: 4 }.to_string(),
            "set_transaction_id 3 4"
        );
        assert_eq!(
            PoolMessage::ReserveMetadataSnap.name(),
            "reserve_metadata_snap"
        );
        assert_eq!(
            PoolMessage::parse("CREATE_THIN 5"),
            PoolMessage::create_thin(5)
        );
    }

    #[test]
    fn out_of_range_ids_are_refused() {
        for e in [
            PoolMessage::create_thin(1 << 24).unwrap_err(),
            PoolMessage::create_snap(1, 1 << 24).unwrap_err(),
            PoolMessage::delete(u32::MAX).unwrap_err(),
        ] {
            assert!(e.to_string().contains("at most 16777215"), "{e}");
        }
        let e = PoolMessage::create_snap(1 << 24, 0).unwrap_err();
        assert!(
            e.to_string().starts_with("create_snap id is 16777216"),
            "{e}"
        );
    }

    #[test]
    fn every_invalid_input_says_why() {
        assert_parse_errors::<PoolMessage>(&[
            ("", "thin-pool message: input is empty"),
            ("create", "unknown value \"create\""),
            ("create_thin", "create_thin id is missing"),
            (
                "create_thin x",
                "create_thin id: expected a decimal integer",
            ),
            (
                "create_thin 16777216",
                "create_thin id is 16777216, but a thin device id must be at most 16777215",
            ),
            ("create_thin 1 2", "unexpected extra argument \"2\""),
            ("create_snap 1", "create_snap origin id is missing"),
            (
                "create_snap 1 99999999",
                "create_snap origin id is 99999999",
            ),
            ("delete -1", "delete id: expected a decimal integer"),
            (
                "set_transaction_id 1",
                "set_transaction_id new id is missing",
            ),
            (
                "set_transaction_id 1 18446744073709551616",
                "does not fit in 64 bits",
            ),
            ("reserve_metadata_snap now", "unexpected extra argument"),
        ]);
    }

    fn message_strategy() -> impl Strategy<Value = PoolMessage> {
        prop_oneof![
            thin_id_strategy().prop_map(PoolMessage::CreateThin),
            (thin_id_strategy(), thin_id_strategy())
                .prop_map(|(id, origin)| PoolMessage::CreateSnap { id, origin }),
            thin_id_strategy().prop_map(PoolMessage::Delete),
            (any::<u64>(), any::<u64>())
                .prop_map(|(current, new)| PoolMessage::SetTransactionId { current, new }),
            Just(PoolMessage::ReserveMetadataSnap),
            Just(PoolMessage::ReleaseMetadataSnap),
        ]
    }

    parse_proptests!(PoolMessage, message_strategy());
}
