"DeLoRA beyond the PEFT table (test_peft.py): PEFT's frozen column norms, the fp16 warning at attach (B's first gradient can "
"pass fp16's range), the gain never computed below the adapter's precision."
import copy
import pytest, torch
from torch import nn
import lora_lite as ll
from lora_lite.checks import tiny_qwen3

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
def test_fp16_warns_at_attach_because_the_first_gradient_can_pass_its_range(d_in, r):
    "A summed loss: B's true (fp32) first gradient passes fp16's 65504, so fp16 gives inf; attach says so and names bf16, which holds it."
    assert _first_B_grad(d_in, r, torch.float32).abs().max() > torch.finfo(torch.float16).max
    with pytest.warns(UserWarning, match=r"fp16 adapter.*bfloat16"):
        g = _first_B_grad(d_in, r, torch.float16)
    assert not torch.isfinite(g).all()
    g = _first_B_grad(d_in, r, torch.bfloat16)
    assert torch.isfinite(g).all() and g.abs().max() > torch.finfo(torch.float16).max


def test_fp32_and_bf16_attach_without_the_warning():
    import warnings
    for dtype in (torch.float32, torch.bfloat16):
        with warnings.catch_warnings():
            warnings.simplefilter("error"); ll.attach(tiny_qwen3(), ll.DeLoRAConfig(r=4, dtype=dtype))


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
