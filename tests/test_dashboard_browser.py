"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver),
driven by Selenium. Outside CI they skip when the browser is missing; in CI ($CI set) they fail."""
from __future__ import annotations

import json
import os

import pytest

from conftest import job_state, run_cli, wait_until
from dashboard_server import Dashboard

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _missing() -> str:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install -y chromium chromium-driver)"
    return ""


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        if IN_CI:
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(f"no browser for the dashboard tests: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def server(home):
    run_cli(home, "status")  # the home exists before the dashboard opens it
    started = Dashboard(home)
    yield started
    assert "Traceback" not in started.stop()


@pytest.fixture
def page(browser, server):
    """The browser on the dashboard, its console emptied; no console error may appear during a test."""
    browser.get(server.url + "/")
    browser.get_log("browser")
    yield browser
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


def enqueue(home: str, *args: str) -> str:
    result = run_cli(home, "enqueue", "-q", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def text_of(driver, selector: str) -> str:
    """The rendered text of the first match, read in one step (the page redraws every 2 s)."""
    return driver.execute_script(
        "const node = document.querySelector(arguments[0]); return node ? node.innerText : '';", selector)


def go(driver, server, fragment: str) -> None:
    driver.get(f"{server.url}/#{fragment}")


def test_the_counts_equal_status_json(home, server, page):
    for n in range(4):
        enqueue(home, f"echo {n}")
    enqueue(home, "--id", "doomed", "--max-retries", "0", "exit 1")
    enqueue(home, "--delay", "1h", "echo later")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    status = json.loads(run_cli(home, "status", "--json").stdout)
    go(page, server, "/")
    for state in ("pending", "processing", "completed", "failed", "dead", "total"):
        wait_until(lambda: text_of(page, f"#count-{state} .n") == str(status[state]), timeout=20,
                   what=f"{state} count {status[state]}")


def test_a_job_enqueued_after_load_appears_without_reload(home, server, page):
    go(page, server, "/jobs?state=pending")
    wait_until(lambda: "No jobs here." in text_of(page, "#view"), timeout=20, what="an empty list")
    page.execute_script("window.__loadedOnce = 'yes';")  # a reload would forget this
    job_id = enqueue(home, "--id", "late-comer", "echo hi")
    wait_until(lambda: job_id in text_of(page, "#view table"), timeout=20, what="the new job in the list")
    assert page.execute_script("return window.__loadedOnce;") == "yes"
    go(page, server, "/")
    wait_until(lambda: text_of(page, "#count-pending .n") == "1", timeout=20, what="the pending count")
    enqueue(home, "echo two")
    wait_until(lambda: text_of(page, "#count-pending .n") == "2", timeout=20, what="the count to follow")


def test_the_retry_button_moves_a_dead_job_to_pending(home, server, page):
    from selenium.webdriver.common.by import By

    enqueue(home, "--id", "flaky", "--max-retries", "0", "exit 7")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    go(page, server, "/dlq")
    button = wait_until(lambda: page.find_elements(By.CSS_SELECTOR, 'tr[data-job="flaky"] button.primary'),
                        timeout=20, what="the Retry button")[0]
    assert button.text == "Retry"
    button.click()
    alert = wait_until(lambda: _alert(page), timeout=10, what="the confirmation")
    assert "flaky" in alert.text
    alert.accept()
    wait_until(lambda: job_state(home, "flaky")["state"] == "pending", timeout=20, what="flaky pending")
    assert job_state(home, "flaky")["attempts"] == 0
    wait_until(lambda: "The dead letter queue is empty." in text_of(page, "#view"), timeout=20,
               what="the DLQ view to update")


def test_dismissing_the_confirmation_changes_nothing(home, server, page):
    from selenium.webdriver.common.by import By

    enqueue(home, "--id", "stays", "--max-retries", "0", "exit 7")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    go(page, server, "/dlq")
    wait_until(lambda: page.find_elements(By.CSS_SELECTOR, 'tr[data-job="stays"] button.danger'),
               timeout=20, what="the Delete button")[0].click()
    wait_until(lambda: _alert(page), timeout=10, what="the confirmation").dismiss()
    assert job_state(home, "stays")["state"] == "dead"


def test_delete_on_a_job_page_goes_back_to_the_jobs(home, server, page):
    from selenium.webdriver.common.by import By

    enqueue(home, "--id", "to-delete", "echo bye")
    go(page, server, "/job/to-delete")
    wait_until(lambda: page.find_elements(By.CSS_SELECTOR, "#view button.danger"), timeout=20,
               what="the Delete button")[0].click()
    wait_until(lambda: _alert(page), timeout=10, what="the confirmation").accept()
    wait_until(lambda: page.current_url.endswith("#/jobs"), timeout=20, what="the jobs view")
    wait_until(lambda: run_cli(home, "show", "to-delete").returncode == 1, timeout=20, what="the job deleted")
    wait_until(lambda: "No jobs here." in text_of(page, "#view"), timeout=20, what="an empty list")


def test_a_script_in_a_command_shows_as_text_and_does_not_run(home, server, page):
    command = "echo '<script>window.__owned=1</script><img src=x onerror=\"window.__owned=2\">'"
    job_id = enqueue(home, "--id", "xss", command)
    go(page, server, "/jobs")
    wait_until(lambda: "<script>window.__owned=1</script>" in text_of(page, "td.command"), timeout=20,
               what="the command as text")
    go(page, server, "/job/" + job_id)
    wait_until(lambda: command in text_of(page, "dl.fields"), timeout=20, what="the job's fields")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    wait_until(lambda: "<img src=x" in text_of(page, "#log"), timeout=20, what="the log as text")
    assert page.execute_script("return window.__owned === undefined")
    assert page.execute_script("return document.querySelectorAll('#view script, #view img').length") == 0


def test_every_view_renders_without_console_errors(home, server, page, pools):
    enqueue(home, "--id", "long", "sleep 30")
    pools.start(1)
    wait_until(lambda: job_state(home, "long")["state"] == "processing", timeout=30, what="a running job")
    for fragment, expected in (("/", "long"), ("/workers", "long"), ("/jobs?state=processing", "long"),
                               ("/job/long", "processing"), ("/dlq", "empty"), ("/queues", "default"),
                               ("/jobs?queue=default", "long")):
        go(page, server, fragment)
        wait_until(lambda: expected in text_of(page, "#view"), timeout=20, what=f"{fragment} to show {expected}")
    assert "Updated" in text_of(page, "#status")


def test_the_log_follows_a_running_job(home, server, page, pools):
    job_id = enqueue(home, "--id", "ticker", "for i in 1 2 3 4 5 6; do echo tick-$i; sleep 1; done")
    go(page, server, "/job/" + job_id)
    pools.start(1)
    wait_until(lambda: "tick-2" in text_of(page, "#log"), timeout=30, what="the first lines")
    wait_until(lambda: "tick-6" in text_of(page, "#log"), timeout=30, what="the last line, followed")
    assert text_of(page, "#log").count("tick-1") == 1  # appended, not repeated


def test_the_search_box_narrows_by_id_prefix(home, server, page):
    from selenium.webdriver.common.by import By

    for job_id in ("deploy-a", "deploy-b", "backup"):
        enqueue(home, "--id", job_id, "true")
    go(page, server, "/jobs")
    wait_until(lambda: "backup" in text_of(page, "#view table"), timeout=20, what="all jobs")
    page.find_element(By.ID, "search").send_keys("dep")
    wait_until(lambda: "backup" not in text_of(page, "#view table"), timeout=20, what="the search")
    assert "deploy-a" in text_of(page, "#view table") and "deploy-b" in text_of(page, "#view table")


def test_a_read_only_dashboard_shows_no_buttons(home, browser):
    enqueue(home, "--id", "dead-ro", "--max-retries", "0", "exit 1")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    server = Dashboard(home, "--read-only")
    try:
        browser.get(server.url + "/#/dlq")
        wait_until(lambda: "dead-ro" in text_of(browser, "#view"), timeout=20, what="the DLQ")
        wait_until(lambda: "read-only" in text_of(browser, "#status"), timeout=20, what="the read-only note")
        assert browser.execute_script("return document.querySelectorAll('#view tr button').length") == 0
        browser.get(server.url + "/#/queues")
        wait_until(lambda: "default" in text_of(browser, "#view table"), timeout=20, what="the queues")
        assert browser.execute_script("return document.querySelectorAll('#view button, #view input').length") == 0
    finally:
        assert "Traceback" not in server.stop()


def click_and_confirm(driver, selector: str, what: str) -> str:
    """Click the first button matching `selector` and accept its confirmation; returns its question."""
    from selenium.webdriver.common.by import By

    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, selector), timeout=20, what=what)[0].click()
    alert = wait_until(lambda: _alert(driver), timeout=10, what=f"the confirmation of {what}")
    question = alert.text
    alert.accept()
    return question


def button(label: str) -> str:
    return f"//*[@id='view']//button[normalize-space()='{label}']"


def click_labelled(driver, label: str) -> str:
    from selenium.webdriver.common.by import By

    wait_until(lambda: driver.find_elements(By.XPATH, button(label)), timeout=20, what=f"the {label} button")[0].click()
    alert = wait_until(lambda: _alert(driver), timeout=10, what=f"the confirmation of {label}")
    question = alert.text
    alert.accept()
    return question


def test_the_overview_charts_the_last_hour_and_shows_the_queues(home, server, page):
    for n in range(3):
        enqueue(home, "--queue", "mail", f"echo {n}")
    enqueue(home, "--queue", "video", "--max-retries", "0", "exit 1")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    assert run_cli(home, "pause", "video").returncode == 0
    by_outcome = json.loads(run_cli(home, "stats", "--json").stdout)["runs"]["by_outcome"]
    go(page, server, "/")
    count = ("return [...document.querySelectorAll(arguments[0])].reduce((n, bar) =>"
             " n + Number(bar.querySelector('title').textContent.match(arguments[1])[1]), 0)")
    wait_until(lambda: page.execute_script(count, "#chart rect.ok", r"(\d+) succeeded") == by_outcome["completed"],
               timeout=20, what="the succeeded runs in the chart")
    assert page.execute_script(count, "#chart rect.bad", r"(\d+) failed") == by_outcome["failed"] == 1
    assert "p95" in text_of(page, "#durations") and "4 runs" in text_of(page, "#durations")
    wait_until(lambda: "Paused: video." in text_of(page, "#view"), timeout=20, what="the pauses")
    queues = text_of(page, "#view table")
    assert "mail" in queues and "video" in queues and "paused" in queues


def test_the_queues_view_pauses_resumes_and_limits(home, server, page):
    from selenium.webdriver.common.by import By

    enqueue(home, "--queue", "mail", "true")
    queues = lambda: {q["name"]: q for q in json.loads(run_cli(home, "queues", "--json").stdout)}  # noqa: E731
    go(page, server, "/queues")
    assert "mail" in click_and_confirm(page, 'tr[data-queue="mail"] button.danger', "Pause mail")
    wait_until(lambda: queues()["mail"]["paused"], timeout=20, what="mail paused")
    click_and_confirm(page, 'tr[data-queue="mail"] button', "Resume mail")
    wait_until(lambda: not queues()["mail"]["paused"], timeout=20, what="mail resumed")
    click_labelled(page, "Pause every queue")
    wait_until(lambda: json.loads(run_cli(home, "status", "--json").stdout)["paused"]["all"], timeout=20,
               what="every queue paused")
    click_labelled(page, "Resume every queue")
    wait_until(lambda: not json.loads(run_cli(home, "status", "--json").stdout)["paused"]["all"], timeout=20,
               what="the pause lifted")
    page.find_element(By.ID, "limit-value").send_keys("2")
    page.find_element(By.ID, "limit-queue").send_keys("mail")
    click_and_confirm(page, "#limit-set", "Set limit")
    wait_until(lambda: queues()["mail"]["limit"] == 2, timeout=20, what="the limit")
    wait_until(lambda: "2" in text_of(page, 'tr[data-queue="mail"] td:nth-child(7)'), timeout=20, what="the limit shown")


def test_a_job_page_shows_its_runs_and_requeues_cancels_and_retries(home, server, page):
    enqueue(home, "--id", "again", "--max-retries", "0", "exit 4")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    go(page, server, "/job/again")
    wait_until(lambda: "failed" in text_of(page, "#runs table tbody"), timeout=20, what="the failed run")
    assert text_of(page, "#runs table tbody td.num") == "1"  # attempt 1
    assert "Requeue" in text_of(page, "#view .tools") and "Retry" in text_of(page, "#view .tools")
    assert "again" in click_labelled(page, "Requeue")
    wait_until(lambda: job_state(home, "again")["state"] == "pending", timeout=20, what="requeued")
    assert "again" in click_labelled(page, "Cancel")
    wait_until(lambda: job_state(home, "again")["last_error"] == "cancelled", timeout=20, what="cancelled")
    click_labelled(page, "Retry")
    wait_until(lambda: job_state(home, "again")["state"] == "pending", timeout=20, what="retried")
    wait_until(lambda: "Cancel" in text_of(page, "#view .tools"), timeout=20, what="the buttons of a pending job")
    assert "Requeue" not in text_of(page, "#view .tools")


def test_jobs_by_queue_and_the_jobs_that_wait_for_another(home, server, page):
    from selenium.webdriver.support.ui import Select

    enqueue(home, "--id", "first", "--queue", "alpha", "--delay", "1h", "true")
    enqueue(home, "--id", "second", "--queue", "alpha", "--after", "first", "true")
    enqueue(home, "--id", "beta-1", "--queue", "beta", "true")
    go(page, server, "/jobs?state=pending&queue=alpha")
    wait_until(lambda: "second" in text_of(page, "#view table"), timeout=20, what="the waiting job listed")
    assert "first" in text_of(page, "#view table") and "beta-1" not in text_of(page, "#view table")
    chooser = wait_until(lambda: page.find_elements("id", "queue-filter"), timeout=20, what="the queue filter")[0]
    wait_until(lambda: len(Select(chooser).options) == 3, timeout=20, what="the queues to choose from")
    Select(chooser).select_by_value("beta")
    wait_until(lambda: "queue=beta" in page.current_url and "beta-1" in text_of(page, "#view table"),
               timeout=20, what="the jobs of beta")
    assert "second" not in text_of(page, "#view table")


def test_a_phone_sized_window_shows_the_overview(home, server, page):
    enqueue(home, "echo small")
    page.set_window_size(390, 844)
    try:
        go(page, server, "/")
        wait_until(lambda: text_of(page, "#count-pending .n") == "1", timeout=20, what="the counts")
        width = page.execute_script("return document.documentElement.scrollWidth")
        assert width <= page.execute_script("return window.innerWidth") + 1  # no sideways scrolling
    finally:
        page.set_window_size(1280, 900)


def _alert(driver):
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
        alert.text  # noqa: B018 - raises when there is none
        return alert
    except NoAlertPresentException:
        return None
