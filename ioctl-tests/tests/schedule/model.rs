//! The seeded schedule's bookkeeping: its deterministic random numbers
//! ([`Rng`]), the model of what the set acknowledged ([`Model`]) and the
//! fault counts a run prints ([`Counts`]).

use super::world::BASE;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// SplitMix64: tiny, deterministic, good enough to pick operations. The
/// same seed gives the same choices on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `pct` times in a hundred.
    pub fn percent(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }

    /// One of `items`, or `None` when there are none.
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())].clone())
    }

    /// One of `choices`, each as likely as its weight.
    pub fn weighted<T: Copy>(&mut self, choices: &[(u32, T)]) -> T {
        let total: u32 = choices.iter().map(|(w, _)| w).sum();
        let mut at = self.below(total as usize) as u32;
        for (w, choice) in choices {
            if at < *w {
                return *choice;
            }
            at -= w;
        }
        unreachable!("weights sum to {total}")
    }
}

/// What an acknowledged device holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dev {
    /// The device it was snapshotted from (`None`: the base).
    pub parent: Option<String>,
    /// Its size in bytes (its parent's, or more with `add_device_sized`).
    pub size: u64,
    /// Files written through a mount and synced: name → content. A
    /// snapshot starts with its parent's.
    pub files: BTreeMap<String, String>,
    /// Written raw (the pool fillers): no filesystem to check.
    pub raw: bool,
    /// Marked initialized.
    pub initialized: bool,
    /// Its thin id once seen in the set's list.
    pub thin: Option<u32>,
}

/// The model's word on one device id.
#[derive(Clone, Debug)]
pub enum Entry {
    /// Acknowledged (or seen whole after an unacknowledged operation).
    Present(Dev),
    /// Removed, or never made.
    Absent,
    /// An add or a remove whose outcome the set could not tell: the
    /// device is this `Dev` if it turns out present.
    Uncertain(Dev),
}

/// What the set acknowledged during one seed, for the device ids of that
/// seed (`s<seed>-<n>`): every later answer must agree with it.
pub struct Model {
    pub seed: u64,
    pub entries: BTreeMap<String, Entry>,
    /// Devices mounted through the set, and where.
    pub mounted: BTreeMap<String, PathBuf>,
    next_id: usize,
    next_file: usize,
}

impl Model {
    pub fn new(seed: u64) -> Model {
        Model {
            seed,
            entries: BTreeMap::new(),
            mounted: BTreeMap::new(),
            next_id: 0,
            next_file: 0,
        }
    }

    /// A device id not used yet in this seed.
    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("s{}-{}", self.seed, self.next_id)
    }

    /// A file name and content not used yet in this seed.
    pub fn new_file(&mut self, id: &str, salt: u64) -> (String, String) {
        self.next_file += 1;
        (
            format!("f{}", self.next_file),
            format!(
                "seed {} device {id} write {} salt {salt:x}\n",
                self.seed, self.next_file
            ),
        )
    }

    pub fn present(&self, id: &str) -> Option<&Dev> {
        match self.entries.get(id) {
            Some(Entry::Present(d)) => Some(d),
            _ => None,
        }
    }

    /// Ids of present devices, `mounted` or not as asked (`None`: either).
    pub fn present_ids(&self, mounted: Option<bool>) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(id, e)| {
                matches!(e, Entry::Present(_))
                    && mounted.is_none_or(|m| self.mounted.contains_key(*id) == m)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Present devices that have a filesystem (may be parents, mounted).
    pub fn fs_ids(&self, mounted: Option<bool>) -> Vec<String> {
        self.present_ids(mounted)
            .into_iter()
            .filter(|id| self.present(id).is_some_and(|d| !d.raw))
            .collect()
    }

    /// Ids removed (or never made) earlier in this seed: a new add may
    /// take one again.
    pub fn absent_ids(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Absent))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn uncertain_ids(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Uncertain(_)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// What a new snapshot of `parent` (`None`: the base) holds.
    pub fn child_of(&self, parent: Option<&str>) -> Dev {
        let from = parent.and_then(|p| self.present(p));
        Dev {
            parent: parent.map(str::to_string),
            size: from.map_or(BASE, |d| d.size),
            files: from.map(|d| d.files.clone()).unwrap_or_default(),
            raw: false,
            initialized: false,
            thin: None,
        }
    }
}

/// How often each kind of fault and operation ran over the whole run,
/// and the time each kind of step took.
#[derive(Default)]
pub struct Counts {
    pub n: BTreeMap<String, u64>,
    /// Step → (times, seconds in all).
    pub secs: BTreeMap<String, (u64, f64)>,
}

impl Counts {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.n.entry(kind.into()).or_default() += 1;
    }

    pub fn time(&mut self, step: impl Into<String>, secs: f64) {
        let e = self.secs.entry(step.into()).or_default();
        e.0 += 1;
        e.1 += secs;
    }
}

/// The set's log lines (info and up), kept until the seed's log takes
/// them: a divergence shows what the set said on the way.
pub mod trace {
    use std::sync::Mutex;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Info && m.target().starts_with("dmthin")
        }

        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                let line = format!("set {}: {}", r.level(), r.args());
                LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        }

        fn flush(&self) {}
    }

    /// Installs the capture (once per process).
    pub fn install() {
        if log::set_logger(&Capture).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    }

    /// The lines logged since the last call.
    pub fn take() -> Vec<String> {
        std::mem::take(&mut *LINES.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
