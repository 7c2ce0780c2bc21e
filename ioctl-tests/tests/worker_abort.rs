//! The pool's own worker failing under the set (issue #25): while a writer
//! keeps the pool allocating blocks and committing (each of its writes ends
//! in a flush), the metadata device starts failing every write at a random
//! moment, amid adds and removes. The pool aborts its transaction and turns
//! read-only, from the worker or from a message's commit, whichever meets
//! the failure first.
//!
//! Afterwards, repaired as an operator would (healthy disk, `thin_check
//! --clear-needs-check-flag`), the set reopens and every add and remove
//! that returned success is there; one that failed is wholly done or wholly
//! undone, and settled (no device stays uncertain on a healthy pool). The
//! seed is printed; `--env DMTHIN_STRESS_SEED=N` replays one, and
//! `DMTHIN_STRESS_ROUNDS` sets the rounds.

mod common;
use common::*;

use dmthin::deviceset::{DeviceSet, Presence};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Prints past libtest's capture (straight to stderr), so the VM log shows
/// every round of a passing run.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use dmthin_ioctl_tests::SplitMix64 as Rng;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
}

#[test]
fn metadata_write_errors_at_random_never_lose_an_acknowledged_add_or_remove() {
    let seed = env_u64("DMTHIN_STRESS_SEED", 0x5eed_2025);
    let rounds = env_u64("DMTHIN_STRESS_ROUNDS", 12);
    say!("worker abort stress: seed {seed}, {rounds} rounds");
    let mut rng = Rng(seed);
    let root = Root::new("worker-abort");
    let disks = FlakeyDisks::new(&root.0, "wabort");
    let set_root = root.0.join("set");
    let mut o = disks.options();
    o.min_free_space_percent = 0;
    // Devices whose add was acknowledged and whose remove was not.
    let mut present: BTreeSet<String> = BTreeSet::new();
    let (mut acked, mut failed, mut done_anyway, mut rounds_failing) = (0, 0, 0, 0);
    for round in 0..rounds {
        let set = DeviceSet::open(&set_root, o.clone()).unwrap();
        assert_eq!(set.status().unwrap().mode, "rw", "round {round}");
        let writer_id = format!("w{round}");
        set.add_device(&writer_id, None).unwrap();
        let node = set.activate_device(&writer_id).unwrap();
        let flip_after = Duration::from_millis(rng.below(600));
        let writer_seed = rng.next_u64();
        let stop = AtomicBool::new(false);
        // (op, id, result) of each call this round.
        let mut calls: Vec<(Op, String, bool)> = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut wr = Rng(writer_seed);
                while !stop.load(Ordering::Relaxed) {
                    let offsets: Vec<u64> = (0..4).map(|_| wr.below(60)).collect();
                    let _ = write_blocks(&node, &offsets);
                }
            });
            s.spawn(|| {
                std::thread::sleep(flip_after);
                disks.fail_meta_writes(true);
            });
            let mut errors = 0;
            for i in 0..16 {
                let removable: Vec<&String> = present.iter().collect();
                let op = if removable.is_empty() || rng.below(3) > 0 {
                    Op::Add
                } else {
                    Op::Remove
                };
                let id = match op {
                    Op::Add => format!("r{round}-{i}"),
                    Op::Remove => removable[rng.below(removable.len() as u64) as usize].clone(),
                };
                let result = match op {
                    Op::Add => set.add_device(&id, None),
                    Op::Remove => set.remove_device(&id),
                };
                if let Err(e) = &result {
                    say!("round {round}: {op:?} {id}: {e}");
                    errors += 1;
                }
                calls.push((op, id, result.is_ok()));
                if errors >= 2 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(rng.below(80)));
            }
            stop.store(true, Ordering::Relaxed);
        });
        if calls.iter().any(|(_, _, ok)| !ok) {
            rounds_failing += 1;
        }
        for (op, id, ok) in &calls {
            if *ok {
                acked += 1;
                match op {
                    Op::Add => present.insert(id.clone()),
                    Op::Remove => present.remove(id),
                };
            }
        }
        say!(
            "round {round}: metadata failing after {flip_after:?}; mode {}",
            set.status().map(|s| s.mode).unwrap_or_default()
        );
        let _ = set.deactivate_device(&writer_id);
        set.shutdown().unwrap();
        drop(set);
        disks.fail_meta_writes(false);
        let (ok, out) = clear_needs_check(&disks.meta_node());
        assert!(ok, "round {round}: thin_check: {out}");
        let set = DeviceSet::open(&set_root, o.clone()).unwrap();
        assert_eq!(set.status().unwrap().mode, "rw", "round {round}");
        assert!(
            set.unsettled_ids().unwrap().is_empty(),
            "round {round}: unsettled on a healthy pool: {:?}",
            set.unsettled_ids()
        );
        // A failed call is wholly done or wholly undone.
        for (op, id, ok) in &calls {
            if *ok {
                continue;
            }
            failed += 1;
            let now = set.presence(id).unwrap();
            assert_ne!(now, Presence::Uncertain, "round {round}: {id}");
            let happened = match op {
                Op::Add => now == Presence::Present,
                Op::Remove => now == Presence::Absent,
            };
            if happened {
                done_anyway += 1;
                match op {
                    Op::Add => present.insert(id.clone()),
                    Op::Remove => present.remove(id),
                };
            }
        }
        present.insert(writer_id.clone());
        // Every acknowledged add (and no acknowledged remove) is there.
        for id in &present {
            assert_eq!(
                set.presence(id).unwrap(),
                Presence::Present,
                "round {round}: acknowledged device {id} lost"
            );
        }
        let listed: BTreeSet<String> = set.list().unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(listed, present, "round {round}: records vs the model");
        check_invariants_on(&set, &disks.meta_node());
        set.shutdown().unwrap();
    }
    say!(
        "worker abort stress: {rounds} rounds ({rounds_failing} with the pool failing under a call), {acked} acknowledged adds and removes all present, {failed} failed calls ({done_anyway} found done), seed {seed}"
    );
    assert!(
        rounds_failing * 2 >= rounds,
        "the metadata failed under a call in only {rounds_failing} of {rounds} rounds"
    );
}
