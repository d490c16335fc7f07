#!/usr/bin/env python
"""Offline preview of the docs site: the committed, executed notebooks in nbs/ -> full HTML pages in _docs/.

No execution, no Quarto, no network. The real site is built by `nbdev_docs` (Quarto) in the deploy workflow; this
is a preview and a check. Each page has a <head> with nbs/styles.css and a small layout stylesheet, the sidebar from
nbs/sidebar.yml, an "on this page" list and previous/next links. nbdev/Quarto cell directives are honoured:
`#| hide` and `#| include: false` drop the cell, `#| echo: false` shows only the outputs, `#| output: false` only
the code, `#| eval: false` is shown (the notebook stores no output for it), `#| default_exp` cells are dropped, and
every leading `#|` line is stripped from shown code (`#| export` cells are shown, marked with their module). Markdown
goes through mistune 3 (nbconvert's parser) with its math plugin: each formula becomes a `.math` element, the only
thing MathJax 2.7 typesets; MathJax is copied into _docs/mathjax/ from the `jupyter-server-mathjax` package (dev
extra), so nothing is fetched from a CDN.
Page names follow nbdev: the numeric prefix is dropped (nbs/10_lora.ipynb -> _docs/lora.html)."""
import html, json, re, shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, OUT = ROOT / "nbs", ROOT / "_docs"
SITE_TITLE = "lora_lite"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full"


def page_name(nb) -> str:
    "nbs/10_lora.ipynb -> lora.html (nbdev drops the numeric prefix)."
    return re.sub(r"^\d+_", "", Path(nb).stem) + ".html"


# ---------------------------------------------------------------- directives
_DIRECTIVE = re.compile(r"^\s*#\|\s?(.*?)\s*$")
_HIDE_LINE = re.compile(r"#\|\s*hide_line\s*$")
_MAGIC = re.compile(r"^\s*%")


def split_directives(src: str):
    "Leading `#| key: value` / `#| key value` lines -> ({key: value}, the code without them)."
    lines, flags = src.splitlines(), {}
    i = 0
    while i < len(lines) and (_DIRECTIVE.match(lines[i]) or not lines[i].strip()):
        m = _DIRECTIVE.match(lines[i])
        if m and m.group(1):
            key, _, val = m.group(1).partition(" ")
            flags[key.rstrip(":")] = val.strip()
        i += 1
    code = [l for l in lines[i:] if not _HIDE_LINE.search(l) and not _MAGIC.match(l)]
    return flags, "\n".join(code).strip("\n")


def _false(v): return str(v).strip().lower() == "false"


# ---------------------------------------------------------------- markdown, code and outputs
def _pandoc_id(text: str) -> str:
    "Pandoc's auto identifier (what Quarto gives a heading): lowercase, punctuation dropped, spaces -> '-'."
    s = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    s = re.sub(r"[^\w\s.-]", "", s, flags=re.UNICODE)
    s = re.sub(r"\s+", "-", s)
    return re.sub(r"^[^a-z]+", "", s) or "section"


_NB_LINK = re.compile(r"^(?![a-z][a-z0-9+.-]*:|#)(.*?)([^/#?]+)\.ipynb([#?].*)?$", re.I)
_md, _seen_ids = None, {}


def _link_target(url: str) -> str:
    "Quarto links a notebook by its page: 10_lora.ipynb#x -> lora.html#x."
    m = _NB_LINK.match(url)
    return f"{m[1]}{page_name(m[2])}{m[3] or ''}" if m else url


def _markdown_parser():
    global _md
    if _md is None:
        import mistune   # mistune 3 (nbconvert's own markdown parser); nbconvert itself is slow to import

        class Renderer(mistune.HTMLRenderer):
            def heading(self, text, level, **attrs):
                hid = base = _pandoc_id(text)
                while hid in _seen_ids: _seen_ids[base] += 1; hid = f"{base}-{_seen_ids[base]}"
                _seen_ids.setdefault(hid, 0)
                return f'<h{level} id="{hid}">{text}<a class="anchor-link" href="#{hid}" aria-hidden="true">#</a></h{level}>\n'

            def link(self, text, url, title=None):
                return super().link(text, _link_target(url), title)

            def image(self, text, url, title=None):
                return super().image(text, _link_target(url), title)
        _md = mistune.create_markdown(renderer=Renderer(escape=False),
                                      plugins=["strikethrough", "table", "math", "url", "footnotes"])
    return _md


