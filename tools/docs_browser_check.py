#!/usr/bin/env python
"""`make docs-check`: build the offline preview (tools/docs_build.py: nbdev's own docs processing, then nbconvert's HTML
exporter) and look at every page in a real headless Chromium (Debian: `apt-get install chromium`; set CHROMIUM=/path
to use another). Not run in CI (it needs the browser).

The site is served on 127.0.0.1 (an ephemeral port) and one Chromium run opens a checker page that loads every page
in turn in an iframe, waits for MathJax to finish, and records per page:
- math: MathJax loaded where the page has TeX, no formula failed ("Math Processing Error" or a TeX `merror`), and no
  raw TeX (`$$`, `$..$` with TeX in it, `\\(`, `\\[`) is left in the visible text outside code;
- code: each page in EXPECT shows the code it names in a code cell (LoRA's and OFT's classes, GSM8K's scorer);
- no `#|` directive in a shown code cell or in the prose, no "In [ ]:" prompt;
- the sidebar is there, marks the page as current, and each of its links answers 200 from the server.
Then it takes a screenshot of one page (default lora.html) to _docs/_check/<page>.png. Exit 1 on any problem."""
import argparse, functools, http.server, json, os, re, shutil, subprocess, sys, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_build import OUT, build   # noqa: E402

# pages whose code a reader comes for: text a code cell on the page must show
EXPECT = {"lora.html": ["class LoRAConfig(RsLoRAConfig):", "class LoRA(Variant):", "def forward(self, x, y):"],
          "oft.html": ["class OFTConfig(", "class OFT(Variant):"],
          "gsm8k.html": ["def extract_answer(text:str):", "def is_correct(prediction:str, reference:str) -> bool:"]}

