"""AdaLoRA against PEFT 0.21.2: 200 training steps with rank allocation give the same losses and kept ranks, to_peft /
from_peft after training are exact, save -> load keeps the kept ranks, PEFT's published count, 4/8-bit bases; and a
trained PEFT AdaLoRA folder imports as `adalora` (as the LoRA it is when lora_alpha <= 0), reproducing PEFT's reload."""
import copy, json, time, warnings
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from safetensors.torch import load_file, save_file
from conftest import snapshot, assert_unchanged, logits, trainable, llama32_3b

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


def _pair(**kw):
    "(ours, PEFT) tiny Qwen3s with the same AdaLoRA init (ours copied into PEFT's layers); PEFT with a task_type, so its forward adds the penalty."
    fields = dict(r=8, target_r=3, tinit=20, tfinal=40, deltaT=3, total_step=200, alpha=16.0) | kw
    ours = tiny_qwen3(); ll.attach(ours, ll.AdaLoRAConfig(**fields))
    c = ll.adapter_config(ours)
    pm = peft.get_peft_model(tiny_qwen3(), peft.AdaLoraConfig(
        init_r=c.r, target_r=c.target_rank(), tinit=c.tinit, tfinal=c.tfinal, deltaT=c.deltaT, total_step=c.total_step,
        lora_alpha=c.alpha, beta1=c.beta1, beta2=c.beta2, orth_reg_weight=c.orth_reg_weight, target_modules=QV, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, l in ll.adapter_layers(ours).items():
            for k in "AEB": getattr(pm.base_model.model.get_submodule(n), f"lora_{k}")["default"].copy_(getattr(l, k))
    return ours, pm


def _batches(n=8, T=10):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 128, (2, T), generator=g) for _ in range(n)]


def _kept(m): return [int(l.kept.sum()) for l in ll.adapter_layers(m).values()]


def test_200_steps_match_peft_losses_and_kept_ranks():
    "Same init, same AdamW steps, ll.step / update_and_allocate after each (steps 1..200): every loss and kept rank equal."
    t0 = time.perf_counter()
    ours, pm = _pair()
    o1 = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-2)
    o2 = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    ours.train(); pm.train()
    L1, L2, bad_ranks, batches = [], [], [], _batches()
    for t in range(1, 201):
        ids = batches[t % len(batches)]
        l1 = ours(ids, labels=ids).loss + ll.aux_loss(ours); l1.backward(); o1.step(); ll.step(ours, t); o1.zero_grad()
        l2 = pm(ids, labels=ids).loss; l2.backward(); o2.step(); pm.base_model.update_and_allocate(t); o2.zero_grad()
        L1.append(l1.item()); L2.append(l2.item())
        rp = pm.peft_config["default"].rank_pattern
        theirs = [sum(v) for v in rp.values()] if rp else [8] * 4
        if _kept(ours) != theirs: bad_ranks.append((t, _kept(ours), theirs))
    rel = [abs(a - b) / abs(b) for a, b in zip(L1, L2)]
    print(f"AdaLoRA 200 steps: max rel loss diff {max(rel):.1e} (first 20: {max(rel[:20]):.1e}), {sum(a == b for a, b in zip(L1, L2))}/200 "
          f"equal; kept ranks {_kept(ours)}; {time.perf_counter() - t0:.1f}s")
    assert not bad_ranks, bad_ranks[:3]
    assert max(rel[:20]) <= 1e-4 and max(rel) <= 1e-4
    assert sum(_kept(ours)) == 3 * 4 and len(set(_kept(ours))) > 1          # the target budget, unevenly spent
    assert L1[-1] < L1[0]
    ours.eval(); pm.eval()
    ids = batches[0]
    assert (logits(ours, ids) - logits(pm, ids)).abs().max() <= TOL


def test_aux_loss_is_peft_penalty_and_zero_without_it(ids):
    "ll.aux_loss == PEFT's loss (task_type set) − the plain loss; orth_reg_weight 0 gives 0; other variants give a zero tensor."
    ours, pm = _pair()
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(0.1 * torch.randn_like(p))
        for n, l in ll.adapter_layers(ours).items():
            for k in "AEB": getattr(l, k).copy_(getattr(pm.base_model.model.get_submodule(n), f"lora_{k}")["default"])
        penalty = pm(ids, labels=ids).loss - pm.get_base_model()(ids, labels=ids).loss
        aux = ll.aux_loss(ours)
    assert penalty > 0.1 and torch.allclose(aux, penalty, rtol=1e-5)
    m = tiny_qwen3(); ll.attach(m, ll.AdaLoRAConfig(r=4, orth_reg_weight=0.0))
    assert ll.aux_loss(m).item() == 0.0 and ll.aux_loss(m).requires_grad
    m = tiny_qwen3(); ll.attach(m, ll.LoRAConfig(r=4))
    z = ll.aux_loss(m); assert z.shape == () and z.item() == 0.0
    snap = snapshot(m); m(ids, labels=ids).loss.backward(); ll.step(m, 1)
    assert_unchanged(m, snap)                                              # a no-op for LoRA


