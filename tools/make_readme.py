#!/usr/bin/env python
"""Regenerate README.md from nbs/index.ipynb (Quarto's nbdev_readme can't run offline here), and the lists that come
from the variant registry (`ll.VARIANTS`): the methods paragraph and the variant table.

Markdown cells are copied; code cells marked `#| hide` or `#| echo: false` show only their outputs; other code cells
are shown as python blocks followed by their outputs. A code cell that calls one of GENERATED (`methods_paragraph()`,
`variant_table()`) is not read from the notebook's stored output: it is computed now from the registry, so a newly
registered variant is in the README as soon as it is registered (the site's index page computes the same functions
when nbdev's docs processing runs that cell). `--check` exits 1 if README.md is stale."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"


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


# ---------------------------------------------------------------- lists from the registry
def module_notebooks() -> dict:
    "{module (lora_lite.x.y): notebook path} from each notebook's `#| default_exp`."
    out = {}
    for p in sorted(NBS.glob("*.ipynb")):
        for c in json.loads(p.read_text())["cells"]:
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(c["source"]), re.M)
            if m: out["lora_lite." + m.group(1)] = p; break
    return out


def notebook_title(nb: Path) -> str:
    "The notebook's H1 (its page title)."
    for c in json.loads(nb.read_text())["cells"]:
        if c["cell_type"] == "markdown":
            m = re.match(r"#\s+(.+)", "".join(c["source"]).strip())
            if m: return m.group(1).strip()
    return nb.stem


def page_of(nb: Path) -> str: return re.sub(r"^\d+_", "", nb.stem) + ".html"


def variant_notebooks() -> dict:
    "{variant name: its notebook}, for every registered variant."
    import lora_lite as ll
    nbs = module_notebooks()
    # a class that a notebook re-registered in this process (nbdev's docs processing runs exported cells) has __module__
    # '__main__': the package face has the exported class of that name
    mod = lambda V: V.__module__ if V.__module__ in nbs else getattr(ll.variants, V.__name__).__module__
    return {name: nbs[mod(V)] for name, V in ll.VARIANTS.items()}


def _sidebar_sections():
    "[(section name, [notebook file names])] from nbs/sidebar.yml, top-level pages as a section named ''."
    import yaml
    doc = yaml.safe_load((NBS / "sidebar.yml").read_text()) or {}
    out = []
    for it in doc["website"]["sidebar"]["contents"]:
        if isinstance(it, str): out.append(("", [it]))
        elif isinstance(it, dict) and "section" in it: out.append((it["section"], [c for c in it.get("contents") or [] if isinstance(c, str)]))
    return out


def methods_paragraph() -> str:
    "The index's first paragraph: how many methods, each by its notebook's title, grouped as the sidebar groups them."
    vnb = {nb.name: nb for nb in variant_notebooks().values()}
    groups, seen = [], set()
    for _, files in _sidebar_sections():
        g = [notebook_title(vnb[f]) for f in files if f in vnb]
        seen |= {f for f in files if f in vnb}
        if g: groups.append(", ".join(g))
    rest = [notebook_title(vnb[f]) for f in sorted(set(vnb) - seen)]
    if rest: groups.append(", ".join(rest))
    return (f"lora_lite is a small library of {len(vnb)} parameter-efficient fine-tuning methods — {'; '.join(groups)} — "
            "written so you can read and change them, and equal to PEFT where PEFT has the method. Each method is one "
            "notebook: the paper's idea, the math, the ~50 lines that implement it, and small checks that prove it. The "
            "notebooks are exported to the `lora_lite` package you install. Left out on purpose: LN-Tuning, the one method of "
            "PEFT's published MetaMathQA comparison that adapts norm layers rather than linear ones (0.0 % on GSM8K there).")


def paper_link(paper) -> str:
    "Markdown link of a variant's (id, title): arXiv ids, or `openreview:ID`."
    if not paper: return "—"
    pid, title = paper
    url = f"https://openreview.net/forum?id={pid.split(':', 1)[1]}" if pid.startswith("openreview:") else f"https://arxiv.org/abs/{pid}"
    return f"[{title}]({url})"


def own_gsm8k(folder=ROOT / "benchmarks" / "results" / "gsm8k") -> dict:
    "{variant: accuracy %} from this project's paper-preset result files."
    res = [json.loads(p.read_text()) for p in sorted(folder.rglob("result.json"))] if folder.exists() else []
    return {r["variant"]: 100 * r["accuracy"] for r in res if r.get("preset") == "paper" and r.get("n_eval") == 1319}


def variant_table() -> str:
    "One row per registered variant: paper, parameters on Qwen3-0.6B's shapes (paper preset), GSM8K by source."
    import lora_lite as ll
    from lora_lite.checks import qwen3_params
    from lora_lite.bench.run import Settings, adapter_fields
    fmt = lambda n: f"{n/1e6:.2f}M" if n >= 1e6 else f"{n/1e3:.1f}K"
    pct = lambda d, key: next((f"{v:.1f}" for k, v in d.items() if k.startswith(key)), "—")
    own, nbs = own_gsm8k(), variant_notebooks()
    rows = ["| variant | paper | params (Qwen3-0.6B) | GSM8K ours | original (Qwen3-0.6B) | PEFT (Llama-3.2-3B) |",
            "|---|---|---|---|---|---|"]
    for name, V in sorted(ll.VARIANTS.items(), key=lambda kv: (ll.ORIGINAL not in kv[1].results, kv[0])):
        cfg = ll.get_config(name, **adapter_fields(Settings.build("paper", name)))
        ours = f"{own[name]:.1f}" if name in own else "—"
        rows.append(f"| [`{name}`]({page_of(nbs[name])}) | {paper_link(V.paper)} | {fmt(qwen3_params(cfg))} | {ours} | "
                    f"{pct(V.results, 'original')} | {pct(V.results, 'PEFT')} |")
    return "\n".join(rows)


GENERATED = {"methods_paragraph()": methods_paragraph, "variant_table()": variant_table}


# ---------------------------------------------------------------- the README
def render(nb_path=NBS / "index.ipynb"):
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            out.append(src.strip())
            continue
        flags = _flags(src)
        gen = [f for call, f in GENERATED.items() if call in src]
        if "hide" in flags and not c.get("outputs") and not gen: continue
        if not ({"hide", "echo: false"} & flags):
            code = "\n".join(l for l in src.splitlines() if not l.strip().startswith("#|")).strip()
            if code: out.append("```python\n" + code + "\n```")
        out += [f() for f in gen] if gen else _outputs(c)
    return "<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n" + "\n\n".join(p for p in out if p) + "\n"


if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        if readme.read_text() != text:
            sys.exit("README.md is stale: run `python tools/make_readme.py` (it is generated from nbs/index.ipynb and the variant registry)")
        print("README.md is in sync with nbs/index.ipynb and the variant registry")
    else:
        readme.write_text(text); print(f"wrote {readme}")
