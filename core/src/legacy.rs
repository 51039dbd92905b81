//! What every `--import-legacy` shares: reading the original future-deploykit's
//! YAML, turning its `rserver` + `stomp-options` into a `[broker]` section, and
//! keeping secrets out of the generated TOML.
//!
//! A secret (a broker password, a Jenkins build token) is never written into
//! the TOML, a comment, a note or an error: the TOML names a file instead
//! (`passcode_file`, `token_file`). With a secrets directory
//! ([`ImportOptions::secrets_dir`]) the importer hands back the secret for that
//! file ([`Imported::write_secrets`] writes it, mode 0600, durably); without
//! one, the TOML names a placeholder path and a note tells the operator to put
//! the secret there.

use crate::config::ConfigError;
use crate::stomp::url::{BrokerUrl, Secret};
use std::path::{Path, PathBuf};
use yaml_rust2::{yaml::Hash, Yaml, YamlLoader};

/// How an import treats secrets.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Where secret files are written; `None`: placeholders and a note each.
    pub secrets_dir: Option<PathBuf>,
}

/// A secret the operator asked to be written to its own file.
#[derive(Debug, Clone)]
pub struct SecretFile {
    /// The file the generated TOML names.
    pub path: PathBuf,
    /// Its content (first line).
    pub value: Secret,
}

/// The result of an import: the TOML, notes for the operator, secret files to write.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// The new configuration (checked by the tool's own parser).
    pub toml: String,
    /// One line each, for stderr: what to do by hand. Never holds a secret.
    pub notes: Vec<String>,
    /// Secrets to write (only with [`ImportOptions::secrets_dir`]).
    pub secrets: Vec<SecretFile>,
}

impl Imported {
    /// Writes every secret file (mode 0600, temp file + fsync + rename), creating
    /// the directory (mode 0700) when missing.
    pub fn write_secrets(&self) -> Result<(), crate::durable::DurableError> {
        for s in &self.secrets {
            if let Some(dir) = s.path.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| crate::durable::DurableError { path: dir.to_owned(), source })?;
            }
            crate::durable::write_atomic(&s.path, format!("{}\n", s.value.expose()).as_bytes())?;
        }
        Ok(())
    }
}

/// The legacy error of an import.
pub(crate) fn err(message: impl Into<String>) -> ConfigError {
    ConfigError::Legacy(message.into())
}

/// The first YAML document of `text`, which must be a mapping.
pub(crate) fn load_yaml(text: &str) -> Result<Hash, ConfigError> {
    // The scanner's message quotes no input beyond a position.
    let docs = YamlLoader::load_from_str(text).map_err(|e| err(e.to_string()))?;
    match docs.into_iter().next() {
        Some(Yaml::Hash(h)) => Ok(h),
        Some(_) => Err(err("expected a mapping at the top level")),
        None => Err(err("empty document")),
    }
}

/// A scalar as text (strings, numbers, booleans); `None` for lists, mappings and null.
pub(crate) fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `map[key]` as text.
pub(crate) fn get(map: &Hash, key: &str) -> Option<String> {
    map.get(&Yaml::String(key.into())).and_then(scalar)
}

/// A TOML basic string.
pub(crate) fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML key (bare when it can be).
pub(crate) fn key(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')) {
        s.to_owned()
    } else {
        q(s)
    }
}

/// `/topic/NAME` for the original's bare topic names; destinations kept as given.
pub(crate) fn topic(name: &str) -> String {
    let name = name.trim();
    if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("/topic/{name}")
    }
}

/// Whether a setting's name suggests a secret (its value is then never shown).
pub(crate) fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "pw", "secret", "token", "ticket", "key", "auth", "cred", "rserver", "url"].iter().any(|w| k.contains(w))
}

/// A file name made of `name`'s safe characters (`_` for the others).
pub(crate) fn file_name(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    s.trim_start_matches('.').to_owned()
}