def _trained(steps, **kw):
    "Ours after `steps` steps of a 60-step schedule with deltaT=3 (so some pruned E grow back between prunings)."
    torch.manual_seed(0)
    m = tiny_qwen3(); ll.attach(m, ll.AdaLoRAConfig(r=8, target_r=2, tinit=3, tfinal=10, deltaT=3, alpha=16.0, **kw))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-2)
    m.train()
    for t, ids in zip(range(1, steps + 1), _batches(steps)):
        (m(ids, labels=ids).loss + ll.aux_loss(m)).backward(); opt.step(); ll.step(m, t, total_steps=60); opt.zero_grad()
    return m.eval()


def test_to_peft_and_back_after_training(ids, tmp_path):
    m = _trained(26)                                                       # mid-schedule, one step after a pruning
    L = ll.adapter_layers(m)
    regrown = sum(int(((l.kept == 0) & (l.E.view(-1) != 0)).sum()) for l in L.values())
    assert regrown > 0 and ll.adapter_config(m).total_step == 60            # the case export must keep; the length is recorded
    ll.to_peft(m, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "ADALORA" and pc["init_r"] == 8 and pc["total_step"] == 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = peft.PeftModel.from_pretrained(tiny_qwen3(), tmp_path / "p").eval()
    d = (logits(back, ids) - logits(m, ids)).abs().max().item()
    m2 = tiny_qwen3(); cfg = ll.from_peft(m2, tmp_path / "p")
    print(f"AdaLoRA to_peft after 26 steps ({regrown} regrown triplets): PEFT reload max|diff| {d:.1e}")
    assert d <= TOL and cfg.variant == "adalora" and cfg.total_step == 60
    assert torch.equal(logits(m2, ids), logits(m, ids))
    for (n, a), b in zip(L.items(), ll.adapter_layers(m2).values()):        # dropped triplets come back as zeros, E = 0
        keep = (a.kept > 0) | (a.E.view(-1) != 0)
        assert torch.equal(b.kept.bool(), keep) and torch.equal(b.A[keep], a.A[keep]) and not b.A[~keep].any()


def test_save_load_keeps_ranks_and_training_goes_on(ids, tmp_path):
    m = _trained(55)                                                       # final phase (after step 50 = 60 - tfinal)
    kept = _kept(m); assert sum(kept) == 2 * 4
    f = ll.save(m, tmp_path / "a.safetensors")
    m2 = tiny_qwen3(); cfg = ll.load(m2, f)
    assert cfg.total_step == 60 and _kept(m2) == kept and torch.equal(logits(m2, ids), logits(m, ids))
    opt = torch.optim.AdamW([p for p in m2.parameters() if p.requires_grad], lr=2e-2)
    m2.train()
    for t in range(56, 61):                                                # the final phase holds the ranks: pruned E stay 0
        (m2(ids, labels=ids).loss + ll.aux_loss(m2)).backward(); opt.step(); ll.step(m2, t); opt.zero_grad()
        for l in ll.adapter_layers(m2).values(): assert not l.E.view(-1)[l.kept == 0].any()
    assert _kept(m2) == kept
    m3 = tiny_qwen3(); ll.load(m3, ll.save(_trained(12), tmp_path / "b.safetensors"))   # mid-budget: the scores restart at 0
    m3.train(); m3(ids, labels=ids).loss.backward(); ll.step(m3, 13)
    assert sum(_kept(m3)) < 8 * 4


def _resume(m, ids, steps=range(56, 61)):
    "A few more steps of the 60-step schedule (the final phase for 56..60) on `m`; returns its E tensors after each step."
    torch.manual_seed(1); opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-2); m.train(); Es = []
    for t in steps:
        (m(ids, labels=ids).loss + ll.aux_loss(m)).backward(); opt.step(); ll.step(m, t); opt.zero_grad()
        Es.append([l.E.detach().clone() for l in ll.adapter_layers(m).values()])
    return Es


