"""The schema of params.yaml.

params.yaml is the single source of truth for the stage graph and every stage's settings.
Each section is a pydantic model with ``extra="forbid"``, so a typo is an error that names
the key path (with the nearest valid key) instead of a silently ignored setting. Every
choice the paper leaves unstated is a field here with a documented default.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from finesyn.errors import UserError

PARAMS_FILE = "params.yaml"


class ParamsError(UserError, ValueError):
    """A params.yaml problem, worded for the user: key path, bad value, what is allowed."""


class Section(BaseModel):
    # no NaN or inf anywhere: `.nan` in a grid or a rate validates as a float and silently poisons a result
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _ordered_range(v: tuple[float, float]) -> tuple[float, float]:
    if not 0 < v[0] <= v[1]:
        raise ValueError(f"expected 0 < low <= high, got {list(v)}")
    return v


OrderedRange = Annotated[tuple[float, float], AfterValidator(_ordered_range)]
Positions = Annotated[tuple[PositiveInt, ...], Field(min_length=1)]  # list sizes such as retrieval's k: at least one, each >= 1


# ----------------------------------------------------------------------------- datasets
DatasetKind = Literal["synthetic", "cub200", "stanford_cars", "fgvc_aircraft", "imagefolder"]


class DatasetConfig(Section):
    """One dataset: where it comes from and how `prepare` caches it."""

    kind: DatasetKind
    root: Path | None = Field(None, description="dataset root in its official layout (not for synthetic)")
    unlabelled_root: Path | None = Field(
        None,
        description="a folder of images without labels (any sub-folders): the label-free methods pretrain on them too; "
        "the supervised reference, the probe and retrieval read only the labelled splits of `root`",
    )
    image_size: int = Field(64, gt=0, description="cached square size S (shorter side resized to S)")
    crop_size: int = Field(64, gt=0, description="training/eval crop size (paper: 224 from 256)")
    fit: Literal["center_crop", "squash"] = "center_crop"
    strict: bool = Field(False, description="fail instead of warn on non-official class/split counts")
    on_bad_image: Literal["fail", "skip"] = "fail"
    workers: int = Field(2, ge=1, description="decoding processes for prepare")
    # imagefolder with a single class folder tree
    split_ratio: float | None = Field(None, gt=0, lt=1, description="imagefolder: train fraction when no train/test dirs")
    split_seed: int = 0
    # synthetic generator
    num_classes: int = Field(10, ge=2)
    train_per_class: int = Field(200, ge=1)
    test_per_class: int = Field(100, ge=1)
    seed: int = Field(0, ge=0, description="synthetic: generator seed")
    object_scale: OrderedRange = Field((0.22, 0.30), description="synthetic: bird size range, fraction of the image per body unit")
    background_bank: int = Field(32, ge=0, description="synthetic: number of shared background scenes (0 = a unique one per image)")
    slots: Literal[0, 1, 2, 3] = Field(
        0, description="synthetic: marking positions per glyph (1: the glyph alone decides the class; 0: auto, 2 or 3)"
    )
    mark_scale: float = Field(1.0, ge=0.5, le=2.0, description="synthetic: marking size, a linear factor on the default marking")
    look_bank: int = Field(
        0,
        ge=0,
        description="synthetic: number of shared bird looks (rotation, colours, wing/tail shape, lighting; 0 = a unique one per image)",
    )

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.kind != "synthetic" and self.root is None:
            raise ValueError(f"'root' is required for kind '{self.kind}' (the dataset directory in its official layout)")
        if self.crop_size > self.image_size:
            raise ValueError(f"crop_size ({self.crop_size}) must not exceed image_size ({self.image_size})")
        ignored = sorted(self.model_fields_set - _keys_read_for(self.kind) - _COMMON_DATASET_KEYS)
        if ignored:  # a key of another kind would be silently ignored: a typo'd kind or a copied entry
            owners = {k: [kind for kind in get_args(DatasetKind) if k in _keys_read_for(kind)] for k in ignored}
            raise ValueError(
                "; ".join(f"'{k}' is not read for kind '{self.kind}' (only for {', '.join(owners[k])})" for k in ignored)
                + ": remove it, or set the kind it belongs to"
            )
        return self

    def index_options(self) -> dict[str, object]:
        """The indexer's options for a dataset read from disk (validate checks the layout with the same ones)."""
        options: dict[str, object] = {"strict": self.strict}
        if self.kind == "imagefolder":
            options.update(split_ratio=self.split_ratio, split_seed=self.split_seed)
        return options


