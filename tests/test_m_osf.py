"""PEFT 0.21.2 is the oracle for OSF: to_peft/from_peft logits (PEFT re-runs the SVD at load), the init and training
steps side by side on realistic-spectrum weights, counts (PEFT's and its published one), the adapter file without the
recomputed SVD factors and a bit-exact reload, the gradient projection under torch.compile and FSDP2, bad inputs."""
import copy, os, socket, tempfile, traceback
from pathlib import Path
import pytest, torch
import torch.distributed as dist
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from safetensors import safe_open
from conftest import (snapshot, assert_unchanged, train_steps, logits, structured_qwen3, same_batches, perturb_adapter, trainable,
                      llama32_3b, to_peft_matches, from_peft_matches, assert_peft_round_trip)

peft = pytest.importorskip("peft")
TOL = 1e-5
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# our configs: square / wide (V_h kept) / tall (U_h kept) layers, per-layer ranks, and PEFT's non-identity init
CONFIGS = [dict(r=8, target_names=("q_proj", "v_proj", "up_proj")), dict(r=4),
           dict(r=8, target_names=("q_proj", "v_proj", "down_proj"), rank_pattern={"v_proj": 3, r"layers\.1\.mlp\.down_proj": 20}),
           dict(r=6, target_names=("k_proj", "gate_proj"), init_weights=False)]
# PEFT configs: its default split (half kept), an int, a fraction, patterns mixing both
PEFT_CONFIGS = [dict(target_modules=["q_proj", "v_proj", "up_proj"]), dict(target_modules=ALL, effective_rank=60),
                dict(target_modules=["q_proj", "down_proj"], effective_rank=0.75),
                dict(target_modules=["q_proj", "v_proj", "gate_proj"], effective_rank=20, rank_pattern={"v_proj": 0.5, r"layers\.1\.self_attn\.q": 50})]


def _peft_layer(pm, n): return pm.base_model.model.get_submodule(n)


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = structured_qwen3(attention_bias=True); model = copy.deepcopy(base)
    y0 = logits(model, ids)
    ll.attach(model, ll.OsfConfig(**kw))
    if kw.get("init_weights", True): assert torch.equal(logits(model, ids), y0)   # exactly the base model
    train_steps(model, ids, lr=1e-3)
    ours = logits(model, ids)
    assert (ours - y0).abs().max() > 1e-3, "the adapter did not move the logits"
    pm, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"OSF {kw}")   # PEFT re-runs the SVD at load
    assert pc["peft_type"] == "OSF" and sorted(pc["target_modules"]) == sorted(ll.adapter_layers(model))
    for n, l in ll.adapter_layers(model).items():                           # the split PEFT made is ours
        assert _peft_layer(pm, n).osf_svd_params["default"]["S_low"].shape == (l.r,), n


@pytest.mark.parametrize("pkw", PEFT_CONFIGS, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, pkw):
    pm = peft.get_peft_model(structured_qwen3(attention_bias=True), peft.OSFConfig(**pkw))
    perturb_adapter(pm)
    make = lambda: structured_qwen3(attention_bias=True)
    base, cfg = from_peft_matches(pm, make, ids, tmp_path / "p", f"OSF {pkw}", moved=1e-3)
    assert isinstance(cfg, ll.OsfConfig)
    for n, l in ll.adapter_layers(base).items(): assert l.r == _peft_layer(pm, n).osf_svd_params["default"]["S_low"].numel(), n
    assert_peft_round_trip(base, make, ids, tmp_path / "q")


