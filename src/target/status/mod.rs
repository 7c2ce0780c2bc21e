//! Status lines of the `thin-pool` and `thin` targets.
//!
//! The parsers take the kernel's own output (trailing space included) and do
//! not allocate unless they fail.
//!
//! Both split through the target layer's one tokenizer (`args::Args`).

mod pool;
#[cfg(test)]
mod tests;
mod thin;

pub use pool::{
    DiscardMode, NoSpacePolicy, PoolMode, PoolStatus, PoolUsageBytes, ThinPoolStatus,
    METADATA_BLOCK_BYTES,
};
pub use thin::{ThinStatus, ThinUsage};
