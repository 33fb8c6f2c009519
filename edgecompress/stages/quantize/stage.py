"""`quantize`: int8 quantization of the model (post-training calibration or quantization-aware training)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from edgecompress.errors import RecipeError
from edgecompress.stages.base import Stage, StageConfig, TrainDevice

if TYPE_CHECKING:
    import numpy as np

    from edgecompress.context import RunContext

WEIGHT_SCHEME = "int8 symmetric per output channel (range -127..127)"
ACTIVATION_SCHEME = "int8 per tensor (affine, -128..127)"
#: Fields that only mean something when the model is fine-tuned (mode: qat).
QAT_ONLY = (
    "epochs",
    "lr",
    "optimizer",
    "weight_decay",
    "schedule",
    "distill",
    "temperature",
    "alpha",
    "freeze_observers_after",
    "freeze_bn_after",
    "keep_best",
    "device",
)


class QuantizeConfig(StageConfig):
    type: Literal["quantize"] = "quantize"
    mode: Literal["qat", "ptq"] = Field(
        default="qat",
        description="qat: fine-tune with simulated int8 (fake quantization) so the weights adapt to it; "
        "ptq: only calibrate activation ranges on `calibration_samples` images, no training.",
    )
    calibration_samples: int = Field(
        default=256,
        gt=0,
        description="Images of the calibration split (data.split.calibration) the activation ranges are "
        "observed on before quantization (QAT: the starting ranges, updated while training).",
    )
    epochs: int = Field(default=3, gt=0, description="QAT: passes over the training split.")
    lr: float = Field(
        default=1e-4, gt=0, description="QAT: peak learning rate (small: the model is trained)."
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw", description="QAT: adamw, or sgd with momentum 0.9."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="QAT: decoupled weight decay.")
    schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="QAT: learning-rate schedule."
    )
    distill: bool = Field(
        default=True,
        description="QAT: add the distillation loss from the teacher (the float model as it entered the "
        "first compressing stage), as the `distill` stage does.",
    )
    temperature: float = Field(
        default=4.0, gt=0, description="QAT with distill: softmax temperature T of the soft targets."
    )
    alpha: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="QAT with distill: weight of the KL term (scaled by T^2); 1 - alpha goes to the "
        "hard-label cross-entropy.",
    )
    freeze_observers_after: int | None = Field(
        default=None,
        ge=0,
        description="QAT: stop updating the quantization ranges (scales, zero points) after this many "
        "epochs; the last epochs then train the weights against fixed ranges. None: never freeze.",
    )
    freeze_bn_after: int | None = Field(
        default=None,
        ge=0,
        description="QAT: stop updating the BatchNorm running statistics after this many epochs (they are "
        "folded into the int8 conv weights at the end). None: never freeze.",
    )
    keep_best: bool = Field(
        default=True,
        description="QAT: keep the weights with the best validation accuracy (of the int8 model).",
    )
    device: TrainDevice
    keep_float: list[str] = Field(
        default_factory=list,
        description="Module-name globs whose layers stay float (e.g. ['fc'] for the classifier); "
        "a glob that matches no module is an error.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> QuantizeConfig:
        if self.mode == "ptq":
            given = [k for k in QAT_ONLY if k in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to mode 'qat' (mode is 'ptq': no training)")
        for key in ("freeze_observers_after", "freeze_bn_after"):
            value = getattr(self, key)
            if value is not None and value >= self.epochs:
                raise ValueError(
                    f"{key} = {value} would never take effect: it must be less than epochs ({self.epochs})"
                )
        if any(not pattern.strip() for pattern in self.keep_float):
            raise ValueError("keep_float entries must be non-empty module-name globs")
        return self


class QuantizeStage(Stage):
    """int8 quantization: weights symmetric per output channel, activations per tensor (LiteRT's PT2E scheme).

    The quantized model is what later stages, the exports and the parity checks see: its predictions
    are the int8 model's (quantize/dequantize simulated in float). `tflite` and `openvino` exports at
    precision int8 lower this one quantized graph, with the same scales, to each runtime.

    ```yaml
    - {type: quantize, mode: qat, epochs: 3}
    - {type: quantize, mode: ptq, calibration_samples: 512, keep_float: [fc]}
    - {type: quantize, mode: qat, epochs: 4, lr: 5.0e-5, freeze_observers_after: 2, freeze_bn_after: 3}
    ```
    """

    name = "quantize"
    Config = QuantizeConfig
    backends: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.quantize.torch_backend:quantize",
        "keras": "edgecompress.stages.quantize.keras_backend:quantize",
    }
    #: Frameworks whose QAT can freeze its observers / BatchNorm statistics.
    freezing_frameworks: ClassVar[tuple[str, ...]] = ("torch",)

    def unsupported(self, framework: str) -> tuple[str, str] | None:
        c = self.config
        if framework in self.freezing_frameworks:
            return None
        for key in ("freeze_observers_after", "freeze_bn_after"):
            if getattr(c, key) is not None:
                return (
                    key,
                    f"not available for {framework} models (TFMOT updates its ranges and folds BatchNorm itself)",
                )
        return None

    #: Per framework, the module the precision planner (`edgecompress/precision.py`) derives export graphs
    #: with: plan_ops(model), plan_layers(model, input_shape), derive(model, plan, input_shape=...),
    #: openvino_placement(model).
    plan_backends: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.quantize.torch_derive",
        "keras": "edgecompress.stages.quantize.keras_derive",
    }


def calibration_images(ctx: RunContext, count: int) -> np.ndarray:
    """The first `count` calibration images; RecipeError if the split is empty or does not fit the model."""
    split = ctx.data.calibration
    shape = list(ctx.input_shape[1:])
    if len(split) == 0:
        raise RecipeError(
            "quantize: the calibration split is empty; set data.split.calibration to the number of training "
            "images to calibrate on (e.g. 256)"
        )
    import numpy as np

    x = np.asarray(split.x)
    if list(x.shape[1:]) != shape or x.dtype != np.float32:
        raise RecipeError(
            f"quantize: calibration images are {x.dtype} of shape {list(x.shape[1:])}; the model takes "
            f"float32 of shape {shape} (model.input_shape without the batch)"
        )
    if len(x) < count:
        ctx.ui.warn(f"quantize: calibration_samples = {count}, but the calibration split has {len(x)} images")
    return np.ascontiguousarray(x[:count])


def qat_fit_options(config: QuantizeConfig, ctx: RunContext, float_model: Any, **extra: Any) -> Any:
    """The FitOptions of QAT (`extra`: a backend's own, e.g. on_epoch_start or a sparsity plan), its epochs and
    teacher noted. With `config.distill` the teacher is the model as it entered the first compressing stage,
    else (none ran) a copy of the float model before QAT, with a warning."""
    from edgecompress.frameworks.base import fit_options

    teacher = None
    if config.distill:
        teacher = ctx.teacher
        if teacher is None:
            ctx.ui.warn(
                "quantize: no compressing stage ran before it; the teacher is the float model before QAT"
            )
            teacher = ctx.adapter.copy(float_model)
    ctx.note("epochs", config.epochs)
    ctx.note("distill", teacher is not None)
    return fit_options(
        config,
        data=ctx.recipe.data,
        description="quantize (qat)",
        teacher=teacher,
        temperature=config.temperature,
        alpha=config.alpha,
        **extra,
    )
