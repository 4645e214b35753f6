#!/usr/bin/env python3
"""Open the system's HTML pages in headless Chromium (Debian's chromium and chromedriver,
driven by selenium) with the network cut off, check each as a reader and an auditor would, and
print JSON. Run with the tools venv (.venv-tools, which holds selenium) by
tests/demo/test_pages_in_a_browser.py:

    page_check.py [--shots DIR] [--width 1280] [--height 900] FILE.html [FILE.html ...]

One browser serves every file (starting it is the expensive part). For each file:

- loads:             the page loads, on its own file: URL
- lang:              <html lang> is set
- headings:          exactly one <h1>, first; no level skipped going down (h2 -> h4)
- img_alt:           every <img> has an alt attribute
- svg_name:          every outermost <svg> has a <title>, aria-label or aria-labelledby
- table_headers:     every <table> has header cells
- overflow_x:        the document scrolls sideways: its scrollWidth beyond the viewport's
                     clientWidth (the elements that stick out are named with a CSS path)
- external_requests: every request the page makes that is not file:/data:/about:/blob:
- console_severe:    the console's errors (console.error, uncaught exceptions, failed loads)
- screenshot:        a full-page PNG, for a reviewer (--shots)

The network is off three ways: the DevTools protocol's offline emulation on the page, a host
resolver that resolves nothing, and a proxy at a closed loopback port. A request the page tries
is still recorded (requestWillBeSent fires before it fails), so the count sees it and nothing
leaves the machine. Selenium Manager is never run (the driver's path is given).

Exit status: 0 every page passed every check, 1 some check failed, 2 the browser could not run.
"""

