"""Drives the web console in Debian's headless Chromium (selenium, chromedriver), as a
person would: sign in, find a failed run by a value in its input, open its timeline,
retry it and see the new run succeed live, turn a trigger off and see its webhook
refused, and sign in with a read-only key that sees no buttons. Saves a screenshot of each
page under --shots. Run by tests/tests/e2e/console.rs, which prepares the server.

Exit 0 when every step holds; otherwise the failing step and why.
"""

import argparse
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def browser(width=1280, height=900):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--no-proxy-server"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def sign_in(d, base, key):
    d.get(f"{base}/login")
    d.find_element(By.ID, "key").send_keys(key)
    d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait_for(d, lambda: "Overview" in d.title, "the overview after signing in")


def wait_for(d, ok, what, limit=20.0):
    until = time.time() + limit
    while time.time() < until:
        try:
            if ok():
                return
        except Exception:  # the page is being replaced
            pass
        time.sleep(0.2)
    raise AssertionError(f"never saw {what}; the page was:\n{d.page_source[:3000]}")


def shot(d, shots, name):
    d.save_screenshot(f"{shots}/{name}.png")


def main():
    p = argparse.ArgumentParser()
    for a in ("base", "key", "read_key", "search", "failed", "hook", "shots"):
        p.add_argument(f"--{a.replace('_', '-')}", required=True)
    a = p.parse_args()
    d = browser()
    try:
        sign_in(d, a.base, a.key)
        shot(d, a.shots, "overview")
        d.find_element(By.LINK_TEXT, "Runs").click()
        d.find_element(By.NAME, "text").send_keys(a.search)
        d.find_element(By.CSS_SELECTOR, "form[action='/runs'] button").click()
        wait_for(d, lambda: "text=" in d.current_url and a.failed in d.page_source, "the failed run among the results")
        rows = d.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == 1, f"the search found {len(rows)} runs"
        shot(d, a.shots, "runs")
        d.find_element(By.LINK_TEXT, a.failed).click()
        wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, "rect.bar.failed"), "a timeline bar for the failed attempt")
        shot(d, a.shots, "run-timeline")
        d.find_element(By.XPATH, "//button[text()='Retry']").click()
        wait_for(d, lambda: "Retry of" in d.page_source and a.failed in d.page_source, "the new run's page")
        new_run = d.current_url.rsplit("/", 1)[-1]
        # The page reloads itself while the run goes on.
        wait_for(d, lambda: "class=\"succeeded\">succeeded" in d.page_source, "the new run succeed")
        shot(d, a.shots, "run-retried")

        d.find_element(By.LINK_TEXT, "Workflows").click()
        d.find_element(By.XPATH, "//form[contains(@action, '/triggers/hook/disable')]/button").click()
        wait_for(d, lambda: "Turn on" in d.page_source, "the trigger switched off")
        shot(d, a.shots, "workflows")
        try:
            urllib.request.urlopen(urllib.request.Request(a.hook, data=b"{}", headers={"content-type": "application/json"}))
            raise AssertionError("the switched-off webhook accepted a request")
        except urllib.error.HTTPError as e:
            assert e.code == 503, f"the switched-off webhook answered {e.code}"

        d.find_element(By.XPATH, "//button[text()='Sign out']").click()
        wait_for(d, lambda: d.find_elements(By.ID, "key"), "the sign-in page")
        sign_in(d, a.base, a.read_key)
        for page in ("runs", "workflows", f"runs/{new_run}"):
            d.get(f"{a.base}/{page}")
            buttons = [b.text for b in d.find_elements(By.TAG_NAME, "button")]
            acting = [b for b in buttons if b not in ("Search", "Sign out")]
            assert not acting, f"a read-only key sees {acting} on /{page}"
        shot(d, a.shots, "read-only")
    finally:
        d.quit()
    phone = browser(390, 844)
    try:
        sign_in(phone, a.base, a.key)
        phone.get(f"{a.base}/approvals")
        shot(phone, a.shots, "approvals-phone")
    finally:
        phone.quit()
    print("the console did everything asked")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"console browser test failed: {e}", file=sys.stderr)
        sys.exit(1)