def markdown(md: str) -> str:
    """Markdown -> HTML. Math becomes <span class="math">\\(..\\)</span> / <div class="math">$$..$$</div>, the only
    elements MathJax typesets (so a stray '$' stays a dollar); headings get Quarto's ids; .ipynb links -> pages."""
    return _markdown_parser()(md)


def _inline(md: str) -> str:
    "One line of markdown without the <p> around it (the page description)."
    return re.sub(r"^<p>(.*)</p>\s*$", r"\1", markdown(md).strip(), flags=re.S)


def code_block(src: str, cls="cell-code") -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    body = highlight(src, PythonLexer(), HtmlFormatter(nowrap=True))
    return f'<div class="sourceCode {cls}"><pre class="sourceCode python"><code>{body}</code></pre></div>'


def _text(x): return "".join(x) if isinstance(x, list) else (x or "")


_ANSI = re.compile(r"\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])")


def _pre(text, cls):
    return f'<div class="cell-output {cls}"><pre><code>{html.escape(_ANSI.sub("", text).rstrip())}</code></pre></div>'


def outputs_html(outputs, flags) -> str:
    "Stored outputs as Quarto lays them out (stream text merged; rich data by priority; widgets dropped)."
    parts, stream = [], {"stdout": "", "stderr": ""}
    words = flags.get("filter_stream", "").split()

    def flush():
        for name in ("stdout", "stderr"):
            if stream[name].strip(): parts.append(_pre(stream[name], f"cell-output-{name}"))
            stream[name] = ""
    for o in outputs:
        kind = o.get("output_type")
        if kind == "stream":
            text = _text(o.get("text"))
            if words: text = "".join(l for l in text.splitlines(True) if not any(w in l for w in words))
            stream[o.get("name", "stdout")] += text
            continue
        flush()
        if kind == "error":
            parts.append(_pre("\n".join(o.get("traceback", [])) or f"{o.get('ename')}: {o.get('evalue')}", "cell-output-error"))
            continue
        data = o.get("data", {})
        if "application/vnd.jupyter.widget-view+json" in data: continue   # progress bars: nothing to show offline
        if "text/html" in data: parts.append(f'<div class="cell-output cell-output-display">{_text(data["text/html"])}</div>')
        elif "image/svg+xml" in data: parts.append(f'<div class="cell-output cell-output-display">{_text(data["image/svg+xml"])}</div>')
        elif "image/png" in data or "image/jpeg" in data:
            mime = "image/png" if "image/png" in data else "image/jpeg"
            b64 = _text(data[mime]).replace("\n", "")
            parts.append(f'<div class="cell-output cell-output-display"><img alt="output" src="data:{mime};base64,{b64}"></div>')
        elif "text/markdown" in data: parts.append(f'<div class="cell-output cell-output-display">{markdown(_text(data["text/markdown"]))}</div>')
        elif "text/latex" in data: parts.append(f'<div class="cell-output cell-output-display"><div class="math">{html.escape(_text(data["text/latex"]))}</div></div>')
        elif "text/plain" in data: parts.append(_pre(_text(data["text/plain"]), "cell-output-display"))
    flush()
    return "".join(parts)


_RE_HDR_DASH = re.compile(r"^#+\s+.*\s+-\s*$")


