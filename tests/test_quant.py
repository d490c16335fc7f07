"""Every variant on bitsandbytes bases loaded as users do (`from_pretrained(dir, quantization_config=...)`):
4-bit nf4, fp4, nf4 + double quant, and 8-bit; identity, gradients after an eval pass, detach, save/load,
parity with the dequantized fp32 model, the CPU repacking trap, and no dense weight kept alive."""
import gc, tempfile, warnings
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import token_batches, perturb_adapter

bnb = pytest.importorskip("bitsandbytes")
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

HIDDEN = 128   # every 4-bit width a multiple of 64: q/o 128->128, k/v 128->64, gate/up 128->256, down 256->128
TARGETS = (r"proj",)   # all seven projections of each block, 14 layers, incl. biased q/k/v/o
VARIANTS = sorted(ll.VARIANTS)   # every registered variant, with the small config it declares (`example`)
QUANT = dict(glora=dict(config_D_E="none"),   # GLoRA's D scales the bias, which is 0 here: no gradient to check
             frod=dict(target_names=("q_proj", "o_proj", "gate_proj", "up_proj")))   # FRoD: kinds whose 2 blocks stack more rows than inputs
QUANTS = {"nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
          "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float32),
          "nf4_dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                         bnb_4bit_compute_dtype=torch.float32),
          "int8": dict(load_in_8bit=True)}
FOUR_BIT = [q for q in QUANTS if q != "int8"]
READS_W_AT_INIT = {"pissa", "dora", "delora", "hira", "deft", "psoft", "mica", "kasa", "peanut", "glora", "adamss", "osf", "tinylora", "frod", "miss"} | {v for v in VARIANTS if v.startswith("antipasto")}
IDENTITY_ATOL = dict(dora=2e-6, hra=2e-6, deft=1e-6)   # DeFT: its removal term reads y (measured 3.6e-7)   # adapter math rounds at init (measured <= 5.1e-7); the others are exact
BF16_IDENTITY_ATOL = dict(deft=1e-2)        # DeFT's removal term reads the bf16-rounded y (as PEFT's does): flips last bits (2.5e-3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    "Tiny matmuls: one thread is faster, and 2 OpenMP threads on a loaded 2-core box are ~1000x slower."
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def qdir():
    d = tempfile.mkdtemp()
    tiny_qwen3(hidden=HIDDEN, attention_bias=True).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


def load_q(d, quant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(d, quantization_config=BitsAndBytesConfig(**QUANTS[quant]), device_map="cpu")


def config(name, **kw): return ll.get_config(name, **{"target_names": TARGETS, **ll.VARIANTS[name].example, **QUANT.get(name, {}), **kw})


def attach(m, name, **kw):
    calib = token_batches() if ll.VARIANTS[name].needs_calibration else None
    return ll.attach(m, config(name, **kw), calibration_data=calib)


def bnb_layers(m): return {n: x for n, x in m.named_modules() if isinstance(x, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))}


def quant_tensors(m) -> dict:
    "Tensors of bnb's own state that are neither parameters nor buffers (4-bit quant_state, 8-bit CB/SCB)."
    out = {}
    for n, x in bnb_layers(m).items():
        qs = getattr(x.weight, "quant_state", None)
        if qs is not None:
            out.update({f"{n}.qs.{k}": v for k, v in qs.as_dict().items() if torch.is_tensor(v)})
        for k in ("CB", "SCB"):
            for owner, tag in ((x.weight, "w"), (getattr(x, "state", None), "state")):
                if torch.is_tensor(getattr(owner, k, None)): out[f"{n}.{tag}.{k}"] = getattr(owner, k)
    return out


def ours(n): return ".ll_adapter." in n or n.startswith("ll_shared.")   # a layer's adapter tensor, or a shared one


def base_state(m) -> dict:
    "Everything of the base a hook-only adapter must leave bit-exact (incl. bnb's quantization state)."
    st = {f"p.{n}": p for n, p in m.named_parameters() if not ours(n)}
    st.update({f"b.{n}": b for n, b in m.named_buffers() if not ours(n)})
    st.update({f"q.{n}": t for n, t in quant_tensors(m).items()})
    return {k: (v.detach().clone(), v.dtype) for k, v in st.items()}


def assert_base_equal(m, snap):
    now = base_state(m)
    assert now.keys() == snap.keys()
    for k, (v, dt) in snap.items():
        assert now[k][1] == dt and torch.equal(now[k][0], v), f"base tensor {k} changed"


def seeded_logits(m, ids):
    "Logits after seeding torch's global RNG: a method that samples in training (PVeRA) draws the same ε for both models."
    torch.manual_seed(0); return logits(m, ids)