CHECKER = r"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>running</title></head><body>
<pre id="out"></pre><iframe id="f" style="width:1280px;height:900px"></iframe>
<script>
const pages = %PAGES%;
const EXPECT = %EXPECT%;
const results = [];
const RAW_TEX = /\$\$|\$[^$\n]*[\\^_{}][^$\n]*\$|\\\(|\\\[/;
function textWithout(el, sel) {
  const c = el.cloneNode(true);
  c.querySelectorAll(sel).forEach(e => e.remove());
  return c.textContent;
}
function inspect(page, doc, win) {
  const r = {page, problems: []};
  const main = doc.querySelector("main");
  if (!doc.head || !doc.querySelector('link[href="styles.css"]')) r.problems.push("no <head> with styles.css");
  if (!main) { r.problems.push("no <main>"); return r; }
  // math: nbconvert leaves TeX in the text for MathJax's tex2jax, as Quarto does
  const jax = win.MathJax && win.MathJax.Hub ? win.MathJax.Hub.getAllJax() : [];
  r.math = jax.length;
  const texInText = RAW_TEX.test(textWithout(main, "pre, code, script, style"));
  if (texInText && !win.MathJax) r.problems.push("MathJax did not load");
  doc.querySelectorAll(".MathJax_Error").forEach(e => r.problems.push("Math Processing Error near: " + (e.parentNode.textContent || "").slice(0, 80)));
  jax.forEach(j => { const o = doc.getElementById(j.inputID + "-Frame");
    if (!o || !o.getBoundingClientRect().width) r.problems.push("no visible output for: " + j.originalText.slice(0, 80)); });
  jax.forEach(j => { const m = j.root.toMathML(""); if (m.includes("<merror")) r.problems.push("TeX error in: " + j.originalText.slice(0, 80)); });
  const prose = textWithout(main, "pre, code, script, style, .MathJax, .MathJax_Display, .MathJax_Preview, .MathJax_Error");
  const raw = prose.match(RAW_TEX);
  if (raw) r.problems.push("raw TeX in the text: " + JSON.stringify(prose.slice(Math.max(0, raw.index - 30), raw.index + 40)));
  // code
  const code = [...main.querySelectorAll(".highlight pre")].map(p => p.textContent).join("\n");
  r.code_cells = main.querySelectorAll(".jp-CodeCell .highlight pre").length;
  (EXPECT[page] || []).forEach(t => { if (!code.includes(t)) r.problems.push("no code cell shows " + JSON.stringify(t)); });
  // directives and prompts
  main.querySelectorAll(".highlight pre").forEach(pre => {
    pre.textContent.split("\n").forEach(l => { if (l.trim().startsWith("#|")) r.problems.push("visible directive in code: " + l.trim()); });
  });
  if (prose.includes("#|")) r.problems.push("visible directive in the text");
  if (/\b(In|Out)\s*\[\s*\d*\s*\]:/.test(main.textContent)) r.problems.push("an 'In [ ]:' prompt is visible");
  // sidebar
  const side = doc.querySelector("nav.sidebar");
  if (!side) r.problems.push("no sidebar");
  else {
    r.links = [...side.querySelectorAll("a[href]")].map(a => a.href);
    if (!r.links.length) r.problems.push("the sidebar has no links");
    const cur = side.querySelector('a[aria-current="page"]');
    if (!r.links.some(h => h.endsWith("/" + page))) r.problems.push("the page is not in the sidebar");
    else if (!cur || !cur.href.endsWith("/" + page)) r.problems.push("the sidebar does not mark this page as current");
  }
  r.visible = main.getBoundingClientRect().width > 300;
  if (!r.visible) r.problems.push("main column is narrower than 300px");
  return r;
}
function loadPage(page) {
  return new Promise(resolve => {
    const f = document.getElementById("f");
    const timer = setTimeout(() => resolve({page, problems: ["timed out loading or typesetting"]}), 60000);
    f.onload = () => {
      const win = f.contentWindow, doc = f.contentDocument;
      const done = () => { clearTimeout(timer); try { resolve(inspect(page, doc, win)); } catch (e) { resolve({page, problems: ["check failed: " + e]}); } };
      if (win.MathJax && win.MathJax.Hub) win.MathJax.Hub.Queue(done); else done();
    };
    f.src = page;
  });
}
(async () => {
  for (const p of pages) results.push(await loadPage(p));
  const links = [...new Set(results.flatMap(r => r.links || []))];
  const status = {};
  for (const u of links) { try { status[u] = (await fetch(u, {method: "HEAD"})).status; } catch (e) { status[u] = String(e); } }
  document.getElementById("out").textContent = JSON.stringify({results, status});
  document.title = "done";
})();
</script></body></html>"""


def chromium():
    exe = os.environ.get("CHROMIUM") or next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if not exe:
        sys.exit("docs-check needs Chromium: apt-get update && apt-get install -y chromium (or set CHROMIUM=/path/to/chrome)")
    return exe


def serve(root: Path, checker: str):
    "A quiet HTTP server for root on 127.0.0.1 (ephemeral port) that also answers /__check__.html."
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass

        def do_GET(self):
            if self.path.startswith("/__check__.html"):
                body = checker.encode()
                self.send_response(200); self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            else: super().do_GET()
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address): pass   # Chromium drops connections it no longer needs
    httpd = Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def run_chromium(exe, args, timeout):
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", "--mute-audio"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--screenshot", default="lora.html", help="the page to screenshot ('' for none)")
    ap.add_argument("--no-build", action="store_true", help="check the site as it is, without rebuilding")
    ap.add_argument("--site", default=str(OUT), help="the site folder (default _docs/)")
    ap.add_argument("--pages", nargs="*", help="check only these pages (e.g. lora.html)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds for the whole Chromium run")
    args = ap.parse_args()
    exe = chromium()
    t0 = time.time()
    if not args.no_build:
        pages, _, errors = build()
        if errors: print("\n".join("ERROR " + e for e in errors)); sys.exit(1)
    site = Path(args.site).resolve()
    names = args.pages or sorted(p.name for p in site.glob("*.html"))
    httpd, url = serve(site, CHECKER.replace("%PAGES%", json.dumps(names)).replace("%EXPECT%", json.dumps(EXPECT)))
    try:
        # virtual time runs ahead while the page is idle, so the budget costs no real time; the checker itself waits
        # for MathJax's queue on each page before it looks
        res = run_chromium(exe, ["--virtual-time-budget=900000", "--window-size=1400,1000", "--dump-dom",
                                 f"{url}/__check__.html"], args.timeout)
        m = re.search(r'<pre id="out">(.*?)</pre>', res.stdout, re.S)
        if not m or not m.group(1).strip():
            print(res.stdout[-2000:], res.stderr[-2000:], sep="\n")
            sys.exit("docs-check: the checker page did not finish (see Chromium's output above)")
        import html as _html
        data = json.loads(_html.unescape(m.group(1)))
        shot = None
        if args.screenshot:
            (site / "_check").mkdir(exist_ok=True)
            shot = site / "_check" / (Path(args.screenshot).stem + ".png")
            run_chromium(exe, ["--virtual-time-budget=30000", "--window-size=1400,1800", f"--screenshot={shot}",
                               f"{url}/{args.screenshot}"], 120)
    finally:
        httpd.shutdown()
    problems = [f"{r['page']}: {p}" for r in data["results"] for p in r["problems"]]
    problems += [f"sidebar link {u} answers {s}" for u, s in data["status"].items() if s != 200]
    for r in data["results"]:
        for n in r.get("notes", []): print(f"note {r['page']}: {n}")
    for p in problems: print("ERROR", p)
    n_math = sum(r.get("math", 0) for r in data["results"])
    with_math = sum(1 for r in data["results"] if r.get("math"))
    missing = [p for p in EXPECT if not (site / p).exists()]
    problems += [f"{p}: not in the site" for p in missing]
    seen = {r["page"]: r.get("code_cells", 0) for r in data["results"] if r["page"] in EXPECT}
    print(f"docs-check: {len(data['results'])} pages in headless Chromium ({exe}): {n_math} formulas on {with_math} pages "
          f"typeset by MathJax, code found on {seen} (code cells per page), {len(data['status'])} distinct sidebar links checked, {len(problems)} problem(s), "
          f"{time.time() - t0:.0f} s" + (f"; screenshot {shot}" if shot and shot.exists() else ""))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
