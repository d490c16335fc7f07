"""The docs site: nbdev's own processing (what `nbdev_docs` gives Quarto) passes on every notebook and keeps each
method's code; the offline preview built from it (tools/docs_proc.py, docs_build.py, check_docs.py) shows that code,
its math and working links. Processing + rendering every notebook once takes about a minute on two cores."""
import html, json, re, sys
from pathlib import Path
import pytest
import lora_lite as ll

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
sys.path.insert(0, str(ROOT / "tools"))
import docs_build, check_docs, docs_proc   # noqa: E402

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "Every notebook processed by nbdev (tmp/_proc) and rendered (tmp/_docs), once for this module."
    tmp = tmp_path_factory.mktemp("site")
    pages, tree, errors = docs_build.build(NBS, tmp / "_docs", proc=tmp / "_proc")
    return tmp, pages, tree, errors


def _module_notebooks():
    "{module name: notebook} from each notebook's `#| default_exp`."
    out = {}
    for p in sorted(NBS.glob("*.ipynb")):
        for c in json.loads(p.read_text())["cells"]:
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(c["source"]), re.M)
            if m: out["lora_lite." + m.group(1)] = p.name; break
    return out


def test_nbdev_processing_passes_on_every_notebook(site):
    failed = [e for e in site[3] if "nbdev's docs processing fails" in e]
    assert not failed, "\n\n".join(failed)


def test_every_method_class_survives_processing_and_is_on_its_page(site):
    "The config class and the Variant class of every registered method: in the processed notebook and on the page."
    tmp, pages = site[0], site[1]
    nbs = _module_notebooks()
    missing = []
    for name, V in sorted(ll.VARIANTS.items()):
        for cls in (V.config_cls, V):
            nb = nbs[cls.__module__]
            if cls.__name__ not in docs_proc.shown_classes(tmp / "_proc" / nb): missing.append(f"{nb}: class {cls.__name__} (processed notebook)")
            page = pages.get(docs_build.page_name(nb), "")
            code = html.unescape(re.sub(r"<[^>]+>", "", "\n".join(check_docs._CODE_CELL.findall(page))))
            if not re.search(rf"^class {cls.__name__}\(", code, re.M): missing.append(f"{nb}: class {cls.__name__} (page)")
    assert not missing, "\n".join(missing)


def test_the_preview_has_no_problems(site):
    "What `make docs` checks, on the site built from the processed notebooks: links, anchors, sidebar, directives, head."
    tmp, pages, tree, errors = site
    assert [e for e in errors if "nbdev's docs processing fails" not in e] == []
    problems = check_docs.check_site(pages, tree, tmp / "_docs", NBS)
    assert problems == [], "\n".join(problems)


def test_the_lora_page_shows_code_math_and_docs(site):
    page = site[1]["lora.html"]
    assert '<h1 class="title">LoRA</h1>' in page and "<summary>Exported source</summary>" in page
    assert "$$y' = y + s" in page and 'src="mathjax/MathJax.js?config=' in page   # nbconvert leaves math to MathJax
    assert '<h3 id="loraconfig">LoRAConfig' in page                                  # show_doc's entry, pandoc's id
    assert "nbdev_export" not in page and "fastcore.test" not in page and "default_exp" not in page