_COMMON_DATASET_KEYS = frozenset({"kind", "image_size", "crop_size"})
_GENERATOR_KEYS = frozenset(
    {"num_classes", "train_per_class", "test_per_class", "seed", "object_scale", "background_bank", "slots", "mark_scale", "look_bank"}
)
_FILE_KEYS = frozenset({"root", "unlabelled_root", "fit", "strict", "on_bad_image", "workers"})


def _keys_read_for(kind: str) -> frozenset[str]:
    if kind == "synthetic":
        return _GENERATOR_KEYS
    return _FILE_KEYS | ({"split_ratio", "split_seed"} if kind == "imagefolder" else frozenset())


# ----------------------------------------------------------------------------- pretraining
class AugmentConfig(Section):
    """MoCo v2 augmentations (paper-notes), applied batched with per-sample parameters."""

    crop_scale: OrderedRange = (0.2, 1.0)
    crop_ratio: OrderedRange = (3 / 4, 4 / 3)
    color_jitter: tuple[float, float, float, float] = Field(
        (0.4, 0.4, 0.4, 0.1), description="brightness, contrast, saturation (each >= 0), hue (0 to 0.5)"
    )
    color_jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    blur_p: float = Field(0.5, ge=0, le=1)
    blur_sigma: OrderedRange = (0.1, 2.0)
    flip_p: float = Field(0.5, ge=0, le=1)
    rotation: float = Field(0.0, ge=0, le=180, description="each view turned by a uniform angle in ±rotation degrees (0 = MoCo v2's views)")

    @field_validator("color_jitter")
    @classmethod
    def _jitter(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        if min(v[:3]) < 0 or not 0 <= v[3] <= 0.5:
            raise ValueError(f"expected brightness, contrast, saturation >= 0 and 0 <= hue <= 0.5, got {list(v)}")
        return v


class MoCoV2Config(Section):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_dim: int = Field(256, gt=0, description="paper-notes: head dim 256")
    queue_size: int = Field(65536, gt=0, description="may exceed the training set: a query's own image is masked out of its negatives")
    momentum: float = Field(0.999, ge=0, lt=1, description="key-encoder EMA momentum")
    temperature: float = Field(0.2, gt=0)
    shuffle_bn: bool = Field(
        False,
        description="under torchrun: the official MoCo's shuffling BN (per-rank BN, keys from a shuffled shard) instead of "
        "SyncBN; the objective then depends on the number of processes. No effect in one process",
    )


class SimSiamConfig(Section):
    proj_dim: int = Field(2048, gt=0, description="3-layer projector width (BN)")
    pred_hidden_dim: int = Field(512, gt=0)
    fix_pred_lr: bool = Field(
        True, description="the official recipe's --fix-pred-lr: the predictor keeps the base lr while the rest follows the schedule"
    )


class BYOLConfig(Section):
    proj_hidden_dim: int = Field(4096, gt=0, description="projector Linear-BN-ReLU-Linear hidden width (paper 4096)")
    proj_dim: int = Field(256, gt=0, description="projection (and prediction) dim (paper 256)")
    pred_hidden_dim: int = Field(4096, gt=0, description="predictor hidden width (paper 4096)")
    base_momentum: float = Field(0.99, ge=0, lt=1, description="target EMA momentum at step 0, cosine-increased to 1.0 (paper 0.996)")


class SimCLRConfig(Section):
    proj_hidden_dim: int = Field(2048, gt=0, description="projector Linear-BN-ReLU-Linear hidden width")
    proj_dim: int = Field(128, gt=0, description="projection dim (paper 128)")
    temperature: float = Field(0.2, gt=0, description="NT-Xent temperature")


class SupervisedConfig(Section):
    """The supervised reference row (not SSL): a linear head on h, cross-entropy on one or both views."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing (0 = none)")
    views: int = Field(
        2,
        ge=1,
        le=2,
        description="labelled views per image and step: 2 = both SSL views (twice the cost), "
        "1 = the first view only (standard supervised training; only that view is drawn)",
    )


# The one list of methods: `pretrain.methods`' sections and the names `experiments.*.method` takes are
# built from it, and tests/test_config.py checks it names the registered methods (finesyn.methods).
# Adding a method: its file in methods/ (its class, @register("name")) and its settings class here
# with one line below. The settings stay in this torch-free module so that validating params.yaml
# (every stage does) imports no method code: prepare's DVC deps never include a method file.
METHOD_CONFIGS: dict[str, type[Section]] = {
    "supervised": SupervisedConfig,
    "mocov2": MoCoV2Config,
    "simsiam": SimSiamConfig,
    "byol": BYOLConfig,
    "simclr": SimCLRConfig,
}
if TYPE_CHECKING:
    # mypy cannot follow the model and the Literal built from the mapping at run time: it checks
    # against this static view of them instead (a method that reads its settings as
    # `cfg.methods.<name>` needs its line here too; nothing at run time reads this).
    class MethodsConfig(Section):
        supervised: SupervisedConfig = SupervisedConfig()
        mocov2: MoCoV2Config = MoCoV2Config()
        simsiam: SimSiamConfig = SimSiamConfig()
        byol: BYOLConfig = BYOLConfig()
        simclr: SimCLRConfig = SimCLRConfig()

    MethodName = str
else:
    MethodsConfig = create_model("MethodsConfig", __base__=Section, **{name: (c, c()) for name, c in METHOD_CONFIGS.items()})
    _method_names = ("none", *METHOD_CONFIGS)  # built from the mapping
    MethodName = Literal[_method_names]


class SynthConfig(Section):
    """The synthesized-pair module (paper-notes §The method). Defaults are reasoned, not the paper's."""

    decoder: Literal["light", "deep"] = "light"
    decoder_width: int = Field(256, gt=0)
    criteria: tuple[Literal["variance", "gradcam", "random"], ...] = ("variance", "gradcam")
    combine: Literal["union", "intersection"] = "union"
    k_var: float = Field(0.25, ge=0, le=1, description="fraction of dims with lowest variance")
    k_cam: float = Field(0.25, ge=0, le=1, description="fraction of dims with lowest Grad-CAM importance")
    k_random: float = Field(0.25, ge=0, le=1, description="fraction for the 'random' control criterion")
    gradcam_rank: Literal["abs", "signed"] = Field(
        "abs",
        description="rank Grad-CAM importance by |s_j| (least influence on L_C either way) or by s_j (the literal lowest); pairs/criteria.py",
    )
    variance_stat: Literal["batch", "ema"] = "batch"
    ema_momentum: float = Field(0.9, ge=0, lt=1)
    perturbation: Literal["gaussian_add", "gaussian_replace", "swap"] = "gaussian_add"
    beta: float = Field(1.0, ge=0, description="noise scale in units of the dimension's std")
    detach_h: bool = True
    decoder_grad_from_pairs: bool = False
    recon_grad_to_encoder: bool = Field(True, description="L_R also trains the encoder (needed for Fig. 5's alpha sweep to mean anything)")
    pair_fraction: float = Field(1.0, gt=0, le=1)
    pair_negatives: Literal["queue", "generated"] = Field(
        "queue",
        description="L_Cp's negatives: queue = the method's own (MoCo v2: its queue of real-image keys); generated = the other "
        "decoded images of the pair batch (InfoNCE within the pair batch; MoCo v2 only)",
    )
    pair_augment: bool = Field(
        False,
        description="augment each decoded image with pretrain.augment before L_Cp (two independent draws from the module's generator)",
    )

    @field_validator("criteria")
    @classmethod
    def _nonempty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one criterion is required")
        return v


# Marks a field that says how to run, not what is computed: it is outside a run's identity
# (finesyn.run_identity), so changing it reuses finished encoders and resumes checkpoints. Float
# rounding may differ (memory layout, compilation, threads), the computation does not.
HOW_TO_RUN: JsonDict = {"how_to_run": True}


class PretrainConfig(Section):
    """Settings shared by every experiment; an experiment's `overrides` may change any of them."""

    backbone: Literal["resnet_small", "convnet", "convnet_narrow", "resnet18", "resnet50"] = Field(
        "resnet18",
        description="convnet: four conv-BN-ReLU blocks with max-pools (widths 32-64-128-256; convnet_narrow: 16-32-64-128); "
        "resnet_small: ResNet-18's layout at 1/4 width with a 3x3 stem",
    )
    stem: Literal["standard", "small"] = Field("standard", description="small: 3x3 stride-1 conv, no max-pool")
    pool: Literal["avg", "max"] = Field("avg", description="global pool of the last feature map into h: avg (torchvision's) | max")
    init: str = Field("random", description="random | imagenet | path to a state_dict (.pth)")
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(128, ge=2)
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd",
        description="sgd: momentum + L2 weight decay (the MoCo/SimSiam recipes); adamw: decoupled weight decay, betas (momentum, adam_beta2)",
    )
    lr: float = Field(0.06, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum; AdamW's beta1")
    adam_beta2: float = Field(0.999, gt=0, lt=1, description="AdamW only")
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", json_schema_extra=HOW_TO_RUN)
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 where supported); ignored on CPU")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = all cores", json_schema_extra=HOW_TO_RUN)
    channels_last: bool = Field(
        False,
        description="NHWC memory format for models and input views (pretrain, its end-of-run checks, extract): on CPU measured faster for "
        "ResNet-50 at 112 px, slower for ResNet-18 at 64 px; NVIDIA's advice for CUDA + AMP. Changes results only by float rounding",
        json_schema_extra=HOW_TO_RUN,
    )
    compile: bool = Field(
        False,
        description="torch.compile the backbone(s) in place (a compile delay at start); checkpoints and encoder.pt are the same either way",
        json_schema_extra=HOW_TO_RUN,
    )
    checkpoint_every_steps: int = Field(200, ge=1, json_schema_extra=HOW_TO_RUN)
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept of the current run (its newest)", json_schema_extra=HOW_TO_RUN)
    keep_other_runs: int = Field(
        2,
        ge=0,
        description="other runs (other settings or data) whose checkpoints are kept per dataset/experiment/seed, "
        "the most recently written or resumed; older ones are deleted when the current run checkpoints",
        json_schema_extra=HOW_TO_RUN,
    )
    log_every_steps: int = Field(10, ge=1, json_schema_extra=HOW_TO_RUN)
    monitor_every_steps: int = Field(
        0,
        ge=0,
        description="learning monitor: kNN top-1 of the held-out validation images every N steps (and at 0 and the end); 0 = off",
        json_schema_extra=HOW_TO_RUN,
    )
    monitor_val_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="fraction of each class of the train split held out of pretraining as the monitor's validation images; 0 = none (the monitor is then off)",
    )
    monitor_k: int = Field(20, ge=1, description="neighbours of the monitor's kNN vote", json_schema_extra=HOW_TO_RUN)
    monitor_bank_per_class: int = Field(
        0,
        ge=0,
        description="the monitor's kNN bank: this many pretraining images per class (seeded, the same for every run); 0 = all of them. "
        "Each monitor point is one feature pass over the bank and the held-out images, so a small bank makes the curve cheap",
        json_schema_extra=HOW_TO_RUN,
    )
    augment: AugmentConfig = AugmentConfig()
    methods: MethodsConfig = MethodsConfig()
    alpha: float = Field(0.05, ge=0, description="weight of L_R (synth experiments only)")
    nu: float = Field(0.5, ge=0, description="weight of L_Cp (synth experiments only)")
    synth: SynthConfig = SynthConfig()

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        if v not in ("random", "imagenet") and not v.endswith((".pth", ".pt")):
            raise ValueError(f"expected 'random', 'imagenet' or a path to a .pth/.pt state_dict, got {v!r}")
        return v

    def steps_per_epoch(self, num_train: int) -> int:
        """Full batches only (drop_last): a tiny last batch would wreck BN statistics."""
        return num_train // self.batch_size

    def total_steps(self, num_train: int) -> int:
        return self.steps_per_epoch(num_train) * self.epochs


