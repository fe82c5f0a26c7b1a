import pytest
import yaml

from hf_mha.errors import UserError
from hf_mha.recipe import apply_overrides, builtin_recipes, load_recipe, parse_override, recipe_from_dict


def test_defaults_and_sections():
    recipe = recipe_from_dict({})
    assert recipe.task == "text-classification"
    assert recipe.model.attention == "mha"
    assert recipe.tuning.method == "full"
    assert recipe.data.text_columns == ["text"]


def test_prefix_tuning_gets_the_stock_attention_unless_told():
    assert recipe_from_dict({"tuning": {"method": "prefix"}}).model.attention == "stock"
    told = recipe_from_dict({"tuning": {"method": "prefix"}, "model": {"attention": "mha"}})
    assert told.model.attention == "mha"  # refused by the tuning check, which names the fix


def test_every_builtin_recipe_runs_fast_by_default():
    for name in builtin_recipes():
        recipe = load_recipe(name)
        assert recipe.model.attention == "mha", name
        assert recipe.train.get("bf16", "auto") == "auto", name


def test_yaml_float_strings_become_floats(tmp_path):
    # PyYAML reads 2e-5 (no dot) as a string; TrainingArguments wants a float.
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  learning_rate: 2e-5\n  num_train_epochs: 2\n  bf16: 'false'\n")
    recipe = load_recipe(str(path))
    assert recipe.train["learning_rate"] == pytest.approx(2e-5)
    assert recipe.train["num_train_epochs"] == 2.0
    assert recipe.train["bf16"] is False


@pytest.mark.parametrize(
    "overrides, check",
    [
        (["train.learning_rate=3e-5"], lambda r: r.train["learning_rate"] == pytest.approx(3e-5)),
        (["output_dir=/tmp/x"], lambda r: r.output_dir == "/tmp/x"),
        (["data.files.train=a.csv"], lambda r: r.data.files.train == "a.csv"),
        (["data.max_train_samples=100"], lambda r: r.data.max_train_samples == 100),
        (["data.text_columns=[premise, hypothesis]"], lambda r: r.data.text_columns == ["premise", "hypothesis"]),
        (["model.attention=mha", "tuning.r=16"], lambda r: r.model.attention == "mha" and r.tuning.r == 16),
        (["train.per_device_train_batch_size=8"], lambda r: r.train["per_device_train_batch_size"] == 8),
    ],
)
def test_overrides(tmp_path, overrides, check):
    path = tmp_path / "r.yaml"
    path.write_text("task: text-classification\n")
    assert check(load_recipe(str(path), overrides))


def test_override_syntax_errors():
    with pytest.raises(UserError, match="not key=value"):
        parse_override("train.learning_rate")
    with pytest.raises(UserError, match="empty key"):
        parse_override("train..x=1")
    with pytest.raises(UserError, match="holds a value"):
        apply_overrides({"output_dir": "x"}, ["output_dir.sub=1"])


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"modle": {}}, r"unknown key 'modle' \(did you mean 'model'\?\)"),
        ({"data": {"text_column": ["a"]}}, r"unknown key 'data.text_column' \(did you mean 'text_columns'\?\)"),
        ({"train": {"learnig_rate": 1e-3}}, r"train.learnig_rate: unknown TrainingArguments key \(did you mean 'learning_rate'\?\)"),
        ({"train": {"num_train_epochs": "many"}}, r"train.num_train_epochs must be float, got 'many'"),
        ({"data": {"max_length": "long"}}, r"data.max_length: .*integer"),
        ({"model": {"attention": "fast"}}, r"model.attention: Input should be 'stock' or 'mha'"),
        ({"task": "translation"}, r"task: Input should be"),
        ({"data": {"text_columns": ["a", "b", "c"]}}, r"one text column, or two"),
        ({"train": {"output_dir": "x"}}, r"top-level key output_dir"),
    ],
)
def test_validation_errors(raw, message):
    with pytest.raises(UserError, match=message):
        recipe_from_dict(raw)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  nmae: x\n")
    with pytest.raises(UserError, match=f"{path}: unknown key 'model.nmae'"):
        load_recipe(str(path))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: text-classification\nmodel:\n  name: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: not valid YAML"):
        load_recipe(str(path))


def test_unknown_recipe_name():
    with pytest.raises(UserError, match=r"did you mean 'quickstart'"):
        load_recipe("quickstrat")


def test_builtin_recipes_are_valid():
    recipes = builtin_recipes()
    assert "quickstart" in recipes and "sst2-full" in recipes
    for name in recipes:
        recipe = load_recipe(name)
        assert recipe.output_dir


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe("quickstart", ["train.learning_rate=3e-5"])
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    again = load_recipe(str(path))
    assert again.model_dump() == recipe.model_dump()
    assert yaml.safe_load(path.read_text())["train"]["learning_rate"] == pytest.approx(3e-5)
