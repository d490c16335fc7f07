"EVA: A is the PCA of the kept calibration tokens; as a PEFT LoRA it gives our logits; PEFT's incremental PCA comes close."
import copy
import pytest, torch
import lora_lite as ll
from conftest import snapshot, assert_unchanged, token_batches, perturb_adapter

peft = pytest.importorskip("peft")


def _copy_into_peft(model, pm, key, fn):
    "Copy each of our layers' tensors into PEFT's `<name>.<key>.default` via fn(our_layer) -> tensor."
    sd = dict(pm.named_parameters())
    n = 0
    with torch.no_grad():
        for name, layer in ll.adapter_layers(model).items():
            k = f"base_model.model.{name}.{key}.default"
            p = sd[k] if k in sd else sd[k + ".weight"]             # LoRA's A/B are nn.Linear
            v = fn(layer)
            assert p.shape == v.shape, (name, p.shape, v.shape)
            p.copy_(v); n += 1
    assert n == len(ll.adapter_layers(model)) and n == sum(f".{key}.default" in k for k in sd)


def _max_diff(model, pm, ids):
    "max |logits diff| between our model and PEFT's, after checking the adapter really moves the logits."
    with torch.no_grad():
        ours, theirs = model(ids).logits, pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-3, "the adapter is (near) identity: the parity test would be trivial"
    return (ours - theirs).abs().max().item()


def _kept_inputs(model, name, batches, masked=True):
    "Reference masking: the inputs of `name` on the tokens with attention_mask != 0 and labels != -100."
    seen, rows = [], []
    h = model.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    try:
        with torch.no_grad():
            for b in batches:
                seen.clear(); model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                keep = (b["attention_mask"] != 0) & (b["labels"] != -100) if masked else torch.ones_like(b["labels"], dtype=torch.bool)
                rows.append(seen[0][keep])
    finally: h.remove()
    return torch.cat(rows).double()


def _proj(A): Q = torch.linalg.qr(A.double().T).Q; return Q @ Q.T   # projector on the row space


def _cov(X): Xc = X - X.mean(0); return Xc.T @ Xc / len(X)


def test_eva_A_is_the_pca_of_the_kept_tokens(qwen):
    base, data = copy.deepcopy(qwen), token_batches(n=3, T=16)
    ll.attach(qwen, ll.EVAConfig(r=4), calibration_data=data)
    for name, layer in ll.adapter_layers(qwen).items():
        assert torch.equal(layer.B, torch.zeros_like(layer.B))
        X = _kept_inputs(base, name, data)
        Vr = torch.linalg.svd(X - X.mean(0), full_matrices=False).Vh[:4]
        assert (_proj(layer.A) - _proj(Vr)).abs().max() < 1e-4, name
        Xall = _kept_inputs(base, name, data, masked=False)            # masking matters: all tokens give another A
        Vall = torch.linalg.svd(Xall - Xall.mean(0), full_matrices=False).Vh[:4]
        assert (_proj(layer.A) - _proj(Vall)).abs().max() > 1e-2, name


def test_eva_masked_tokens_do_not_change_A(qwen):
    data = token_batches(n=3, T=16)
    other = [dict(b) for b in data]
    for b in other:                                                     # change every padded token's id
        b["input_ids"] = torch.where(b["attention_mask"] == 0, (b["input_ids"] + 7) % 128, b["input_ids"])
    assert any(not torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(data, other))
    m2 = copy.deepcopy(qwen)
    ll.attach(qwen, ll.EVAConfig(r=4), calibration_data=data)
    ll.attach(m2, ll.EVAConfig(r=4), calibration_data=other)
    for (n, a), b in zip(ll.adapter_layers(qwen).items(), ll.adapter_layers(m2).values()):
        torch.testing.assert_close(a.A, b.A, atol=1e-6, rtol=0, msg=n)


def _peft_lora_from_eva(model, ref, cfg):
    layers = ll.adapter_layers(model)
    names = list(layers)
    pc = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, target_modules=names,
                         rank_pattern={n: l.r for n, l in layers.items() if l.r != cfg.r},
                         alpha_pattern={n: cfg.alpha * l.r / cfg.r for n, l in layers.items() if l.r != cfg.r})
    pm = peft.get_peft_model(ref, pc).eval()
    _copy_into_peft(model, pm, "lora_A", lambda l: l.A.detach())
    _copy_into_peft(model, pm, "lora_B", lambda l: l.B.detach())
    return pm


