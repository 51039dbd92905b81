//! The client's one ordered send path: plain and receipted SENDs, ACKs and
//! SUBSCRIBEs from several tasks reach the broker in each task's order, a
//! receipted SEND neither overtakes nor is overtaken, and a broker that stops
//! reading makes `send` wait instead of growing memory.
//!
//! Order is checked twice: on the bytes the embedded broker receives (a
//! recording proxy in front of it decodes them) and on what the broker delivers.

use bytes::BytesMut;
use deploykit::broker::{Broker, BrokerConfig, BrokerHandle};
use deploykit::stomp::{AckMode, Client, ClientConfig, Command, Frame, Headers, HeartbeatConfig, Incoming, SendOptions, StompCodec, SubscribeOptions, Version};
use futures_util::FutureExt;
use proptest::prelude::*;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

const WAIT: Duration = Duration::from_secs(30);

/// A proxy in front of a broker that decodes and keeps every frame the client sends, in wire order.
struct Recorder {
    addr: SocketAddr,
    frames: Arc<Mutex<Vec<Frame>>>,
}

impl Recorder {
    /// Starts forwarding one client connection at a time to `upstream`.
    async fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let log = frames.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(upstream).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut br, mut bw) = broker.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut br, &mut cw).await;
                });
                let log = log.clone();
                tokio::spawn(async move {
                    let mut codec = StompCodec::new(Version::V1_2);
                    let mut pending = BytesMut::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(item) = codec.decode(&mut pending).expect("the client sends valid STOMP") {
                            if let Incoming::Frame(f) = item {
                                log.lock().unwrap().push(f);
                            }
                        }
                        if bw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Recorder { addr, frames }
    }

    /// The client URL for this proxy.
    fn url(&self) -> String {
        format!("stomp://{}", self.addr)
    }

    /// A copy of the frames seen so far.
    fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap().clone()
    }
}

/// One step of a task.
#[derive(Debug, Clone, Copy)]
enum Op {
    Plain,
    Receipted,
    Ack,
    Subscribe,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![4 => Just(Op::Plain), 2 => Just(Op::Receipted), 2 => Just(Op::Ack), 1 => Just(Op::Subscribe)]
}

/// A broker big enough for the tests, with the recorder in front of it.
async fn broker_and_recorder() -> (BrokerHandle, Recorder) {
    let broker = Broker::start(BrokerConfig { max_queue_len: 1_000_000, max_outbox_bytes: 64 * 1024 * 1024, ..BrokerConfig::default() }).await.unwrap();
    let recorder = Recorder::start(broker.local_addr()).await;
    (broker, recorder)
}

/// A SEND's or SUBSCRIBE's tag, or an ACK's id, as the task expects to see it on the wire.
fn tagged(task: usize, seq: usize) -> Headers {
    [("x-task", task.to_string()), ("x-seq", seq.to_string())].into_iter().collect()
}

/// Runs one task's steps through `client`; returns what the broker must see from it, in order.
async fn run_task(client: Client, task: usize, ops: Vec<Op>, yields: Vec<bool>) -> Vec<String> {
    let acks = ops.iter().filter(|o| matches!(o, Op::Ack)).count();
    let ack_queue = format!("/queue/acks-{task}");
    let mut expected = Vec::new();
    // Messages to acknowledge, received before the steps start.
    let mut sub = client.subscribe(&ack_queue, SubscribeOptions { ack: AckMode::ClientIndividual, ..SubscribeOptions::default() }).await.unwrap();
    for _ in 0..acks {
        client.send(&ack_queue, "to ack").await.unwrap();
    }
    let mut inbox = Vec::new();
    for _ in 0..acks {
        inbox.push(tokio::time::timeout(WAIT, sub.recv()).await.expect("a message to ack").unwrap());
    }
    let mut inbox = inbox.into_iter();
    let mut keep = Vec::new();
    for (seq, op) in ops.into_iter().enumerate() {
        match op {
            Op::Plain | Op::Receipted => {
                let opts = SendOptions { headers: tagged(task, seq), receipt: matches!(op, Op::Receipted), ..SendOptions::default() };
                client.send_with(&format!("/queue/order-{task}"), seq.to_string(), opts).await.unwrap();
                expected.push(format!("send {seq}"));
            }
            Op::Ack => {
                let msg = inbox.next().unwrap();
                sub.ack(&msg).await.unwrap();
                expected.push(format!("ack {}", msg.header("ack").unwrap()));
            }
            Op::Subscribe => {
                let opts = SubscribeOptions { headers: tagged(task, seq), ..SubscribeOptions::default() };
                keep.push(client.subscribe(&format!("/topic/order-{task}-{seq}"), opts).await.unwrap());
                expected.push(format!("subscribe {seq}"));
            }
        }
        if yields.get(seq).copied().unwrap_or(false) {
            tokio::task::yield_now().await;
        }
    }
    expected
}

