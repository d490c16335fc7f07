"DeLoRA beyond the PEFT table (test_peft.py): PEFT's frozen column norms, fp16 refused (B's first gradient is past its range), "
"the gain never computed below the adapter's precision."
import copy
import pytest, torch
from torch import nn
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")


def test_column_norms_equal_peft():
    base = tiny_qwen3()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.DeloraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    ll.attach(base, ll.DeLoRAConfig(r=4))
    for n, l in ll.adapter_layers(base).items():
        torch.testing.assert_close(l.w, pm.base_model.model.get_submodule(n).delora_w_norm["default"])


def _first_B_grad(d_in, r, dtype):
    "B's gradient after one backward of a summed output over 128 tokens, at init (B = 0, ‖b_i‖ clamped to 1e-4)."
    torch.manual_seed(0)
    m = nn.Sequential(); m.add_module("proj", nn.Linear(d_in, 16))
    ll.attach(m, ll.DeLoRAConfig(r=r, dtype=dtype, target_names=("proj",)))
    m.proj(torch.randn(4, 32, d_in)).sum().backward()
    return m.proj.ll_adapter.B.grad


@pytest.mark.parametrize("d_in,r", [(8, 4), (32, 4), (64, 1)])
def test_fp16_is_refused_because_the_first_gradient_is_past_its_range(d_in, r):
    "The true (fp32) first gradient of B exceeds fp16's 65504 here, so an fp16 adapter can't hold it: refused, naming a fix."
    assert _first_B_grad(d_in, r, torch.float32).abs().max() > torch.finfo(torch.float16).max
    with pytest.raises(ValueError, match=r"dtype=torch.float16.*bfloat16"): ll.DeLoRAConfig(r=r, dtype=torch.float16)
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="float16"): ll.attach(m, ll.get_config("delora", r=r, dtype="float16"))
    assert_unchanged(m, snap)
    g = _first_B_grad(d_in, r, torch.bfloat16)                          # the advised dtype holds it
    assert torch.isfinite(g).all() and g.abs().max() > torch.finfo(torch.float16).max


def test_fp16_peft_file_imports_in_fp32(tmp_path):
    "A PEFT DeLoRA saved in fp16 imports exactly, as an fp32 adapter (fp16 values are exact in fp32)."
    from safetensors.torch import load_file, save_file
    pm = peft.get_peft_model(tiny_qwen3(), peft.DeloraConfig(r=4, target_modules=["q_proj"]))
    pm.save_pretrained(tmp_path)
    f = tmp_path / "adapter_model.safetensors"
    sd = {k: v.half() for k, v in load_file(f).items()}; save_file(sd, f)
    m = tiny_qwen3()
    assert ll.from_peft(m, tmp_path).dtype == torch.float32
    for n, l in ll.adapter_layers(m).items():
        assert torch.equal(l.A, sd[f"base_model.model.{n}.delora_A"].float())


def test_gain_is_never_computed_below_the_adapter_precision():
    "fp64 adapter: the gain and ΔW are fp64 and equal an fp64 reference to fp64 rounding (an fp32 gain is ~1e-7 off)."
    torch.manual_seed(0)
    lin = nn.Linear(16, 12).double()
    l = ll.VARIANTS["delora"](ll.DeLoRAConfig(r=4, dtype=torch.float64), 16, 12)
    with torch.no_grad(): l.init(lin); l.B.normal_()
    an, bn = l.A.norm(dim=1), l.B.norm(dim=0)
    ref = l.lam / 4 / (an * bn)
    assert l.gain().dtype == torch.float64
    torch.testing.assert_close(l.gain(), ref, rtol=1e-14, atol=0)
    assert ((l.gain().float().double() - ref).abs() / ref).max() > 1e-12   # so the test could tell fp32 from fp64
    x = torch.randn(3, 16, dtype=torch.float64)
    torch.testing.assert_close(l(x, lin(x)), lin(x) + x @ (l.B * ref @ (l.A * l.w)).T, rtol=1e-12, atol=1e-12)
