"""Swap `MultiHeadAttention` into stock HF encoders, and back.

The swap replaces each stock self-attention module with ours, handing over the pretrained projection modules
themselves, so parameter names, state-dict keys and PEFT `target_modules` stay exactly as in transformers.
With `unpad=True` the layer stack (the base model's `encoder`) also runs on real tokens only: it becomes an
instance of an `Unpadded...` subclass whose forward packs the batch after the embeddings and re-pads the
output before the task head, so heads, collators and PEFT see the usual shapes. Changing the instance's class
rather than patching its forward keeps `copy.deepcopy`, pickling and `nn.DataParallel` replicas working.

Nothing else in the model changes, which is what lets `restore_attention` (and a checkpoint saved while
swapped) give a model that plain transformers loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import AttentionMaskInterface
from transformers.models.albert.modeling_albert import AlbertAttention, AlbertModel, AlbertTransformer
from transformers.models.bert.modeling_bert import BertEncoder, BertModel, BertSelfAttention
from transformers.models.distilbert.modeling_distilbert import DistilBertModel, DistilBertSelfAttention, Transformer
from transformers.models.electra.modeling_electra import ElectraEncoder, ElectraModel, ElectraSelfAttention
from transformers.models.roberta.modeling_roberta import RobertaEncoder, RobertaModel, RobertaSelfAttention
from transformers.models.xlm_roberta.modeling_xlm_roberta import (
    XLMRobertaEncoder,
    XLMRobertaModel,
    XLMRobertaSelfAttention,
)

from hf_mha.attention.mha import MultiHeadAttention, check_backend, refuse_unsupported_kwargs
from hf_mha.attention.packing import PackedBatch, packed_rows
from hf_mha.errors import UserError

#: The `config._attn_implementation` of a swapped model. Its only job is the mask format: transformers builds
#: masks per implementation, and ours asks for the [B, L] padding mask itself, which is all the unpadding and
#: our kernels need (the 4D masks that "sdpa" and "eager" build would be thrown away).
ATTN_IMPLEMENTATION = "hf_mha"


def _padding_mask(batch_size, q_length, kv_length, attention_mask=None, **kwargs):
    # transformers has already turned a 2D mask into bool; all-real batches get None so nothing is unpadded.
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask


AttentionMaskInterface.register(ATTN_IMPLEMENTATION, _padding_mask)


class DistilBertMultiHeadAttention(MultiHeadAttention):
    """DistilBERT keeps W^Q, W^K, W^V and W^O together under its own names."""

    qkv_names = ("q_lin", "k_lin", "v_lin")

    def __init__(self, q_lin, k_lin, v_lin, out_lin, **kwargs):
        super().__init__(q_lin, k_lin, v_lin, **kwargs)
        self.out_lin = out_lin

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        context, probs = super().forward(hidden_states, attention_mask, **kwargs)
        return self.out_lin(context), probs


class AlbertMultiHeadAttention(MultiHeadAttention):
    """ALBERT's attention module also owns W^O, its dropout, the residual and the LayerNorm."""

    def __init__(self, query, key, value, dense, LayerNorm, output_dropout, **kwargs):  # noqa: N803 (stock name)
        super().__init__(query, key, value, **kwargs)
        self.dense = dense
        self.output_dropout = output_dropout
        self.LayerNorm = LayerNorm

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        context, probs = super().forward(hidden_states, attention_mask, **kwargs)
        return self.LayerNorm(hidden_states + self.output_dropout(self.dense(context))), probs


def _bert_style_to_ours(stock, backend: str) -> MultiHeadAttention:
    return MultiHeadAttention(
        stock.query, stock.key, stock.value,
        num_heads=stock.num_attention_heads, head_dim=stock.attention_head_size,
        dropout_p=stock.dropout.p, backend=backend,
    )


def _bert_style_to_stock(stock_class: type) -> Callable:
    def to_stock(ours: MultiHeadAttention, config) -> nn.Module:
        with torch.device("meta"):  # the projections are handed back below, nothing needs allocating
            stock = stock_class(config)
        stock.query, stock.key, stock.value = ours.query, ours.key, ours.value
        stock.dropout.p = ours.dropout_p
        # The config holds the unpruned head count; a pruned module keeps its own.
        stock.num_attention_heads, stock.all_head_size = ours.num_heads, ours.num_heads * ours.head_dim
        return stock

    return to_stock


def _distilbert_to_ours(stock: DistilBertSelfAttention, backend: str) -> MultiHeadAttention:
    return DistilBertMultiHeadAttention(
        stock.q_lin, stock.k_lin, stock.v_lin, stock.out_lin,
        num_heads=stock.n_heads, head_dim=stock.attention_head_size, dropout_p=stock.dropout.p, backend=backend,
    )