REFERENCE_METHODS = ("none", "supervised")  # reference rows, not SSL: no module, never an SSL baseline in the report


class ExperimentConfig(Section):
    """An SSL method plus options; `overrides` is a partial `pretrain` section."""

    method: MethodName = Field(
        description="'none' = the randomly initialised encoder; 'supervised' = the same encoder and budget trained with the labels (reference rows)"
    )
    synth: bool = False
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if self.method in REFERENCE_METHODS and self.synth:
            raise ValueError(f"synth: true needs an SSL method ('{self.method}' is a reference row, not SSL)")
        return self


# ----------------------------------------------------------------------------- evaluation
class ExtractConfig(Section):
    feature: Literal["backbone", "projector"] = "backbone"
    batch_size: int = Field(256, ge=1)


class ProbeConfig(Section):
    protocol: Literal["lbfgs", "sgd_paper"] = "lbfgs"
    l2_grid: Annotated[tuple[NonNegativeFloat, ...], Field(min_length=1)] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    max_iter: int = Field(200, ge=1)
    # protocol sgd_paper (paper notes: moco main_lincls), read by finesyn.eval.probe_sgd
    sgd_lr: float = Field(30.0, gt=0, description="sgd_paper: base learning rate of the Linear")
    sgd_epochs: int = Field(100, ge=1, description="sgd_paper: training epochs")
    sgd_milestones: tuple[int, ...] = Field((60, 80), description="sgd_paper: epochs (0-based) at which lr is multiplied by 0.1")
    sgd_batch_size: int = Field(256, ge=1)
    sgd_momentum: float = Field(0.9, ge=0, lt=1)
    sgd_weight_decay: float = Field(0.0, ge=0)
    sgd_report: Literal["final", "best_on_test"] = Field(
        "final", description="best_on_test is test-set selection, labelled as such in probe.json"
    )
    sgd_device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="sgd_paper: device (lbfgs always runs on CPU)")

    @field_validator("sgd_milestones")
    @classmethod
    def _milestones(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in v) or list(v) != sorted(set(v)):
            raise ValueError(f"expected strictly increasing epochs >= 1, got {list(v)}")
        return v


