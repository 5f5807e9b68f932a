//! The control socket: how the `stent` CLI reaches the engine that holds a database file.
//!
//! Two engines never write one file, so while an application runs, the CLI cannot open the
//! file itself. Instead the running engine listens on a Unix socket beside the file
//! (`FILE.sock`, owner-only) and answers typed requests (`protocol`) by calling its own public
//! methods: reads return what the method returns, changes are applied as the application's own
//! calls would apply them (a replay's new input checked against the function's declared input
//! type, by the engine that declares it). Nothing received is run as code, and only the uid
//! owning the database file is served (`server`). The CLI's end is `client`.
//!
//! Not part of the stable API: the protocol serves the CLI bundled with the same version.

mod client;
mod protocol;
mod server;

use std::path::{Path, PathBuf};

pub use client::Client;
pub use protocol::{Hello, Request, PROTOCOL_VERSION};
pub(crate) use server::ControlSocket;

/// The permissions the socket gets: only its owner may connect.
pub const SOCKET_MODE: u32 = 0o600;

/// The socket beside database file `db`: the file's name with `.sock` added.
pub fn socket_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".sock");
    PathBuf::from(name)
}
