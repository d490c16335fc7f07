"The core on bitsandbytes bases: dense_weight dequantizes, and the CPU 4-bit repacking trap never trains silently."
import tempfile
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3

bnb = pytest.importorskip("bitsandbytes")
from transformers import AutoModelForCausalLM, BitsAndBytesConfig


@pytest.fixture(scope="module")
def qdir():
    d = tempfile.mkdtemp()
    tiny_qwen3(hidden=128).save_pretrained(d)
    return d


def load4(d, **kw):
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32, **kw)
    return AutoModelForCausalLM.from_pretrained(d, quantization_config=q, device_map="cpu")


def test_dense_weight_dequantizes(qdir):
    ref = AutoModelForCausalLM.from_pretrained(qdir)
    for kind, m in [("4bit", load4(qdir)), ("8bit", AutoModelForCausalLM.from_pretrained(
            qdir, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="cpu"))]:
        W, W0 = ll.dense_weight(m.model.layers[0].self_attn.q_proj), ref.model.layers[0].self_attn.q_proj.weight
        assert W.shape == W0.shape and W.dtype == torch.float32
        rel = ((W - W0).norm() / W0.norm()).item()
        assert rel < (0.15 if kind == "4bit" else 0.02), (kind, rel)


def test_training_after_eval_gets_gradients(qdir):
    "Attached first, then eval (would repack), then train: every adapter tensor upstream still gets a gradient."
    m = load4(qdir); ids = torch.randint(0, 128, (2, 8))
    flags = [x.support_avx512bf16_for_cpu for x in m.modules() if isinstance(x, bnb.nn.Linear4bit)]   # False on CPUs without avx512-bf16
    ll.attach(m, ll.LoRAConfig(r=4))
    m.eval()
    with torch.no_grad(): m(ids)
    assert not any(getattr(x.weight.quant_state, "packing_format_for_cpu", False) for x in m.modules() if isinstance(x, bnb.nn.Linear4bit))
    m.train(); m(ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in m.named_parameters() if n.endswith(".B")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    ll.detach(m)
    assert [x.support_avx512bf16_for_cpu for x in m.modules() if isinstance(x, bnb.nn.Linear4bit)] == flags   # restored


def test_already_repacked_refuses_to_train(qdir):
    m = load4(qdir); ids = torch.randint(0, 128, (2, 8))
    m.eval()
    with torch.no_grad(): y0 = m(ids).logits
    if not any(getattr(x.weight.quant_state, "packing_format_for_cpu", False) for x in m.modules() if isinstance(x, bnb.nn.Linear4bit)):
        pytest.skip("this CPU's bitsandbytes does not repack 4-bit weights")
    ll.attach(m, ll.LoRAConfig(r=4))
    with torch.no_grad(): assert torch.equal(m(ids).logits, y0)       # inference still works, identity at init
    m.train()
    with pytest.raises(RuntimeError, match="repacked for CPU inference"):
        m(ids, labels=ids)
    ll.detach(m)
    assert sum(len(x._forward_pre_hooks) for x in m.modules()) == 0
