"""Per-layer ranks and scales (PEFT's rank_pattern / alpha_pattern semantics): saved in the adapter file, exported to
PEFT's patterns, imported from them; EVA's redistributed ranks use the same mechanism."""
import copy
import pytest, torch
import lora_lite as ll
from conftest import tiny_qwen3, perturb_adapter, token_batches

peft = pytest.importorskip("peft")
RP, AP = {r"layers\.0\.self_attn\.q_proj": 8, "v_proj": 2}, {"v_proj": 32.0}


def logits(m, ids):
    with torch.no_grad(): return m(ids).logits


@pytest.mark.parametrize("variant", ["lora", "dora", "pissa", "delora"])
def test_patterns_set_ranks_and_scales(variant, ids, tmp_path):
    m = tiny_qwen3()
    extra = {} if variant == "delora" else dict(alpha_pattern=AP)
    ll.attach(m, ll.get_config(variant, r=4, alpha=8, rank_pattern=RP, **extra))
    L = ll.adapter_layers(m)
    assert L["model.layers.0.self_attn.q_proj"].r == 8 and L["model.layers.1.self_attn.q_proj"].r == 4
    assert all(l.r == 2 for n, l in L.items() if "v_proj" in n)
    if variant in ("lora", "dora", "pissa"): assert L["model.layers.0.self_attn.v_proj"].scale == 32.0 / 2
    perturb_adapter(m); y = logits(m, ids)
    f = ll.save(m, tmp_path / "a.safetensors")
    m2 = tiny_qwen3(); cfg = ll.load(m2, f)
    assert cfg.rank_pattern == RP and torch.equal(logits(m2, ids), y)


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_patterns_round_trip_through_peft(variant, ids, tmp_path):
    m = tiny_qwen3(); base = copy.deepcopy(m)
    ll.attach(m, ll.get_config(variant, r=4, alpha=8, rank_pattern=RP, alpha_pattern=AP)); perturb_adapter(m)
    y = logits(m, ids)
    d = ll.to_peft(m, tmp_path / "p")
    pm = peft.PeftModel.from_pretrained(copy.deepcopy(base), d)
    assert (logits(pm, ids) - y).abs().max() < 1e-5
    m3 = copy.deepcopy(base); ll.from_peft(m3, d)
    assert (logits(m3, ids) - y).abs().max() < 1e-6


def test_peft_made_patterns_import(ids, tmp_path):
    base = tiny_qwen3()
    pc = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], rank_pattern={"q_proj": 6},
                         alpha_pattern={"model.layers.1.self_attn.v_proj": 3.0}, init_lora_weights=False)
    pm = peft.get_peft_model(copy.deepcopy(base), pc); pm.save_pretrained(tmp_path / "p")
    y = logits(pm, ids)
    m = copy.deepcopy(base); cfg = ll.from_peft(m, tmp_path / "p")
    assert cfg.rank_pattern == {"q_proj": 6}
    assert ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"].r == 6
    assert (logits(m, ids) - y).abs().max() < 1e-5


def test_eva_redistributed_ranks_are_a_rank_pattern(ids, tmp_path):
    m = tiny_qwen3()
    ll.attach(m, ll.EVAConfig(r=4, rho=2.0, target_names=("proj",)), calibration_data=token_batches())
    cfg = ll.adapter_config(m)
    ranks = {n: l.r for n, l in ll.adapter_layers(m).items()}
    assert len(set(ranks.values())) > 1, "rho=2 should redistribute ranks on this model"
    assert all(cfg.rank_for(n) == r for n, r in ranks.items())
    perturb_adapter(m); y = logits(m, ids)
    m2 = tiny_qwen3(); ll.load(m2, ll.save(m, tmp_path / "a.safetensors"))
    assert torch.equal(logits(m2, ids), y)


def test_bad_patterns():
    with pytest.raises(ValueError, match="rank_pattern"): ll.LoRAConfig(rank_pattern={"q": -1})
    with pytest.raises(ValueError, match="not a valid regex"): ll.LoRAConfig(rank_pattern={"(": 2})
    with pytest.raises(ValueError, match="alpha_pattern"): ll.LoRAConfig(alpha_pattern={"q": float("inf")})