def cell_html(cell, module=None) -> str:
    "One cell -> HTML ('' when the cell is hidden)."
    src = _text(cell.get("source"))
    if cell["cell_type"] == "markdown":
        if _RE_HDR_DASH.match(src.strip()): return ""               # nbdev: a heading ending in ' -' is dropped
        return f'<div class="cell markdown">{markdown(src)}</div>' if src.strip() else ""
    if cell["cell_type"] != "code": return ""
    flags, code = split_directives(src)
    if "hide" in flags or _false(flags.get("include")) or "default_exp" in flags: return ""
    show_code = bool(code.strip()) and not _false(flags.get("echo"))
    show_out = not _false(flags.get("output"))
    body = ""
    if show_code:
        exported = {"export", "exporti", "exports"} & flags.keys()
        label = f'<div class="cell-label">exported to <code>{module}</code></div>' if exported and module else ""
        block = code_block(code)
        fold = flags.get("code-fold")
        if fold in ("true", "show"):
            block = f'<details{" open" if fold == "show" else ""}><summary>Code</summary>{block}</details>'
        body += label + block
    if show_out: body += outputs_html(cell.get("outputs", []), flags)
    return f'<div class="cell">{body}</div>' if body else ""


# ---------------------------------------------------------------- one notebook
def title_of(nb, fallback: str):
    "(title, description, index of the title cell) from nbdev's '# Title' + '> description' first markdown cell."
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "markdown": continue
        lines = _text(c["source"]).strip().splitlines()
        if lines and lines[0].startswith("# "):
            desc = next((l[1:].strip() for l in lines[1:] if l.startswith(">")), "")
            return lines[0][2:].strip(), desc, i
        break
    return fallback, "", None


def render_notebook(path):
    "nbs/X.ipynb -> (title, description, main HTML)."
    nb = json.loads(Path(path).read_text())
    _seen_ids.clear()
    title, desc, ti = title_of(nb, Path(path).stem)
    module = None
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            m = re.search(r"^\s*#\|\s*default_exp\s+(\S+)", _text(c["source"]), re.M)
            if m: module = "lora_lite." + m.group(1); break
    parts = []
    for i, c in enumerate(nb["cells"]):
        if i == ti:   # the title cell: its H1 and description become the page header; the rest is shown
            rest = [l for l in _text(c["source"]).strip().splitlines()[1:]]
            while rest and (not rest[0].strip() or rest[0].startswith(">")): rest.pop(0)
            if rest: parts.append(f'<div class="cell markdown">{markdown(chr(10).join(rest))}</div>')
            continue
        parts.append(cell_html(c, module))
    return title, desc, "\n".join(p for p in parts if p)


# ---------------------------------------------------------------- the site
def read_sidebar(path=NBS / "sidebar.yml"):
    "sidebar.yml -> a tree of ('page', notebook file) / ('section', name, [children]) / ('link', text, href)."
    import yaml
    doc = yaml.safe_load(Path(path).read_text()) or {}
    contents = (((doc.get("website") or {}).get("sidebar") or {}).get("contents")) or []

    def walk(items):
        out = []
        for it in items:
            if isinstance(it, str): out.append(("page", it))
            elif isinstance(it, dict) and "section" in it: out.append(("section", it["section"], walk(it.get("contents") or [])))
            elif isinstance(it, dict) and "href" in it: out.append(("link", it.get("text", it["href"]), it["href"]))
        return out
    return walk(contents)


def sidebar_pages(tree):
    "Notebook files in sidebar order."
    out = []
    for it in tree:
        if it[0] == "page": out.append(it[1])
        elif it[0] == "section": out += sidebar_pages(it[2])
    return out


def sidebar_html(tree, titles, current):
    def item(it):
        if it[0] == "page":
            href = page_name(it[1])
            if href not in titles: return f'<li><span class="missing">{html.escape(it[1])} (missing)</span></li>'
            cur = ' class="active" aria-current="page"' if href == current else ""
            return f'<li><a href="{href}"{cur}>{html.escape(titles[href])}</a></li>'
        if it[0] == "link":
            href = page_name(it[2]) if it[2].endswith(".ipynb") else it[2]
            return f'<li><a href="{html.escape(href)}">{html.escape(it[1])}</a></li>'
        return (f'<li class="section"><details open><summary>{html.escape(it[1])}</summary>'
                f'<ul>{"".join(item(c) for c in it[2])}</ul></details></li>')
    return f'<nav class="sidebar" aria-label="site"><ul>{"".join(item(it) for it in tree)}</ul></nav>'


