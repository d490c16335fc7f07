"PEFT 0.21.2 is the oracle for AdaMSS (AdamssConfig): same groups and init, to_peft/from_peft, counts, training, no-sklearn load."
import copy, json, sys
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import perturb_adapter, train_steps, logits, structured_qwen3, same_batches, snapshot, assert_unchanged
from realistic import train_curve

peft = pytest.importorskip("peft")
pytest.importorskip("sklearn")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


def peft_adamss(model, **kw):
    return peft.get_peft_model(model, peft.AdamssConfig(**{"r": 16, "num_subspaces": 4, "target_modules": QV, **kw}))


def trainable(m): return sum(p.numel() for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("bias", [False, True])
def test_same_groups_and_init_as_peft(bias):
    "From the same base and global seed: PEFT's k-means groups (scatter_index), A, newB, and (init_weights=None) random B."
    torch.manual_seed(3); pm = peft_adamss(tiny_qwen3(attention_bias=bias), init_weights=None)
    torch.manual_seed(3); m = tiny_qwen3(attention_bias=bias); ll.attach(m, ll.AdamssConfig(r=16, num_subspaces=4, init_weights=None))
    for n, l in ll.adapter_layers(m).items():
        t = pm.base_model.model.get_submodule(n)
        assert torch.equal(l.order(), t.scatter_index["default"])
        assert torch.bincount(l.g).tolist() == [len(b) for b in t.adamss_B["default"]]
        torch.testing.assert_close(l.A, torch.stack(list(t.adamss_A["default"])), atol=1e-6, rtol=0)
        torch.testing.assert_close(l.B, torch.cat(list(t.adamss_B["default"])), atol=1e-7, rtol=0)
        newB = t.adamss_newB["default"]
        torch.testing.assert_close(l.V, newB[:, :l.d_in], atol=1e-6, rtol=0)
        if bias: torch.testing.assert_close(l.c, newB[:, -1], atol=1e-6, rtol=0)
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(1))
    d = (logits(m, ids) - logits(pm, ids)).abs().max().item()
    print(f"adamss init_weights=None (bias={bias}) max|Δlogits| vs PEFT: {d:.1e}")
    assert d <= TOL


