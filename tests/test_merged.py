"""`ll.merged` (nbs/05_deploy): W + ΔW swapped in for generation, for every registered variant. Inside, the logits
equal the hooked model's within the dtype's rounding (fp32 and bf16); on exit (also on an exception) the original
Parameter objects are back with their values, and `detach` is still exact. Refusals (4/8-bit bases, no fixed ΔW,
a forward that would train, nesting) are clear and leave the model as it was."""
import pytest, torch
import lora_lite as ll
from lora_lite.core import Variant
from conftest import tiny_qwen3, snapshot, assert_unchanged, token_batches, perturb_adapter, biased_qwen3, MOVE_STD

IDS = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(1))
# until every variant declares `example`: small configs on every projection first, then the variant's defaults
FALLBACK = [dict(r=4, target_names=("proj",)), dict(r=4, target_names=("proj",), block_size=16, group_size=16), dict(r=16, target_names=("proj",)), dict(target_names=("proj",)), dict(r=4), {}]


def logits(m, ids=IDS):
    with torch.no_grad(): return m(input_ids=ids).logits


def adapted(name, model=None, std=0.05):
    "`model` (default the biased test Qwen3) with variant `name` attached from its `example` (or a fallback), perturbed."
    m = biased_qwen3() if model is None else model
    V, errors = ll.VARIANTS[name], []
    known = V.config_cls.__dataclass_fields__
    for fields in ([V.example] if V.example else FALLBACK):
        try:
            cfg = ll.get_config(name, **{k: v for k, v in fields.items() if k in known})
            torch.manual_seed(0)
            ll.attach(m, cfg, calibration_data=token_batches() if V.needs_calibration else None)
            break
        except ValueError as e: errors.append(str(e))
    else: raise AssertionError(f"{name}: no test config attaches: {errors}")
    perturb_adapter(m, std=MOVE_STD.get(name, std))
    return m


@pytest.mark.parametrize("name", sorted(ll.VARIANTS))
def test_merged_equals_hooked_and_restores_exactly(name):
    m = adapted(name)
    if not ll.VARIANTS[name].has_delta:                    # no fixed ΔW (Lily): refused with one message, model as it was
        snap = snapshot(m)
        with pytest.raises(RuntimeError, match="no fixed ΔW"):
            with ll.merged(m): pass
        assert_unchanged(m, snap, f"{name}: refused merged"); return
    y = logits(m)
    with ll.disabled(m): y0 = logits(m)
    assert (y - y0).abs().max() > 1e-3, f"{name}: the perturbed adapter doesn't change the logits; the test would be vacuous"
    params, snap = dict(m.named_parameters()), snapshot(m)
    layers = ll.adapter_layers(m)
    with ll.merged(m):
        inside = logits(m)
        for n in layers:   # every adapted layer holds a new weight tensor, not the original written
            assert m.get_submodule(n).weight is not params[f"{n}.weight"], f"{name}: {n} still holds its original weight"
        assert not any(l.enabled for l in layers.values()), f"{name}: hooks still on inside merged"
        hooked = [n for n in layers if m.get_submodule(n)._forward_hooks or m.get_submodule(n)._forward_pre_hooks]
        assert not hooked, f"{name}: {hooked[:2]} keep a hook inside merged (a hooked module leaves PyTorch's fast call path)"
    assert all(p is params[n] for n, p in m.named_parameters()), f"{name}: a Parameter object was replaced"
    assert_unchanged(m, snap, f"{name}: after merged")
    d = (inside - y).abs().max().item()
    assert d <= 1e-5, f"{name}: merged logits differ from the hooked model's by {d:.2e} (fp32)"
    assert torch.equal(logits(m), y), f"{name}: the hooked model changed after merged"
    ll.detach(m)
    assert torch.equal(logits(m), logits(biased_qwen3())), f"{name}: detach after merged is not the exact base"


