"Invariants of DESIGN §2 and the bad-input contract, on a tiny Qwen3 and on a user-defined module."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3, toy_model, check_variant
from conftest import snapshot, assert_unchanged, perturb_adapter, token_batches


# ---------------------------------------------------------------- the README quickstart, verbatim
def test_readme_quickstart(tmp_path, monkeypatch):
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## Quickstart.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    env = {}
    exec(code, env)                                       # exactly as a reader copies it
    assert len(ll.adapter_layers(env["model"])) == 4 and (tmp_path / "adapter.safetensors").exists()
    assert ll.adapter_config(env["model"]).dtype == torch.bfloat16


# ---------------------------------------------------------------- invariants on a tiny Qwen3
def test_invariants_qwen3(qwen, ids, tmp_path):
    base = snapshot(qwen)
    y0 = qwen(ids).logits
    names = ll.attach(qwen, ll.LoRAConfig(r=4, alpha=8))
    assert len(names) == 4 and all(n.endswith(("q_proj", "v_proj")) for n in names)
    assert torch.equal(qwen(ids).logits, y0)                                   # 3. identity at init
    trainable = [n for n, p in qwen.named_parameters() if p.requires_grad]
    assert trainable and all(".ll_adapter." in n for n in trainable)          # 4. only adapter params train
    qwen.train()
    qwen(ids, labels=ids).loss.backward()
    assert all(p.grad is None for n, p in qwen.named_parameters() if ".ll_adapter." not in n)
    assert all(p.grad is not None for n, p in qwen.named_parameters() if p.requires_grad)
    qwen.eval(); perturb_adapter(qwen)
    y1 = qwen(ids).logits
    assert not torch.allclose(y1, y0)
    f = ll.save(qwen, tmp_path / "a.safetensors")
    ll.detach(qwen)
    assert torch.equal(qwen(ids).logits, y0)                                   # 2. detach exact
    qwen.zero_grad(set_to_none=True)
    assert_unchanged(qwen, base)
    cfg = ll.load(qwen, f)                                                      # 5. save -> load bit-exact
    assert cfg == ll.LoRAConfig(r=4, alpha=8)
    assert torch.equal(qwen(ids).logits, y1)
    ll.detach(qwen); assert_unchanged(qwen, base)


@pytest.mark.parametrize("variant", ["lora", "ia3_ff"])     # an output hook and an input hook
def test_hooks_on_the_adapter_run_when_decoding(variant):
    "Without autograd the hook calls the adapter's forward directly, unless a hook on the adapter or on every module would run."
    from torch import nn
    lin = nn.Sequential(nn.Linear(8, 8)); x = torch.randn(2, 8)
    ll.attach(lin, ll.get_config(variant, target_names=("0",), **({"r": 2} if variant == "lora" else {})))
    a, calls = lin[0].ll_adapter, []
    for p in a.parameters(): torch.nn.init.normal_(p)
    with torch.no_grad(): y_plain = lin(x)
    h = a.register_forward_hook(lambda m, args, out: calls.append("own"))
    g = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: calls.append("global") if m is a else None)
    try:
        with torch.no_grad(): y = lin(x)
        with torch.enable_grad(): lin(x)
    finally: h.remove(); g.remove()
    assert calls == ["global", "own"] * 2 and torch.equal(y, y_plain)
    with torch.no_grad(): assert torch.equal(lin(x), y_plain) and calls == ["global", "own"] * 2   # removed: not called


def test_base_requires_grad_flags_restored(qwen):
    qwen.model.embed_tokens.weight.requires_grad_(False)                        # a user's own freezing
    base = snapshot(qwen)
    ll.attach(qwen, ll.LoRAConfig()); ll.detach(qwen)
    assert_unchanged(qwen, base)


def test_deepcopy_runs_its_own_adapter(qwen, ids):
    ll.attach(qwen, ll.LoRAConfig(r=4)); perturb_adapter(qwen)
    twin = copy.deepcopy(qwen)
    perturb_adapter(twin, seed=5)
    assert not torch.allclose(twin(ids).logits, qwen(ids).logits)
    ll.detach(twin)
    assert ll.is_attached(qwen) and torch.equal(twin(ids).logits, copy.deepcopy(twin)(ids).logits)


