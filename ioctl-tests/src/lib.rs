//! Shared helpers for dmthin's real-kernel test suite.
