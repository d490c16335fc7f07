#!/usr/bin/env python
"""Offline docs check (Quarto can't be installed here): render every notebook to HTML with nbconvert into _docs/,
and fail on a notebook that doesn't render or on a dead intra-site link. Also checks that every notebook listed in
nbs/sidebar.yml exists and every notebook is listed. Page names follow nbdev: the numeric prefix is dropped
(nbs/10_lora.ipynb -> _docs/lora.html)."""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
NBS, OUT = ROOT / "nbs", ROOT / "_docs"


def page(nb: Path) -> str:
    return re.sub(r"^\d+_", "", nb.stem) + ".html"


def main():
    OUT.mkdir(exist_ok=True)
    errors, pages = [], {}
    exporter = HTMLExporter(template_name="basic")
    for nb in sorted(NBS.glob("*.ipynb")):
        try:
            node = nbformat.read(nb, as_version=4)
            nbformat.validate(node)
            html, _ = exporter.from_notebook_node(node)
        except Exception as e:
            errors.append(f"{nb.name}: does not render ({type(e).__name__}: {e})"); continue
        (OUT / page(nb)).write_text(html)
        pages[page(nb)] = html
    for name, html in pages.items():
        for href in re.findall(r'href="([^"#:?]+\.html)(?:#[^"]*)?"', html):
            if not (OUT / href).exists():
                errors.append(f"{name}: dead link to {href}")
    side = (NBS / "sidebar.yml").read_text()
    listed = set(re.findall(r"([\w]+\.ipynb)", side))
    have = {p.name for p in NBS.glob("*.ipynb")}
    errors += [f"sidebar.yml lists missing notebook {n}" for n in sorted(listed - have)]
    errors += [f"notebook {n} is not in sidebar.yml" for n in sorted(have - listed)]
    for e in errors: print("ERROR", e)
    print(f"docs: rendered {len(pages)} notebooks to {OUT.relative_to(ROOT)}/, {len(errors)} problem(s)")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
