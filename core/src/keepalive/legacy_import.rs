//! `dk-keepalive --import-legacy`: stomp-keepalive's YAML → `keepalive.toml`.
//!
//! stomp-keepalive read `stompserver1`/`stompport1`, `stompserver2`/`stompport2`, …
//! (or an `rserver` URL), `stomp-options`, and `topics: NAME: {user, pass, type}`
//! (`type`: topic or queue), each destination with its own credentials. Each
//! becomes a `[[target]]` whose password is a `passcode_file` reference.

use super::config::KeepaliveConfig;
use crate::config::ConfigError;
use crate::legacy::{broker_keys, err, file_name, get, load_yaml, q, scalar, Builder, ImportOptions, Imported};
use yaml_rust2::Yaml;

/// Converts stomp-keepalive's YAML into the equivalent `keepalive.toml`, checked
/// with [`KeepaliveConfig::parse`] (but for the passcode files, not written yet).
pub fn import_legacy(yaml: &str, options: &ImportOptions) -> Result<Imported, ConfigError> {
    let top = load_yaml(yaml)?;
    let mut b = Builder::new("Imported from stomp-keepalive's YAML by dk-keepalive --import-legacy.", options);
    b.out.push_str("# stomp-keepalive ran from cron: keep the cron entry (dk-keepalive --config FILE sends once per target),\n# or run dk-keepalive --daemon (interval below).\ninterval = \"60s\"\n");
    let url = match get(&top, "rserver") {
        Some(u) => u,
        None => {
            let mut hosts = Vec::new();
            for n in 1..=16 {
                let Some(host) = get(&top, &format!("stompserver{n}")) else { continue };
                let port = get(&top, &format!("stompport{n}")).unwrap_or_else(|| "61613".into());
                if host.contains(['@', '/', ',', '(', ')', '?']) || port.parse::<u16>().is_err() {
                    return Err(err(format!("stompserver{n}/stompport{n}: expected a host name and a port number")));
                }
                hosts.push(format!("stomp://{host}:{port}"));
            }
            match hosts.len() {
                0 => return Err(err("no broker (stompserver1 and stompport1, or rserver)")),
                1 => hosts.remove(0),
                _ => format!("failover:({})", hosts.join(",")),
            }
        }
    };
    let broker = broker_keys(&mut b, "broker", &url, get(&top, "stomp-options").as_deref(), "passcode", "/etc/deploykit/keepalive.pass")?;
    b.out.push_str(&format!("\n[broker]\n{broker}"));
    let Some(Yaml::Hash(topics)) = top.get(&Yaml::String("topics".into())) else {
        return Err(err("topics: expected a mapping of NAME: {user, pass, type}"));
    };
    for (name, entry) in topics {
        let name = scalar(name).ok_or_else(|| err("topics: a destination name is not a string"))?;
        let Yaml::Hash(entry) = entry else {
            return Err(err(format!("topics.{name}: expected a mapping {{user, pass, type}}")));
        };
        let kind = get(entry, "type").unwrap_or_else(|| "topic".into());
        if !matches!(kind.as_str(), "topic" | "queue") {
            return Err(err(format!("topics.{name}.type: {kind:?} (expected topic or queue)")));
        }
        let destination = if name.starts_with('/') { name.clone() } else { format!("/{kind}/{name}") };
        b.out.push_str(&format!("\n[[target]]\nname = {}\ndestination = {}\n", q(&name), q(&destination)));
        if let Some(user) = get(entry, "user") {
            b.out.push_str(&format!("login = {}\n", q(&user)));
        }
        match entry.get(&Yaml::String("pass".into())) {
            None => {}
            Some(p) => match scalar(p) {
                Some(pass) => {
                    let file = file_name(&format!("keepalive-{name}.pass"));
                    let placeholder = format!("/etc/deploykit/{file}");
                    let path = b.secret(&format!("passcode for destination {name:?}"), &file, &placeholder, &pass);
                    b.out.push_str(&format!("passcode_file = {}\n", q(&path.display().to_string())));
                }
                None => b.note(format!("topics.{name}.pass is not a string (a YAML list?): give the target a passcode_file by hand")),
            },
        }
        for (k, v) in entry {
            let k = scalar(k).unwrap_or_default();
            if !matches!(k.as_str(), "user" | "pass" | "type") {
                b.skipped(&k, v);
            }
        }
    }
    for (k, v) in &top {
        let k = scalar(k).unwrap_or_default();
        let known = matches!(k.as_str(), "rserver" | "stomp-options" | "topics") || k.starts_with("stompserver") || k.starts_with("stompport");
        if !known {
            b.skipped(&k, v);
        }
    }
    let imported = b.finish();
    // Passcode files are read at parse time and are not written yet: check everything but them.
    let without: String = imported.toml.lines().filter(|l| !l.starts_with("passcode_file = ")).map(|l| format!("{l}\n")).collect();
    KeepaliveConfig::parse(&without).map_err(|e| err(format!("the imported configuration is refused: {e}")))?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_destination_becomes_a_target_with_a_passcode_file() {
        let yaml = "stompserver1: broker01\nstompserver2: broker02\nstompport1: 61613\nstompport2: 61614\n\
                    stomp-options: initialReconnectDelay=0.01&randomize=false&MaxReconnectAttempts=0&Backup=false&Timeout=-1\n\
                    topics:\n  future.git.commits:\n    user: gitbot\n    pass: GitBotPw1\n    type: topic\n  \
                    future.randomqueue.dev:\n    user: qu\n    pass: QueuePw2\n    type: queue\n";
        let i = import_legacy(yaml, &ImportOptions::default()).unwrap();
        assert!(!i.toml.contains("GitBotPw1") && !i.toml.contains("QueuePw2") && !i.notes.iter().any(|n| n.contains("Pw")), "{}", i.toml);
        assert!(i.toml.contains("failover:(stomp://broker01:61613,stomp://broker02:61614)?initialReconnectDelay=0.01"), "{}", i.toml);
        assert!(
            i.toml.contains("destination = \"/queue/future.randomqueue.dev\"") && i.toml.contains("passcode_file = \"/etc/deploykit/keepalive-future.git.commits.pass\""),
            "{}",
            i.toml
        );
        let e = import_legacy("stompserver1: b\ntopics:\n  x:\n    type: exchange\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("topics.x.type"), "{e}");
        let e = import_legacy("topics: {}\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("no broker"), "{e}");
    }
}
