#!/usr/bin/env python
"""Offline preview of the docs site, built from nbdev's own processed notebooks, so it shows what the site shows.

1. `docs_proc.process_all` runs nbdev's docs processing (`nbdev.serve_drv.main` with `FilterDefaults`, what
   `nbdev_docs` gives Quarto) on every notebook into _proc/: show_doc cells added and run, `#| hide` and `#| export`
   sources dropped, `#| exports` cells kept and folded, names linked, the title cell turned into front matter.
2. nbconvert's HTML exporter renders each processed notebook with its JupyterLab template (markdown through
   nbconvert's mistune renderer, code through Pygments, every output type, nbconvert's own MathJax configuration).
3. Written here, because Quarto does it on the site and nbconvert doesn't: the Quarto cell options nbdev leaves in
   the processed cells (`echo`, `output`, `include`, `code-fold`, `code-summary`), the title and description from
   nbdev's front matter, pandoc's heading ids, links to notebooks and to the site's own address made relative,
   Pandoc link attributes (`{target=...}`) dropped, and the page frame: sidebar (nbs/sidebar.yml), "on this page",
   previous/next.

Math: one engine, MathJax, with TeX input. The site (Quarto, `html-math-method: mathjax` in nbs/_quarto.yml) loads
MathJax 3 from Quarto's CDN; the preview loads MathJax 2.7 from the `jupyter-server-mathjax` package (dev extra; no
network) with nbconvert's configuration (`$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]`) and its STIX-Web fonts (the only ones
the package ships). The TeX these notebooks use
typesets the same in both; `make docs-check` checks every formula in headless Chromium.
Page names come from nbdev's front matter (`output-file`: nbs/10_lora.ipynb -> _docs/lora.html)."""
import html, re, shutil, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import docs_proc   # noqa: E402

ROOT = docs_proc.ROOT
NBS, OUT, PROC = ROOT / "nbs", ROOT / "_docs", docs_proc.PROC
SITE_TITLE = "lora_lite"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full"


def page_name(nb) -> str:
    "nbs/10_lora.ipynb -> lora.html (nbdev's output-file: the numeric prefix dropped)."
    return re.sub(r"^\d+_", "", Path(nb).stem) + ".html"


def site_url() -> str:
    "The published site's address (settings.ini doc_host + doc_baseurl): nbdev's links point there."
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    return cfg.doc_host.rstrip("/") + "/" + cfg.doc_baseurl.strip("/") + "/"


# ---------------------------------------------------------------- what Quarto does with nbdev's processed cells
_OPT = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")


def quarto_options(src: str):
    "Leading `#| key: value` lines (Quarto cell options, YAML values) -> ({key: value}, the code without them)."
    import yaml
    lines, opts = src.splitlines(), {}
    while lines and _OPT.match(lines[0]):
        k, v = _OPT.match(lines.pop(0)).groups()
        opts[k] = yaml.safe_load(v) if v else None
    return opts, "\n".join(lines)


_PANDOC_ATTR = re.compile(r"(\]\([^)\s]*\))\{[^}\n]*\}")   # [text](url){target="_blank" ...}: pandoc link attributes


def front_matter(nb):
    "(title, description, output file) from the YAML front matter nbdev's processing puts in the first raw cell."
    import yaml
    for c in nb.cells:
        if c.cell_type == "raw" and c.source.lstrip().startswith("---"):
            fm = yaml.safe_load(c.source.strip().strip("-")) or {}
            return fm.get("title"), fm.get("description", ""), fm.get("output-file")
    return None, "", None


def quarto_cells(nb):
    "Apply Quarto's cell options to a processed notebook in place, as Quarto would before rendering."
    cells = []
    for c in nb.cells:
        if c.cell_type == "raw": continue                      # front matter: the page header
        if c.cell_type == "code":
            opts, c.source = quarto_options(c.source)
            if opts.get("include") is False: continue
            if opts.get("echo") is False or not c.source.strip(): c.metadata.setdefault("tags", []).append("ll-no-input")
            if opts.get("output") is False: c.outputs = []
            if opts.get("code-fold") in (True, "show"):
                c.metadata["ll_fold"] = {"open": opts["code-fold"] == "show", "summary": opts.get("code-summary") or "Code"}
            for o in c.get("outputs", []):
                md = o.get("data", {}).get("text/markdown")
                if md is not None: o["data"]["text/markdown"] = _PANDOC_ATTR.sub(r"\1", "".join(md))
        cells.append(c)
    nb.cells = cells
    return nb