def test_to_peft_reproduces_our_logits(ids, tmp_path):
    base = tiny_qwen3(attention_bias=True); m = copy.deepcopy(base)
    ll.attach(m, ll.AdamssConfig(r=16, num_subspaces=4))
    train_steps(m, ids)
    ours = logits(m, ids)
    ll.to_peft(m, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "ADAMSS" and (pc["r"], pc["num_subspaces"], pc["subspace_rank"]) == (16, 4, 1)
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p", is_trainable=True)    # PEFT re-clusters at load
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"adamss to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL and (ours - logits(tiny_qwen3(attention_bias=True), ids)).abs().max() > 1e-3
    assert trainable(pm) == trainable(m)


def test_from_peft_reproduces_peft_logits(ids, tmp_path):
    pm = peft_adamss(tiny_qwen3(), num_subspaces=6)
    perturb_adapter(pm, std=0.1)
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    theirs = logits(pm, ids)
    m = tiny_qwen3(); base_logits = logits(m, ids)
    cfg = ll.from_peft(m, tmp_path / "p")
    assert isinstance(cfg, ll.AdamssConfig) and cfg.num_subspaces == 6
    d = (logits(m, ids) - theirs).abs().max().item()
    print(f"adamss from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL and (theirs - base_logits).abs().max() > 1e-2
    ll.detach(m); assert torch.equal(logits(m, ids), base_logits)


def test_trainable_count_equals_peft():
    "PEFT's count for the same config on a tiny Qwen3, and PEFT's published 293,888 on Llama-3.2-3B's shapes."
    m = tiny_qwen3(); ll.attach(m, ll.AdamssConfig(r=32, num_subspaces=8))
    assert trainable(m) == trainable(peft_adamss(tiny_qwen3(), r=32, num_subspaces=8))
    cfg = ll.get_config("adamss", **{k: v for k, v in ll.Adamss.bench.items() if k != "lr"})
    per_block = sum(p.numel() for d_in, d_out in [(3072, 3072), (3072, 1024)] for p in ll.Adamss(cfg, d_in, d_out, device="meta").parameters())
    assert 28 * per_block == 293_888    # PEFT's results/adamss--llama-3.2-3B-rank32.json num_trainable_params


def test_load_needs_no_sklearn_and_attach_names_the_extra(ids, tmp_path, monkeypatch):
    m = tiny_qwen3(); ll.attach(m, ll.AdamssConfig(r=16, num_subspaces=4)); train_steps(m, ids)
    y = logits(m, ids); f = ll.save(m, tmp_path / "a.safetensors"); ll.detach(m)
    snap = snapshot(m)
    for k in ("sklearn", "sklearn.cluster"): monkeypatch.setitem(sys.modules, k, None)
    with pytest.raises(ImportError, match=r"lora_lite\[adamss\]"): ll.attach(m, ll.AdamssConfig())
    assert_unchanged(m, snap)
    ll.load(m, f)
    assert torch.equal(logits(m, ids), y)


def test_group_smaller_than_subspace_rank_is_refused(tmp_path):
    "Random weights give k-means a 1-row group; PEFT would lower that group's rank, lora_lite refuses (both ways)."
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="lower subspace_rank or num_subspaces"):
        ll.attach(m, ll.AdamssConfig(r=16, num_subspaces=4, subspace_rank=2))
    assert_unchanged(m, snap)
    pm = peft_adamss(tiny_qwen3(), subspace_rank=2); pm.save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="subspace_rank"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)
    with pytest.raises(ValueError, match="use_asa=True"): ll.AdamssConfig(use_asa=True)


def test_trains_like_peft_on_structured_weights():
    "Same base (power-law spectra), same global seed -> same groups and init; 6 AdamW steps side by side."
    base = structured_qwen3()
    torch.manual_seed(0); pm = peft_adamss(copy.deepcopy(base), r=32, num_subspaces=8)
    torch.manual_seed(0); m = copy.deepcopy(base); ll.attach(m, ll.AdamssConfig(r=32, num_subspaces=8))
    ids = same_batches(1, seed=9)[0]
    d0 = (logits(m, ids) - logits(pm, ids)).abs().max().item()
    runs = [train_curve(model, same_batches(), lr=2e-3, weight_decay=0.01) for model in (m, pm)]   # AdamW's default decay
    d = (logits(m, ids) - logits(pm, ids)).abs().max().item()
    moved = (logits(m, ids) - logits(base, ids)).abs().max().item()
    print(f"adamss vs PEFT: init max|Δlogits| {d0:.1e}; after 6 AdamW steps {d:.1e} (moved {moved:.1e}); "
          f"losses {runs[0]} / {runs[1]}")
    assert d0 == 0.0 and moved > 1e-2 and d <= 1e-4 * moved
    assert max(abs(a - b) for a, b in zip(*runs)) <= 1e-5


@pytest.mark.parametrize("bias", [False, True])
def test_decode_reads_count_the_cheapest_exact_form(bias):
    "The decode floor's count: AV_Rᵀ, B and the labels g (+ the folded bias term (Ac)M) — the numbers that fix the layer's update."
    m = tiny_qwen3(attention_bias=bias)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"): p.normal_()                                        # a real bias: c ≠ 0
    ll.attach(m, ll.AdamssConfig(r=16, num_subspaces=4, init_weights=None))
    for l in ll.adapter_layers(m).values():
        D, e, M = l.factors()
        assert bool(l.c.any()) == bias
        assert l.decode_reads() == D.numel() + l.B.numel() + l.g.numel() + (M.shape[1] if bias else 0)
        assert l.decode_reads() < sum(t.numel() for t in (*l.parameters(), *l.buffers()))   # less than all it holds
