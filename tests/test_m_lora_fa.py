"PEFT 0.21.2 is the oracle for LoRA-FA (LoRA + peft.optimizers.create_lorafa_optimizer): one optimizer step, counts, export."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from lora_lite.variants import lora_fa as fa
from conftest import train_steps, logits

peft = pytest.importorskip("peft")
import peft.optimizers.lorafa as lorafa
from conftest import perturb_adapter
QV = ["q_proj", "v_proj"]
KW = dict(r=4, alpha=8, rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 6})   # per-layer scales: 2 on q, 3 on v


def _pair(seed=0):
    "A PEFT LoRA and our lora_fa on the same tiny Qwen3 with the same A and (non-zero) B."
    torch.manual_seed(seed)
    pm = peft.get_peft_model(tiny_qwen3(), peft.LoraConfig(r=4, lora_alpha=8, rank_pattern={"v_proj": 2},
                                                           alpha_pattern={"v_proj": 6}, target_modules=QV))
    m = tiny_qwen3(); ll.attach(m, ll.LoRAFAConfig(**KW))
    with torch.no_grad():
        for n, layer in ll.adapter_layers(m).items():
            t = pm.base_model.model.get_submodule(n)
            t.lora_B["default"].weight.normal_(0, 0.1)
            layer.A.copy_(t.lora_A["default"].weight); layer.B.copy_(t.lora_B["default"].weight)
            assert layer.scale == t.scaling["default"]
    return pm, m


def _one_step(pm, m, eps, bf16, monkeypatch, lr=1e-2):
    monkeypatch.setattr(lorafa, "is_bf16_available", lambda: bf16)
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(1))
    opt_p = peft.optimizers.create_lorafa_optimizer(pm, r=4, lora_alpha=8, lr=lr, weight_decay=0.0)
    for g in opt_p.param_groups: g["eps"] = eps
    # PEFT adds eps to sqrt(v) before bias correction: torch's AdamW takes eps/sqrt(1 - beta2) for the same first step
    opt_o = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr, eps=eps / (1 - 0.999) ** 0.5, weight_decay=0.0)
    B0 = {n: l.B.detach().clone() for n, l in ll.adapter_layers(m).items()}
    for model, opt in ((pm, opt_p), (m, opt_o)):
        model(ids, labels=ids).loss.backward(); opt.step()
    diff = max((l.B - pm.base_model.model.get_submodule(n).lora_B["default"].weight).abs().max().item()
               for n, l in ll.adapter_layers(m).items())
    step = max((l.B - B0[n]).abs().max().item() for n, l in ll.adapter_layers(m).items())
    return diff, step


@pytest.mark.parametrize("eps", [1e-6, 10.0], ids=["peft-eps", "eps-large:step∝grad"])
def test_one_step_equals_peft_lorafa_optimizer(eps, monkeypatch):
    """PEFT's default eps makes Adam's first step nearly sign(g) (scale-blind); a large eps makes it proportional to the
    corrected gradient, so the 1/s² factor and P's scale are checked too. PEFT's bf16 autocast is off here (fp32 math)."""
    pm, m = _pair()
    diff, step = _one_step(pm, m, eps, bf16=False, monkeypatch=monkeypatch)
    print(f"lora_fa one step vs PEFT's LoraFAOptimizer (eps={eps}): max|ΔB| {diff:.1e}, step size {step:.1e}")
    # fp32 rounding of g·P (summation order) is all that differs; Adam's g/(|g|+eps) near |g| ≈ eps magnifies it to
    # <= 1e-4 of a step (measured 7e-5 at eps=1e-6, exactly 0 at eps=10)
    assert step > 0 and diff <= 1e-4 * step
    assert all(not p.requires_grad for n, p in pm.named_parameters() if "lora_A" in n)   # PEFT froze A, as we do


def test_peft_default_bf16_rounding_explains_the_rest(monkeypatch):
    "PEFT's default multiplies g·P under bf16 autocast; rounding our g and P to bf16 the same way gives its step exactly."
    pm, m = _pair()
    def bf16_backward(ctx, g):
        P, = ctx.saved_tensors                         # P = pinv(AAᵀ + δI)/s²; PEFT: (1/s²)·(bf16(g) @ bf16(pinv)) in bf16
        s2 = ctx.s2
        return ((g.bfloat16() @ (P * s2).bfloat16()) * (1 / s2)).float(), None
    scale = {}
    orig_apply = fa.Precondition.apply
    def apply(B, P):
        out = orig_apply(B, P); out.grad_fn.s2 = scale[B.data_ptr()]; return out
    for l in ll.adapter_layers(m).values(): scale[l.B.data_ptr()] = l.scale ** 2
    monkeypatch.setattr(fa.Precondition, "backward", staticmethod(bf16_backward))
    monkeypatch.setattr(fa.Precondition, "apply", apply)
    diff, step = _one_step(pm, m, 1e-6, bf16=True, monkeypatch=monkeypatch)
    print(f"lora_fa with PEFT's bf16 rounding emulated: max|ΔB| {diff:.1e} (step {step:.1e})")
    assert diff <= 1e-6