class RetrieveConfig(Section):
    protocol: Literal["test_loo", "train_gallery"] = "test_loo"
    ks: Positions = (1, 5)
    map_at_r: bool = False
    engine: Literal["sort", "faiss"] = Field("sort", description="full ranking: BLAS + stable sort, or FAISS search with k = N (slower)")
    knn_ks: Positions = (20, 200)
    knn_temperature: float = Field(0.07, gt=0)


class ReportConfig(Section):
    reference_numbers: Path | None = Field(None, description="optional CSV of published numbers shown side by side")


class GridConfig(Section):
    """The grid DVC expands; an empty axis would run nothing and overwrite the report with an empty table."""

    datasets: tuple[str, ...] = Field(min_length=1)
    experiments: tuple[str, ...] = Field(min_length=1)
    seeds: tuple[int, ...] = Field((0,), min_length=1)

    @field_validator("datasets", "experiments", "seeds")
    @classmethod
    def _unique(cls, v: tuple) -> tuple:
        dup = sorted({str(x) for x in v if v.count(x) > 1})
        if dup:
            raise ValueError(f"names must be unique (DVC would define the same stage twice): repeated {', '.join(dup)}")
        return v


class Params(Section):
    grid: GridConfig
    datasets: dict[str, DatasetConfig]
    experiments: dict[str, ExperimentConfig]
    pretrain: PretrainConfig = PretrainConfig()
    extract: ExtractConfig = ExtractConfig()
    probe: ProbeConfig = ProbeConfig()
    retrieve: RetrieveConfig = RetrieveConfig()
    report: ReportConfig = ReportConfig()

    def pretrain_for(self, experiment: str) -> PretrainConfig:
        """The effective pretrain settings of one experiment (shared section + its overrides)."""
        if experiment not in self.experiments:
            raise ParamsError(
                f"experiment {experiment!r} is not defined under `experiments:`{_suggest(experiment, self.experiments)}; defined: {sorted(self.experiments)}"
            )
        exp = self.experiments[experiment]
        if not exp.overrides:
            return self.pretrain
        merged = _deep_merge(self.pretrain.model_dump(mode="json"), exp.overrides)
        try:
            return PretrainConfig.model_validate(merged)
        except ValidationError as e:
            raise ParamsError(_format_errors(e, PretrainConfig, prefix=f"experiments.{experiment}.overrides")) from None


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _suggest(name: str | int, candidates) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """Walk a model along an error location to find the model that owns the last key."""
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None and part in ("datasets", "experiments"):
            named: dict[str, type[BaseModel]] = {"datasets": DatasetConfig, "experiments": ExperimentConfig}
            model = named[part]
            # the next part is a user-chosen name: skip it
            return _model_at(model, loc[loc.index(part) + 2 :]) if len(loc) > loc.index(part) + 2 else model
    return model