def toc_html(main):
    heads = re.findall(r'<h([23]) id="([^"]+)">(.*?)<a class="anchor-link"', main, re.S)
    if not heads: return ""
    items = "".join(f'<li class="toc-h{lvl}"><a href="#{hid}">{text}</a></li>' for lvl, hid, text in heads)
    return f'<nav class="toc" aria-label="on this page"><h2>On this page</h2><ul>{items}</ul></nav>'


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tools/docs_build.py (offline preview; the real site is built by nbdev_docs/Quarto)">
<title>{title} – {site}</title>
<link rel="stylesheet" href="site.css">
<link rel="stylesheet" href="styles.css">
<script type="text/x-mathjax-config">
MathJax.Hub.Config({{
  tex2jax: {{inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEnvironments: false, ignoreClass: "ll-page", processClass: "math"}},
  MMLorHTML: {{prefer: "HTML"}},
  "HTML-CSS": {{availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}},
  TeX: {{noErrors: {{disabled: true}}, noUndefined: {{disabled: true}}}},
  messageStyle: "none"
}});
</script>
<script src="mathjax/MathJax.js?config={mathjax}"></script>
</head>
<body class="ll-page">
<header class="navbar"><a class="brand" href="index.html">{site}</a><span class="note">offline preview</span></header>
<div class="layout">
{sidebar}
<main id="content">
<header class="page-header"><h1 class="title">{title}</h1>{desc}</header>
{main}
<nav class="pager">{prev}{next}</nav>
</main>
{toc}
</div>
</body>
</html>
"""

SITE_CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       font-size: 16px; line-height: 1.55; color: #373a3c; background: #fff; }
a { color: #2780e3; text-decoration: none; } a:hover { text-decoration: underline; }
.navbar { background: #2780e3; color: #fff; padding: .6rem 1.2rem; display: flex; gap: 1rem; align-items: baseline; }
.navbar .brand { color: #fff; font-weight: 600; font-size: 1.2rem; }
.navbar .note { opacity: .8; font-size: .85rem; }
.layout { display: grid; grid-template-columns: 250px minmax(0, 1fr) 210px; gap: 2rem; max-width: 1400px; margin: 0 auto; padding: 0 1rem; }
.sidebar, .toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto; padding: 1rem 0; font-size: .9rem; }
.sidebar ul, .toc ul { list-style: none; padding-left: 0; margin: 0; }
.sidebar ul ul { padding-left: .8rem; }
.sidebar li { margin: .15rem 0; }
.sidebar summary { font-weight: 600; cursor: pointer; margin-top: .5rem; }
.sidebar a { color: #495057; } .sidebar a.active { color: #2780e3; font-weight: 600; }
.sidebar .missing { color: #c00; }
.toc h2 { font-size: .9rem; margin: 0 0 .4rem; } .toc .toc-h3 { padding-left: .8rem; }
main { min-width: 0; padding: 1rem 0 3rem; }
.page-header { margin-bottom: 1.5rem; } .page-header .title { margin-bottom: .2rem; }
h1, h2, h3, h4 { line-height: 1.25; } h2 { margin-top: 2rem; border-bottom: 1px solid #dee2e6; padding-bottom: .2rem; }
.anchor-link { visibility: hidden; margin-left: .3rem; font-size: .8em; color: #adb5bd; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link, h4:hover .anchor-link { visibility: visible; }
pre { overflow-x: auto; font-size: .85rem; line-height: 1.4; padding: .6rem .8rem; margin: 0; }
code { font-family: SFMono-Regular, Menlo, Monaco, Consolas, "Liberation Mono", monospace; font-size: .9em; }
p code, li code, td code { background: #f7f7f7; padding: .05rem .25rem; border-radius: 3px; color: #9753b8; }
.sourceCode.cell-code pre, .cell.markdown pre { background: #f7f7f7; border-radius: 4px; }
.cell-label { font-size: .75rem; color: #6c757d; margin-bottom: .1rem; }
.cell-label code { color: #6c757d; background: none; }
.cell-output-stderr pre { color: #a94442; } .cell-output-error pre { color: #a94442; background: #fdf2f2; }
.cell-output-display img { max-width: 100%; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; display: block; overflow-x: auto; }
th, td { border-bottom: 1px solid #dee2e6; padding: .3rem .6rem; text-align: left; vertical-align: top; }
blockquote { border-left: 3px solid #dee2e6; margin-left: 0; padding-left: 1rem; color: #6c757d; }
.pager { display: flex; justify-content: space-between; margin-top: 3rem; border-top: 1px solid #dee2e6; padding-top: 1rem; }
@media (max-width: 1100px) { .layout { grid-template-columns: 220px minmax(0, 1fr); } .toc { display: none; } }
@media (max-width: 700px) { .layout { display: block; } .sidebar { position: static; max-height: none; } }
"""


