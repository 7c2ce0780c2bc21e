//! The model: every operation of the workload with the log entries of its
//! begin and acknowledgement marks, and what a replay point must show.

use std::collections::{BTreeMap, BTreeSet};

/// An operation of the workload, as far as its outcome must last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The set's first open (creates the pool and the base device).
    Create,
    Add {
        id: String,
        parent: Option<String>,
    },
    Remove {
        id: String,
    },
    SetInitialized {
        id: String,
    },
    RememberAutoextend,
    /// Activations, mounts, growths, autoextend, a reopen: nothing of theirs
    /// is checked but that the set survives a crash in them.
    Other(String),
}

impl Op {
    /// A short name for marks and messages.
    pub fn describe(&self) -> String {
        match self {
            Op::Create => "create".into(),
            Op::Add { id, parent } => {
                format!("add-{id}-from-{}", parent.as_deref().unwrap_or("base"))
            }
            Op::Remove { id } => format!("remove-{id}"),
            Op::SetInitialized { id } => format!("set-initialized-{id}"),
            Op::RememberAutoextend => "remember-autoextend".into(),
            Op::Other(what) => what.clone(),
        }
    }
}

/// One operation as it ran: its thin id (adds), and once the log is read,
/// the entry indices of its marks.
#[derive(Debug, Clone)]
pub struct Ran {
    pub op: Op,
    pub thin: Option<u32>,
    pub begin: usize,
    pub ack: usize,
}

/// Mark names: `b<N>-<what>` before operation N, `a<N>-<what>` once it returned.
pub fn begin_mark(n: usize, op: &Op) -> String {
    format!("b{n}-{}", op.describe())
}

pub fn ack_mark(n: usize, op: &Op) -> String {
    format!("a{n}-{}", op.describe())
}

/// What the state after log entry `at` must show (`at` and everything before
/// it replayed).
#[derive(Debug, Default)]
pub struct Expect {
    /// The set's first open returned.
    pub created: bool,
    /// Added and acknowledged, no removal begun: must be present.
    pub present: BTreeSet<String>,
    /// Never begun, or removal acknowledged: must be absent.
    pub absent: BTreeSet<String>,
    /// Marked initialized (acknowledged) while present.
    pub initialized: BTreeSet<String>,
    pub autoextend_remembered: bool,
    /// Thin ids the pool must hold, and the only ones it may hold.
    pub required_thins: BTreeSet<u32>,
    pub allowed_thins: BTreeSet<u32>,
    /// The last acknowledged operation (for messages).
    pub last_ack: Option<String>,
}

/// The expectations at log entry `at`, with the base device's thin id.
pub fn expect_at(ran: &[Ran], at: usize, base_thin: u32) -> Expect {
    let mut e = Expect::default();
    let begun = |r: &Ran| r.begin <= at;
    let acked = |r: &Ran| r.ack <= at;
    let mut adds: BTreeMap<&str, &Ran> = BTreeMap::new();
    let mut removes: BTreeMap<&str, &Ran> = BTreeMap::new();
    for (n, r) in ran.iter().enumerate() {
        if acked(r) {
            e.last_ack = Some(ack_mark(n, &r.op));
        }
        match &r.op {
            Op::Create => {
                e.created = acked(r);
                if begun(r) {
                    e.allowed_thins.insert(base_thin);
                }
                if acked(r) {
                    e.required_thins.insert(base_thin);
                }
            }
            Op::Add { id, .. } => {
                adds.insert(id, r);
            }
            Op::Remove { id } => {
                removes.insert(id, r);
            }
            Op::RememberAutoextend => e.autoextend_remembered |= acked(r),
            Op::SetInitialized { .. } | Op::Other(_) => {}
        }
    }
    for (id, add) in &adds {
        let remove = removes.get(id);
        let removal_begun = remove.is_some_and(|r| begun(r));
        let removed = remove.is_some_and(|r| acked(r));
        let thin = add.thin.expect("every add ran to its acknowledgement");
        if acked(add) && !removal_begun {
            e.present.insert(id.to_string());
            e.required_thins.insert(thin);
        }
        if !begun(add) || removed {
            e.absent.insert(id.to_string());
        }
        if begun(add) && !removed {
            e.allowed_thins.insert(thin);
        }
    }
    for r in ran {
        if let Op::SetInitialized { id } = &r.op {
            if acked(r) && e.present.contains(id) {
                e.initialized.insert(id.clone());
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(op: Op, thin: Option<u32>, begin: usize, ack: usize) -> Ran {
        Ran {
            op,
            thin,
            begin,
            ack,
        }
    }

    #[test]
    fn expectations_follow_the_marks() {
        let add = |id: &str| Op::Add {
            id: id.into(),
            parent: None,
        };
        let log = vec![
            ran(Op::Create, None, 0, 10),
            ran(add("x"), Some(1), 20, 30),
            ran(Op::Remove { id: "x".into() }, None, 40, 50),
            ran(add("y"), Some(1), 60, 70),
        ];
        let e = expect_at(&log, 5, 0);
        assert!(!e.created && e.required_thins.is_empty());
        assert_eq!(e.allowed_thins, [0].into());
        let e = expect_at(&log, 25, 0);
        assert!(e.created && e.present.is_empty() && !e.absent.contains("x"));
        assert_eq!(e.allowed_thins, [0, 1].into());
        assert!(e.absent.contains("y"));
        let e = expect_at(&log, 35, 0);
        assert!(e.present.contains("x"));
        assert_eq!(e.required_thins, [0, 1].into());
        let e = expect_at(&log, 45, 0);
        assert!(!e.present.contains("x") && !e.absent.contains("x"));
        assert_eq!(e.required_thins, [0].into());
        let e = expect_at(&log, 55, 0);
        assert!(e.absent.contains("x"));
        assert_eq!(e.allowed_thins, [0].into(), "thin 1 went with x");
        let e = expect_at(&log, 65, 0);
        assert_eq!(e.allowed_thins, [0, 1].into(), "thin 1 is y's now");
        assert_eq!(e.last_ack.as_deref(), Some("a2-remove-x"));
    }
}