/// Builds an import: the TOML text, the notes and the secret files.
pub(crate) struct Builder {
    /// The TOML so far.
    pub out: String,
    notes: Vec<String>,
    secrets: Vec<SecretFile>,
    dir: Option<PathBuf>,
}

impl Builder {
    /// A builder whose TOML starts with `header` (a comment line).
    pub fn new(header: &str, options: &ImportOptions) -> Builder {
        let dir = options.secrets_dir.as_ref().map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()));
        Builder { out: format!("# {header}\n"), notes: Vec::new(), secrets: Vec::new(), dir }
    }

    /// `OUT = "/topic/…"` for each `(YAML key, TOML key)` pair whose key the YAML has
    /// (the original's bare topic names become `/topic/` destinations).
    pub fn topics(&mut self, top: &Hash, pairs: &[(&str, &str)]) {
        for (k, out) in pairs {
            if let Some(t) = get(top, k) {
                self.out.push_str(&format!("{out} = {}\n", q(&topic(&t))));
            }
        }
    }

    /// A note for the operator (stderr).
    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// The file a secret goes to: `DIR/file` (and the secret is kept for writing)
    /// with a secrets directory, else `placeholder` and a note telling where to put it.
    pub fn secret(&mut self, what: &str, file: &str, placeholder: &str, value: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => {
                let path = dir.join(file);
                self.notes.push(format!("the {what} goes to {} (mode 0600); it is not copied into the configuration", path.display()));
                self.secrets.push(SecretFile { path: path.clone(), value: Secret::new(value) });
                path
            }
            None => {
                self.notes.push(format!("put the {what} in {placeholder} (first line, mode 0600): it is not copied into the configuration (or re-run with --secrets-dir DIR)"));
                PathBuf::from(placeholder)
            }
        }
    }

    /// `# not imported: KEY = VALUE`, the value left out when it may be a secret.
    pub fn skipped(&mut self, k: &str, v: &Yaml) {
        let value = match scalar(v) {
            Some(s) if !looks_secret(k) && !s.contains('@') && !s.contains("://") => s.replace(['\n', '\r'], " "),
            Some(_) => "(value not shown: it may hold a secret)".into(),
            None => "(a list or mapping)".into(),
        };
        let k = k.replace(['\n', '\r'], " ");
        self.out.push_str(&format!("# not imported: {k} = {value}\n"));
    }

    /// The finished import.
    pub fn finish(self) -> Imported {
        Imported { toml: self.out, notes: self.notes, secrets: self.secrets }
    }
}

/// The `[broker]` section (or a `[[target]]`'s keys, with `section` = `None`) for
/// the original's `rserver` (`failover://(stomp://user:pass@h:p,…)`) and
/// `stomp-options`: the URL without credentials, `login`, and `passcode_file`
/// (the password goes where [`Builder::secret`] says). `what` names the setting in errors.
pub(crate) fn broker_keys(b: &mut Builder, what: &str, url: &str, options: Option<&str>, secret_file: &str, placeholder: &str) -> Result<String, ConfigError> {
    let full = match options.map(str::trim).filter(|o| !o.is_empty()) {
        Some(o) => format!("{}?{o}", url.trim()),
        None => url.trim().to_owned(),
    };
    let (parsed, options) = match BrokerUrl::parse(&full) {
        Ok(p) => (p, options.map(str::trim).filter(|o| !o.is_empty())),
        Err(crate::stomp::url::UrlError::Option { .. }) if options.is_some() => {
            // The URL is fine, an option is not: keep the URL, leave the options to the operator.
            let p = BrokerUrl::parse(url.trim()).map_err(|e| err(format!("{what}: {e}")))?;
            b.note(format!(
                "stomp-options: {} not understood by deploykit; left out (add them to [broker] url by hand if needed)",
                crate::stomp::url::redact(options.unwrap_or(""))
            ));
            (p, None)
        }
        // UrlError's messages redact passwords.
        Err(e) => return Err(err(format!("{what}: {e}"))),
    };
    let hosts: Vec<String> = parsed.endpoints.iter().map(|e| format!("{}://{}", if e.tls { "stomp+ssl" } else { "stomp" }, e.addr())).collect();
    let new_url =
        if hosts.len() == 1 && options.is_none() { hosts[0].clone() } else { format!("failover:({}){}", hosts.join(","), options.map(|o| format!("?{o}")).unwrap_or_default()) };
    BrokerUrl::parse(&new_url).map_err(|e| err(format!("{what}: {e}")))?;
    let mut out = format!("url = {}\n", q(&new_url));
    let first = &parsed.endpoints[0];
    if let Some(login) = &first.login {
        out.push_str(&format!("login = {}\n", q(login)));
    }
    if parsed.endpoints.iter().any(|e| e.login != first.login || e.passcode != first.passcode) {
        b.note(format!("{what}: the brokers have different credentials; deploykit uses one login and passcode for all (the first broker's)"));
    }
    if let Some(pass) = parsed.endpoints.iter().find_map(|e| e.passcode.as_ref()) {
        let who = first.login.as_deref().map(|l| format!(" of login {l:?}")).unwrap_or_default();
        let path = b.secret(&format!("broker passcode{who}"), secret_file, placeholder, pass.expose());
        out.push_str(&format!("passcode_file = {}\n", q(&path.display().to_string())));
    }
    Ok(out)
}

