//! dk-broker as a real process under memory attacks, measured by its own
//! resident set (`VmRSS` in /proc/PID/status): unfinished CONNECTs, queues
//! nobody reads, transactions never committed. Also: a passcode holding URL
//! delimiters never shows in dk-stomp's errors.

mod common;

use common::Proc;
use deploykit::broker::{Broker, BrokerConfig};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(60);

/// Starts dk-broker with `extra` flags on an ephemeral port; returns it and its address.
fn dk_broker(extra: &[&str]) -> (Proc, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-broker"));
    c.args(["--listen", "127.0.0.1:0"]).args(extra).env("RUST_LOG", "warn");
    let mut p = Proc::spawn(c);
    let line = p.line(Duration::from_secs(20), |l| l.contains("dk-broker listening on"));
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    (p, addr)
}

/// The process's resident set in bytes.
fn rss(p: &Proc) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let kb: usize = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap();
    kb * 1024
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// Reads until a NUL-terminated frame whose text contains `what`, or EOF; the text read.
fn read_until(s: &mut TcpStream, what: &str) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&text).contains(what) && text.ends_with(b"\0") {
            break;
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn logged_in(addr: &str) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(b"CONNECT\naccept-version:1.2\nhost:/\n\n\0").unwrap();
    let text = read_until(&mut s, "CONNECTED");
    assert!(text.starts_with("CONNECTED"), "{text:?}");
    s
}

fn send_frame(head: &str, body_len: usize) -> Vec<u8> {
    let mut f = format!("{head}content-length:{body_len}\n\n").into_bytes();
    f.resize(f.len() + body_len, b'm');
    f.push(0);
    f
}

#[test]
fn help_states_the_limits() {
    let out = Command::new(env!("CARGO_BIN_EXE_dk-broker")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in ["--max-bytes", "--max-destination-bytes", "--max-connections-per-ip", "--max-pending-connections", "--max-open-transactions", "--login-timeout", "8 KiB"] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn forty_unfinished_connects_of_15_mib_do_not_grow_the_broker() {
    let (broker, addr) = dk_broker(&[]);
    let before = rss(&broker);
    // Each socket starts a CONNECT whose body never ends and streams 15 MiB into it
    // (the old broker buffered all of it: 40 × 15 MiB). Sockets stay open meanwhile.
    let sockets: Vec<TcpStream> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..40)
            .map(|_| {
                scope.spawn(|| {
                    let mut s = connect(&addr);
                    let _ = s.write_all(b"CONNECT\naccept-version:1.2\n\n");
                    let chunk = vec![b'x'; 256 * 1024];
                    for _ in 0..60 {
                        if s.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    s
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let after = rss(&broker);
    let growth = after.saturating_sub(before);
    eprintln!("RSS before {} MiB, after 40 unfinished CONNECTs {} MiB", before / MIB, after / MIB);
    assert!(growth < 32 * MIB, "dk-broker grew by {} MiB", growth / MIB);
    drop(sockets);
}

#[test]
fn six_hundred_mib_to_two_unread_queues_stay_within_the_per_queue_bytes() {
    let (broker, addr) = dk_broker(&[]);
    let before = rss(&broker);
    let mut s = logged_in(&addr);
    for i in 0..600 {
        s.write_all(&send_frame(&format!("SEND\ndestination:/queue/unread{}\n", i % 2), MIB)).unwrap();
    }
    s.write_all(b"SEND\ndestination:/queue/unread0\nreceipt:done\ncontent-length:0\n\n\0").unwrap();
    let text = read_until(&mut s, "receipt-id:done");
    assert!(text.contains("RECEIPT"), "{text:?}");
    let after = rss(&broker);
    eprintln!("RSS before {} MiB, after 600 × 1 MiB to two queues {} MiB", before / MIB, after / MIB);
    // Two queues of at most 64 MiB each (the old broker kept all 600 MiB).
    assert!(after.saturating_sub(before) < 192 * MIB, "dk-broker grew by {} MiB", after.saturating_sub(before) / MIB);
}

#[test]
fn two_hundred_open_transactions_are_refused_beyond_the_cap() {
    let (broker, addr) = dk_broker(&[]);
    let before = rss(&broker);
    let mut s = logged_in(&addr);
    let mut refused = None;
    for t in 0..200 {
        let mut frames = format!("BEGIN\ntransaction:t{t}\nreceipt:b{t}\n\n\0").into_bytes();
        frames.extend(send_frame(&format!("SEND\ndestination:/queue/tx\ntransaction:t{t}\n"), MIB));
        if s.write_all(&frames).is_err() {
            refused = Some(t);
            break;
        }
        let text = read_until(&mut s, &format!("receipt-id:b{t}"));
        if text.contains("ERROR") {
            assert!(text.contains("too many transactions"), "{text:?}");
            refused = Some(t);
            break;
        }
    }
    let after = rss(&broker);
    eprintln!("RSS before {} MiB, after open transactions {} MiB; refused at {refused:?}", before / MIB, after / MIB);
    assert_eq!(refused, Some(16), "the 17th transaction must be refused");
    assert!(after.saturating_sub(before) < 64 * MIB, "dk-broker grew by {} MiB", after.saturating_sub(before) / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passcodes_with_url_delimiters_never_show_in_dk_stomp_errors() {
    let pass = "Sup3r/Se?c,ret";
    let broker = Broker::start(BrokerConfig { users: Some(HashMap::from([("deploy".to_owned(), pass.to_owned())])), ..BrokerConfig::default() }).await.unwrap();
    let port = broker.local_addr().port();
    let run = |url: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_dk-stomp")).env_remove("DK_BROKER_URL").args(["send", "--receipt", "--broker", &url, "/topic/x", "hi"]).output().unwrap()
        })
    };
    // Unencoded, the passcode is still read as a passcode: the broker accepts it.
    let ok = run(format!("stomp://deploy:{pass}@127.0.0.1:{port}")).await.unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // Refused logins, unreachable brokers and malformed URLs: no piece of the passcode in the output.
    for url in [
        format!("stomp://deploy:Sup3r/Secret@127.0.0.1:{port}"),
        "stomp://deploy:Sup3r/Secret@127.0.0.1:6161x".to_owned(),
        "stomp://deploy:Sup3r/Secret@[::1".to_owned(),
        "failover:(stomp://deploy:Sup3r,Secret@127.0.0.1:1,stomp://x:Sup3rSecret@h:z)".to_owned(),
    ] {
        let out = run(url.clone()).await.unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{url}: {text}");
        assert!(!text.contains("Secret") && !text.contains("Sup3r"), "{url}: {text}");
    }
}