def logits(m, ids):
    with torch.no_grad(): return m(ids).logits


def keep_ablation_on(m):
    "perturb_adapter may push antipasto_ablate's alpha below 0, where clamp(alpha, 0, 1) cuts every gradient."
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("ll_adapter.alpha"): p.abs_()


def adapter_params(m): return {n: p for n, p in m.named_parameters() if ours(n)}


def cpu_flags(m): return {n: getattr(x, "support_avx512bf16_for_cpu", None) for n, x in bnb_layers(m).items()}


def packed(m): return [n for n, x in bnb_layers(m).items() if getattr(getattr(x.weight, "quant_state", None), "packing_format_for_cpu", False)]


# ---------------------------------------------------------------- identity, grads after eval, detach, save/load
@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("name", VARIANTS)
def test_invariants(qdir, ids, name, quant, tmp_path):
    m = load_q(qdir, quant).train()                      # train mode: no CPU repacking, same kernel before/after
    y0 = logits(m, ids)
    snap, flags0, rg0 = base_state(m), cpu_flags(m), {n: p.requires_grad for n, p in m.named_parameters()}
    kw = dict(alpha0=0.0) if name == "antipasto_ablate" else {}   # ablate starts off identity by design (alpha0=0.05)
    attach(m, name, **kw)
    d = (logits(m, ids) - y0).abs().max().item()
    if ll.VARIANTS[name].identity_at_init(config(name, **kw)):
        assert d <= IDENTITY_ATOL.get(name, 0.0), f"identity at init: {name}/{quant} max|diff|={d:.2e}"
    if name == "antipasto_ablate":
        ll.detach(m); attach(m, name)
    assert_base_equal(m, snap)
    assert {n for n, p in m.named_parameters() if p.requires_grad} == set(adapter_params(m))
    # evaluate first (an eval-mode forward would repack 4-bit weights on CPU), then train: every tensor gets a gradient
    perturb_adapter(m, std=0.05)
    keep_ablation_on(m)
    m.eval(); logits(m, ids)
    assert not packed(m)
    m.train()
    m(ids, labels=ids).loss.backward()
    for n, p in adapter_params(m).items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}/{quant}: no gradient on {n}"
    torch.optim.SGD(adapter_params(m).values(), lr=0.1).step()
    y1 = seeded_logits(m, ids)
    assert (y1 - y0).abs().max() > 1e-4
    assert_base_equal(m, snap)
    # save -> load on a freshly loaded quantized model: bit-exact
    ll.save(m, tmp_path / "a.safetensors")
    m2 = load_q(qdir, quant).train()
    ll.load(m2, tmp_path / "a.safetensors")
    assert torch.equal(seeded_logits(m2, ids), y1)
    sd1, sd2 = ({n: t for n, t in x.state_dict().items() if ours(n)} for x in (m, m2))
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    # detach: outputs and every base tensor bit-exact, hooks gone, repacking switch restored
    ll.detach(m)
    assert torch.equal(logits(m, ids), y0)
    assert_base_equal(m, snap)
    assert sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules()) == 0
    assert {n: p.requires_grad for n, p in m.named_parameters()} == rg0
    assert cpu_flags(m) == flags0


# ---------------------------------------------------------------- parity with the dequantized fp32 model
def dequantized(qm):
    "A fp32 model of the same config whose linear weights are `dense_weight` of the quantized ones."
    ref = tiny_qwen3(hidden=HIDDEN, attention_bias=True)
    qmods = dict(qm.named_modules())
    with torch.no_grad():
        for n, p in ref.named_parameters():
            mod, _, leaf = n.rpartition(".")
            src = ll.dense_weight(qmods[mod]) if mod in bnb_layers(qm) and leaf == "weight" else qm.get_parameter(n)
            p.copy_(src.float())
    return ref.train()