def _format_errors(err: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    lines = []
    errors = err.errors()
    item_errors = {e["loc"][:-1] for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
    for e in errors:
        if e["type"] == "too_short" and e["loc"] in item_errors:
            continue  # pydantic drops the bad items, then calls the list too short: the item's own error says it
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)
        if e["type"] == "extra_forbidden":
            owner = _model_at(root, loc[:-1])
            hint = _suggest(loc[-1], owner.model_fields) if owner else ""
            valid = f"; valid keys: {', '.join(owner.model_fields)}" if owner else ""
            lines.append(f"{path}: unknown key{hint}{valid}")
        elif e["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {e.get('input')!r})" if f"{e.get('input')!r}" not in msg else ""
            lines.append(f"{path or '(top level)'}: {msg}{got}")
    return "invalid params:\n  " + "\n  ".join(lines)


def parse_params(raw: dict, source: str = PARAMS_FILE) -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        raise ParamsError(f"{source}: " + _format_errors(e, Params)) from None
    _cross_check(params, source)
    return params


def _cross_check(params: Params, source: str) -> None:
    """Checks across sections: names are usable in paths and DVC keys; the grid names defined
    things; every experiment's overrides are valid."""
    for section in ("datasets", "experiments"):
        for name in getattr(params, section):
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ParamsError(
                    f"{source}: {section}.{name}: names may contain only letters, digits, '_' and '-' "
                    "(they become DVC param keys and directory names; '.' would split the key)"
                )
    for key, names, known in (
        ("grid.datasets", params.grid.datasets, params.datasets),
        ("grid.experiments", params.grid.experiments, params.experiments),
    ):
        for name in names:
            if name not in known:
                raise ParamsError(f"{source}: {key}: unknown name {name!r}{_suggest(name, known)}; defined: {sorted(known)}")
    for name in params.experiments:
        try:
            cfg = params.pretrain_for(name)
        except ParamsError as e:
            raise ParamsError(f"{source}: {e}") from None
        exp = params.experiments[name]
        if exp.synth and cfg.synth.pair_negatives == "generated" and exp.method != "mocov2":
            raise ParamsError(
                f"{source}: experiments.{name}: pretrain.synth.pair_negatives: generated needs method mocov2 "
                f"({exp.method!r} has no negatives to replace, or takes them from its batch already); use queue"
            )
    _check_batch_fits(params, source)


def monitor_held_out(n: int, fraction: float) -> int:
    """Images of a class with ``n`` train images that the learning monitor holds out of training:
    ``fraction`` of them, at least one, and at least one left to train on."""
    return min(n - 1, max(1, round(fraction * n)))


def synthetic_pretrain_images(cfg: DatasetConfig, val_fraction: float) -> int:
    """How many images pretraining sees on a generated dataset: its train split less the
    learning monitor's held-out share of each class (none when the monitor is off)."""
    n = cfg.train_per_class
    return cfg.num_classes * (n - (monitor_held_out(n, val_fraction) if val_fraction else 0))


def _check_batch_fits(params: Params, source: str) -> None:
    """`pretrain.batch_size` must not exceed the images a run trains on (every step drops the last
    partial batch, so such a run has no step). Known from params for generated data; real datasets
    are checked by the pretrain stage against the prepared cache, before any training."""
    for d in params.grid.datasets:
        ds = params.datasets[d]
        if ds.kind != "synthetic":
            continue
        for e in params.grid.experiments:
            cfg = params.pretrain_for(e)
            n = synthetic_pretrain_images(ds, cfg.monitor_val_fraction)
            if params.experiments[e].method != "none" and cfg.batch_size > n:
                key = f"experiments.{e}.overrides.batch_size" if "batch_size" in params.experiments[e].overrides else "pretrain.batch_size"
                raise ParamsError(
                    f"{source}: {key}: {cfg.batch_size} exceeds the {n} images that {d}/{e} pretrains on "
                    f"(datasets.{d}: {ds.num_classes} classes x {ds.train_per_class} train images, less the monitor's "
                    f"held-out {cfg.monitor_val_fraction:g}); lower the batch size or generate more images"
                )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently,
    so a second `pretrain:` block would replace the first outside DVC)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1}; PyYAML would keep only the last)", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def strict_yaml_load(text: str):
    """yaml.safe_load, but a duplicate key in any mapping is a YAMLError naming it and its line."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:
        raw = strict_yaml_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return parse_params(raw, str(path))


def dataset_config(params: Params, dataset: str) -> DatasetConfig:
    """The entry of a dataset in use, or an error naming the defined ones (the raw root is
    `finesyn.data.layout`'s business: the stages after prepare read only the prepared cache)."""
    if dataset not in params.datasets:
        raise ParamsError(
            f"dataset {dataset!r} is not defined under `datasets:`{_suggest(dataset, params.datasets)}; defined: {sorted(params.datasets)}"
        )
    return params.datasets[dataset]
