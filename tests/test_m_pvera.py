"PEFT 0.21.2 is the oracle for PVeRA: to_peft/from_peft logits (the inference mean), projections, counts (and the published 121,856 / 143,360), training with the same ε."
import copy
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import logits, perturb_adapter, trainable, llama32_3b, to_peft_matches, from_peft_matches, assert_peft_round_trip, curves_match_peft

peft = pytest.importorskip("peft")
TOL = 1e-5


@pytest.mark.parametrize("save_projection", [True, False])
def test_to_peft_reproduces_our_logits(ids, tmp_path, save_projection):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    ll.attach(model, ll.PveraConfig(r=16, save_projection=save_projection, target_names=("q_proj", "v_proj", "down_proj")))
    perturb_adapter(model, std=0.3); model.eval()
    ours = logits(model, ids)
    assert (ours - logits(base, ids)).abs().max() > 1e-2, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"PVeRA save_projection={save_projection}")
    assert pc["peft_type"] == "PVERA" and pc["r"] == 16


@pytest.mark.parametrize("save_projection", [True, False])
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, save_projection):
    torch.manual_seed(0)
    pm = peft.get_peft_model(tiny_qwen3(), peft.PveraConfig(r=16, save_projection=save_projection,
                                                            target_modules=["q_proj", "v_proj", "down_proj"]))
    perturb_adapter(pm, std=0.3, seed=1)
    base, cfg = from_peft_matches(pm, tiny_qwen3, ids, tmp_path / "p", f"PVeRA save_projection={save_projection}")
    assert isinstance(cfg, ll.PveraConfig) and cfg.r == 16
    sh = next(iter(ll.adapter_layers(base).values())).shared
    assert torch.equal(sh.A, pm.base_model.pvera_A["default"]) and torch.equal(sh.B, pm.base_model.pvera_B["default"])
    assert_peft_round_trip(base, tiny_qwen3, ids, tmp_path / "q")


@pytest.mark.parametrize("r,published", [(64, 121_856), (256, 143_360)])
def test_trainable_count_equals_peft_and_published(r, published):
    "PEFT's pvera/llama-3.2-3B-rank64 and -default result files (q_proj, v_proj: PEFT's default targets for Llama)."
    ours = llama32_3b(); ll.attach(ours, ll.PveraConfig(r=r))
    pm = peft.get_peft_model(llama32_3b(), peft.PveraConfig(r=r))
    print(f"PVeRA r={r} trainable on Llama-3.2-3B: ours {trainable(ours):,} PEFT {trainable(pm):,}")
    assert trainable(ours) == trainable(pm) == published


def test_training_equals_peft(ids):
    "Five AdamW steps from the same init with the same global-RNG ε (sampled code): the same losses, then the same eval logits."
    base = tiny_qwen3(hidden=128)
    ours = copy.deepcopy(base); ll.attach(ours, ll.PveraConfig(r=16))
    torch.manual_seed(0); theirs = peft.get_peft_model(copy.deepcopy(base), peft.PveraConfig(r=16, target_modules=["q_proj", "v_proj"]))
    a, b = curves_match_peft(ours, theirs, ids, "PVeRA", rtol=1e-6, falls=False, seed=123)   # 5 AdamW steps each
    assert (a - logits(base, ids)).abs().max() > 1e-3, "training did not move the adapter"
    assert (a - b).abs().max() <= TOL
