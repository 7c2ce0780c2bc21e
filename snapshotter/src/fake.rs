//! A device layer in memory for the unit tests.

use crate::devices::{DevError, DevErrorKind, DevResult, Devices};
use dmthin::deviceset::Presence;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A device layer in memory that can fail one named operation on demand.
#[derive(Default)]
pub struct Fake {
    pub s: Mutex<FakeState>,
}

#[derive(Default)]
pub struct FakeState {
    /// id → (parent, active, mapped bytes)
    pub devices: BTreeMap<String, (Option<String>, bool, u64)>,
    /// Operation name → error kind, for the next call of that operation.
    fail: HashMap<&'static str, DevErrorKind>,
    /// Ids reported mounted (deactivation is skipped for them).
    pub mounted: BTreeSet<String>,
    /// Ids whose add or remove has an unknown outcome (a degraded pool).
    pub unsettled: BTreeSet<String>,
}

impl Fake {
    fn failing(&self, op: &'static str) -> DevResult<()> {
        match self.s.lock().unwrap().fail.remove(op) {
            Some(kind) => Err(DevError {
                kind,
                msg: format!("injected {op} failure"),
            }),
            None => Ok(()),
        }
    }
    pub fn fail_next(&self, op: &'static str, kind: DevErrorKind) {
        self.s.lock().unwrap().fail.insert(op, kind);
    }
    pub fn all_ids(&self) -> Vec<String> {
        self.s.lock().unwrap().devices.keys().cloned().collect()
    }
    pub fn has(&self, id: &str) -> bool {
        self.s.lock().unwrap().devices.contains_key(id)
    }
    pub fn active(&self, id: &str) -> bool {
        self.s.lock().unwrap().devices.get(id).is_some_and(|d| d.1)
    }
    pub fn set_mapped(&self, id: &str, bytes: u64) {
        self.s.lock().unwrap().devices.get_mut(id).unwrap().2 = bytes;
    }
    pub fn add(&self, id: &str) {
        self.s
            .lock()
            .unwrap()
            .devices
            .insert(id.into(), (None, false, 0));
    }
}

fn not_found(id: &str) -> DevError {
    DevError {
        kind: DevErrorKind::NotFound,
        msg: format!("no device {id}"),
    }
}

impl Devices for Arc<Fake> {
    fn create(&self, id: &str, parent: Option<&str>) -> DevResult<()> {
        self.failing("create")?;
        let mut s = self.s.lock().unwrap();
        if let Some(p) = parent {
            if !s.devices.contains_key(p) {
                return Err(not_found(p));
            }
        }
        if s.devices.contains_key(id) {
            return Err(DevError {
                kind: DevErrorKind::Exists,
                msg: id.into(),
            });
        }
        s.devices
            .insert(id.into(), (parent.map(String::from), false, 0));
        Ok(())
    }
    fn activate(&self, id: &str) -> DevResult<PathBuf> {
        self.failing("activate")?;
        let mut s = self.s.lock().unwrap();
        let d = s.devices.get_mut(id).ok_or_else(|| not_found(id))?;
        d.1 = true;
        Ok(PathBuf::from(format!("/dev/fake/{id}")))
    }
    fn deactivate_if_unused(&self, id: &str) -> DevResult<bool> {
        self.failing("deactivate")?;
        let mut s = self.s.lock().unwrap();
        if s.mounted.contains(id) {
            return Ok(false);
        }
        let d = s.devices.get_mut(id).ok_or_else(|| not_found(id))?;
        let was = d.1;
        d.1 = false;
        Ok(was)
    }
    fn remove(&self, id: &str) -> DevResult<()> {
        self.failing("remove")?;
        let mut s = self.s.lock().unwrap();
        s.devices.remove(id).map(drop).ok_or_else(|| not_found(id))
    }
    fn presence(&self, id: &str) -> DevResult<Presence> {
        self.failing("presence")?;
        let s = self.s.lock().unwrap();
        Ok(if s.unsettled.contains(id) {
            Presence::Uncertain
        } else if s.devices.contains_key(id) {
            Presence::Present
        } else {
            Presence::Absent
        })
    }
    fn unsettled_ids(&self) -> DevResult<Vec<String>> {
        Ok(self.s.lock().unwrap().unsettled.iter().cloned().collect())
    }
    fn ids(&self) -> DevResult<Vec<String>> {
        self.failing("ids")?;
        Ok(self.all_ids())
    }
    fn mapped_bytes(&self, id: &str) -> DevResult<Option<u64>> {
        let s = self.s.lock().unwrap();
        let d = s.devices.get(id).ok_or_else(|| not_found(id))?;
        Ok(d.1.then_some(d.2))
    }
    fn cleanup_deferred(&self) -> DevResult<()> {
        Ok(())
    }
    fn make_template(&self, id: &str, _scratch: &Path) -> DevResult<()> {
        self.failing("template")?;
        self.create(id, None)
    }
    fn fs_type(&self) -> &str {
        "ext4"
    }
    fn teardown(&self) -> DevResult<()> {
        Ok(())
    }
}
