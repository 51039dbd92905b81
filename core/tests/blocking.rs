//! The blocking facade the bindings use: plain threads, polling and callbacks.

use deploykit::blocking::{BlockingClient, Next};
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::message::{decode, Commit, Destinations, Message as Typed, Wire};
use deploykit::stomp::{ClientConfig, SendOptions, SubscribeOptions};
use std::sync::mpsc;
use std::time::Duration;

/// Starts an embedded broker on its own runtime and returns its URL (the runtime lives as long as the guard).
fn broker() -> (tokio::runtime::Runtime, deploykit::broker::BrokerHandle) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = rt.block_on(Broker::start(BrokerConfig::default())).unwrap();
    (rt, handle)
}

#[test]
fn poll_and_callback_from_plain_threads() {
    let (_rt, b) = broker();
    let client = BlockingClient::connect(ClientConfig::new(&b.url()).unwrap()).unwrap();
    let mut sub = client.subscribe("/queue/blocking", SubscribeOptions::default()).unwrap();
    assert!(matches!(sub.next(Some(Duration::from_millis(50))), Next::Timeout));
    client.send("/queue/blocking", "one", SendOptions { receipt: true, ..Default::default() }).unwrap();
    match sub.next(Some(Duration::from_secs(10))) {
        Next::Message(m) => assert_eq!(m.text(), Some("one")),
        other => panic!("{other:?}"),
    }
    let (tx, rx) = mpsc::channel();
    let main_thread = std::thread::current().id();
    let inner = client.clone();
    let handle = sub.on_message(move |m| {
        // A blocking call from the I/O thread is refused, not a panic or a deadlock.
        let refused = inner.send("/queue/elsewhere", "x", SendOptions::default()).is_err();
        tx.send((std::thread::current().id(), std::thread::current().name().map(str::to_owned), m.text().map(str::to_owned), refused)).unwrap();
    });
    client.send("/queue/blocking", "two", SendOptions::default()).unwrap();
    let (thread, name, text, refused) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(refused, "blocking call inside the callback must be refused");
    assert_ne!(thread, main_thread, "callbacks run on the I/O thread");
    assert_eq!(name.as_deref(), Some("deploykit-io"));
    assert_eq!(text.as_deref(), Some("two"));
    handle.stop();
    client.disconnect().unwrap();
}

#[test]
fn typed_publishing_both_wires() {
    let (_rt, b) = broker();
    let client = BlockingClient::connect(ClientConfig::new(&b.url()).unwrap()).unwrap();
    let mut commits = client.subscribe("/topic/deploykit.git.commits", SubscribeOptions::default()).unwrap();
    let mut events = client.subscribe("/topic/future.events.git-hook", SubscribeOptions::default()).unwrap();
    let commit = Commit { repo: "site".into(), oldrev: "0".repeat(40), newrev: "a".repeat(40), refname: "refs/heads/main".into(), ..Default::default() };
    client.publisher("git-hook", Wire::Json, Destinations::default()).commit(&commit).unwrap();
    let Next::Message(m) = commits.next(Some(Duration::from_secs(10))) else { panic!("no commit") };
    let Typed::Commit(c) = decode(m.destination(), &m.headers, &m.body).unwrap() else { panic!("not a commit") };
    assert_eq!(c.correlation_id.as_deref(), Some("a".repeat(40).as_str()));
    let legacy = Destinations { commits: "/topic/deploykit.git.commits".into(), ..Destinations::legacy() };
    client.publisher("git-hook", Wire::Legacy, legacy).commit(&commit).unwrap();
    let Next::Message(m) = commits.next(Some(Duration::from_secs(10))) else { panic!("no legacy commit") };
    assert!(m.header("dk-type").is_none());
    assert!(m.text().unwrap().starts_with("repo: site\n"));
    let Next::Message(e) = events.next(Some(Duration::from_secs(10))) else { panic!("no legacy event line") };
    assert_eq!(e.header("subject"), Some("Talking to eventbot"));
    client.disconnect().unwrap();
}

#[test]
fn refused_connection_is_an_error_not_a_hang() {
    let mut config = ClientConfig::new("stomp://127.0.0.1:1").unwrap();
    config.url.options.startup_max_reconnect_attempts = Some(1);
    let err = BlockingClient::connect(config).unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[test]
fn send_many_delivers_in_order_and_confirms_with_its_receipt() {
    let (_rt, b) = broker();
    let client = BlockingClient::connect(ClientConfig::new(&b.url()).unwrap()).unwrap();
    let mut sub = client.subscribe("/queue/blocking-many", SubscribeOptions::default()).unwrap();
    let bodies: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    client.send_many("/queue/blocking-many", bodies.clone(), &SendOptions { receipt: true, ..Default::default() }).unwrap();
    for want in &bodies {
        match sub.next(Some(Duration::from_secs(10))) {
            Next::Message(m) => assert_eq!(m.text(), Some(want.as_str())),
            other => panic!("{other:?} instead of {want}"),
        }
    }
    // Borrowed slices of one buffer: each is copied as it is queued.
    let buffer = b"alphabetagamma".to_vec();
    client.send_many("/queue/blocking-many", [&buffer[..5], &buffer[5..9], &buffer[9..]], &SendOptions::default()).unwrap();
    drop(buffer);
    for want in ["alpha", "beta", "gamma"] {
        match sub.next(Some(Duration::from_secs(10))) {
            Next::Message(m) => assert_eq!(m.text(), Some(want)),
            other => panic!("{other:?} instead of {want}"),
        }
    }
    client.send_many("/queue/blocking-many", Vec::<Vec<u8>>::new(), &SendOptions::default()).expect("nothing to send is not an error");
    client.send("/queue/blocking-many", "after", SendOptions { receipt: true, ..Default::default() }).unwrap();
    match sub.next(Some(Duration::from_secs(10))) {
        Next::Message(m) => assert_eq!(m.text(), Some("after"), "the empty call sent nothing"),
        other => panic!("{other:?}"),
    }
    client.disconnect().unwrap();
}
