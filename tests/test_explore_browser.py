"""GET /explore in a real browser: Debian's chromium driven by selenium through Debian's
chromedriver (no browser download), against the service as `make run` starts it.

Checks what a reader of the page relies on: the charts have the problem's dimensions (T×N,
T×T) and its numbers, a different seed draws different charts, query parameters reach
/v1/problems, the relu-kink gradcheck frames the failing element, a malformed pasted body
shows the API's error next to the text area, no console error, every resource from the
service itself, a narrow window without horizontal scrolling, a 401 asks for a key kept in the
tab. Saves docs/explore_default.png, docs/explore_lstm_batch.png and
docs/explore_gradcheck_failed.png. Every wait is for a condition, bounded."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests

from servers import Gunicorn
from test_live import free_port, run_command, stop, wait_until_up

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service as ChromeService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT = 30                     # seconds, for any one condition
# the page's default problem (explore.js PAGE_DEFAULTS)
PAGE_DEFAULTS = {"tokens": True, "vocab_size": 6, "hidden_size": 8, "output_size": 6, "steps": 10}

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="Debian's chromium and chromium-driver are not installed (make system-deps installs them)")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """`make run` on a free loopback port, its process group stopped afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("explore-live") / "make-run.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.pop("RNN_API_KEYS_FILE", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(run_command(port), cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, base, log)
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--disable-quic",
                "--hide-scrollbars", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


# ---- helpers -------------------------------------------------------------------------------------

def until(driver, condition, message: str):
    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: condition(d), message)


def counter(driver, name: str) -> int:
    return int(driver.execute_script(f"return document.body.dataset.{name} || '0'"))


def open_page(driver, url: str) -> None:
    """Loads the page and waits for its first complete drawing (or an error it shows)."""
    driver.get_log("browser")                                   # drop what came before
    driver.get(url)
    until(driver, lambda d: counter(d, "renders") >= 1 or d.execute_script(
        "return document.body.dataset.state") == "error", f"{url} never drew its charts")
    assert driver.execute_script("return document.body.dataset.state") != "error", \
        driver.find_element(By.ID, "status").text


def chart(driver, name: str) -> dict:
    """The data plotly drew in #chart-<name>: traces' z, x, y and the layout's titles and shapes."""
    return driver.execute_script("""
        const node = document.getElementById('chart-' + arguments[0]);
        if (!node || !node.data) return null;
        const l = node.layout;
        return {traces: node.data.map(t => ({type: t.type, z: t.z || null, x: t.x || null, y: t.y || null,
                                              customdata: t.customdata || null})),
                title: l.title && l.title.text, xtitle: l.xaxis && l.xaxis.title && l.xaxis.title.text,
                ytitle: l.yaxis && l.yaxis.title && l.yaxis.title.text, ytype: l.yaxis && l.yaxis.type,
                shapes: l.shapes || [], rendered: !!node.querySelector('.main-svg'),
                width: node.getBoundingClientRect().width};""", name)


def console_errors(driver, allow=()) -> list[dict]:
    return [e for e in driver.get_log("browser")
            if e["level"] in ("SEVERE", "ERROR") and not any(a in e["message"] for a in allow)]


def foreign_resources(driver, base: str) -> list[str]:
    names = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat(performance.getEntriesByType('navigation').map(e => e.name))")
    assert names, "the page loaded no resource at all?"
    return [n for n in names if not (n.startswith(base + "/") or n.startswith("data:"))]


def shape(a) -> tuple:
    return np.asarray(a, dtype=float).shape