def test_init_equals_peft_and_training_matches():
    "The same SVD split as PEFT's on every shape (square, wide, tall); then 6 AdamW steps each (lr 1e-3, wd 0.01): the same model."
    ours_m, pm = structured_qwen3(), peft.get_peft_model(structured_qwen3(), peft.OSFConfig(target_modules=ALL, effective_rank=40, rank_pattern={"k_proj": 24, "v_proj": 24}))
    ll.attach(ours_m, ll.OsfConfig(r=24, rank_pattern={"k_proj": 8, "v_proj": 8}, target_names=tuple(ALL)))   # k/v: 32 - 24 = 8
    for n, l in ll.adapter_layers(ours_m).items():
        t = _peft_layer(pm, n)
        for ours, theirs in ((l.U0, t._osf_U_low_init), (l.S0, t._osf_S_low_init), (l.V0, t._osf_V_low_init)):
            assert torch.equal(ours, theirs["default"]), n
        for p in "USV": assert torch.equal(getattr(l, p), t.osf_svd_params["default"][f"{p}_low"]), n
        if "Uh" in l._buffers: assert torch.equal(l.Uh, t._osf_U_high["default"]), n
        if "Vh" in l._buffers: assert torch.equal(l.Vh, t._osf_V_high["default"]), n
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01) for m in (ours_m, pm)]
    for ids in same_batches(6):
        for m, opt in zip((ours_m, pm), opts):
            m.train(); m(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    eval_ids = same_batches(1, seed=9)[0]
    ours, theirs = logits(ours_m.eval(), eval_ids), logits(pm.eval(), eval_ids)
    with pm.disable_adapter(): plain = logits(pm, eval_ids)
    worst = max((getattr(l, p) - _peft_layer(pm, n).osf_svd_params["default"][f"{p}_low"]).abs().max().item()
                for n, l in ll.adapter_layers(ours_m).items() for p in "USV")
    d = (ours - theirs).abs().max().item()
    print(f"OSF after 6 AdamW steps each: logits max|diff| vs PEFT {d:.2e} (moved {(theirs - plain).abs().max():.2e}), "
          f"U/S/V max|diff| {worst:.2e}")
    assert (theirs - plain).abs().max() > 1e-3 and d <= TOL and worst <= 1e-5


def test_gradients_equal_peft_hooks(ids):
    "One backward: our in-graph projection gives PEFT's hook-projected gradients on every shape."
    ours_m, pm = structured_qwen3(), peft.get_peft_model(structured_qwen3(), peft.OSFConfig(target_modules=ALL, effective_rank=40, rank_pattern={"k_proj": 24, "v_proj": 24}))
    ll.attach(ours_m, ll.OsfConfig(r=24, rank_pattern={"k_proj": 8, "v_proj": 8}, target_names=tuple(ALL)))
    perturb_adapter(ours_m)
    with torch.no_grad():                                                   # PEFT's factors moved the same way
        for n, l in ll.adapter_layers(ours_m).items():
            for p in "USV": _peft_layer(pm, n).osf_svd_params["default"][f"{p}_low"].copy_(getattr(l, p))
    for m in (ours_m, pm): m.train(); m(ids, labels=ids).loss.backward()
    worst = 0.0
    for n, l in ll.adapter_layers(ours_m).items():
        for p in "USV":
            g, h = getattr(l, p).grad, _peft_layer(pm, n).osf_svd_params["default"][f"{p}_low"].grad
            worst = max(worst, ((g - h).abs().max() / h.abs().max()).item())
        if "Uh" in l._buffers: assert (l.Uh.T @ l.U.grad).abs().max() <= 1e-5 * l.U.grad.abs().max()
        if "Vh" in l._buffers: assert (l.V.grad @ l.Vh.T).abs().max() <= 1e-5 * l.V.grad.abs().max()
    print(f"OSF gradients vs PEFT's hooks: max relative diff {worst:.1e}")
    assert worst <= 1e-5


def test_trainable_count_equals_peft_published():
    "PEFT's experiment osf/llama-3.2-3B-rank128 (its adapter_config.json): r = 128 trained everywhere; its published count."
    published = dict(target_modules=ALL, rank_pattern={"q_proj": 2944, "o_proj": 2944, "k_proj": 896, "v_proj": 896,
                                                       "gate_proj": 2944, "down_proj": 2944, "up_proj": 2944})
    m = llama32_3b(); ll.attach(m, ll.OsfConfig(r=128))
    ours, theirs = trainable(m), trainable(peft.get_peft_model(llama32_3b(), peft.OSFConfig(**published)))
    print(f"OSF trainable on Llama-3.2-3B: ours {ours:,} PEFT {theirs:,} published 194,535,936")
    assert ours == theirs == 194_535_936
    for pkw in PEFT_CONFIGS:                                                # and PEFT's count for each imported config
        d = Path(tempfile.mkdtemp())
        pm = peft.get_peft_model(tiny_qwen3(), peft.OSFConfig(**pkw)); pm.save_pretrained(d)
        m = tiny_qwen3(); ll.from_peft(m, d)
        assert trainable(m) == trainable(pm)


def test_file_holds_only_trained_factors_and_reload_is_bit_exact(ids, tmp_path):
    "Save at init and after training: the file has U, S, V only; a fresh model loads it to the same logits and buffers, bit for bit,"
    "and training on from there takes the same steps."
    m = tiny_qwen3(); ll.attach(m, ll.OsfConfig(r=8))
    for stage in ("init", "trained"):
        if stage == "trained": train_steps(m, ids, lr=1e-3)
        f = ll.save(m, tmp_path / f"{stage}.safetensors")
        with safe_open(str(f), "pt") as h: keys = set(h.keys())
        assert {k.rsplit(".", 1)[1] for k in keys} == {"U", "S", "V"} and len(keys) == 3 * len(ll.adapter_layers(m))
        fresh = tiny_qwen3(); ll.load(fresh, f)
        assert torch.equal(logits(fresh, ids), logits(m, ids)), stage
        for (n, a), b in zip(ll.adapter_layers(m).items(), ll.adapter_layers(fresh).values()):
            for k, t in (*a.named_parameters(), *a.named_buffers()):
                assert torch.equal(t, dict((*b.named_parameters(), *b.named_buffers()))[k]), (stage, n, k)
    train_steps(m, ids, steps=2, lr=1e-3); train_steps(fresh, ids, steps=2, lr=1e-3)   # fresh AdamW on both: the same steps
    assert torch.equal(logits(fresh, ids), logits(m, ids))


def test_detach_is_exact_and_leaves_no_hook(ids):
    m = tiny_qwen3(); snap, y0 = snapshot(m), logits(m, ids)
    ll.attach(m, ll.OsfConfig(r=8)); train_steps(m, ids, lr=1e-3)
    ll.detach(m)
    assert_unchanged(m, snap); assert torch.equal(logits(m, ids), y0)
    assert all(not p._backward_hooks for p in m.parameters())


@pytest.mark.parametrize("kw,match", [(dict(r=32), "use r < 32"), (dict(r=64, target_names=("q_proj",)), "use r < 64"),
                                      (dict(r=4, rank_pattern={"up_proj": 64}), "use r < 64")], ids=str)
def test_rank_too_large_leaves_model_unchanged(kw, match):
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=match): ll.attach(m, ll.OsfConfig(**kw))   # v_proj is 64 -> 32, up_proj 64 -> 128
    assert_unchanged(m, snap)


