//! dk-web's deploy form (`core::web::form`): `application/x-www-form-urlencoded`
//! bodies from any browser, parsed against a site's defaults (tag names,
//! scope, identity filters and `/regex/`es, canary, batch size, failure limit).
//!
//! Input: flags byte (bit 0: the form needs a tag) then the body.
#![no_main]

use deploykit::web::config::SiteConfig;
use deploykit::web::form::{fields, DeployForm};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn site() -> &'static SiteConfig {
    static SITE: OnceLock<SiteConfig> = OnceLock::new();
    SITE.get_or_init(|| SiteConfig {
        name: "www".into(),
        repo: "www".into(),
        filters: Default::default(),
        tags: 20,
        deployers: vec!["*".into()],
        canary: 1,
        batch: "2".into(),
        max_failures: 0,
        require_reason: false,
        require_build: false,
        approvers: vec![],
        approval_expiry: std::time::Duration::from_secs(3600),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else { return };
    let _ = fields(body);
    if let Ok(form) = DeployForm::parse(body, site(), flags & 1 != 0) {
        assert!(form.canary <= 1000 && form.max_failures <= 100_000, "limits not applied: {form:?}");
        if flags & 1 != 0 {
            assert!(form.tag.is_some(), "a deploy form without a tag was accepted");
        }
    }
});
