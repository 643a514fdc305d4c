"""The params.yaml schema: every key, its type and what values it allows, in one place.

Each stage validates the keys it reads before it does any work
(`validated(params, keys)`, called by `tspnet.params.stage_arguments`), and
then receives params.yaml's values unchanged, as plain dicts: the schema
checks, it never converts or fills in (numbers are strict: `"0.5"` is not a
number, `2000.0` is not an integer, `.nan` is refused). A problem is one
line naming the key, the value and what is allowed:

    params.yaml: infer.class_threshold is 1.5, expected a number in [0, 1)
    params.yaml: train.lr is missing, expected a number > 0
    params.yaml: train.colour is not a key of train (it has iterations, batch_videos, ...)

Unknown keys are errors. Besides single values, `validated` checks what
params imply together (`implied_problems`): the dataset exists, the chosen
locator exists and belongs to it, a CUDA device is there when asked for.

To add a key: one line in its group's class below (a type from the
vocabulary here, or `Annotated[..., Field(...)]`), and the key in params.yaml.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Iterable, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from tspnet.files import ParamsError

PARAMS_NAME = "params.yaml"

# ----------------------------------------------------------------------------- the vocabulary

Count = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy seeds stop at 2**32 - 1
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
UnitInterval = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]  # [0, 1]
BelowOne = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # [0, 1)
OpenUnit = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]  # (0, 1)
AboveZeroToOne = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]  # (0, 1]
Name = Annotated[str, Field(min_length=1)]


def _distinct(values: list) -> list:
    if not values:
        raise ValueError(": expected a non-empty list")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f": {repeated} appear more than once; expected distinct names")
    return values


def _ordered(pair: list) -> list:
    if pair[0] > pair[1]:
        raise ValueError(f" is {pair}, expected [low, high] with low <= high")
    return pair


def _source(value: Any) -> Any:
    """A dataset or locator source (see tspnet.sources.parse_source, the one owner of its syntax)."""
    from tspnet.sources import parse_source

    try:
        parse_source(value, "")
    except ValueError as exc:  # its messages start right after the key
        raise ValueError(str(exc)) from None
    return value


ClassNames = Annotated[list[Name], AfterValidator(_distinct), Field(description="a non-empty list of distinct "
                                                                                "class names")]
CountRange = Annotated[list[NonNegativeInt], Field(min_length=2, max_length=2), AfterValidator(_ordered),
                       Field(description="[low, high], integers with 0 <= low <= high")]
AtLeastOneRange = Annotated[list[Count], Field(min_length=2, max_length=2), AfterValidator(_ordered),
                            Field(description="[low, high], integers with 1 <= low <= high")]
SecondsRange = Annotated[list[Positive], Field(min_length=2, max_length=2), AfterValidator(_ordered),
                         Field(description="[low, high], numbers with 0 < low <= high")]
TiouThresholds = Annotated[list[AboveZeroToOne], Field(min_length=1),
                           Field(description="a non-empty list of tIoU thresholds in (0, 1]")]
Source = Annotated[Any, AfterValidator(_source),
                   Field(description="null, a path, an http(s) URL, or a mapping {path|url|gdrive: ..., sha256: "
                                     "'<64 hex digits>', copy: true|false}")]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                              description="auto, cpu, cuda or cuda:N")]


class Group(BaseModel):
    """A params group: exactly these keys, each of the declared type, nothing converted."""

    model_config = ConfigDict(extra="forbid", strict=True)


# ----------------------------------------------------------------------------- the groups


class Base(Group):
    seed: Seed
    device: Device
    threads: NonNegativeInt  # 0 = torch's default
    precision: Literal["fp32", "tf32", "bf16"]


class Generator(Group):
    """datasets.<name>.generator of a synthetic dataset (tspnet.synthetic.SyntheticConfig)."""

    seed: Seed
    train_videos: Count
    test_videos: Count
    stream_dim: Count
    duration_s: SecondsRange
    duration_distribution: Literal["uniform", "thumos14"]
    instances_per_video: AtLeastOneRange
    instance_s: SecondsRange
    classes_per_video: AtLeastOneRange
    distractors_per_video: CountRange
    ambiguous_per_test_video: CountRange
    video_fps: Annotated[list[Positive], Field(min_length=1)]
    signal: NonNegative
    runup: NonNegative
    dips_per_action: CountRange
    dip_depth: UnitInterval
    shared_motion: NonNegative
    noise: NonNegative
    noise_smoothing: Count  # 1 = white noise
    drift: NonNegative


class SyntheticDataset(Group):
    source: Literal["synthetic"]
    classes: ClassNames
    feature_fps: Positive
    snippet_frames: Count
    feature_layout: Literal["lacp"]  # the generator writes two streams
    tiou_thresholds: TiouThresholds
    filter_ambiguous: bool
    generator: Generator


class DatasetSources(Group):
    """datasets.<name>.sources: one source per file group (tspnet.fetch.SOURCE_GROUPS); absent = null."""

    features: Source = None
    gt: Source = None
    points: Source = None
    fps: Source = None
    ambiguous: Source = None
    durations: Source = None
    duration_videos: Source = None
    single_frames: Source | Annotated[list[Source], Field(min_length=1)] = None  # instead of points (SF-Net)
    video_order: Source = None  # SF-Net's videoname.npy: the order of the annotator draws


class Splits(Group):
    train: Name
    test: Name


class FilesDataset(Group):
    source: Literal["files"]
    classes: ClassNames
    feature_fps: Positive
    snippet_frames: Count
    feature_layout: Literal["lacp", "sfnet"]
    feature_dim: Count | None = None  # checked against the features when set
    tiou_thresholds: TiouThresholds
    filter_ambiguous: bool
    splits: Splits
    exclude: list[Name] | None
    length_tolerance_s: NonNegative
    annotator: Literal["random"] | Count = "random"  # SF-Net's seeded draw per video, or one annotator file
    annotator_seed: Seed = 1
    mirror: Name | None = None  # a folder of local copies of the URL sources
    sources: DatasetSources | None


Dataset = Annotated[Union[SyntheticDataset, FilesDataset], Field(discriminator="source")]


class BuiltinLocate(Group):
    """locate.builtin: the small built-in locator (tspnet.locator.LocatorConfig)."""

    hidden: Count
    dropout: BelowOne
    epochs: Count
    batch_videos: Count
    lr: Positive
    weight_decay: NonNegative
    background_ratio: UnitInterval
    point_margin: NonNegativeInt
    video_topk_ratio: AboveZeroToOne
    class_threshold: BelowOne
    act_thresholds: Annotated[list[OpenUnit], Field(min_length=1)]
    outer_ratio: NonNegative


class LacpLossWeights(Group):
    video: NonNegative
    point: NonNegative
    background: NonNegative
    score_contrast: NonNegative
    feature_contrast: NonNegative


Finite = Annotated[float, Field(allow_inf_nan=False)]


class LacpLocate(Group):
    """locate.lacp: LACP as its authors run it (tspnet.lacp.config.LacpConfig; ../shared/docs/LACP.md)."""

    hidden: Count
    dropout: BelowOne
    r_act: Count
    iterations: Count
    videos_per_step: Count
    lr: Positive
    weight_decay: NonNegative
    loss_weights: LacpLossWeights
    search_every: Count
    label_refresh: Literal["loader", "search"]
    bkg_threshold: UnitInterval
    act_threshold: UnitInterval
    budget: Count
    prune_threshold: Finite
    outer_ratio: NonNegative
    temperature: Positive
    samples_per_run: Count
    feature_contrast: Literal["last_class", "sum"]
    class_threshold: UnitInterval
    train_classes: Literal["predicted", "ground_truth"]
    scale: Count
    cas_thresholds: list[Finite]
    agnostic_thresholds: list[Finite]
    video_score_weight: Finite
    nms_iou: UnitInterval
    nms_proposals: bool


class Locate(Group):
    method: Literal["builtin", "lacp"]
    checkpoint: Source = None  # lacp only: the authors' weights instead of training
    builtin: BuiltinLocate
    lacp: LacpLocate


class Proposals(Group):
    locator: Name  # a key of `locators`
    invalid: Literal["clip", "refuse"]
    max_per_video: Count  # more proposals in one video are refused at import


class LocatorSources(Group):
    train: Source = None
    test: Source = None


class Locator(Group):
    dataset: Name | None  # the dataset its proposals belong to; null = any (builtin)
    mirror: Name | None = None  # a folder of local copies of the URL sources
    sources: LocatorSources | None


class Labels(Group):
    soft_value: UnitInterval


class Train(Group):
    iterations: Count
    batch_videos: Count
    max_proposals: Count
    lr: Positive
    weight_decay: NonNegative
    dropout: BelowOne
    roi_bins: Count
    widen_ratio: NonNegative
    cls_weight: NonNegative
    center_weight: NonNegative
    update_every: NonNegativeInt  # 0 = never
    update_threshold: UnitInterval
    log_every: Count
    rows_per_forward: Count
    checkpoint: Source = None  # the authors' released weights instead of training
    checkpoint_classes: ClassNames | None = None  # the checkpoint's class order, if not the dataset's


class Infer(Group):
    class_threshold: BelowOne
    aba_iou: BelowOne
    nms_sigma: Positive
    batch_proposals: Count


class Archives(Group):
    max_unpacked_gib: Positive
    max_ratio: Annotated[float, Field(ge=1, allow_inf_nan=False)]


class Params(Group):
    """params.yaml as a whole."""

    base: Base
    dataset: Name  # a key of `datasets`
    datasets: dict[str, Dataset]
    locate: Locate
    proposals: Proposals
    locators: dict[str, Locator]
    labels: Labels
    train: Train
    infer: Infer
    archives: Archives


# ----------------------------------------------------------------------------- validating


def validated(params: Any, keys: Iterable[str]) -> dict[str, Any]:
    """Check the dotted `keys` a stage reads (and every top-level name); return params unchanged, as a copy.

    `keys` may name a group (`train`), one key (`train.roi_bins`) or a registry
    entry (`datasets.thumos14`). Problems elsewhere in the file are left to
    the stages that read them. Raises ParamsError with one line.
    """
    if not isinstance(params, dict):
        raise ParamsError(f"{PARAMS_NAME}: expected a mapping of parameter groups, got {type(params).__name__}")
    paths = [tuple(str(key).split(".")) for key in keys]
    problems: list[str] = []
    try:
        Params.model_validate(params)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            top_level = len(loc) <= 1 and error["type"] in ("extra_forbidden", "missing")
            if top_level or any(_related(loc, path) for path in paths):
                problems.append(_message(error))
    if not problems:
        problems = implied_problems(params, paths)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ParamsError(f"{PARAMS_NAME}: {problems[0]}{more}")
    return copy.deepcopy(params)


def _related(loc: tuple[str, ...], path: tuple[str, ...]) -> bool:
    shown = _shown(loc)
    return shown[:len(path)] == path or path[:len(shown)] == shown


def _shown(loc: tuple) -> tuple[str, ...]:
    """The error's location as the user writes the key: without pydantic's union tags."""
    return tuple(part for i, part in enumerate(loc) if not _is_tag(loc, i))


def _dotted(parts: tuple[str, ...]) -> str:
    """`a.b[3]`: list positions in brackets."""
    return "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts).lstrip(".")


def _is_tag(loc: tuple, i: int) -> bool:
    # datasets.<name>.<source tag>...: the discriminated union adds the tag after the name.
    return len(loc) > 2 and loc[0] == "datasets" and i == 2 and loc[2] in ("synthetic", "files")


def _message(error: dict) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = _dotted(_shown(loc))
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _dotted(_shown(loc[:-1]))
        known = _field_names(loc[:-1])
        where = f"a key of {parent}" if parent else "a params group"
        return f"{key} is not {where}" + (f" (known: {', '.join(known)})" if known else "")
    if kind == "union_tag_invalid":
        return (f"{key}.source is {error['ctx']['tag']!r}, expected one of {error['ctx']['expected_tags']}")
    if kind == "union_tag_not_found":
        return f"{key}.source is missing, expected one of 'synthetic', 'files'"
    allowed = _allowed_at(loc)
    if kind == "missing":
        return f"{key} is missing" + (f", expected {allowed}" if allowed else "")
    if kind == "value_error":  # our own checks: the message continues the key
        text = str(error["ctx"]["error"])
        return f"{key}{text}" if text[:1] in (":", ".", " ") else f"{key}: {text}"
    value = error.get("input")
    shown = _shown_value(value)
    return f"{key} is {shown}, expected {allowed or error['msg'].lower()}"


def _shown_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, str):
        return f"{value!r} (a string)" if _looks_numeric(value) else repr(value)
    return repr(value)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", text))


# ----------------------------------------------------------------------------- what is allowed, in words


def _field_at(loc: tuple) -> tuple[Any, Any] | None:
    """(annotation, FieldInfo or None) of the key at `loc`, walking models, dicts, lists and the dataset union."""
    annotation: Any = Params
    info = None
    for i, part in enumerate(loc):
        annotation = _unwrap(annotation)
        if _is_tag(loc, i):
            annotation = SyntheticDataset if part == "synthetic" else FilesDataset
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if part not in annotation.model_fields:
                return None
            info = annotation.model_fields[part]
            annotation = info.annotation if not info.metadata else Annotated[(info.annotation, *info.metadata)]
        elif get_origin(annotation) is dict:
            annotation, info = get_args(annotation)[1], None
        elif get_origin(annotation) is list:
            annotation, info = get_args(annotation)[0], None
        else:
            return None
    return annotation, info


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional to the type to walk into."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, type(int | None)):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _field_names(loc: tuple) -> list[str]:
    found = _field_at(loc) if loc else (Params, None)
    if found is None:
        return []
    model = _unwrap(found[0])
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _allowed_at(loc: tuple) -> str:
    found = _field_at(loc)
    if found is None:
        return ""
    annotation, info = found
    return info.description if info is not None and info.description else describe_type(annotation)


def describe_type(annotation: Any) -> str:
    """What a type allows, in words: 'a number in [0, 1)', 'an integer >= 1', "one of 'clip', 'refuse'"."""
    constraints: list[Any] = []
    description = None
    while get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
        for item in metadata:
            if getattr(item, "description", None):
                description = description or item.description
            constraints.extend(getattr(item, "metadata", [item]))
    if description:
        return description
    origin = get_origin(annotation)
    if origin in (Union, type(int | None)):
        members = get_args(annotation)
        described = [describe_type(a) for a in members if a is not type(None)]
        return " or ".join(described) + (" or null" if type(None) in members else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(annotation))
    if origin is list:
        return f"a list of {_plural(describe_type(get_args(annotation)[0]))}"
    if origin is dict:
        return "a mapping of names to entries"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a non-empty string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping with keys " + ", ".join(annotation.model_fields)
    noun = {int: "an integer", float: "a number"}.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return noun + _range(constraints)


def _plural(text: str) -> str:
    for single, plural in (("an integer", "integers"), ("a number", "numbers"), ("a non-empty string", "names")):
        if text.startswith(single):
            return plural + text[len(single):]
    return text


def _range(constraints: list[Any]) -> str:
    low = high = None
    for c in constraints:
        if isinstance(c, annotated_types.Gt):
            low = ("(", c.gt)
        elif isinstance(c, annotated_types.Ge):
            low = ("[", c.ge)
        elif isinstance(c, annotated_types.Lt):
            high = (")", c.lt)
        elif isinstance(c, annotated_types.Le):
            high = ("]", c.le)
    number = lambda v: str(v) if isinstance(v, int) else f"{v:g}"  # noqa: E731
    if low and high:
        return f" in {low[0]}{number(low[1])}, {number(high[1])}{high[0]}"
    if low:
        return f" {'>' if low[0] == '(' else '>='} {number(low[1])}"
    if high:
        return f" {'<' if high[0] == ')' else '<='} {number(high[1])}"
    return ""


# ----------------------------------------------------------------------------- what params imply together


def implied_problems(params: dict[str, Any], paths: list[tuple[str, ...]]) -> list[str]:
    """Problems of keys that are valid alone but not together, for the keys a stage reads."""
    reads = lambda *key: any(_related(key, path) for path in paths)  # noqa: E731
    problems = []
    datasets = params.get("datasets") or {}
    name = params.get("dataset")
    if (reads("dataset") or reads("datasets", str(name))) and name not in datasets:
        problems.append(f"dataset is {name!r}, expected one of the entries of datasets: {', '.join(datasets)}")
    if reads("proposals", "locator"):
        problems.extend(_locator_problems(params, str(params["proposals"]["locator"]), name))
    if reads("locate", "checkpoint"):
        locate = params.get("locate") or {}
        if locate.get("checkpoint") is not None and locate.get("method") != "lacp":
            problems.append(f"locate.checkpoint is set, but locate.method is {locate.get('method')!r}: the "
                            "checkpoint holds LACP weights (set locate.method: lacp, or locate.checkpoint: null)")
    if reads("base", "device"):
        problems.extend(_device_problems(str(params["base"]["device"])))
    return problems


def _locator_problems(params: dict[str, Any], locator: str, dataset: Any) -> list[str]:
    locators = params.get("locators") or {}
    if locator not in locators:
        return [f"proposals.locator is {locator!r}, expected one of the entries of locators: {', '.join(locators)}"]
    belongs = (locators[locator] or {}).get("dataset")
    if belongs is not None and belongs != dataset:
        return [f"proposals.locator is {locator!r}, whose proposals belong to dataset {belongs!r} "
                f"(locators.{locator}.dataset), but dataset is {dataset!r}: choose a locator of {dataset!r}, "
                f"or set locators.{locator}.dataset"]
    return []


def _device_problems(device: str) -> list[str]:
    if not device.startswith("cuda"):
        return []
    import torch

    if not torch.cuda.is_available():
        return [f"base.device is {device!r}, but torch sees no CUDA device here: set base.device to auto or cpu"]
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return [f"base.device is {device!r}, but torch sees {torch.cuda.device_count()} CUDA device(s): "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}, or auto"]
    return []
