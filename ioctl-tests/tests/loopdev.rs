//! Loop devices against the VM's kernel: the same tests as the host's
//! `tests/loopdev.rs`, compiled into the kernel suite. In the guest /tmp is
//! tmpfs, which on Debian 12's 6.1 kernel refuses O_DIRECT, so the direct-I/O
//! test exercises the buffered fallback there.

include!("../../tests/loopdev.rs");
