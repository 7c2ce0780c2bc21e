//! Device-mapper target tables, messages and status lines.
//!
//! Everything here is pure: it builds and parses strings and never touches the kernel.

/// One line of a device-mapper table, as the kernel takes it in `TABLE_LOAD`
/// and reports it in `TABLE_STATUS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableLine {
    /// First sector covered by this line.
    pub start: u64,
    /// Number of sectors covered.
    pub length: u64,
    /// Target type name, such as `thin-pool` (at most 15 bytes).
    pub target_type: String,
    /// Target parameters, as the target's constructor takes them.
    pub params: String,
}
