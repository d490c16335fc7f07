"PEFT 0.21.2 is the oracle for VB-LoRA: to_peft/from_peft logits (full logits and top-k files), the shared bank, counts (and the published 1,212,416), training."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import logits
from realistic import curves

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
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "VBLORA" and pc["save_only_topk_weights"] == topk_only
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    d = (ours - logits(pm, ids)).abs().max().item()
    print(f"VB-LoRA topk_only={topk_only} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("topk_only", [False, True])
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, topk_only):
    torch.manual_seed(0)
    pm = peft.get_peft_model(tiny_qwen3(), peft.VBLoRAConfig(**SMALL, save_only_topk_weights=topk_only, target_modules=TARGETS))
    _perturb(pm, 1)
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-2, "PEFT's adapter is (near) identity"
    base = tiny_qwen3()
    cfg = ll.from_peft(base, tmp_path / "p")
    assert isinstance(cfg, ll.VBLoRAConfig) and cfg.save_only_topk_weights == topk_only
    sh = next(iter(ll.adapter_layers(base).values())).shared
    assert torch.equal(sh.bank, pm.base_model.vblora_vector_bank["default"])
    ours = logits(base, ids)
    d = (ours - theirs).abs().max().item()
    print(f"VB-LoRA topk_only={topk_only} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    assert (logits(fresh, ids) - ours).abs().max() <= TOL


def _llama_3b(n_layers=28):
    from transformers import LlamaConfig, LlamaForCausalLM
    c = LlamaConfig(vocab_size=32, hidden_size=3072, intermediate_size=8192, num_hidden_layers=n_layers, num_attention_heads=24,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device("meta"): return LlamaForCausalLM(c)


def _trainable(m): return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_trainable_count_equals_peft_and_published():
    "PEFT's vblora/llama-3.2-3B-default result file: 1,212,416 (q_proj, v_proj; the bank counted once)."
    ours = _llama_3b(); ll.attach(ours, ll.VBLoRAConfig(target_names=("q_proj", "v_proj")))
    pm = peft.get_peft_model(_llama_3b(), peft.VBLoRAConfig(target_modules=["v_proj", "q_proj"]))
    print(f"VB-LoRA trainable on Llama-3.2-3B: ours {_trainable(ours):,} PEFT {_trainable(pm):,}")
    assert _trainable(ours) == _trainable(pm) == 1_212_416


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
    losses = curves((ours, theirs), ids)   # 5 AdamW steps each
    print(f"VB-LoRA training losses: ours {losses[0].tolist()} PEFT {losses[1].tolist()}")
    assert _trainable(ours) == _trainable(theirs)
    assert losses[0][-1] < losses[0][0] - 1e-3
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=0)
    bank = next(iter(ll.adapter_layers(ours).values())).shared.bank
    assert (bank - bank0).abs().max() > 1e-4
    a, b = logits(ours.eval(), ids), logits(theirs.eval(), ids)
    assert (a - b).abs().max() <= TOL
