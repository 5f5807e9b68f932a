//! The control socket's protocol from a raw client: bad input gets one clear error line and
//! changes nothing, the engine keeps serving after it, and a request names data only (there
//! is no request that runs code). The CLI's use of the socket is in cli_beside_engine.rs.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{json, Value};
use stent::control_socket::{socket_path, Client, Request};
use stent::{Engine, ExecutionState, Workflow};

const AWAIT_GO: Workflow<u32, String> = Workflow::new("await_go");

async fn await_go(ctx: stent::Ctx, _n: u32) -> stent::Result<String> {
    ctx.wait_for_signal::<String>("go").await
}

fn open(db: &Path) -> Engine {
    Engine::builder().path(db).workflow(AWAIT_GO, await_go).open().unwrap()
}

/// Sends raw bytes on a fresh connection and reads the reply lines until the engine stops.
fn raw(db: &Path, bytes: &[u8]) -> Vec<Value> {
    let mut stream = UnixStream::connect(socket_path(db)).unwrap();
    // The engine may hang up before reading all of an oversized request.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    BufReader::new(stream)
        .lines()
        .map_while(|l| l.ok())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {l}")))
        .collect()
}

fn error_kind(reply: &Value) -> &str {
    reply["error"]["kind"].as_str().unwrap_or_else(|| panic!("not an error: {reply}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_one_error_each_and_the_engine_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.stent");
    let engine = open(&db);
    let pool = engine.serve(stent::WorkerOptions::default()).unwrap();
    let waiting = engine.dispatch(AWAIT_GO, &1).await.unwrap();

    let replies = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            let lines: [&[u8]; 6] = [
                b"not json\n",
                b"{\"v\":1,\"request\":\"run_shell\"}\n",
                b"{\"v\":1,\"request\":{\"cancel\":{\"id\":1,\"also\":true}}}\n",
                b"{\"v\":99,\"request\":\"hello\"}\n",
                b"{\"v\":1,\"request\":{\"execution\":{\"id\":424242}}}\n",
                b"{\"v\":1,\"request\":{\"export\":{\"path\":\"relative.export\"}}}\n",
            ];
            // Every line on one connection: each is answered in order.
            raw(&db, &lines.concat())
        }
    })
    .await
    .unwrap();
    let kinds: Vec<&str> = replies.iter().map(error_kind).collect();
    assert_eq!(kinds, ["bad_request", "bad_request", "bad_request", "bad_request", "not_found", "bad_request"]);
    assert!(replies[1]["error"]["message"].as_str().unwrap().contains("run_shell"), "{}", replies[1]);
    assert!(replies[3]["error"]["message"].as_str().unwrap().contains("protocol version 99"), "{}", replies[3]);
    assert!(!dir.path().join("relative.export").exists());

    // A line longer than any request may be is refused, and the connection closed.
    let db2 = db.clone();
    let huge = tokio::task::spawn_blocking(move || raw(&db2, &vec![b'x'; 2 * 1024 * 1024 + 1])).await.unwrap();
    assert_eq!(huge.len(), 1);
    assert_eq!(error_kind(&huge[0]), "bad_request");

    // None of it changed anything, and the engine still answers.
    assert_eq!(waiting.0, 1, "the refused cancel named this execution");
    assert_ne!(engine.state_of(waiting).unwrap().state, ExecutionState::Cancelled);
    let mut client = Client::connect(&db).await.unwrap();
    assert_eq!(client.pid(), std::process::id());
    let counts: Vec<(ExecutionState, u64)> = client.call(Request::CountsByState).await.unwrap();
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 1);
    let _: () = client.call(Request::Signal { id: waiting, name: "go".into(), payload: json!("ok") }).await.unwrap();
    assert_eq!(engine.wait_for(AWAIT_GO, waiting, Some(std::time::Duration::from_secs(20))).await.unwrap(), "ok");
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_engine_leaves_no_socket_and_a_client_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.stent");
    let engine = open(&db);
    engine.close().await.unwrap();
    let err = Client::connect(&db).await.unwrap_err();
    assert!(matches!(&err, stent::Error::Remote { kind, .. } if kind == "unreachable"), "{err:?}");
    assert!(err.to_string().contains("cannot reach the engine"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn something_else_at_the_socket_path_is_left_alone_and_the_engine_runs_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.stent");
    std::fs::write(socket_path(&db), b"user data").unwrap();
    let engine = open(&db);
    engine.dispatch(AWAIT_GO, &1).await.unwrap();
    assert_eq!(std::fs::read(socket_path(&db)).unwrap(), b"user data");
    let err = Client::connect(&db).await.unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    engine.close().await.unwrap();
    assert_eq!(std::fs::read(socket_path(&db)).unwrap(), b"user data");
}

#[test]
fn an_engine_on_a_runtime_without_io_runs_without_a_socket() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.stent");
    runtime.block_on(async {
        let engine = open(&db);
        assert!(!socket_path(&db).exists(), "a socket no one can serve");
        let id = engine.dispatch(AWAIT_GO, &1).await.unwrap();
        assert_eq!(engine.state_of(id).unwrap().state, ExecutionState::Pending);
        engine.close().await.unwrap();
    });
}
