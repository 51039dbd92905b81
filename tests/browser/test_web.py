"""dk-web in a real headless Chromium (Debian's), driven by Playwright for Python.

The fixture (tools/examples/web-fixture.rs) runs an embedded broker, three real
in-process agents (web01..web03) with real hook scripts and git repo, three real
fetch daemons (checking out green builds), and dk-web with Basic login ann / ann-pw;
a push and its build are driven over the fixture's stdin (`push`, `build`). Waits are Playwright's auto-waiting on DOM state
(the rows' data-state attributes the server-sent events update), never sleeps.
"""
import os
import re
import subprocess

import pytest
from playwright.sync_api import expect, sync_playwright

FIXTURE = os.environ.get("DK_WEB_FIXTURE", "target/debug/examples/web-fixture")
CHROMIUM = os.environ.get("DK_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("DK_SCREENSHOTS")  # when set, the screenshots for README land here
TIMEOUT_MS = 60_000


PROC = {}


def command(cmd):
    """Sends one command to the fixture and returns its answer line."""
    proc = PROC["fixture"]
    proc.stdin.write(cmd + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen([FIXTURE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    PROC["fixture"] = proc
    line = proc.stdout.readline()
    m = re.match(r"URL (http://\S+)", line)
    assert m, f"fixture said {line!r}"
    proc.stdout.readline()  # TOKEN dkt_… (the API's; tests/api)
    yield m.group(1)
    proc.stdin.close()
    proc.wait(timeout=30)


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
    return ctx


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
    page.goto(server + "/sites/shop")
    page.check('input[name="tag"][value="v1.2"]')
    page.click("#deploy")
    page.wait_for_url(re.compile(r"/deploys/\d+$"))
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


def test_a_push_journey_arrives_live_stage_by_stage(server, browser):
    """Issue #16: push -> Jenkins triggered, build started, build passed -> three
    servers fetch the built commit; the journey page shows each stage arriving
    live (no reload), builds before fetches, and sums it up."""
    ctx = login(browser)
    page = ctx.new_page()
    pushed = command("push")
    m = re.match(r"PUSHED (\S+) ([0-9a-f]{40})$", pushed)
    assert m, f"fixture said {pushed!r}"
    change, rev = m.group(1), m.group(2)
    page.goto(server + "/changes")
    row = page.locator(f'tr[data-change="{change}"]')
    expect(row).to_contain_text("speed up the basket page")
    expect(row.locator("td.builds")).to_contain_text("no build")
    row.locator("a").click()
    expect(page.locator("#journey-page")).to_have_attribute("data-change", change)
    expect(page.locator('#journey li[data-stage="pushed"]')).to_have_count(1)
    expect(page.locator("#fetched-count")).to_have_text("0")
    page.evaluate("window.__sameDocument = true")
    assert command("build") == "BUILT"
    expect(page.locator('#journey li[data-stage="fetch"][data-ok="true"]')).to_have_count(3)
    expect(page.locator("#fetched-count")).to_have_text("3")
    expect(page.locator("#server-count")).to_have_text("3")
    expect(page.locator('#builds .badge.ok[data-job="www-tests"]')).to_contain_text("success")
    expect(page.locator("#failures li")).to_have_count(0)
    assert page.evaluate("window.__sameDocument === true"), "the stages arrived live, without a reload"
    stages = page.locator("#journey li").evaluate_all("els => els.map(e => e.dataset.stage)")
    assert stages[0] == "pushed", stages
    assert stages.index("build") < stages.index("fetch"), stages
    texts = page.locator("#journey li .text").all_inner_texts()
    assert any("triggered www-tests" in t for t in texts), texts
    assert any(t.startswith("build www-tests #") and t.endswith("success in 42.0 s") for t in texts), texts
    for node in ["web01", "web02", "web03"]:
        assert any(t.startswith(f"fetched on {node} in ") for t in texts), texts
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "journey.png"), full_page=True)
    # The list page says the same, by commit too.
    page.goto(server + "/changes/" + rev[:10])
    expect(page.locator("#journey-page")).to_have_attribute("data-change", change)
    ctx.close()
