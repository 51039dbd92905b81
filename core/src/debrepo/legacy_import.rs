//! `dk-reprepro --import-legacy`: auto-reprepro's YAML → `reprepro.toml`.
//!
//! auto-reprepro read `rserver` + `stomp-options`, `report-topic`,
//! `package-topic`, `incoming-dir` and `distro-list`, and ran
//! `reprepro -Vb /var/www/repo includedeb DISTRO FILE` for each `.deb` in
//! `INCOMING-DIR/DISTRO/`, moving it to `INCOMING-DIR/DISTRO/archive/` afterwards.
//! The repository base was fixed in the script: the import uses the same
//! (`/var/www/repo`) and says so.

use super::config::RepreproConfig;
use crate::config::ConfigError;
use crate::legacy::{broker_keys, err, get, key, load_yaml, q, scalar, Builder, ImportOptions, Imported};
use yaml_rust2::Yaml;

/// The base auto-reprepro passed to `reprepro -b`.
pub const LEGACY_BASE: &str = "/var/www/repo";

/// Converts auto-reprepro's YAML into the equivalent `reprepro.toml` (checked with [`RepreproConfig::parse`]).
pub fn import_legacy(yaml: &str, options: &ImportOptions) -> Result<Imported, ConfigError> {
    let top = load_yaml(yaml)?;
    let mut b = Builder::new("Imported from auto-reprepro's YAML by dk-reprepro --import-legacy.", options);
    b.out.push_str(&format!("wire = \"legacy\"\n# auto-reprepro ran `reprepro -b {LEGACY_BASE}`: change base if your repository lives elsewhere.\nbase = {}\n", q(LEGACY_BASE)));
    b.note(format!("base = {LEGACY_BASE} (what auto-reprepro passed to reprepro -b): change it if your repository is elsewhere"));
    b.topics(&top, &[("package-topic", "packages_topic"), ("report-topic", "events_topic")]);
    let incoming = get(&top, "incoming-dir").ok_or_else(|| err("missing incoming-dir"))?;
    if !incoming.starts_with('/') {
        return Err(err(format!("incoming-dir: {incoming:?} is not an absolute path")));
    }
    let Some(Yaml::Array(distros)) = top.get(&Yaml::String("distro-list".into())) else {
        return Err(err("distro-list: expected a list of distribution names"));
    };
    for (k, v) in &top {
        let k = scalar(k).unwrap_or_default();
        if !matches!(k.as_str(), "rserver" | "stomp-options" | "package-topic" | "report-topic" | "incoming-dir" | "distro-list") {
            b.skipped(&k, v);
        }
    }
    if let Some(url) = get(&top, "rserver") {
        let keys = broker_keys(&mut b, "rserver", &url, get(&top, "stomp-options").as_deref(), "passcode", "/etc/deploykit/passcode")?;
        b.out.push_str(&format!("\n[broker]\n{keys}"));
    }
    for d in distros {
        let d = scalar(d).ok_or_else(|| err("distro-list: an entry is not a name"))?;
        let dir = std::path::Path::new(&incoming).join(&d);
        b.out.push_str(&format!("\n[dists.{}]\nincoming = {}\n", key(&d), q(&dir.display().to_string())));
    }
    let imported = b.finish();
    RepreproConfig::parse(&imported.toml).map_err(|e| err(format!("the imported configuration is refused: {e}")))?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distros_become_dists_with_the_original_directories() {
        let yaml = "rserver: failover://(stomp://gituser:RepoPw9@broker01:61613)\nreport-topic: future.events.repository\npackage-topic: future.package.updates\n\
                    incoming-dir: '/home/jenkins-ci/'\ndistro-list:\n  - lenny\n  - wheezy\njenkins-projects: x\n";
        let i = import_legacy(yaml, &ImportOptions::default()).unwrap();
        assert!(!i.toml.contains("RepoPw9"), "{}", i.toml);
        let c = RepreproConfig::parse(&i.toml).unwrap();
        let d = &c.dists["wheezy"];
        assert_eq!((d.incoming.to_str(), d.archive.to_str()), (Some("/home/jenkins-ci/wheezy"), Some("/home/jenkins-ci/wheezy/archive")));
        assert_eq!((c.packages_topic.as_str(), c.events_topic.as_str()), ("/topic/future.package.updates", "/topic/future.events.repository"));
        let e = import_legacy("incoming-dir: /x\ndistro-list:\n  - \"-bad\"\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("dists.-bad"), "{e}");
    }
}
