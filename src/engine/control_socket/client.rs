//! The CLI's end: connect to the engine that holds a database file and send it requests.
//!
//! The client checks the engine as the engine checks the client: the socket must be a socket
//! owned by the database file's owner, and the process answering on it must run as that uid
//! (its `SO_PEERCRED`). So a socket planted beside the file by someone else, in a shared
//! directory, is never sent a payload.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Hello, Reply, ReplyLine, Request, RequestLine, PROTOCOL_VERSION};
use super::socket_path;
use crate::error::{Error, Result};

/// How long to wait for the engine to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take (an export or a check of a large file takes long).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest reply read (a listing of every dead letter, say).
const REPLY_BYTES_MAX: u64 = 1 << 30;

/// A connection to the engine serving a database file's control socket.
#[derive(Debug)]
pub struct Client {
    stream: BufReader<UnixStream>,
    pid: u32,
}

fn unreachable(socket: &Path, why: impl std::fmt::Display) -> Error {
    Error::Remote {
        kind: "unreachable".into(),
        message: format!("cannot reach the engine at {}: {why}", socket.display()),
    }
}

impl Client {
    /// Connects to the engine holding `db`, through the socket beside it.
    pub async fn connect(db: &Path) -> Result<Client> {
        let socket = socket_path(db);
        let owner_uid = std::fs::metadata(db).map_err(|e| unreachable(&socket, e))?.uid();
        let meta = std::fs::symlink_metadata(&socket).map_err(|e| unreachable(&socket, e))?;
        if !meta.file_type().is_socket() {
            return Err(unreachable(&socket, "it is not a socket"));
        }
        if meta.uid() != owner_uid {
            return Err(unreachable(
                &socket,
                format!("it belongs to uid {}, the database to uid {owner_uid}", meta.uid()),
            ));
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&socket))
            .await
            .map_err(|_| unreachable(&socket, "no answer"))?
            .map_err(|e| unreachable(&socket, e))?;
        let peer_uid = stream.peer_cred().map_err(|e| unreachable(&socket, e))?.uid();
        if peer_uid != owner_uid {
            return Err(unreachable(
                &socket,
                format!("it is served by uid {peer_uid}, the database belongs to uid {owner_uid}"),
            ));
        }
        let mut client = Client { stream: BufReader::new(stream), pid: 0 };
        let hello: Hello = client.call(Request::Hello).await?;
        if hello.version != PROTOCOL_VERSION {
            return Err(unreachable(
                &socket,
                format!("the engine speaks protocol {}, this CLI {PROTOCOL_VERSION}", hello.version),
            ));
        }
        client.pid = hello.pid;
        Ok(client)
    }

    /// The pid of the engine's process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends one request and decodes its answer as `T` (what the same `Engine` method returns).
    pub async fn call<T: DeserializeOwned>(&mut self, request: Request) -> Result<T> {
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(request)).await.map_err(|_| Error::Remote {
            kind: "unreachable".into(),
            message: format!("the engine did not answer within {CALL_TIMEOUT:?}"),
        })?
    }

    async fn exchange<T: DeserializeOwned>(&mut self, request: Request) -> Result<T> {
        let broken = |e: std::io::Error| Error::Remote {
            kind: "unreachable".into(),
            message: format!("the connection to the engine broke: {e}"),
        };
        let mut line = serde_json::to_vec(&RequestLine { v: PROTOCOL_VERSION, request })
            .map_err(|e| Error::Internal(format!("cannot encode a request: {e}")))?;
        line.push(b'\n');
        // An engine that refuses the connection answers before it reads and hangs up, so the
        // write may fail while its answer waits to be read: read it either way.
        let written = self.stream.get_mut().write_all(&line).await;
        let mut reply = Vec::new();
        let read = (&mut self.stream).take(REPLY_BYTES_MAX).read_until(b'\n', &mut reply).await;
        if reply.last() != Some(&b'\n') {
            let closed = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the engine closed the connection");
            return Err(broken(written.err().or(read.err()).unwrap_or(closed)));
        }
        let reply: ReplyLine = serde_json::from_slice(&reply).map_err(|e| Error::Remote {
            kind: "failed".into(),
            message: format!("the engine sent a malformed reply: {e}"),
        })?;
        match reply.reply {
            Reply::Error(e) => Err(Error::Remote { kind: e.kind, message: e.message }),
            Reply::Ok(value) => serde_json::from_value(value).map_err(|e| Error::Remote {
                kind: "failed".into(),
                message: format!("the engine's reply does not decode: {e}"),
            }),
        }
    }
}