# ruff: noqa: E501  (the page checks are JavaScript in a string; their lines stay as written)
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Belt and braces: Selenium Manager is never invoked when Service has an executable_path (see
# selenium/webdriver/common/driver_finder.py), but if some code path ever did call it, these keep
# it from going online (version discovery at googlechromelabs.github.io, stats to plausible.io).
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMEDRIVER = os.environ.get("CHECK_PAGE_CHROMEDRIVER", "/usr/bin/chromedriver")
# chromedriver finds Debian's browser by itself (/usr/lib/chromium/chromium, not the
# /usr/bin/chromium shell wrapper); set it explicitly so nothing is guessed.
CHROMIUM = os.environ.get("CHECK_PAGE_CHROMIUM", "/usr/lib/chromium/chromium")
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")


def is_external(url: str) -> bool:
    """Not file:/data:/about:/blob:, or a file: URL with a host (a protocol-relative "//cdn/x.js"
    in a file page resolves to file://cdn/x.js: fails here, would load from the network once served)."""
    if url.startswith("file://"):
        return url[7:].split("/", 1)[0] not in ("", "localhost")
    return not url.startswith(LOCAL_SCHEMES)


CHECKS_JS = r"""
const vw = window.innerWidth, de = document.documentElement;
const cw = de.clientWidth;
function path(el) {
  const parts = [];
  for (let e = el; e && e.nodeType === 1 && parts.length < 4; e = e.parentElement) {
    let s = e.tagName.toLowerCase();
    if (e.id) { parts.unshift(s + '#' + e.id); break; }
    if (e.classList.length) s += '.' + [...e.classList].slice(0, 2).join('.');
    const p = e.parentElement;
    if (p) {
      const same = [...p.children].filter(c => c.tagName === e.tagName);
      if (same.length > 1) s += ':nth-of-type(' + (same.indexOf(e) + 1) + ')';
    }
    parts.unshift(s);
  }
  return parts.join(' > ');
}
const snip = (t, n) => (t || '').replace(/\s+/g, ' ').trim().slice(0, n || 80);
const visible = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);

// headings
const hs = [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => ({
  level: +h.tagName[1], text: snip(h.textContent), visible: visible(h), path: path(h)}));
const hProblems = [];
const h1s = hs.filter(h => h.level === 1).length;
if (h1s !== 1) hProblems.push(`${h1s} <h1> elements (want exactly 1)`);
if (hs.length && hs[0].level !== 1) hProblems.push(`first heading is <h${hs[0].level}> "${hs[0].text}"`);
for (let i = 1; i < hs.length; i++) {
  if (hs[i].level > hs[i-1].level + 1)
    hProblems.push(`h${hs[i-1].level} "${hs[i-1].text}" -> h${hs[i].level} "${hs[i].text}" (skips a level) at ${hs[i].path}`);
}

// images
const imgs = [...document.images];
const imgNoAlt = imgs.filter(i => !i.hasAttribute('alt')).map(i => ({
  src: snip(i.getAttribute('src'), 100), path: path(i)}));

// svgs (outermost only: an <svg> nested in another is part of its picture)
const svgs = [...document.querySelectorAll('svg')].filter(s => !s.parentElement || !s.parentElement.closest('svg'));
const svgInfo = svgs.map(s => {
  const t = s.querySelector(':scope > title');
  const lb = (s.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean)
    .map(id => document.getElementById(id)).filter(Boolean).map(e => e.textContent).join(' ');
  const info = {path: path(s), role: s.getAttribute('role') || '',
    title: snip(t && t.textContent), aria_label: snip(s.getAttribute('aria-label')),
    aria_labelledby_text: snip(lb), aria_hidden: s.getAttribute('aria-hidden') === 'true'};
  info.named = !!(info.title || info.aria_label || info.aria_labelledby_text);
  info.ok = info.named || info.aria_hidden;
  return info;
});

// tables
const tables = [...document.querySelectorAll('table')];
const tablesNoTh = tables.filter(t => !t.querySelector('th')).map(t => ({
  path: path(t), caption: snip(t.caption && t.caption.textContent),
  first_row: snip(t.rows[0] && t.rows[0].textContent), rows: t.rows.length}));

// sideways overflow: outermost elements whose box passes the right edge, unless an ancestor
// clips or scrolls them (then they do not widen the page)
const sticking = [];
const clipsX = e => ['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(e).overflowX);
for (const e of document.body ? document.body.querySelectorAll('*') : []) {
  const r = e.getBoundingClientRect();
  if (r.right <= cw + 0.5 || !r.width) continue;
  const p = e.parentElement;
  if (p && p !== document.body && p.getBoundingClientRect().right > cw + 0.5) continue;
  let clipped = false;
  for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
    if (clipsX(a)) { clipped = true; break; }
  if (clipped) continue;
  sticking.push({path: path(e), tag: e.tagName.toLowerCase(), right: Math.round(r.right),
    width: Math.round(r.width), by_px: Math.round(r.right - cw), text: snip(e.textContent, 60)});
}
sticking.sort((a, b) => b.right - a.right);
// inner sideways scrollers (not a page problem, but a reader scrolls them)
const scrollers = [...document.querySelectorAll('*')].filter(e =>
  e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)
  && e !== de && e !== document.body).map(e => ({path: path(e), client: e.clientWidth, scroll: e.scrollWidth}));

// resource hints open connections without a request event; links are not loads (info only)
const hints = [...document.querySelectorAll('link[rel]')].filter(l =>
  /(^|\s)(preconnect|dns-prefetch|prefetch|prerender)(\s|$)/i.test(l.rel) && /^(https?|wss?):|^\/\//i.test(l.getAttribute('href') || ''))
  .map(l => ({rel: l.rel, href: l.getAttribute('href')}));
const links = [...document.querySelectorAll('a[href]')].filter(a => /^(https?|wss?):/i.test(a.getAttribute('href'))).length;
return {
  resource_hints: hints, external_links: links,
  url: location.href, ready_state: document.readyState, title: document.title,
  lang: de.getAttribute('lang') || '',
  headings: hs, heading_problems: hProblems,
  img_count: imgs.length, img_missing_alt: imgNoAlt,
  svg_count: svgs.length, svgs: svgInfo,
  table_count: tables.length, tables_without_th: tablesNoTh,
  widths: {inner_width: vw, client_width: cw, scroll_width: de.scrollWidth,
           body_scroll_width: document.body ? document.body.scrollWidth : null,
           scroll_height: de.scrollHeight},
  sticking_out: sticking.slice(0, 10), inner_x_scrollers: scrollers.slice(0, 10),
};
"""


def make_driver(
    width: int, height: int, profile: Path, driver_log: Path | None, timeout: float = 30
):
    o = Options()
    o.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",  # as root, Chromium exits at once without it
        "--disable-dev-shm-usage",  # /dev/shm is small in containers; harmless when it isn't
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-component-update",
        "--no-pings",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        # network off, browser-wide, whatever the page target does
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:9",  # discard port, nothing listens
        "--proxy-bypass-list=<-loopback>",
    ):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # crashpad writes its database under $XDG_CONFIG_HOME/chromium (~/.config/chromium) even
    # with a --user-data-dir, and GTK's dconf touches ~/.cache/dconf/user: point both into the
    # throw-away profile so a run leaves nothing in $HOME
    env = dict(
        os.environ,
        XDG_CONFIG_HOME=str(profile / "xdg-config"),
        XDG_CACHE_HOME=str(profile / "xdg-cache"),
    )
    svc = Service(
        executable_path=CHROMEDRIVER, env=env, log_output=str(driver_log) if driver_log else None
    )
    d = webdriver.Chrome(service=svc, options=o)
    d.set_page_load_timeout(timeout)
    d.set_script_timeout(timeout)
    d.execute_cdp_cmd("Network.enable", {})
    d.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    # Not Network.setBlockedURLs: a request it blocks fails as blockedReason "inspector" and,
    # unlike an offline failure, leaves no "Failed to load resource" SEVERE line in the log.
    return d