@pytest.mark.parametrize("name", sorted(ll.VARIANTS))
def test_merged_bf16_within_rounding(name):
    "bf16 base, fp32 adapter: merged vs hooked differ by rounding W + ΔW to bf16 once per layer; bound: the model's own bf16 noise."
    if not ll.VARIANTS[name].has_delta: pytest.skip(f"{name} has no fixed ΔW: nothing to merge (its refusal is tested above)")
    m32 = adapted(name)
    y32 = logits(m32)
    m = adapted(name, model=biased_qwen3().to(torch.bfloat16))
    with torch.no_grad():   # the same adapter values as the fp32 model (attach/perturb are seeded alike; copy to be sure)
        for (n, p), (n2, q) in zip(ll.adapter_layers(m).items(), ll.adapter_layers(m32).items()):
            p.load_state_dict(q.state_dict())
        if hasattr(m32, "ll_shared"): m.ll_shared.load_state_dict(m32.ll_shared.state_dict())   # tensors shared by layers
    y = logits(m).float()
    noise = (y - y32).abs().max().item()          # hooked bf16 vs hooked fp32: the dtype's rounding through this model
    params = dict(m.named_parameters())
    with ll.merged(m):
        inside = logits(m).float()
        w = m.get_submodule(next(iter(ll.adapter_layers(m)))).weight
    assert w.dtype == torch.bfloat16, f"{name}: the merged weight is {w.dtype}, not the base's bf16"
    assert all(p is params[n] for n, p in m.named_parameters())
    d = (inside - y).abs().max().item()
    assert d <= 2 * noise, f"{name}: bf16 merged vs hooked {d:.3e}; bf16 vs fp32 noise {noise:.3e}"


def test_merged_generate_same_tokens_without_no_grad():
    "generate runs under no_grad itself: no wrapper needed, greedy tokens equal the hooked model's."
    m = adapted("lora")
    prompt = IDS[:1, :4]
    gen = lambda: m.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    ref = gen()
    with ll.merged(m): fast = gen()
    assert torch.equal(fast, ref)


def test_merged_restores_on_exception():
    m = adapted("dora")
    params, snap = dict(m.named_parameters()), snapshot(m)
    with pytest.raises(KeyError, match="inside"):
        with ll.merged(m): raise KeyError("inside")
    assert all(p is params[n] for n, p in m.named_parameters())
    assert_unchanged(m, snap, "merged that raised")


def test_merged_refuses_a_training_forward():
    m = adapted("lora")
    snap = snapshot(m)
    with pytest.raises(RuntimeError, match="adapter would get no gradient"):
        with ll.merged(m): m(IDS, labels=IDS).loss.backward()
    assert_unchanged(m, snap, "refused training forward")
    assert all(p.grad is None for p in m.parameters())
    with ll.merged(m), torch.no_grad(): m(IDS)                            # fine without autograd ...
    for p in m.parameters(): p.requires_grad_(False)
    with ll.merged(m): m(IDS)                                             # ... or with a frozen adapter


def test_merged_refuses_a_method_without_a_fixed_delta(monkeypatch):
    m = adapted("lora")
    snap = snapshot(m)
    monkeypatch.setattr(type(ll.adapter_layers(m)["model.layers.1.self_attn.v_proj"]), "delta_weight", Variant.delta_weight)
    with pytest.raises(RuntimeError, match="no fixed ΔW"):
        with ll.merged(m): pass
    assert_unchanged(m, snap, "refused merged (no ΔW)")
    monkeypatch.undo()
    monkeypatch.setattr(type(ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]), "has_delta", False, raising=False)
    with pytest.raises(RuntimeError, match="no fixed ΔW"):
        with ll.merged(m): pass
    assert_unchanged(m, snap, "refused merged (has_delta False)")


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_merged_refuses_quantized_bases(quant, tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    tiny_qwen3(hidden=64).save_pretrained(tmp_path)
    q = (BitsAndBytesConfig(load_in_8bit=True) if quant == "int8" else
         BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    m = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=q, device_map="cpu").train()
    ll.attach(m, ll.LoRAConfig(r=4))
    snap = snapshot(m)
    with pytest.raises(RuntimeError, match=f"{'4' if quant == 'nf4' else '8'}-bit layer"):
        with ll.merged(m): pass
    assert_unchanged(m, snap, f"refused merged ({quant})")


def test_merged_nesting_and_switches():
    m = adapted("lora")
    y = logits(m)
    with ll.disabled(m): y0 = logits(m)
    with ll.merged(m):
        with pytest.raises(RuntimeError, match="inside ll.merged"):
            with ll.merged(m): pass
        with pytest.raises(RuntimeError, match="inside ll.merged"):
            with ll.disabled(m): pass
        with pytest.raises(RuntimeError, match="inside ll.merged"): ll.merged_state_dict(m)
        assert (logits(m) - y).abs().max() <= 1e-5                       # the refusals changed nothing inside
    with ll.disabled(m), ll.merged(m):                                    # disabled layers stay the base: the base model
        assert torch.equal(logits(m), y0)
    assert torch.equal(logits(m), y)


def test_merged_conv1d():
    "GPT-2's Conv1D stores Wᵀ; the merged weight keeps that layout."
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=32, n_embd=64, n_layer=2, n_head=2)).eval()
    ll.attach(m, ll.get_config("ia3", target_names=("c_attn", "c_proj", "c_fc")))
    perturb_adapter(m, std=0.1)
    y = logits(m)
    w = m.transformer.h[0].attn.c_attn.weight
    with ll.merged(m):
        inside = logits(m)
        assert m.transformer.h[0].attn.c_attn.weight.shape == w.shape
    assert m.transformer.h[0].attn.c_attn.weight is w
    assert (inside - y).abs().max() <= 1e-5