# ---------------------------------------------------------------- the pipeline on a small notebook
def nb(*cells):
    "A notebook from ('md', src) / ('code', src, [outputs]) tuples."
    out = []
    for c in cells:
        if c[0] == "md": out.append({"cell_type": "markdown", "metadata": {}, "source": c[1]})
        else: out.append({"cell_type": "code", "metadata": {}, "source": c[1], "execution_count": 1,
                          "outputs": c[2] if len(c) > 2 else []})
    return {"cells": out, "metadata": {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def stream(text): return {"output_type": "stream", "name": "stdout", "text": text}
def result(text): return {"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": {"text/plain": text}}


SIDEBAR = "website:\n  sidebar:\n    contents:\n      - index.ipynb\n      - section: Things\n        contents:\n          - 10_alpha.ipynb\n"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    nbs = tmp / "nbs"; nbs.mkdir()
    (nbs / "index.ipynb").write_text(json.dumps(nb(("md", "# Home\n> The start page"), ("md", "See [alpha](10_alpha.ipynb#the-math)."))))
    (nbs / "10_alpha.ipynb").write_text(json.dumps(nb(
        ("md", "# Alpha\n> A variant with $x^2$ in its subtitle\n"),
        ("code", "#| default_exp variants.alpha", []),
        ("code", "#| exports\ndef double(x:int):   # EXPORTS_CODE\n    \"Twice `x`.\"\n    return 2 * x", []),
        ("code", "#| export\ndef triple(x):\n    # EXPORT_CODE\n    return 3 * x", []),
        ("code", "#| hide\nimport math   # HIDDEN_CODE", [stream("HIDDEN_OUTPUT\n")]),
        ("md", "## The math\nInline $W_0 x$, then\n$$\ny = W_0 x + s\\,BA x\n$$\nBack to [home](index.ipynb)."),
        ("code", "#| echo: false\nprint('ECHO_FALSE_CODE')", [stream("ECHO_FALSE_OUTPUT\n")]),
        ("code", "#| eval: false\nrun_the_gpu_job()   # EVAL_FALSE_CODE", []),
        ("code", "#| output: false\nx = 1   # OUTPUT_FALSE_CODE", [result("OUTPUT_FALSE_OUTPUT")]),
        ("code", "double(3)", [result("6")]),
    )))
    (nbs / "sidebar.yml").write_text(SIDEBAR)
    pages, tree, errors = docs_build.build(nbs, tmp / "_docs", nbs / "sidebar.yml")
    return nbs, tmp / "_docs", pages, tree, errors


def test_full_pages_with_head_styles_sidebar_and_local_mathjax(small):
    nbs, out, pages, tree, errors = small
    assert errors == [] and set(pages) == {"index.html", "alpha.html"}
    page = (out / "alpha.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<head>" in page and re.search(r'<link href="styles.css" rel="stylesheet"', page)
    assert (out / "styles.css").exists() and (out / "site.css").exists()
    assert (out / "mathjax" / "MathJax.js").exists() and (out / "mathjax" / "config" / f"{docs_build.MATHJAX_CONFIG}.js").exists()
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', page), "the page loads something from the network"
    side = re.search(r'<nav class="sidebar".*?</nav>', page, re.S).group(0)
    assert '<a href="alpha.html" class="active" aria-current="page">Alpha</a>' in side and '<a href="index.html">Home</a>' in side
    assert "<summary>Things</summary>" in side
    assert '<h1 class="title">Alpha</h1>' in page and "A variant with" in page


def test_what_nbdev_and_quarto_show_is_what_the_preview_shows(small):
    page = (small[1] / "alpha.html").read_text()
    assert "EXPORTS_CODE" in page and "<summary>Exported source</summary>" in page   # #| exports: code, folded
    assert '<h3 id="double">double' in page and "Twice" in page                      # ... and its show_doc entry
    assert "EXPORT_CODE" not in page and '<h3 id="triple">triple' in page           # #| export: show_doc only
    assert "HIDDEN_CODE" not in page and "HIDDEN_OUTPUT" not in page                  # #| hide: the whole cell
    assert "ECHO_FALSE_CODE" not in page and "ECHO_FALSE_OUTPUT" in page              # echo: false: outputs only
    assert "EVAL_FALSE_CODE" in page                                                   # eval: false: shown
    assert "OUTPUT_FALSE_CODE" in page and "OUTPUT_FALSE_OUTPUT" not in page          # output: false: code only
    assert "default_exp" not in page and check_docs.directive_leaks(page) == []
    assert not re.search(r"\b(In|Out)\s*\[\s*\d*\s*\]:", check_docs.visible_text(page))


def test_links_to_notebooks_become_pages_and_are_checked(small):
    nbs, out, pages, tree, errors = small
    index = (out / "index.html").read_text()
    assert 'href="alpha.html#the-math"' in index and 'id="the-math"' in (out / "alpha.html").read_text()
    assert 'href="index.html"' in (out / "alpha.html").read_text()
    assert check_docs.check_site(pages, tree, out, nbs) == []
    pages = dict(pages, **{"index.html": pages["index.html"].replace("alpha.html#the-math", "alpha.html#nowhere")
                           .replace('href="alpha.html"', 'href="gone.html"')})
    problems = check_docs.check_site(pages, tree, out, nbs)
    assert "index.html: link to a missing anchor alpha.html#nowhere" in problems
    assert "index.html: dead link to gone.html" in problems


def test_a_notebook_that_nbdev_cannot_process_is_an_error(tmp_path):
    "A cell mixing an import with code that needs an earlier cell: nbdev's show-doc execution runs it alone."
    nbs = tmp_path / "nbs"; nbs.mkdir()
    (nbs / "10_beta.ipynb").write_text(json.dumps(nb(
        ("md", "# Beta"), ("code", "#| exports\ndef f(): return 1"), ("code", "y = 2"), ("code", "import math\nmath.sqrt(y)"))))
    res = docs_proc.process_all([nbs / "10_beta.ipynb"], tmp_path / "_proc", n_workers=1)
    err = res["10_beta.ipynb"][0]
    assert err and "NameError" in err and "name 'y' is not defined" in err and not (tmp_path / "_proc" / "10_beta.ipynb").exists()


def test_sidebar_problems_are_listed(small):
    nbs, out, pages, tree = small[:4]
    tree = docs_build.read_sidebar(nbs / "sidebar.yml") + [("page", "30_gamma.ipynb")]
    (nbs / "20_beta.ipynb").write_text(json.dumps(nb(("md", "# Beta"))))
    try: problems = check_docs.check_site(pages, tree, out, nbs)
    finally: (nbs / "20_beta.ipynb").unlink()
    assert "sidebar.yml lists missing notebook 30_gamma.ipynb" in problems
    assert "notebook 20_beta.ipynb is not in sidebar.yml" in problems


def test_a_visible_directive_is_caught_but_prose_about_directives_is_not():
    code_leak = '<div class="highlight hl-ipython3"><pre><span class="c1">#| export</span>\nx = 1</pre></div>'
    assert check_docs.directive_leaks(code_leak) == ["#| export"]
    assert check_docs.directive_leaks("<p>mark it with <code>#| export</code></p>") == []
    assert check_docs.directive_leaks("<p>#| hide left in prose</p>") == ["#| hide left in prose"]


def test_the_docs_check_runs_in_make_test_through_pytest_and_the_browser_check_does_not():
    mk = (ROOT / "Makefile").read_text()
    test_deps = re.search(r"^test:(.*)$", mk, re.M).group(1).split()
    assert "pytest" in test_deps and "docs-check" not in test_deps    # this file builds and checks the whole site
    assert re.search(r"^docs-check:\n\t\$\(PY\) tools/docs_browser_check\.py$", mk, re.M)
    assert re.search(r"^docs:\n\t\$\(PY\) tools/check_docs\.py$", mk, re.M)


def test_the_readme_lists_every_registered_variant():
    "README.md (tools/make_readme.py) has a table row and a name in the opening paragraph for every registered variant."
    import make_readme
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| \[`(\w+)`\]\((\w+\.html)\)", readme, re.M)
    assert sorted(n for n, _ in rows) == sorted(ll.VARIANTS)
    nbs = make_readme.variant_notebooks()
    assert all(page == docs_build.page_name(nbs[n]) for n, page in rows)        # each row links its notebook's page
    para = next(l for l in readme.splitlines() if l.startswith("lora_lite is a small library of"))
    assert f"of {len(ll.VARIANTS)} parameter-efficient" in para
    assert all(make_readme.notebook_title(nb) in para for nb in nbs.values())
