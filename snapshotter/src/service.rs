//! containerd's snapshots service (containerd.services.snapshots.v1) over
//! the [`Engine`], through the `containerd-snapshots` crate's tonic server.
//! Every call runs on tokio's blocking pool, so a slow device-set call never
//! stalls the others.

use crate::devices::Devices;
use crate::engine::{Engine, Info, Mount};
use crate::error::{Code, Error};
use crate::store::Kind;
use containerd_snapshots::api::types::Mount as ApiMount;
use containerd_snapshots::{Info as ApiInfo, Kind as ApiKind, Snapshotter, Usage};
use std::collections::HashMap;
use std::sync::Arc;

/// The gRPC-facing snapshotter.
pub struct Service<D: Devices> {
    engine: Arc<Engine<D>>,
}

impl<D: Devices> Service<D> {
    /// Serves `engine`.
    pub fn new(engine: Arc<Engine<D>>) -> Self {
        Service { engine }
    }

    /// Runs `f` on the blocking pool. A failure is logged at warn with
    /// `key=` naming the snapshot (`key` empty: the call has none); a
    /// snapshot that does not exist or exists already is an answer, not a
    /// failure, and is logged at debug.
    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        key: String,
        f: impl FnOnce(&Engine<D>, &str) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let engine = self.engine.clone();
        let k = key.clone();
        let out = match tokio::task::spawn_blocking(move || f(&engine, &k)).await {
            Ok(out) => out,
            Err(e) => Err(Error::internal(format!("{what}: worker failed: {e}"))),
        };
        if let Err(e) = &out {
            let level = match e.code {
                Code::NotFound | Code::AlreadyExists => log::Level::Debug,
                _ => log::Level::Warn,
            };
            log::log!(level, "{}", failed_call(what, &key, e));
        }
        out
    }
}

/// How a failed call is logged: `prepare key="k": message`.
fn failed_call(what: &str, key: &str, e: &Error) -> String {
    if key.is_empty() {
        format!("{what}: {e}")
    } else {
        format!("{what} key={key:?}: {e}")
    }
}

fn api_kind(k: Kind) -> ApiKind {
    match k {
        Kind::Active => ApiKind::Active,
        Kind::View => ApiKind::View,
        Kind::Committed => ApiKind::Committed,
    }
}

/// Our snapshot information in the crate's terms.
pub fn to_api(i: Info) -> ApiInfo {
    ApiInfo {
        kind: api_kind(i.kind),
        name: i.name,
        parent: i.parent,
        labels: i.labels,
        created_at: i.created.into(),
        updated_at: i.updated.into(),
    }
}

fn from_api(i: ApiInfo) -> Info {
    Info {
        kind: match i.kind {
            ApiKind::View => Kind::View,
            ApiKind::Committed => Kind::Committed,
            _ => Kind::Active,
        },
        name: i.name,
        parent: i.parent,
        labels: i.labels,
        created: i.created_at.into(),
        updated: i.updated_at.into(),
    }
}

fn api_mounts(m: Vec<Mount>) -> Vec<ApiMount> {
    m.into_iter()
        .map(|m| ApiMount {
            r#type: m.fs_type,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

type InfoStream = tokio_stream::Iter<std::vec::IntoIter<Result<ApiInfo, Error>>>;

#[tonic::async_trait]
impl<D: Devices> Snapshotter for Service<D> {
    type Error = Error;
    type InfoStream = InfoStream;

    async fn stat(&self, key: String) -> Result<ApiInfo, Error> {
        self.run("stat", key, |e, key| e.stat(key))
            .await
            .map(to_api)
    }

    async fn update(&self, info: ApiInfo, paths: Option<Vec<String>>) -> Result<ApiInfo, Error> {
        let info = from_api(info);
        let paths = paths.unwrap_or_default();
        let key = info.name.clone();
        self.run("update", key, move |e, _| e.update(info, &paths))
            .await
            .map(to_api)
    }

    async fn usage(&self, key: String) -> Result<Usage, Error> {
        let (bytes, inodes) = self.run("usage", key, |e, key| e.usage(key)).await?;
        Ok(Usage {
            size: i64::try_from(bytes).unwrap_or(i64::MAX),
            inodes: i64::try_from(inodes).unwrap_or(i64::MAX),
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<ApiMount>, Error> {
        self.run("mounts", key, |e, key| e.mounts_of(key))
            .await
            .map(api_mounts)
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<ApiMount>, Error> {
        log::debug!("prepare {key:?} from {parent:?}");
        self.run("prepare", key, move |e, key| {
            e.create(Kind::Active, key, &parent, labels)
        })
        .await
        .map(api_mounts)
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<ApiMount>, Error> {
        log::debug!("view {key:?} of {parent:?}");
        self.run("view", key, move |e, key| {
            e.create(Kind::View, key, &parent, labels)
        })
        .await
        .map(api_mounts)
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        log::debug!("commit {key:?} as {name:?}");
        self.run("commit", key, move |e, key| e.commit(&name, key, labels))
            .await
    }

    async fn remove(&self, key: String) -> Result<(), Error> {
        log::debug!("remove {key:?}");
        self.run("remove", key, |e, key| e.remove(key)).await
    }

    async fn clear(&self) -> Result<(), Error> {
        log::debug!("cleanup");
        self.run("cleanup", String::new(), |e, _| e.cleanup()).await
    }

    async fn list(&self, _snapshotter: String, filters: Vec<String>) -> Result<InfoStream, Error> {
        let infos = self
            .run("walk", String::new(), move |e, _| e.walk(&filters))
            .await?;
        let items: Vec<Result<ApiInfo, Error>> = infos.into_iter().map(|i| Ok(to_api(i))).collect();
        Ok(tokio_stream::iter(items))
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