def test_fp32_preconditioner_differs_from_peft_bf16_by_rounding_only(monkeypatch):
    pm, m = _pair()
    diff, step = _one_step(pm, m, 1e-6, bf16=True, monkeypatch=monkeypatch)
    print(f"lora_fa (fp32) vs PEFT's default bf16 autocast: max|ΔB| {diff:.1e} (step {step:.1e})")
    assert 0 < diff < step


def test_trainable_count_equals_peft_and_published():
    "PEFT's experiment lora/llama-3.2-3B-rank32-lorafa (r=32, alpha=64, q/v, lora_A frozen by the optimizer): 3,670,016."
    from transformers import LlamaConfig, LlamaForCausalLM
    c = LlamaConfig(vocab_size=32, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                    num_key_value_heads=8, head_dim=128)
    bench = {k: v for k, v in ll.VARIANTS["lora_fa"].bench.items() if k != "lr"}
    with torch.device("meta"): m = LlamaForCausalLM(c)
    ll.attach(m, ll.get_config("lora_fa", **bench))
    with torch.device("meta"): pm = peft.get_peft_model(LlamaForCausalLM(c), peft.LoraConfig(r=32, lora_alpha=64), low_cpu_mem_usage=True)
    peft.optimizers.create_lorafa_optimizer(pm, r=32, lora_alpha=64, lr=1e-4)
    ours, theirs = (sum(p.numel() for p in x.parameters() if p.requires_grad) for x in (m, pm))
    assert ours == theirs == 3_670_016


def test_to_peft_is_plain_lora_and_exact(ids, tmp_path):
    base = tiny_qwen3(); m = copy.deepcopy(base)
    ll.attach(m, ll.LoRAFAConfig(**KW)); train_steps(m, ids)
    ours = logits(m, ids)
    assert (ours - logits(base, ids)).abs().max() > 1e-2
    ll.to_peft(m, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "LORA" and pc.get("init_lora_weights", True) is True
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p")
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"lora_fa to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= 1e-5
    assert type(ll.from_peft(tiny_qwen3(), tmp_path / "p")) is ll.LoRAConfig          # a LoRA-FA folder is a LoRA folder


def test_any_optimizer_sgd_step_is_the_corrected_gradient(ids):
    "With plain SGD the step is exactly -lr·∇B·P: the correction is in the gradient, not in an optimizer."
    m = tiny_qwen3(); ll.attach(m, ll.LoRAFAConfig(**KW))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.v_proj"]
    with torch.no_grad(): layer.B.normal_()
    B0 = layer.B.detach().clone()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    m(ids, labels=ids).loss.backward(); g = layer.B.grad.clone(); opt.step()
    torch.testing.assert_close(layer.B, B0 - 0.1 * g)
    # the same gradient from first principles: LoRA's ∇B through an autograd pass without the correction, times P
    B = layer.B.detach().clone().requires_grad_()
    x = torch.randn(3, 64)
    ref = torch.autograd.grad((layer.scale * (x @ layer.A.T) @ B.T).square().sum(), B)[0]
    got = torch.autograd.grad(layer(x, torch.zeros(3, 32)).square().sum(), layer.B)[0]
    P = torch.linalg.pinv(layer.A @ layer.A.T + 1e-8 * torch.eye(2)) / layer.scale ** 2
    torch.testing.assert_close(got, ref @ P, rtol=1e-4, atol=1e-6)


def test_compiles_fullgraph_and_matches_eager(ids):
    "The preconditioner (a custom autograd Function) traces under torch.compile(fullgraph=True): same logits and gradients."
    torch._dynamo.reset()
    m = tiny_qwen3().train(); ll.attach(m, ll.LoRAFAConfig(r=4, alpha=8)); perturb_adapter(m, std=0.1)
    def run(fn):
        m.zero_grad(set_to_none=True); out = fn(input_ids=ids, labels=ids); out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
    y0, g0 = run(m)                                                  # eager first: the cached P exists when tracing
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    for _ in range(2):
        y1, g1 = run(compiled)
        torch.testing.assert_close(y1, y0, atol=1e-5, rtol=1e-4)
        for k in g0: torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4)
