//! dk-e2e: end-to-end STOMP benchmarks, run by `bench/e2e.sh`.
//!
//! Two clients side by side, each run in its own process (so `/usr/bin/time -v`
//! measures one client's CPU and peak RSS):
//! - `ours`: `deploykit::stomp::Client`, used as an application would.
//! - `raw`: blocking std sockets writing pre-encoded SEND frames and counting
//!   the NULs that end incoming frames (no parsing at all): the least a client
//!   can cost, so its throughput is the broker's own ceiling on this machine.
//!
//! Tests (every loop is bounded; only loopback addresses are accepted):
//! - `publish`: N SENDs to a destination, the last one with a `receipt`; the
//!   clock stops when that RECEIPT arrives (the broker has handled every frame).
//!   `--mode one`: every message is written and flushed on its own;
//!   `--mode batch`: many messages per write.
//!   `--mode many` (ours only): `send_many` with `--batch` messages per call.
//!   `--mode build` (raw only): as batch, but each frame is built into the write
//!   buffer (headers formatted, body copied) instead of one prebuilt chunk resent.
//!   `--mode iov` (raw only): as build, but only each head is built; every body is
//!   written from where it lies (`writev`, a slice per head and per body).
//! - `pubsub`: a consumer (own connection) subscribed with ack auto, a producer
//!   publishing N; the clock runs from the first SEND until the consumer has all N.
//!   `--mode codec` (ours only): the consumer is no client but deploykit's codec on
//!   its own socket, decoding in the task that counts (no connection task, no
//!   inbox): what the client's delivery path costs on top of decoding.
//! - `pingpong`: A sends to a queue, B (own connection) echoes each message to
//!   a reply queue A listens on; round-trip times after a warm-up.
//!
//! Output: one JSON object on stdout. Besides timings it reports this process's
//! write(2)-family system calls during the timed part (`/proc/self/io` syscw),
//! so "one by one" and "batched" can be checked rather than assumed.

use bytes::Bytes;
use deploykit::stomp::connection::Connection;
use deploykit::stomp::{AckMode, Client, ClientConfig, Command, Frame, HeartbeatConfig, Incoming, SendOptions, SubscribeOptions, Subscription};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Upper bound on any single test, so a stuck broker cannot hang the script.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
struct Opts {
    test: String,
    client: String,
    mode: String,
    rt: String,
    addr: SocketAddr,
    login: String,
    passcode: String,
    vhost: String,
    n: u64,
    size: usize,
    batch: usize,
    dest: String,
    reply: String,
    rounds: usize,
    warmup: usize,
    heartbeat_off: bool,
    threads: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: dk-e2e publish|pubsub|pingpong --client ours|raw [--mode one|batch|many|build|iov|codec] [--rt current|multi]\n\
         \x20      [--addr 127.0.0.1:61613] [--login guest --passcode guest --vhost /] [--n 100000]\n\
         \x20      [--size 1024] [--batch 64] [--dest D] [--reply D] [--rounds 2000] [--warmup 500]\n\
         \x20      [--heartbeat default|off]   (ours: the client's default heart-beats, or none)\n\
         \x20      [--threads 1|2]             (raw pubsub: one polling thread, or reader and writer threads)"
    );
    std::process::exit(64)
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let test = args.next().unwrap_or_else(|| usage());
    let mut kv: HashMap<String, String> = HashMap::new();
    while let Some(k) = args.next() {
        let Some(k) = k.strip_prefix("--") else { usage() };
        let v = args.next().unwrap_or_else(|| usage());
        kv.insert(k.to_owned(), v);
    }
    let get = |k: &str, d: &str| kv.get(k).cloned().unwrap_or_else(|| d.to_owned());
    let num = |k: &str, d: &str| get(k, d).parse::<u64>().unwrap_or_else(|_| usage());
    let addr: SocketAddr = get("addr", "127.0.0.1:61613").parse().unwrap_or_else(|_| usage());
    if !addr.ip().is_loopback() {
        eprintln!("dk-e2e: only loopback brokers are benchmarked (got {addr})");
        std::process::exit(64);
    }
    if !matches!(test.as_str(), "publish" | "pubsub" | "pingpong") {
        usage()
    }
    let client = get("client", "ours");
    if !matches!(client.as_str(), "ours" | "raw") {
        usage()
    }
    Opts {
        test,
        client,
        mode: get("mode", "batch"),
        rt: get("rt", "current"),
        addr,
        login: get("login", "guest"),
        passcode: get("passcode", "guest"),
        vhost: get("vhost", "/"),
        n: num("n", "100000").clamp(1, 10_000_000),
        size: num("size", "1024").clamp(1, 1 << 20) as usize,
        batch: num("batch", "64").clamp(1, 4096) as usize,
        dest: get("dest", "/topic/dk-bench-sink"),
        reply: get("reply", "/queue/dk-bench-pong"),
        rounds: num("rounds", "2000").clamp(1, 1_000_000) as usize,
        warmup: num("warmup", "500").clamp(0, 1_000_000) as usize,
        heartbeat_off: get("heartbeat", "default") == "off",
        threads: num("threads", "1").clamp(1, 2) as usize,
    }
}

