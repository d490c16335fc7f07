"Project-shape rules: README commands, CI entry, module sizes, the core never importing a variant."
import ast, re
import pytest
from pathlib import Path
import lora_lite as ll

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    cmds = [l for l in block.splitlines() if l.strip() and not l.startswith("#")]
    assert len(cmds) == 2 and "--preset smoke" in cmds[0] and "make test" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = cmds[1].split("&& pip install torch", 1)[1]
    assert "pip install torch" + test_cmd in ci, "the README's test command and .ci/run have drifted apart"


def test_module_sizes():
    "No module over 300 lines, no variant over 150 (the package's own, generated _modidx.py aside)."
    for f in (ROOT / "lora_lite").rglob("*.py"):
        if f.name in ("_modidx.py",): continue
        n, cap = len(f.read_text().splitlines()), 150 if f.parent.name == "variants" else 300
        assert n <= cap, f"{f.relative_to(ROOT)} has {n} lines (> {cap})"


# The floors: each module may import only from the floors below it (a package of modules is one floor).
FLOORS = [{"helpers", "weights"}, {"cache"}, {"shared"}, {"core"}, {"calibrate"}, {"attach"}, {"adapter_file"},
          {"variants", "peft_io", "checks", "deploy", "train_step"}, {"bench"}]
RUNTIME = {"attach", "adapter_file", "peft_io", "checks", "deploy", "train_step", "bench"}   # a method (variants/) never imports these
ALLOWED_SAME_FLOOR = {"variants": {"variants"}, "bench": {"bench"}}   # a variant may build on another; bench modules on each other


def _package_imports(f):
    "Top-level lora_lite modules that file `f` imports (relative or absolute), and whether it imports the package face."
    tree, rel = ast.parse(f.read_text()), f.relative_to(ROOT / "lora_lite").parts
    out, face = set(), False
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = list(rel[:-1])[: len(rel) - n.level] if n.level > 1 else list(rel[:-1])
                path = base + (n.module.split(".") if n.module else [])
                if not path: face = True
                else: out.add(path[0])
            elif (n.module or "").split(".")[0] == "lora_lite":
                parts = n.module.split(".")
                if len(parts) == 1: face = True
                else: out.add(parts[1])
        elif isinstance(n, ast.Import):
            for a in n.names:
                parts = a.name.split(".")
                if parts[0] == "lora_lite": face |= len(parts) == 1; out |= {parts[1]} if len(parts) > 1 else set()
    return out, face


def test_import_floors():
    floor = {m: i for i, ms in enumerate(FLOORS) for m in ms}
    for f in (ROOT / "lora_lite").rglob("*.py"):
        rel = f.relative_to(ROOT / "lora_lite").parts
        if rel[-1] in ("_modidx.py",) or rel == ("__init__.py",): continue
        me = rel[0].removesuffix(".py")
        mods, face = _package_imports(f)
        if me != "bench": assert not face, f"{'/'.join(rel)} imports the package face (lora_lite/__init__)"
        for m in mods - {"_modidx"}:
            ok = floor[m] < floor[me] or m in ALLOWED_SAME_FLOOR.get(me, set()) or m == me
            assert ok, f"{'/'.join(rel)} imports lora_lite.{m}: {me} (floor {floor[me]}) may only import lower floors"
        if me == "variants": assert not mods & RUNTIME, f"{'/'.join(rel)} (a method) imports the runtime: {sorted(mods & RUNTIME)}"
    assert set(floor) - {"variants", "bench"} == {f.stem for f in (ROOT / "lora_lite").glob("*.py")} - {"__init__", "_modidx"}, \
        "a module of lora_lite has no floor in FLOORS (or a floor names no module)"
    # the benchmark never imports the test helpers
    for f in (ROOT / "lora_lite" / "bench").glob("*.py"):
        assert "checks" not in _package_imports(f)[0], f"{f.name} imports lora_lite.checks"


def test_every_variant_has_a_notebook_and_config():
    nbs = {p.stem.split("_", 1)[1] for p in (ROOT / "nbs").glob("[0-9]*.ipynb")}
    for name, V in ll.VARIANTS.items():
        assert name in nbs, f"variant {name} has no notebook nbs/NN_{name}.ipynb"
        assert issubclass(V.config_cls, ll.AdapterConfig) and V.config_cls.variant == name
        assert type(ll.get_config(name)) is V.config_cls


def test_variant_notebooks_have_math_code_and_checks():
    import json
    for name, V in ll.VARIANTS.items():
        nb = next((ROOT / "nbs").glob(f"[0-9]*_{name}.ipynb"))
        cells = json.loads(nb.read_text())["cells"]
        src = lambda kind: ["".join(c["source"]) for c in cells if c["cell_type"] == kind]
        assert any("$$" in s for s in src("markdown")), f"{nb.name}: no display math"
        assert any(s.startswith("#| export") for s in src("code")), f"{nb.name}: no exported code"
        assert any("check_variant(" in s for s in src("code")), f"{nb.name}: does not run the standard checks"
        assert all(c.get("outputs") is not None for c in cells if c["cell_type"] == "code")
        assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{nb.name}: committed without outputs"


def test_the_package_face_has_configs_and_variants_not_their_internals():
    "lora_lite.variants puts only each module's config and Variant classes on the face (no `skew`, `lokr_plan`, ...)."
    import lora_lite.variants as v
    want = {c.__name__ for V in ll.VARIANTS.values() for c in (V, V.config_cls)}
    assert want <= set(v.__all__)
    assert all(issubclass(getattr(ll, n), (ll.AdapterConfig, ll.Variant)) for n in v.__all__)
    for mod in {V.__module__ for V in ll.VARIANTS.values()}:
        import importlib
        m = importlib.import_module(mod)
        internals = [n for n in m.__all__ if n not in v.__all__]
        assert not any(hasattr(ll, n) and getattr(ll, n) is getattr(m, n) for n in internals), f"{mod} leaks {internals}"


def test_a_name_clash_between_variant_modules_is_an_error(tmp_path, monkeypatch):
    "Two variant modules defining the same config class name: importing the variants package fails and names both."
    pkg = tmp_path / "clashpkg"; (pkg / "variants").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("from lora_lite.core import AdapterConfig, Variant\n")
    (pkg / "variants" / "__init__.py").write_text((ROOT / "lora_lite" / "variants" / "__init__.py").read_text())
    for m in ("alpha", "beta"):
        (pkg / "variants" / f"{m}.py").write_text("from ..core import AdapterConfig\n__all__ = ['SameConfig']\n"
                                                  "class SameConfig(AdapterConfig): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"SameConfig is defined by both clashpkg\.variants\.alpha and clashpkg\.variants\.beta"):
        __import__("clashpkg.variants")
