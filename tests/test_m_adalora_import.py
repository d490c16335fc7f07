"""A trained PEFT AdaLoRA folder (ranks pruned by update_and_allocate, rank-0 modules included) imports as the LoRA it is:
ΔW = α/(init_r+1e-5)·B(E⊙A), PEFT 0.21.2's reloaded logits reproduced (max|diff| <= 1e-5), and it exports back as a LoRA."""
import copy, json, warnings
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from safetensors.torch import load_file, save_file
from conftest import snapshot, assert_unchanged, logits

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


def _trained_adalora(ids, path, steps=6, seed=0, **kw):
    "A PEFT AdaLoRA trained `steps` AdamW steps with update_and_allocate after each, saved to `path`; returns PEFT's reload."
    torch.manual_seed(seed)
    base = tiny_qwen3()
    fields = dict(init_r=8, target_r=2, tinit=1, tfinal=2, total_step=steps, lora_alpha=8, target_modules=QV) | kw
    pm = peft.get_peft_model(copy.deepcopy(base), peft.AdaLoraConfig(**fields))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=2e-2)
    pm.train()
    for step in range(steps):
        pm(ids, labels=ids).loss.backward(); opt.step(); pm.base_model.update_and_allocate(step); opt.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                   # PEFT warns on its own zero-sized rank-0 tensors
        pm.save_pretrained(path)
        ref = peft.PeftModel.from_pretrained(copy.deepcopy(base), path).eval()
    assert (logits(ref, ids) - logits(base, ids)).abs().max() > 1e-3, "the AdaLoRA adapter is (near) identity"
    return ref


def _kept(path):
    pc = json.loads((path / "adapter_config.json").read_text())
    return {n.removesuffix(".lora_E"): sum(m) for n, m in (pc["rank_pattern"] or {}).items()}


@pytest.mark.parametrize("kw", [dict(), dict(lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"]), dict(lora_alpha=0)],
                         ids=["default", "alpha32-3mods", "alpha0"])
def test_trained_adalora_imports_as_lora_exactly(ids, tmp_path, kw):
    ref = _trained_adalora(ids, tmp_path / "p", **kw)
    kept = _kept(tmp_path / "p")
    assert 0 in kept.values() and any(0 < k < 8 for k in kept.values()), f"want pruned and rank-0 modules, got {kept}"
    m = tiny_qwen3()
    cfg = ll.from_peft(m, tmp_path / "p")
    L = ll.adapter_layers(m)
    assert cfg.variant == "lora" and {n: l.r for n, l in L.items()} == {n: k for n, k in kept.items() if k}
    t = load_file(tmp_path / "p" / "adapter_model.safetensors")
    a = kw.get("lora_alpha", 8)
    for n, l in L.items():                                               # ΔW = α/(init_r+1e-5)·B(E⊙A), from the file
        g = lambda k: t[f"base_model.model.{n}.{k}"]
        s = (a if a > 0 else l.r) / (8 + 1e-5)
        torch.testing.assert_close(l.delta_weight(None), s * g("lora_B") @ (g("lora_E") * g("lora_A")), rtol=1e-5, atol=1e-7)
    d = (logits(m, ids) - logits(ref, ids)).abs().max().item()
    print(f"AdaLoRA {kw} kept ranks {sorted(kept.values())}: from_peft max|diff| vs PEFT {d:.2e}")
    assert d <= TOL
    ll.to_peft(m, tmp_path / "q")                                          # and out again, as a PEFT LoRA
    assert json.loads((tmp_path / "q" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    back = peft.PeftModel.from_pretrained(tiny_qwen3(), tmp_path / "q").eval()
    assert (logits(back, ids) - logits(m, ids)).abs().max() <= TOL


def test_unpruned_adalora_imports_at_full_rank(ids, tmp_path):
    "Saved before any budget step (no rank_pattern): every triplet kept, E⊙A still applies."
    ref = _trained_adalora(ids, tmp_path / "p", steps=3, tinit=10, tfinal=1, total_step=20)
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["rank_pattern"] is None
    m = tiny_qwen3(); ll.from_peft(m, tmp_path / "p")
    assert {l.r for l in ll.adapter_layers(m).values()} == {8}
    assert (logits(m, ids) - logits(ref, ids)).abs().max() <= TOL


def test_damaged_or_empty_adalora_is_refused_and_model_unchanged(ids, tmp_path):
    _trained_adalora(ids, tmp_path / "p")
    t = load_file(tmp_path / "p" / "adapter_model.safetensors")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    m = tiny_qwen3(); snap = snapshot(m)
    cases = {"no_E": ({k: v for k, v in t.items() if not k.endswith("v_proj.lora_E")}, pc, "lora_E' is missing"),
             "zero": ({k: v[:0] if k.endswith("lora_A") else v[:, :0] if k.endswith("lora_B") else v[:0] for k, v in t.items()}, pc, "rank 0"),
             "wide": ({k: torch.zeros(v.shape[0], 128) if k.endswith("lora_A") else v for k, v in t.items()}, pc, "another base model")}
    for name, (tensors, conf, phrase) in cases.items():
        d = tmp_path / name; d.mkdir()
        save_file({k: v.contiguous() for k, v in tensors.items()}, d / "adapter_model.safetensors")
        (d / "adapter_config.json").write_text(json.dumps(conf))
        with pytest.raises(ValueError, match=phrase): ll.from_peft(m, d)
        assert_unchanged(m, snap)
