"""dk-web in a real headless Chromium (Debian's), driven by Playwright for Python.

The fixture (tools/examples/web-fixture.rs) runs an embedded broker, three real
in-process agents (web01..web03) with real hook scripts, a bare git repo that takes
pushes (the agents deploy from it), three real fetch daemons (checking out green
builds of job www-tests) and dk-web with Basic login ann / ann-pw. The journey test
adds the rest of the real chain: the git post-receive hook of the Python package,
dk-jenkins (posting to a Jenkins stand-in served here), dk-notify as Jenkins's build
steps. Waits are Playwright's auto-waiting on DOM state (the attributes and steps the
server-sent events update) or blocking reads of what the processes report, never sleeps.
"""
import contextlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = os.environ.get("DK_WEB_FIXTURE", "target/debug/examples/web-fixture")
BIN_DIR = Path(os.environ.get("DK_BIN_DIR", ROOT / "target" / "debug"))
CHROMIUM = os.environ.get("DK_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("DK_SCREENSHOTS")  # when set, the screenshots for README land here
HOOK = ROOT / "examples" / "hooks" / "post-receive"
VENV_BIN = Path(sys.executable).parent  # the hook runs `python3 -m deploykit.hooks` from here
TIMEOUT_MS = 60_000  # generous: 2 loaded cores
TIMEOUT_S = TIMEOUT_MS / 1000

expect.set_options(timeout=TIMEOUT_MS)

# Records every EventSource a page opens, so a test can wait until the live stream is
# connected (the server subscribes before it answers) before making something happen.
TRACK_EVENT_SOURCES = """
(() => {
  const Native = window.EventSource;
  window.__eventSources = [];
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); window.__eventSources.push(this); }
  };
})();
"""


def wait_live(page):
    """Blocks until the page's server-sent event stream is open."""
    page.wait_for_function("() => (window.__eventSources || []).some((e) => e.readyState === EventSource.OPEN)")


def stop(proc, timeout=30):
    """Ends a child we started: SIGTERM, then SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@pytest.fixture(scope="module")
def rig():
    """The running fixture's `KEY VALUE` lines (BROKER, REPO, URL...), read up to URL."""
    proc = subprocess.Popen([FIXTURE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = {}
        while "URL" not in info:
            line = proc.stdout.readline()
            assert line, f"the fixture exited ({proc.wait()}) before its URL line; it said {info}"
            key, _, value = line.strip().partition(" ")
            info[key] = value
        assert re.match(r"http://127\.0\.0\.1:\d+$", info["URL"]), info
        yield info
    finally:
        proc.stdin.close()  # the fixture shuts down cleanly when stdin closes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop(proc)


@pytest.fixture(scope="module")
def server(rig):
    return rig["URL"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def login(browser, js=True):
    ctx = browser.new_context(http_credentials={"username": "ann", "password": "ann-pw"}, viewport={"width": 1400, "height": 860}, java_script_enabled=js)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.add_init_script(TRACK_EVENT_SOURCES)
    return ctx


def ask_deploy(page, server, site, tag):
    """Deploys `tag` of `site` from its page; returns the deploy's id once its page is open."""
    page.goto(f"{server}/sites/{site}")
    page.check(f'input[name="tag"][value="{tag}"]')
    page.click("#deploy")
    page.wait_for_url(re.compile(r"/deploys/\d+$"))
    return page.url.rsplit("/", 1)[1]


def test_wrong_password_is_refused(server, browser):
    ctx = browser.new_context(http_credentials={"username": "ann", "password": "nope"})
    page = ctx.new_page()
    resp = page.goto(server + "/")
    assert resp.status == 401
    ctx.close()


def test_deploy_every_row_turns_green_and_lands_in_history(server, browser):
    ctx = login(browser)
    page = ctx.new_page()
    page.goto(server + "/")
    expect(page.locator("#user")).to_have_text("ann")
    expect(page.locator('tr[data-site="www"]')).to_contain_text("3 on nothing")
    page.click('tr[data-site="www"] a')
    expect(page.locator("h1")).to_have_text("Site www")
    expect(page.locator("table.servers tbody tr")).to_have_count(3)
    page.check('input[name="tag"][value="v1.1"]')
    page.click("#deploy")
    page.wait_for_url(re.compile(r"/deploys/\d+$"))
    deploy_id = page.url.rsplit("/", 1)[1]
    rows = page.locator("tr.node")
    expect(rows).to_have_count(3)
    for node in ["web01", "web02", "web03"]:
        expect(page.locator(f'tr.node[data-node="{node}"]')).to_have_attribute("data-state", "ok")
    expect(page.locator("#deploy-page")).to_have_attribute("data-result", "ok")
    expect(page.locator("#progress-text")).to_have_text("3/3 servers done")
    expect(page.locator("#summary")).to_have_text("3 deployed")
    # The canary went alone first; every step of every server is shown ok, output expandable.
    expect(page.locator('tr.node[data-node="web01"] td:nth-child(2)')).to_have_text("canary")
    post = page.locator('tr.node[data-node="web02"] td[data-step="post-deploy"]')
    expect(post).to_have_class(re.compile(r"\bok\b"))
    post.locator("summary").click()
    expect(post.locator("pre.out")).to_contain_text("faster checkout page")
    expect(page.locator("#stop")).to_have_count(0)
    expect(page.locator("#rollback-form")).to_be_visible()
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "deploy.png"), full_page=True)
    page.click("nav >> text=History")
    row = page.locator(f'tr[data-deploy="{deploy_id}"]')
    expect(row).to_have_attribute("data-result", "ok")
    expect(row).to_contain_text("v1.1")
    expect(row).to_contain_text("ann")
    page.goto(server + "/")
    expect(page.locator('tr[data-site="www"]')).to_contain_text("3 on v1.1")
    # The site page now shows the live release per server and the newer tag to pick.
    page.click('tr[data-site="www"] a')
    expect(page.locator('tr[data-server="web01"]')).to_contain_text("v1.1")
    page.check('input[name="tag"][value="v1.2"]')
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "site.png"), full_page=True)
    ctx.close()


