"""mha-ft: fine-tune BERT-style encoders with our own multi-head attention and PEFT.

    from hf_mha import load_recipe, train, evaluate_run, predict
    metrics = train(load_recipe("quickstart", ["output_dir=runs/qs"]))
    evaluate_run(run="runs/qs", split="test")

`hf_mha.attention.swap_attention(model)` works on any loaded model without the recipe machinery; the names
below load lazily so that importing `hf_mha.attention` alone stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "UserError": "errors",
    "Recipe": "recipe",
    "load_recipe": "recipe",
    "recipe_from_dict": "recipe",
    "train": "training",
    "validate": "training",
    "evaluate_run": "inference",
    "predict": "inference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'hf_mha' has no attribute {name!r}")
