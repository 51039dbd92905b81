//! `dk-jenkins --import-legacy`: stomp-jenkins' YAML → `jenkins.toml`.
//!
//! stomp-jenkins read `rserver` + `stomp-options`, `listen-topic`, `report-topic`,
//! `jenkins-url`, and one entry per repo (legacy-wire.md, "Jenkins trigger"):
//! - `REPO: TICKET`: the job named like the repo, triggered with that build token;
//! - `REPO: {project, ticket, ignore_refs}`: another job name, an ignore regex;
//! - `REPO: {PROJECT: {project, ticket, ignore_refs}, …}`: SVN, per project.
//!
//! (Entries may also sit under `repos:` or `repo-list:`.) Tickets and the broker
//! password become `token_file` / `passcode_file` references, never text in the TOML.

use super::config::JenkinsConfig;
use crate::config::ConfigError;
use crate::legacy::{broker_keys, err, file_name, get, key, load_yaml, q, scalar, Builder, ImportOptions, Imported};
use yaml_rust2::{yaml::Hash, Yaml};

/// Settings of stomp-jenkins itself (every other top-level key is a repo).
const SETTINGS: &[&str] = &["rserver", "stomp-options", "listen-topic", "report-topic", "jenkins-url", "repos", "repo-list"];

/// Converts stomp-jenkins' YAML into the equivalent `jenkins.toml` (checked with [`JenkinsConfig::parse`]).
pub fn import_legacy(yaml: &str, options: &ImportOptions) -> Result<Imported, ConfigError> {
    let top = load_yaml(yaml)?;
    let mut b = Builder::new("Imported from stomp-jenkins' YAML by dk-jenkins --import-legacy.", options);
    b.out.push_str("wire = \"legacy\"\n");
    b.topics(&top, &[("listen-topic", "commits_topic"), ("report-topic", "events_topic")]);
    if let Some(url) = get(&top, "rserver") {
        let keys = broker_keys(&mut b, "rserver", &url, get(&top, "stomp-options").as_deref(), "passcode", "/etc/deploykit/passcode")?;
        b.out.push_str(&format!("\n[broker]\n{keys}"));
    }
    let jenkins = get(&top, "jenkins-url").ok_or_else(|| err("missing jenkins-url"))?;
    let section = jenkins_section(&mut b, &jenkins)?;
    b.out.push_str(&format!("\n[jenkins]\n{section}"));

    // Repos: top-level keys that are not settings, and the entries of `repos:` / `repo-list:`.
    let mut entries: Vec<(String, &Yaml)> = Vec::new();
    for (k, v) in &top {
        let name = scalar(k).ok_or_else(|| err("a top-level key is not a string"))?;
        match (name.as_str(), v) {
            ("repos" | "repo-list", Yaml::Hash(h)) => {
                for (rk, rv) in h {
                    entries.push((scalar(rk).ok_or_else(|| err(format!("{name}: a repository name is not a string")))?, rv));
                }
            }
            ("repos" | "repo-list", _) => return Err(err(format!("{name}: expected a mapping of REPO: ticket or {{project, ticket, ignore_refs}}"))),
            (n, _) if SETTINGS.contains(&n) => {}
            _ => entries.push((name, v)),
        }
    }
    if entries.is_empty() {
        return Err(err("no repositories (REPO: ticket, or REPO: {project, ticket, ignore_refs})"));
    }
    for (repo, v) in entries {
        match v {
            Yaml::Hash(h) if is_job(h) => job(&mut b, &format!("[[repos.{}.jobs]]", key(&repo)), &repo, None, h)?,
            Yaml::Hash(h) => {
                for (pk, pv) in h {
                    let project = scalar(pk).ok_or_else(|| err(format!("{repo}: an SVN project name is not a string")))?;
                    let Yaml::Hash(ph) = pv else {
                        return Err(err(format!("{repo}.{project}: expected {{project, ticket, ignore_refs}}")));
                    };
                    job(&mut b, &format!("[[repos.{}.projects.{}.jobs]]", key(&repo), key(&project)), &repo, Some(&project), ph)?;
                }
            }
            other => {
                let ticket = scalar(other).ok_or_else(|| err(format!("{repo}: expected a build token or {{project, ticket, ignore_refs}}")))?;
                let mut h = Hash::new();
                h.insert(Yaml::String("ticket".into()), Yaml::String(ticket));
                job(&mut b, &format!("[[repos.{}.jobs]]", key(&repo)), &repo, None, &h)?;
            }
        }
    }
    let imported = b.finish();
    JenkinsConfig::parse(&imported.toml).map_err(|e| err(format!("the imported configuration is refused: {e}")))?;
    Ok(imported)
}

/// Whether a repo's mapping is one job (`project`, `ticket`, `ignore_refs`) rather than SVN projects.
fn is_job(h: &Hash) -> bool {
    ["project", "ticket", "ignore_refs", "token"].iter().any(|k| h.contains_key(&Yaml::String((*k).into())))
}

