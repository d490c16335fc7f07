"""Nothing corrupts a model: misuse, dtype moves, low precision, damaged files. Each case asserts the error (type and a
key phrase) and that the model is exactly as it was (tensors with dtypes, requires_grad, hooks, module tree, modes)."""
import copy, dataclasses, json
import pytest, torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import save_file
import lora_lite as ll
from conftest import tiny_qwen3, snapshot, assert_unchanged, perturb_adapter


def logits(m, ids):
    with torch.no_grad(): return m(ids).logits


def train_step(m, ids, lr=1e-2):
    ps = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(ps, lr=lr, eps=1e-6)   # AdamW's default eps=1e-8 underflows to 0 in fp16 (NaN for any fp16 tensor)
    m.train(); m(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad(); m.eval()


# ---------------------------------------------------------------- 1. nested attach
@pytest.mark.parametrize("inner_first", [True, False])
def test_nested_attach_refused(qwen, inner_first):
    outer_cfg, inner_cfg = ll.IA3Config(target_names=("q_proj",)), ll.LoRAConfig(r=4)
    first, second = (qwen.model, qwen) if inner_first else (qwen, qwen.model)
    ll.attach(first, inner_cfg if inner_first else outer_cfg)
    snap = snapshot(qwen)
    for call in (lambda: ll.attach(second, outer_cfg if inner_first else inner_cfg),):
        with pytest.raises(RuntimeError, match="already carries a lora_lite adapter"): call()
        assert_unchanged(qwen, snap)
    ll.detach(first)
    assert not any(isinstance(m, ll.Variant) for m in qwen.modules())
    assert all(p.requires_grad for p in qwen.parameters())


def test_nested_load_and_from_peft_refused(qwen, tmp_path, ids):
    ll.attach(qwen, ll.LoRAConfig(r=4)); f = ll.save(qwen, tmp_path / "a.safetensors"); ll.to_peft(qwen, tmp_path / "p")
    snap = snapshot(qwen)
    with pytest.raises(RuntimeError, match="already carries"): ll.load(qwen.model, f)
    with pytest.raises(RuntimeError, match="already carries"): ll.from_peft(qwen.model, tmp_path / "p")
    assert_unchanged(qwen, snap)


# ---------------------------------------------------------------- 2/3. low-precision adapters: finite at init and after a step
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("r", [1, 2, 4, 8, 16])
def test_delora_low_precision_finite(dtype, r, ids):
    m = tiny_qwen3(); y0 = logits(m, ids)
    ll.attach(m, ll.DeLoRAConfig(r=r, dtype=dtype))
    y = logits(m, ids)
    assert torch.isfinite(y).all() and (y - y0).abs().max() < 1e-2, "DeLoRA at init must be the base model, finite"
    for l in ll.adapter_layers(m).values(): assert torch.isfinite(l.factors()[1]).all()
    m.train(); m(ids, labels=ids).loss.backward()
    for n, p in m.named_parameters():
        if p.requires_grad: assert torch.isfinite(p.grad).all(), f"non-finite gradient {n}"
    train_step(m, ids, lr=1e-3)
    assert torch.isfinite(logits(m, ids)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hra_gram_schmidt_half_precision(dtype, ids):
    m = tiny_qwen3(); y0 = logits(m, ids)
    ll.attach(m, ll.HRAConfig(r=4, apply_GS=True, dtype=dtype))
    y = logits(m, ids)              # used to raise "geqrf_cpu" not implemented for 'BFloat16'
    assert torch.isfinite(y).all() and not torch.equal(y, y0)   # apply_GS starts off identity (random init, as PEFT)
    train_step(m, ids); assert torch.isfinite(logits(m, ids)).all()


# ---------------------------------------------------------------- 4. dtype moves after attach, then save -> load
@pytest.mark.parametrize("move", ["bf16", "half", "f64"])
@pytest.mark.parametrize("variant", ["lora", "dora", "hra", "delora"])
def test_to_after_attach_then_save_load_exact(move, variant, ids, tmp_path):
    m = tiny_qwen3(); base = copy.deepcopy(m)
    ll.attach(m, ll.get_config(variant, r=4)); perturb_adapter(m)
    dt = {"bf16": torch.bfloat16, "half": torch.float16, "f64": torch.float64}[move]
    m = m.to(dt)
    y = logits(m, ids)
    f = ll.save(m, tmp_path / "a.safetensors")
    assert ll.read_adapter(f)[0]["config"].count(str(dt).removeprefix("torch.")) == 1
    m2 = base.to(dt); cfg = ll.load(m2, f)
    assert cfg.dtype == dt and torch.equal(logits(m2, ids), y)


# ---------------------------------------------------------------- 5/6. configs: private copies, immutable, knobs per model
def test_one_config_two_models_are_independent(ids, tmp_path):
    cfg = ll.AntiPaSTOConfig(r=8)
    a, b = tiny_qwen3(seed=0), tiny_qwen3(seed=0)
    ll.attach(a, cfg); ll.attach(b, cfg); perturb_adapter(a); perturb_adapter(b)
    yb = logits(b, ids)
    ll.set_knob(a, coeff=0.0)
    assert torch.equal(logits(b, ids), yb), "set_knob on model a changed model b"
    assert cfg.coeff == 1.0, "set_knob changed the user's config"
    f = ll.save(a, tmp_path / "a.safetensors")
    assert json.loads(ll.read_adapter(f)[0]["config"])["coeff"] == 0.0   # the file describes the model as it is
    with pytest.raises(dataclasses.FrozenInstanceError): cfg.alpha = 3.0


def test_config_fields_cannot_be_reassigned():
    cfg = ll.LoRAConfig(r=4)
    for field, value in [("target_names", "k_proj"), ("r", 0), ("dtype", "bfloat16")]:
        with pytest.raises(dataclasses.FrozenInstanceError): setattr(cfg, field, value)
    assert dataclasses.replace(cfg, target_names="k_proj").target_names == ("k_proj",)
    with pytest.raises(ValueError, match="r must be"): dataclasses.replace(cfg, r=0)


# ---------------------------------------------------------------- 7. calibration leaves modes and buffers untouched
class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.bn, self.v_proj = nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 8)
    def forward(self, x): return self.v_proj(self.bn(self.q_proj(x)))


@pytest.mark.parametrize("variant", ["eva", "antipasto_corda"])
def test_calibration_keeps_buffers_and_modes(variant):
    torch.manual_seed(0)
    m = BNNet().train()
    snap = snapshot(m)
    data = [torch.randn(16, 8) for _ in range(3)]
    ll.attach(m, ll.get_config(variant, r=4, target_names=("q_proj", "v_proj")), calibration_data=data)
    assert m.training and m.bn.training
    ll.detach(m); assert_unchanged(m, snap)
    with pytest.raises(ValueError): ll.attach(m, ll.get_config(variant, r=4, target_names=("q_proj", "v_proj")),
                                              calibration_data=[torch.randn(16, 8), torch.full((16, 8), float("nan"))])
    assert_unchanged(m, snap)


# ---------------------------------------------------------------- 8. damaged adapter files
def _resave(src, dst, **meta_changes):
    with safe_open(str(src), framework="pt") as f: meta, t = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    for k, v in meta_changes.items():
        if v is None: meta.pop(k)
        else: meta[k] = v
    save_file(t, str(dst), metadata=meta)
    return dst


DAMAGE = {"no variant": (dict(variant=None), "no 'variant' entry"), "no targets": (dict(targets=None), "no 'targets' entry"),
          "empty targets": (dict(targets="[]"), "non-empty list"), "broken targets": (dict(targets="[oops"), "invalid JSON"),
          "broken ranks": (dict(ranks="{"), "invalid JSON"), "zero rank": (dict(ranks=None), None),
          "format abc": (dict(format_version="abc"), "not a number"), "broken config": (dict(config="{"), "invalid JSON"),
          "config list": (dict(config="[]"), "not a JSON object")}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_metadata_is_one_clear_error(case, tmp_path):
    m = tiny_qwen3()
    ll.attach(m, ll.LoRAConfig(r=4)); f = ll.save(m, tmp_path / "a.safetensors"); ll.detach(m)
    change, phrase = DAMAGE[case]
    if case == "zero rank":
        change, phrase = dict(ranks=json.dumps({"model.layers.0.self_attn.q_proj": 0})), "positive integers"
    bad = _resave(f, tmp_path / "bad.safetensors", **change)
    snap = snapshot(m)
    with pytest.raises(ValueError, match=phrase): ll.load(m, bad)
    assert_unchanged(m, snap)


def test_save_to_a_folder_and_load_a_folder(qwen, tmp_path):
    ll.attach(qwen, ll.LoRAConfig(r=4))
    with pytest.raises(IsADirectoryError, match="is a folder"): ll.save(qwen, tmp_path)
    ll.detach(qwen); snap = snapshot(qwen)
    with pytest.raises(FileNotFoundError, match="no adapter file"): ll.load(qwen, tmp_path)
    assert_unchanged(qwen, snap)


# ---------------------------------------------------------------- 9. bools are bools
@pytest.mark.parametrize("variant,field", [("lora", "use_rslora"), ("hra", "apply_GS"), ("eva", "center"),
                                            ("dora", "use_rslora"), ("eva", "adjust_scaling")])
@pytest.mark.parametrize("value", ["no", "False", 0, 1, None])
def test_bool_fields_refuse_non_bools(variant, field, value):
    with pytest.raises(ValueError, match=field): ll.get_config(variant, **{field: value})


# ---------------------------------------------------------------- 10. load / attach inside inference_mode
@pytest.mark.parametrize("how", ["load", "attach"])
def test_inference_mode_gives_trainable_tensors(qwen, ids, tmp_path, how):
    ll.attach(qwen, ll.LoRAConfig(r=4)); perturb_adapter(qwen); f = ll.save(qwen, tmp_path / "a.safetensors"); ll.detach(qwen)
    with torch.inference_mode():
        ll.load(qwen, f) if how == "load" else ll.attach(qwen, ll.LoRAConfig(r=4))
    assert not any(p.is_inference() for p in qwen.parameters())
    train_step(qwen, ids)


# ---------------------------------------------------------------- 11. layer indices the model does not have
def test_layers_out_of_range(qwen):
    snap = snapshot(qwen)
    with pytest.raises(ValueError, match=r"block\(s\) \[99\].*blocks 0\.\.1"): ll.attach(qwen, ll.LoRAConfig(layers=[1, 99]))
    assert_unchanged(qwen, snap)


# ---------------------------------------------------------------- raw errors become lora_lite errors
@pytest.mark.parametrize("fields,phrase", [(dict(target_names=123), "target_names"), (dict(exclude_names=5), "exclude_names"),
                                           (dict(layers=1.0), "layers"), (dict(dropout="0.1"), "dropout"),
                                           (dict(target_names=[1]), "target_names"), (dict(alpha="16"), "alpha"),
                                           (dict(rank_pattern={"q": 0}), "rank_pattern"), (dict(alpha_pattern=[1]), "alpha_pattern")])
def test_bad_config_values(fields, phrase):
    with pytest.raises(ValueError, match=phrase): ll.LoRAConfig(**fields)


def test_calibration_data_mistakes(qwen):
    snap = snapshot(qwen)
    ids = torch.randint(0, 128, (2, 8))
    with pytest.raises(TypeError, match="wrap it in a list"): ll.attach(qwen, ll.EVAConfig(r=2), calibration_data=ids)
    with pytest.raises(ValueError, match="vocabulary is 0..127"):
        ll.attach(qwen, ll.EVAConfig(r=2), calibration_data=[ids + 200])
    assert_unchanged(qwen, snap)


def _peft_dir(tmp_path, qwen):
    ll.attach(qwen, ll.LoRAConfig(r=4)); perturb_adapter(qwen); d = ll.to_peft(qwen, tmp_path / "p"); ll.detach(qwen)
    return d


@pytest.mark.parametrize("damage,err,phrase", [
    ("json", ValueError, "not valid JSON"), ("no r", ValueError, "'r'"), ("no tensors", ValueError, "holds no tensors"),
    ("truncated", ValueError, "truncated"), ("no type", ValueError, "peft_type"), ("missing tensor", ValueError, "missing"),
    ("extra tensor", ValueError, "unexpected"), ("other method", ValueError, "has no lora_lite import")])
def test_from_peft_damaged_folders(qwen, tmp_path, damage, err, phrase):
    d = _peft_dir(tmp_path, qwen)
    conf, wf = d / "adapter_config.json", d / "adapter_model.safetensors"
    pc = json.loads(conf.read_text())
    with safe_open(str(wf), framework="pt") as f: t = {k: f.get_tensor(k) for k in f.keys()}
    if damage == "json": conf.write_text("{oops")
    elif damage == "no r": pc.pop("r"); conf.write_text(json.dumps(pc))
    elif damage == "no type": pc.pop("peft_type"); conf.write_text(json.dumps(pc))
    elif damage == "other method": pc["peft_type"] = "NOT_A_METHOD"; conf.write_text(json.dumps(pc))
    elif damage == "no tensors": save_file({}, str(wf))
    elif damage == "truncated": wf.write_bytes(wf.read_bytes()[:100])
    elif damage == "missing tensor": t.pop(sorted(t)[0]); save_file(t, str(wf))
    elif damage == "extra tensor": t["base_model.model.x.lora_A.weight"] = torch.zeros(1); save_file(t, str(wf))
    snap = snapshot(qwen)
    with pytest.raises(err, match=phrase): ll.from_peft(qwen, d)
    assert_unchanged(qwen, snap)


def test_set_knob_errors(qwen):
    ll.attach(qwen, ll.LoRAConfig(r=4))
    with pytest.raises(ValueError, match="no runtime knob 'coeff'"): ll.set_knob(qwen, coeff=1.0)
    ll.detach(qwen); ll.attach(qwen, ll.AntiPaSTOConfig(r=8))
    with pytest.raises(ValueError, match="finite"): ll.set_knob(qwen, coeff=float("nan"))
    with pytest.raises(ValueError, match="finite"): ll.set_knob(qwen, coeff=True)
