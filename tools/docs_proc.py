#!/usr/bin/env python
"""nbdev's own docs processing, run on every notebook: what `nbdev_docs` gives Quarto.

`nbdev_docs` first runs `nbdev.serve.proc_nbs`, which hands each notebook to `nbdev.serve_drv.main((src, dst,
FilterDefaults))`: nbdev's processors (show_doc cells added and executed, `#| hide` / `#| export` sources removed,
`#| exports` cells kept and folded, links added, the title cell turned into front matter) on a copy written to
`dst`. This module calls that same function per notebook, in a pool of spawned worker processes reused across
notebooks as proc_nbs's own pool is, but it catches each notebook's error instead of stopping at the first one,
and it never uses proc_nbs's modification-time cache (every call processes every notebook again).

`python tools/docs_proc.py [NB ...]` processes nbs/ (or the given notebooks) into _proc/ and prints one line per
notebook: the time, OK or the error, and the classes whose source the processed notebook still shows."""
import multiprocessing as mp, os, re, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, PROC = ROOT / "nbs", ROOT / "_proc"


def _one(job):
    "Worker: process one notebook exactly as nbdev_docs does; (name, error or None, seconds)."
    src, dst = job
    from nbdev.processors import FilterDefaults
    import nbdev.serve_drv
    t = time.time()
    try:
        os.chdir(ROOT)                      # nbdev reads settings.ini from the working directory upwards
        nbdev.serve_drv.main((Path(src), Path(dst), FilterDefaults))
        err = None
    except Exception as e:
        cause = e.__cause__ or e.__context__
        err = f"{str(e).strip()}\n-> {type(cause).__name__}: {cause}" if cause else f"{type(e).__name__}: {e}"
    finally: os.environ.pop("IN_TEST", None)   # serve_drv.main leaves it set when the notebook fails
    return Path(src).name, err, time.time() - t


def process_all(nbs=None, out=PROC, n_workers=None) -> dict:
    "Process notebooks `nbs` (default: every nbs/*.ipynb) into `out`: {notebook name: (error or None, seconds)}."
    nbs = sorted(NBS.glob("*.ipynb")) if nbs is None else [Path(p) for p in nbs]
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    for p in nbs:
        if (out / p.name).exists(): (out / p.name).unlink()    # a notebook that fails leaves no stale output behind
    n_workers = n_workers or int(os.environ.get("LL_DOCS_WORKERS", min(2, os.cpu_count() or 1)))
    jobs = [(str(p.resolve()), str(out / p.name)) for p in nbs]
    # spawned workers (like proc_nbs): forking a process that has torch loaded can hang
    with mp.get_context("spawn").Pool(n_workers) as pool:
        res = pool.map(_one, jobs, chunksize=1)
    return {name: (err, dt) for name, err, dt in res}


_CLASS = re.compile(r"^class\s+(\w+)", re.M)


def shown_classes(nb_path) -> list:
    "Classes whose `class` statement is in a code cell the processed notebook still shows (has a source)."
    import json
    nb = json.loads(Path(nb_path).read_text())
    return [m for c in nb["cells"] if c["cell_type"] == "code" for m in _CLASS.findall("".join(c.get("source", "")))]


def main(argv):
    t0 = time.time()
    res = process_all(argv or None)
    for name, (err, dt) in sorted(res.items()):
        cls = shown_classes(PROC / name) if err is None else []
        print(f"{name:28s} {dt:5.1f}s {'OK' if err is None else 'FAILED'}  {len(cls)} classes shown"
              + (f"\n    {err.splitlines()[0][:200]} ... {err.splitlines()[-1][:200]}" if err else ""))
    ok = sum(e is None for e, _ in res.values())
    print(f"nbdev docs processing: {ok}/{len(res)} notebooks pass in {time.time() - t0:.0f} s")
    return 0 if ok == len(res) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tools"))
    import docs_proc     # the workers unpickle docs_proc._one, not __main__._one
    sys.exit(docs_proc.main(sys.argv[1:]))
