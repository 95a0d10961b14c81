"""The console in a real headless browser: Debian's chromium driven by Selenium through Debian's chromedriver (no
browser download), against the real API server on loopback. Sign in, list, view, add, a validation error beside
its field, edit, a 403 naming the rule; the YAML on disk and the flows' loaders see the change. Skips when chromium
is absent, unless CMP_REQUIRE_BROWSER=1 (CI), where that is a failure."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cmp_pipelines.core.config import load_mandate_revision_codes, load_payment_terms
from tests.support.api import KEYS

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).exists()), None)
DRIVER = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "") if p and Path(p).exists()),
              None)


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        message = "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CMP_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " and CMP_REQUIRE_BROWSER=1")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the pages make
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def click(driver, by: str, value: str) -> None:
    """Click what loads a new page, and return once that page has replaced this one (a click does not wait). The old
    page is marked first; the mark is gone when the new document is there (an element reference to the old page
    can fail in more ways than `stale` while chromium swaps documents)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.documentElement.dataset.leaving = '1'")
    driver.find_element(by, value).click()
    WebDriverWait(driver, 60, ignored_exceptions=(WebDriverException,)).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && !document.documentElement.dataset.leaving"))


def sign_in(driver, base_url: str, client_id: str, target: str = "/console/") -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(base_url + target)
    assert driver.current_url.startswith(base_url + "/console/login")
    driver.find_element(By.ID, "api_key").send_keys(KEYS[client_id])
    click(driver, By.ID, "sign-in")


def test_console_in_chromium(console, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    api, config_dir = console
    base, driver = api.base_url, browser

    sign_in(driver, base, "AGENTVIEW", "/console/mandate-revision-codes")
    rows = driver.find_elements(By.CSS_SELECTOR, "#entries tr")
    assert len(rows) == 1 + 9 and "Account transferred to a new bank" in rows[4].text
    click(driver, By.LINK_TEXT, "3")
    assert driver.find_element(By.ID, "value-action").text == "AMEND"
    click(driver, By.ID, "edit")
    assert driver.find_element(By.ID, "refused").text == (
        "API client AGENTVIEW (security level AGENT) may not EDIT_CONFIG: config/security.yaml allows SUPERVISOR, "
        "ADMIN")

    sign_in(driver, base, "BACKOFFICE", "/console/mandate-revision-codes")
    click(driver, By.ID, "add")
    values = {"code": "F", "name": "Instruction amended by payer bank with a name far longer than sixty characters",
              "reason_type": "ADDACS", "reason_code": "PAYER_BANK_AMENDED", "event.type": "DIRECT_DEBIT",
              "event.code": "MANDATE_AMENDED"}
    for name, value in values.items():
        driver.find_element(By.ID, name).send_keys(value)
    Select(driver.find_element(By.ID, "action")).select_by_value("AMEND")
    click(driver, By.ID, "save")
    assert driver.find_element(By.ID, "error-name").text == "must be 1-60 characters"
    name = driver.find_element(By.ID, "name")
    name.clear()
    name.send_keys("Instruction amended by the payer's bank")
    click(driver, By.ID, "save")
    assert driver.find_element(By.ID, "saved").text.startswith("Saved (change 1)")
    assert driver.find_element(By.ID, "value-name").text == "Instruction amended by the payer's bank"
    assert load_mandate_revision_codes(config_dir)["F"].name == "Instruction amended by the payer's bank"

    driver.get(base + "/console/payment-terms/D30/edit")
    description = driver.find_element(By.ID, "description")
    assert description.get_attribute("value") == "Within 30 days of invoice"
    assert driver.find_element(By.ID, "code").get_attribute("readonly") == "true"
    description.clear()
    description.send_keys("Thirty days net")
    days = driver.find_element(By.ID, "days_to_pay")
    days.clear()
    days.send_keys("31")
    click(driver, By.ID, "save")
    assert driver.find_element(By.ID, "value-days_to_pay").text == "31"
    history = driver.find_element(By.ID, "changes").text
    assert "API client BACKOFFICE (SUPERVISOR)" in history and "days_to_pay: 30" in history
    assert load_payment_terms(config_dir).terms["D30"].days_to_pay == 31
    assert '  - {code: "D30", description: Thirty days net, days_to_pay: 31}\n' in \
        (config_dir / "payment_terms.yaml").read_text()
    assert "# Payment term defaults: the payment term a new account gets" in \
        (config_dir / "payment_terms.yaml").read_text()

    driver.get_log("performance")  # drop what came before
    driver.get(base + "/docs")  # Swagger UI 5 from the package's files renders the OpenAPI 3.1 document
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text.startswith(
        "CMP one-off payments and account set-up")
    assert driver.find_elements(By.CSS_SELECTOR, ".opblock")  # the operations are listed
    requested = {json.loads(e["message"])["message"]["params"]["request"]["url"]
                 for e in driver.get_log("performance") if '"Network.requestWillBeSent"' in e["message"]}
    assert base + "/docs-assets/swagger-ui-bundle.js" in requested and base + "/openapi.json" in requested
    assert [url for url in requested if not url.startswith(base + "/") and not url.startswith("data:")] == []

    driver.get(base + "/console/changes")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#changes tr")) == 1 + 2
    click(driver, By.CSS_SELECTOR, ".signout button")
    driver.get(base + "/console/payment-terms")
    assert driver.current_url.startswith(base + "/console/login")
