"""Tensors shared across layers live once (`Variant.shared_shapes` -> the root's `ll_shared` child): one storage, one
state_dict entry, one optimizer entry, one file key; `.to()`, detach, save/load, summary/counts and the decode cache
all see exactly one tensor. A toy method with one shared frozen buffer and one shared trained parameter shows it."""
import copy
from pathlib import Path
from dataclasses import dataclass
from typing import ClassVar
import pytest, torch
from safetensors.torch import save_file, load_file
import lora_lite as ll
from lora_lite.checks import check_variant, qwen3_params, snapshot, assert_unchanged
from conftest import toy_model


@dataclass(frozen=True)
class ToySharedConfig(ll.AdapterConfig):
    variant: ClassVar[str] = "toy_shared"
    r: int = 4


class ToyShared(ll.Variant):
    "y + ((x Pᵀ) ⊙ d) Qᵀ: P (r, D_in) a shared frozen random buffer, Q (D_out, r) a shared trained matrix (0 at init), d per layer."
    config_cls = ToySharedConfig
    def param_shapes(self): return {"d": (self.r,)}
    @classmethod
    def shared_shapes(cls, cfg, layers):
        return {"P": ((cfg.r, max(l.d_in for l in layers.values())), False),
                "Q": ((max(l.d_out for l in layers.values()), cfg.r), True)}
    @classmethod
    @torch.no_grad()
    def init_all(cls, layers, modules):
        sh = next(iter(layers.values())).shared
        sh.P.copy_(torch.randn(sh.P.shape, generator=torch.Generator().manual_seed(0)))
        for l in layers.values(): l.d.fill_(1.0)
    def forward(self, x, y):
        P, Q = self.shared.P[:, :self.d_in], self.shared.Q[:self.d_out]
        return (y + ((x.to(P.dtype) @ P.T) * self.d) @ Q.T).to(y.dtype)
    def delta_weight(self, module):
        return self.shared.Q[:self.d_out] @ (self.d[:, None] * self.shared.P[:, :self.d_in])


@pytest.fixture(autouse=True)
def toy_registered():
    "The toy method is registered for this file's tests only (other tests iterate the registry)."
    ll.VARIANTS["toy_shared"] = ToyShared
    yield
    ll.VARIANTS.pop("toy_shared", None)


CFG = ToySharedConfig(target_names=("q_proj", "v_proj", "down_proj"))   # d_in 32 / 64, d_out 32 / 16: the slices differ


def adapted(seed=0):
    m = toy_model()
    ll.attach(m, CFG)
    with torch.no_grad(): m.ll_shared.Q.normal_(generator=torch.Generator().manual_seed(seed))   # off identity
    return m


def test_check_variant():
    out = check_variant(CFG)
    n_layers = 6
    assert out["targets"] == n_layers and out["trainable_params"] == n_layers * 4 + 32 * 4   # d per layer, Q (max d_out × r) once


def test_one_storage_and_non_child_reference():
    m = adapted()
    layers = ll.adapter_layers(m)
    assert all(l.shared is m.ll_shared for l in layers.values())
    assert [n for n, _ in m.named_children()].count("ll_shared") == 1
    assert not any("ll_shared" in n for n, _ in m.named_modules() if n != "ll_shared")      # not a child of each layer
    names = [n for n, _ in m.named_parameters() if "ll_shared" in n] + [n for n, _ in m.named_buffers() if "ll_shared" in n]
    assert sorted(names) == ["ll_shared.P", "ll_shared.Q"]
    assert sorted(k for k in m.state_dict() if "ll_shared" in k) == ["ll_shared.P", "ll_shared.Q"]
    assert not any(k.startswith("layers.") and k.endswith((".P", ".Q")) for k in m.state_dict())


def test_optimizer_sees_it_once_and_trains_it():
    m, x = adapted(), torch.randn(2, 5, 32)
    params = [p for p in m.parameters() if p.requires_grad]
    assert sum(p is m.ll_shared.Q for p in params) == 1 and len({id(p) for p in params}) == len(params)
    assert not m.ll_shared.P.requires_grad
    opt = torch.optim.SGD(params, lr=0.1)
    Q0 = m.ll_shared.Q.detach().clone()
    m(x).pow(2).mean().backward()
    assert m.ll_shared.Q.grad is not None and m.ll_shared.Q.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(Q0, m.ll_shared.Q)
    assert all(l.shared.Q is m.ll_shared.Q for l in ll.adapter_layers(m).values())