/// write(2)-family system calls this process has made so far.
fn syscw() -> u64 {
    let s = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("syscw:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// What this process (all threads) has used so far, or in a timed loop.
#[derive(Clone, Copy)]
struct Usage {
    /// User+system CPU seconds.
    secs: f64,
    /// Voluntary context switches: how often a thread blocked waiting for the
    /// network, a timer or another thread, so how often it was woken again.
    waits: i64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, before: Usage) -> Usage {
        Usage { secs: self.secs - before.secs, waits: self.waits - before.waits }
    }
}

/// User+system CPU and wake-ups of this process (all threads) so far.
fn rusage() -> Usage {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage { secs: tv(ru.ru_utime) + tv(ru.ru_stime), waits: ru.ru_nvcsw }
}

/// write(2) calls made by the raw client (std sockets use send(2), which
/// /proc/self/io does not count).
static RAW_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `write_all`, counting the system calls it takes.
fn write_all_counted(s: &mut TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        RAW_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match s.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(k) => buf = &buf[k..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `write_all` of slices with one `writev` per system call, counting them as `write_all_counted` does.
fn write_all_vectored_counted(s: &mut TcpStream, mut slices: &mut [std::io::IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        RAW_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match s.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(k) => std::io::IoSlice::advance_slices(&mut slices, k),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes so far: the raw client's own count, or /proc/self/io's for ours.
fn writes(raw: bool) -> u64 {
    if raw {
        RAW_WRITES.load(std::sync::atomic::Ordering::Relaxed)
    } else {
        syscw()
    }
}

struct Outcome {
    secs: f64,
    count: u64,
    writes: u64,
    used: Usage,
    rtts_us: Vec<f64>,
}

fn main() {
    let o = parse_opts();
    // A watchdog rather than a timeout around the test: it costs the measured loops nothing.
    std::thread::spawn(|| {
        std::thread::sleep(TEST_TIMEOUT);
        eprintln!("dk-e2e: test did not finish within {TEST_TIMEOUT:?}");
        std::process::exit(3);
    });
    let r = match o.client.as_str() {
        "raw" => raw::run(&o),
        _ => ours::run(&o),
    };
    match r {
        Ok(out) => print_json(&o, &out),
        Err(e) => {
            eprintln!("dk-e2e {} --client {}: {e}", o.test, o.client);
            std::process::exit(1);
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn print_json(o: &Opts, out: &Outcome) {
    let mut fields = vec![
        format!("\"test\":\"{}\"", o.test),
        format!("\"client\":\"{}\"", o.client),
        format!("\"mode\":\"{}\"", if o.test == "publish" || o.mode == "codec" { o.mode.as_str() } else { "-" }),
        format!("\"rt\":\"{}\"", if o.client == "ours" { o.rt.as_str() } else { "-" }),
        format!("\"size\":{}", o.size),
        format!("\"count\":{}", out.count),
        format!("\"secs\":{:.6}", out.secs),
        format!("\"writes\":{}", out.writes),
        format!("\"loop_cpu_s\":{:.4}", out.used.secs),
        format!("\"waits\":{}", out.used.waits),
    ];
    if o.test == "pingpong" {
        let mut v = out.rtts_us.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        fields.push(format!("\"p50_us\":{:.1}", percentile(&v, 50.0)));
        fields.push(format!("\"p99_us\":{:.1}", percentile(&v, 99.0)));
        fields.push(format!("\"mean_us\":{:.1}", mean));
        fields.push(format!("\"max_us\":{:.1}", v.last().copied().unwrap_or(f64::NAN)));
    } else {
        fields.push(format!("\"rate\":{:.0}", out.count as f64 / out.secs));
    }
    println!("{{{}}}", fields.join(","));
}

/// The deploykit client, used as an application would use it.
mod ours {
    use super::*;

    /// The body every message carries, borrowed as the raw socket's loops borrow
    /// theirs: a `Bytes` over a leaked buffer clones and drops without touching a
    /// reference count (one atomic add and one atomic sub per message otherwise,
    /// which an application sending fresh `Vec`s does not pay either).
    fn static_body(size: usize) -> Bytes {
        Bytes::from_static(Box::leak(vec![b'x'; size].into_boxed_slice()))
    }

    fn config(o: &Opts) -> Res<ClientConfig> {
        let url = format!("stomp://{}:{}@{}", o.login, o.passcode, o.addr);
        let mut cfg = ClientConfig::new(&url)?.vhost(o.vhost.clone());
        if let Some(n) = std::env::var("DK_E2E_SEND_BUFFER").ok().and_then(|v| v.parse().ok()) {
            cfg.send_buffer_bytes = n;
        }
        Ok(if o.heartbeat_off { cfg.heartbeat(HeartbeatConfig::off()) } else { cfg })
    }

    pub fn run(o: &Opts) -> Res<Outcome> {
        let rt = match o.rt.as_str() {
            "multi" => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
            "current" => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            _ => usage(),
        };
        // The test runs as a spawned task, not as the `block_on` future: a woken
        // `block_on` future makes the scheduler poll the I/O driver (an extra
        // epoll_wait) on every wake-up, which an application's tasks do not pay.
        let o2 = Arc::new(o.clone());
        rt.block_on(async move {
            let task = tokio::spawn(async move {
                match o2.test.as_str() {
                    "publish" => publish(&o2).await,
                    "pubsub" => pubsub(&o2).await,
                    _ => pingpong(&o2).await,
                }
            });
            task.await.map_err(|e| e.to_string())?
        })
    }

    /// Yields to the scheduler once: the task re-queues itself behind the tasks
    /// already woken (here, the client's connection task woken by the send).
    /// Unlike `tokio::task::yield_now`, it does not defer to an I/O driver poll.
    struct YieldOnce(bool);

    impl std::future::Future for YieldOnce {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            if self.0 {
                return std::task::Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }

    /// N SENDs, the last with a receipt awaited.
    ///
    /// `one`: after each `send().await` the task yields, so the connection task
    /// writes and flushes that message before the next is queued (the public API
    /// has no "await the flush"; `writes` in the output confirms one write per
    /// message). `batch`: `send().await` in a tight loop; the connection task
    /// writes what has queued up, many messages per write.
    async fn publish(o: &Opts) -> Res<Outcome> {
        let client = Client::connect(config(o)?).await?;
        let body = static_body(o.size);
        let (one, many) = match o.mode.as_str() {
            "one" => (true, false),
            "batch" => (false, false),
            "many" => (false, true),
            _ => usage(),
        };
        let (w0, c0) = (syscw(), rusage());
        let t0 = Instant::now();
        if many {
            let mut left = o.n - 1;
            let options = SendOptions::default();
            while left > 0 {
                let k = left.min(o.batch as u64);
                client.send_many(&o.dest, std::iter::repeat_n(&body[..], k as usize), &options).await?;
                left -= k;
            }
        }
        for _ in 1..if many { 1 } else { o.n } {
            client.send(&o.dest, body.clone()).await?;
            if one {
                YieldOnce(false).await;
            }
        }
        client.send_with(&o.dest, body.clone(), SendOptions { receipt: true, ..SendOptions::default() }).await?;
        let secs = t0.elapsed().as_secs_f64();
        let (writes, used) = (syscw() - w0, rusage() - c0);
        client.disconnect().await?;
        Ok(Outcome { secs, count: o.n, writes, used, rtts_us: vec![] })
    }

    /// A consumer that counts what arrives, one message at a time.
    trait Counting: Send + 'static {
        /// The next message's body length, or `None` once the consumer has ended.
        fn next_len(&mut self) -> impl std::future::Future<Output = Option<usize>> + Send;
    }

    impl Counting for Subscription {
        async fn next_len(&mut self) -> Option<usize> {
            self.recv().await.map(|m| m.body.len())
        }
    }

    /// The next `command` frame read from `conn`, skipping anything else; `None` once the connection ends.
    async fn next_of(conn: &mut Connection, command: Command) -> Option<Frame> {
        loop {
            match conn.framed.next().await? {
                Ok(Incoming::Frame(f)) if f.command == command => return Some(f),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The codec on its own connection: MESSAGE frames are counted, anything else skipped.
    impl Counting for Connection {
        async fn next_len(&mut self) -> Option<usize> {
            next_of(self, Command::Message).await.map(|f| f.body.len())
        }
    }

    /// Consumer on its own connection, producer publishing N; until the consumer has all N.
    /// `--mode codec`: the consumer is deploykit's codec on its own connection, read in the
    /// task that counts: a client's decoding without its delivery path (no connection task,
    /// no inbox, no second task woken per read).
    async fn pubsub(o: &Opts) -> Res<Outcome> {
        if o.mode == "codec" {
            let cfg = config(o)?;
            let mut conn = deploykit::stomp::connection::open(&cfg.url.endpoints[0], &cfg.handshake).await?;
            let subscribe = Frame::new(Command::Subscribe).header("id", "0").header("destination", o.dest.as_str()).header("ack", "auto").header("receipt", "sub");
            conn.framed.send(&subscribe).await?;
            next_of(&mut conn, Command::Receipt).await.ok_or("no RECEIPT for the SUBSCRIBE: the connection ended or sent a bad frame")?;
            return timed_pubsub(o, conn).await;
        }
        let consumer = Client::connect(config(o)?).await?;
        let sub = consumer.subscribe(&o.dest, SubscribeOptions { ack: AckMode::Auto, ..SubscribeOptions::default() }).await?;
        let out = timed_pubsub(o, sub).await?;
        consumer.disconnect().await?;
        Ok(out)
    }

    /// The timed part of `pubsub`: a producer publishes N while `consumer` counts them in a task of its own.
    async fn timed_pubsub(o: &Opts, mut consumer: impl Counting) -> Res<Outcome> {
        let producer = Client::connect(config(o)?).await?;
        let body = static_body(o.size);
        let (n, size) = (o.n, o.size);
        let (w0, c0) = (syscw(), rusage());
        let t0 = Instant::now();
        let reader = tokio::spawn(async move {
            let mut bytes = 0usize;
            for _ in 0..n {
                let Some(len) = consumer.next_len().await else { return Err("consumer ended") };
                bytes += len;
            }
            if bytes != size * n as usize {
                return Err("wrong body sizes received");
            }
            Ok(Instant::now())
        });
        for _ in 0..n {
            producer.send(&o.dest, body.clone()).await?;
        }
        let done = reader.await??;
        let secs = (done - t0).as_secs_f64();
        let (writes, used) = (syscw() - w0, rusage() - c0);
        producer.disconnect().await?;
        Ok(Outcome { secs, count: n, writes, used, rtts_us: vec![] })
    }

    /// A sends to `dest`, B echoes to `reply`; round-trip times after warm-up.
    async fn pingpong(o: &Opts) -> Res<Outcome> {
        let b = Client::connect(config(o)?).await?;
        let mut b_sub = b.subscribe(&o.dest, SubscribeOptions::default()).await?;
        let a = Client::connect(config(o)?).await?;
        let mut a_sub = a.subscribe(&o.reply, SubscribeOptions::default()).await?;
        let total = o.warmup + o.rounds;
        let reply = o.reply.clone();
        let b2 = b.clone();
        let echo = tokio::spawn(async move {
            for _ in 0..total {
                let Some(m) = b_sub.recv().await else { return Err("ping subscription closed") };
                if b2.send(&reply, m.body).await.is_err() {
                    return Err("echo send failed");
                }
            }
            Ok(())
        });
        let body = static_body(o.size);
        let mut rtts = Vec::with_capacity(o.rounds);
        let (mut w0, mut c0) = (0, rusage());
        let mut t_start = Instant::now();
        for i in 0..total {
            if i == o.warmup {
                (w0, c0) = (syscw(), rusage());
                t_start = Instant::now();
            }
            let t = Instant::now();
            a.send(&o.dest, body.clone()).await?;
            let m = a_sub.recv().await.ok_or("pong subscription closed")?;
            if m.body.len() != o.size {
                return Err("wrong pong body".into());
            }
            if i >= o.warmup {
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let secs = t_start.elapsed().as_secs_f64();
        let (writes, used) = (syscw() - w0, rusage() - c0);
        echo.await?.map_err(|e| e.to_string())?;
        a.disconnect().await?;
        b.disconnect().await?;
        Ok(Outcome { secs, count: o.rounds as u64, writes, used, rtts_us: rtts })
    }
}

/// Pre-encoded frames on blocking sockets; incoming frames are only counted (by their NUL).
mod raw {
    use super::*;

    pub fn send_frame(dest: &str, body: &[u8], receipt: Option<&str>) -> Vec<u8> {
        let mut f = Vec::with_capacity(body.len() + 128);
        f.extend_from_slice(b"SEND\ndestination:");
        f.extend_from_slice(dest.as_bytes());
        if let Some(r) = receipt {
            f.extend_from_slice(b"\nreceipt:");
            f.extend_from_slice(r.as_bytes());
        }
        f.extend_from_slice(format!("\ncontent-length:{}\n\n", body.len()).as_bytes());
        f.extend_from_slice(body);
        f.push(0);
        f
    }

    /// A socket whose incoming frames are counted by their terminating NUL
    /// (bodies here never contain NUL; header values never do).
    pub struct Conn {
        pub s: TcpStream,
        buf: Vec<u8>,
        pub seen: u64,
        first: Vec<u8>,
    }

    impl Conn {
        pub fn open(o: &Opts) -> Res<Conn> {
            let s = TcpStream::connect(o.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(TEST_TIMEOUT))?;
            let mut c = Conn { s, buf: vec![0; 256 * 1024], seen: 0, first: Vec::new() };
            let connect = format!("CONNECT\naccept-version:1.2\nhost:{}\nlogin:{}\npasscode:{}\nheart-beat:0,0\n\n\0", o.vhost, o.login, o.passcode);
            c.s.write_all(connect.as_bytes())?;
            c.wait(1)?;
            if !c.first.starts_with(b"CONNECTED") {
                return Err(format!("broker refused: {}", String::from_utf8_lossy(&c.first)).into());
            }
            Ok(c)
        }

        /// Reads until `more` further frames have ended.
        pub fn wait(&mut self, more: u64) -> Res<()> {
            let target = self.seen + more;
            while self.seen < target {
                let k = self.s.read(&mut self.buf)?;
                if k == 0 {
                    return Err("broker closed the connection".into());
                }
                if self.first.len() < 64 {
                    let t = (64 - self.first.len()).min(k);
                    self.first.extend_from_slice(&self.buf[..t]);
                }
                self.seen += memchr::memchr_iter(0, &self.buf[..k]).count() as u64;
            }
            Ok(())
        }

        /// Reads (non-blocking socket) until nothing more has arrived.
        pub fn drain(&mut self) -> Res<()> {
            loop {
                match self.s.read(&mut self.buf) {
                    Ok(0) => return Err("broker closed the connection".into()),
                    Ok(k) => self.seen += memchr::memchr_iter(0, &self.buf[..k]).count() as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        /// SUBSCRIBE (ack auto) and wait for its RECEIPT.
        pub fn subscribe(&mut self, dest: &str) -> Res<()> {
            let f = format!("SUBSCRIBE\nid:0\ndestination:{dest}\nack:auto\nreceipt:sub\n\n\0");
            self.s.write_all(f.as_bytes())?;
            self.wait(1)
        }
    }

    pub fn run(o: &Opts) -> Res<Outcome> {
        match o.test.as_str() {
            "publish" => publish(o),
            "pubsub" => pubsub(o),
            _ => pingpong(o),
        }
    }

    fn write_n(s: &mut TcpStream, frame: &[u8], n: u64, batch: usize) -> Res<()> {
        if batch <= 1 {
            for _ in 0..n {
                write_all_counted(s, frame)?;
            }
            return Ok(());
        }
        let chunk: Vec<u8> = frame.repeat(batch);
        let mut left = n;
        while left >= batch as u64 {
            write_all_counted(s, &chunk)?;
            left -= batch as u64;
        }
        if left > 0 {
            write_all_counted(s, &chunk[..frame.len() * left as usize])?;
        }
        Ok(())
    }

    /// As `write_n` in batches, but each frame is built into the write buffer
    /// (headers formatted, body copied), as any client must for messages it did not
    /// see before: the floor under a client's batched cost.
    fn write_n_built(s: &mut TcpStream, dest: &str, body: &[u8], n: u64, batch: usize) -> Res<()> {
        let mut buf = Vec::with_capacity((body.len() + 64 + dest.len()) * batch);
        for i in 1..=n {
            put_send_head(&mut buf, dest, body.len());
            buf.extend_from_slice(body);
            buf.push(0);
            if i % batch as u64 == 0 || i == n {
                write_all_counted(s, &buf)?;
                buf.clear();
            }
        }
        Ok(())
    }

    /// Appends a SEND's command and headers, up to the blank line before the body.
    #[inline]
    fn put_send_head(buf: &mut Vec<u8>, dest: &str, body_len: usize) {
        buf.extend_from_slice(b"SEND\ndestination:");
        buf.extend_from_slice(dest.as_bytes());
        buf.extend_from_slice(b"\ncontent-length:");
        buf.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        buf.extend_from_slice(b"\n\n");
    }

    /// As `write_n_built`, but only each frame's head is built into the buffer; the
    /// body is written from where it lies (`writev`, two slices per frame): the floor
    /// under a client that queues bodies by reference.
    fn write_n_iov(s: &mut TcpStream, dest: &str, body: &[u8], n: u64, batch: usize) -> Res<()> {
        let mut heads = Vec::with_capacity((64 + dest.len()) * batch);
        let mut ends = Vec::with_capacity(batch);
        let mut i = 0;
        while i < n {
            let k = (n - i).min(batch as u64);
            heads.clear();
            ends.clear();
            for j in 0..k {
                if j > 0 {
                    heads.push(0);
                }
                put_send_head(&mut heads, dest, body.len());
                ends.push(heads.len());
            }
            heads.push(0);
            let mut slices = Vec::with_capacity(2 * batch + 1);
            let mut from = 0;
            for &end in &ends {
                slices.push(std::io::IoSlice::new(&heads[from..end]));
                slices.push(std::io::IoSlice::new(body));
                from = end;
            }
            slices.push(std::io::IoSlice::new(&heads[from..]));
            write_all_vectored_counted(s, &mut slices)?;
            i += k;
        }
        Ok(())
    }

    fn publish(o: &Opts) -> Res<Outcome> {
        let mut c = Conn::open(o)?;
        let body = vec![b'x'; o.size];
        let frame = send_frame(&o.dest, &body, None);
        let last = send_frame(&o.dest, &body, Some("last"));
        let batch = match o.mode.as_str() {
            "one" => 1,
            "batch" | "build" | "iov" => o.batch,
            _ => usage(),
        };
        let (w0, c0) = (writes(true), rusage());
        let t0 = Instant::now();
        if o.mode == "build" {
            write_n_built(&mut c.s, &o.dest, &body, o.n - 1, batch)?;
        } else if o.mode == "iov" {
            write_n_iov(&mut c.s, &o.dest, &body, o.n - 1, batch)?;
        } else {
            write_n(&mut c.s, &frame, o.n - 1, batch)?;
        }
        write_all_counted(&mut c.s, &last)?;
        c.wait(1)?;
        let secs = t0.elapsed().as_secs_f64();
        Ok(Outcome { secs, count: o.n, writes: writes(true) - w0, used: rusage() - c0, rtts_us: vec![] })
    }

    /// Producer and consumer on one thread, like ours on a current-thread runtime:
    /// non-blocking sockets and poll(2); reads drain whatever has arrived, writes
    /// push `--batch` frames at a time. (`--threads 2`: a blocking reader thread
    /// beside a blocking writer instead.)
    fn pubsub(o: &Opts) -> Res<Outcome> {
        let mut consumer = Conn::open(o)?;
        consumer.subscribe(&o.dest)?;
        let mut producer = Conn::open(o)?;
        let body = vec![b'x'; o.size];
        let frame = send_frame(&o.dest, &body, None);
        let n = o.n;
        let (w0, c0) = (writes(true), rusage());
        let t0 = Instant::now();
        if o.threads == 2 {
            let reader = std::thread::spawn(move || -> Result<Instant, String> {
                consumer.wait(n).map_err(|e| e.to_string())?;
                Ok(Instant::now())
            });
            write_n(&mut producer.s, &frame, n, o.batch)?;
            let done = reader.join().map_err(|_| "reader panicked")??;
            let secs = (done - t0).as_secs_f64();
            return Ok(Outcome { secs, count: n, writes: writes(true) - w0, used: rusage() - c0, rtts_us: vec![] });
        }
        use std::os::fd::AsRawFd;
        consumer.s.set_nonblocking(true)?;
        producer.s.set_nonblocking(true)?;
        let chunk: Vec<u8> = frame.repeat(o.batch);
        let mut to_send = n; // frames not yet handed to the kernel
        let mut pending: &[u8] = &[]; // rest of the chunk being written
        let target = consumer.seen + n;
        let deadline = Instant::now() + TEST_TIMEOUT;
        while consumer.seen < target {
            if Instant::now() > deadline {
                return Err("publish-consume timed out".into());
            }
            let mut fds =
                [libc::pollfd { fd: consumer.s.as_raw_fd(), events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: producer.s.as_raw_fd(), events: libc::POLLOUT, revents: 0 }];
            let nfds = if pending.is_empty() && to_send == 0 { 1 } else { 2 };
            // SAFETY: fds is a valid array of nfds pollfd structs.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), nfds, 1000) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if fds[0].revents != 0 {
                consumer.drain()?;
            }
            if nfds == 2 && fds[1].revents != 0 {
                loop {
                    if pending.is_empty() {
                        if to_send == 0 {
                            break;
                        }
                        let k = (to_send as usize).min(o.batch);
                        pending = &chunk[..frame.len() * k];
                        to_send -= k as u64;
                    }
                    RAW_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match producer.s.write(pending) {
                        Ok(k) => pending = &pending[k..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        Ok(Outcome { secs, count: n, writes: writes(true) - w0, used: rusage() - c0, rtts_us: vec![] })
    }

    /// One thread drives both connections: with a single message in flight, A
    /// writes the ping, B reads it and writes the pong, A reads the pong; no
    /// hand-off between threads (like ours on a current-thread runtime).
    fn pingpong(o: &Opts) -> Res<Outcome> {
        let mut b = Conn::open(o)?;
        b.subscribe(&o.dest)?;
        let mut a = Conn::open(o)?;
        a.subscribe(&o.reply)?;
        let body = vec![b'x'; o.size];
        let ping = send_frame(&o.dest, &body, None);
        let pong = send_frame(&o.reply, &body, None);
        let total = o.warmup + o.rounds;
        let mut rtts = Vec::with_capacity(o.rounds);
        let (mut w0, mut c0) = (0, rusage());
        let mut t_start = Instant::now();
        for i in 0..total {
            if i == o.warmup {
                (w0, c0) = (writes(true), rusage());
                t_start = Instant::now();
            }
            let t = Instant::now();
            write_all_counted(&mut a.s, &ping)?;
            b.wait(1)?;
            write_all_counted(&mut b.s, &pong)?;
            a.wait(1)?;
            if i >= o.warmup {
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let secs = t_start.elapsed().as_secs_f64();
        Ok(Outcome { secs, count: o.rounds as u64, writes: writes(true) - w0, used: rusage() - c0, rtts_us: rtts })
    }
}