def gradients_for(base: str, problem: dict) -> dict:
    r = requests.post(base + "/v1/gradients", json={**problem, "include": ["b_h_terms", "jacobian_norms"]},
                      timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def screenshot(driver, name: str, element_id: str | None = None) -> Path:
    """A PNG of the whole page (or of one element) at the window's width, via DevTools."""
    driver.execute_script("window.scrollTo(0, 0)")
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    width = metrics["cssContentSize"]["width"]
    if element_id:
        r = driver.execute_script("""const r = document.getElementById(arguments[0]).getBoundingClientRect();
                                     return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};""",
                                  element_id)
        clip = {"x": 0, "y": max(0, r["y"] - 8), "width": width, "height": r["h"] + 16, "scale": 1}
    else:
        clip = {"x": 0, "y": 0, "width": width, "height": metrics["cssContentSize"]["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True, "clip": clip})
    DOCS.mkdir(exist_ok=True)
    path = DOCS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


# ---- the tests -----------------------------------------------------------------------------------

def test_default_view_draws_the_seeded_problem_offline(live, browser):
    open_page(browser, live + "/explore?seed=3")
    problem = requests.post(live + "/v1/problems", json={"seed": 3, **PAGE_DEFAULTS}, timeout=10).json()
    expected = gradients_for(live, problem)
    T, N, H = PAGE_DEFAULTS["steps"], PAGE_DEFAULTS["output_size"], PAGE_DEFAULTS["hidden_size"]

    outputs = chart(browser, "outputs")
    assert outputs["rendered"] and shape(outputs["traces"][0]["z"]) == (T, N)
    assert np.allclose(outputs["traces"][0]["z"], expected["outputs"], rtol=0, atol=1e-15)
    assert outputs["traces"][1]["x"] == problem["targets"]          # the targets marked
    assert "ŷ" in outputs["title"] and outputs["ytitle"].startswith("t")
    losses = chart(browser, "losses")
    assert np.allclose(losses["traces"][0]["y"], expected["step_losses"], rtol=0, atol=1e-15)
    assert shape(chart(browser, "hidden")["traces"][0]["z"]) == (T, H)

    jac = chart(browser, "jacobian")
    assert shape(jac["traces"][0]["customdata"]) == (T, T)
    assert jac["xtitle"].startswith("k") and jac["ytitle"].startswith("t") and "Π" in jac["title"]
    drawn = np.array(jac["traces"][0]["customdata"], dtype=float)
    assert np.allclose(drawn, np.array(expected["bptt"]["jacobian_norms"], dtype=float), equal_nan=True)
    z = np.array(jac["traces"][0]["z"], dtype=float)                # the log colour scale
    assert np.allclose(z[np.tril_indices(T)], np.log10(drawn[np.tril_indices(T)]))
    grad_norms = chart(browser, "hidden-grad")
    assert grad_norms["ytype"] == "log"
    assert np.allclose(grad_norms["traces"][0]["y"], expected["bptt"]["hidden_grad_norms"])

    terms = chart(browser, "terms")
    assert shape(terms["traces"][0]["customdata"]) == (T, T)
    norms = np.linalg.norm(np.array(expected["bptt"]["b_h_terms"]), axis=2)
    drawn_terms = np.array(terms["traces"][0]["customdata"], dtype=float)
    assert np.allclose(drawn_terms[np.tril_indices(T)], norms[np.tril_indices(T)])
    assert shape(chart(browser, "by-step")["traces"][0]["z"]) == (T, H)
    bh = chart(browser, "bh")
    assert np.allclose(bh["traces"][0]["y"], expected["gradients"]["b_h"])
    assert "max |Σ_t b_h_by_step[t] − gradients.b_h|" in browser.find_element(By.ID, "sum-check").text

    assert console_errors(browser) == []
    assert foreign_resources(browser, live) == []
    # every control has a label
    unlabelled = browser.execute_script("""
        return [...document.querySelectorAll('input, select, textarea')].filter(c =>
          !(c.labels && c.labels.length) && !c.getAttribute('aria-label')).map(c => c.id || c.name);""")
    assert unlabelled == []
    screenshot(browser, "explore_default.png")


def test_a_different_seed_and_query_fields_draw_different_charts(live, browser):
    open_page(browser, live + "/explore?seed=3")
    first = chart(browser, "outputs")["traces"][0]["z"]
    open_page(browser, live + "/explore?seed=4")
    second = chart(browser, "outputs")["traces"][0]["z"]
    assert shape(first) == shape(second) and not np.allclose(first, second)
    # any ProblemsIn field is a query parameter; dense inputs drop the page's token defaults
    open_page(browser, live + "/explore?seed=9&steps=7&hidden_size=5&input_size=3&output_size=2")
    assert shape(chart(browser, "outputs")["traces"][0]["z"]) == (7, 2)
    assert shape(chart(browser, "jacobian")["traces"][0]["customdata"]) == (7, 7)
    assert shape(chart(browser, "hidden")["traces"][0]["z"]) == (7, 5)
    assert browser.find_element(By.ID, "pf-steps").get_attribute("value") == "7"
    # the form draws a new problem and writes the link that reproduces it
    field = browser.find_element(By.ID, "pf-steps")
    field.clear()
    field.send_keys("4")
    renders = counter(browser, "renders")
    browser.find_element(By.ID, "problem-draw").click()
    until(browser, lambda d: counter(d, "renders") > renders, "the form did not redraw")
    assert shape(chart(browser, "outputs")["traces"][0]["z"]) == (4, 2)
    assert "steps=4" in browser.current_url and "seed=9" in browser.current_url
    assert console_errors(browser) == []


def test_a_bad_form_field_shows_the_api_error_next_to_it(live, browser):
    open_page(browser, live + "/explore?seed=3")
    field = browser.find_element(By.ID, "pf-steps")
    field.clear()
    field.send_keys("0")
    browser.find_element(By.ID, "problem-draw").click()
    until(browser, lambda d: counter(d, "problemErrors") >= 1, "no error shown")
    message = browser.find_element(By.ID, "pf-err-steps").text
    assert message, "the error is not next to the steps field"
    assert "invalid" in browser.find_element(By.CSS_SELECTOR, '.field[data-field="steps"]').get_attribute("class")
    assert browser.find_elements(By.CSS_SELECTOR, '#problem-errors li[data-pointer="/steps"]')
    assert chart(browser, "outputs")["rendered"]                       # the last view stays
    assert console_errors(browser, allow=("/v1/problems",)) == []      # only the 422 itself


def test_a_malformed_pasted_body_shows_the_api_error_next_to_the_text_area(live, browser):
    open_page(browser, live + "/explore?seed=3")
    browser.find_element(By.CSS_SELECTOR, "#paste-box summary").click()
    area = browser.find_element(By.ID, "paste")
    body = {"model": {"weights": {"V": [[1, "x"]], "W": [[0.5]], "U": [[1.0]], "b_h": [0.0], "b_y": [0.0]}},
            "tokens": [0, 0], "targets": [0, 0]}
    browser.execute_script("arguments[0].value = arguments[1]", area, json.dumps(body))
    browser.find_element(By.ID, "paste-run").click()
    until(browser, lambda d: counter(d, "pasteRuns") >= 1, "the paste was not sent")
    items = browser.find_elements(By.CSS_SELECTOR, "#paste-errors li")
    api = requests.post(live + "/v1/gradients", json={**body, "include": ["b_h_terms", "jacobian_norms"]},
                        timeout=10).json()
    assert [i.get_attribute("data-pointer") for i in items] == [e["pointer"] for e in api["errors"]]
    assert "/model/weights/V/0/1" in browser.find_element(By.ID, "paste-errors").text
    assert "invalid" in area.get_attribute("class")
    # the error box sits right under the text area
    assert browser.execute_script(
        "return document.getElementById('paste').parentElement === document.getElementById('paste-errors').parentElement")
    # not JSON at all: sent as typed, the API's 400 shown there too
    browser.execute_script("arguments[0].value = arguments[1]", area, '{"model": ')
    browser.find_element(By.ID, "paste-run").click()
    until(browser, lambda d: counter(d, "pasteRuns") >= 2, "the second paste was not sent")
    text = browser.find_element(By.ID, "paste-errors").text
    assert "400" in text and "not valid JSON" in text
    assert chart(browser, "outputs")["rendered"]                        # never a blank page
    assert console_errors(browser, allow=("/v1/gradients",)) == []


def test_relu_kink_gradcheck_frames_the_failing_element(live, browser):
    open_page(browser, live + "/explore?seed=3")
    browser.find_element(By.ID, "relu-kink").click()
    until(browser, lambda d: counter(d, "gradcheckRuns") >= 1, "the gradcheck did not run")
    example = json.loads((ROOT / "examples" / "gradcheck_relu_kink.json").read_text())
    report = requests.post(live + "/v1/gradcheck", json=example, timeout=30).json()
    assert report["passed"] is False
    assert browser.find_element(By.ID, "gradcheck-verdict").text == "FAILED"
    for name, p in report["parameters"].items():
        row = browser.find_element(By.CSS_SELECTOR, f'#gradcheck-table tr[data-parameter="{name}"]')
        assert row.get_attribute("class") == ("pass" if p["passed"] else "fail")
        assert json.loads(row.get_attribute("data-worst-index")) == p["worst_index"]
    failed = [n for n, p in report["parameters"].items() if not p["passed"]]
    assert "b_h" in failed
    for name in failed:
        drawn = chart(browser, f"gc-{name}")
        assert drawn and drawn["rendered"], name
        worst = report["parameters"][name]["worst_index"]
        row, col = (0, worst[0]) if len(worst) == 1 else worst
        (frame,) = drawn["shapes"]
        assert (frame["x0"], frame["x1"], frame["y0"], frame["y1"]) == (col - 0.5, col + 0.5, row - 0.5, row + 0.5)
    # the page shows the example's own problem: relu, T = 4, N = 2
    assert shape(chart(browser, "outputs")["traces"][0]["z"]) == (4, 2)
    assert console_errors(browser) == []
    assert foreign_resources(browser, live) == []
    screenshot(browser, "explore_gradcheck_failed.png", "gradcheck-section")
    # a check option the API refuses is named next to its field
    eps = browser.find_element(By.ID, "gc-eps")
    eps.clear()
    eps.send_keys("-1")
    browser.find_element(By.ID, "gradcheck-run").click()
    until(browser, lambda d: counter(d, "gradcheckRuns") >= 2, "the second gradcheck did not run")
    assert browser.find_element(By.ID, "gc-err-eps").text
    assert browser.find_elements(By.CSS_SELECTOR, '#gradcheck-errors li[data-pointer^="/check/eps"]')
    assert console_errors(browser, allow=("/v1/gradcheck",)) == []


def test_grading_panel_shows_each_check_and_its_diagnosis(live, browser):
    open_page(browser, live + "/explore?seed=3")
    browser.find_element(By.ID, "grade-no-bptt").click()
    until(browser, lambda d: d.find_element(By.ID, "submission").get_attribute("value"), "no example submission")
    browser.find_element(By.ID, "grade-run").click()
    until(browser, lambda d: counter(d, "gradeRuns") >= 1, "the grade did not run")
    assert browser.find_element(By.ID, "grade-verdict").text == "FAILED"
    rows = {r.get_attribute("data-check"): r for r in browser.find_elements(By.CSS_SELECTOR, "#grade-table tbody tr")}
    assert set(rows) == {"loss", "gradients.b_h", "gradients.b_y"}
    assert rows["loss"].get_attribute("class") == "pass"
    assert rows["gradients.b_h"].get_attribute("class") == "fail"
    assert "no_bptt" in rows["gradients.b_h"].find_element(By.CSS_SELECTOR, "td.diagnosis").text
    # the reference's own answer passes
    browser.find_element(By.ID, "grade-reference").click()
    browser.find_element(By.ID, "grade-run").click()
    until(browser, lambda d: counter(d, "gradeRuns") >= 2, "the second grade did not run")
    assert browser.find_element(By.ID, "grade-verdict").text == "PASSED"
    # a submission that is not JSON is named next to the text area
    browser.execute_script("document.getElementById('submission').value = '{oops'")
    browser.find_element(By.ID, "grade-run").click()
    until(browser, lambda d: counter(d, "gradeRuns") >= 3, "the third grade did not run")
    assert "not JSON" in browser.find_element(By.ID, "grade-errors").text
    assert console_errors(browser) == []


def lstm_batch_body(B=3, T=8, D=5, H=4, N=5, seed=11) -> dict:
    """A v1.1 problem by hand: an LSTM (V 4H×D, W 4H×H, b_h 4H), a batch of B token sequences."""
    rng = np.random.default_rng(seed)
    u = lambda *s: np.round(rng.uniform(-0.6, 0.6, s), 6).tolist()  # noqa: E731
    return {"model": {"cell": "lstm", "weights": {"V": u(4 * H, D), "W": u(4 * H, H), "U": u(N, H),
                                                  "b_h": u(4 * H), "b_y": u(N)}},
            "tokens": rng.integers(0, D, (B, T)).tolist(), "targets": rng.integers(0, N, (B, T)).tolist()}


def test_lstm_batch_view(live, browser):
    B, T, N = 3, 8, 5
    generated = requests.post(live + "/v1/problems", timeout=10, json={
        "seed": 11, "cell": "lstm", "batch_size": B, "tokens": True, "vocab_size": 5, "hidden_size": 4,
        "output_size": N, "steps": T})
    if generated.status_code == 200:
        url = live + f"/explore?seed=11&cell=lstm&batch_size={B}&vocab_size=5&hidden_size=4&output_size={N}&steps={T}"
        body = generated.json()
        open_page(browser, url)
    else:                                                 # /v1/problems without v1.1's fields yet
        body = lstm_batch_body(B=B, T=T, N=N)
        accepted = requests.post(live + "/v1/gradients", json={**body, "include": ["b_h_terms", "jacobian_norms"]},
                                 timeout=30)
        if accepted.status_code != 200:
            errors = (accepted.json().get("errors") or [])[:4] if accepted.headers.get(
                "Content-Type", "").endswith("json") else []
            pytest.skip("needs the v1.1 API (model.cell lstm and B×T batches): /v1/problems refuses "
                        f"cell/batch_size ({generated.status_code}) and /v1/gradients answers "
                        f"{accepted.status_code} to a hand-built LSTM batch: "
                        + "; ".join(f"{e['pointer']} {e['detail']}" for e in errors))
        open_page(browser, live + "/explore?seed=3")
        browser.find_element(By.CSS_SELECTOR, "#paste-box summary").click()
        browser.execute_script("arguments[0].value = arguments[1]", browser.find_element(By.ID, "paste"),
                               json.dumps(body, indent=1))
        renders = counter(browser, "renders")
        browser.find_element(By.ID, "paste-run").click()
        until(browser, lambda d: counter(d, "renders") > renders, "the pasted LSTM batch was not drawn")
    expected = gradients_for(live, body)
    assert shape(expected["outputs"]) == (B, T, N)
    assert not browser.find_element(By.ID, "sequence-box").get_attribute("hidden")
    options = browser.find_elements(By.CSS_SELECTOR, "#sequence option")
    assert len(options) == B
    outputs = chart(browser, "outputs")["traces"][0]["z"]
    assert np.allclose(outputs, expected["outputs"][0])
    assert shape(chart(browser, "jacobian")["traces"][0]["customdata"]) == (T, T)
    assert "∂s" in chart(browser, "jacobian")["title"]                   # the LSTM's state [h; c]
    assert shape(chart(browser, "by-step")["traces"][0]["z"]) == (T, 4 * 4)
    renders = counter(browser, "renders")
    browser.execute_script("const s = document.getElementById('sequence'); s.value = '1';"
                           "s.dispatchEvent(new Event('change'))")
    until(browser, lambda d: counter(d, "renders") > renders, "choosing a sequence did not redraw")
    assert np.allclose(chart(browser, "outputs")["traces"][0]["z"], expected["outputs"][1])
    assert np.allclose(np.array(chart(browser, "jacobian")["traces"][0]["customdata"], dtype=float),
                       np.array(expected["bptt"]["jacobian_norms"][1], dtype=float), equal_nan=True)
    assert console_errors(browser) == []
    screenshot(browser, "explore_lstm_batch.png")


def test_narrow_window_has_no_horizontal_scrolling(live, browser):
    """A phone-sized viewport (375 CSS px; headless Chrome's windows are at least 500 wide, so
    the viewport is set through DevTools): one column, nothing wider than the window."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    try:
        open_page(browser, live + "/explore?seed=3")
        assert browser.execute_script("return innerWidth") == 375
        until(browser, lambda d: chart(d, "outputs")["width"] <= 375, "the charts did not shrink")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        for name in ("outputs", "losses", "jacobian", "hidden-grad", "terms", "by-step", "bh"):
            assert 250 < chart(browser, name)["width"] <= 375, name
        assert console_errors(browser) == []
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_with_api_keys_the_page_asks_for_one_and_keeps_it_in_the_tab(tmp_path, browser):
    key = "explore-test-key-1"
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"name": "explorer", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                                 "scopes": ["problems", "gradients", "gradcheck", "grade"]}]))
    with Gunicorn(tmp_path, workers=1, RNN_API_KEYS_FILE=str(keys)) as server:
        probe = requests.post(server.url + "/v1/problems", json={"seed": 1}, timeout=10)
        if probe.status_code != 401:
            pytest.skip(f"RNN_API_KEYS_FILE is not enforced by this build (/v1/problems: {probe.status_code})")
        browser.get_log("browser")
        browser.get(server.url + "/explore?seed=3")
        until(browser, lambda d: d.find_element(By.ID, "auth").is_displayed(), "no key field on a 401")
        assert "API key" in browser.find_element(By.ID, "auth-message").text
        browser.find_element(By.ID, "api-key").send_keys(key)
        browser.find_element(By.ID, "api-key-use").click()
        until(browser, lambda d: counter(d, "renders") >= 1, "the page did not draw with the key")
        assert shape(chart(browser, "outputs")["traces"][0]["z"]) == (10, 6)
        stored = browser.execute_script("return [sessionStorage.getItem('rnn-explore-api-key'), localStorage.length,"
                                        " document.cookie]")
        assert stored == [key, 0, ""]
        assert console_errors(browser, allow=("401",)) == []


def v1_1_lstm_batch(B=3, T=6, H=3, D=4, N=4, seed=5) -> tuple[dict, dict]:
    """A v1.1 LSTM batch and the /v1/gradients answer API.md gives for it, computed by the
    v1.1 reference (tests/reference.py, complex steps): outputs B×T×N, hidden B×T×H,
    step_losses B×T, hidden_grad_norms B×T, jacobian_norms B×T×T, b_h_by_step T×4H and
    b_h_terms T×T×4H summed over the batch."""
    import reference as ref
    case, p = ref.random_case(seed, cell="lstm", B=B, T=T, H=H, D=D, N=N, tokens=True)
    run = ref.cell_run(case, p)
    grads = ref.cell_grads(case, p)
    jac = ref.cell_jacobian_norms(case, p)
    listed = lambda a: np.asarray(a, dtype=float).tolist()  # noqa: E731
    body = {"model": {"cell": "lstm", "weights": {k: listed(p[k]) for k in ("V", "W", "U", "b_h", "b_y")}},
            "h_init": listed(p["h_init"]), "c_init": listed(p["c_init"]),
            "tokens": case.tokens, "targets": case.targets}
    answer = {"outputs": listed(run["yhat"]), "hidden": listed(run["h"]), "cell": listed(run["c"]),
              "loss": float(run["L"]), "step_losses": listed(run["step_losses"]),
              "gradients": {k: listed(v) for k, v in grads.items()},
              "bptt": {"b_h_by_step": listed(ref.cell_b_h_by_step(case, p)),
                       "hidden_grad_norms": listed(ref.cell_state_grad_norms(case, p)),
                       "b_h_terms": listed(ref.cell_b_h_terms(case, p)),
                       "jacobian_norms": [[[None if np.isnan(x) else float(x) for x in row] for row in seq]
                                          for seq in jac]}}
    return body, answer


def test_a_batched_lstm_answer_is_drawn_sequence_by_sequence(live, browser):
    """The page's reading of v1.1 shapes (a leading batch axis found from the arrays' depth, a
    sequence chosen from the batch) on the answer API.md specifies, computed by the v1.1
    reference and handed to the page in place of /v1/gradients' (which may not have v1.1 yet);
    the pasted body goes out as it was pasted, with `include` added."""
    B, T, H, N = 3, 6, 3, 4
    body, answer = v1_1_lstm_batch(B=B, T=T, H=H, N=N)
    open_page(browser, live + "/explore?seed=3")
    browser.execute_script("""
        const canned = arguments[0], real = window.fetch;
        window.__sent = [];
        window.fetch = (url, options) => {
          if (url !== '/v1/gradients') return real(url, options);
          window.__sent.push(options.body);
          return Promise.resolve(new Response(JSON.stringify(canned),
                                              {status: 200, headers: {'Content-Type': 'application/json'}}));
        };""", answer)
    browser.find_element(By.CSS_SELECTOR, "#paste-box summary").click()
    browser.execute_script("arguments[0].value = arguments[1]", browser.find_element(By.ID, "paste"),
                           json.dumps(body))
    renders = counter(browser, "renders")
    browser.find_element(By.ID, "paste-run").click()
    until(browser, lambda d: counter(d, "renders") > renders, "the batch was not drawn")
    (sent,) = [json.loads(s) for s in browser.execute_script("return window.__sent")]
    assert sent == {**body, "include": ["b_h_terms", "jacobian_norms"]}

    assert browser.find_element(By.ID, "sequence-box").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sequence option")) == B
    assert f"B = {B}" in browser.find_element(By.ID, "summary").text
    for b in (0, 2):
        if b:
            renders = counter(browser, "renders")
            browser.execute_script("const s = document.getElementById('sequence'); s.value = arguments[0];"
                                   "s.dispatchEvent(new Event('change'))", str(b))
            until(browser, lambda d: counter(d, "renders") > renders, "choosing a sequence did not redraw")
        outputs = chart(browser, "outputs")
        assert shape(outputs["traces"][0]["z"]) == (T, N)
        assert np.allclose(outputs["traces"][0]["z"], answer["outputs"][b])
        assert outputs["traces"][1]["x"] == body["targets"][b]
        assert np.allclose(chart(browser, "losses")["traces"][0]["y"], answer["step_losses"][b])
        assert np.allclose(chart(browser, "hidden")["traces"][0]["z"], answer["hidden"][b])
        jac = chart(browser, "jacobian")
        assert np.allclose(np.array(jac["traces"][0]["customdata"], dtype=float),
                           np.array(answer["bptt"]["jacobian_norms"][b], dtype=float), equal_nan=True)
        assert np.allclose(chart(browser, "hidden-grad")["traces"][0]["y"], answer["bptt"]["hidden_grad_norms"][b])
    assert "∂s" in chart(browser, "jacobian")["title"]                   # the LSTM's state [h; c]
    assert shape(chart(browser, "terms")["traces"][0]["customdata"]) == (T, T)   # summed over the batch
    assert shape(chart(browser, "by-step")["traces"][0]["z"]) == (T, 4 * H)
    assert np.allclose(chart(browser, "bh")["traces"][0]["y"], answer["gradients"]["b_h"])
    assert console_errors(browser) == []
