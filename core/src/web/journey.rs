//! The HTML of the Changes pages: every push with its journey at a glance,
//! and one push's timeline (live through `app.js`).

use super::changes::{describe, Bounds, Change, Step, Summary};
use super::pages::{layout, result_badge, when, Ctx};
use maud::{html, Markup};

fn short(rev: &str) -> &str {
    rev.get(..10).unwrap_or(rev)
}

fn build_badges(s: &Summary) -> Markup {
    html! {
        @if s.builds.is_empty() { span.badge.unknown { "no build" } }
        @for (job, n, status) in &s.builds {
            @let class = match status.as_str() { "success" => "ok", "started" => "running", _ => "failed" };
            span class={ "badge " (class) } data-job=(job) title={ (job) " #" (n) } { (job) " #" (n) " " (status) }
            " "
        }
    }
}

/// "www (web01, web02); shop (web03)": the servers a change is live on, by site.
pub fn live_where(live: &[(String, String)]) -> String {
    let mut by_site: Vec<(&str, Vec<&str>)> = Vec::new();
    for (site, node) in live {
        match by_site.iter_mut().find(|(s, _)| s == site) {
            Some((_, nodes)) => nodes.push(node),
            None => by_site.push((site, vec![node])),
        }
    }
    by_site.iter().map(|(s, nodes)| format!("{s} ({})", nodes.join(", "))).collect::<Vec<_>>().join("; ")
}

fn live_badge(s: &Summary) -> Markup {
    html! {
        @if s.live.is_empty() { "·" }
        @else { span.badge.ok title=(live_where(&s.live)) { "live on " (s.live.len()) } }
    }
}

/// `/changes`: the newest pushes first, each with builds, fetches and a flag.
pub fn list(ctx: &Ctx, changes: &[(Change, Summary)], bounds: &Bounds) -> Markup {
    layout(
        ctx,
        "Changes",
        html! {
            h1 { "Changes" }
            p.meta { "Every push heard on the bus, newest first: its builds and the servers that fetched it. Kept: the newest " (bounds.keep) "." }
            table.changes #changes {
                thead { tr { th { "when" } th { "repo" } th { "ref" } th { "commit" } th { "by" } th { "builds" } th { "servers" } th { "live" } } }
                tbody {
                    @for (c, s) in changes {
                        tr data-change=(c.id) data-flagged[s.flagged] {
                            td { (when(c.pushed_at)) }
                            td { (c.repo) }
                            td { (c.refname) }
                            td { a href={ "/changes/" (c.id) } { code { (short(&c.newrev)) } } " " (c.subject.as_deref().unwrap_or("")) }
                            td { (c.author.as_deref().unwrap_or("")) }
                            td.builds { (build_badges(s)) }
                            td.fetched { (s.fetched) " of " (s.servers) @if s.flagged { " " span.badge.failed { "late" } } @if !s.failures.is_empty() { " " span.badge.failed { (s.failures.len()) " failed" } } }
                            td.live data-live=(s.live.len()) { (live_badge(s)) }
                        }
                    }
                }
            }
            @if changes.is_empty() { p #no-changes { "No push heard yet. Commit messages arrive on the commits topic (see [changes] in web.toml)." } }
        },
    )
}

/// `/changes/{id}`: one push's timeline, with its summary.
pub fn journey(ctx: &Ctx, c: &Change, steps: &[Step], s: &Summary, bounds: &Bounds) -> Markup {
    layout(
        ctx,
        &format!("Change {}", short(&c.newrev)),
        html! {
            div #journey-page data-change=(c.id) {
                h1 { "Change " code { (short(&c.newrev)) } " to " (c.repo) " " small { (c.refname) } }
                p.meta {
                    @if let Some(a) = &c.author { "by " b { (a) } ", " }
                    "pushed " (when(c.pushed_at)) " via " (c.source) ", correlation id " code { (c.id) }
                }
                @if let Some(subject) = &c.subject { p.subject { (subject) } }
                section.summary {
                    p #builds { "Builds: " (build_badges(s)) }
                    p #fetched { "Fetched on " b #fetched-count { (s.fetched) } " of " b #server-count { (s.servers) } " servers"
                        @if let Some((node, ms)) = &s.slowest { " (slowest: " (node) ", " (ms) " ms)" } }
                    p #live { "Live on " b #live-count { (s.live.len()) } " servers" span #live-where { @if !s.live.is_empty() { ": " (live_where(&s.live)) } } }
                    p #flag .warn hidden[!s.flagged] { "Not on every server " (humantime::format_duration(bounds.reconcile_after)) " after the push." }
                    ul #failures .error { @for (node, why) in &s.failures { li data-node=(node) { (node) ": " (why) } } }
                    p #summary-line .meta { (s.line(bounds)) }
                }
                h2 { "Journey" }
                ol #journey .timeline {
                    @for step in steps {
                        li.step data-stage=(step.stage) data-seq=(step.seq) data-ok=[step.ok.map(|o| if o { "true" } else { "false" })] {
                            span.time { (when(step.at)) } " "
                            @match step.ok { Some(true) => (result_badge("ok")), Some(false) => (result_badge("failed")), None => span class={ "badge " (if step.stage == "event" || step.stage == "off" { "event" } else { "running" }) } { (step.stage) } }
                            " " span.text { (describe(step)) }
                        }
                    }
                }
            }
        },
    )
}