def test_mask_is_config_not_a_tensor(ids, tmp_path):
    "The kept mask lives in the config (Python lists, as PEFT's rank_pattern): no adapter tensor holds it, the file has none, the config JSON has it."
    m = _trained(55)
    cfg, L = ll.adapter_config(m), ll.adapter_layers(m)
    assert set(cfg.kept) == set(L) and [sum(v) for v in cfg.kept.values()] == _kept(m) and sum(_kept(m)) == 2 * 4
    assert all(set(dict(l.named_buffers())) == set() and set(dict(l.named_parameters())) == {"A", "E", "B"} for l in L.values())
    meta, t = ll.read_adapter(ll.save(m, tmp_path / "a.safetensors"))
    assert not [k for k in t if k.endswith(".kept")] and json.loads(meta["config"])["kept"] == cfg.kept
    fresh = tiny_qwen3(); ll.attach(fresh, ll.AdaLoRAConfig(r=8)); assert ll.adapter_config(fresh).kept == {}   # nothing pruned yet
    for bad in ({"x": [True] * 7}, {"x": [1] * 8}, {"x": "1" * 8}, [[True] * 8]):
        with pytest.raises(ValueError, match="kept must map"): ll.AdaLoRAConfig(r=8, kept=bad)


def test_file_with_a_kept_tensor_still_loads(ids, tmp_path):
    """Files written before the mask moved into the config held it as a float tensor `<module>.kept` (1: kept) per layer and no
    `kept` config field: they load as the same model and config, and training on goes exactly as after loading today's file."""
    m = _trained(55)                                                       # final phase: the mask decides which E stay 0
    meta, t = ll.read_adapter(ll.save(m, tmp_path / "new.safetensors"))
    conf = json.loads(meta["config"]); kept = conf.pop("kept")
    assert any(not all(v) for v in kept.values())
    old = t | {f"{n}.kept": torch.tensor(v, dtype=torch.float32) for n, v in kept.items()}
    save_file(old, tmp_path / "old.safetensors", metadata=meta | {"config": json.dumps(conf)})
    m_new, m_old = tiny_qwen3(), tiny_qwen3()
    c_new, c_old = ll.load(m_new, tmp_path / "new.safetensors"), ll.load(m_old, tmp_path / "old.safetensors")
    assert c_old == c_new == ll.adapter_config(m_old) and c_old.kept == kept and _kept(m_old) == _kept(m)
    assert torch.equal(logits(m_old, ids), logits(m, ids))
    E_new, E_old = _resume(m_new, ids), _resume(m_old, ids)
    assert all(torch.equal(a, b) for sa, sb in zip(E_new, E_old) for a, b in zip(sa, sb))
    assert all(not e.view(-1)[~torch.tensor(kept[n])].any() for s in E_old for n, e in zip(kept, s))   # pruned E held at 0
    _, t2 = ll.read_adapter(ll.save(m_old, tmp_path / "again.safetensors")); assert not [k for k in t2 if k.endswith(".kept")]
    bad = old | {next(k for k in old if k.endswith(".kept")): torch.ones(7)}   # a damaged old mask: one clear error, model unchanged
    save_file(bad, tmp_path / "bad.safetensors", metadata=meta | {"config": json.dumps(conf)})
    m3 = tiny_qwen3(); snap = snapshot(m3)
    with pytest.raises(ValueError, match="kept must map"): ll.load(m3, tmp_path / "bad.safetensors")
    assert_unchanged(m3, snap)


def test_bad_step_calls_leave_the_adapter_unchanged(ids):
    m = tiny_qwen3(); ll.attach(m, ll.AdaLoRAConfig(r=8, tinit=5))
    snap = snapshot(m)
    m(ids, labels=ids).loss.backward()
    with pytest.raises(ValueError, match="needs the run's length"): ll.step(m, 1)
    with pytest.raises(ValueError, match="no pruning phase"): ll.step(m, 1, total_steps=5)
    for p in m.parameters(): p.grad = None
    with pytest.raises(RuntimeError, match="has no gradient"): ll.step(m, 1, total_steps=10)
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="global_step"): ll.step(m, bad, total_steps=10)
    assert_unchanged(m, snap)
    assert ll.adapter_config(m).total_step is None


def test_trainable_count_equals_peft():
    """adalora/llama-3.2-3B-rank32 (init_r 64 on q 3072->3072, v 3072->1024, 28 blocks): init_r·(d_in + d_out + 1) per module,
    PEFT's 18.35M. PEFT 0.21.2 built on the meta device also marks each module's scalar `ranknum` trainable (+56); on a real
    device it doesn't, and the counts are equal (tiny Qwen3)."""
    m = llama32_3b(); ll.attach(m, ll.AdaLoRAConfig(r=64, target_r=32, alpha=8.0))
    pm = peft.get_peft_model(llama32_3b(), peft.AdaLoraConfig(init_r=64, target_r=32, tinit=200, tfinal=500, total_step=5000,
                                                                lora_alpha=8, target_modules=QV))
    assert trainable(m) == 28 * 64 * ((3072 + 3072 + 1) + (3072 + 1024 + 1)) == trainable(pm) - 2 * 28
    assert round(trainable(m) / 1e6, 2) == 18.35
    small = tiny_qwen3(); ll.attach(small, ll.AdaLoRAConfig(r=8, alpha=8.0))
    assert trainable(small) == trainable(peft.get_peft_model(tiny_qwen3(), peft.AdaLoraConfig(init_r=8, total_step=10, target_modules=QV)))


