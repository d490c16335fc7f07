#!/usr/bin/env python
"""`make docs`: build the offline preview into _docs/ (tools/docs_build.py: nbdev's own docs processing of every
notebook, as `nbdev_docs` runs it, then nbconvert's HTML exporter) and check it without a browser. Fails (exit 1)
with one line per problem on: a notebook that nbdev's processing fails on or that doesn't render; a dead intra-site
link or #anchor; a sidebar.yml entry whose notebook is missing;
a notebook that sidebar.yml doesn't list; a `#|` directive or an "In [ ]:" prompt left in a page; a page without
<head>, styles, the sidebar or the local MathJax. The real site is built by nbdev_docs (Quarto) in the deploy
workflow; `make docs-check` (tools/docs_browser_check.py) looks at these pages in headless Chromium."""
import re, sys, time
from pathlib import Path
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_build import NBS, OUT, ROOT, build, sidebar_pages   # noqa: E402

_SKIP = re.compile(r"<(script|style)\b.*?</\1>", re.S)


def visible_text(page: str) -> str:
    "The page's text as a reader sees it (tags, scripts and styles removed; entities kept)."
    return re.sub(r"<[^>]+>", " ", _SKIP.sub(" ", page))


_CODE_CELL = re.compile(r'<div class="highlight[^"]*"><pre>(.*?)</pre>', re.S)   # a shown code cell (nbconvert + Pygments)


def directive_leaks(body: str):
    "`#|` lines shown in code cells, and `#|` in prose outside `code` (a notebook may *write about* directives)."
    code = "\n".join(visible_text(c) for c in _CODE_CELL.findall(body))
    leaks = [l.strip() for l in code.splitlines() if l.strip().startswith("#|")]
    prose = visible_text(re.sub(r"<pre\b.*?</pre>|<code\b.*?</code>", " ", body, flags=re.S))
    return leaks + [m.strip() for m in re.findall(r"#\|[^\n]{0,40}", prose)]


def check_site(pages, tree, out=OUT, nbs=NBS):
    "Static checks of rendered pages: list of problem strings."
    errors = []
    ids = {p: set(re.findall(r'\bid="([^"]+)"', html)) for p, html in pages.items()}
    for name, page in pages.items():
        for need, what in [("<head>", "<head>"), ('href="styles.css"', "styles.css"), ('class="sidebar"', "the sidebar"),
                           ('src="mathjax/MathJax.js', "the local MathJax")]:
            if need not in page: errors.append(f"{name}: no {what}")
        if re.search(r'<script[^>]+src="(https?:)?//', page) or re.search(r'<link[^>]+href="(https?:)?//', page):
            errors.append(f"{name}: loads a script or stylesheet from the network")
        body = re.split(r"<body\b[^>]*>", page, 1)[-1]
        for href in re.findall(r'(?:href|src)="([^"]*)"', body):
            if re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I) or href.startswith("//"): continue   # http:, data:, mailto:
            path, _, anchor = href.partition("#")
            target = unquote(path.split("?")[0]) or name
            if path and not (out / target).exists():
                errors.append(f"{name}: dead link to {href}" + (" (a notebook link: is it spelled right?)" if href.endswith(".ipynb") else ""))
            elif anchor and target in ids and anchor not in ids[target]:
                errors.append(f"{name}: link to a missing anchor {href}")
        text = visible_text(body)
        leaks = directive_leaks(body)
        if leaks: errors.append(f"{name}: a cell directive is visible: {leaks[0]!r}" + (f" (+{len(leaks) - 1} more)" if len(leaks) > 1 else ""))
        if re.search(r"\b(In|Out)\s*\[\s*\d*\s*\]:", text): errors.append(f"{name}: an 'In [ ]:' prompt is visible")
    listed = sidebar_pages(tree)
    have = {p.name for p in nbs.glob("*.ipynb")}
    errors += [f"sidebar.yml lists missing notebook {n}" for n in listed if n not in have]
    errors += [f"notebook {n} is not in sidebar.yml" for n in sorted(have - set(listed))]
    dup = {n for n in listed if listed.count(n) > 1}
    errors += [f"sidebar.yml lists {n} more than once" for n in sorted(dup)]
    return errors


def main():
    t0 = time.time()
    pages, tree, errors = build()
    errors += check_site(pages, tree)
    for e in errors: print("ERROR", e)
    print(f"docs: rendered {len(pages)} notebooks to {OUT.relative_to(ROOT)}/ in {time.time() - t0:.1f} s "
          f"(offline preview; open {OUT.relative_to(ROOT)}/index.html), {len(errors)} problem(s)")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