def test_to_moves_the_one_tensor():
    m, x = adapted(), torch.randn(2, 5, 32)
    y = m(x)
    m.to(torch.float64)
    assert m.ll_shared.Q.dtype == m.ll_shared.P.dtype == torch.float64
    assert all(l.shared.Q.dtype == torch.float64 for l in ll.adapter_layers(m).values())
    torch.testing.assert_close(m(x.double()).float(), y, atol=1e-4, rtol=1e-4)
    c = copy.deepcopy(m)                                          # a copy runs its own one shared tensor
    assert all(l.shared is c.ll_shared for l in ll.adapter_layers(c).values()) and c.ll_shared is not m.ll_shared


def test_detach_removes_it():
    m = toy_model()
    snap = snapshot(m)
    ll.attach(m, CFG)
    assert hasattr(m, "ll_shared")
    ll.detach(m)
    assert not hasattr(m, "ll_shared")
    assert_unchanged(m, snap, "detach")


def test_no_shared_child_without_shared_tensors():
    m = toy_model()
    ll.attach(m, ll.LoRAConfig(r=2))
    assert not hasattr(m, "ll_shared") and not any("ll_shared" in k for k in m.state_dict())


def test_save_load_exact_and_stored_once(tmp_path):
    m, x = adapted(), torch.randn(2, 5, 32)
    y = m(x)
    f = ll.save(m, tmp_path / "a.safetensors")
    meta, tensors = ll.read_adapter(f)
    assert meta["format_version"] == str(ll.FORMAT_VERSION) == "2"
    assert sorted(k for k in tensors if k.endswith((".P", ".Q"))) == ["ll_shared.P", "ll_shared.Q"]
    assert torch.equal(tensors["ll_shared.Q"], m.ll_shared.Q)
    m2 = toy_model()
    ll.load(m2, f)
    assert torch.equal(m2(x), y)
    assert all(l.shared is m2.ll_shared for l in ll.adapter_layers(m2).values())
    # a damaged shared tensor is refused with a clear message, and the model stays as it was
    bad = dict(tensors); bad["ll_shared.Q"] = bad["ll_shared.Q"][:3]
    save_file(bad, tmp_path / "b.safetensors", metadata=meta)
    m3 = toy_model(); snap = snapshot(m3)
    with pytest.raises(ValueError, match="ll_shared.Q has shape"): ll.load(m3, tmp_path / "b.safetensors")
    assert_unchanged(m3, snap, "failed load")


def test_format1_files_still_load(tmp_path):
    "Format 1 had no shared tensors: a LoRA file written then (version 1 metadata) loads unchanged."
    m, x = toy_model(), torch.randn(2, 5, 32)
    ll.attach(m, ll.LoRAConfig(r=2))
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad: p.add_(0.1)
    y = m(x)
    f = ll.save(m, tmp_path / "a.safetensors")
    meta, tensors = ll.read_adapter(f)
    save_file(tensors, tmp_path / "v1.safetensors", metadata=meta | {"format_version": "1"})
    m2 = toy_model(); ll.load(m2, tmp_path / "v1.safetensors")
    assert torch.equal(m2(x), y)


def test_summary_and_counts_once():
    m = adapted()
    s = ll.summary(m)
    n_layers = len(ll.adapter_layers(m))
    assert s.trainable == n_layers * 4 + m.ll_shared.Q.numel()
    assert [r["module"] for r in s.rows].count("ll_shared") == 1 and s.rows[-1]["trainable"] == m.ll_shared.Q.numel()
    assert "(shared)" in repr(s)
    # qwen3_params: Q (3072 × r) once across 28 blocks, d (r) per layer
    cfg = ToySharedConfig(r=4, target_names=("q_proj", "down_proj"))
    assert qwen3_params(cfg) == 28 * 2 * 4 + 2048 * 4
    assert qwen3_params(cfg, n_blocks=1) == 2 * 4 + 2048 * 4
    assert ll.full_adapter_state(m).keys() == ll.adapter_state(ll.adapter_layers(m)).keys()


