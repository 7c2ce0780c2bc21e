//! `dmthin-snapshotter`: a containerd snapshotter on a dmthin device set,
//! served as a proxy plugin (containerd.services.snapshots.v1) on a unix
//! socket.
//!
//! # Snapshots and devices
//!
//! Every snapshot is one thin device of the set, with the id `snap-<n>`
//! (a counter; keys never reach a path or a kernel name). A parentless
//! Prepare or View snapshots the template device `snap-base`, made once
//! from the set's base device with `lost+found` removed (no mkfs per
//! snapshot); a child snapshots its committed parent's device. Prepare and
//! View activate the device and return it as a mount (`ro` for views,
//! `nouuid` on xfs); containerd mounts it. Commit renames the snapshot and
//! deactivates the device unless the kernel's open count says it is still
//! open (mounted in any mount namespace). Remove uses deferred
//! removal, so a device still open goes when its last user closes it.
//!
//! # Metadata and crashes
//!
//! The records live in `<root>/snapshotter/snapshots/<device>.json`, one per
//! snapshot (key, kind, parent, labels, times, device, state, mapped bytes at
//! commit), each written through a temp file, fsync, rename and directory
//! fsync (see `store.rs`). The protocol:
//!
//! - Prepare/View: write the record as `creating` (the intent), create and
//!   activate the device, rewrite the record as `ready`, answer.
//! - Commit: one atomic rewrite turns the active record into the committed
//!   one (key → name, kind, labels, times, mapped bytes); then deactivate.
//! - Remove: rewrite the record as `removing`, remove the device, delete the
//!   record.
//! - Update: one atomic rewrite.
//!
//! At startup the snapshotter rolls back every `creating` record (removing
//! its device if it was made), finishes every `removing` one, drops a
//! `ready` record whose device is gone (logged), and removes every
//! `snap-<n>` device no record names. A SIGKILL at any point therefore
//! leaves neither a snapshot without its device nor a device without its
//! snapshot once the snapshotter is back. Cleanup (containerd's GC) removes
//! unreferenced `snap-<n>` devices and finishes deferred removals. The
//! template is made before its marker `template.json` is written; without
//! the marker, a leftover template device is removed and made again. Fail
//! points (feature `failpoints`, `DMTHIN_FAILPOINT=name` aborts there,
//! `name:error` injects an error the next step handles) sit between the
//! steps.
//!
//! # Concurrency
//!
//! Calls run on tokio's blocking pool. The snapshot tables sit behind one
//! mutex held only for look-ups and updates; a snapshot being changed is
//! marked busy (a concurrent change to it gets `Unavailable`), so calls on
//! different keys only wait for each other inside the device set, which
//! serialises its own operations.
//!
//! # Shutdown
//!
//! SIGTERM or SIGINT stops serving and removes the socket. The device set
//! is not shut down: containerd may still have snapshots mounted, so their
//! devices stay active and the pool stays up; the next start adopts them.
//! `--teardown-on-exit` (for tests) deactivates everything and removes the
//! pool as well.

mod args;
mod authority;
mod devices;
mod engine;
mod error;
mod failpoint;
#[cfg(test)]
mod fake;
mod filter;
mod logger;
mod service;
mod socket;
mod store;

use dmthin::deviceset::DeviceSet;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dmthin-snapshotter: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    if args.help {
        print!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    if args.version {
        let extra = if cfg!(feature = "failpoints") {
            " (with fail points)"
        } else {
            ""
        };
        println!("dmthin-snapshotter {}{extra}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = logger::init(args.log_level.as_deref()) {
        eprintln!("dmthin-snapshotter: {e}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: args::Args) -> Result<(), String> {
    socket::prepare(&args.socket)?;
    let recorded = DeviceSet::recorded_options(&args.root).map_err(|e| e.to_string())?;
    if recorded.is_some() {
        log::info!("adopting the device set at {}", args.root.display());
    } else {
        log::info!("creating a device set at {}", args.root.display());
    }
    let mut options = args.set.options(recorded)?;
    options.udev_sync = args.udev_sync;
    // A committed device still open elsewhere is left active rather than
    // retried for long.
    options.busy_retries = 3;
    let fs = options.filesystem.as_str().to_string();
    let set = DeviceSet::open(&args.root, options)
        .map_err(|e| format!("opening the device set at {}: {e}", args.root.display()))?;
    let dir = set.root().join("snapshotter");
    let set = Arc::new(set);
    let monitor = if args.autoextend {
        Some(start_monitor(set.clone())?)
    } else {
        None
    };
    let devs = devices::SetDevices::new(set, fs);
    let engine = engine::Engine::open(devs, &dir).map_err(|e| e.to_string())?;
    let engine = Arc::new(engine);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let served = rt.block_on(serve(engine.clone(), &args.socket));
    let _ = std::fs::remove_file(&args.socket);
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    if let Some((stop, thread)) = monitor {
        drop(stop);
        if thread.join().is_err() {
            log::error!("the pool monitor panicked");
        }
    }
    served?;
    if args.teardown {
        log::info!("tearing down the device set");
        engine.teardown().map_err(|e| format!("teardown: {e}"))?;
    }
    log::info!("stopped ({})", cpu_used());
    Ok(())
}

/// The CPU time this process and the tools it ran (mkfs, ...) used.
fn cpu_used() -> String {
    use nix::sys::resource::{getrusage, UsageWho};
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    match (
        getrusage(UsageWho::RUSAGE_SELF),
        getrusage(UsageWho::RUSAGE_CHILDREN),
    ) {
        (Ok(me), Ok(tools)) => format!(
            "CPU: {:.2} s user, {:.2} s system; tools it ran: {:.2} s user, {:.2} s system",
            secs(me.user_time()),
            secs(me.system_time()),
            secs(tools.user_time()),
            secs(tools.system_time())
        ),
        _ => "CPU time unknown".to_string(),
    }
}

/// The pool monitor (`--autoextend`) on its own thread; dropping the
/// returned stream stops it.
fn start_monitor(
    set: Arc<DeviceSet>,
) -> Result<(std::os::unix::net::UnixStream, std::thread::JoinHandle<()>), String> {
    let mut monitor = dmthin::deviceset::Monitor::for_set(set, None)
        .map_err(|e| format!("starting the pool monitor: {e}"))?;
    let o = *monitor.options();
    log::info!(
        "pool monitor: grow by {}% at {}% use",
        o.extend_percent,
        o.threshold_percent
    );
    let (stop, wake) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("starting the pool monitor: {e}"))?;
    let thread = std::thread::Builder::new()
        .name("pool-monitor".into())
        .spawn(move || {
            use std::os::fd::AsFd;
            if let Err(e) = monitor.run(wake.as_fd()) {
                log::error!("pool monitor stopped: {e}");
            }
        })
        .map_err(|e| format!("starting the pool monitor: {e}"))?;
    Ok((stop, thread))
}

async fn serve<D: devices::Devices>(
    engine: Arc<engine::Engine<D>>,
    path: &std::path::Path,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    // The handlers come first: a client may send SIGTERM as soon as the
    // socket answers.
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    socket::prepare(path)?;
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("binding {}: {e}", path.display()))?;
    socket::restrict(path)?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM: stopping"),
            _ = int.recv() => log::info!("SIGINT: stopping"),
        }
    };
    log::info!("serving on {}", path.display());
    let svc = containerd_snapshots::server(Arc::new(service::Service::new(engine)));
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(authority::incoming(listener), stop)
        .await
        .map_err(|e| format!("serving: {e}"))
}
