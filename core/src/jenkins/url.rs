//! Jenkins URLs: job names (folders `a/b/c` → `job/a/job/b/job/c`, each
//! segment percent-encoded) and the remote-trigger endpoints.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What stays literal in a path segment (RFC 3986 unreserved); everything else is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Decodes percent-escapes in a configured job name (legacy configs wrote `site%20build`).
pub fn decode_job_name(name: &str) -> String {
    percent_decode_str(name.trim()).decode_utf8_lossy().into_owned()
}

/// The URL path of a job: `a/b c` → `job/a/job/b%20c`.
pub fn job_path(job: &str) -> String {
    job.split('/').filter(|s| !s.is_empty()).map(|s| format!("job/{}", utf8_percent_encode(s, SEGMENT))).collect::<Vec<_>>().join("/")
}

/// The base URL with exactly one trailing slash.
fn base(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}

/// `BASE/job/…/build` or `…/buildWithParameters`.
pub fn trigger_url(base_url: &str, job: &str, with_parameters: bool) -> String {
    format!("{}{}/{}", base(base_url), job_path(job), if with_parameters { "buildWithParameters" } else { "build" })
}

/// `BASE/crumbIssuer/api/json`.
pub fn crumb_url(base_url: &str) -> String {
    format!("{}crumbIssuer/api/json", base(base_url))
}

/// Encodes query or form pairs (`application/x-www-form-urlencoded`).
pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_escapes() {
        assert_eq!(job_path("a/b/c"), "job/a/job/b/job/c");
        assert_eq!(job_path("site build"), "job/site%20build");
        assert_eq!(job_path(&decode_job_name("site%20build")), "job/site%20build");
        assert_eq!(job_path("x?y#z/ü"), "job/x%3Fy%23z/job/%C3%BC");
        assert_eq!(trigger_url("http://ci:8080/jenkins", "a/b", false), "http://ci:8080/jenkins/job/a/job/b/build");
        assert_eq!(trigger_url("http://ci/", "a", true), "http://ci/job/a/buildWithParameters");
        assert_eq!(crumb_url("http://ci"), "http://ci/crumbIssuer/api/json");
        assert_eq!(form(&[("token", "a b&c"), ("REPO", "site")]), "token=a+b%26c&REPO=site");
    }
}
