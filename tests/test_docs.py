"The offline docs preview (tools/docs_build.py, tools/check_docs.py): full pages, directives, math, links, sidebar."
import json, re, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import docs_build, check_docs   # noqa: E402


def nb(*cells):
    "A notebook from ('md', src) / ('code', src, [outputs]) tuples."
    out = []
    for c in cells:
        if c[0] == "md": out.append({"cell_type": "markdown", "metadata": {}, "source": c[1]})
        else: out.append({"cell_type": "code", "metadata": {}, "source": c[1], "execution_count": 1,
                          "outputs": c[2] if len(c) > 2 else []})
    return {"cells": out, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def stream(text): return {"output_type": "stream", "name": "stdout", "text": text}
def result(text): return {"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": {"text/plain": text}}


SIDEBAR = "website:\n  sidebar:\n    contents:\n      - index.ipynb\n      - section: Things\n        contents:\n          - 10_alpha.ipynb\n"


@pytest.fixture
def site(tmp_path):
    nbs, out = tmp_path / "nbs", tmp_path / "_docs"
    nbs.mkdir()
    (nbs / "index.ipynb").write_text(json.dumps(nb(("md", "# Home\n> The start page\n\nSee [alpha](10_alpha.ipynb#the-math)."))))
    (nbs / "10_alpha.ipynb").write_text(json.dumps(nb(
        ("md", "# Alpha\n> A variant with $x^2$ in its subtitle\n"),
        ("code", "#| default_exp variants.alpha", []),
        ("code", "#| export\ndef f(x): return 2 * x   # EXPORTED_CODE", []),
        ("code", "#| hide\nfrom fastcore.test import *   # HIDDEN_CODE", [stream("HIDDEN_OUTPUT\n")]),
        ("md", "## The math\nInline $W_0 x$ and a price of \\$5, then\n$$\ny = W_0 x + s\\,BA x\n$$\nBack to [home](index.html)."),
        ("code", "#| echo: false\nprint('ECHO_FALSE_CODE')", [stream("ECHO_FALSE_OUTPUT\n")]),
        ("code", "#| eval: false\nrun_the_gpu_job()   # EVAL_FALSE_CODE", []),
        ("code", "#| output: false\nx = 1   # OUTPUT_FALSE_CODE", [result("OUTPUT_FALSE_OUTPUT")]),
        ("code", "f(3)", [result("6")]),
    )))
    (nbs / "sidebar.yml").write_text(SIDEBAR)
    pages, tree, errors = docs_build.build(nbs, out, nbs / "sidebar.yml")
    return nbs, out, pages, tree, errors


def test_full_pages_with_head_styles_sidebar_and_local_mathjax(site):
    nbs, out, pages, tree, errors = site
    assert errors == [] and set(pages) == {"index.html", "alpha.html"}
    page = (out / "alpha.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<head>" in page and '<link rel="stylesheet" href="styles.css">' in page
    assert (out / "styles.css").exists() and (out / "site.css").exists()
    assert re.search(r'<script src="mathjax/MathJax\.js\?config=[\w-]+"></script>', page)
    assert (out / "mathjax" / "MathJax.js").exists() and (out / "mathjax" / "config" / f"{docs_build.MATHJAX_CONFIG}.js").exists()
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page fetches something from the network"
    side = re.search(r'<nav class="sidebar".*?</nav>', page, re.S).group(0)
    assert '<a href="alpha.html" class="active" aria-current="page">Alpha</a>' in side and '<a href="index.html">Home</a>' in side
    assert "<summary>Things</summary>" in side
    assert '<h1 class="title">Alpha</h1>' in page and "A variant with" in page


def test_directives_are_honoured(site):
    page = (site[1] / "alpha.html").read_text()
    assert "EXPORTED_CODE" in page and "exported to <code>lora_lite.variants.alpha</code>" in page
    assert "HIDDEN_CODE" not in page and "HIDDEN_OUTPUT" not in page                  # #| hide: the whole cell
    assert "ECHO_FALSE_CODE" not in page and "ECHO_FALSE_OUTPUT" in page              # echo: false: outputs only
    assert "EVAL_FALSE_CODE" in page                                                   # eval: false: shown
    assert "OUTPUT_FALSE_CODE" in page and "OUTPUT_FALSE_OUTPUT" not in page          # output: false: code only
    assert "default_exp" not in page and "#|" not in page
    assert not re.search(r"\b(In|Out)\s*\[\s*\d*\s*\]:", page)
    assert check_docs.directive_leaks(page) == []


def test_math_is_left_for_mathjax_and_a_dollar_stays_a_dollar(site):
    page = (site[1] / "alpha.html").read_text()
    assert '<span class="math">\\(W_0 x\\)</span>' in page
    assert re.search(r'<div class="math">\$\$\s*y = W_0 x \+ s\\,BA x\s*\$\$</div>', page)
    assert "a price of $5" in page and "$5" not in re.findall(r'<span class="math">(.*?)</span>', page)
    assert 'processClass: "math"' in page and 'ignoreClass: "ll-page"' in page and '<body class="ll-page">' in page


def test_links_to_notebooks_become_pages_and_are_checked(site):
    nbs, out, pages, tree, errors = site
    index = (out / "index.html").read_text()
    assert 'href="alpha.html#the-math"' in index and 'id="the-math"' in (out / "alpha.html").read_text()
    assert check_docs.check_site(pages, tree, out, nbs) == []
    pages = dict(pages, **{"index.html": pages["index.html"].replace("alpha.html#the-math", "alpha.html#nowhere")
                           .replace('href="alpha.html"', 'href="gone.html"')})
    problems = check_docs.check_site(pages, tree, out, nbs)
    assert "index.html: link to a missing anchor alpha.html#nowhere" in problems
    assert "index.html: dead link to gone.html" in problems


def test_sidebar_problems_are_listed(site, tmp_path):
    nbs, out = site[0], site[1]
    (nbs / "20_beta.ipynb").write_text(json.dumps(nb(("md", "# Beta"))))
    (nbs / "sidebar.yml").write_text(SIDEBAR + "          - 30_gamma.ipynb\n")
    pages, tree, errors = docs_build.build(nbs, out, nbs / "sidebar.yml")
    problems = check_docs.check_site(pages, tree, out, nbs)
    assert "sidebar.yml lists missing notebook 30_gamma.ipynb" in problems
    assert "notebook 20_beta.ipynb is not in sidebar.yml" in problems
    assert "30_gamma.ipynb (missing)" in pages["alpha.html"]


def test_a_visible_directive_is_caught_but_prose_about_directives_is_not():
    code_leak = '<pre class="sourceCode python"><code><span class="c1">#| export</span>\nx = 1</code></pre>'
    assert check_docs.directive_leaks(code_leak) == ["#| export"]
    assert check_docs.directive_leaks("<p>mark it with <code>#| export</code></p>") == []
    assert check_docs.directive_leaks("<p>#| hide left in prose</p>") == ["#| hide left in prose"]


def test_the_real_lora_notebook_renders_cleanly():
    title, desc, main = docs_build.render_notebook(ROOT / "nbs" / "10_lora.ipynb")
    assert title == "LoRA" and desc
    assert '<span class="nc">LoRA</span>' in main and "fastcore.test" not in main and "nbdev_export" not in main
    assert check_docs.directive_leaks(main) == [] and main.count('class="math"') > 5


def test_make_docs_is_in_make_test_and_docs_check_is_not():
    mk = (ROOT / "Makefile").read_text()
    test_deps = re.search(r"^test:(.*)$", mk, re.M).group(1).split()
    assert "docs" in test_deps and "docs-check" not in test_deps
    assert re.search(r"^docs-check:\n\t\$\(PY\) tools/docs_browser_check\.py$", mk, re.M)
    assert re.search(r"^docs:\n\t\$\(PY\) tools/check_docs\.py$", mk, re.M)
