"""The release path: everything `make wheel` / `make check` / `make docs` run comes with the dev extra.

The fast tests read settings.ini, the Makefile and tools/*.sh; the real thing (a fresh venv, `pip install -e .[dev]`,
`make wheel`) needs the package index and minutes, so it runs only with LL_RELEASE_TEST=1."""
import ast, configparser, os, re, shlex, subprocess, sys
from importlib import metadata
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _names(reqs):
    "Distribution names of requirement strings, normalised (PEP 503)."
    return {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", r, 1)[0]).lower() for r in reqs}


def extra(name):
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    return _names(shlex.split(cfg["DEFAULT"].get(f"{name}_requirements", "")))


def recipe(target):
    mk = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n?)*)", mk, re.M)
    assert m, f"Makefile has no target {target}"
    return m.group(1).split(), m.group(2)


def test_wheel_tools_are_in_the_dev_extra():
    deps, body = recipe("wheel")
    assert "tools/wheel_check.sh" in body
    script = (ROOT / "tools" / "wheel_check.sh").read_text()
    run = set(re.findall(r"\$PY -m (\w+)", script)) - {"venv"}      # venv is the standard library
    assert {"build", "twine"} <= run, run
    missing = {m for m in run if m not in extra("dev")}
    assert not missing, f"make wheel runs `python -m {missing}` but the dev extra lacks it (settings.ini dev_requirements)"


def test_make_test_lints_and_pins_the_peft_oracle():
    "make test starts with `make lint` (ruff, from the dev extra); the dev extra pins the PEFT the parity tests are claimed against."
    assert "lint" in recipe("test")[0] and "ruff check" in recipe("lint")[1] and "ruff" in extra("dev")
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    assert "peft==0.21.2" in shlex.split(cfg["DEFAULT"]["dev_requirements"])


def test_make_check_needs_only_the_dev_extra():
    deps, _ = recipe("check")
    assert {"test", "smoke", "wheel"} <= set(deps)
    assert "lora-lite-bench" in recipe("smoke")[1]
    missing = extra("bench") - extra("dev")
    assert not missing, f"make check runs the benchmark smoke preset, but the dev extra lacks {missing}"


def test_docs_tools_import_only_what_the_dev_extra_brings():
    "Every third-party module tools/docs_*.py and check_docs.py import is a dev-extra package or one of its dependencies."
    dev = extra("dev")
    stdlib = set(sys.stdlib_module_names)
    local = {p.stem for p in (ROOT / "tools").glob("*.py")}
    mods = set()
    for f in [ROOT / "tools" / "check_docs.py", *sorted((ROOT / "tools").glob("docs_*.py"))]:
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Import): mods |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.module and not n.level: mods.add(n.module.split(".")[0])
    third = mods - stdlib - local
    assert third, "expected the docs tools to import mistune, pygments, yaml"
    # reachable = the dev extra and everything it requires (in this environment), as distribution names
    reach, todo = set(), list(dev)
    while todo:
        d = todo.pop()
        if d in reach: continue
        reach.add(d)
        try: reqs = metadata.requires(d) or []
        except metadata.PackageNotFoundError: continue
        todo += [r for r in _names(q for q in reqs if "extra ==" not in q)]
    dists = metadata.packages_distributions()
    for m in sorted(third):
        owners = _names(dists.get(m, []))
        assert owners & reach, f"tools import {m} (from {owners or '?'}), which the dev extra does not bring"
    src = (ROOT / "tools" / "docs_build.py").read_text()
    assert 'find_spec("jupyter_server_mathjax")' in src and "jupyter-server-mathjax" in dev


@pytest.mark.skipif(not os.environ.get("LL_RELEASE_TEST"), reason="needs the package index and minutes: LL_RELEASE_TEST=1")
def test_make_wheel_in_a_fresh_dev_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip, py = venv / "bin" / "pip", venv / "bin" / "python"
    subprocess.run([pip, "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([pip, "install", "-q", "-e", f"{ROOT}[dev]"], check=True)
    res = subprocess.run(["make", "-C", str(ROOT), "wheel", f"PY={py}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "PASSED" in res.stdout and "README quickstart ran from the installed wheel" in res.stdout
