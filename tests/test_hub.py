"""Adapters from the Hub, tested offline: files placed in a temporary HF_HUB_CACHE, HF_HUB_OFFLINE=1, in a subprocess
(huggingface_hub reads both variables when it is imported)."""
import os, subprocess, sys, textwrap
import pytest, torch
import lora_lite as ll
from conftest import tiny_qwen3, perturb_adapter, snapshot, assert_unchanged

pytest.importorskip("huggingface_hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache(root, repo, files: dict, revision="main"):
    "Lay out `files` {relative path: bytes} as huggingface_hub's cache of model repo `repo` at `revision`."
    d = root / f"models--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / revision).write_text(COMMIT)
    for rel, data in files.items():
        p = d / "snapshots" / COMMIT / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _run(code, cache):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_load_and_from_peft_from_cached_hub_repo(tmp_path):
    m = tiny_qwen3()
    ll.attach(m, ll.LoRAConfig(r=4)); perturb_adapter(m)
    f = ll.save(m, tmp_path / "adapter.safetensors"); ll.to_peft(m, tmp_path / "peft")
    ids = torch.arange(10)[None]
    with torch.no_grad(): torch.save(m(ids).logits, tmp_path / "y.pt")
    cache = tmp_path / "hub"
    _cache(cache, "someone/my-adapter", {"adapter.safetensors": f.read_bytes()})
    _cache(cache, "someone/my-peft", {f"sub/{n}": (tmp_path / "peft" / n).read_bytes()
                                      for n in ("adapter_config.json", "adapter_model.safetensors")}, revision="v1")
    out = _run(f"""
        import torch, lora_lite as ll
        from lora_lite.checks import tiny_qwen3
        y = torch.load({str(tmp_path / 'y.pt')!r}); ids = torch.arange(10)[None]
        a = tiny_qwen3(); ll.load(a, "someone/my-adapter")
        b = tiny_qwen3(); ll.from_peft(b, "someone/my-peft", revision="v1", subfolder="sub")
        with torch.no_grad(): print(torch.equal(a(ids).logits, y), (b(ids).logits - y).abs().max().item() < 1e-5)
        """, cache)
    assert out.split() == ["True", "True"]


def test_hub_offline_without_cache_is_a_clear_error(tmp_path):
    out = _run("""
        import lora_lite as ll
        from lora_lite.checks import tiny_qwen3
        from lora_lite.checks import snapshot, assert_unchanged
        m = tiny_qwen3(); snap = snapshot(m)
        for call in (lambda: ll.load(m, "someone/absent"), lambda: ll.from_peft(m, "someone/absent")):
            try: call()
            except FileNotFoundError as e: print("not in the local cache" in str(e))
        assert_unchanged(m, snap); print("unchanged")
        """, tmp_path / "empty")
    assert out.split() == ["True", "True", "unchanged"]


def test_local_paths_never_touch_the_hub(qwen, tmp_path):
    snap = snapshot(qwen)
    with pytest.raises(FileNotFoundError, match="no adapter file"): ll.load(qwen, tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"): ll.from_peft(qwen, tmp_path)
    assert_unchanged(qwen, snap)