def perf_events(driver) -> list[dict]:
    return [json.loads(e["message"])["message"] for e in driver.get_log("performance")]


def full_page_png(driver, width: int) -> bytes:
    m = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = m.get("cssContentSize") or m["contentSize"]
    clip = {
        "x": 0,
        "y": 0,
        "width": max(width, size["width"]),
        "height": size["height"],
        "scale": 1,
    }
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "fromSurface": True, "clip": clip},
    )
    return base64.b64decode(shot["data"])


def check(driver, file: Path, shots: Path | None, width: int, settle: float = 0.0) -> dict:
    url = file.resolve().as_uri()
    driver.get_log("performance"), driver.get_log("browser")  # drain what came before
    r: dict = {"file": str(file), "url": url}
    t0 = time.perf_counter()
    try:
        driver.get(url)
    except WebDriverException as e:
        r["load_error"] = str(e).splitlines()[0]
    # let web fonts and one frame settle (self-contained pages: nothing to wait for, in practice)
    driver.execute_async_script(
        "const done = arguments[0]; (document.fonts ? document.fonts.ready : Promise.resolve())"
        ".then(() => requestAnimationFrame(() => requestAnimationFrame(() => done())));"
    )
    if settle:
        time.sleep(settle)  # catch requests a timer starts after load
    r["load_s"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    page = driver.execute_script(CHECKS_JS)
    r["checks_s"] = round(time.perf_counter() - t1, 3)
    if shots is not None:
        t2 = time.perf_counter()
        png = full_page_png(driver, width)
        out = shots / (file.stem + ".png")
        out.write_bytes(png)
        r["screenshot"] = str(out)
        r["screenshot_s"] = round(time.perf_counter() - t2, 3)

    events = perf_events(driver)
    failed = {
        e["params"]["requestId"]: " ".join(
            filter(None, (e["params"].get("errorText"), e["params"].get("blockedReason")))
        )
        for e in events
        if e["method"] == "Network.loadingFailed"
    }
    external, main_doc_failed = [], None
    for e in events:
        if e["method"] == "Network.requestWillBeSent":
            p = e["params"]
            u = p["request"]["url"]
            if p.get("type") == "Document" and u == url and p["requestId"] in failed:
                main_doc_failed = failed[p["requestId"]]
            if is_external(u):
                external.append(
                    {
                        "url": u[:200],
                        "type": p.get("type"),
                        "initiator": p.get("initiator", {}).get("type"),
                        "failed": failed.get(p["requestId"]),
                    }
                )
        elif e["method"] == "Network.webSocketCreated":
            external.append({"url": e["params"]["url"][:200], "type": "WebSocket"})
    for h in page["resource_hints"]:
        external.append(
            {"url": h["href"][:200], "type": f"<link rel={h['rel']}> (no request event)"}
        )
    logs = driver.get_log("browser")
    severe = [
        {"source": x.get("source"), "message": x["message"][:300]}
        for x in logs
        if x["level"] == "SEVERE"
    ]

    w = page["widths"]
    # a vertical scrollbar takes its width from the viewport: compare with what is left
    overflow = w["scroll_width"] > w["client_width"]
    r.update(
        {
            "title": page["title"],
            "loads": {
                "ok": not r.get("load_error")
                and not main_doc_failed
                and page["ready_state"] == "complete"
                and page["url"].split("#")[0] == url,
                "final_url": page["url"],
                "main_document_error": main_doc_failed,
            },
            "lang": {"ok": bool(page["lang"].strip()), "value": page["lang"]},
            "headings": {
                "ok": not page["heading_problems"],
                "problems": page["heading_problems"],
                "outline": [f"h{h['level']} {h['text']}" for h in page["headings"]][:40],
            },
            "img_alt": {
                "ok": not page["img_missing_alt"],
                "count": page["img_count"],
                "missing": page["img_missing_alt"],
            },
            "svg_name": {
                "ok": all(s["ok"] for s in page["svgs"]),
                "count": page["svg_count"],
                "unnamed": [s for s in page["svgs"] if not s["ok"]],
                "named_without_role_img": sum(
                    1 for s in page["svgs"] if s["named"] and s["role"] != "img"
                ),
                "decorative": sum(1 for s in page["svgs"] if s["aria_hidden"]),
            },
            "table_headers": {
                "ok": not page["tables_without_th"],
                "count": page["table_count"],
                "without_th": page["tables_without_th"],
            },
            "overflow_x": {
                "ok": not overflow,
                **w,
                "overflow_px": max(0, w["scroll_width"] - w["client_width"]),
                "sticking_out": page["sticking_out"],
                "inner_x_scrollers": page["inner_x_scrollers"],
            },
            "external_requests": {
                "ok": not external,
                "count": len(external),
                "requests": external,
                "external_links_info": page["external_links"],
            },
            "console_severe": {
                "ok": not severe,
                "count": len(severe),
                "messages": severe,
                "other_levels": sorted({x["level"] for x in logs} - {"SEVERE"}),
            },
        }
    )
    names = (
        "loads",
        "lang",
        "headings",
        "img_alt",
        "svg_name",
        "table_headers",
        "overflow_x",
        "external_requests",
        "console_severe",
    )
    r["failed_checks"] = [n for n in names if not r[n]["ok"]]
    r["ok"] = not r["failed_checks"]
    r["page_s"] = round(time.perf_counter() - t0, 3)
    return r


class Browser:
    """One Chromium with its own throw-away profile; restart() after a page wedged it."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.driver = None
        self.profile: Path | None = None
        self.starts: list[float] = []

    def start(self) -> None:
        self.profile = Path(
            tempfile.mkdtemp(prefix="check-page-profile-", dir=self.a.workdir)
        ).resolve()
        t = time.perf_counter()
        self.driver = make_driver(
            self.a.width, self.a.height, self.profile, self.a.driver_log, self.a.timeout
        )
        self.starts.append(round(time.perf_counter() - t, 3))

    def stop(self) -> float:
        t = time.perf_counter()
        if self.driver is not None:
            with contextlib.suppress(Exception):  # a wedged browser still has to go
                self.driver.quit()
            self.driver = None
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None
        return round(time.perf_counter() - t, 3)

    def restart(self) -> None:
        self.stop()
        self.start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--shots", type=Path, help="directory for full-page PNGs (none when absent)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait after load before reading the logs (late timers)",
    )
    ap.add_argument(
        "--timeout", type=float, default=30, help="page-load and script timeout, seconds"
    )
    ap.add_argument(
        "--workdir", type=Path, help="where the throw-away profile goes (default: $TMPDIR)"
    )
    ap.add_argument("--driver-log", type=Path, help="chromedriver's log file")
    ap.add_argument("--out", type=Path, help="write the JSON here as well as to stdout")
    a = ap.parse_args(argv)
    if a.shots:
        a.shots.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    b = Browser(a)
    try:
        b.start()
    except WebDriverException as e:
        b.stop()
        print(
            json.dumps({"error": "browser did not start", "detail": str(e)[:2000]}), file=sys.stderr
        )
        return 2
    caps = b.driver.capabilities
    result = {
        "browser": {
            "version": caps.get("browserVersion"),
            "chromedriver": caps.get("chrome", {}).get("chromedriverVersion", "").split(" ")[0],
            "network_off": [
                "Network.emulateNetworkConditions(offline)",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--proxy-server=http://127.0.0.1:9",
            ],
        },
        "pages": [],
    }
    try:
        for f in a.files:
            if not f.is_file():
                result["pages"].append(
                    {
                        "file": str(f),
                        "ok": False,
                        "failed_checks": ["loads"],
                        "loads": {"ok": False, "error": "no such file"},
                    }
                )
                continue
            t = time.perf_counter()
            try:
                result["pages"].append(check(b.driver, f, a.shots, a.width, a.settle))
            except WebDriverException as e:  # a hung or crashed renderer: record it, start afresh
                result["pages"].append(
                    {
                        "file": str(f),
                        "ok": False,
                        "failed_checks": ["loads"],
                        "loads": {"ok": False, "error": str(e).splitlines()[0][:300]},
                        "page_s": round(time.perf_counter() - t, 3),
                    }
                )
                b.restart()
    finally:
        result["browser"]["quit_s"] = b.stop()
        result["browser"]["start_s"] = b.starts
    result["total_s"] = round(time.perf_counter() - t0, 3)
    text = json.dumps(result, indent=2)
    if a.out:
        a.out.write_text(text)
    print(text)
    return 0 if all(p["ok"] for p in result["pages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