@pytest.mark.parametrize("quant", ["4bit", "8bit"])
def test_quantized_base_trains_and_prunes(tmp_path, quant):
    "4-bit / 8-bit base: identity at init, finite grads, pruning to the target, exact detach."
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    tiny_qwen3(hidden=128).save_pretrained(tmp_path)
    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32) if quant == "4bit" else BitsAndBytesConfig(load_in_8bit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=qc, device_map="cpu")
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    m.train(); y0 = m(ids).logits.detach(); snap = snapshot(m)
    ll.attach(m, ll.AdaLoRAConfig(r=8, target_r=2, tinit=1, total_step=6))
    assert torch.equal(m(ids).logits.detach(), y0)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for t in range(1, 7):
        (m(ids, labels=ids).loss + ll.aux_loss(m)).backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
        opt.step(); ll.step(m, t); opt.zero_grad()
    assert sum(_kept(m)) == 2 * 4 and torch.isfinite(m(ids).logits).all()
    ll.detach(m); assert_unchanged(m, snap); assert torch.equal(m(ids).logits.detach(), y0)


# ---------- a PEFT-made, PEFT-trained AdaLoRA folder

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


def _kept_file(path):
    pc = json.loads((path / "adapter_config.json").read_text())
    return {n.removesuffix(".lora_E"): sum(m) for n, m in (pc["rank_pattern"] or {}).items()}


@pytest.mark.parametrize("kw", [dict(), dict(lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"]), dict(lora_alpha=0)],
                         ids=["default", "alpha32-3mods", "alpha0"])
def test_trained_peft_adalora_imports_exactly(ids, tmp_path, kw):
    ref = _trained_adalora(ids, tmp_path / "p", **kw)
    kept = _kept_file(tmp_path / "p")
    assert 0 in kept.values() and any(0 < k < 8 for k in kept.values()), f"want pruned and rank-0 modules, got {kept}"
    m = tiny_qwen3()
    cfg = ll.from_peft(m, tmp_path / "p")
    L = ll.adapter_layers(m)
    a = kw.get("lora_alpha", 8)
    if a > 0: assert cfg.variant == "adalora" and {n: int(l.kept.sum()) for n, l in L.items()} == kept   # every module, rank 0 too
    else: assert cfg.variant == "lora" and {n: l.r for n, l in L.items()} == {n: k for n, k in kept.items() if k}
    t = load_file(tmp_path / "p" / "adapter_model.safetensors")
    for n, l in L.items():                                               # ΔW = α/(init_r+1e-5)·B(E⊙A), from the file
        g = lambda k: t[f"base_model.model.{n}.{k}"]
        s = (a if a > 0 else int(l.r)) / (8 + 1e-5)
        torch.testing.assert_close(l.delta_weight(None), s * g("lora_B") @ (g("lora_E") * g("lora_A")), rtol=1e-5, atol=1e-7)
    d = (logits(m, ids) - logits(ref, ids)).abs().max().item()
    print(f"AdaLoRA {kw} kept ranks {sorted(kept.values())}: from_peft max|diff| vs PEFT {d:.2e}")
    assert d <= TOL
    ll.to_peft(m, tmp_path / "q")                                          # and out again (ADALORA, or LORA for α <= 0)
    assert json.loads((tmp_path / "q" / "adapter_config.json").read_text())["peft_type"] == ("ADALORA" if a > 0 else "LORA")
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
    zero = {k: v[:0] if k.endswith("lora_A") else v[:, :0] if k.endswith("lora_B") else v[:0] for k, v in t.items()}
    cases = {"no_E": ({k: v for k, v in t.items() if not k.endswith("v_proj.lora_E")}, pc, "lora_E' is missing"),
             "zero": (zero, pc, "another base model"),                     # tensors that don't match rank_pattern's masks
             "zero_a0": (zero, pc | {"lora_alpha": 0}, "rank 0"),          # the LoRA reading: nothing left to import
             "wide": ({k: torch.zeros(v.shape[0], 128) if k.endswith("lora_A") else v for k, v in t.items()}, pc, "another base model")}
    for name, (tensors, conf, phrase) in cases.items():
        d = tmp_path / name; d.mkdir()
        save_file({k: v.contiguous() for k, v in tensors.items()}, d / "adapter_model.safetensors")
        (d / "adapter_config.json").write_text(json.dumps(conf))
        with pytest.raises(ValueError, match=phrase): ll.from_peft(m, d)
        assert_unchanged(m, snap)
