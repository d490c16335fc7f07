"DoRA beyond the PEFT table (test_peft.py): the fast row norm equals the naive one; Conv1D outputs and gradients."
import torch
from torch import nn
import torch.nn.functional as F
import lora_lite as ll
from lora_lite.core import dense_weight
from conftest import perturb_adapter


def test_dora_fast_norm_equals_naive(qwen, ids):
    ll.attach(qwen, ll.DoRAConfig(r=8, alpha=16, target_names=("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")))
    perturb_adapter(qwen, std=0.2)
    for n, l in ll.adapter_layers(qwen).items():
        m = qwen.get_submodule(n)
        naive = (dense_weight(m) + l.scale * l.B @ l.A).norm(dim=1)
        fast = l.weight_norm(l.base_pass(torch.float32)[0])
        torch.testing.assert_close(fast, naive.detach(), atol=1e-6, rtol=1e-5)


def test_dora_conv1d_and_gradients():
    "GPT-2 style Conv1D (transposed weight, bias): hooked output and gradients equal the naive detached-norm DoRA."
    from transformers.pytorch_utils import Conv1D
    torch.manual_seed(0)
    model = nn.Module(); model.q_proj = Conv1D(24, 16); nn.init.normal_(model.q_proj.bias)
    ll.attach(model, ll.DoRAConfig(r=4, alpha=8, target_names="q_proj"))
    perturb_adapter(model, std=0.3)
    l, x = model.q_proj.ll_adapter, torch.randn(2, 5, 16)
    y = model.q_proj(x)
    W = model.q_proj.weight.T
    V = W + l.scale * l.B @ l.A
    ref = F.linear(x, (l.m / V.norm(dim=1).detach())[:, None] * V, model.q_proj.bias)
    torch.testing.assert_close(y, ref)
    for a, b in zip(torch.autograd.grad(y.square().sum(), [l.A, l.B, l.m]), torch.autograd.grad(ref.square().sum(), [l.A, l.B, l.m])):
        torch.testing.assert_close(a, b)
    assert model.q_proj.weight.grad is None