def mathjax_dir():
    "The MathJax 2.7 tree that the jupyter-server-mathjax package ships."
    import importlib.util   # find the package without importing it (its import pulls in all of jupyter_server)
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('docs: MathJax comes from the dev extra: pip install -e ".[dev]" (jupyter-server-mathjax)')
    d = Path(spec.submodule_search_locations[0]) / "static"
    if not (d / "MathJax.js").exists() or not (d / "config" / f"{MATHJAX_CONFIG}.js").exists():
        raise SystemExit(f"docs: {d} lacks MathJax.js or config/{MATHJAX_CONFIG}.js")
    return d


def copy_assets(out, nbs=NBS):
    "styles.css, site.css (layout + Pygments colours) and MathJax into out/ (MathJax only when it changed)."
    from pygments.formatters import HtmlFormatter
    src = mathjax_dir()
    stamp = f"{src}:{(src / 'MathJax.js').stat().st_mtime}"
    dst = out / "mathjax"
    if not (dst / ".source").exists() or (dst / ".source").read_text() != stamp:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        (dst / ".source").write_text(stamp)
    styles = nbs / "styles.css" if (nbs / "styles.css").exists() else NBS / "styles.css"
    shutil.copy(styles, out / "styles.css")
    (out / "site.css").write_text(SITE_CSS + HtmlFormatter(style="default").get_style_defs(".sourceCode"))


def build(nbs=NBS, out=OUT, sidebar=None):
    """Render every notebook in `nbs` to `out`. Returns (pages {html name: page HTML}, sidebar tree, errors)."""
    nbs, out = Path(nbs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.html"): old.unlink()   # pages of renamed/deleted notebooks must not linger
    copy_assets(out, nbs)
    tree = read_sidebar(sidebar or nbs / "sidebar.yml")
    rendered, errors = {}, []
    for nb in sorted(nbs.glob("*.ipynb")):
        try: rendered[page_name(nb)] = (nb.name,) + render_notebook(nb)
        except Exception as e: errors.append(f"{nb.name}: does not render ({type(e).__name__}: {e})")
    titles = {p: r[1] for p, r in rendered.items()}
    order = [page_name(n) for n in sidebar_pages(tree) if page_name(n) in rendered]
    order += [p for p in sorted(rendered) if p not in order]
    pages = {}
    for p, (nbname, title, desc, main) in rendered.items():
        i = order.index(p)
        prev = f'<a class="prev" href="{order[i-1]}">← {html.escape(titles[order[i-1]])}</a>' if i > 0 else "<span></span>"
        nxt = f'<a class="next" href="{order[i+1]}">{html.escape(titles[order[i+1]])} →</a>' if i + 1 < len(order) else ""
        page = PAGE.format(title=html.escape(title), site=SITE_TITLE, mathjax=MATHJAX_CONFIG,
                           desc=f'<div class="description">{_inline(desc)}</div>' if desc else "",
                           sidebar=sidebar_html(tree, titles, p), main=main, toc=toc_html(main), prev=prev, next=nxt)
        (out / p).write_text(page)
        pages[p] = page
    return pages, tree, errors


if __name__ == "__main__":
    pages, _, errors = build()
    for e in errors: print("ERROR", e)
    print(f"docs: rendered {len(pages)} pages to {OUT.relative_to(ROOT)}/")
