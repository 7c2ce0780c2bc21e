//! The gRPC layer end to end on the host: a server on a unix socket over
//! the fake device layer, and tonic's generated client.

use super::*;
use crate::fake::Fake;
use api::snapshots_client::SnapshotsClient;
use containerd_snapshots::api::snapshots::v1 as api;
use tonic::transport::{Channel, Endpoint};

async fn start(dir: &std::path::Path) -> SnapshotsClient<Channel> {
    let engine = Engine::open(Arc::new(Fake::default()), &dir.join("state")).unwrap();
    let sock = dir.join("s.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let svc = containerd_snapshots::server(Arc::new(Service::new(Arc::new(engine))));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(crate::authority::incoming(listener))
            .await
            .unwrap()
    });
    let channel = Endpoint::try_from("http://[::]:1")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            tokio::net::UnixStream::connect(sock.clone())
        }))
        .await
        .unwrap();
    SnapshotsClient::new(channel)
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(dir.path()).await;
    let prep = |key: &str, parent: &str| api::PrepareSnapshotRequest {
        snapshotter: "dmthin".into(),
        key: key.into(),
        parent: parent.into(),
        labels: labels(&[("l", "1")]),
    };
    let m = c
        .prepare(prep("ns/1/a", ""))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(
        (m[0].r#type.as_str(), m[0].source.as_str()),
        ("ext4", "/dev/fake/snap-1")
    );
    let err = c.prepare(prep("ns/1/a", "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let err = c.prepare(prep("x", "missing")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = c.prepare(prep("bad\0key", "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    c.commit(api::CommitSnapshotRequest {
        snapshotter: "dmthin".into(),
        name: "c".into(),
        key: "ns/1/a".into(),
        labels: labels(&[("l", "2")]),
    })
    .await
    .unwrap();
    let v = c
        .view(api::ViewSnapshotRequest {
            snapshotter: "dmthin".into(),
            key: "v".into(),
            parent: "c".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(v[0].options, vec!["ro"]);
    let info = c
        .stat(api::StatSnapshotRequest {
            snapshotter: "dmthin".into(),
            key: "c".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.kind, api::Kind::Committed as i32);
    assert_eq!(info.labels, labels(&[("l", "2")]));
    assert_eq!(info.created_at, info.updated_at);
    let mut upd = info.clone();
    upd.labels = labels(&[("x", "y")]);
    let out = c
        .update(api::UpdateSnapshotRequest {
            snapshotter: "dmthin".into(),
            info: Some(upd.clone()),
            update_mask: Some(prost_types_mask(&["labels.x"])),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(out.labels, labels(&[("l", "2"), ("x", "y")]));
    let err = c
        .update(api::UpdateSnapshotRequest {
            snapshotter: "dmthin".into(),
            info: Some(upd),
            update_mask: Some(prost_types_mask(&["parent"])),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut stream = c
        .list(api::ListSnapshotsRequest {
            snapshotter: "dmthin".into(),
            filters: vec!["kind==view".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    while let Some(resp) = stream.message().await.unwrap() {
        names.extend(resp.info.into_iter().map(|i| i.name));
    }
    assert_eq!(names, ["v"]);
    let err = c
        .list(api::ListSnapshotsRequest {
            snapshotter: "dmthin".into(),
            filters: vec!["kind=".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c
        .remove(api::RemoveSnapshotRequest {
            snapshotter: "dmthin".into(),
            key: "c".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = c
        .mounts(api::MountsRequest {
            snapshotter: "dmthin".into(),
            key: "c".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let u = c
        .usage(api::UsageRequest {
            snapshotter: "dmthin".into(),
            key: "c".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.size, u.inodes), (0, 0));
    for key in ["v", "c"] {
        c.remove(api::RemoveSnapshotRequest {
            snapshotter: "dmthin".into(),
            key: key.into(),
        })
        .await
        .unwrap();
    }
    c.cleanup(api::CleanupRequest {
        snapshotter: "dmthin".into(),
    })
    .await
    .unwrap();
}

fn prost_types_mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|s| s.to_string()).collect(),
    }
}

/// A Go client that dials the bare socket path sends that path as
/// `:authority`; h2 alone resets such a request with PROTOCOL_ERROR. Two
/// calls on one connection: the second's `:authority` is an index into the
/// client's HPACK table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_path_as_authority_gets_real_answers() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(dir.path()).await;
    c.prepare(api::PrepareSnapshotRequest {
        snapshotter: "dmthin".into(),
        key: "k1".into(),
        parent: String::new(),
        labels: HashMap::new(),
    })
    .await
    .unwrap();
    let sock = dir.path().join("s.sock");
    let authority = sock.to_str().unwrap().to_owned();
    assert!(
        tonic::codegen::http::uri::Authority::try_from(authority.as_str()).is_err(),
        "{authority} must be what h2 refuses"
    );
    let stat = |key: &str| {
        let request = api::StatSnapshotRequest {
            snapshotter: "dmthin".into(),
            key: key.into(),
        };
        (
            "/containerd.services.snapshots.v1.Snapshots/Stat",
            request.encode_to_vec(),
        )
    };
    let calls = [stat("k1"), stat("missing")];
    let answers = tokio::task::spawn_blocking(move || {
        crate::authority::tests::raw_unary_calls(&sock, &authority, &calls)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answers[0].grpc_status.as_deref(), Some("0"));
    let info = api::StatSnapshotResponse::decode(&answers[0].message[..])
        .unwrap()
        .info
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.kind),
        ("k1", api::Kind::Active as i32)
    );
    let not_found = (tonic::Code::NotFound as i32).to_string();
    assert_eq!(answers[1].grpc_status.as_deref(), Some(not_found.as_str()));
}

#[test]
fn failed_calls_are_logged_with_the_key() {
    let e = Error::new(Code::FailedPrecondition, "snapshot has children");
    assert_eq!(
        failed_call("remove", "ns/1/a b", &e),
        "remove key=\"ns/1/a b\": snapshot has children"
    );
    assert_eq!(
        failed_call("cleanup", "", &Error::internal("x")),
        "cleanup: x"
    );
}