/// Reads a legacy file for an importer; errors name the file.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    crate::config::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_keys_drop_the_password_from_the_url() {
        let mut b = Builder::new("t", &ImportOptions::default());
        let keys = broker_keys(
            &mut b,
            "rserver",
            "failover://(stomp://gituser:s3cr%40t@broker01:61613,stomp://gituser:s3cr%40t@broker02:61613)",
            Some("initialReconnectDelay=0.01&randomize=false&MaxReconnectAttempts=0"),
            "passcode",
            "/etc/deploykit/passcode",
        )
        .unwrap();
        assert!(!keys.contains("s3cr") && keys.contains("login = \"gituser\"") && keys.contains("passcode_file = \"/etc/deploykit/passcode\""), "{keys}");
        assert!(keys.contains("failover:(stomp://broker01:61613,stomp://broker02:61613)?initialReconnectDelay=0.01"), "{keys}");
        let i = b.finish();
        assert!(i.secrets.is_empty() && i.notes.iter().any(|n| n.contains("/etc/deploykit/passcode")) && !i.notes.iter().any(|n| n.contains("s3cr")), "{:?}", i.notes);

        let dir = std::env::temp_dir().join(format!("dk-legacy-{}", std::process::id()));
        let mut b = Builder::new("t", &ImportOptions { secrets_dir: Some(dir.clone()) });
        let keys = broker_keys(&mut b, "rserver", "stomp://u:pw@mq:61613", Some("bogusOption=1"), "passcode", "/etc/deploykit/passcode").unwrap();
        assert_eq!(keys, format!("url = \"stomp://mq:61613\"\nlogin = \"u\"\npasscode_file = {}\n", q(&dir.join("passcode").display().to_string())));
        let i = b.finish();
        i.write_secrets().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("passcode")).unwrap(), "pw\n");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = broker_keys(&mut Builder::new("t", &ImportOptions::default()), "rserver", "http://u:hunter2@x", None, "p", "/p").unwrap_err().to_string();
        assert!(e.contains("rserver") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn skipped_settings_never_show_what_may_be_a_secret() {
        let mut b = Builder::new("t", &ImportOptions::default());
        b.skipped("stomp-server", &Yaml::String("localhost".into()));
        b.skipped("admin-password", &Yaml::String("hunter2".into()));
        b.skipped("mirror", &Yaml::String("stomp://u:hunter2@h".into()));
        let t = b.finish().toml;
        assert!(t.contains("stomp-server = localhost") && !t.contains("hunter2"), "{t}");
    }
}
