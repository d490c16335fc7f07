"""The guide's out-of-tree method, end to end, with nothing in the package edited: the method cell of nbs/80_guide.ipynb
is written to a file outside the package, imported, attached, trained, saved, loaded, exported to PEFT (PEFT loads it)
and run by the benchmark with --plugin. In subprocesses, so the test process's registry stays as it was."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def method_source() -> str:
    cells = json.loads((ROOT / "nbs" / "80_guide.ipynb").read_text())["cells"]
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and "class FrozenAConfig" in "".join(c["source"]))


def _run(args, cwd, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout


def test_out_of_tree_method_end_to_end(tmp_path):
    (tmp_path / "my_methods.py").write_text(method_source())
    out = _run([sys.executable, "-c", textwrap.dedent("""
        import copy, torch, lora_lite as ll
        import my_methods                                    # registers lora_frozen_a
        from lora_lite.checks import tiny_qwen3, check_variant
        from peft import PeftModel
        check_variant(ll.get_config("lora_frozen_a", r=4))
        torch.manual_seed(0)
        m, ids = tiny_qwen3(), torch.randint(0, 128, (2, 12)); base = copy.deepcopy(m)
        ll.attach(m, ll.get_config("lora_frozen_a", r=4, alpha=8))
        assert all(".ll_adapter.B" in n for n, p in m.named_parameters() if p.requires_grad)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(3): m(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
        with torch.no_grad(): y = m(ids).logits
        assert (y - base(ids).logits).abs().max() > 1e-4
        ll.save(m, "a.safetensors"); f = copy.deepcopy(base); ll.load(f, "a.safetensors")
        with torch.no_grad(): assert torch.equal(f(ids).logits, y)
        ll.to_peft(m, "peft"); pm = PeftModel.from_pretrained(copy.deepcopy(base), "peft")
        with torch.no_grad(): print("peft diff", (pm(ids).logits - y).abs().max().item())
        """)], cwd=tmp_path)
    assert float(out.split("peft diff")[1]) < 1e-5
    out = _run(["lora-lite-bench", "--plugin", str(tmp_path / "my_methods.py"), "--variant", "lora_frozen_a", "--steps", "3",
                "--max-eval-samples", "4", "--max-new-tokens", "8", "--out", str(tmp_path / "runs")], cwd=tmp_path)
    res = json.loads(next((tmp_path / "runs").rglob("result.json")).read_text())
    assert res["variant"] == "lora_frozen_a" and res["n_eval"] == 4
