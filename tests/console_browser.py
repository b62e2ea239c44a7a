"""Drives the web console in Debian's headless Chromium (selenium, chromedriver), as a
person would: sign in, find a failed run by a value in its input, open its timeline,
retry it and see the new run succeed live, copy a webhook's URL, reprocess the messages
a filter dropped (the filter was fixed before), approve a waiting approval, turn a trigger
off and see its webhook refused, and sign in with a read-only key that sees no buttons.
On every page it measures what a keyboard and a screen reader need (every control
reachable with Tab, labelled, text contrast at least 4.5:1) and prints the worst.
Saves a screenshot of each page under --shots. Run by tests/tests/e2e/console.rs, which
prepares the server.

Exit 0 when every step holds; otherwise the failing step and why.
"""

import argparse
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

AUDIT = """
const problems = [];
const shown = (el) => !el.hidden && el.getClientRects().length > 0;
for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
  if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) problems.push('unlabelled ' + el.outerHTML.slice(0, 90));
}
const controls = [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary')].filter(shown);
for (const el of controls) {
  const name = (el.textContent || '').trim() || el.getAttribute('aria-label') || (el.labels && el.labels.length);
  if (!name) problems.push('no name: ' + el.outerHTML.slice(0, 90));
}
for (const svg of document.querySelectorAll('svg')) if (!svg.getAttribute('aria-label')) problems.push('a drawing without a label');
const rgb = (s) => s.match(/[\\d.]+/g).map(Number);
const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
const back = (el) => { for (; el; el = el.parentElement) { const v = rgb(getComputedStyle(el).backgroundColor); if (v.length < 4 || v[3] > 0) return v.slice(0, 3); } return [255, 255, 255]; };
let worst = 21;
for (const el of document.querySelectorAll('body *')) {
  if (el.closest('svg') || !shown(el)) continue;
  if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  const a = lum(rgb(getComputedStyle(el).color).slice(0, 3)), b = lum(back(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < worst) worst = ratio;
  if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ' for ' + JSON.stringify(el.textContent.trim().slice(0, 40)));
}
window.__controls = controls;
return [problems, worst, controls.length];
"""


def browser(width=1280, height=900, phone=False):
    opts = webdriver.ChromeOptions()
    if phone:  # a desktop window cannot be narrower than 500 px; a phone's screen can
        opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2}})
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


WORST = {}


def shot(d, shots, name):
    """Saves the page and audits it: labels, names, contrast, and every control reached
    by pressing Tab."""
    d.save_screenshot(f"{shots}/{name}.png")
    problems, worst, count = d.execute_script(AUDIT)
    d.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    reached = set()
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(8 * count + 5):  # a datetime-local input takes a Tab per field
        i = d.execute_script("return window.__controls.indexOf(document.activeElement)")
        if i >= 0:
            reached.add(i)
        if len(reached) == count:
            break
        # A key press as a person makes it, to whatever has the focus (an element's
        # send_keys focuses it again first: a datetime-local input would go back to its
        # first field and never let Tab leave).
        ActionChains(d).send_keys(Keys.TAB).perform()
    if len(reached) < count:
        problems.append(f"{count - len(reached)} of {count} controls not reached with Tab")
    assert not problems, f"/{name}: " + "; ".join(problems)
    WORST[name] = (round(worst, 2), count)


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
        copy = d.find_element(By.CSS_SELECTOR, "button[aria-controls='url-shop-hook']")
        copy.click()
        wait_for(d, lambda: copy.text != "Copy", "the copy button answer")
        selected = d.execute_script("return window.getSelection().toString()")
        assert selected == a.hook, f"the copy button selected {selected!r}, not {a.hook!r}"
        d.find_element(By.LINK_TEXT, "shop").click()
        wait_for(d, lambda: "Workflow shop" in d.title, "the workflow's page")
        assert d.find_elements(By.CSS_SELECTOR, "svg[aria-label='the steps in order'] rect"), "no drawing of the steps"
        shot(d, a.shots, "workflow")

        # The filter was fixed before the browser came: reprocess what it dropped.
        d.find_element(By.LINK_TEXT, "Inbox").click()
        d.find_element(By.NAME, "workflow").send_keys("picky")
        for o in d.find_elements(By.CSS_SELECTOR, "select[name=outcome] option"):
            if o.text == "filtered":
                o.click()
        d.find_element(By.CSS_SELECTOR, "form[action='/inbox'] button").click()
        wait_for(d, lambda: "outcome=filtered" in d.current_url, "the filtered messages")
        boxes = d.find_elements(By.CSS_SELECTOR, "input[name=message]")
        assert len(boxes) == 2, f"{len(boxes)} filtered messages listed, not 2"
        for b in boxes:
            b.click()
        shot(d, a.shots, "inbox")
        d.find_element(By.XPATH, "//button[text()='Reprocess selected']").click()
        wait_for(d, lambda: "2 of 2 messages done" in d.page_source, "the bulk job finish")
        shot(d, a.shots, "job")

        d.find_element(By.LINK_TEXT, "Approvals").click()
        wait_for(d, lambda: len(d.find_elements(By.TAG_NAME, "section")) == 2, "two approvals waiting")
        shot(d, a.shots, "approvals")
        first = d.find_element(By.TAG_NAME, "section")
        waiting_run = first.find_element(By.CSS_SELECTOR, "h2 a").get_attribute("href").rsplit("/", 1)[-1]
        first.find_element(By.NAME, "comment").send_keys("looks right")
        first.find_element(By.XPATH, ".//button[text()='Approve']").click()
        # The decision's own answer first: a navigation started while the form's POST is
        # still out can be overtaken by the POST's page (seen once, under a loaded suite).
        wait_for(d, lambda: "Thank you" in d.title, "the decision's answer")
        d.get(f"{a.base}/runs/{waiting_run}")
        wait_for(d, lambda: "class=\"succeeded\">succeeded" in d.page_source, "the approved run succeed")
        d.get(f"{a.base}/approvals")
        wait_for(d, lambda: len(d.find_elements(By.TAG_NAME, "section")) == 1, "one approval left")

        d.find_element(By.LINK_TEXT, "Workflows").click()
        d.find_element(By.XPATH, "//form[contains(@action, '/shop/triggers/hook/disable')]/button").click()
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
            acting = [b for b in buttons if b not in ("Search", "Sign out", "Copy", "")]
            assert not acting, f"a read-only key sees {acting} on /{page}"
        shot(d, a.shots, "read-only")
    finally:
        d.quit()
    phone = browser(390, 844, phone=True)
    try:
        sign_in(phone, a.base, a.key)
        phone.get(f"{a.base}/approvals")
        shot(phone, a.shots, "approvals-phone")
        width, wide = phone.execute_script(
            "return [document.documentElement.scrollWidth, [...document.querySelectorAll('body *')]"
            ".filter(e => e.getBoundingClientRect().right > innerWidth).map(e => e.tagName + ' ' + e.outerHTML.slice(0, 60))]")
        inner = phone.execute_script("return innerWidth")
        assert inner == 390, f"the phone's screen is {inner} px wide, not 390"
        assert width <= 390, f"the approvals page is {width} px wide at a phone's 390: {wide[:5]}"
    finally:
        phone.quit()
    for page, (worst, count) in sorted(WORST.items()):
        print(f"  {page}: {count} controls, all reached with Tab and named; worst text contrast {worst}:1")
    print("the console did everything asked")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"console browser test failed: {e}", file=sys.stderr)
        sys.exit(1)
