"PEFT 0.21.2 is the oracle for VB-LoRA: to_peft/from_peft logits (full logits and top-k files), the shared bank, counts (and the published 1,212,416), training."
import copy
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import logits, trainable, llama32_3b, to_peft_matches, from_peft_matches, curves_match_peft

peft = pytest.importorskip("peft")
TOL = 1e-5
SMALL = dict(r=4, num_vectors=32, vector_length=16)
TARGETS = ["q_proj", "v_proj", "down_proj"]


def _perturb(model, seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad: p.add_((0.02 if "bank" in n else std) * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("topk_only", [False, True])
def test_to_peft_reproduces_our_logits(ids, tmp_path, topk_only):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    ll.attach(model, ll.VBLoRAConfig(**SMALL, save_only_topk_weights=topk_only, target_names=TARGETS))
    _perturb(model)
    ours = logits(model, ids)
    assert (ours - logits(base, ids)).abs().max() > 1e-2, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"VB-LoRA topk_only={topk_only}")
    assert pc["peft_type"] == "VBLORA" and pc["save_only_topk_weights"] == topk_only


@pytest.mark.parametrize("topk_only", [False, True])
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, topk_only):
    torch.manual_seed(0)
    pm = peft.get_peft_model(tiny_qwen3(), peft.VBLoRAConfig(**SMALL, save_only_topk_weights=topk_only, target_modules=TARGETS))
    _perturb(pm, 1)
    base, cfg = from_peft_matches(pm, tiny_qwen3, ids, tmp_path / "p", f"VB-LoRA topk_only={topk_only}")
    assert isinstance(cfg, ll.VBLoRAConfig) and cfg.save_only_topk_weights == topk_only
    sh = next(iter(ll.adapter_layers(base).values())).shared
    assert torch.equal(sh.bank, pm.base_model.vblora_vector_bank["default"])
    ours = logits(base, ids)
    ll.to_peft(base, tmp_path / "q")
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    assert (logits(fresh, ids) - ours).abs().max() <= TOL


def test_trainable_count_equals_peft_and_published():
    "PEFT's vblora/llama-3.2-3B-default result file: 1,212,416 (q_proj, v_proj; the bank counted once)."
    ours = llama32_3b(); ll.attach(ours, ll.VBLoRAConfig(target_names=("q_proj", "v_proj")))
    pm = peft.get_peft_model(llama32_3b(), peft.VBLoRAConfig(target_modules=["v_proj", "q_proj"]))
    print(f"VB-LoRA trainable on Llama-3.2-3B: ours {trainable(ours):,} PEFT {trainable(pm):,}")
    assert trainable(ours) == trainable(pm) == 1_212_416


def test_wrong_width_is_refused_and_model_unchanged():
    m = tiny_qwen3(); before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="multiples of vector_length=48"): ll.attach(m, ll.VBLoRAConfig(vector_length=48))
    assert m.state_dict().keys() == before.keys() and all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_training_equals_peft(ids, tmp_path):
    "Five AdamW steps from PEFT's init (imported): the same losses and logits; the bank and the logits both move."
    base = tiny_qwen3(hidden=128)
    torch.manual_seed(0)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.VBLoRAConfig(**SMALL, target_modules=["q_proj", "v_proj"]))
    theirs.save_pretrained(tmp_path / "p")
    ours = copy.deepcopy(base); ll.from_peft(ours, tmp_path / "p")
    bank0 = theirs.base_model.vblora_vector_bank["default"].detach().clone()
    assert trainable(ours) == trainable(theirs)
    a, b = curves_match_peft(ours, theirs, ids, "VB-LoRA")   # 5 AdamW steps each
    bank = next(iter(ll.adapter_layers(ours).values())).shared.bank
    assert (bank - bank0).abs().max() > 1e-4
    assert (a - b).abs().max() <= TOL
