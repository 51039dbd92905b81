// dk-web: the live parts (deploy progress, activity feed, change journeys). The pages work without it.
"use strict";
(function () {
  const STEPS = ["pre-deploy", "checkout", "pre-link", "link", "post-deploy", "health"];

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function stepCell(node, name) {
    const s = node.steps.find((x) => x.step === name);
    const td = el("td", { class: "step " + (s ? s.state : (node.unchanged ? "already-live" : "none")), "data-step": name });
    if (!s) { td.append(node.unchanged ? "already live" : "·"); return td; }
    const summary = el("summary", {}, s.state);
    if (s.duration_ms !== undefined) summary.append(" ", el("small", {}, s.duration_ms + " ms"));
    const d = el("details", {}, summary);
    if (s.exit_code !== undefined) d.append(el("div", {}, "exit " + s.exit_code));
    if (s.error) d.append(el("div", { class: "error" }, s.error));
    if (s.stdout) d.append(el("pre", { class: "out" }, s.stdout));
    if (s.stderr) d.append(el("pre", { class: "err" }, s.stderr));
    td.append(d);
    return td;
  }

  function row(node, canaryLabel) {
    const state = el("td", { class: "state" }, node.unchanged ? el("span", { class: "badge already-live" }, "already live") : node.state);
    if (node.error) state.append(el("div", { class: "error" }, node.error));
    const attrs = { class: node.unchanged ? "node already-live" : "node", "data-node": node.node, "data-state": node.state };
    if (node.unchanged) attrs["data-unchanged"] = "";
    const tr = el("tr", attrs,
      el("td", {}, node.node), el("td", { class: "num" }, canaryLabel ? "canary" : String(node.batch)), state);
    for (const s of STEPS) tr.append(stepCell(node, s));
    return tr;
  }

  function deployPage(root) {
    const id = root.dataset.deploy;
    const tbody = document.getElementById("nodes");
    let view = { nodes: [] };
    const hasCanary = () => view.nodes.some((n) => n.batch > 0);
    function keepOpen(tr, next) {
      // Keep the step outputs the user opened open across updates.
      tr.querySelectorAll("details[open]").forEach((d) => {
        const step = d.parentElement.dataset.step;
        const n = next.querySelector('td[data-step="' + step + '"] details');
        if (n) n.open = true;
      });
    }
    function put(node) {
      const i = view.nodes.findIndex((n) => n.node === node.node);
      if (i >= 0) view.nodes[i] = node; else view.nodes.push(node);
      const next = row(node, node.batch === 0 && hasCanary());
      const old = tbody.querySelector('tr[data-node="' + CSS.escape(node.node) + '"]');
      if (old) { keepOpen(old, next); old.replaceWith(next); } else tbody.append(next);
    }
    function progress() {
      const done = view.nodes.filter((n) => n.state !== "pending" && n.state !== "running").length;
      const p = document.getElementById("progress");
      p.max = Math.max(view.nodes.length, 1); p.value = done;
      document.getElementById("progress-text").textContent = done + "/" + view.nodes.length + " servers done";
      const sum = document.getElementById("summary");
      if (sum) sum.textContent = summary(sum.dataset.done || "deployed");
    }
    // As DeployView::summary: each kind counted apart ("2 deployed, 1 already live").
    function summary(doneWord) {
      const count = (f) => view.nodes.filter(f).length;
      const parts = [];
      const add = (n, what) => { if (n > 0) parts.push(n + " " + what); };
      add(count((n) => n.state === "ok" && !n.unchanged), doneWord);
      add(count((n) => n.state === "ok" && n.unchanged), "already live");
      for (const [state, what] of [["failed", "failed"], ["refused", "refused"], ["no-answer", "no answer"], ["not-started", "not started"], ["missing", "missing"], ["running", "running"], ["pending", "pending"]]) {
        add(count((n) => n.state === state), what);
      }
      return parts.join(", ");
    }
    function all(v) {
      view = v;
      tbody.replaceChildren();
      for (const n of v.nodes) put(n);
      progress();
      if (v.stopped) stopped(v.stopped);
    }
    function stopped(reason) {
      document.getElementById("stopped-reason").textContent = reason;
      document.getElementById("stopped").hidden = false;
    }
    function finished(v) {
      all(v);
      const r = document.getElementById("result");
      r.replaceChildren(el("span", { class: "badge " + v.result }, v.result));
      root.dataset.result = v.result;
      if (v.error) { const e = document.getElementById("error"); e.textContent = v.error; e.hidden = false; }
      const stop = document.getElementById("stop-form");
      if (stop) stop.remove();
      const rb = document.getElementById("rollback-form");
      // Only servers this deploy changed can be rolled back from it (not those already live).
      const changed = v.nodes.filter((n) => n.state === "ok" && !n.unchanged);
      if (rb && changed.length > 0) {
        rb.querySelectorAll('input[name="node"]').forEach((i) => i.remove());
        for (const n of changed) rb.prepend(el("input", { type: "hidden", name: "node", value: n.node }));
        rb.hidden = root.querySelector("h1").textContent.trim().startsWith("rollback");
      }
    }
    const es = new EventSource("/deploys/" + id + "/events");
    es.onmessage = (m) => {
      const u = JSON.parse(m.data);
      if (u.kind === "snapshot" || u.kind === "planned") { all(u.view); if (u.view.finished) { finished(u.view); es.close(); } }
      else if (u.kind === "node") { put(u.node); progress(); }
      else if (u.kind === "stopped") stopped(u.reason);
      else if (u.kind === "finished") { finished(u.view); es.close(); }
    };
  }

  // A deploy waiting for an approval: reload once it is decided (approved: its progress
  // follows; rejected, cancelled or lapsed: the outcome shows).
  function waitingPage(root) {
    const es = new EventSource("/deploys/" + root.dataset.deploy + "/events");
    es.onmessage = (m) => {
      const u = JSON.parse(m.data);
      // Also a snapshot that no longer waits (the stream was re-opened after the decision).
      if (u.kind === "decided" || (u.view && u.view.result !== root.dataset.result)) { es.close(); location.reload(); }
    };
  }

  function activityPage(list) {
    const es = new EventSource("/activity/events");
    es.onmessage = (m) => {
      const l = JSON.parse(m.data);
      if (!l.text) return;
      const t = new Date(l.time * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
      const li = el("li", {}, el("span", { class: "time" }, t), " ", el("span", { class: "source" }, l.source), " ");
      if (l.host) li.append(el("span", { class: "host" }, l.host), " ");
      li.append(el("span", { class: "text" }, l.text));
      list.prepend(li);
    };
  }

  function utc(secs) {
    return new Date(secs * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function buildBadges(summary) {
    const span = el("span", {});
    if (!summary.builds.length) span.append(el("span", { class: "badge unknown" }, "no build"));
    for (const [job, n, status] of summary.builds) {
      const cls = status === "success" ? "ok" : status === "started" ? "running" : "failed";
      span.append(el("span", { class: "badge " + cls, "data-job": job }, job + " #" + n + " " + status), " ");
    }
    return span;
  }

  // As journey::live_where: "www (web01, web02); shop (web03)".
  function liveWhere(live) {
    const bySite = new Map();
    for (const [site, node] of live) {
      if (!bySite.has(site)) bySite.set(site, []);
      bySite.get(site).push(node);
    }
    return [...bySite].map(([site, nodes]) => site + " (" + nodes.join(", ") + ")").join("; ");
  }

  // One push's timeline: each new step appended as it arrives, the summary redrawn.
  function journeyPage(root) {
    const list = document.getElementById("journey");
    const es = new EventSource("/changes/" + encodeURIComponent(root.dataset.change) + "/events");
    es.onmessage = (m) => {
      const u = JSON.parse(m.data);
      if (u.kind === "resync") { location.reload(); return; }
      if (!u.step || list.querySelector('[data-seq="' + u.step.seq + '"]')) return;
      const s = u.step;
      const attrs = { class: "step", "data-stage": s.stage, "data-seq": String(s.seq) };
      if (s.ok !== undefined) attrs["data-ok"] = String(s.ok);
      const badge = s.ok === true ? el("span", { class: "badge ok" }, "ok")
        : s.ok === false ? el("span", { class: "badge failed" }, "failed")
        : el("span", { class: "badge " + (s.stage === "event" || s.stage === "off" ? "event" : "running") }, s.stage);
      list.append(el("li", attrs, el("span", { class: "time" }, utc(s.at)), " ", badge, " ", el("span", { class: "text" }, u.line)));
      const sum = u.summary;
      document.getElementById("builds").replaceChildren("Builds: ", buildBadges(sum));
      document.getElementById("fetched-count").textContent = sum.fetched;
      document.getElementById("server-count").textContent = sum.servers;
      const live = sum.live || [];
      document.getElementById("live-count").textContent = live.length;
      document.getElementById("live-where").textContent = live.length ? ": " + liveWhere(live) : "";
      document.getElementById("flag").hidden = !sum.flagged;
      document.getElementById("failures").replaceChildren(...sum.failures.map(([n, why]) => el("li", { "data-node": n }, n + ": " + why)));
      document.getElementById("summary-line").textContent = u.summary_line;
    };
  }

  // The list of changes: a new push becomes a row at the top, a known one's cells are redrawn.
  function changesPage(table) {
    const body = table.querySelector("tbody");
    const es = new EventSource("/changes/events");
    es.onmessage = (m) => {
      const u = JSON.parse(m.data);
      if (u.kind === "resync") { location.reload(); return; }
      if (!u.change) return;
      const c = u.change, sum = u.summary;
      let tr = body.querySelector('tr[data-change="' + CSS.escape(c.id) + '"]');
      if (!tr) {
        const link = el("a", { href: "/changes/" + encodeURIComponent(c.id) }, el("code", {}, c.newrev.slice(0, 10)));
        tr = el("tr", { "data-change": c.id }, el("td", {}, utc(c.pushed_at)), el("td", {}, c.repo), el("td", {}, c.refname),
          el("td", {}, link, " ", c.subject || ""), el("td", {}, c.author || ""), el("td", { class: "builds" }), el("td", { class: "fetched" }), el("td", { class: "live" }));
        body.prepend(tr);
        const none = document.getElementById("no-changes");
        if (none) none.remove();
      }
      tr.querySelector(".builds").replaceChildren(buildBadges(sum));
      const f = tr.querySelector(".fetched");
      f.replaceChildren(sum.fetched + " of " + sum.servers);
      if (sum.flagged) f.append(" ", el("span", { class: "badge failed" }, "late"));
      if (sum.failures.length) f.append(" ", el("span", { class: "badge failed" }, sum.failures.length + " failed"));
      tr.toggleAttribute("data-flagged", sum.flagged);
      const live = sum.live || [], cell = tr.querySelector(".live");
      if (cell) {
        cell.dataset.live = String(live.length);
        cell.replaceChildren(live.length ? el("span", { class: "badge ok", title: liveWhere(live) }, "live on " + live.length) : "·");
      }
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    const j = document.getElementById("journey-page");
    if (j) journeyPage(j);
    const c = document.getElementById("changes");
    if (c) changesPage(c);
    const d = document.getElementById("deploy-page");
    if (d && d.hasAttribute("data-live")) deployPage(d);
    if (d && d.hasAttribute("data-waiting")) waitingPage(d);
    const a = document.getElementById("activity");
    if (a) activityPage(a);
  });
})();