def _distilbert_to_stock(ours: DistilBertMultiHeadAttention, config) -> nn.Module:
    with torch.device("meta"):
        stock = DistilBertSelfAttention(config)
    stock.q_lin, stock.k_lin, stock.v_lin, stock.out_lin = ours.q_lin, ours.k_lin, ours.v_lin, ours.out_lin
    stock.dropout.p = ours.dropout_p
    stock.n_heads = ours.num_heads  # pruned heads: the module's count, not the config's
    return stock


def _albert_to_ours(stock: AlbertAttention, backend: str) -> MultiHeadAttention:
    return AlbertMultiHeadAttention(
        stock.query, stock.key, stock.value, stock.dense, stock.LayerNorm, stock.output_dropout,
        num_heads=stock.num_attention_heads, head_dim=stock.attention_head_size,
        dropout_p=stock.attention_dropout.p, backend=backend,
    )


def _albert_to_stock(ours: AlbertMultiHeadAttention, config) -> nn.Module:
    with torch.device("meta"):
        stock = AlbertAttention(config)
    stock.query, stock.key, stock.value, stock.dense = ours.query, ours.key, ours.value, ours.dense
    stock.LayerNorm, stock.output_dropout = ours.LayerNorm, ours.output_dropout
    stock.attention_dropout.p = ours.dropout_p
    stock.num_attention_heads, stock.all_head_size = ours.num_heads, ours.num_heads * ours.head_dim
    return stock


class UnpaddedEncoder:
    """Put in front of a stock layer-stack class: the same forward, run on the real tokens only.

    [B, L, d] -> packed [1, T', d] (the T real tokens, then for bf16 on CPU T' - T rows of zeros: `packed_rows`)
    -> the stock layers (our attention reads the PackedBatch that arrives as their `attention_mask`) -> re-padded
    [B, L, d] with zeros at padding.
    """

    hf_mha_config = None  # the base model's config, set by swap_attention (DistilBERT's stack has none of its own)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        refuse_unsupported_kwargs(kwargs)  # before packing, which a prefix-extended mask would break
        # Per-layer hidden states are recorded by hooks on the stock layers, so those must see padded tensors.
        wants_hidden_states = kwargs.get("output_hidden_states", self.hf_mha_config.output_hidden_states)
        if attention_mask is None or attention_mask.ndim != 2 or wants_hidden_states:
            return super().forward(hidden_states, attention_mask, **kwargs)
        batch = PackedBatch.from_padding_mask(attention_mask)
        packed = batch.pack(hidden_states)  # [T, d]
        # Rows of zeros after the tokens round the row count up (packed_rows): attention leaves them out, every
        # other op treats rows one by one, and their outputs are dropped, so they change nothing but the shape.
        autocast = torch.is_autocast_enabled(packed.device.type)
        matmul_dtype = torch.get_autocast_dtype(packed.device.type) if autocast else packed.dtype
        rows = packed_rows(len(packed), packed.device, matmul_dtype)
        if rows > len(packed):
            packed = F.pad(packed, (0, 0, 0, rows - len(packed)))
        outputs = super().forward(packed[None], batch, **kwargs)  # layers see [1, T', d]
        outputs.last_hidden_state = batch.unpack(outputs.last_hidden_state[0, : len(batch.indices)])  # [B, L, d]
        return outputs


class UnpaddedBertEncoder(UnpaddedEncoder, BertEncoder):
    pass


class UnpaddedRobertaEncoder(UnpaddedEncoder, RobertaEncoder):
    pass


class UnpaddedXLMRobertaEncoder(UnpaddedEncoder, XLMRobertaEncoder):
    pass


class UnpaddedElectraEncoder(UnpaddedEncoder, ElectraEncoder):
    pass


class UnpaddedAlbertTransformer(UnpaddedEncoder, AlbertTransformer):
    pass


class UnpaddedDistilBertTransformer(UnpaddedEncoder, Transformer):
    pass


@dataclass(frozen=True)
class Architecture:
    name: str  # config.model_type
    base_class: type  # the bare encoder model every task model of this family holds
    encoder_attr: str  # the base model's attribute holding the layer stack
    unpadded_encoder: type  # subclass of that stack's class, with UnpaddedEncoder in front
    stock_attention: type
    to_ours: Callable[[nn.Module, str], MultiHeadAttention]
    to_stock: Callable[[MultiHeadAttention, object], nn.Module]