def test_failing_canary_shows_red_and_the_rest_never_start(server, browser):
    ctx = login(browser)
    page = ctx.new_page()
    ask_deploy(page, server, "shop", "v1.2")
    expect(page.locator("#deploy-page")).to_have_attribute("data-result", "failed")
    expect(page.locator('tr.node[data-node="web01"]')).to_have_attribute("data-state", "failed")
    for node in ["web02", "web03"]:
        expect(page.locator(f'tr.node[data-node="{node}"]')).to_have_attribute("data-state", "not-started")
    pre = page.locator('tr.node[data-node="web01"] td[data-step="pre-deploy"]')
    expect(pre).to_have_class(re.compile(r"\bfailed\b"))
    pre.locator("summary").click()
    expect(pre.locator("pre.err")).to_contain_text("database migration 42 failed")
    expect(page.locator("#stopped")).to_contain_text("the canary failed")
    ctx.close()


def test_a_waiting_deploy_page_follows_the_approval_made_elsewhere(server, browser):
    # blog needs bob's approval: ann's request waits, her page stays open, bob approves
    # from his own session, and ann's page turns into the running deploy by itself.
    ctx = login(browser)
    page = ctx.new_page()
    deploy_id = ask_deploy(page, server, "blog", "v1.1")
    expect(page.locator("#deploy-page")).to_have_attribute("data-result", "awaiting approval")
    expect(page.locator("#approve")).to_have_count(0)
    wait_live(page)
    page.evaluate("() => { window.__notReloaded = true; }")
    bob = browser.new_context(http_credentials={"username": "bob", "password": "bob-pw"})
    bob.set_default_timeout(TIMEOUT_MS)
    approver = bob.new_page()
    approver.goto(f"{server}/deploys/{deploy_id}")
    approver.click("#approve")
    expect(approver.locator("#approved-by")).to_contain_text("bob")
    bob.close()
    # No reload by ann: the page reloaded itself (the marker is gone) and shows the outcome.
    expect(page.locator("#approved-by")).to_contain_text("bob")
    assert page.evaluate("() => window.__notReloaded === undefined")
    expect(page.locator("#deploy-page")).to_have_attribute("data-result", "ok")
    expect(page.locator("#summary")).to_have_text("3 deployed")
    ctx.close()


def test_read_only_pages_work_without_javascript(server, browser):
    ctx = login(browser, js=False)
    page = ctx.new_page()
    page.goto(server + "/")
    expect(page.locator('tr[data-site="shop"]')).to_be_visible()
    page.click('tr[data-site="www"] a')
    expect(page.locator('input[name="tag"][value="v1.2"]')).to_be_visible()
    page.click("nav >> text=History")
    expect(page.locator("table.history tbody tr").first).to_be_visible()
    page.locator("table.history tbody tr a").first.click()
    expect(page.locator("tr.node").first).to_be_visible()
    page.click("nav >> text=Activity")
    expect(page.locator("#activity li", has_text="dk-agent on web0").first).to_be_visible()
    expect(page.locator("#activity li", has_text="dk-web: ann's deploy www v1.1: ok, 3/3 servers ok").first).to_be_visible()
    ctx.close()


