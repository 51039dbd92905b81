//! The HTML pages, rendered on the server with maud (compiled in, every
//! interpolation escaped). Read-only pages need no JavaScript; `app.js` only
//! adds the live parts (deploy progress, activity feed).

use super::activity::Line;
use super::config::SiteConfig;
use super::fleet::{Server, SiteState};
use super::history::DeployRow;
use super::live::{DeployView, NodeView, STEPS};
use crate::message::DeployReply;
use maud::{html, Markup, DOCTYPE};

/// What every page needs to know about the request.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The user.
    pub user: String,
    /// Their CSRF token.
    pub csrf: String,
}

/// A UTC time for people.
pub fn when(secs: i64) -> String {
    let t = crate::git::push::rfc3339(secs, 0);
    t.replacen('T', " ", 1).trim_end_matches("+00:00").trim_end_matches('Z').to_owned() + " UTC"
}

/// The page frame: head, navigation, signed-in user.
pub(crate) fn layout(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · deploykit" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "deploykit" }
                    nav { a href="/" { "Sites" } a href="/changes" { "Changes" } a href="/history" { "History" } a href="/activity" { "Activity" } }
                    span.user { "signed in as " b #user { (ctx.user) } }
                }
                main { (body) }
            }
        }
    }
}

fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name=(super::csrf::FIELD) value=(ctx.csrf); }
}

/// A result as a coloured badge.
pub(crate) fn result_badge(result: &str) -> Markup {
    html! { span class={ "badge " (result) } { (result) } }
}

/// Per site: how many servers answer, releases grouped, the last deploy.
#[derive(Debug, Clone)]
pub struct SiteSummary<'a> {
    /// The site.
    pub site: &'a SiteConfig,
    /// Its servers.
    pub servers: Vec<&'a Server>,
    /// The last deploy.
    pub last: Option<DeployRow>,
}