def aten_calls(m, ids=IDS[:1, :4]) -> list:
    "(op, shapes, strides, dtypes) of every tensor operation of one forward of `m`, in order."
    from torch.utils._python_dispatch import TorchDispatchMode
    calls = []
    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ts = [a for a in args if torch.is_tensor(a)]
            calls.append((str(func), [tuple(t.shape) for t in ts], [t.stride() for t in ts], [t.dtype for t in ts]))
            return func(*args, **(kwargs or {}))
    with torch.no_grad(), Record(): m(input_ids=ids)
    return calls


@pytest.mark.parametrize("name", sorted(n for n, V in ll.VARIANTS.items() if V.has_delta))
def test_merged_runs_exactly_the_base_models_ops(name):
    "Inside `merged` a forward is the base model's: the same tensor ops on tensors of the same shapes, strides and dtypes."
    base = aten_calls(biased_qwen3())
    m = adapted(name)
    with ll.merged(m): inside = aten_calls(m)
    assert len(inside) == len(base), f"{name}: {len(inside)} tensor ops inside merged, the base model runs {len(base)}"
    diff = next((i for i, (a, b) in enumerate(zip(inside, base)) if a != b), None)
    assert diff is None, f"{name}: op {diff} inside merged is {inside[diff]}, the base model's is {base[diff]}"


# configs past each variant's `example`, on the forms `delta_weight` builds without a d × d matrix
BEYOND_EXAMPLE = [("road", dict(road_variant=v, group_size=4)) for v in ("road_1", "road_2", "road_4")] + [
    ("oft", dict(oft_block_size=4, block_share=True)), ("oft", dict(oft_block_size=8, coft=True, eps=0.5)),
    ("oft", dict(oft_block_size=4, use_cayley_neumann=False)), ("boft", dict(boft_block_size=4, boft_n_butterfly_factor=2)),
    ("boft", dict(boft_block_size=4, boft_n_butterfly_factor=3)), ("hra", dict(r=4)), ("hra", dict(r=3, apply_GS=True)),
    ("waveft", dict(n_frequency=60)), ("waveft", dict(n_frequency=60, use_idwt=False)), ("gralora", dict(r=8, gralora_k=2, hybrid_r=2))]


@pytest.mark.parametrize("name,kw", BEYOND_EXAMPLE, ids=str)
@pytest.mark.parametrize("d_in,d_out", [(32, 24), (32, 23)], ids=str)
def test_delta_weight_is_the_hooked_layers_linear_part(name, kw, d_in, d_out):
    "ΔW = (f(I) − f(0))ᵀ − W for the hooked layer f (affine in x, its bias cancels): what `merged` and `save_merged` add to W."
    if name in ("road", "gralora") and d_out % 4: pytest.skip("needs an output width its groups divide")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(d_in, d_out))
    ll.attach(m, ll.get_config(name, target_names=("0",), **kw))
    perturb_adapter(m, std=0.2); m.eval()
    with torch.no_grad():
        ref = (m(torch.eye(d_in)) - m(torch.zeros(1, d_in))).T - m[0].weight
        d = ll.adapter_layers(m)["0"].delta_weight(m[0])
    assert ref.abs().max() > 1e-3, f"{name} {kw}: the perturbed adapter is still the identity; the test would be vacuous"
    assert d.shape == (d_out, d_in) and d.is_contiguous(), f"{name} {kw}: ΔW {tuple(d.shape)}, contiguous={d.is_contiguous()}"
    torch.testing.assert_close(d, ref, atol=2e-5, rtol=1e-4, msg=lambda s: f"{name} {kw}: {s}")
