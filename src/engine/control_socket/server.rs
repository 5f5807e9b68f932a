//! The engine's end: a Unix socket beside the database file, served while the engine runs.
//!
//! Who may talk to it is decided twice: the socket is made owner-only (0600) right after it
//! is bound, and every connection's peer credentials (`SO_PEERCRED`, from the kernel) must
//! show the uid that owns the database file, or the connection is refused before a request is
//! read. The first covers the common case; the second also covers the moment between bind
//! and chmod and a socket whose mode someone widened.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::protocol::{Hello, Reply, ReplyError, ReplyLine, Request, RequestLine, PROTOCOL_VERSION};
use super::{socket_path, SOCKET_MODE};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Connections served at once; more are told the engine is busy.
const CONNECTIONS_MAX: usize = 16;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The socket a running engine serves; dropped (with the file removed) by `stop`.
pub(crate) struct ControlSocket {
    path: PathBuf,
    accept: tokio::task::AbortHandle,
}

impl ControlSocket {
    /// Binds the socket beside `db` and serves `engine` on it. The caller holds the file's
    /// lock, so a socket found at the path is a dead engine's and is replaced; anything else
    /// found there is left alone and the engine runs without a socket.
    pub(crate) fn start(engine: Engine, db: &Path, runtime: &tokio::runtime::Handle) -> io::Result<ControlSocket> {
        let path = socket_path(db);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket; it was left alone", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let owner_uid = std::fs::metadata(db)?.uid();
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE)) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        listener.set_nonblocking(true)?;
        let _entered = runtime.enter();
        let listener = UnixListener::from_std(listener)?;
        let served = Served { engine, owner_uid, db: db.display().to_string() };
        let accept = runtime.spawn(accept_loop(listener, Arc::new(served))).abort_handle();
        tracing::debug!(socket = %path.display(), "control socket listening");
        Ok(ControlSocket { path, accept })
    }

    /// Stops accepting and removes the socket file (before the engine lets go of the database
    /// file, so a successor never has its fresh socket removed by us).
    pub(crate) fn stop(self) {
        self.accept.abort();
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct Served {
    engine: Engine,
    owner_uid: u32,
    db: String,
}

/// Whether a peer may use the socket: only the uid that owns the database file.
pub(crate) fn authorized(peer_uid: u32, owner_uid: u32) -> bool {
    peer_uid == owner_uid
}

async fn accept_loop(listener: UnixListener, served: Arc<Served>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning on the error.
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let served = served.clone();
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    connection(stream, &served).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let busy = ReplyError {
                        kind: "failed".into(),
                        message: "the engine is serving too many CLI connections; try again".into(),
                    };
                    let _ = write_reply(&mut BufReader::new(stream), Err(busy)).await;
                });
            }
        }
    }
}

async fn connection(stream: UnixStream, served: &Served) {
    let peer_uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "control socket: no peer credentials; connection refused");
            return;
        }
    };
    let mut stream = BufReader::new(stream);
    if !authorized(peer_uid, served.owner_uid) {
        tracing::warn!(
            peer_uid,
            owner_uid = served.owner_uid,
            "control socket: refused a connection from another user"
        );
        let refused = ReplyError {
            kind: "refused".into(),
            message: format!(
                "refused: uid {peer_uid} does not own {} (uid {}); only its owner may control the engine",
                served.db, served.owner_uid
            ),
        };
        let _ = write_reply(&mut stream, Err(refused)).await;
        return;
    }
    let line_max = served.engine.inner.payload_bytes_max + super::protocol::REQUEST_OVERHEAD_BYTES_MAX;
    loop {
        let mut line = Vec::new();
        let mut bounded = (&mut stream).take(line_max + 1);
        match tokio::time::timeout(IDLE_TIMEOUT, bounded.read_until(b'\n', &mut line)).await {
            Ok(Ok(0)) | Err(_) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "control socket: read failed");
                return;
            }
        }
        if line.last() != Some(&b'\n') {
            // Longer than any request can be, or cut off: answer and hang up (the rest of an
            // oversized line cannot be told from a next request).
            let message = if line.len() as u64 > line_max {
                format!("request longer than {line_max} bytes")
            } else {
                "request not terminated by a newline".to_string()
            };
            let _ = write_reply(&mut stream, Err(ReplyError { kind: "bad_request".into(), message })).await;
            return;
        }
        let reply = match serde_json::from_slice::<RequestLine>(&line) {
            Err(e) => Err(ReplyError { kind: "bad_request".into(), message: format!("malformed request: {e}") }),
            Ok(r) if r.v != PROTOCOL_VERSION => Err(ReplyError {
                kind: "bad_request".into(),
                message: format!("protocol version {} is not served (this engine speaks {PROTOCOL_VERSION})", r.v),
            }),
            Ok(r) => handle(&served.engine, r.request).await.map_err(|e| ReplyError::of(&e)),
        };
        if write_reply(&mut stream, reply).await.is_err() {
            return;
        }
    }
}

