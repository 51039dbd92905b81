//! `dk-fetch --import-legacy`: stomp-git's YAML → `fetch.toml`.
//!
//! stomp-git read `rserver` + `stomp-options` (the broker, password in the URL),
//! `listen-topic`, `report-topic` and `repo-list: NAME: {user, repo, target, mode}`.
//! The broker password becomes a `passcode_file` (see [`crate::legacy`]).

use super::config::FetchConfig;
use crate::config::ConfigError;
use crate::legacy::{broker_keys, err, get, key, load_yaml, q, scalar, Builder, ImportOptions, Imported};
use yaml_rust2::Yaml;

/// Converts stomp-git's YAML into the equivalent `fetch.toml`; settings without
/// an equivalent are kept as comments (values that may be secrets left out).
/// The result is checked with [`FetchConfig::parse`].
pub fn import_legacy(yaml: &str, options: &ImportOptions) -> Result<Imported, ConfigError> {
    let top = load_yaml(yaml)?;
    let mut b = Builder::new("Imported from stomp-git's YAML by dk-fetch --import-legacy.", options);
    b.out.push_str("wire = \"legacy\"\n");
    b.topics(&top, &[("listen-topic", "commits_topic"), ("report-topic", "events_topic")]);
    let mut repos = String::new();
    let mut found = false;
    for (k, v) in &top {
        let name = scalar(k).unwrap_or_default();
        match name.as_str() {
            "listen-topic" | "report-topic" | "stomp-options" => {}
            "rserver" => {}
            "repo-list" => {
                found = true;
                let Yaml::Hash(list) = v else {
                    return Err(err("repo-list: expected a mapping of NAME: {user, repo, target, mode}"));
                };
                for (name, entry) in list {
                    let name = scalar(name).ok_or_else(|| err("repo-list: a repository name is not a string"))?;
                    let Yaml::Hash(entry) = entry else {
                        return Err(err(format!("repo-list.{name}: expected a mapping")));
                    };
                    let path = get(entry, "repo").ok_or_else(|| err(format!("repo-list.{name}: missing repo (the clone's path)")))?;
                    repos.push_str(&format!("\n[repos.{}]\npath = {}\n", key(&name), q(&path)));
                    repos.push_str(&format!("mode = {}\n", q(&get(entry, "mode").unwrap_or_else(|| "normal".into()))));
                    for f in ["target", "branch", "user"] {
                        if let Some(v) = get(entry, f) {
                            repos.push_str(&format!("{f} = {}\n", q(&v)));
                        }
                    }
                    let mut skipped = Builder::new("", &ImportOptions::default());
                    skipped.out.clear();
                    for (k, v) in entry {
                        let k = scalar(k).unwrap_or_default();
                        if !matches!(k.as_str(), "repo" | "mode" | "target" | "branch" | "user") {
                            skipped.skipped(&k, v);
                        }
                    }
                    repos.push_str(&skipped.out);
                }
            }
            _ => b.skipped(&name, v),
        }
    }
    if !found {
        return Err(err("no repo-list"));
    }
    if let Some(url) = get(&top, "rserver") {
        let keys = broker_keys(&mut b, "rserver", &url, get(&top, "stomp-options").as_deref(), "passcode", "/etc/deploykit/passcode")?;
        b.out.push_str(&format!("\n[broker]\n{keys}"));
    }
    b.out.push_str(&repos);
    let imported = b.finish();
    FetchConfig::parse(&imported.toml).map_err(|e| err(format!("the imported configuration is refused: {e}")))?;
    Ok(imported)
}