# ---------------------------------------------------------------- the push journey (issue #16)


class JenkinsStandIn:
    """As much of Jenkins's remote API as dk-jenkins uses without a user: POST
    /job/NAME/build answers 201 with a queue item's Location. Each request is handed to
    the test (`requests`) and answered only once the test calls `answer()`, so the test
    decides when the trigger lands (no real Jenkins can run here)."""

    def __init__(self):
        self.requests = queue.Queue()
        self.posts = 0
        self._go = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                stand_in.posts += 1
                item = stand_in.posts
                stand_in.requests.put((self.path, body))
                stand_in._go.wait(timeout=4 * TIMEOUT_S)
                self.send_response(201)
                self.send_header("Location", f"{stand_in.url}queue/item/{item}/")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                self.send_error(404)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def next_request(self):
        try:
            return self.requests.get(timeout=2 * TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"dk-jenkins posted nothing to the Jenkins stand-in within {2 * TIMEOUT_S:.0f} s") from None

    def answer(self):
        self._go.set()

    def close(self):
        self._go.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Daemon:
    """A real binary run in the background, its stderr collected line by line."""

    def __init__(self, argv, env):
        self.lines = queue.Queue()
        self.log = []
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            self.lines.put(line)

    def wait_for(self, needle):
        while True:
            try:
                line = self.lines.get(timeout=2 * TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"no {needle!r} within {2 * TIMEOUT_S:.0f} s; it said:\n" + "\n".join(self.log)) from None
            if needle in line:
                return line