/// What the broker saw from `task`, in wire order, in the form `run_task` expects.
fn seen(frames: &[Frame], task: usize, acks: &[String]) -> Vec<String> {
    let t = task.to_string();
    let mut out = Vec::new();
    for f in frames {
        match f.command {
            Command::Send | Command::Subscribe if f.get("x-task") == Some(&t) => {
                let kind = if f.command == Command::Send { "send" } else { "subscribe" };
                out.push(format!("{kind} {}", f.get("x-seq").unwrap()));
            }
            Command::Ack => {
                let line = format!("ack {}", f.get("id").unwrap_or_default());
                if acks.contains(&line) {
                    out.push(line);
                }
            }
            _ => {}
        }
    }
    out
}

/// Receives `count` messages from `queue` and returns their `x-seq` values in delivery order.
async fn delivered(client: &Client, queue: &str, count: usize) -> Vec<usize> {
    let mut sub = client.subscribe(queue, SubscribeOptions::default()).await.unwrap();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("every message delivered").unwrap();
        out.push(m.header("x-seq").unwrap().parse().unwrap());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random interleavings of plain and receipted SENDs, ACKs and SUBSCRIBEs from
    /// several tasks on one client: the broker sees each task's steps in its order.
    #[test]
    fn each_tasks_frames_reach_the_broker_in_its_order(tasks in prop::collection::vec((prop::collection::vec(op(), 1..40), prop::collection::vec(any::<bool>(), 40)), 1..5)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let (broker, recorder) = broker_and_recorder().await;
            let client = Client::connect(ClientConfig::new(&recorder.url()).unwrap()).await.unwrap();
            let handles: Vec<_> = tasks.iter().cloned().enumerate().map(|(t, (ops, yields))| tokio::spawn(run_task(client.clone(), t, ops, yields))).collect();
            let mut expected = Vec::new();
            for h in handles {
                expected.push(h.await.unwrap());
            }
            // A receipted SEND after everything: once it is confirmed, the broker has all of it.
            client.send_with("/queue/fence", "", SendOptions { receipt: true, ..SendOptions::default() }).await.unwrap();
            let frames = recorder.frames();
            for (t, exp) in expected.iter().enumerate() {
                let acks: Vec<String> = exp.iter().filter(|l| l.starts_with("ack ")).cloned().collect();
                assert_eq!(&seen(&frames, t, &acks), exp, "task {t}");
                let sends = exp.iter().filter(|l| l.starts_with("send ")).count();
                let order = delivered(&client, &format!("/queue/order-{t}"), sends).await;
                assert!(order.windows(2).all(|w| w[0] < w[1]), "task {t}: the broker delivered {order:?}");
            }
            client.disconnect().await.unwrap();
            broker.shutdown().await;
        });
    }
}

/// Another task beside the one under test: `count` plain SENDs to `/queue/noise`, tagged as task 9.
fn noise(client: &Client, count: usize) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        for i in 0..count {
            client.send_with("/queue/noise", "n", SendOptions { headers: tagged(9, i), ..SendOptions::default() }).await.unwrap();
        }
    })
}

