"""Our multi-head attention for BERT-style encoders, swappable into stock transformers models.

Textbook MHA (`MultiHeadAttention`: fused QKV projection, h heads, softmax(QK^T/sqrt(d_k) + mask)V) replaces
the self-attention of BERT, RoBERTa, XLM-RoBERTa, ELECTRA, ALBERT and DistilBERT models in place, keeping the
pretrained weights and their parameter names. On top of stock it adds: an unpadded encoder (layers run on
real tokens only), a choice of kernels (`BACKENDS`), per-head masks and attention maps. It depends only on
torch and transformers:

    from hf_mha.attention import swap_attention, restore_attention
    model = AutoModelForSequenceClassification.from_pretrained(name)
    swap_attention(model, backend="auto", unpad=True)   # train, evaluate, apply PEFT as usual
    restore_attention(model).save_pretrained(out_dir)    # loads with plain transformers

Backends: "reference" (explicit math, can return attention maps), "sdpa" (torch SDPA), "flex"
(FlexAttention; CPU: inference only), "varlen" (torch's flash kernel on packed tokens; CUDA, fp16/bf16),
"nested" (one sdpa call over the packed tokens as a nested jagged tensor: flash with attention dropout on
CUDA), "auto" (varlen where it runs; nested when training with dropout on CUDA; sdpa on CPU).
"""

from hf_mha.attention.head_masks import attention_modules, attention_probs, masked_heads, set_head_mask
from hf_mha.attention.mha import BACKENDS, MultiHeadAttention
from hf_mha.attention.packing import PackedBatch
from hf_mha.attention.swap import SUPPORTED, restore_attention, swap_attention

__all__ = [
    "BACKENDS",
    "SUPPORTED",
    "MultiHeadAttention",
    "PackedBatch",
    "attention_modules",
    "attention_probs",
    "masked_heads",
    "restore_attention",
    "set_head_mask",
    "swap_attention",
]
