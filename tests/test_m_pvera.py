"PEFT 0.21.2 is the oracle for PVeRA: to_peft/from_peft logits (the inference mean), projections, counts (and the published 121,856 / 143,360), training with the same ε."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import logits
from realistic import curves

peft = pytest.importorskip("peft")
TOL = 1e-5


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.add_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("save_projection", [True, False])
def test_to_peft_reproduces_our_logits(ids, tmp_path, save_projection):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    ll.attach(model, ll.PveraConfig(r=16, save_projection=save_projection, target_names=("q_proj", "v_proj", "down_proj")))
    _perturb(model); model.eval()
    ours = logits(model, ids)
    assert (ours - logits(base, ids)).abs().max() > 1e-2, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "PVERA" and pc["r"] == 16
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    d = (ours - logits(pm, ids)).abs().max().item()
    print(f"PVeRA save_projection={save_projection} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("save_projection", [True, False])
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, save_projection):
    torch.manual_seed(0)
    pm = peft.get_peft_model(tiny_qwen3(), peft.PveraConfig(r=16, save_projection=save_projection,
                                                            target_modules=["q_proj", "v_proj", "down_proj"]))
    _perturb(pm, 1)
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-2, "PEFT's adapter is (near) identity"
    base = tiny_qwen3()
    cfg = ll.from_peft(base, tmp_path / "p")
    assert isinstance(cfg, ll.PveraConfig) and cfg.r == 16
    sh = next(iter(ll.adapter_layers(base).values())).shared
    assert torch.equal(sh.A, pm.base_model.pvera_A["default"]) and torch.equal(sh.B, pm.base_model.pvera_B["default"])
    base.eval(); ours = logits(base, ids)
    d = (ours - theirs).abs().max().item()
    print(f"PVeRA save_projection={save_projection} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    assert torch.equal(logits(fresh.eval(), ids), ours)


def _llama_3b(n_layers=28):
    from transformers import LlamaConfig, LlamaForCausalLM
    c = LlamaConfig(vocab_size=32, hidden_size=3072, intermediate_size=8192, num_hidden_layers=n_layers, num_attention_heads=24,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device("meta"): return LlamaForCausalLM(c)


def _trainable(m): return sum(p.numel() for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("r,published", [(64, 121_856), (256, 143_360)])
def test_trainable_count_equals_peft_and_published(r, published):
    "PEFT's pvera/llama-3.2-3B-rank64 and -default result files (q_proj, v_proj: PEFT's default targets for Llama)."
    ours = _llama_3b(); ll.attach(ours, ll.PveraConfig(r=r))
    pm = peft.get_peft_model(_llama_3b(), peft.PveraConfig(r=r))
    print(f"PVeRA r={r} trainable on Llama-3.2-3B: ours {_trainable(ours):,} PEFT {_trainable(pm):,}")
    assert _trainable(ours) == _trainable(pm) == published


def test_training_equals_peft(ids):
    "Five AdamW steps from the same init with the same global-RNG ε (sampled code): the same losses, then the same eval logits."
    base = tiny_qwen3(hidden=128)
    ours = copy.deepcopy(base); ll.attach(ours, ll.PveraConfig(r=16))
    torch.manual_seed(0); theirs = peft.get_peft_model(copy.deepcopy(base), peft.PveraConfig(r=16, target_modules=["q_proj", "v_proj"]))
    losses = curves((ours, theirs), ids, seed=123)   # 5 AdamW steps each
    print(f"PVeRA training losses: ours {losses[0].tolist()} PEFT {losses[1].tolist()}")
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=0)
    a, b = logits(ours.eval(), ids), logits(theirs.eval(), ids)
    assert (a - logits(base, ids)).abs().max() > 1e-3, "training did not move the adapter"
    assert (a - b).abs().max() <= TOL
