"""The params.yaml schema: the shipped file is valid, messages are one line, stages check what they read."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Annotated, Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from tspnet import schema
from tspnet.files import ParamsError
from tspnet.params import interpolated
from tspnet.schema import describe_type, validated

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
GROUPS = [name for name in schema.Params.model_fields]


def stage_keys() -> dict[str, tuple[str, ...]]:
    """The params keys each stage script validates: the third argument of its stage_arguments call."""
    keys = {}
    for script in sorted((REPO / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "stage_arguments":
                keys[script.stem] = ast.literal_eval(node.args[2])
    return keys


def test_the_shipped_params_file_is_valid_in_full():
    everything = [*GROUPS, *(f"datasets.{n}" for n in PARAMS["datasets"]),
                  *(f"locators.{n}" for n in PARAMS["locators"])]
    assert validated(PARAMS, everything) == PARAMS


def test_validated_returns_the_values_unchanged_as_a_copy():
    params = copy.deepcopy(PARAMS)
    out = validated(params, ["train"])
    assert out == params and out is not params and out["train"] is not params["train"]
    assert type(out["datasets"]["synthetic"]["feature_fps"]) is int  # nothing converted (25, not 25.0)


def test_every_stage_validates_every_param_dvc_yaml_gives_it():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    validated_keys = stage_keys()
    assert set(validated_keys) == set(stages)
    for name, stage in stages.items():
        declared = {interpolated(k, PARAMS) for k in stage.get("params", [])}
        checked = {interpolated(k, PARAMS) for k in validated_keys[name]}
        assert declared <= checked, (name, declared - checked)


@pytest.mark.parametrize("key, value, stage_key", [
    ("train.lr", "abc", "labels"),  # another stage's problem is left to that stage
    ("datasets.thumos14.feature_fps", -1, "datasets.synthetic"),
    ("infer.class_threshold", 2.0, "infer.nms_sigma"),  # a sibling key of the one read
])
def test_problems_outside_the_keys_a_stage_reads_are_left_to_their_stage(key, value, stage_key):
    params = copy.deepcopy(PARAMS)
    node = params
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    validated(params, [stage_key])
    with pytest.raises(ParamsError):
        validated(params, [key])


def test_an_unknown_group_fails_every_stage():
    params = {**copy.deepcopy(PARAMS), "trian": {"lr": 1}}
    for keys in stage_keys().values():
        with pytest.raises(ParamsError, match=r"^params.yaml: trian is not a params group \(known: base, "):
            validated(params, keys)


def test_several_problems_are_still_one_line():
    params = copy.deepcopy(PARAMS)
    params["train"].update(lr=-1, iterations=0, dropout=2)
    with pytest.raises(ParamsError) as info:
        validated(params, ["train"])
    assert "\n" not in str(info.value) and str(info.value).endswith("(and 2 more problem(s))")


def test_interpolated_keys_follow_dvc_yaml():
    assert interpolated("datasets.${dataset}", PARAMS) == f"datasets.{PARAMS['dataset']}"
    assert interpolated("locators.${proposals.locator}", PARAMS) == f"locators.{PARAMS['proposals']['locator']}"
    assert interpolated("locators.${proposals.nothing}", PARAMS) == "locators.None"


class Toy(BaseModel):
    a: int
    b: str


@pytest.mark.parametrize("annotation, words", [
    (schema.Count, "an integer >= 1"),
    (schema.NonNegativeInt, "an integer >= 0"),
    (schema.Positive, "a number > 0"),
    (schema.UnitInterval, "a number in [0, 1]"),
    (schema.BelowOne, "a number in [0, 1)"),
    (schema.OpenUnit, "a number in (0, 1)"),
    (schema.AboveZeroToOne, "a number in (0, 1]"),
    (schema.Seed, "an integer in [0, 4294967295]"),
    (Literal["clip", "refuse"], "one of 'clip', 'refuse'"),
    (list[schema.OpenUnit], "a list of numbers in (0, 1)"),
    (schema.Count | None, "an integer >= 1 or null"),
    (bool, "true or false"),
    (Toy, "a mapping with keys a, b"),
    (Annotated[float, Field(le=5)], "a number <= 5"),
    (schema.Device, "auto, cpu, cuda or cuda:N"),
])
def test_what_a_type_allows_in_words(annotation, words):
    assert describe_type(annotation) == words


def all_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for name, info in model.model_fields.items():
        out.append((prefix + name, info))
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out.extend(all_fields(inner, f"{prefix}{name}."))
    return out


@pytest.mark.parametrize("model", [schema.Base, schema.Generator, schema.SyntheticDataset, schema.FilesDataset,
                                   schema.Locate, schema.Proposals, schema.Locator, schema.Labels, schema.Train,
                                   schema.Infer, schema.Archives], ids=lambda m: m.__name__)
def test_every_key_says_what_it_allows(model):
    for key, info in all_fields(model):
        words = info.description or describe_type(
            Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)
        assert words and not re.search(r"typing|Annotated|<class", words), (key, words)
