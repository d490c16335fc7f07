#!/usr/bin/env bash
# Build sdist + wheel, twine-check them, check the wheel's contents, install the wheel into a fresh venv with only
# torch + safetensors, and run the README quickstart there (outside the repo: no nbdev, no source tree).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
# the tools this needs come with the dev extra (settings.ini dev_requirements); say so instead of a bare ModuleNotFoundError
for mod in build twine venv; do
  $PY -c "import $mod" 2>/dev/null || { echo "make wheel needs the '$mod' module: pip install -e \".[dev]\""; exit 1; }
done
rm -rf dist build
$PY -m build -q . >/dev/null
$PY -m twine check dist/*
$PY - <<'PYEOF'
import zipfile, glob
whl = glob.glob("dist/*.whl")[0]
names = zipfile.ZipFile(whl).namelist()
bad = [n for n in names if n.endswith(".ipynb") or n.startswith(("tests/", "nbs/"))]
assert not bad, f"wheel ships notebooks/tests: {bad[:5]}"
for need in ["lora_lite/__init__.py", "lora_lite/core.py", "lora_lite/variants/lora.py", "lora_lite/data/synth_gsm8k_train.jsonl"]:
    assert need in names, f"wheel lacks {need}"
print(f"wheel contents ok: {len(names)} files, no notebooks or tests")
PYEOF
tmp=$(mktemp -d)
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q torch==2.13.0
"$tmp/venv/bin/pip" install -q dist/*.whl
"$tmp/venv/bin/pip" list 2>/dev/null | grep -iE "^(transformers|nbdev|peft|bitsandbytes) " && { echo "the runtime install pulled in a dev/bench dependency"; exit 1; } || true
cd "$tmp"
"$tmp/venv/bin/python" - "$OLDPWD/README.md" <<'PYEOF'
import re, sys, torch
from torch import nn
readme = open(sys.argv[1]).read()
code = re.search(r"## Quickstart.*?```python\n(.*?)```", readme, re.S).group(1)
env = {}
if "MyTransformer" in code:   # the README's stand-in model: define it (once the README builds a real toy model, it runs verbatim)
    class MyTransformer(nn.Module):
        def __init__(self, d=32):
            super().__init__()
            self.q_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d)
        def forward(self, x): return self.q_proj(x) * self.v_proj(x)
    env["MyTransformer"] = MyTransformer
exec(code, env)
import lora_lite as ll
print(f"README quickstart ran from the installed wheel (lora_lite {ll.__version__}, variants: {len(ll.VARIANTS)})")
PYEOF
rm -rf "$tmp"
