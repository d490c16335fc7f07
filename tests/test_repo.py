"Project-shape rules: README commands, CI entry, module sizes, the core never importing a variant."
import ast, re
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


def test_variant_modules_are_small():
    for f in (ROOT / "lora_lite" / "variants").glob("*.py"):
        if f.name != "__init__.py":
            n = len(f.read_text().splitlines())
            assert n <= 150, f"{f.name} has {n} lines (> 150)"


def test_core_never_imports_a_variant():
    for name in ["core", "attach", "calibrate", "checks"]:
        tree = ast.parse((ROOT / "lora_lite" / f"{name}.py").read_text())
        mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any("variants" in m for m in mods), f"lora_lite/{name}.py imports a variant"


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
