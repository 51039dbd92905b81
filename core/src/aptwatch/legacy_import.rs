//! `dk-apt-watch --import-legacy`: stomp-repo's YAML → `apt-watch.toml`.
//!
//! stomp-repo was configured like its siblings: `rserver` + `stomp-options`,
//! `listen-topic` (the package topic, `future.package.updates`), `report-topic`,
//! and the packages it cares about, a list under `packages` (also read:
//! `package-list`, `watch-list`). It ran `apt-get update` when one of them changed.

use super::config::AptWatchConfig;
use crate::config::ConfigError;
use crate::legacy::{broker_keys, err, get, load_yaml, q, scalar, Builder, ImportOptions, Imported};
use yaml_rust2::Yaml;

/// The keys a package list may sit under.
const LISTS: &[&str] = &["packages", "package-list", "watch-list"];

/// Converts stomp-repo's YAML into the equivalent `apt-watch.toml` (checked with [`AptWatchConfig::parse`]).
pub fn import_legacy(yaml: &str, options: &ImportOptions) -> Result<Imported, ConfigError> {
    let top = load_yaml(yaml)?;
    let mut b = Builder::new("Imported from stomp-repo's YAML by dk-apt-watch --import-legacy.", options);
    b.out.push_str("wire = \"legacy\"\n");
    b.topics(&top, &[("listen-topic", "packages_topic"), ("report-topic", "events_topic")]);
    let mut packages = Vec::new();
    for l in LISTS {
        match top.get(&Yaml::String((*l).into())) {
            None => {}
            Some(Yaml::Array(a)) => {
                for p in a {
                    packages.push(scalar(p).ok_or_else(|| err(format!("{l}: an entry is not a package name")))?);
                }
            }
            Some(Yaml::Hash(h)) => {
                for (p, _) in h {
                    packages.push(scalar(p).ok_or_else(|| err(format!("{l}: an entry is not a package name")))?);
                }
            }
            Some(_) => return Err(err(format!("{l}: expected a list of package names"))),
        }
    }
    if packages.is_empty() {
        return Err(err(format!("no packages ({} — a list of package names)", LISTS.join(", "))));
    }
    let list: Vec<String> = packages.iter().map(|p| q(p)).collect();
    b.out.push_str(&format!("packages = [{}]\non = [\"added\"]\naction = [\"apt-get\", \"update\"]\n", list.join(", ")));
    for (k, v) in &top {
        let k = scalar(k).unwrap_or_default();
        if !matches!(k.as_str(), "rserver" | "stomp-options" | "listen-topic" | "report-topic") && !LISTS.contains(&k.as_str()) {
            b.skipped(&k, v);
        }
    }
    if let Some(url) = get(&top, "rserver") {
        let keys = broker_keys(&mut b, "rserver", &url, get(&top, "stomp-options").as_deref(), "passcode", "/etc/deploykit/passcode")?;
        b.out.push_str(&format!("\n[broker]\n{keys}"));
    }
    let imported = b.finish();
    AptWatchConfig::parse(&imported.toml).map_err(|e| err(format!("the imported configuration is refused: {e}")))?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_and_topics() {
        let yaml = "rserver: stomp://repo:AptPw3@mq:61613\nlisten-topic: future.package.updates\nreport-topic: future.events.repository\npackages:\n  - site-assets\n  - nginx\n";
        let i = import_legacy(yaml, &ImportOptions::default()).unwrap();
        assert!(!i.toml.contains("AptPw3") && !i.notes.iter().any(|n| n.contains("AptPw3")), "{}", i.toml);
        let c = AptWatchConfig::parse(&i.toml).unwrap();
        assert!(c.packages.is_match("nginx") && !c.packages.is_match("apache2"));
        assert_eq!(c.packages_topic, "/topic/future.package.updates");
        assert!(import_legacy("listen-topic: x\n", &ImportOptions::default()).unwrap_err().to_string().contains("no packages"));
        let e = import_legacy("packages:\n  - \"[oops\"\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("packages"), "{e}");
    }
}
