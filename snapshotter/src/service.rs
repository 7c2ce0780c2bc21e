//! containerd's snapshots service (containerd.services.snapshots.v1) over
//! the [`Engine`], through the `containerd-snapshots` crate's tonic server.
//! Every call runs on tokio's blocking pool, so a slow device-set call never
//! stalls the others.

use crate::devices::Devices;
use crate::engine::{Engine, Info, Mount};
use crate::error::Error;
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

    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Engine<D>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let engine = self.engine.clone();
        let out = tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| Error::internal(format!("{what}: worker failed: {e}")))?;
        if let Err(e) = &out {
            log::debug!("{what}: {e}");
        }
        out
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
        self.run("stat", move |e| e.stat(&key)).await.map(to_api)
    }

    async fn update(&self, info: ApiInfo, paths: Option<Vec<String>>) -> Result<ApiInfo, Error> {
        let info = from_api(info);
        let paths = paths.unwrap_or_default();
        self.run("update", move |e| e.update(info, &paths))
            .await
            .map(to_api)
    }

    async fn usage(&self, key: String) -> Result<Usage, Error> {
        let (bytes, inodes) = self.run("usage", move |e| e.usage(&key)).await?;
        Ok(Usage {
            size: i64::try_from(bytes).unwrap_or(i64::MAX),
            inodes: i64::try_from(inodes).unwrap_or(i64::MAX),
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<ApiMount>, Error> {
        self.run("mounts", move |e| e.mounts_of(&key))
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
        self.run("prepare", move |e| {
            e.create(Kind::Active, &key, &parent, labels)
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
        self.run("view", move |e| e.create(Kind::View, &key, &parent, labels))
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
        self.run("commit", move |e| e.commit(&name, &key, labels))
            .await
    }

    async fn remove(&self, key: String) -> Result<(), Error> {
        log::debug!("remove {key:?}");
        self.run("remove", move |e| e.remove(&key)).await
    }

    async fn clear(&self) -> Result<(), Error> {
        log::debug!("cleanup");
        self.run("cleanup", |e| e.cleanup()).await
    }

    async fn list(&self, _snapshotter: String, filters: Vec<String>) -> Result<InfoStream, Error> {
        let infos = self.run("walk", move |e| e.walk(&filters)).await?;
        let items: Vec<Result<ApiInfo, Error>> = infos.into_iter().map(|i| Ok(to_api(i))).collect();
        Ok(tokio_stream::iter(items))
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
