//! Guards for the two things an operation takes before it knows it will
//! succeed: a thin id from the allocator and an open transaction in
//! `transaction.json`. Each undoes itself when dropped unless kept, so every
//! error path gives back what it took. Nested (the transaction begun on the
//! claim's state), they undo in reverse order: the transaction is closed
//! first, then the id given back.
//!
//! Each guard holds the locked [`State`] and derefs to it, so the steps of
//! the operation run through it.

use super::State;
use crate::deviceset::error::Result;
use crate::deviceset::store::{TransactionOp, TransactionRecord};
use std::ops::{Deref, DerefMut};

/// A guard derefs to the state it holds, so the operation's steps run through it.
macro_rules! derefs_to_state {
    ($guard:ident) => {
        impl Deref for $guard<'_> {
            type Target = State;
            fn deref(&self) -> &State {
                self.state
            }
        }

        impl DerefMut for $guard<'_> {
            fn deref_mut(&mut self) -> &mut State {
                self.state
            }
        }
    };
}

/// A thin id taken from the allocator for a device being made: given back
/// on drop unless [kept](ClaimedId::keep).
pub(crate) struct ClaimedId<'a> {
    state: &'a mut State,
    /// `None` once nothing is to be given back.
    id: Option<u32>,
}

impl<'a> ClaimedId<'a> {
    /// Takes the first free thin id; `None` when every id is used.
    pub(crate) fn claim(state: &'a mut State) -> Option<ClaimedId<'a>> {
        let id = state.ids.allocate_from(0)?;
        Some(ClaimedId {
            state,
            id: Some(id),
        })
    }

    /// The claimed id.
    pub(crate) fn id(&self) -> u32 {
        self.id.expect("a claimed id is present until kept")
    }

    /// The pool already holds the claimed id (no record names it): keeps it
    /// used for good and claims the next free one after it. `false`, with
    /// nothing left to give back, when no id is free.
    pub(crate) fn skip(&mut self) -> bool {
        self.id = self.state.ids.allocate_from(self.id());
        self.id.is_some()
    }

    /// The id stays used: the device made with it exists.
    pub(crate) fn keep(mut self) -> u32 {
        self.id.take().expect("a claimed id is present until kept")
    }
}

impl Drop for ClaimedId<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.state.ids.release(id);
        }
    }
}

derefs_to_state!(ClaimedId);

/// An operation begun in `transaction.json`: on drop, unless
/// [kept](OpenTransaction::keep), closed without change (the pool's current
/// transaction id recorded as committed), the way a failed operation rolls
/// back.
pub(crate) struct OpenTransaction<'a> {
    state: &'a mut State,
    open: u64,
    kept: bool,
}

impl<'a> OpenTransaction<'a> {
    /// Durably records the start of `op`, as transaction `transaction_id + 1`.
    pub(crate) fn begin(state: &'a mut State, op: TransactionOp) -> Result<OpenTransaction<'a>> {
        let open = state.transaction_id + 1;
        state.store.begin(&TransactionRecord {
            open_transaction_id: open,
            op,
        })?;
        Ok(OpenTransaction {
            state,
            open,
            kept: false,
        })
    }

    /// The pool transaction id that commits this operation.
    pub(crate) fn open_id(&self) -> u64 {
        self.open
    }

    /// The operation stands (committed in the pool, or to be finished by
    /// recovery): nothing to undo.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }

    /// Closes the transaction now, reporting a failure to record that.
    pub(crate) fn abort(mut self) -> Result<()> {
        self.kept = true;
        close(self.state)
    }
}

/// Records the pool's current transaction id as committed, keeping the
/// journal's mark while the journal holds entries.
fn close(state: &mut State) -> Result<()> {
    let committed = state.transaction_id;
    if !state.journal.is_empty() {
        state.store.mark_journal(committed)?;
        state.journal.set_guarded(true);
    } else {
        state.store.commit(committed)?;
    }
    Ok(())
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let _ = close(self.state);
        }
    }
}

derefs_to_state!(OpenTransaction);