# ---------------------------------------------------------------- nbconvert
TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock -%}
{%- block jupyter_widgets -%}{%- endblock -%}
{%- block html_head_js_mermaidjs -%}{%- endblock -%}
{%- block extra_css -%}<meta name="generator" content="tools/docs_build.py: nbdev-processed notebook rendered by nbconvert (offline preview; the site is nbdev_docs/Quarto)">
<link rel="stylesheet" href="site.css"><link rel="stylesheet" href="styles.css">
<script type="text/x-mathjax-config">/* the local MathJax copy ships only the STIX-Web fonts */
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}});</script>{%- endblock -%}
{%- block body_header -%}<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<header class="navbar"><a class="brand" href="index.html">@@SITE@@</a><span class="note">offline preview</span></header>
<div class="layout">@@SIDEBAR@@<main id="content"><header class="page-header"><h1 class="title">@@TITLE@@</h1>@@DESC@@</header>
{%- endblock body_header -%}
{%- block body_footer -%}<nav class="pager">@@PAGER@@</nav></main>@@TOC@@</div></body>{%- endblock body_footer -%}
{%- block input_group -%}
{%- set fold = cell.metadata.get("ll_fold") -%}
{%- if fold -%}<details class="code-fold"{{ " open" if fold.open }}><summary>{{ fold.summary | e }}</summary>{{ super() }}</details>
{%- else -%}{{ super() }}{%- endif -%}
{%- endblock input_group -%}
"""

_exporter = None


def exporter():
    "nbconvert's HTMLExporter with its JupyterLab template, no prompts, the local MathJax, cells tagged ll-no-input shown without code."
    global _exporter
    if _exporter is None:
        import jinja2
        from nbconvert import HTMLExporter
        from nbconvert.preprocessors import TagRemovePreprocessor
        ex = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"ll_page.html.j2": TEMPLATE})],
                          template_file="ll_page.html.j2", exclude_input_prompt=True, exclude_output_prompt=True,
                          mathjax_url=f"mathjax/MathJax.js?config={MATHJAX_CONFIG}", anchor_link_text="#")
        ex.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"ll-no-input"}), enabled=True)
        _exporter = ex
    return _exporter


# ---------------------------------------------------------------- links and ids as on the site
def pandoc_id(text: str) -> str:
    "Pandoc's auto identifier (what Quarto gives a heading): lowercase, punctuation dropped, spaces -> '-'."
    s = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    s = re.sub(r"[^\w\s.-]", "", s, flags=re.UNICODE)
    s = re.sub(r"\s+", "-", s)
    return re.sub(r"^[^a-z]+", "", s) or "section"


_HEADING = re.compile(r'<h([1-6]) id="[^"]*">(.*?)<a class="anchor-link" href="#[^"]*">#</a></h\1>', re.S)
_NB_LINK = re.compile(r'(href|src)="(?![a-z][a-z0-9+.-]*:|#)([^"#?]*?)([^/"#?]+)\.ipynb([#?][^"]*)?"', re.I)


def site_links(body: str, base: str) -> str:
    "Headings get pandoc ids; links to notebooks and to the site's own address become relative page links."
    seen = {}

    def head(m):
        base_id = hid = pandoc_id(m[2])
        while hid in seen: seen[base_id] += 1; hid = f"{base_id}-{seen[base_id]}"
        seen.setdefault(hid, 0)
        return f'<h{m[1]} id="{hid}">{m[2]}<a class="anchor-link" href="#{hid}" aria-hidden="true">#</a></h{m[1]}>'
    body = _HEADING.sub(head, body)
    body = _NB_LINK.sub(lambda m: f'{m[1]}="{m[2]}{page_name(m[3])}{m[4] or ""}"', body)
    return body.replace(f'href="{base}', 'href="')


def render(proc_nb):
    "A processed notebook -> (title, description, page name, page HTML with @@SIDEBAR@@/@@PAGER@@ to fill)."
    import nbformat
    nb = nbformat.read(str(proc_nb), as_version=4)
    title, desc, out_file = front_matter(nb)
    page, _ = exporter().from_notebook_node(quarto_cells(nb), resources={"metadata": {"name": title or Path(proc_nb).stem}})
    head, body = page.split("<body", 1)
    body = site_links("<body" + body, site_url())
    main = re.search(r'<main id="content">(.*)</main>', body, re.S).group(1)
    body = body.replace("@@TOC@@", toc_html(main))
    return title or Path(proc_nb).stem, desc, out_file or page_name(proc_nb), head + body


def _inline(md: str) -> str:
    "One line of markdown without the <p> around it (the page description), by nbconvert's markdown filter."
    from nbconvert.filters import markdown2html_mistune
    return re.sub(r"^<p>(.*)</p>\s*$", r"\1", markdown2html_mistune(md).strip(), flags=re.S)


# ---------------------------------------------------------------- the site frame
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


SITE_CSS = """
body.jp-Notebook { margin: 0; padding: 0; }
.navbar { background: #2780e3; color: #fff; padding: .6rem 1.2rem; display: flex; gap: 1rem; align-items: baseline; font-family: system-ui, sans-serif; }
.navbar .brand { color: #fff; font-weight: 600; font-size: 1.2rem; text-decoration: none; }
.navbar .note { opacity: .8; font-size: .85rem; }
.layout { display: grid; grid-template-columns: 250px minmax(0, 1fr) 210px; gap: 2rem; max-width: 1400px; margin: 0 auto; padding: 0 1rem; }
.sidebar, .toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto; padding: 1rem 0; font: .9rem system-ui, sans-serif; }
.sidebar ul, .toc ul { list-style: none; padding-left: 0; margin: 0; }
.sidebar ul ul { padding-left: .8rem; } .sidebar li { margin: .15rem 0; }
.sidebar summary { font-weight: 600; cursor: pointer; margin-top: .5rem; }
.sidebar a, .toc a { color: #495057; text-decoration: none; } .sidebar a.active { color: #2780e3; font-weight: 600; }
.sidebar .missing { color: #c00; }
.toc h2 { font-size: .9rem; margin: 0 0 .4rem; } .toc .toc-h3 { padding-left: .8rem; }
main { min-width: 0; padding: 1rem 0 3rem; }
.page-header .title { margin-bottom: .2rem; font-family: system-ui, sans-serif; }
.page-header .description { color: #6c757d; }
details.code-fold > summary { cursor: pointer; color: #6c757d; font-size: .85rem; }
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
    "styles.css, site.css (the frame) and MathJax into out/ (MathJax only when it changed)."
    src = mathjax_dir()
    stamp = f"{src}:{(src / 'MathJax.js').stat().st_mtime}"
    dst = out / "mathjax"
    if not (dst / ".source").exists() or (dst / ".source").read_text() != stamp:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        (dst / ".source").write_text(stamp)
    styles = nbs / "styles.css" if (nbs / "styles.css").exists() else NBS / "styles.css"
    shutil.copy(styles, out / "styles.css")
    (out / "site.css").write_text(SITE_CSS)


def build(nbs=NBS, out=OUT, sidebar=None, proc=None):
    """Process every notebook in `nbs` with nbdev (into `proc`, default _proc/ beside `out`'s project) and render the
    site to `out`. Returns (pages {html name: page HTML}, sidebar tree, errors: one line per notebook that failed)."""
    nbs, out = Path(nbs), Path(out)
    proc = Path(proc) if proc else (PROC if nbs == NBS else out.parent / "_proc")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.html"): old.unlink()   # pages of renamed/deleted notebooks must not linger
    copy_assets(out, nbs)
    tree = read_sidebar(sidebar or nbs / "sidebar.yml")
    results = docs_proc.process_all(sorted(nbs.glob("*.ipynb")), proc)
    rendered, errors = {}, []
    for name, (err, _) in sorted(results.items()):
        if err: errors.append(f"{name}: nbdev's docs processing fails: {err}"); continue
        try:
            title, desc, p, page = render(proc / name)
            rendered[p] = (name, title, desc, page)
        except Exception as e: errors.append(f"{name}: does not render ({type(e).__name__}: {e})")
    titles = {p: r[1] for p, r in rendered.items()}
    order = [page_name(n) for n in sidebar_pages(tree) if page_name(n) in rendered]
    order += [p for p in sorted(rendered) if p not in order]
    pages = {}
    for p, (name, title, desc, page) in rendered.items():
        i = order.index(p)
        prev = f'<a class="prev" href="{order[i-1]}">← {html.escape(titles[order[i-1]])}</a>' if i > 0 else "<span></span>"
        nxt = f'<a class="next" href="{order[i+1]}">{html.escape(titles[order[i+1]])} →</a>' if i + 1 < len(order) else ""
        page = (page.replace("@@SITE@@", SITE_TITLE).replace("@@TITLE@@", html.escape(title))
                .replace("@@DESC@@", f'<div class="description">{_inline(desc)}</div>' if desc else "")
                .replace("@@SIDEBAR@@", sidebar_html(tree, titles, p)).replace("@@PAGER@@", prev + nxt))
        (out / p).write_text(page)
        pages[p] = page
    return pages, tree, errors


if __name__ == "__main__":
    pages, _, errors = build()
    for e in errors: print("ERROR", e)
    print(f"docs: rendered {len(pages)} pages to {OUT.relative_to(ROOT)}/")