@pytest.mark.parametrize("rho,targets", [(1.0, ("q_proj", "v_proj")), (2.0, ("q_proj", "o_proj", "down_proj"))])
def test_eva_matches_peft_lora_and_reloads_without_data(qwen, ids, rho, targets, tmp_path):
    ref, data = copy.deepcopy(qwen), token_batches(n=4, T=24)
    cfg = ll.EVAConfig(r=4, alpha=8, rho=rho, target_names=targets)
    ll.attach(qwen, cfg, calibration_data=data)
    ranks = {n: l.r for n, l in ll.adapter_layers(qwen).items()}
    if rho == 1: assert set(ranks.values()) == {4} and len(ranks) == 4
    else:   # q/o/down have different input spectra, so the budget moves between them
        assert len(set(ranks.values())) > 1, ranks
        assert sum(ranks.values()) == 4 * 6 and max(ranks.values()) <= 8   # same budget, at most rho·r each
    assert all(l.scale == 8 / 4 for l in ll.adapter_layers(qwen).values())
    perturb_adapter(qwen, std=0.05)
    pm = _peft_lora_from_eva(qwen, ref, cfg)
    d = _max_diff(qwen, pm, ids)
    print(f"EVA (rho={rho}, ranks={sorted(ranks.values())}) as PEFT LoRA max|diff|: {d:.2e}")
    assert d <= 1e-5
    with torch.no_grad(): y = qwen(ids).logits
    f = ll.save(qwen, tmp_path / "eva.safetensors"); ll.detach(qwen)
    ll.load(qwen, f)                                                        # no calibration data needed
    assert {n: l.r for n, l in ll.adapter_layers(qwen).items()} == ranks
    with torch.no_grad(): assert torch.equal(qwen(ids).logits, y)


def test_eva_subspace_vs_peft_eva(qwen):
    "Where the options agree (rho=1, centred, masks): PEFT's incremental PCA approaches our exact top-r subspace."
    from peft.tuners.lora.eva import get_eva_state_dict
    ref, data = copy.deepcopy(qwen), token_batches(n=8, T=24)
    ll.attach(qwen, ll.EVAConfig(r=4), calibration_data=data)
    pc = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights="eva", eva_config=peft.EvaConfig(rho=1.0))
    theirs = get_eva_state_dict(copy.deepcopy(ref), data, pc, show_progress_bar=False)
    assert theirs
    for name, B in theirs.items():
        A = ll.adapter_layers(qwen)[name].A.detach().double()
        C = _cov(_kept_inputs(ref, name, data))
        Qa, Qb = torch.linalg.qr(A.T).Q, torch.linalg.qr(B.double().T).Q
        var_ours, var_peft = torch.trace(Qa.T @ C @ Qa).item(), torch.trace(Qb.T @ C @ Qb).item()
        cos = torch.linalg.svdvals(Qa.T @ Qb)
        print(f"EVA vs PEFT EVA {name}: variance captured ours {var_ours:.4f} peft {var_peft:.4f}, principal cosines {[round(c, 3) for c in cos.tolist()]}")
        assert var_ours >= var_peft - 1e-6          # ours is the exact optimum
        assert var_peft >= 0.9 * var_ours and cos[0] > 0.95


def test_eva_bad_input_leaves_model_unchanged(qwen):
    snap = snapshot(qwen)
    with pytest.raises(ValueError, match="calibration_data"): ll.attach(qwen, ll.EVAConfig(r=4))
    assert_unchanged(qwen, snap)
    with pytest.raises(ValueError, match="fewer than r=16"):                # 14 kept tokens < r
        ll.attach(qwen, ll.EVAConfig(r=16), calibration_data=token_batches(n=1))
    assert_unchanged(qwen, snap)
    emb = torch.randn(1, 6, 64); emb[0, 2, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"): ll.attach(qwen, ll.EVAConfig(r=2), calibration_data=[{"inputs_embeds": emb}])
    assert_unchanged(qwen, snap)
    with pytest.raises(ValueError, match="exceeds the input width"):
        ll.attach(qwen, ll.EVAConfig(r=65), calibration_data=token_batches(n=1))
    assert_unchanged(qwen, snap)
    with pytest.raises(ValueError, match="rho"): ll.EVAConfig(rho=0.5)
