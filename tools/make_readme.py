#!/usr/bin/env python
"""Regenerate README.md from nbs/index.ipynb (Quarto's nbdev_readme can't run offline here).

Markdown cells are copied; code cells marked `#| hide` or `#| echo: false` show only their outputs;
other code cells are shown as python blocks followed by their outputs. `--check` exits 1 if README.md is stale."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _flags(src):
    return {l.strip()[3:].strip() for l in src.splitlines() if l.strip().startswith("#|")}


def _outputs(cell):
    parts = []
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if "text/markdown" in data: parts.append("".join(data["text/markdown"]).strip())
        elif "text/plain" in data: parts.append("```\n" + "".join(data["text/plain"]).rstrip() + "\n```")
        elif o.get("output_type") == "stream": parts.append("```\n" + "".join(o["text"]).rstrip() + "\n```")
    return parts


def render(nb_path=ROOT / "nbs" / "index.ipynb"):
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            out.append(src.strip())
            continue
        flags = _flags(src)
        if "hide" in flags and not c.get("outputs"): continue
        if not ({"hide", "echo: false"} & flags):
            code = "\n".join(l for l in src.splitlines() if not l.strip().startswith("#|")).strip()
            if code: out.append("```python\n" + code + "\n```")
        out += _outputs(c)
    return "<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n" + "\n\n".join(p for p in out if p) + "\n"


if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        if readme.read_text() != text:
            sys.exit("README.md is stale: run `python tools/make_readme.py` (it is generated from nbs/index.ipynb)")
        print("README.md is in sync with nbs/index.ipynb")
    else:
        readme.write_text(text); print(f"wrote {readme}")
