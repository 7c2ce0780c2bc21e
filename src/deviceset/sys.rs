//! The device set's one system call without a safe wrapper in nix: a
//! thread's scheduling priority, for the pool monitor.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::libc;

/// Sets the calling thread's nice value (on Linux `setpriority` with a
/// thread id applies to that thread alone). Lowering it below 0 needs
/// `CAP_SYS_NICE`.
pub(crate) fn set_thread_nice(nice: i32) -> nix::Result<()> {
    let tid = libc::id_t::try_from(nix::unistd::gettid().as_raw()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: setpriority takes three integers and touches no memory of ours.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}