# Measured (bnb 0.50.2, CPU, train mode): bnb's CPU kernels dequantize and run an fp32 matmul, so 4-bit matches the
# dequantized fp32 model exactly (0.0) and 8-bit (MatMul8bitFp in training) to ~5e-7. In eval mode 8-bit runs
# int8 activations (MatMul8bitLt): logits move by ~1e-2 for the base model and the adapted one alike, which swamps
# a small adapter's effect, so there only the max|Δ| bound applies.
TOL = {"4bit": dict(train=(1e-5, 1e-4), eval=(1e-5, 1e-4)), "int8": dict(train=(1e-5, 1e-3), eval=(5e-2, None))}
# FRoD rewrites the input x (x + ((xV)(Sᵀ+diag(λ-λ₀))/λ₀)V⁻¹) before the int8 kernel: the perturbed adapter scales
# activations up, and LLM.int8's activation rounding grows with them (measured 6.2e-2 vs 9.7e-3 for the base alone).
INT8_EVAL_FLOOR = {"frod": 0.1}


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("name", VARIANTS)
def test_matches_dequantized_fp32(qdir, ids, name, quant, tmp_path):
    m = load_q(qdir, quant).train()
    ref = dequantized(m)
    attach(m, name)
    perturb_adapter(m, std=0.05); keep_ablation_on(m)
    ll.save(m, tmp_path / "a.safetensors")
    ll.load(ref, tmp_path / "a.safetensors")             # the same adapter tensors (incl. SVD/CorDA buffers)
    for mode in ("train", "eval"):
        for x in (m, ref): x.train(mode == "train")
        yq, yr = seeded_logits(m, ids), seeded_logits(ref, ids)   # the same draws for a sampling method (PVeRA)
        with _no_adapter(m), _no_adapter(ref):
            yq0, yr0 = logits(m, ids), logits(ref, ids)
        floor, rel = TOL["int8" if quant == "int8" else "4bit"][mode]
        if quant == "int8" and mode == "eval": floor = INT8_EVAL_FLOOR.get(name, floor)
        base_err, err = (yq0 - yr0).abs().max().item(), (yq - yr).abs().max().item()
        eff_err = (((yq - yq0) - (yr - yr0)).norm() / (yr - yr0).norm()).item()
        assert (yr - yr0).abs().max() > 1e-3
        assert err <= max(floor, 2 * base_err), f"{name}/{quant}/{mode}: max|Δ| {err:.2e} (base kernels alone: {base_err:.2e})"
        assert rel is None or eff_err <= rel, f"{name}/{quant}/{mode}: the adapter's effect differs by {eff_err:.2e} (relative)"
    assert not packed(m)
    # gradients agree with the fp32 model's too
    for x in (m, ref): x.train(); torch.manual_seed(0); x(ids, labels=ids).loss.backward()
    gq, gr = adapter_params(m), adapter_params(ref)
    for n in gr:
        cos = torch.nn.functional.cosine_similarity(gq[n].grad.flatten(), gr[n].grad.flatten(), dim=0).item()
        assert cos > 0.9999, f"{name}/{quant}: gradient of {n} cos={cos:.5f} vs fp32"


class _no_adapter:
    "Temporarily run the base model only: every adapter hook is bypassed (the adapter child stays in place)."
    def __init__(self, m): self.layers = list(ll.adapter_layers(m).values())
    def __enter__(self):
        for l in self.layers: l._fwd, l.forward = l.forward, (lambda *a: a[-1] if len(a) == 2 else a[0])
    def __exit__(self, *exc):
        for l in self.layers: l.forward = l._fwd; del l._fwd


# ---------------------------------------------------------------- the CPU repacking trap, and 8-bit after a forward
@pytest.mark.parametrize("quant", FOUR_BIT)
@pytest.mark.parametrize("name", VARIANTS)
def test_eval_before_attach_4bit(qdir, ids, name, quant):
    "An eval forward before attach repacks the 4-bit weights: reading W fails cleanly at attach, training refuses."
    m = load_q(qdir, quant).eval()
    y0 = logits(m, ids)
    if not packed(m): pytest.skip("this CPU's bitsandbytes does not repack 4-bit weights")
    snap, hooks = base_state(m), sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())
    if name in READS_W_AT_INIT:
        with pytest.raises(RuntimeError, match="repacked by bitsandbytes"):
            attach(m, name)
        assert not ll.is_attached(m) and not adapter_params(m)
        assert_base_equal(m, snap)
        assert sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules()) == hooks
        return
    attach(m, name)
    if ll.VARIANTS[name].identity_at_init(config(name)):    # C3A's and FourierFT's defaults (PEFT's) start off the base
        d = (logits(m, ids) - y0).abs().max().item()        # inference on the packed weights still works (identity);
        assert d <= (2e-3 if name in IDENTITY_ATOL else 0.0), d   # HRA's x·H·H rounding goes through the packed bf16 kernel
    m.train()
    with pytest.raises(RuntimeError, match="repacked for CPU inference"):
        m(ids, labels=ids)
    ll.detach(m)
    assert_base_equal(m, snap)