/// One receipted SEND among 10 000 plain ones (with another task sending beside
/// it): it is neither overtaken by a later plain SEND nor overtakes an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipted_send_among_ten_thousand_keeps_its_place() {
    let (broker, recorder) = broker_and_recorder().await;
    // Room for the whole backlog: a subscription whose buffer is full stops the reading
    // of the socket, so the SUBSCRIBE's RECEIPT (queued behind the backlog) would wait.
    let mut config = ClientConfig::new(&recorder.url()).unwrap();
    config.subscription_buffer = 20_000;
    let client = Client::connect(config).await.unwrap();
    let noise = noise(&client, 10_000);
    const N: usize = 10_000;
    const AT: usize = 5_000;
    for seq in 0..=N {
        let opts = SendOptions { headers: tagged(0, seq), receipt: seq == AT, ..SendOptions::default() };
        client.send_with("/queue/ten-thousand", "x", opts).await.unwrap();
        if seq == AT {
            // Confirmed: the broker has every earlier SEND queued already.
            let frames = recorder.frames();
            let before: Vec<usize> = frames.iter().filter(|f| f.get("x-task") == Some("0")).map(|f| f.get("x-seq").unwrap().parse().unwrap()).collect();
            assert_eq!(before, (0..=AT).collect::<Vec<_>>(), "everything up to the receipted SEND, in order, and nothing after it");
        }
    }
    noise.await.unwrap();
    client.send_with("/queue/fence", "", SendOptions { receipt: true, ..SendOptions::default() }).await.unwrap();
    let frames = recorder.frames();
    let sends: Vec<&Frame> = frames.iter().filter(|f| f.get("x-task") == Some("0")).collect();
    assert_eq!(sends.len(), N + 1);
    for (i, f) in sends.iter().enumerate() {
        assert_eq!(f.get("x-seq").unwrap().parse::<usize>().unwrap(), i);
        assert_eq!(f.get("receipt").is_some(), i == AT, "only SEND {AT} carries a receipt");
    }
    let order = delivered(&client, "/queue/ten-thousand", N + 1).await;
    assert_eq!(order, (0..=N).collect::<Vec<_>>());
    client.disconnect().await.unwrap();
    broker.shutdown().await;
}

