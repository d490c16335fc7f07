"""torch.compile on an adapted model: the hooks trace without graph breaks, compiled == eager, gradients flow.

By default the graphs are compiled with the `aot_eager` backend: dynamo + AOTAutograd capture the forward and the
backward exactly as inductor would see them, but without generating C++ (a few seconds). Set
LORA_LITE_TEST_INDUCTOR=1 to compile with the default inductor backend too (needs a C++ compiler; on a 2-core CPU
that takes roughly a minute per model, too slow for CI).
"""
import os, time
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import perturb_adapter

BACKENDS = ["aot_eager"] + (["inductor"] if os.environ.get("LORA_LITE_TEST_INDUCTOR") else [])
CFGS = {"lora": ll.LoRAConfig(r=4), "hra": ll.HRAConfig(r=4), "ia3_ff": ll.IA3FFConfig(), "dora": ll.DoRAConfig(r=4)}


def loss_and_grads(fn, model, ids):
    "Logits and adapter gradients of one LM-loss backward through `fn` (the model or its compiled wrapper)."
    model.zero_grad(set_to_none=True)
    out = fn(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CFGS))
def test_compiled_matches_eager(name, backend, ids):
    "Output hook (LoRA, DoRA: calls its base layer inside the hook) and pre-hooks (HRA, IA3-FF) under fullgraph."
    torch._dynamo.reset()
    model = tiny_qwen3().train()
    ll.attach(model, CFGS[name])
    perturb_adapter(model, std=0.1)                     # off the identity init, so the adapter math matters
    y_eager, g_eager = loss_and_grads(model, model, ids)
    compiled = torch.compile(model, backend=backend, fullgraph=True)   # fullgraph: any graph break is an error
    t = time.perf_counter()
    y_comp, g_comp = loss_and_grads(compiled, model, ids)
    print(f"{name}/{backend}: first compiled step {time.perf_counter() - t:.1f} s")
    torch.testing.assert_close(y_comp, y_eager, atol=1e-5, rtol=1e-4)
    assert g_comp.keys() == g_eager.keys() and len(g_comp) > 0
    for n in g_eager:
        assert g_comp[n].abs().sum() > 0, f"no gradient reached {n} in the compiled model"
        torch.testing.assert_close(g_comp[n], g_eager[n], atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)   # base still frozen


def test_explain_reports_no_graph_breaks(ids):
    "What the benchmark reports: dynamo's graph-break count on an adapted model (LoRA + an IA3-FF pre-hook model)."
    for cfg in (ll.LoRAConfig(r=4), ll.IA3FFConfig()):
        torch._dynamo.reset()
        model = tiny_qwen3()
        ll.attach(model, cfg)
        ex = torch._dynamo.explain(model)(input_ids=ids)
        assert ex.graph_break_count == 0, ex.break_reasons
    torch._dynamo.reset()


def test_detach_after_compile_restores_eager_model(ids):
    "Compiling doesn't change the module: detach still gives the exact base outputs."
    torch._dynamo.reset()
    model = tiny_qwen3()
    with torch.no_grad(): y0 = model(input_ids=ids).logits
    ll.attach(model, ll.LoRAConfig(r=4)); perturb_adapter(model)
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad(): compiled(input_ids=ids)
    ll.detach(model)
    torch._dynamo.reset()
    with torch.no_grad(): assert torch.equal(model(input_ids=ids).logits, y0)


@pytest.mark.parametrize("name", ["dora"])   # one variant: compiling is slow on a shared CPU; every variant shares lora_lite.cache.cached
def test_compiled_decode_uses_fresh_cache(name, ids):
    "Compiled inference (no_grad) of variants whose parameter-only work is cached == eager, also after an in-place edit."
    torch._dynamo.reset()
    model = tiny_qwen3()
    ll.attach(model, ll.get_config(name, r=8))
    perturb_adapter(model, std=0.1)
    compiled = torch.compile(model, backend="aot_eager")
    for step in range(2):
        with torch.no_grad():
            y_eager, y_comp = model(ids).logits, compiled(ids).logits
            torch.testing.assert_close(y_comp, y_eager, atol=1e-5, rtol=1e-4)
            for p in model.parameters():
                if p.requires_grad: p.mul_(1.5)                   # the next pass must see the edit
