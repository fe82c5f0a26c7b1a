"""mha-ft: fine-tune BERT-style encoders with our own multi-head attention and PEFT.

    from hf_mha import load_recipe, train, evaluate, predict
    metrics = train(load_recipe("quickstart", ["output_dir=runs/qs"]))

`hf_mha.attention.swap_attention(model)` works on any loaded model without the recipe machinery.
"""

from .errors import UserError
from .recipe import Recipe, load_recipe, recipe_from_dict
from .training import evaluate, predict, train

__all__ = ["Recipe", "UserError", "evaluate", "load_recipe", "predict", "recipe_from_dict", "train"]