@pytest.mark.parametrize("name", VARIANTS)
def test_eval_before_attach_8bit(qdir, ids, name):
    "8-bit has no repacking; bnb's first forward moves CB/SCB to `module.state` and W must still be read right."
    a, b = load_q(qdir, "int8"), load_q(qdir, "int8").eval()
    logits(b, ids)
    assert all(x.weight.SCB is None for x in bnb_layers(b).values())
    for x in (a, b): torch.manual_seed(0); attach(x, name)
    sa, sb = ({n: t for n, t in x.state_dict().items() if ours(n)} for x in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "adapter init depends on whether a forward ran first"
    perturb_adapter(b, std=0.05); keep_ablation_on(b)
    b.train(); b(ids, labels=ids).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter_params(b).values())


# ---------------------------------------------------------------- memory: no dense weight kept alive
def _storages(tensors) -> dict:
    out = {}
    for t in tensors:
        try: s = t.untyped_storage(); out[s.data_ptr()] = s.nbytes()
        except RuntimeError: pass        # fake/functional tensors a torch.compile run left behind have no real storage
    return out


def live_tensor_bytes() -> int:
    "Bytes of all distinct CPU tensor storages the Python process holds (via gc)."
    gc.collect()
    ts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # some module objects warn when isinstance-probed
        for o in gc.get_objects():
            try:
                if torch.is_tensor(o) and o.device.type == "cpu" and not o.is_meta: ts.append(o)
            except Exception: pass
    return sum(_storages(ts).values())


def model_tensor_bytes(m) -> int:
    "Bytes of every tensor reachable from the model: parameters, buffers (adapters included) and bnb's quant state."
    return sum(_storages(list(m.parameters()) + list(m.buffers()) + list(quant_tensors(m).values())).values())


@pytest.mark.parametrize("quant", ["nf4", "nf4_dq", "int8"])
@pytest.mark.parametrize("name", VARIANTS)
def test_no_dense_copy_kept(qdir, ids, name, quant):
    m = load_q(qdir, quant).train()
    logits(m, ids)                                          # bnb's lazy state (8-bit CB/SCB move) settles first
    calib = token_batches() if ll.VARIANTS[name].needs_calibration else None
    cfg = config(name)
    model0, live0 = model_tensor_bytes(m), live_tensor_bytes()
    ll.attach(m, cfg, calibration_data=calib)
    model1, live1 = model_tensor_bytes(m), live_tensor_bytes()
    ts = [t for l in ll.adapter_layers(m).values() for t in (*l.parameters(), *l.buffers())]   # saved or recomputed
    ts += [*m.ll_shared.parameters(), *m.ll_shared.buffers()] if hasattr(m, "ll_shared") else []   # shared tensors once
    adapter = sum(_storages(ts).values())
    smallest_dense = min(x.in_features * x.out_features * 4 for x in bnb_layers(m).values())
    assert model1 - model0 == adapter, (name, quant, model1 - model0, adapter)
    extra = live1 - live0 - adapter                        # measured: exactly 0 for every variant and precision
    assert abs(extra) <= 1024 < smallest_dense, f"{name}/{quant}: {extra} live bytes beyond the adapter's {adapter}"


# ---------------------------------------------------------------- bf16 compute dtype: bitsandbytes writes the bias itself
def load_bf16_compute(d):
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(d, quantization_config=q, device_map="cpu").train()


def test_bnb_casts_bias_itself(qdir, ids):
    "Reported, not ours: Linear4bit.forward does `bias.data = bias.data.to(compute dtype)` on a plain model."
    m = load_bf16_compute(qdir)
    b = m.model.layers[0].self_attn.q_proj.bias
    assert b.dtype == torch.float32
    logits(m, ids)                                          # no lora_lite anywhere
    assert b.dtype == torch.bfloat16


@pytest.mark.parametrize("name", VARIANTS)
def test_bf16_compute(qdir, ids, name):
    "nf4 with bf16 compute: identity (to fp32 rounding of the adapter math), gradients after eval, exact detach."
    m = load_bf16_compute(qdir)
    y0 = logits(m, ids)                                     # bnb's own bias cast happens here, before the snapshot
    snap = base_state(m)
    kw = dict(alpha0=0.0) if name == "antipasto_ablate" else {}
    attach(m, name, **kw)
    # exact where the adapter adds an exact 0; DoRA/HRA's fp32 rounding can flip a bf16 rounding in the next kernel
    if ll.VARIANTS[name].identity_at_init(config(name, **kw)):
        assert (logits(m, ids) - y0).abs().max() <= BF16_IDENTITY_ATOL.get(name, 1e-4 if name in IDENTITY_ATOL else 0.0)
    perturb_adapter(m, std=0.05); keep_ablation_on(m)
    m.eval(); logits(m, ids); m.train()
    m(ids, labels=ids).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in adapter_params(m).values())
    ll.detach(m)
    assert torch.equal(logits(m, ids), y0)
    assert_base_equal(m, snap)