/// One `[[…jobs]]` entry: the job (`project`, default the repo / SVN project name),
/// its token as a file reference, `ignore_refs`.
fn job(b: &mut Builder, header: &str, repo: &str, project: Option<&str>, h: &Hash) -> Result<(), ConfigError> {
    let job = get(h, "project").unwrap_or_else(|| project.unwrap_or(repo).to_owned());
    b.out.push_str(&format!("\n{header}\njob = {}\n", q(&job)));
    if let Some(ticket) = get(h, "ticket").or_else(|| get(h, "token")) {
        let name = match project {
            Some(p) => format!("{repo}-{p}"),
            None => repo.to_owned(),
        };
        let file = file_name(&format!("jenkins-{name}.token"));
        let placeholder = format!("/etc/deploykit/tokens/{}", file_name(&name));
        let path = b.secret(&format!("build token of Jenkins job {job:?}"), &file, &placeholder, &ticket);
        b.out.push_str(&format!("token_file = {}\n", q(&path.display().to_string())));
    }
    if let Some(r) = get(h, "ignore_refs") {
        b.out.push_str(&format!("ignore_refs = {}\n", q(&r)));
    }
    for (k, v) in h {
        let k = scalar(k).unwrap_or_default();
        if !matches!(k.as_str(), "project" | "ticket" | "token" | "ignore_refs") {
            b.skipped(&k, v);
        }
    }
    Ok(())
}

/// The `[jenkins]` keys for `jenkins-url`; credentials in the URL become `user` and an `api_token_file`.
fn jenkins_section(b: &mut Builder, url: &str) -> Result<String, ConfigError> {
    let mut u = url::Url::parse(url.trim()).map_err(|e| err(format!("jenkins-url: not a URL ({e})")))?;
    let user = (!u.username().is_empty()).then(|| percent_encoding::percent_decode_str(u.username()).decode_utf8_lossy().into_owned());
    let password = u.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let mut out = format!("url = {}\n", q(u.as_str()));
    match (user, password) {
        (Some(user), Some(pass)) => {
            out.push_str(&format!("user = {}\n", q(&user)));
            let path = b.secret(&format!("Jenkins API token of user {user:?}"), "jenkins-api-token", "/etc/deploykit/jenkins-api-token", &pass);
            out.push_str(&format!("api_token_file = {}\n", q(&path.display().to_string())));
        }
        (Some(user), None) => b.note(format!("jenkins-url named user {user:?} without a password: add user and api_token_file to [jenkins] if Jenkins needs them")),
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_repo_form_and_no_ticket_in_the_output() {
        let yaml = "rserver: stomp://gituser:brokerpw@mq:61613\nlisten-topic: future.git.commits\nreport-topic: future.events.jenkins\n\
                    jenkins-url: http://ci:8080\npuppet-environments: MagicJenkinsPassword\n\
                    site:\n  project: web%20site\n  ticket: SiteTicket42\n  ignore_refs: refs/tags/jenkins-.*\n\
                    svnrepo:\n  webapp:\n    project: webapp-build\n    ticket: SvnTicket7\n";
        let i = import_legacy(yaml, &ImportOptions::default()).unwrap();
        for secret in ["brokerpw", "MagicJenkinsPassword", "SiteTicket42", "SvnTicket7"] {
            assert!(!i.toml.contains(secret) && !i.notes.iter().any(|n| n.contains(secret)), "{secret}: {}\n{:?}", i.toml, i.notes);
        }
        let c = JenkinsConfig::parse(&i.toml).unwrap();
        assert_eq!(c.commits_topic, "/topic/future.git.commits");
        assert_eq!(c.events_topic, "/topic/future.events.jenkins");
        let pe = &c.repos["puppet-environments"].jobs[0];
        assert_eq!(
            (pe.job.as_str(), pe.token.clone()),
            ("puppet-environments", Some(super::super::config::SecretSource::File("/etc/deploykit/tokens/puppet-environments".into())))
        );
        let site = &c.repos["site"].jobs[0];
        assert_eq!(site.job, "web site");
        assert!(site.ignore_refs.as_ref().unwrap().is_match("refs/tags/jenkins-12"));
        assert_eq!(c.repos["svnrepo"].projects["webapp"][0].job, "webapp-build");
        assert_eq!(i.notes.iter().filter(|n| n.contains("/etc/deploykit/tokens/")).count(), 3, "{:?}", i.notes);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = import_legacy("listen-topic: x\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("jenkins-url"), "{e}");
        let e = import_legacy("jenkins-url: http://ci/\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("no repositories"), "{e}");
        let e = import_legacy("jenkins-url: http://ci/\nsite:\n  ticket: t\n  ignore_refs: \"(\"\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("repos.site.jobs.ignore_refs"), "{e}");
        let e = import_legacy("jenkins-url: http://u:hunter2@ci/\nsite: [1]\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("site") && !e.contains("hunter2"), "{e}");
    }
}
