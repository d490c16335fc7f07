"PEFT 0.21.2 is the oracle for MiCA (LoraConfig(init_lora_weights='mica')): init, to_peft/from_peft, counts, training."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import perturb_adapter, train_steps, logits, structured_qwen3, same_batches, snapshot, assert_unchanged, trainable, llama32_3b
from realistic import train_curve

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


def peft_mica(model, r=4, alpha=8, **kw):
    return peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=QV, init_lora_weights="mica", **kw))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_init_equals_peft(dtype):
    "The same SVD: our frozen B is PEFT's lora_B bit for bit (bf16 base: both rounded to bf16), A = 0 in both."
    m = tiny_qwen3().to(dtype); ll.attach(m, ll.MiCAConfig(r=4, alpha=8))
    pm = peft_mica(tiny_qwen3().to(dtype))
    for n, l in ll.adapter_layers(m).items():
        t = pm.base_model.model.get_submodule(n)
        assert torch.equal(l.B, t.lora_B["default"].weight.float()), n
        assert not t.lora_B["default"].weight.requires_grad and t.lora_A["default"].weight.requires_grad
        assert l.A.abs().max() == 0 and t.lora_A["default"].weight.abs().max() == 0


def test_to_peft_reproduces_our_logits_and_peft_trains_only_A(ids, tmp_path):
    base = tiny_qwen3(); m = copy.deepcopy(base)
    y0 = logits(m, ids)
    ll.attach(m, ll.MiCAConfig(r=4, alpha=8, rank_pattern={"v_proj": 2}))
    train_steps(m, ids)
    ours = logits(m, ids)
    assert (ours - y0).abs().max() > 1e-2
    ll.to_peft(m, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["init_lora_weights"] == "mica" and pc["peft_type"] == "LORA"
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p", is_trainable=True)
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"mica to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    assert theirs == sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_from_peft_imports_as_mica(ids, tmp_path):
    pm = peft_mica(tiny_qwen3(), r=8, alpha=16)
    perturb_adapter(pm, std=0.1)                                   # PEFT's trainable tensors: lora_A only
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-2
    m = tiny_qwen3(); cfg = ll.from_peft(m, tmp_path / "p")
    assert isinstance(cfg, ll.MiCAConfig)
    d = (logits(m, ids) - theirs).abs().max().item()
    print(f"mica from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    assert all(n.endswith(".A") for n, p in m.named_parameters() if p.requires_grad)   # B frozen, as PEFT trains it
    ll.to_peft(m, tmp_path / "q"); fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    assert torch.equal(logits(fresh, ids), logits(m, ids))


def test_plain_lora_folder_still_imports_as_lora(tmp_path):
    pm = peft.get_peft_model(tiny_qwen3(), peft.LoraConfig(r=4, target_modules=QV)); pm.save_pretrained(tmp_path / "p")
    assert type(ll.from_peft(tiny_qwen3(), tmp_path / "p")) is ll.LoRAConfig


def test_trainable_count_llama_3b_equals_peft_published():
    "PEFT's experiment lora/llama-3.2-3B-rank32-mica (r=32, alpha=64, q/v): published num_trainable_params 5,505,024."
    m = llama32_3b(); ll.attach(m, ll.get_config("mica", **{k: v for k, v in ll.VARIANTS["mica"].bench.items() if k != "lr"}))
    pm = peft.get_peft_model(llama32_3b(), peft.LoraConfig(r=32, lora_alpha=64, init_lora_weights="mica"), low_cpu_mem_usage=True)
    assert trainable(m) == trainable(pm) == 5_505_024


def test_rank_too_large_leaves_model_unchanged():
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="use r <= 32"): ll.attach(m, ll.MiCAConfig(r=48))   # v_proj is 64 -> 32
    assert_unchanged(m, snap)


def test_trains_like_peft_on_structured_weights():
    """Side by side from the same base (power-law spectra, as trained weights have): the same SVD gives the same
    frozen B, A starts at 0 in both, so with the same batches and AdamW the two runs are the same run up to fp32 rounding."""
    base = structured_qwen3()
    m = copy.deepcopy(base); ll.attach(m, ll.MiCAConfig(r=8, alpha=16))
    pm = peft_mica(copy.deepcopy(base), r=8, alpha=16)
    runs = [train_curve(model, same_batches(), lr=2e-3, weight_decay=0.01) for model in (m, pm)]   # AdamW's default decay
    ids = same_batches(1, seed=9)[0]
    d = (logits(m, ids) - logits(pm, ids)).abs().max().item()
    moved = (logits(m, ids) - logits(base, ids)).abs().max().item()
    print(f"mica vs PEFT after 6 AdamW steps: max|Δlogits| {d:.1e} (training moved them {moved:.1e}); losses {runs[0][-1]:.6f} / {runs[1][-1]:.6f}")
    assert moved > 1e-2 and d <= 1e-4 * moved
    assert max(abs(a - b) for a, b in zip(*runs)) <= 1e-5