/// "7 on v1.4.2, 1 on v1.4.1".
pub fn releases_line(site: &str, servers: &[&Server]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in servers {
        let r = s.release_tag(site).unwrap_or("nothing").to_owned();
        match counts.iter_mut().find(|(n, _)| *n == r) {
            Some(c) => c.1 += 1,
            None => counts.push((r, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.iter().map(|(r, n)| format!("{n} on {r}")).collect::<Vec<_>>().join(", ")
}

fn filters_text(f: &crate::message::Filters) -> String {
    let mut parts: Vec<String> = f.identity.iter().map(|i| format!("-I {i}")).collect();
    parts.extend(f.class.iter().map(|c| format!("-C {c}")));
    parts.extend(f.fact.iter().map(|(k, v)| format!("-F {k}={v}")));
    if parts.is_empty() {
        "all servers".into()
    } else {
        parts.join(" ")
    }
}

/// The sites page.
pub fn sites(ctx: &Ctx, sites: &[SiteSummary<'_>], problem: Option<&str>) -> Markup {
    layout(
        ctx,
        "Sites",
        html! {
            h1 { "Sites" }
            @if let Some(p) = problem { p.error { (p) } }
            @if sites.is_empty() { p { "No sites are configured: add [sites.NAME] sections to web.toml." } }
            table.sites {
                thead { tr { th { "site" } th { "selection" } th { "repo" } th { "servers" } th { "releases" } th { "last deploy" } } }
                tbody {
                    @for s in sites {
                        tr data-site=(s.site.name) {
                            td { a href={ "/sites/" (s.site.name) } { (s.site.name) } }
                            td { code { (filters_text(&s.site.filters)) } }
                            td { (s.site.repo) }
                            @let trusted: Vec<&Server> = s.servers.iter().copied().filter(|x| x.trusted()).collect();
                            @let untrusted = s.servers.len() - trusted.len();
                            td.num { (trusted.len()) @if untrusted > 0 { " " span.untrusted title="answers whose signature or identity is not trusted: never deployed to" { "+" (untrusted) " untrusted" } } }
                            td { (releases_line(&s.site.name, &trusted)) }
                            td {
                                @if let Some(d) = &s.last {
                                    a href={ "/deploys/" (d.id) } { (d.action) " " (d.tag.as_deref().unwrap_or("")) }
                                    " by " (d.user) ", " (when(d.started_at)) " " (result_badge(&d.result))
                                } @else { "never (from here)" }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The servers grouped by the release live on them (most servers first): more than one group is drift.
fn live_groups(site: &SiteConfig, state: &SiteState) -> Vec<(String, Vec<String>)> {
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for s in &state.servers {
        groups.entry(s.release_tag(&site.name).unwrap_or("nothing live").to_owned()).or_default().push(s.announce.identity.clone());
    }
    let mut v: Vec<(String, Vec<String>)> = groups.into_iter().collect();
    v.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    v
}

/// A tag's build status as a badge (green, red, running, or no build heard), the builds in its title.
fn build_badge(v: Option<&super::changes::Verdict>) -> Markup {
    use super::changes::Verdict;
    let (class, text, title) = match v {
        Some(Verdict::Green(b)) => ("ok", "green", b.as_str()),
        Some(Verdict::Red(b)) => ("failed", "red", b.as_str()),
        Some(Verdict::Running(b)) => ("running", "building", b.as_str()),
        Some(Verdict::Unknown) | None => ("unknown", "no build", "no build of this commit heard on the bus"),
    };
    html! { span class={ "badge " (class) } title=(title) data-build=(text) { (text) } }
}

/// A commit, shortened, with the full id in its title.
fn short_commit(c: &str) -> Markup {
    html! { code title=(c) { (c.get(..10).unwrap_or(c)) } }
}

/// A server's live commit and the newest it fetched, marked when the fetched one is ahead.
fn fetched_cells(f: Option<&super::changes::FetchedLive>) -> Markup {
    let f = f.cloned().unwrap_or_default();
    html! {
        td.commit { @if let Some(c) = &f.live { (short_commit(c)) } @else { "—" } }
        td.fetched data-fetched=[f.fetched.as_deref()] data-ahead[f.ahead] {
            @if let Some(c) = &f.fetched { (short_commit(c)) @if let Some(at) = f.fetched_at { " " small { (when(at)) } } } @else { "—" }
            @if f.ahead { " " span.badge.running.ahead title="this server fetched a newer commit than the one live" { "fetched ahead of live" } }
        }
    }
}

/// The site page: tags (with their build status), servers (live commit, newest fetch), lock, the deploy form.
#[allow(clippy::too_many_arguments)]
pub fn site(
    ctx: &Ctx,
    site: &SiteConfig,
    state: &SiteState,
    builds: &std::collections::BTreeMap<String, super::changes::Verdict>,
    fetched: &std::collections::BTreeMap<String, super::changes::FetchedLive>,
    may_deploy: bool,
    recent: &[DeployRow],
    problem: Option<&str>,
) -> Markup {
    let first = state.tags.first().or(state.branches.first()).map(|t| t.name.clone());
    layout(
        ctx,
        &site.name,
        html! {
            h1 { "Site " (site.name) }
            p.meta { "repo " b { (site.repo) } " · " code { (filters_text(&site.filters)) } " · " (state.servers.len()) " servers" }
            @if let Some(p) = problem { p.error { (p) } }
            @for l in &state.locks {
                p.locked data-lock-holder=(l.lock.user) {
                    "Locked on " b { (l.node) } " by " b { (l.lock.user) } " (" (l.lock.action) ", request " code { (l.lock.request_id) } ") until " (when(l.lock.expires_at as i64))
                }
            }
            @for (node, why) in &state.problems { p.warn { (node) ": " (why) } }
            form.deploy method="post" action={ "/sites/" (site.name) "/deploy" } {
                (csrf_field(ctx))
                div.columns {
                    section {
                        h2 { "Tags and branches" }
                        @if state.tags.is_empty() && state.branches.is_empty() { p { "No server answered with a tag list." } }
                        table.tags {
                            thead { tr { th {} th { "name" } th { "date" } th { "servers" } th { "build" } } }
                            tbody {
                                @for (kind, list) in [("tag", &state.tags), ("branch", &state.branches)] {
                                    @for t in list.iter() {
                                        tr class=(kind) {
                                            td { input type="radio" name="tag" value=(t.name) id={ "ref-" (t.name) } checked[Some(&t.name) == first.as_ref()]; }
                                            td { label for={ "ref-" (t.name) } { (t.name) } @if kind == "branch" { " " small { "(branch)" } } }
                                            td { (when(t.date)) }
                                            td.num { (t.servers) "/" (state.servers.len()) }
                                            td.build { @if kind == "tag" { (build_badge(builds.get(&t.name))) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    section {
                        h2 { "Servers" }
                        fieldset.scope {
                            label { input type="radio" name="scope" value="all" checked; " all " (state.servers.len()) }
                            label { input type="radio" name="scope" value="filter"; " matching " input type="text" name="filter" placeholder="web01 web02 or /^web0[12]$/" size="22"; }
                            label { input type="radio" name="scope" value="pick"; " the ticked ones" }
                        }
                        @let groups = live_groups(site, state);
                        @if !groups.is_empty() {
                            p #live-groups .meta data-drift[groups.len() > 1] {
                                @if groups.len() > 1 { span.badge.running { "drift" } " " }
                                @for (i, (tag, names)) in groups.iter().enumerate() {
                                    @if i > 0 { "; " }
                                    b { (tag) } " on " (names.len()) " (" (names.join(", ")) ")"
                                }
                            }
                        }
                        table.servers {
                            thead { tr { th {} th { "server" } th { "classes" } th { "release" } th { "live commit" } th { "newest fetched" } th { "last seen" } } }
                            tbody {
                                @for s in &state.servers {
                                    tr data-server=(s.announce.identity) {
                                        td { input type="checkbox" name="node" value=(s.announce.identity); }
                                        td { (s.announce.identity) }
                                        td { (s.announce.classes.join(", ")) }
                                        td { (s.release_tag(&site.name).unwrap_or("—")) }
                                        (fetched_cells(fetched.get(&s.announce.identity)))
                                        td { (when(s.last_seen)) }
                                    }
                                }
                                @for s in &state.untrusted {
                                    tr.untrusted data-untrusted=(s.announce.identity) {
                                        td {}
                                        td { (s.announce.identity) }
                                        td colspan="5" { "untrusted: " (s.untrusted.as_deref().unwrap_or("?")) " (never deployed to)" }
                                    }
                                }
                            }
                        }
                        h2 { "Rollout" }
                        div.knobs {
                            label { "canary " input type="number" name="canary" min="0" value=(site.canary); }
                            label { "batch " input type="text" name="batch" size="5" value=(site.batch); }
                            label { "max failures " input type="number" name="max_failures" min="0" value=(site.max_failures); }
                            label.reason { "reason " input type="text" name="reason" maxlength="1000" size="40" placeholder="ticket or why" required[site.require_reason]; }
                            label title="Without this, a deploy stops before any server changes when a known server of the site does not answer" {
                                input type="checkbox" name="allow_missing" value="1"; " deploy even if servers are missing"
                            }
                        }
                        div.actions {
                            button type="submit" formaction={ "/sites/" (site.name) "/preview" } name="preview" value="1" { "Preview (dry run)" }
                            @if may_deploy { button.primary type="submit" #deploy { @if site.approvers.is_empty() { "Deploy" } @else { "Ask to deploy" } } }
                            @else { span.note { "You may view this site; deploying it is for " (site.deployers.join(", ")) "." } }
                            @if !site.approvers.is_empty() { span.note #needs-approval { " A deploy waits until " (super::approvals::who(site)) " approves it (not the requester)." } }
                        }
                    }
                }
            }
            @if !recent.is_empty() {
                h2 { "Recent deploys" }
                (history_table(recent))
            }
        },
    )
}

/// What the preview page echoes back into its confirm form.
#[derive(Debug, Clone, Default)]
pub struct FormEcho {
    /// The raw form fields (except the token).
    pub fields: Vec<(String, String)>,
}

/// One commit of a dry run's log, as a list item.
fn commit_item(c: &serde_json::Value) -> Markup {
    html! { li { code { (c["commit"].as_str().unwrap_or("").get(..10).unwrap_or("")) } " " (c["subject"].as_str().unwrap_or("")) " " small { (c["author"].as_str().unwrap_or("")) } } }
}

/// The dry-run preview: per server, live release and the commit log to the tag,
/// and the commits a downgrade removes (the confirm form then asks for a tick).
pub fn preview(ctx: &Ctx, site: &SiteConfig, tag: &str, plan: &[Vec<String>], replies: &[DeployReply], echo: &FormEcho, may_deploy: bool) -> Markup {
    let removed = |r: &DeployReply| r.data["removed"].as_array().filter(|a| !a.is_empty()).cloned();
    let downgraded: Vec<&str> = replies.iter().filter(|r| removed(r).is_some()).map(|r| r.node.as_str()).collect();
    layout(
        ctx,
        "Preview",
        html! {
            h1 { "Preview: " (tag) " to " (site.name) }
            @if !downgraded.is_empty() {
                p.warn #downgrade-warning { "Downgrade: " (tag) " is older than the release live on " (downgraded.join(", ")) "; deploying it removes the commits listed below." }
            }
            h2 { "Plan" }
            ol.plan { @for (i, b) in plan.iter().enumerate() { li { @if i == 0 { "first: " } (b.join(", ")) } } }
            h2 { "Per server" }
            @for r in replies {
                section.preview data-node=(r.node) data-downgrade[removed(r).is_some()] {
                    h3 { (r.node) " " @if r.error.is_some() { (result_badge("failed")) } @if removed(r).is_some() { span.badge.downgrade { "downgrade" } } }
                    @if let Some(e) = &r.error { p.error { (e) } }
                    p { "live: " code { (r.data["current"].as_str().unwrap_or("nothing")) } " → " code { (tag) } }
                    @if let Some(rm) = removed(r) {
                        div.removed {
                            p.warn { strong { "Deploying " (tag) " removes " (crate::deploy::agent::steps::commits_text(rm.len(), 200)) " now live on " (r.node) ":" } }
                            ul.log.removed { @for c in &rm { (commit_item(c)) } }
                        }
                    }
                    @if let Some(log) = r.data["log"].as_array() {
                        @if r.data["already_live"].as_bool() == Some(true) { p.already-live { "already live: nothing will change" } }
                        @else if log.is_empty() && removed(r).is_none() { p { "no new commits" } }
                        @if !log.is_empty() { ul.log { @for c in log { (commit_item(c)) } } }
                    }
                }
            }
            @if may_deploy {
                form method="post" action={ "/sites/" (site.name) "/deploy" } {
                    (csrf_field(ctx))
                    @for (k, v) in &echo.fields { input type="hidden" name=(k) value=(v); }
                    @if !downgraded.is_empty() {
                        p { label.downgrade { input type="checkbox" name="allow_downgrade" value="1" required; " Deploy " (tag) " anyway, removing the commits listed above from " (downgraded.join(", ")) } }
                    }
                    button.primary type="submit" #deploy { @if site.approvers.is_empty() { "Deploy " } @else { "Ask to deploy " } (tag) }
                }
            }
            p { a href={ "/sites/" (site.name) } { "back to " (site.name) } }
        },
    )
}

fn step_cells(n: &NodeView) -> Markup {
    html! {
        @for name in STEPS {
            @let s = n.steps.iter().find(|s| s.step == name);
            @let none = if n.unchanged { "already-live" } else { "none" };
            td class={ "step " (s.map(|s| s.state.as_str()).unwrap_or(none)) } data-step=(name) {
                @if let Some(s) = s {
                    details {
                        summary { (s.state) @if let Some(ms) = s.duration_ms { " " small { (ms) " ms" } } }
                        @if let Some(c) = s.exit_code { div { "exit " (c) } }
                        @if let Some(e) = &s.error { div.error { (e) } }
                        @if !s.stdout.is_empty() { pre.out { (s.stdout) } }
                        @if !s.stderr.is_empty() { pre.err { (s.stderr) } }
                    }
                } @else if n.unchanged { "already live" } @else { "·" }
            }
        }
    }
}

/// A deploy waiting for its approval, as its page shows it to the viewer.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Who may approve (`carol or dan`).
    pub approvers: String,
    /// Unix seconds when it lapses.
    pub lapses_at: i64,
    /// The viewer may approve or reject it.
    pub may_approve: bool,
    /// The viewer asked for it (may cancel it).
    pub requester: bool,
}

/// A deploy's page: live progress, or the recorded result; a waiting deploy's approval buttons.
pub fn deploy(ctx: &Ctx, row: &DeployRow, view: &DeployView, live: bool, may_deploy: bool, approval: Option<&Approval>) -> Markup {
    let (done, total) = view.progress();
    // Servers this deploy changed (those already on the tag have nothing of it to roll back).
    let ok_nodes: Vec<&str> = view.nodes.iter().filter(|n| n.changed_ok()).map(|n| n.node.as_str()).collect();
    let done_word = if row.action == "rollback" { "rolled back" } else { "deployed" };
    layout(
        ctx,
        &format!("Deploy #{}", row.id),
        html! {
            @if live { noscript { meta http-equiv="refresh" content="2"; } }
            div #deploy-page data-deploy=(row.id) data-live[live] data-waiting[approval.is_some()] data-result=[(!live).then_some(view.result.as_str())] {
                h1 { (row.action) " " (row.tag.as_deref().unwrap_or("")) " to " a href={ "/sites/" (row.site) } { (row.site) } " " span #result { (result_badge(&view.result)) } }
                p.meta { "#" (row.id) " by " b { (row.user) } ", started " (when(row.started_at)) @if let Some(f) = row.finished_at { ", finished " (when(f)) } ", servers: " (row.selection) @if row.controller != "dk-web" { ", via " b.via { (row.controller) } } }
                @if let Some(why) = &row.reason { p.reason { "Reason: " (why) } }
                @if let Some(by) = &row.approved_by { p.approved #approved-by { "Approved by " b { (by) } @if let Some(at) = row.approved_at { ", " (when(at)) } } }
                @if let Some(a) = approval {
                    section #approval .warn {
                        p { "Waiting for an approval by " b { (a.approvers) } " (not the requester); nothing has been sent to the servers. It lapses " (when(a.lapses_at)) "." }
                        @if a.may_approve {
                            form #approve-form method="post" action={ "/deploys/" (row.id) "/approve" } {
                                (csrf_field(ctx))
                                button type="submit" #approve { "Approve and start" }
                            }
                        }
                        @if a.may_approve || a.requester {
                            form #reject-form method="post" action={ "/deploys/" (row.id) "/reject" } {
                                (csrf_field(ctx))
                                button.danger type="submit" #reject { @if a.requester { "Cancel this request" } @else { "Reject" } }
                            }
                        }
                    }
                }
                progress #progress value=(done) max=(total.max(1)) {}
                span #progress-text { (done) "/" (total) " servers done" }
                " "
                span #summary data-done=(done_word) { (view.summary(done_word)) }
                p #stopped .warn hidden[view.stopped.is_none()] { "No further batch: " span #stopped-reason { (view.stopped.as_deref().unwrap_or("")) } }
                p #error .error hidden[view.error.is_none() && row.detail.is_none()] { (view.error.as_deref().or(row.detail.as_deref()).unwrap_or("")) }
                table.rollout {
                    thead { tr { th { "server" } th { "batch" } th { "state" } @for s in STEPS { th { (s) } } } }
                    tbody #nodes {
                        @for n in &view.nodes {
                            tr.node.already-live[n.unchanged] data-node=(n.node) data-state=(n.state) data-unchanged[n.unchanged] {
                                td { (n.node) }
                                td.num { @if n.batch == 0 && view.nodes.iter().any(|m| m.batch > 0) { "canary" } @else { (n.batch) } }
                                td.state { @if n.unchanged { span.badge.already-live { "already live" } } @else { (n.state) } @if let Some(e) = &n.error { div.error { (e) } } }
                                (step_cells(n))
                            }
                        }
                    }
                }
                @if may_deploy {
                    @if live && !view.finished {
                        form #stop-form method="post" action={ "/deploys/" (row.id) "/stop" } {
                            (csrf_field(ctx))
                            button.danger type="submit" #stop { "Stop after the running batch" }
                        }
                    }
                    form #rollback-form method="post" action={ "/sites/" (row.site) "/rollback" } hidden[!view.finished || ok_nodes.is_empty() || row.action != "deploy"] {
                        (csrf_field(ctx))
                        @for n in &ok_nodes { input type="hidden" name="node" value=(n); }
                        input type="hidden" name="scope" value="pick";
                        input type="text" name="reason" maxlength="1000" size="30" placeholder="reason (ticket or why)";
                        " "
                        button type="submit" #rollback { "Roll these servers back" }
                    }
                }
            }
        },
    )
}

fn history_table(rows: &[DeployRow]) -> Markup {
    html! {
        table.history {
            thead { tr { th { "#" } th { "when" } th { "who" } th { "via" } th { "site" } th { "action" } th { "tag" } th { "servers" } th { "result" } } }
            tbody {
                @for r in rows {
                    tr data-deploy=(r.id) data-result=(r.result) data-controller=(r.controller) {
                        td { a href={ "/deploys/" (r.id) } { (r.id) } }
                        td { (when(r.started_at)) }
                        td { (r.user) @if let Some(why) = &r.reason { br; small.reason { (why) } } }
                        td.via { (r.controller) }
                        td { a href={ "/sites/" (r.site) } { (r.site) } }
                        td { (r.action) }
                        td { (r.tag.as_deref().unwrap_or("")) }
                        td { (r.selection) }
                        td { (result_badge(&r.result)) @if let Some(d) = &r.detail { " " small { (d) } } }
                    }
                }
            }
        }
    }
}

/// Every deploy, newest first.
pub fn history(ctx: &Ctx, rows: &[DeployRow], site: Option<&str>) -> Markup {
    layout(
        ctx,
        "History",
        html! {
            h1 { "History" @if let Some(s) = site { " of " (s) } }
            @if rows.is_empty() { p { "No deploys yet." } } @else { (history_table(rows)) }
        },
    )
}

/// The activity feed.
pub fn activity(ctx: &Ctx, lines: &[Line]) -> Markup {
    layout(
        ctx,
        "Activity",
        html! {
            h1 { "Activity" }
            p.meta { "Event lines from the bus (commits, builds, fetches, deploys), newest first." }
            ul #activity .activity {
                @for l in lines {
                    li { span.time { (when(l.time)) } " " span.source { (l.source) } " " @if let Some(h) = &l.host { span.host { (h) } " " } span.text { (l.text) } }
                }
            }
        },
    )
}

/// An error page.
pub fn error(ctx: Option<&Ctx>, status: u16, message: &str) -> Markup {
    let body = html! {
        h1 { "Error " (status) }
        p.error #message { (message) }
        p { a href="/" { "back to the sites" } }
    };
    match ctx {
        Some(c) => layout(c, "Error", body),
        None => html! { (DOCTYPE) html { head { meta charset="utf-8"; title { "Error" } link rel="stylesheet" href="/assets/style.css"; } body { main { (body) } } } },
    }
}