class Journey:
    """The real push chain around the fixture: a work clone of its bare repo with the
    Python package's post-receive hook installed, dk-jenkins, dk-notify."""

    JOB = "www-tests"

    def __init__(self, tmp, rig):
        self.tmp, self.broker, self.bare = tmp, rig["BROKER"], Path(rig["REPO"])
        home = tmp / "home"
        home.mkdir()
        # Nothing inherited that could steer the hook (DK_*) or git (a user's config).
        self.env = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Ann Example",
            "GIT_AUTHOR_EMAIL": "ann@example.org",
            "GIT_COMMITTER_NAME": "Ann Example",
            "GIT_COMMITTER_EMAIL": "ann@example.org",
        }
        probe = subprocess.run([str(VENV_BIN / "python3"), "-c", "import deploykit.hooks"], capture_output=True, text=True)
        assert probe.returncode == 0, f"the hook needs the deploykit package in {VENV_BIN.parent} (scripts/browser-suite.sh installs it): {probe.stderr}"
        # The hook, installed as an operator would: the example script, configured by git config.
        hook = self.bare / "hooks" / "post-receive"
        shutil.copyfile(HOOK, hook)
        hook.chmod(0o755)
        self.git("--git-dir", str(self.bare), "config", "deploykit.brokerUrl", self.broker)
        self.git("--git-dir", str(self.bare), "config", "deploykit.timeout", str(int(TIMEOUT_S)))
        self.work = tmp / "work"
        self.git("clone", "--quiet", str(self.bare), str(self.work))

    def git(self, *args, cwd=None):
        p = subprocess.run(["git", *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=4 * TIMEOUT_S)
        assert p.returncode == 0, f"git {args} exited {p.returncode}: {p.stderr}"
        return p

    def commit(self, message):
        (self.work / "journey.txt").write_text(message + "\n")
        self.git("add", "journey.txt", cwd=self.work)
        self.git("commit", "--quiet", "-m", message, cwd=self.work)
        return self.git("rev-parse", "HEAD", cwd=self.work).stdout.strip()

    def push(self, *refspecs):
        """git push; the post-receive hook has published when push returns (it says
        something, `remote: deploykit: …`, only when something went wrong)."""
        p = self.git("push", "--quiet", "origin", *refspecs, cwd=self.work)
        assert "remote:" not in p.stderr, p.stderr

    @contextlib.contextmanager
    def dk_jenkins(self, stand_in):
        """dk-jenkins triggering job www-tests on pushes to master at the Jenkins stand-in;
        its build token in a file."""
        token = self.tmp / "www-tests.token"
        token.write_text("journey-build-token\n")
        token.chmod(0o600)
        config = self.tmp / "jenkins.toml"
        config.write_text(
            'quiet_period = "100ms"\n'
            f'[broker]\nurl = "{self.broker}"\n'
            f'[jenkins]\nurl = "{stand_in.url}"\ntimeout = "{4 * int(TIMEOUT_S)}s"\nretries = 0\n'
            f'[[repos.www.jobs]]\njob = "{self.JOB}"\ntoken_file = "{token}"\nbranches = ["master"]\n'
        )
        daemon = Daemon([str(BIN_DIR / "dk-jenkins"), "-v", "--config", str(config)], env={"PATH": self.env["PATH"], "LANG": "C.UTF-8"})
        try:
            daemon.wait_for("dk-jenkins started")  # logged once the commits topic is subscribed
            yield daemon
        finally:
            stand_in.answer()  # a trigger still held would hold dk-jenkins's shutdown
            stop(daemon.proc)
            print("dk-jenkins said:", *daemon.log, sep="\n")  # pytest shows it when the test failed

    def notify(self, status, number, rev, correlation_id, jenkins_url):
        """What the Jenkins job's build steps run: dk-notify STATUS, in Jenkins's environment."""
        env = {
            "PATH": self.env["PATH"],
            "LANG": "C.UTF-8",
            "DK_BROKER_URL": self.broker,
            "BUILD_NUMBER": str(number),
            "JOB_NAME": self.JOB,
            "BUILD_URL": f"{jenkins_url}job/{self.JOB}/{number}/",
            "GIT_BRANCH": "origin/master",
            "GIT_COMMIT": rev,
            "GIT_URL": str(self.bare),
            "DK_CORRELATION_ID": correlation_id,
        }
        p = subprocess.run([str(BIN_DIR / "dk-notify"), status], env=env, capture_output=True, text=True, timeout=4 * TIMEOUT_S)
        assert p.returncode == 0, f"dk-notify {status} exited {p.returncode}: {p.stderr}"


@pytest.fixture
def journey(rig):
    tmp = Path(tempfile.mkdtemp(prefix="dk-browser-journey-"))
    try:
        yield Journey(tmp, rig)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def jenkins():
    stand_in = JenkinsStandIn()
    try:
        yield stand_in
    finally:
        stand_in.close()


def expect_live_stage(page, tag, deploy_id):
    """The journey's last stage (deploy tracking in core/src/web/changes.rs, journey.rs):
    one `live` step per server, in deploy order after the fetches, and the summary."""
    for node in ["web01", "web02", "web03"]:
        step = page.locator('#journey li.step[data-stage="live"]', has_text=f"live on {node} (site www, {tag}; deploy #{deploy_id} by ann via dk-web)")
        expect(step).to_have_count(1)
    expect(page.locator("p#live b#live-count")).to_have_text("3")


def test_a_push_journey_arrives_live_stage_by_stage(server, browser, journey, jenkins):
    """Issue #16, end to end with the real processes: git push through the Python
    package's post-receive hook -> dk-jenkins posts to the Jenkins stand-in and says so
    -> the build (dk-notify started, success) -> the three fetch daemons check out the
    built commit -> a tag of it deployed from the UI is live on the servers. The
    journey page, never reloaded, shows each stage arrive, in that order."""
    ctx = login(browser)
    page = ctx.new_page()
    with journey.dk_jenkins(jenkins):
        # The changes list is open (and live) before the push; the push arrives as a new row.
        page.goto(server + "/changes")
        wait_live(page)
        page.evaluate("window.__sameDocument = true")
        subject = "speed up the basket page"
        rev = journey.commit(subject)
        journey.push("HEAD:refs/heads/master")
        change = rev  # the hook's correlation id is the pushed revision
        row = page.locator(f'tr[data-change="{change}"]')
        expect(row).to_contain_text(subject)
        expect(row.locator(".builds")).to_contain_text("no build")
        assert page.evaluate("window.__sameDocument === true"), "the push arrived live, without a reload"

        # dk-jenkins heard the push and posts the build; Jenkins answers once the journey is watched.
        path, body = jenkins.next_request()
        assert path == f"/job/{journey.JOB}/build", path
        assert body == "token=journey-build-token", body
        row.locator("a").click()
        expect(page.locator("#journey-page")).to_have_attribute("data-change", change)
        wait_live(page)
        page.evaluate("window.__sameDocument = true")
        steps = page.locator("#journey li.step")
        expect(steps.first).to_have_attribute("data-stage", "pushed")
        expect(steps.first).to_contain_text("pushed refs/heads/master (1 commit)")
        expect(page.locator("#fetched-count")).to_have_text("0")
        triggered = page.locator('#journey li.step[data-stage="event"]', has_text=f"jenkins: triggered {journey.JOB} for [www] refs/heads/master {rev}: {jenkins.url}queue/item/1/")
        assert triggered.count() == 0, "dk-jenkins reports the trigger only once Jenkins answered"
        jenkins.answer()
        expect(triggered).to_have_count(1)

        # Jenkins's build of it, as the job's steps report it.
        journey.notify("started", 7, rev, change, jenkins.url)
        started = page.locator('#journey li.step[data-stage="build"]', has_text=f"build {journey.JOB} #7 started")
        expect(started).to_have_count(1)
        expect(page.locator(f'#builds .badge.running[data-job="{journey.JOB}"]')).to_contain_text("started")
        expect(page.locator("#fetched-count")).to_have_text("0")  # trigger = build: nobody fetches a running build
        journey.notify("success", 7, rev, change, jenkins.url)
        expect(page.locator('#journey li.step[data-stage="build"][data-ok="true"]', has_text=f"build {journey.JOB} #7 success")).to_have_count(1)
        expect(page.locator(f'#builds .badge.ok[data-job="{journey.JOB}"]')).to_contain_text("success")
        for node in ["web01", "web02", "web03"]:
            expect(page.locator('#journey li.step[data-stage="fetch"][data-ok="true"]', has_text=f"fetched on {node} in ")).to_have_count(1)
            # ...and it was the built commit each checked out (the daemon's own event line).
            line = f"fetch on {node}: fetched change: [www] build {journey.JOB} #7 {rev}"
            expect(page.locator('#journey li.step[data-stage="event"]', has_text=line)).to_have_count(1)
        expect(page.locator("#fetched-count")).to_have_text("3")
        expect(page.locator("#server-count")).to_have_text("3")
        expect(page.locator("#failures li")).to_have_count(0)

    # A release tag of the built commit (the hook sends that push too), deployed from the UI
    # in another tab while the journey page stays open.
    journey.git("tag", "-a", "v1.3", "-m", "release v1.3", rev, cwd=journey.work)
    journey.push("refs/tags/v1.3")
    site = ctx.new_page()
    site.goto(server + "/sites/www")
    tag_row = site.locator("table.tags tr.tag", has=site.locator('input[name="tag"][value="v1.3"]'))
    expect(tag_row.locator('[data-build="green"]')).to_have_attribute("title", f"{journey.JOB} #7 success")
    site.check('input[name="tag"][value="v1.3"]')
    site.click("#deploy")
    site.wait_for_url(re.compile(r"/deploys/\d+$"))
    deploy_id = site.url.rsplit("/", 1)[1]
    expect(site.locator("#deploy-page")).to_have_attribute("data-result", "ok")
    expect(site.locator("#summary")).to_have_text("3 deployed")
    site.close()
    expect_live_stage(page, "v1.3", deploy_id)

    # Everything arrived on the one page, in order.
    assert page.evaluate("window.__sameDocument === true"), "the stages arrived live, without a reload"
    stages = steps.evaluate_all("els => els.map((e) => [e.dataset.stage, e.querySelector('.text').textContent])")

    def at(what, pred):
        found = [i for i, (stage, text) in enumerate(stages) if pred(stage, text)]
        assert found, f"no {what} step in {stages}"
        return found

    fetched = at("fetch", lambda s, t: s == "fetch")
    assert len(fetched) == 3, f"one fetch per server: {stages}"
    milestones = [
        ("pushed", at("pushed", lambda s, t: s == "pushed")),
        ("Jenkins triggered", at("triggered", lambda s, t: s == "event" and t.startswith(f"jenkins: triggered {journey.JOB} "))),
        ("build started", at("build started", lambda s, t: s == "build" and t.endswith(" started"))),
        ("build success", at("build success", lambda s, t: s == "build" and t.endswith(" success"))),
        ("fetched on 3 of 3", fetched),
        ("live", at("live", lambda s, t: s == "live")),
    ]
    for (a, ia), (b, ib) in zip(milestones, milestones[1:]):
        assert max(ia) < min(ib), f"{a} should come before {b}: {stages}"
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "journey.png"), full_page=True)
    # The journey is found by commit too.
    page.goto(server + "/changes/" + rev[:10])
    expect(page.locator("#journey-page")).to_have_attribute("data-change", change)
    ctx.close()