/// Accepts one connection, answers CONNECT without heart-beats, then reads nothing until `go` fires.
async fn deaf_broker(listener: TcpListener, go: tokio::sync::oneshot::Receiver<()>) -> usize {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut codec = StompCodec::new(Version::V1_2);
    let mut pending = BytesMut::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "client closed during CONNECT");
        pending.extend_from_slice(&buf[..n]);
        if let Some(Incoming::Frame(f)) = codec.decode(&mut pending).unwrap() {
            assert_eq!(f.command, Command::Connect);
            break;
        }
    }
    sock.write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0").await.unwrap();
    let _ = go.await;
    // Now read everything, counting SENDs, until the client disconnects.
    let mut sends = 0;
    loop {
        while let Some(item) = codec.decode(&mut pending).unwrap() {
            if let Incoming::Frame(f) = item {
                match f.command {
                    Command::Send => sends += 1,
                    Command::Disconnect => {
                        let receipt = f.get("receipt").unwrap_or_default().to_owned();
                        let _ = sock.write_all(format!("RECEIPT\nreceipt-id:{receipt}\n\n\0").as_bytes()).await;
                        return sends;
                    }
                    _ => {}
                }
            }
        }
        let n = sock.read(&mut buf).await.unwrap();
        if n == 0 {
            return sends;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A client (64 KiB send buffer, no heart-beats) of a [`deaf_broker`]; the sender
/// makes that broker read again, and the task returns the SENDs it counted.
async fn deaf_client() -> (Client, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("stomp://{}", listener.local_addr().unwrap());
    let (go, wait) = tokio::sync::oneshot::channel();
    let deaf = tokio::spawn(deaf_broker(listener, wait));
    let mut config = ClientConfig::new(&url).unwrap().heartbeat(HeartbeatConfig::off());
    config.send_buffer_bytes = 64 * 1024;
    (Client::connect(config).await.unwrap(), go, deaf)
}

/// A broker that stops reading: `send` waits once the kernel's socket buffers and
/// the client's bounded buffer are full, and goes on when the broker reads again.
#[tokio::test]
async fn a_broker_that_stops_reading_makes_send_wait() {
    let (client, go, deaf) = deaf_client().await;
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    // Send until a SEND cannot complete; the connection task writes between sends.
    let mut sent = 0usize;
    let blocked = loop {
        let mut send = Box::pin(client.send("/queue/deaf", body.clone()));
        match (&mut send).now_or_never() {
            Some(r) => r.unwrap(),
            None => break send,
        }
        sent += 1;
        // Far more than any socket buffer: memory would be growing without bound.
        assert!(sent < 256 * 1024, "send never waited: {sent} MiB queued");
        tokio::task::yield_now().await;
    };
    assert!(sent > 64, "64 KiB of buffer take at least 64 messages, sent {sent}");
    // Still waiting after the connection task has had every chance to drain.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let mut blocked = blocked;
    assert!((&mut blocked).now_or_never().is_none(), "send waits while the broker does not read");
    drop(blocked);
    let blocked = Box::pin(client.send("/queue/deaf", body.clone()));
    // The broker reads again: the waiting send completes.
    go.send(()).unwrap();
    tokio::time::timeout(WAIT, blocked).await.expect("send goes on once the broker reads").unwrap();
    drop(body);
    client.disconnect().await.unwrap();
    let received = tokio::time::timeout(WAIT, deaf).await.unwrap().unwrap();
    assert_eq!(received, sent + 1, "every completed SEND reached the broker");
}

/// `send_many` from one task while another sends one by one, through a buffer far
/// smaller than the batch (so it waits for room between runs): its SENDs reach the
/// broker in order, interleaved but never reordered, only the last carries the
/// receipt, and once that is confirmed the broker has every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_keeps_its_order_waits_for_room_and_confirms_with_the_last() {
    let (broker, recorder) = broker_and_recorder().await;
    let mut config = ClientConfig::new(&recorder.url()).unwrap();
    config.send_buffer_bytes = 4 * 1024;
    config.subscription_buffer = 10_000;
    let client = Client::connect(config).await.unwrap();
    let noise = noise(&client, 2_000);
    const N: usize = 3_000;
    let bodies = (0..N).map(|i| bytes::Bytes::from(format!("{i:0>200}")));
    let opts = SendOptions { headers: tagged(0, 0), receipt: true, ..SendOptions::default() };
    client.send_many("/queue/many", bodies, &opts).await.unwrap();
    // Confirmed by the last SEND's receipt: every one is at the broker already.
    let frames = recorder.frames();
    let ours: Vec<&Frame> = frames.iter().filter(|f| f.command == Command::Send && f.get("destination") == Some("/queue/many")).collect();
    assert_eq!(ours.len(), N, "all of them before the receipt came");
    for (i, f) in ours.iter().enumerate() {
        assert_eq!(std::str::from_utf8(&f.body).unwrap().parse::<usize>().unwrap(), i, "SEND {i} in its place");
        assert_eq!(f.get("x-task"), Some("0"), "the options' headers on every SEND");
        assert_eq!(f.get("receipt").is_some(), i == N - 1, "only the last asks for a receipt");
    }
    noise.await.unwrap();
    let mut sub = client.subscribe("/queue/many", SubscribeOptions::default()).await.unwrap();
    for i in 0..N {
        let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("every message delivered").unwrap();
        assert_eq!(std::str::from_utf8(&m.body).unwrap().parse::<usize>().unwrap(), i);
    }
    // Nothing to send is no error and sends nothing.
    client.send_many("/queue/many", Vec::<bytes::Bytes>::new(), &opts).await.unwrap();
    client.disconnect().await.unwrap();
    assert_eq!(recorder.frames().iter().filter(|f| f.command == Command::Send && f.get("destination") == Some("/queue/many")).count(), N);
    broker.shutdown().await;
}

/// `send_many` of far more than the socket buffers and the client's buffer hold, to
/// a broker that stops reading: it waits instead of queueing it all, and finishes
/// once the broker reads again, with every SEND delivered.
#[tokio::test]
async fn send_many_to_a_broker_that_stops_reading_waits() {
    let (client, go, deaf) = deaf_client().await;
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    // 40 MiB: more than loopback's socket buffers (a few MiB each way) can take.
    const N: usize = 40 * 1024;
    let opts = SendOptions::default();
    let mut many = Box::pin(client.send_many("/queue/deaf", std::iter::repeat_n(body, N), &opts));
    for _ in 0..1_000 {
        assert!((&mut many).now_or_never().is_none(), "send_many finished although the broker reads nothing");
        tokio::task::yield_now().await;
    }
    go.send(()).unwrap();
    tokio::time::timeout(WAIT, many).await.expect("send_many goes on once the broker reads").unwrap();
    client.disconnect().await.unwrap();
    let received = tokio::time::timeout(WAIT, deaf).await.unwrap().unwrap();
    assert_eq!(received, N, "every SEND reached the broker");
}