@pytest.mark.parametrize("field,value", [("init_weights", "yes"), ("alpha_pattern", {"q_proj": 8}), ("r", 0)])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.OsfConfig(**{field: value})


def test_from_peft_refuses_splits_that_train_nothing(tmp_path):
    pm = peft.get_peft_model(tiny_qwen3(), peft.OSFConfig(target_modules=["q_proj"], effective_rank=1.0))   # keeps all: U_low empty
    pm.save_pretrained(tmp_path / "p")
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="nothing is trained"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)


def test_export_refuses_conv1d():
    from transformers import GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=64, n_layer=1, n_head=4, n_positions=32))
    ll.attach(m, ll.OsfConfig(r=4, target_names=("c_attn",)))
    with pytest.raises(ValueError, match="plain nn.Linear"): ll.to_peft(m, "/nonexistent/never-written")


def test_compiled_gradients_equal_eager_and_are_projected(ids):
    "torch.compile(fullgraph) traces the projection (no graph break): the same logits and projected gradients as eager."
    torch._dynamo.reset()
    m = tiny_qwen3().train(); ll.attach(m, ll.OsfConfig(r=8)); perturb_adapter(m)
    def step(fn):
        m.zero_grad(set_to_none=True); out = fn(input_ids=ids, labels=ids); out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
    y_e, g_e = step(m)
    y_c, g_c = step(torch.compile(m, backend="aot_eager", fullgraph=True))
    torch.testing.assert_close(y_c, y_e, atol=1e-5, rtol=1e-4)
    for n in g_e: torch.testing.assert_close(g_c[n], g_e[n], atol=1e-6, rtol=1e-4)
    for n, l in ll.adapter_layers(m).items():                             # the compiled gradients are projected
        if "Uh" in l._buffers: assert (l.Uh.T @ l.U.grad).abs().max() <= 1e-5 * l.U.grad.abs().max(), n
        if "Vh" in l._buffers: assert (l.V.grad @ l.Vh.T).abs().max() <= 1e-5 * l.V.grad.abs().max(), n
    torch._dynamo.reset()


# ---------------------------------------------------------------- FSDP2 on 2 gloo ranks: the projection sees whole factors
WORLD, STEPS = 2, 3
BATCHES = same_batches(STEPS, bs=2 * WORLD, T=8, seed=3)


def _fsdp_train(m, rank=0, world=1):
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    for ids in BATCHES:
        part = ids.chunk(world)[rank]
        m(input_ids=part, labels=part).loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)


def _fsdp_worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from torch.distributed.fsdp import fully_shard
    res = {}
    try:
        m = tiny_qwen3().train(); ll.attach(m, ll.OsfConfig(r=8))
        for block in m.model.layers: fully_shard(block)
        fully_shard(m)
        res["sharded"] = {type(p).__name__ for p in m.parameters() if p.requires_grad}
        _fsdp_train(m, rank, WORLD)
        res["state"] = ll.full_adapter_state(m)
        ll.save(m, Path(out) / "osf.safetensors")
    except Exception: res["error"] = traceback.format_exc()
    torch.save(res, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_fsdp2_training_equals_one_process(ids):
    out = tempfile.mkdtemp()
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_fsdp_worker, args=(port, out), nprocs=WORLD, start_method="fork")
    res = [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r in res: assert "error" not in r, r["error"]
    single = tiny_qwen3().train(); ll.attach(single, ll.OsfConfig(r=8))
    init = {k: v.clone() for k, v in ll.full_adapter_state(single).items()}
    _fsdp_train(single)
    want = ll.full_adapter_state(single)
    assert set(want) == {k for k in want if k.rsplit(".", 1)[1] in "USV"}   # the gathered state: U, S, V only
    moved = max((want[k] - init[k]).abs().max().item() for k in want)
    for rank, r in enumerate(res):
        assert r["sharded"] == {"DTensor"}
        worst = max((r["state"][k] - want[k]).abs().max().item() for k in want)
        print(f"OSF FSDP2 rank {rank}: adapter max|FSDP - single| {worst:.1e} (training moved it by {moved:.1e})")
        assert moved > 1e-4 and worst <= 1e-5
    loaded = tiny_qwen3(); ll.load(loaded, Path(out) / "osf.safetensors")   # the FSDP-saved file loads unsharded
    torch.testing.assert_close(logits(loaded, ids), logits(single.eval(), ids), atol=1e-5, rtol=1e-4)
