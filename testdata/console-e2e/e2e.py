"""End-to-end test of Latch's approval console in a real browser.

Debian's headless Chromium (/usr/bin/chromium, no browser download), driven by Python's
playwright: open the console, get sent to the OpenID Provider (testdata/oidc-provider), sign in
as USER there, come back signed in, screenshot the pending list, open REQUEST_ID's page, give a
reason and approve. Prints the request's state as the page shows it afterwards.

    python3 e2e.py BASE_URL REQUEST_ID USER SCREENSHOT.png

Run by crates/latch-cli/tests/it/console.rs (which starts the broker and the provider).
"""
import sys

from playwright.sync_api import sync_playwright


def main() -> None:
    base, request_id, user, shot = sys.argv[1:5]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        # No console page may load a script, and the CSP must not be violated.
        violations = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{base}/console/")
        # The provider's sign-in form (oidc-provider's development interactions).
        page.wait_for_selector("input[name=login]", timeout=15000)
        page.fill("input[name=login]", user)
        page.fill("input[name=password]", "any password")
        page.click("button[type=submit]")
        # Back at the console (the callback page moves on by itself).
        page.wait_for_url(f"{base}/console/", timeout=15000)
        page.wait_for_selector(f"a[href='/console/requests/{request_id}']", timeout=15000)
        assert f"Signed in as" in page.content(), page.content()
        page.screenshot(path=shot, full_page=True)
        page.click(f"a.button[href='/console/requests/{request_id}']")
        page.wait_for_selector("form.vote", timeout=15000)
        page.fill("input[name=reason]", "reviewed in the console: cache write for the build")
        page.click("button[name=verdict][value=approve]")
        page.wait_for_selector("span.state", timeout=15000)
        state = page.inner_text("span.state").strip().lower()
        print(f"request {request_id}: {state}")
        if violations:
            print("CSP violations:", violations, file=sys.stderr)
            sys.exit(1)
        browser.close()
        if state != "approved":
            sys.exit(1)


if __name__ == "__main__":
    main()
