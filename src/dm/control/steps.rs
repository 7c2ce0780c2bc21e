//! Multi-step commands with a hook between the steps (the device set's fail
//! points go there): an error from a hook is undone like a failed step.

use super::Control;
use crate::dm::cookie::UdevFlags;
use crate::dm::decode::DeviceInfo;
use crate::dm::encode::{self, DevId};
use crate::dm::error::DmError;
use crate::dm::options::{CreateOptions, RemoveOptions, SuspendOptions};
use crate::dm::table_line::TableLine;

impl Control {
    /// [`Control::create_with_table`], calling `on_created` once the device
    /// exists and `on_loaded` once its table is loaded (the device set's
    /// fail points go there); an error from either is undone like a failed
    /// step.
    pub(crate) fn create_with_table_steps<E: From<DmError>>(
        &mut self,
        name: &str,
        options: &CreateOptions<'_>,
        lines: &[TableLine],
        udev_flags: UdevFlags,
        on_created: impl FnOnce() -> std::result::Result<(), E>,
        on_loaded: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<DeviceInfo, E> {
        // Validate the table before creating anything.
        encode::encode_table(lines, &mut self.payload)?;
        self.create(name, options)?;
        let loaded = on_created()
            .and_then(|()| Ok(self.table_load(DevId::Name(name), lines, options.read_only)?))
            .and_then(|_| on_loaded())
            .and_then(|()| Ok(self.resume(DevId::Name(name), udev_flags)?));
        match loaded {
            Ok(info) => Ok(info),
            Err(e) => {
                if let Err(undo) = self.remove(
                    DevId::Name(name),
                    &RemoveOptions {
                        deferred: false,
                        udev_flags,
                    },
                ) {
                    log::warn!("undo of failed create of {name} failed too: {undo}");
                }
                Err(e)
            }
        }
    }

    /// [`Control::reload_table`], calling `on_suspended` between the suspend
    /// and the resume (the device set's fail points go there); an error from
    /// it is undone like a failed resume.
    pub(crate) fn reload_table_steps<E: From<DmError>>(
        &mut self,
        id: DevId<'_>,
        lines: &[TableLine],
        udev_flags: UdevFlags,
        on_suspended: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<DeviceInfo, E> {
        self.table_load(id, lines, false)?;
        if let Err(e) = self.suspend(id, &SuspendOptions::default()) {
            let _ = self.table_clear(id);
            return Err(e.into());
        }
        match on_suspended().and_then(|()| Ok(self.resume(id, udev_flags)?)) {
            Ok(info) => Ok(info),
            Err(e) => {
                let _ = self.table_clear(id);
                let _ = self.resume(id, udev_flags);
                Err(e)
            }
        }
    }
}