async fn write_reply(
    stream: &mut BufReader<UnixStream>,
    reply: std::result::Result<serde_json::Value, ReplyError>,
) -> io::Result<()> {
    let reply = match reply {
        Ok(value) => Reply::Ok(value),
        Err(e) => Reply::Error(e),
    };
    let line = ReplyLine { v: PROTOCOL_VERSION, reply };
    let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.get_mut().write_all(&bytes).await
}

/// Runs one request on the engine, through the same public methods an application calls.
async fn handle(engine: &Engine, request: Request) -> Result<serde_json::Value> {
    match request {
        Request::Hello => value(Hello { pid: std::process::id(), version: PROTOCOL_VERSION }),
        Request::ListExecutions { filter, page } => blocking(engine, move |e| e.list_executions(&filter, &page)).await,
        Request::Execution { id } => blocking(engine, move |e| e.state_of(id)).await,
        Request::Steps { id } => blocking(engine, move |e| e.steps(id)).await,
        Request::RunningTasks => blocking(engine, |e| e.running_tasks()).await,
        Request::Task { id } => blocking(engine, move |e| e.task(id)).await,
        Request::CountsByState => blocking(engine, |e| e.counts_by_state()).await,
        Request::QueueDepth { queue } => blocking(engine, move |e| e.queue_depth(&queue)).await,
        Request::DeadLetterCount => blocking(engine, |e| e.dead_letter_count()).await,
        Request::DeadLetters { limit, function } => {
            blocking(engine, move |e| {
                Ok(e.dead_letters(u32::MAX)?
                    .into_iter()
                    .filter(|l| function.as_ref().is_none_or(|f| &l.function == f))
                    .take(limit as usize)
                    .collect::<Vec<_>>())
            })
            .await
        }
        Request::DeadLetter { id } => blocking(engine, move |e| e.dead_letter(id)).await,
        Request::ReplayDeadLetter { id, input: None } => value(engine.replay_dead_letter(id).await?),
        Request::ReplayDeadLetter { id, input: Some(input) } => {
            value(engine.replay_dead_letter_with_input(id, &input).await?)
        }
        Request::DiscardDeadLetter { id } => value(engine.discard_dead_letter(id).await?),
        Request::Cancel { id } => value(engine.cancel(id).await?),
        Request::Signal { id, name, payload } => value(engine.send_signal(id, &name, &payload).await?),
        Request::Cleanup { older_than_ms, parts, dry_run: true } => {
            blocking(engine, move |e| e.cleanup_preview_parts(Duration::from_millis(older_than_ms), parts)).await
        }
        Request::Cleanup { older_than_ms, parts, dry_run: false } => {
            value(engine.cleanup_parts(Duration::from_millis(older_than_ms), parts).await?)
        }
        Request::Check => blocking(engine, |e| e.check()).await,
        Request::Export { path } if !path.is_absolute() => Err(Error::Remote {
            kind: "bad_request".into(),
            message: format!("export path {} is not absolute", path.display()),
        }),
        Request::Export { path } => value(engine.export(&path).await?),
        Request::Schedules => blocking(engine, |e| e.schedules().list()).await,
        Request::ConcurrencyKeys => blocking(engine, |e| e.concurrency_keys()).await,
        Request::Schedule { name } => blocking(engine, move |e| e.schedules().get(&name)).await,
        Request::ScheduleFires { name, limit } => {
            blocking(engine, move |e| e.schedules().fires(&name, limit as usize)).await
        }
        Request::PauseSchedule { name } => value(engine.schedules().pause(&name).await?),
        Request::ResumeSchedule { name } => value(engine.schedules().resume(&name).await?),
        Request::TriggerSchedule { name } => value(engine.schedules().trigger(&name).await?),
        Request::DeleteSchedule { name } => value(engine.schedules().delete(&name).await?),
    }
}

fn value<T: serde::Serialize>(v: T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Internal(format!("cannot encode a reply: {e}")))
}

/// A read runs off the runtime's workers: a scan of a large file must not stall attempts.
async fn blocking<T, F>(engine: &Engine, read: F) -> Result<serde_json::Value>
where
    T: serde::Serialize,
    F: FnOnce(&Engine) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let engine = engine.clone();
    let read = tokio::task::spawn_blocking(move || read(&engine).and_then(value));
    read.await.map_err(|e| Error::Internal(format!("a control socket read panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::authorized;

    #[test]
    fn only_the_files_owner_is_authorized() {
        assert!(authorized(1000, 1000));
        assert!(!authorized(0, 1000), "root is not the owner either: it may `sudo -u` the owner");
        assert!(!authorized(65534, 0));
    }
}