def test_layers_and_excludes(qwen):
    names = ll.attach(qwen, ll.LoRAConfig(target_names=["proj"], layers=[1], exclude_names=["o_proj", "mlp"]))
    assert sorted(n.split(".")[-1] for n in names) == ["k_proj", "q_proj", "v_proj"] and all(".1." in n for n in names)


def test_conv1d_target():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32)).eval()
    ids = torch.randint(0, 64, (2, 8))
    y0 = m(ids).logits
    names = ll.attach(m, ll.LoRAConfig(r=4, target_names=["c_attn", "c_fc"]))
    assert len(names) == 4 and torch.equal(m(ids).logits, y0)
    perturb_adapter(m)
    for n, l in ll.adapter_layers(m).items():
        mod, x = m.get_submodule(n), torch.randn(3, l.d_in)
        W = ll.dense_weight(mod)
        torch.testing.assert_close(mod(x), torch.nn.functional.linear(x, W + l.delta_weight(mod), mod.bias))
    ll.detach(m); assert torch.equal(m(ids).logits, y0)


@pytest.mark.parametrize("base_dtype,adapter_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)])
def test_mixed_dtypes(base_dtype, adapter_dtype, ids, tmp_path):
    m = tiny_qwen3().to(base_dtype)
    y0 = m(ids).logits
    ll.attach(m, ll.LoRAConfig(r=4, dtype=adapter_dtype))
    assert all(p.dtype == adapter_dtype for p in m.parameters() if p.requires_grad)
    assert torch.equal(m(ids).logits, y0)
    m.train(); out = m(ids, labels=ids)
    assert out.logits.dtype == base_dtype
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    m.eval(); perturb_adapter(m); y1 = m(ids).logits
    ll.save(m, tmp_path / "a.safetensors"); ll.detach(m)
    assert torch.equal(m(ids).logits, y0)
    ll.load(m, tmp_path / "a.safetensors"); assert torch.equal(m(ids).logits, y1)


# ---------------------------------------------------------------- LoRA == PEFT LoRA
@pytest.mark.parametrize("rslora,bias", [(False, False), (True, True)])
def test_lora_matches_peft(rslora, bias, ids):
    from peft import LoraConfig, get_peft_model
    m = tiny_qwen3(attention_bias=bias)
    ref = copy.deepcopy(m)
    ll.attach(m, ll.LoRAConfig(r=4, alpha=8, use_rslora=rslora)); perturb_adapter(m, std=0.1)
    pm = get_peft_model(ref, LoraConfig(r=4, lora_alpha=8, use_rslora=rslora, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    for n, l in ll.adapter_layers(m).items():
        pl = pm.base_model.model.get_submodule(n)
        with torch.no_grad():
            pl.lora_A["default"].weight.copy_(l.A); pl.lora_B["default"].weight.copy_(l.B)
    diff = (m(ids).logits - pm(ids).logits).abs().max().item()
    assert diff <= 1e-5, diff


def test_every_layer_knows_whether_its_base_has_a_bias(tmp_path):
    "attach and load pass `bias=` to every variant (Variant.has_bias; GLoRA's bias paths hang on it): q_proj has one here, down_proj not."
    m = tiny_qwen3(attention_bias=True); ll.attach(m, ll.LoRAConfig(r=4, target_names=("q_proj", "down_proj")))
    ll.save(m, tmp_path / "a.safetensors")
    fresh = tiny_qwen3(attention_bias=True); ll.load(fresh, tmp_path / "a.safetensors")
    for model in (m, fresh):
        got = {n.rsplit(".", 1)[1]: l.has_bias for n, l in ll.adapter_layers(model).items()}
        assert got == {"q_proj": True, "down_proj": False}, got
    assert not ll.LoRA(ll.LoRAConfig(), 4, 3).has_bias                 # built by hand: no bias unless told


def test_lora_dropout_train_only(ids):
    m = tiny_qwen3(); ll.attach(m, ll.LoRAConfig(r=4, dropout=0.5)); perturb_adapter(m, std=0.5)
    assert torch.equal(m(ids).logits, m(ids).logits)
    m.train(); assert not torch.equal(m(ids).logits, m(ids).logits)


def test_check_variant_lora_on_toy():
    out = check_variant(ll.LoRAConfig(r=4))
    assert out["init_max_diff"] == 0 and out["dense_max_diff"] < 1e-5 and out["changed"] > 0


# ---------------------------------------------------------------- calibration capture
def test_capture_masks_pad_and_prompt(qwen):
    batches = token_batches()
    mods = {"model.layers.0.self_attn.q_proj": qwen.model.layers[0].self_attn.q_proj}
    rows = []
    ll.capture(qwen, mods, batches, lambda n, x: rows.append(x.shape[0]))
    expect = [int(ll.token_mask(b).sum()) for b in batches]
    assert rows == expect and all(r < b["input_ids"].numel() for r, b in zip(rows, batches))


# ---------------------------------------------------------------- bad input: one clear error, model unchanged
def _expect(model, exc, match, fn):
    snap = snapshot(model)
    with pytest.raises(exc, match=match):
        fn()
    assert_unchanged(model, snap)


def test_no_target_lists_linear_names(qwen):
    _expect(qwen, ValueError, r"no linear module matches.*q_proj", lambda: ll.attach(qwen, ll.LoRAConfig(target_names="wq")))


def test_attach_twice(qwen):
    ll.attach(qwen, ll.LoRAConfig())
    _expect(qwen, RuntimeError, "already has a lora_lite adapter", lambda: ll.attach(qwen, ll.LoRAConfig()))


@pytest.mark.parametrize("bad", [dict(r=0), dict(r=-3), dict(alpha="x"), dict(dtype=torch.int32), dict(dropout=1.5), dict(layers=["a"])])
def test_bad_config_values(bad):
    with pytest.raises(ValueError):
        ll.LoRAConfig(**bad)


def test_not_a_config(qwen):
    _expect(qwen, TypeError, "lora_lite config", lambda: ll.attach(qwen, {"r": 8}))


def test_unknown_variant_and_field():
    with pytest.raises(ValueError, match="unknown variant 'nope'.*lora"):
        ll.get_config("nope")
    with pytest.raises(TypeError, match="no field"):
        ll.get_config("lora", rank=4)


def test_detach_save_without_adapter(qwen, tmp_path):
    _expect(qwen, RuntimeError, "no lora_lite adapter", lambda: ll.detach(qwen))
    _expect(qwen, RuntimeError, "no lora_lite adapter", lambda: ll.save(qwen, tmp_path / "a.safetensors"))
    assert not (tmp_path / "a.safetensors").exists()


@pytest.fixture
def saved(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.LoRAConfig(r=4)); perturb_adapter(m)
    f = ll.save(m, tmp_path / "a.safetensors")
    return f


def test_load_missing_file(qwen, tmp_path):
    _expect(qwen, FileNotFoundError, "no adapter file", lambda: ll.load(qwen, tmp_path / "nope.safetensors"))


def test_load_truncated_and_garbage(qwen, saved, tmp_path):
    t = tmp_path / "trunc.safetensors"; t.write_bytes(saved.read_bytes()[:-50])
    _expect(qwen, ValueError, "not a readable safetensors", lambda: ll.load(qwen, t))
    g = tmp_path / "garbage.safetensors"; g.write_bytes(b"hello world, not tensors")
    _expect(qwen, ValueError, "not a readable safetensors", lambda: ll.load(qwen, g))


def test_load_plain_safetensors(qwen, tmp_path):
    from safetensors.torch import save_file
    f = tmp_path / "plain.safetensors"; save_file({"x": torch.zeros(2)}, f)
    _expect(qwen, ValueError, "not a lora_lite adapter", lambda: ll.load(qwen, f))


def test_load_other_widths(saved):
    other = tiny_qwen3(hidden=128)
    _expect(other, ValueError, "other layer widths", lambda: ll.load(other, saved))


def test_load_other_model(saved):
    _expect(toy_model(), ValueError, "no linear layer at", lambda: ll.load(toy_model(), saved))


def _rewrite(src, dst, meta_update=None, drop_key=None, rename=None):
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(src), "pt") as f:
        meta, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_update or {})
    if drop_key: t = {k: v for k, v in t.items() if not k.endswith(drop_key)}
    if rename: t = {k.replace(*rename): v for k, v in t.items()}
    save_file(t, dst, metadata=meta)
    return dst


def test_load_keys_dont_match(qwen, saved, tmp_path):
    f = _rewrite(saved, tmp_path / "b.safetensors", drop_key=".B")
    _expect(qwen, ValueError, "don't match", lambda: ll.load(qwen, f))
    f = _rewrite(saved, tmp_path / "c.safetensors", rename=(".A", ".lora_A"))
    _expect(qwen, ValueError, "don't match", lambda: ll.load(qwen, f))


def test_load_newer_format_refused(qwen, saved, tmp_path):
    f = _rewrite(saved, tmp_path / "new.safetensors", {"format_version": str(ll.FORMAT_VERSION + 1)})
    _expect(qwen, ValueError, "Upgrade lora_lite", lambda: ll.load(qwen, f))


def test_load_unknown_variant_in_file(qwen, saved, tmp_path):
    f = _rewrite(saved, tmp_path / "v.safetensors", {"variant": "mystery"})
    _expect(qwen, ValueError, "unknown variant 'mystery'", lambda: ll.load(qwen, f))


def test_load_when_attached(qwen, saved):
    ll.attach(qwen, ll.LoRAConfig())
    _expect(qwen, RuntimeError, "already has", lambda: ll.load(qwen, saved))


def test_save_is_atomic(qwen, saved, monkeypatch):
    "A failing write never damages the existing adapter file and leaves no temp file."
    before = saved.read_bytes()
    ll.attach(qwen, ll.LoRAConfig(r=4)); perturb_adapter(qwen, seed=3)
    from lora_lite import adapter_file as A
    def boom(tensors, path, metadata=None):
        open(path, "wb").write(b"partial"); raise OSError("disk full")
    monkeypatch.setattr(A, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        ll.save(qwen, saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_failed_init_leaves_model_unchanged(qwen, monkeypatch):
    "An error raised while initialising (after some layers succeeded) must not leave hooks or frozen params."
    from lora_lite.variants.lora import LoRA
    calls = {"n": 0}
    orig = LoRA.init
    def flaky(self, module):
        calls["n"] += 1
        if calls["n"] == 3: raise RuntimeError("init exploded")
        orig(self, module)
    monkeypatch.setattr(LoRA, "init", flaky)
    _expect(qwen, RuntimeError, "init exploded", lambda: ll.attach(qwen, ll.LoRAConfig()))


def test_version_single_source():
    import configparser, pathlib
    cfg = configparser.ConfigParser(); cfg.read(pathlib.Path(__file__).parents[1] / "settings.ini")
    assert cfg["DEFAULT"]["version"] == ll.__version__


def test_saved_metadata(saved):
    from safetensors import safe_open
    with safe_open(str(saved), "pt") as f: meta = f.metadata()
    assert meta["variant"] == "lora" and meta["lora_lite_version"] == ll.__version__
    assert json.loads(meta["config"])["r"] == 4 and len(json.loads(meta["targets"])) == 4


@pytest.mark.parametrize("variant", ["shira", "fourierft", "hira", "glora"])   # the methods that train through `dense_update`
def test_dense_update_keeps_what_a_hook_before_it_did(variant):
    "A user's forward hook on the base layer, registered before attach, changes y: the training forward keeps it, as the no-grad one does."
    torch.manual_seed(0)
    m = tiny_qwen3()
    q = m.model.layers[0].self_attn.q_proj
    q.register_forward_hook(lambda mod, args, y: y + 0.5)
    ll.attach(m, ll.get_config(variant, **ll.variant_class(variant).example)); perturb_adapter(m, std=0.2)
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad(): want = m(ids).logits
    got = m(ids).logits                                             # autograd on: the training form
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-5)
