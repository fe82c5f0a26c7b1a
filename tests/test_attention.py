"""MultiHeadAttention on its own (against the textbook formula), head masks, attention maps, backend errors,
and PEFT adapters on swapped models."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import (
    IA3Config,
    LoraConfig,
    PrefixTuningConfig,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from test_attention_parity import MIXED_LENGTHS, make_batch, max_diff, real_outputs, swapped_copy, tiny_model
from torch import nn

from hf_mha.attention import (
    BACKENDS,
    MultiHeadAttention,
    PackedBatch,
    attention_modules,
    attention_probs,
    masked_heads,
    set_head_mask,
    swap_attention,
)
from hf_mha.attention.packing import ROW_GRANULE, packed_rows, plan_buckets
from hf_mha.errors import UserError

D_MODEL, NUM_HEADS, HEAD_DIM = 32, 4, 8



def standalone_attention(backend: str = "reference") -> MultiHeadAttention:
    torch.manual_seed(0)
    linears = [nn.Linear(D_MODEL, NUM_HEADS * HEAD_DIM) for _ in range(3)]
    return MultiHeadAttention(*linears, num_heads=NUM_HEADS, head_dim=HEAD_DIM, backend=backend).eval()


def textbook_attention(module: MultiHeadAttention, x, keep, head_mask=None):
    """softmax(Q_h K_h^T / sqrt(d_k) + mask) V_h for each head h, one sequence and one head at a time."""
    batch_size, seq_len, _ = x.shape
    out = torch.zeros(batch_size, seq_len, NUM_HEADS * HEAD_DIM)
    for b in range(batch_size):
        for h in range(NUM_HEADS):
            cols = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            q = x[b] @ module.query.weight[cols].T + module.query.bias[cols]
            k = x[b] @ module.key.weight[cols].T + module.key.bias[cols]
            v = x[b] @ module.value.weight[cols].T + module.value.bias[cols]
            scores = q @ k.T / HEAD_DIM**0.5 + torch.where(keep[b], 0.0, float("-inf"))[None, :]
            weight = 1.0 if head_mask is None else head_mask[h]
            out[b, :, cols] = weight * torch.softmax(scores, dim=-1) @ v
    return out


def random_inputs():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 7, D_MODEL, generator=generator)
    keep = torch.arange(7)[None, :] < torch.tensor([7, 4, 2])[:, None]
    return x, keep


@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex"])
@pytest.mark.parametrize("head_mask", [None, torch.tensor([1.0, 0.0, 0.5, 1.0])])
def test_module_equals_textbook_formula_padded_and_packed(backend, head_mask):
    module = standalone_attention(backend)
    module.head_mask = head_mask
    x, keep = random_inputs()
    expected = textbook_attention(module, x, keep, head_mask)
    batch = PackedBatch.from_padding_mask(keep)
    with torch.no_grad():
        padded, _ = module(x, keep)
        packed, _ = module(batch.pack(x)[None], batch)
    assert (padded[keep] - expected[keep]).abs().max() < 1e-5
    assert (batch.unpack(packed[0])[keep] - expected[keep]).abs().max() < 1e-5


def test_fused_projection_equals_the_three_linears():
    module = standalone_attention()
    x, _ = random_inputs()
    separate = torch.cat([module.query(x), module.key(x), module.value(x)], dim=-1)
    assert (module.project_qkv(x) - separate).abs().max() < 1e-6


def test_reference_backend_returns_probabilities_when_asked():
    module = standalone_attention("reference")
    x, keep = random_inputs()
    with torch.no_grad():
        assert module(x, keep)[1] is None
        module.return_probs = True
        _, probs = module(x, keep)
    assert probs.shape == (3, NUM_HEADS, 7, 7)
    assert torch.allclose(probs.sum(-1), torch.ones(3, NUM_HEADS, 7))
    assert probs[~keep[:, None, None, :].expand_as(probs)].abs().max() == 0  # nothing attends to padding


def test_packed_batch_round_trips_and_buckets():
    keep = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 1, 0]], dtype=torch.bool)
    batch = PackedBatch.from_padding_mask(keep)
    x = torch.arange(15.0).view(3, 5, 1)
    assert batch.pack(x).flatten().tolist() == [1, 2, 5, 6, 7, 8, 13]
    assert torch.equal(batch.unpack(batch.pack(x)), x * keep[..., None])
    assert batch.cu_seqlens.tolist() == [0, 2, 6, 7] and batch.max_seqlen == 4
    rectangles = []

    def record(rectangle, bucket):
        rectangles.append(rectangle[..., 0])
        return rectangle, None

    context, _ = batch.attend_in_buckets(batch.pack(x), record)
    assert [r.tolist() for r in rectangles] == [[[1, 2, 0, 0], [5, 6, 7, 8], [13, 0, 0, 0]]]  # left-aligned
    assert torch.equal(context, batch.pack(x))


def test_buckets_group_similar_lengths_and_keep_token_order():
    lengths = [40, 3, 5, 38, 4, 6, 2, 12]
    groups = plan_buckets(lengths)
    assert sorted(s for g in groups for s in g) == list(range(8))
    assert [0, 3] in groups  # the two long ones together, the short ones elsewhere
    keep = torch.arange(40)[None, :] < torch.tensor(lengths)[:, None]
    batch = PackedBatch.from_padding_mask(keep)
    assert len(batch.buckets) == len(groups) > 1
    x = torch.randn(8, 40, 3)
    context, _ = batch.attend_in_buckets(batch.pack(x), lambda rect, bucket: (rect * 2, None))
    assert torch.equal(batch.unpack(context), 2 * x * keep[..., None])
    assert plan_buckets([0, 5]) == [[1]]  # empty sequences have no tokens to place


def test_packed_rows_round_up_for_16_bit_products_on_cpu_only():
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    counts = range(1, 20_000)
    rounded = [packed_rows(n, cpu, bf16) for n in counts]
    assert all(n <= rows <= n + max(ROW_GRANULE - 1, n // 16) for n, rows in zip(counts, rounded))
    assert all(rows % ROW_GRANULE == 0 for rows in rounded)
    assert len(set(rounded[255:])) <= 16 * 7  # 16 row counts per doubling from 256 to 20,000 tokens
    assert packed_rows(0, cpu, bf16) == 0 and packed_rows(430, cpu, bf16) == 432 and packed_rows(600, cpu, bf16) == 608
    assert packed_rows(430, cpu, torch.float32) == 430  # MKL runs fp32 products: no kernel to build per shape
    assert packed_rows(430, torch.device("cuda"), bf16) == 430


def test_layers_run_on_rounded_rows_and_filler_rows_change_nothing():
    stock = tiny_model("bert", "token").train()
    ours = swapped_copy(stock)
    batch = make_batch("bert", lengths=MIXED_LENGTHS)  # 72 tokens: the layers see 80 rows under bf16 autocast
    seen = []
    ours.bert.encoder.layer[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    torch.manual_seed(0)
    ours(**batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = ours(**batch).logits
    logits.float().sum().backward()
    assert seen == [(1, 72, ours.config.hidden_size), (1, 80, ours.config.hidden_size)]
    # Gradients reach only the real tokens' embeddings: the filler rows take no part in what they feed.
    grad = ours.bert.embeddings.word_embeddings.weight.grad
    used = batch["input_ids"][batch["attention_mask"].bool()].unique()
    unused = torch.ones(len(grad), dtype=torch.bool)
    unused[used] = False
    assert grad[unused].abs().max() == 0 and torch.isfinite(grad).all()


def test_backend_names_and_unknown_backend():
    assert BACKENDS == ("auto", "reference", "sdpa", "flex", "varlen", "nested")
    with pytest.raises(UserError, match="unknown attention backend 'fast'.*auto, reference, sdpa, flex, varlen"):
        swap_attention(tiny_model("bert"), backend="fast")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_varlen_without_cuda_names_what_it_needs():
    with pytest.raises(UserError, match="'varlen' needs a CUDA GPU"):
        swap_attention(tiny_model("bert"), backend="varlen")


def test_auto_backend_runs_sdpa_on_cpu():
    module = standalone_attention("auto")
    assert module.runnable_backend(torch.zeros(1, 2, 3 * D_MODEL)) == "sdpa"


def _graph_node_names(tensor: torch.Tensor) -> set[str]:
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_cpu_backward_without_dropout_takes_sdpa_math_path():
    # sdpa's CPU flash kernel has a slow backward: a pass that will be differentiated is pinned to the math path.
    module = standalone_attention("sdpa").train()  # dropout_p 0, as ALBERT trains
    x, keep = random_inputs()
    context, _ = module(x.requires_grad_(), keep)
    assert not any("FlashAttention" in name for name in _graph_node_names(context))
    reference = textbook_attention(module, x.detach(), keep)
    assert torch.allclose(context[keep], reference[keep], atol=1e-5)
    context.sum().backward()
    assert x.grad is not None and module.query.weight.grad is not None
    with torch.no_grad():
        context, _ = module(x, keep)
    assert torch.allclose(context[keep], reference[keep], atol=1e-5)


def test_flex_on_cpu_refuses_backward_with_a_clear_error():
    model = swapped_copy(tiny_model("bert"), backend="flex")
    with pytest.raises(UserError, match="'flex' has no backward pass on CPU"):
        model(**make_batch("bert"))


def test_flex_refuses_attention_dropout_in_training():
    model = swapped_copy(tiny_model("bert", attention_probs_dropout_prob=0.1).train(), backend="flex")
    with torch.no_grad(), pytest.raises(UserError, match="'flex' has no attention dropout"):
        model(**make_batch("bert"))


def test_output_attentions_points_to_attention_probs():
    model = swapped_copy(tiny_model("bert"))
    with pytest.raises(UserError, match="attention_probs"):
        model(**make_batch("bert"), output_attentions=True)


@pytest.mark.parametrize("unpad", [True, False])
def test_prefix_tuning_is_refused_with_a_clear_error(unpad):
    prefix = PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4)
    model = get_peft_model(swapped_copy(tiny_model("bert"), unpad=unpad), prefix)
    with pytest.raises(UserError, match="past_key_values.*prefix tuning"):
        model(**make_batch("bert"))


# Head masks and attention maps on whole models


@pytest.mark.parametrize("arch", ["bert", "albert", "distilbert"])
def test_all_ones_head_mask_changes_nothing_and_zeroing_a_head_does(arch):
    model = swapped_copy(tiny_model(arch, "token").eval())
    batch = make_batch(arch)
    keep = batch["attention_mask"].bool()
    rows = len(attention_modules(model))
    assert rows == (1 if arch == "albert" else 2)  # ALBERT: one module shared by both layers
    with torch.no_grad():
        plain = real_outputs(model(**batch), "token", keep)
        with masked_heads(model, torch.ones(rows, 4)):
            ones = real_outputs(model(**batch), "token", keep)
        mask = torch.ones(rows, 4)
        mask[0, 1] = 0
        with masked_heads(model, mask):
            masked = real_outputs(model(**batch), "token", keep)
            unpadded_off = real_outputs(swap_attention(model, unpad=False)(**batch), "token", keep)
        back = real_outputs(swap_attention(model, unpad=True)(**batch), "token", keep)
    assert max_diff(plain, ones) == 0
    assert max_diff(plain, masked) > 1e-4  # random init: small weights, small but clear effect
    assert max_diff(masked, unpadded_off) < 1e-5
    assert max_diff(plain, back) == 0  # the context manager put the previous (no) mask back


def test_head_mask_equals_dropping_the_head_from_the_concatenation():
    """Masking head h of layer 0 == zeroing that head's slice of W^O's input, computed with stock eager."""
    stock = tiny_model("bert", "token", attn="eager").eval()
    ours = swapped_copy(stock, backend="reference")
    mask = torch.ones(2, 4)
    mask[0, 2] = 0
    with torch.no_grad():
        stock.bert.encoder.layer[0].attention.output.dense.weight[:, 16:24] = 0  # head 2 of 4, 8 wide
        batch = make_batch("bert")
        keep = batch["attention_mask"].bool()
        with masked_heads(ours, mask):
            masked = real_outputs(ours(**batch), "token", keep)
        assert max_diff(real_outputs(stock(**batch), "token", keep), masked) < 1e-5


def test_head_mask_collects_gradients_for_importance_scores():
    model = swapped_copy(tiny_model("bert", "seq").train())
    mask = torch.ones(2, 4, requires_grad=True)
    set_head_mask(model, mask)
    model(**make_batch("bert"), labels=torch.tensor([0, 1, 2])).loss.backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0
    set_head_mask(model, None)
    assert all(m.head_mask is None for m in attention_modules(model))


def test_head_mask_of_the_wrong_shape_is_refused():
    model = swapped_copy(tiny_model("bert"))
    with pytest.raises(UserError, match=r"row lengths \[4, 4\]"):
        set_head_mask(model, torch.ones(2, 3))
    with pytest.raises(UserError, match="swap_attention"):
        set_head_mask(tiny_model("bert"), torch.ones(2, 4))


@pytest.mark.parametrize("arch", ["bert", "albert", "distilbert"])
@pytest.mark.parametrize("layout", [dict(), dict(left_pad=True, seq_len=12), dict(lengths=MIXED_LENGTHS)])
def test_attention_probs_equal_stock_eager_attentions(arch, layout):
    stock = tiny_model(arch, "base", attn="eager").eval()
    ours = swapped_copy(stock)  # unpadded: maps come back at the input's positions
    batch = make_batch(arch, **layout)
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = stock(**batch, output_attentions=True).attentions
        with attention_probs(ours) as maps:
            ours(**batch)
    assert len(maps) == len(expected) == 2
    real_rows = keep[:, None, :, None].expand_as(expected[0])
    for want, have in zip(expected, maps):
        assert have.shape == want.shape
        assert (want[real_rows] - have[real_rows]).abs().max() < 1e-6
        assert have[~real_rows].abs().max() == 0
    assert {m.backend for m in attention_modules(ours)} == {"auto"}  # backend restored after recording


# PEFT on swapped models


def lora_config(arch: str) -> LoraConfig:
    targets = ["q_lin", "v_lin"] if arch == "distilbert" else ["query", "value"]
    return LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type="TOKEN_CLS")


@pytest.mark.parametrize("arch", ["bert", "distilbert", "albert"])
def test_lora_on_query_value_matches_stock_lora_in_either_order(arch):
    torch.manual_seed(0)
    stock_lora = get_peft_model(tiny_model(arch, "token").train(), lora_config(arch))
    swapped_after = swapped_copy(stock_lora)  # LoRA first, then swap
    swapped_first = get_peft_model(swapped_copy(tiny_model(arch, "token").train()), lora_config(arch))
    set_peft_model_state_dict(swapped_first, get_peft_model_state_dict(stock_lora))
    batch = make_batch(arch)
    keep = batch["attention_mask"].bool()

    expected = real_outputs(stock_lora(**batch), "token", keep)
    for model in (swapped_after, swapped_first):
        assert max_diff(expected, real_outputs(model(**batch), "token", keep)) < 1e-5
    grads = {}
    for name, model in [("stock", stock_lora), ("after", swapped_after), ("first", swapped_first)]:
        loss = sum(t.square().sum() for t in real_outputs(model(**batch), "token", keep))
        loss.backward()
        grads[name] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert len(grads["stock"]) >= 4
    for n, g in grads["stock"].items():
        assert (g - grads["after"][n]).abs().max() < 1e-4, n
        assert (g - grads["first"][n]).abs().max() < 1e-4, n


def test_ia3_on_key_value_dense_matches_stock_ia3():
    config = IA3Config(target_modules=["key", "value", "dense"], feedforward_modules=["dense"], task_type="SEQ_CLS")
    stock = get_peft_model(tiny_model("bert", "seq").eval(), config)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in stock.named_parameters():
            if "ia3_l" in name:
                p.uniform_(0.5, 1.5)
    ours = swapped_copy(stock)
    batch = make_batch("bert")
    with torch.no_grad():
        assert (stock(**batch).logits - ours(**batch).logits).abs().max() < 1e-5
        plain = swapped_copy(tiny_model("bert", "seq").eval())
        assert (plain(**batch).logits - ours(**batch).logits).abs().max() > 1e-3  # the adapters did run


def test_peft_wrapped_projection_disables_fusion_but_keeps_the_adapter():
    model = swapped_copy(tiny_model("bert", "token"))
    peft_model = get_peft_model(copy.deepcopy(model), lora_config("bert"))
    module = attention_modules(peft_model)[0]
    x = torch.randn(2, 5, 32)
    separate = torch.cat([p(x) for p in module.projections()], dim=-1)
    base_only = attention_modules(model)[0].project_qkv(x)
    assert (module.project_qkv(x) - separate).abs().max() < 1e-6
    assert (module.project_qkv(x) - base_only).abs().max() > 1e-4