ARCHITECTURES = (
    Architecture("bert", BertModel, "encoder", UnpaddedBertEncoder, BertSelfAttention,
                 _bert_style_to_ours, _bert_style_to_stock(BertSelfAttention)),
    Architecture("roberta", RobertaModel, "encoder", UnpaddedRobertaEncoder, RobertaSelfAttention,
                 _bert_style_to_ours, _bert_style_to_stock(RobertaSelfAttention)),
    Architecture("xlm-roberta", XLMRobertaModel, "encoder", UnpaddedXLMRobertaEncoder, XLMRobertaSelfAttention,
                 _bert_style_to_ours, _bert_style_to_stock(XLMRobertaSelfAttention)),
    Architecture("electra", ElectraModel, "encoder", UnpaddedElectraEncoder, ElectraSelfAttention,
                 _bert_style_to_ours, _bert_style_to_stock(ElectraSelfAttention)),
    Architecture("albert", AlbertModel, "encoder", UnpaddedAlbertTransformer, AlbertAttention,
                 _albert_to_ours, _albert_to_stock),
    Architecture("distilbert", DistilBertModel, "transformer", UnpaddedDistilBertTransformer,
                 DistilBertSelfAttention, _distilbert_to_ours, _distilbert_to_stock),
)
SUPPORTED = tuple(arch.name for arch in ARCHITECTURES)


def swap_attention(model: nn.Module, backend: str = "auto", unpad: bool = True) -> nn.Module:
    """Replace every self-attention module of `model` with `MultiHeadAttention`, in place; returns `model`.

    `model` is any model holding a BERT, RoBERTa, XLM-RoBERTa, ELECTRA, ALBERT or DistilBERT encoder: a bare
    base model, an AutoModelFor... task model, or one wrapped by PEFT. The pretrained projections are reused,
    not copied. `backend` is one of `BACKENDS`; with `unpad=True` the layers run on real tokens only.
    Calling it again on a swapped model changes the backend and the unpadding.
    """
    check_backend(backend)
    bases = _base_models(model)
    if not bases:
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        described = type(model).__name__ + (f" (model_type {model_type!r})" if model_type else "")
        raise UserError(
            f"hf_mha attention supports {', '.join(SUPPORTED)} encoders; {described} holds none of them. "
            "Use the stock attention (model.attention: stock) for this model"
        )
    for arch, base in bases:
        config = base.config
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            raise UserError(
                f"swap_attention handles encoders only, but this {arch.name} config has is_decoder or "
                "add_cross_attention set; keep the stock attention for decoders"
            )
        if config.output_attentions:
            raise UserError(
                "config.output_attentions is True, which hf_mha attention cannot serve; set it to False and use "
                "`with hf_mha.attention.attention_probs(model) as maps:` for attention maps"
            )
        for parent, name, child in _named_children(base):
            if isinstance(child, arch.stock_attention):
                ours = arch.to_ours(child, backend)
                ours.train(child.training)
                setattr(parent, name, ours)
            elif isinstance(child, MultiHeadAttention):
                child.backend = backend
        if config._attn_implementation != ATTN_IMPLEMENTATION:
            base._hf_mha_stock_attn_implementation = config._attn_implementation
            config._attn_implementation = ATTN_IMPLEMENTATION
        _set_unpadding(getattr(base, arch.encoder_attr), arch, config if unpad else None)
    return model


def restore_attention(model: nn.Module) -> nn.Module:
    """Put the stock attention modules back, in place; returns `model`. The projections (with any PEFT
    wrappers) move back unchanged, so the result saves and loads like any transformers model.
    Head masks are dropped: stock transformers v5 has no head masks (prune heads to keep their effect).
    A model that was never swapped is returned as it is."""
    for arch, base in _base_models(model):
        for parent, name, child in _named_children(base):
            if isinstance(child, MultiHeadAttention):
                stock = arch.to_stock(child, base.config)
                stock.train(child.training)
                setattr(parent, name, stock)
        _set_unpadding(getattr(base, arch.encoder_attr), arch, None)
        if "_hf_mha_stock_attn_implementation" in base.__dict__:
            base.config._attn_implementation = base.__dict__.pop("_hf_mha_stock_attn_implementation")
    return model


def _set_unpadding(encoder: nn.Module, arch: Architecture, config) -> None:
    """Make `encoder` an unpadded stack reading `config`, or (config None) the stock one again."""
    if config is None:
        if isinstance(encoder, UnpaddedEncoder):
            encoder.__class__ = arch.unpadded_encoder.__bases__[-1]  # the stock class it extends
            del encoder.hf_mha_config
        return
    encoder.__class__ = arch.unpadded_encoder
    encoder.hf_mha_config = config


def _base_models(model: nn.Module) -> list[tuple[Architecture, nn.Module]]:
    # Exact types: a subclass of a base model may build its layers from attention classes we do not know.
    return [(arch, module) for module in model.modules() for arch in ARCHITECTURES if type(module) is arch.base_class]


def _named_children(root: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    # Listed up front because the caller replaces children while walking.
    return [(parent, name, child) for parent in root.modules() for name, child in parent.named_children()]
