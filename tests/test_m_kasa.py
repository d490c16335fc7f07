"PEFT 0.21.2 is the oracle for KaSA (LoraConfig(kasa_config=...)): to_peft/from_peft, counts, regulariser, training."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from lora_lite.variants.kasa import kasa_loss
from conftest import perturb_adapter, train_steps, logits, structured_qwen3, same_batches, trainable, llama32_3b, assert_attach_refused

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


def peft_kasa(model, r=4, alpha=8, beta=1e-4, gamma=1e-3, **kw):
    kc = peft.tuners.lora.KasaConfig(beta=beta, gamma=gamma)
    return peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=QV, kasa_config=kc, **kw))


def test_to_peft_reproduces_our_logits(ids, tmp_path):
    base = tiny_qwen3(); m = copy.deepcopy(base)
    ll.attach(m, ll.KaSAConfig(r=4, alpha=8, beta=2e-4, rank_pattern={"v_proj": 2}))
    train_steps(m, ids)
    ours = logits(m, ids)
    ll.to_peft(m, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["kasa_config"] == {"beta": 2e-4, "gamma": 1e-3} and pc["rank_pattern"]
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p", is_trainable=True)     # PEFT truncates the base again
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"kasa to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    assert sum(p.numel() for p in pm.parameters() if p.requires_grad) == sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_from_peft_imports_as_kasa_and_regulariser_equals_peft(ids, tmp_path):
    pm = peft_kasa(tiny_qwen3(), r=8, alpha=16, beta=1e-2, gamma=1e-1)
    perturb_adapter(pm, std=0.1)                                   # B (and A, d) off their init
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    theirs = logits(pm, ids)
    m = tiny_qwen3(); base_logits = logits(m, ids)
    cfg = ll.from_peft(m, tmp_path / "p")
    assert isinstance(cfg, ll.KaSAConfig) and (cfg.beta, cfg.gamma) == (1e-2, 1e-1)
    d = (logits(m, ids) - theirs).abs().max().item()
    print(f"kasa from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL and (theirs - base_logits).abs().max() > 1e-2
    for n, l in ll.adapter_layers(m).items():                      # our frozen dropped part = what PEFT cut from W
        cut = m.get_submodule(n).weight - pm.base_model.model.get_submodule(n).base_layer.weight
        torch.testing.assert_close(l.US @ l.Vh, cut.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(kasa_loss(m), pm.base_model._get_kasa_loss(), atol=1e-6, rtol=1e-6)
    ll.detach(m); assert torch.equal(logits(m, ids), base_logits)  # the base was never written


def test_trainable_count_llama_3b_equals_peft():
    "PEFT's experiment lora/llama-3.2-3B-rank32-kasa (r=32, alpha=64, q/v): r(d_in+d_out+1) per layer = 9,176,832."
    m = llama32_3b(); ll.attach(m, ll.get_config("kasa", **{k: v for k, v in ll.VARIANTS["kasa"].bench.items() if k != "lr"}))
    with torch.device("meta"): pm = peft.get_peft_model(llama32_3b(), peft.LoraConfig(
        r=32, lora_alpha=64, kasa_config=peft.tuners.lora.KasaConfig()), low_cpu_mem_usage=True)
    assert trainable(m) == trainable(pm) == 9_176_832


def test_rank_that_drops_everything_is_refused_and_model_unchanged():
    assert_attach_refused(ll.KaSAConfig(r=32), "use r < 32", "v_proj")   # v_proj is 64 -> 32


def test_trains_like_peft_on_structured_weights():
    """Side by side from the same base (power-law spectra, as trained weights have) with PEFT's random init copied
    (A, d; B = 0): PEFT's truncated weight vs our subtracted buffers differ by fp32 rounding only, so the runs agree."""
    base = structured_qwen3()
    pm = peft_kasa(copy.deepcopy(base), r=8, alpha=16)
    m = copy.deepcopy(base); ll.attach(m, ll.KaSAConfig(r=8, alpha=16))
    with torch.no_grad():
        for n, l in ll.adapter_layers(m).items():
            t = pm.base_model.model.get_submodule(n)
            l.A.copy_(t.lora_A["default"].weight); l.d.copy_(t.lora_diag["default"]); assert l.B.abs().max() == 0
    ids = same_batches(1, seed=9)[0]
    d0 = (logits(m, ids) - logits(pm, ids)).abs().max().item()
    moved0 = (logits(m, ids) - logits(base, ids)).abs().max().item()
    runs = []
    for model in (m, pm):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
        model.train(); losses = []
        for b in same_batches():
            loss = model(input_ids=b, labels=b).loss
            loss = loss + (kasa_loss(model) if model is m else model.base_model._get_kasa_loss())   # with the regulariser
            loss.backward(); opt.step(); opt.zero_grad(); losses.append(loss.item())
        runs.append(losses); model.eval()
    d = (logits(m, ids) - logits(pm, ids)).abs().max().item()
    moved = (logits(m, ids) - logits(base, ids)).abs().max().item()
    print(f"kasa vs PEFT: init max|Δlogits| {d0:.1e} (truncation moved them {moved0:.1e}); after 6 AdamW steps {d:.1e} "
          f"(moved {moved:.1e}); final losses {runs[0][-1]:.6f} / {runs[1][-1]:.6f}")
    assert d0 <= TOL and moved > moved0 and d <= 1e-4 * moved
    assert max(abs(a - b) for a, b in zip(*runs)) <= 1e-5