@pytest.mark.parametrize("name", ["P", "Q"])
def test_cache_sees_inplace_edit_of_shared(name):
    "A cached value that reads a shared tensor is recomputed after an in-place edit of it (buffer or parameter)."
    m = adapted().eval()
    layer = next(iter(ll.adapter_layers(m).values()))
    calls = []
    fn = lambda: calls.append(1) or layer.delta_weight(None)
    with torch.no_grad():
        a = ll.cached(layer, "dW", fn); ll.cached(layer, "dW", fn)
        assert len(calls) == 1
        getattr(m.ll_shared, name).mul_(2.0)
        b = ll.cached(layer, "dW", fn)
    assert len(calls) == 2 and torch.allclose(b, 2 * a)


def test_grad_wanted_sees_shared_parameters():
    m = adapted()
    l = next(iter(ll.adapter_layers(m).values()))
    l.d.requires_grad_(False)
    assert ll.grad_wanted(l)                                      # Q (shared, trained) still needs a gradient
    m.ll_shared.Q.requires_grad_(False)
    assert not ll.grad_wanted(l)


def test_bad_shared_shapes_refused():
    class Bad(ToyShared):
        @classmethod
        def shared_shapes(cls, cfg, layers): return {"a.b": ((2,), False)}
    ll.VARIANTS["toy_shared"] = Bad
    m = toy_model(); snap = snapshot(m)
    with pytest.raises(ValueError, match="plain identifier"): ll.attach(m, CFG)
    assert_unchanged(m, snap, "failed attach")


def test_layer_without_link_says_how():
    l = ToyShared(CFG, 8, 8)
    with pytest.raises(RuntimeError, match="share_tensors"): _ = l.shared
    sh = ll.share_tensors({"a": l})
    assert l.shared is sh and sh.P.shape == (4, 8)


FORMAT1 = Path(__file__).parent / "data" / "format1"


@pytest.mark.parametrize("name", ["vera", "randlora"])
def test_format1_vera_randlora_files_load_to_the_same_outputs(name, tmp_path):
    "Adapters saved by the format-1 code (a copy of the shared random tensors in every layer; see data/format1/make.py)."
    from lora_lite.helpers import tiny_qwen3
    meta, old = ll.read_adapter(FORMAT1 / f"{name}_v1.safetensors")
    assert meta["format_version"] == "1" and sum(k.endswith((".A", ".B")) for k in old) == 12   # 6 layers × (A, B)
    want = load_file(FORMAT1 / f"{name}_v1_expected.safetensors")
    m = tiny_qwen3(); ll.load(m, FORMAT1 / f"{name}_v1.safetensors")
    with torch.no_grad(): y = m(want["ids"]).logits
    assert torch.equal(y, want["logits"])
    f = ll.save(m, tmp_path / "v2.safetensors")                  # re-saved in today's format: the pair once, same outputs
    _, new = ll.read_adapter(f)
    assert sorted(k for k in new if k.endswith((".A", ".B"))) == ["ll_shared.A", "ll_shared.B"]
    assert f.stat().st_size < (FORMAT1 / f"{name}_v1.safetensors").stat().st_size
    m2 = tiny_qwen3(); ll.load(m2, f)
    with torch.no_grad(): assert torch.equal(m2(want["ids"]).logits, want["logits"])
    # a format-1 file whose per-layer copies are not slices of one pair can't be stored once: refused, model unchanged
    bad = dict(old); k = next(k for k in bad if k.endswith(".A")); bad[k] = bad[k] + 1
    save_file(bad, tmp_path / "bad.safetensors", metadata=meta)
    m3 = tiny_qwen3(); snap = snapshot(m3)
    with pytest.raises(ValueError, match="format 1.*disagree"): ll.load(m3, tmp_path / "bad.safetensors")
    assert_unchanged(m3, snap, "failed load")
