//! Splits mount options the way mount(8) does: standard flags (`ro`,
//! `nosuid`, `nodev`, `noatime`, ...) become `MS_*` flags for mount(2), the
//! rest is the filesystem's data string.

use nix::mount::MsFlags;

/// Mount options split into mount(2) flags and filesystem data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountOptions {
    /// Flags for mount(2).
    pub(crate) flags: MsFlags,
    /// Comma-separated options for the filesystem (no flags among them).
    pub(crate) data: Vec<String>,
}

/// What a standard option does to the flags: set or clear.
enum Effect {
    Set(MsFlags),
    Clear(MsFlags),
}

/// The options mount(8) turns into flags (util-linux `libmount/src/optmap.c`).
fn flag_option(name: &str) -> Option<Effect> {
    use Effect::{Clear, Set};
    Some(match name {
        "ro" => Set(MsFlags::MS_RDONLY),
        "rw" => Clear(MsFlags::MS_RDONLY),
        "nosuid" => Set(MsFlags::MS_NOSUID),
        "suid" => Clear(MsFlags::MS_NOSUID),
        "nodev" => Set(MsFlags::MS_NODEV),
        "dev" => Clear(MsFlags::MS_NODEV),
        "noexec" => Set(MsFlags::MS_NOEXEC),
        "exec" => Clear(MsFlags::MS_NOEXEC),
        "sync" => Set(MsFlags::MS_SYNCHRONOUS),
        "async" => Clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => Set(MsFlags::MS_DIRSYNC),
        "mand" => Set(MsFlags::MS_MANDLOCK),
        "nomand" => Clear(MsFlags::MS_MANDLOCK),
        "noatime" => Set(MsFlags::MS_NOATIME),
        "atime" => Clear(MsFlags::MS_NOATIME),
        "nodiratime" => Set(MsFlags::MS_NODIRATIME),
        "diratime" => Clear(MsFlags::MS_NODIRATIME),
        "relatime" => Set(MsFlags::MS_RELATIME),
        "norelatime" => Clear(MsFlags::MS_RELATIME),
        "strictatime" => Set(MsFlags::MS_STRICTATIME),
        "nostrictatime" => Clear(MsFlags::MS_STRICTATIME),
        "lazytime" => Set(MsFlags::MS_LAZYTIME),
        "nolazytime" => Clear(MsFlags::MS_LAZYTIME),
        "silent" => Set(MsFlags::MS_SILENT),
        "loud" => Clear(MsFlags::MS_SILENT),
        // mount(8)'s `defaults` is rw,suid,dev,exec,auto,nouser,async: no flag set.
        "defaults" => Clear(MsFlags::empty()),
        _ => return None,
    })
}

impl MountOptions {
    /// Splits `options` (each entry may itself be comma-separated); later
    /// options win, as with mount(8). Empty entries are dropped.
    pub(crate) fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for opt in options.iter().flat_map(|o| o.as_ref().split(',')) {
            let opt = opt.trim();
            match flag_option(opt) {
                _ if opt.is_empty() => {}
                Some(Effect::Set(f)) => flags |= f,
                Some(Effect::Clear(f)) => flags &= !f,
                None => data.push(opt.to_string()),
            }
        }
        MountOptions { flags, data }
    }

    /// Whether the filesystem data already holds `option`.
    pub(crate) fn has_data(&self, option: &str) -> bool {
        self.data.iter().any(|d| d == option)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_data_are_split() {
        let o = MountOptions::parse(&["nosuid,nodev,noatime", "data=ordered", "ro"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME | MsFlags::MS_RDONLY
        );
        assert_eq!(o.data, ["data=ordered"]);
        assert!(o.has_data("data=ordered"));
        assert!(!o.has_data("nosuid"));
    }

    #[test]
    fn later_options_win_and_empties_vanish() {
        let o = MountOptions::parse(&["ro,,noexec", " rw ", "exec,defaults", "discard"]);
        assert_eq!(o.flags, MsFlags::empty());
        assert_eq!(o.data, ["discard"]);
        let none: [&str; 0] = [];
        assert_eq!(MountOptions::parse(&none).data, Vec::<String>::new());
    }

    #[test]
    fn unknown_options_pass_through_as_data() {
        let o = MountOptions::parse(&["nouuid,inode64,errors=remount-ro,sync"]);
        assert_eq!(o.flags, MsFlags::MS_SYNCHRONOUS);
        assert_eq!(o.data, ["nouuid", "inode64", "errors=remount-ro"]);
    }
}
