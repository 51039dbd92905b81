//! The embedded broker (`core::broker`), a real `Broker` on 127.0.0.1 fed
//! arbitrary bytes by one TCP client: CONNECT (with or without a users file),
//! every client frame, transactions, acks, temp queues, limits.
//!
//! Input: flags byte, then the bytes the client sends. Flags: bit 0 requires
//! `guest:guest`, bit 1 small limits (frame 4 KiB, queue 8 messages, outbox
//! 16 KiB, so the bound paths are reached), bit 2 the default heart-beat
//! offer (else none). Each input gets a fresh broker,
//! so a finding replays alone. The client writes the bytes, half-closes and
//! reads until the broker closes; the session must end (no hang) and must not
//! panic (libFuzzer's panic hook aborts on a panic in any broker task).
#![no_main]

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::stomp::Limits;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// How long one session may take to end after the client's half-close; far above any legitimate case.
const SESSION_DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else { return };
    // Short waits: a publisher paused by a full queue or outbox waits `slow_consumer_timeout` by design.
    let mut config = BrokerConfig { heartbeat_ms: (0, 0), slow_consumer_timeout: Duration::from_millis(200), handshake_timeout: Duration::from_secs(2), ..BrokerConfig::default() };
    if flags & 1 != 0 {
        config.users = Some(HashMap::from([("guest".to_owned(), "guest".to_owned())]));
    }
    if flags & 4 != 0 {
        config.heartbeat_ms = BrokerConfig::default().heartbeat_ms;
    }
    if flags & 2 != 0 {
        config.limits = Limits { max_frame_size: 4096, max_headers: 16, max_header_len: 512 };
        config.max_queue_len = 8;
        config.max_outbox_bytes = 16 * 1024;
    }
    runtime().block_on(async move {
        let broker = Broker::start(config).await.expect("start the broker");
        let stream = TcpStream::connect(broker.local_addr()).await.expect("connect to the broker");
        let (mut rd, mut wr) = stream.into_split();
        let write = async move {
            // The broker may close first (ERROR on bad input): a failed write is expected then.
            let _ = wr.write_all(bytes).await;
            let _ = wr.shutdown().await;
        };
        let read = async move {
            let mut sink = vec![0u8; 64 * 1024];
            loop {
                match rd.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let session = async { tokio::join!(write, read) };
        if tokio::time::timeout(SESSION_DEADLINE, session).await.is_err() {
            panic!("the broker did not close the session within {SESSION_DEADLINE:?} of the client's half-close");
        }
        broker.shutdown().await;
    });
});
