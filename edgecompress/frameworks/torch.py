"""PyTorch adapter: checking, measuring, training (supervised and distillation), predicting and saving.

Loading lives in `torch_loading.py`. These modules and the torch stage backends are the only places that
import torch; they do it inside functions, so `import edgecompress` stays light.
"""

from __future__ import annotations

import copy
import functools
import math
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import ModelError, RecipeError
from edgecompress.frameworks.base import (
    FitOptions,
    FrameworkAdapter,
    LayerInfo,
    ModelStats,
    accuracy_and_loss,
)
from edgecompress.frameworks.torch_loading import load_model, one_line

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch
    from torch import nn

    from edgecompress.console import UI
    from edgecompress.data import DataBundle
    from edgecompress.recipe import ModelSpec


def forward_zeros(model: Any, input_shape: list[int]) -> Any:
    """The model's output on zeros of `input_shape` (eval mode, no grad); ModelError if the forward fails."""
    import torch

    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(input_shape))
    except Exception as exc:
        raise ModelError(f"model forward failed on input shape {list(input_shape)}: {one_line(exc)}") from exc


class TorchAdapter(FrameworkAdapter):
    """The FrameworkAdapter for PyTorch models (`nn.Module`, torch.export programs, TorchScript)."""

    name = "torch"
    model_suffix = ".pt2"

    # ------------------------------------------------------------------------------------------ loading

    def load(self, spec: ModelSpec, recipe_path: Path) -> Any:
        """Build or load the model, apply `spec.checkpoint`, return it float32, on CPU, in eval mode."""
        return load_model(spec, recipe_path)

    def check(self, model: Any, input_shape: list[int], num_classes: int) -> None:
        """Run one forward pass on zeros; ModelError if it fails or the output is not (batch, num_classes)."""
        import torch

        out = forward_zeros(model, input_shape)
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"model output must be one logits tensor of shape [{input_shape[0]}, {num_classes}], "
                f"got {type(out).__name__}"
            )
        if list(out.shape) != [input_shape[0], num_classes]:
            raise ModelError(
                f"model output must be logits of shape [{input_shape[0]}, {num_classes}] (batch, classes); "
                f"got {list(out.shape)} for input shape {list(input_shape)}"
            )

    # -------------------------------------------------------------------------------------- measuring

    def latency_layers(self, model: Any, input_shape: list[int]) -> list[Any]:
        """The model's computing ops as the latency model measures them (`torch_layers.LayerOp`)."""
        from edgecompress.frameworks.torch_layers import float_graph, layer_ops

        return layer_ops(float_graph(model, input_shape), input_shape)

    def stats(self, model: Any, input_shape: list[int]) -> ModelStats:
        """Parameters and multiply-accumulates of one sample (conv, linear and matmul ops)."""
        return ModelStats(params=count_params(model), macs=count_macs(model, input_shape))

    def layers(self, model: Any, input_shape: list[int]) -> list[LayerInfo]:
        """Every leaf module that owns parameters, with its MACs and whether channel pruning can shrink it."""
        import torch

        if isinstance(model, torch.jit.ScriptModule):
            return [
                LayerInfo(
                    name,
                    m.original_name,
                    sum(p.numel() for p in m.parameters(recurse=False)),
                    0,
                    _out_channels(m),
                    False,
                    "TorchScript: per-layer MACs and pruning need a python entry or a .pt2",
                )
                for name, m in model.named_modules()
                if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
            ]
        leaves = {
            name: m
            for name, m in model.named_modules()
            if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
        }
        trace = _trace_leaves(model, input_shape)
        classifier = trace.classifier(trace.out_width)
        coupling = _coupling(model, input_shape, [leaves[classifier]] if classifier in leaves else [])
        out = []
        for name, m in leaves.items():
            if name == classifier:
                prunable, note = False, "classifier: its outputs are the classes"
            elif m in coupling:
                prunable, note = True, coupling[m]
            elif isinstance(m, _prunable_types()):
                prunable, note = False, "in no pruning group (not traced, or feeds the output directly)"
            else:
                prunable, note = False, f"{type(m).__name__} has no prunable channels"
            out.append(
                LayerInfo(
                    name=name,
                    kind=_kind(m),
                    params=sum(p.numel() for p in m.parameters(recurse=False)),
                    macs=trace.macs.get(name, 0),
                    out_channels=_out_channels(m),
                    prunable=prunable,
                    note=note,
                )
            )
        return out

    # ------------------------------------------------------------------------------ copy, predict, save

    def weights(self, model: Any) -> dict[str, np.ndarray]:
        """Conv and linear weights by layer name, in the canonical [out, in_per_group, kh, kw] layout."""
        import torch

        from edgecompress.sparsity import canonical

        return {
            name: canonical(m.weight.detach().cpu().numpy())
            for name, m in model.named_modules()
            if isinstance(m, _prunable_types()) and isinstance(getattr(m, "weight", None), torch.Tensor)
        }

    def copy(self, model: Any) -> Any:
        """An independent deep copy (weights included)."""
        return copy.deepcopy(model)

    def predict(self, model: Any, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """Float32 logits for a float32 array in the model's layout (eval mode, no gradients), computed on
        the device the model's parameters are on."""
        import torch

        arr = np.ascontiguousarray(x, dtype=np.float32)
        device = next(iter(model.parameters()), torch.empty(0)).device
        model.eval()
        outs = []
        with torch.inference_mode():
            for i in range(0, len(arr), batch_size):
                batch = torch.from_numpy(arr[i : i + batch_size]).to(device)
                outs.append(model(batch).float().cpu().numpy())
        if not outs:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(outs).astype(np.float32, copy=False)

    def save(self, model: Any, path: Path, input_shape: list[int]) -> Path:
        """torch.export the model (dynamic batch dimension when the model allows it) and save it as .pt2."""
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.eval()
        sample = torch.zeros([2, *input_shape[1:]])
        try:
            batch = torch.export.Dim("batch", min=1, max=65536)
            program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
        except Exception:
            try:  # a model that fixes its batch size (e.g. a hard-coded reshape) exports as it is
                program = torch.export.export(model, (torch.zeros(input_shape),))
            except Exception as exc:
                raise ModelError(
                    f"torch.export failed for input shape {list(input_shape)}: {one_line(exc)}"
                ) from exc
        torch.export.save(program, path)
        return path

    def checkpoint_save(self, model: Any, path: Path) -> None:
        """The whole module pickled for a stage checkpoint (`torch_checkpoint.py`)."""
        from edgecompress.frameworks.torch_checkpoint import save_module

        save_module(model, path)

    def checkpoint_load(self, path: Path) -> Any:
        """A stage checkpoint's module (unpickled: runs code; only for the build's own files)."""
        from edgecompress.frameworks.torch_checkpoint import load_module

        return load_module(path)

    # -------------------------------------------------------------------------------------- training

    def fit(self, model: Any, data: DataBundle, options: FitOptions, *, seed: int, ui: UI) -> Any:
        """Train in place: cross-entropy, or Hinton distillation when `options.teacher` is set.

        loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y).
        The teacher runs in eval mode without gradients: without augmentation its logits are computed once
        for the training split; with it (options.augment_*), on each augmented batch, so student and teacher
        see the same images. Weight decay skips biases and normalisation weights. The
        learning rate follows a per-step cosine from `lr` to 0 (or stays constant). Returns the model in
        eval mode, on the cpu, in NCHW memory format, with the best-validation weights when
        `options.keep_best`.

        Speed (benchmarks/training_speed.py): trains on `options.device`; on the cpu with glibc's malloc
        tuned (`tune_malloc`) and, with `options.channels_last` and when `channels_last_hooks` finds it safe, in
        channels_last memory format.
        Counts the examples of every step in `trained_images`.
        """
        import torch
        from torch.nn import functional as F

        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ModelError(f"{options.description}: the model has no trainable parameters")
        if options.optimizer not in {"adamw", "sgd"} or options.schedule not in {"cosine", "constant"}:
            raise ModelError(
                f"{options.description}: unknown optimizer '{options.optimizer}' or schedule '{options.schedule}'"
            )
        device = train_device(options.device, options.description)
        tune_malloc()
        torch.manual_seed(seed)
        shuffle = torch.Generator().manual_seed(seed)
        x = torch.from_numpy(np.ascontiguousarray(data.train.x, dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(data.train.y, dtype=np.int64))
        temperature = options.temperature
        augmenting = options.augmenting
        if augmenting and x.ndim != 4:
            raise ModelError(
                f"{options.description}: data.augment needs image batches (4 dimensions); the training inputs "
                f"have shape {list(x.shape)}"
            )
        teacher_log_probs = None
        if options.teacher is not None:
            options.teacher.eval()
            if not augmenting:  # fixed inputs: the teacher's targets once
                teacher_logits = torch.from_numpy(self.predict(options.teacher, data.train.x))
                teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=1)

        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": options.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        if options.optimizer == "adamw":
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=options.lr)
        else:
            optimizer = torch.optim.SGD(groups, lr=options.lr, momentum=0.9, nesterov=True)
        n, bs = len(y), options.batch_size
        steps = options.epochs * (n // bs + (1 if n % bs > 1 else 0))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            (lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1))))
            if options.schedule == "cosine"
            else (lambda step: 1.0),
        )

        masks = None
        if options.sparsity is not None:
            from edgecompress.frameworks.torch_masks import TorchMasks

            masks = TorchMasks(
                model, options.sparsity, steps=steps, steps_per_epoch=n // bs + (1 if n % bs > 1 else 0)
            )
        step = 0
        best_key: tuple[float, float] | None = None
        best_state: dict[str, torch.Tensor] | None = None
        # channels_last is a CPU (oneDNN) speed-up for NCHW image batches
        cpu_images = (
            x[:2] if options.channels_last and device.type == "cpu" and data.layout == "NCHW" else None
        )
        with (
            _placed(model, options.teacher, device, cpu_images) as memory_format,
            ui.progress(f"{options.description}", total=options.epochs) as task,
        ):
            for epoch in range(options.epochs):
                model.train()
                if options.on_epoch_start is not None:
                    options.on_epoch_start(epoch, model)
                order = torch.randperm(n, generator=shuffle)
                loss_sum, seen = 0.0, 0
                for start in range(0, n, bs):
                    idx = order[start : start + bs]
                    if len(idx) < 2 and start > 0:
                        break  # batch norm cannot train on a single example
                    xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                    if augmenting:
                        xb = augment_batch(
                            xb,
                            shift=options.augment_shift,
                            hflip=options.augment_hflip,
                            channels_last=data.layout == "NHWC",
                            generator=shuffle,
                        )
                    xb, yb = xb.to(device, memory_format=memory_format), yb.to(device)
                    try:
                        logits = model(xb)
                    except Exception as exc:
                        raise ModelError(
                            f"{options.description}: forward failed on a training batch of shape {list(xb.shape)}: "
                            f"{one_line(exc)}"
                        ) from exc
                    loss = F.cross_entropy(logits, yb, label_smoothing=options.label_smoothing)
                    if options.teacher is not None:
                        if teacher_log_probs is not None:
                            targets = teacher_log_probs.index_select(0, idx).to(device)
                        else:  # the teacher sees the same augmented batch (consistent teaching)
                            with torch.no_grad():
                                targets = F.log_softmax(options.teacher(xb) / temperature, dim=1)
                        kd = F.kl_div(
                            F.log_softmax(logits / temperature, dim=1),
                            targets,
                            reduction="batchmean",
                            log_target=True,
                        )
                        loss = options.alpha * temperature**2 * kd + (1.0 - options.alpha) * loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    step += 1
                    if masks is not None:
                        masks.after_step(step)
                    loss_sum += float(loss.detach()) * len(idx)
                    seen += len(idx)
                    self.trained_images += len(idx)
                train_loss = loss_sum / max(seen, 1)
                val_acc, val_loss = accuracy_and_loss(
                    self.predict(model, data.val.x) if len(data.val) else np.zeros((0, 0)), data.val.y
                )
                improved = best_key is None or (val_acc, -val_loss) > best_key
                settled = masks is None or masks.settled(step)  # never back to a less sparse epoch
                if options.keep_best and not math.isnan(val_acc) and improved and settled:
                    best_key = (val_acc, -val_loss)
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                ui.debug(
                    f"{options.description} epoch {epoch + 1}/{options.epochs}: loss {train_loss:.4f}  "
                    f"val_acc {val_acc:.4f}  val_loss {val_loss:.4f}  lr {optimizer.param_groups[0]['lr']:.2e}"
                )
                task.advance(1, loss=train_loss, val_acc=val_acc)
        if best_state is not None:
            model.load_state_dict(best_state)
            ui.debug(f"{options.description}: kept the weights with the best val_acc {best_key[0]:.4f}")  # type: ignore[index]
        return model.eval()


# ---------------------------------------------------------------------------------- shared helpers

#: mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


@functools.cache
def tune_malloc() -> bool:
    """Make glibc's malloc keep freed memory for reuse, once per process; True when it took the settings.

    By default large blocks are mmap'ed and unmapped on free, and free memory at the top of the heap is
    given back to the kernel, so every training step page-faults its activation buffers in again, zero-filled
    by the kernel (MobileNetV2-digits at batch 128 on CPU: 200 K minor faults, ~0.45 s of system time, per
    step). Here blocks up to 1 GiB come from the heap (up to 32 MiB where glibc refuses more: older versions
    cap the mmap threshold at its documented maximum, `DEFAULT_MMAP_THRESHOLD_MAX`), up to 1 GiB free at its
    top is kept and it grows 64 MiB at a time; `fit` hands the memory back with malloc_trim when it ends.
    False (nothing done) where the C library is not glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # Windows
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl, macOS
        return False
    mmap = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) or libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    return bool(mmap and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) and libc.mallopt(M_TOP_PAD, 64 << 20))


def train_device(requested: str, description: str) -> torch.device:
    """The device `fit` trains on: `requested` cpu or cuda, or auto (cuda when torch sees a GPU, else cpu)."""
    import torch

    if requested not in {"auto", "cpu", "cuda"}:
        raise ModelError(f"{description}: unknown device '{requested}' (auto, cpu or cuda)")
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise RecipeError(
            f"{description}: device is 'cuda' but torch {torch.__version__} sees no CUDA GPU; use device: auto or cpu"
        )
    return torch.device("cuda" if requested == "cuda" or (requested == "auto" and cuda) else "cpu")


@contextmanager
def _placed(model: Any, teacher: Any, device: torch.device, sample: torch.Tensor | None) -> Iterator[Any]:
    """While inside: model and teacher on `device`, the model in channels_last when `channels_last_hooks`
    allows it on `sample` (a few training inputs; None: stay NCHW); yields the memory format the training
    batches take. On exit both are back on the cpu, the model in NCHW (what pruning and export expect), and
    the training memory goes back to the kernel."""
    import ctypes

    import torch

    model.to(device)
    if teacher is not None:
        teacher.to(device)
    hooks = None if sample is None else channels_last_hooks(model, sample)
    try:
        yield torch.contiguous_format if hooks is None else torch.channels_last
    finally:
        if hooks is not None:
            for hook in hooks:
                hook.remove()
            set_memory_format(model, torch.contiguous_format)
        model.to("cpu")
        if teacher is not None:
            teacher.to("cpu")
        if tune_malloc():
            ctypes.CDLL(None).malloc_trim(0)


def channels_last_hooks(model: Any, sample: torch.Tensor) -> list[Any] | None:
    """Put `model` in channels_last memory format for training, when it is an image model and that is safe;
    the forward pre-hooks to remove when done, or None (model left as it was).

    oneDNN trains CNNs faster on CPU in channels_last (MobileNetV2/V3-digits 1.5-1.8x, ResNet-18-digits 1.1x
    with its shortcuts below in NCHW: benchmarks/training_speed.py), but its AVX-512 1x1 stride-2 backward-weights kernel (jit_1x1, torch 2.13) corrupts memory in
    channels_last: a crash (SIGSEGV, SIGABRT) or a silently wrong weight gradient whenever the batch does not
    split evenly over the threads (odd batches with 2 threads, any batch but multiples of 4 with 4), seen
    with 2-15 input channels (not 1 or 16 and more) on inputs from 14x14 up. Forward passes, input
    gradients, stride 1 or 3, 3x3/5x5 and depthwise convolutions, and NCHW, were never affected. So every 1x1 strided Conv2d keeps NCHW weights and gets its input
    in NCHW (a hook), and the model stays NCHW when a forward in channels_last fails (e.g. `.view` on
    activations) or still runs a 1x1 strided convolution in channels_last (a functional one). Exported
    graphs (GraphModule, QAT's prepared graph) and TorchScript stay NCHW: their convolutions have no module
    to hold back, and QAT gains little (~10% on MobileNetV2-digits).
    """
    import torch
    from torch import nn

    if sample.ndim != 4 or any(
        isinstance(m, (torch.fx.GraphModule, torch.jit.ScriptModule)) for m in model.modules()
    ):
        return None
    set_memory_format(model, torch.channels_last)
    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and _strided_1x1(m.weight, m.stride):
            m.weight.data = m.weight.data.clone(memory_format=torch.contiguous_format)
            hooks.append(m.register_forward_pre_hook(_nchw_input))
    if _trains_safely(model, sample.contiguous(memory_format=torch.channels_last)):
        return hooks
    for hook in hooks:
        hook.remove()
    set_memory_format(model, torch.contiguous_format)
    return None


def set_memory_format(model: Any, memory_format: Any) -> None:
    """Every 4-D parameter and buffer of `model` re-laid out in `memory_format`, keeping the tensor objects
    (an optimizer's references stay valid). Not `Module.to(memory_format=...)`: it leaves 1x1 kernels alone,
    whose NCHW and NHWC strides both count as contiguous, and convolutions follow their kernels' strides."""
    for t in (*model.parameters(), *model.buffers()):
        if t.ndim == 4:
            t.data = t.data.clone(memory_format=memory_format)


def _strided_1x1(weight: torch.Tensor, stride: Any) -> bool:
    return (
        tuple(weight.shape[-2:]) == (1, 1)
        and max(stride if isinstance(stride, (tuple, list)) else [stride]) > 1
    )


def _nchw_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    import torch

    return (args[0].clone(memory_format=torch.contiguous_format), *args[1:])


def _trains_safely(model: Any, sample: torch.Tensor) -> bool:
    """Whether `model` runs on `sample` (eval mode, no gradients) with every 1x1 strided convolution (or
    transposed one) on NCHW input and kernel: strides exactly NCHW's, so oneDNN takes its NCHW kernels."""
    import torch
    from torch.overrides import TorchFunctionMode

    def nchw(t: torch.Tensor) -> bool:
        return t.stride() == torch.empty(t.shape, device="meta").stride()

    class Watch(TorchFunctionMode):
        unsafe = False

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            if func in (torch.conv2d, torch.conv_transpose2d):
                call = dict(zip(("input", "weight", "bias", "stride"), args, strict=False)) | kwargs
                if _strided_1x1(call["weight"], call.get("stride", 1)) and not (
                    nchw(call["input"]) and nchw(call["weight"])
                ):
                    self.unsafe = True
            return func(*args, **kwargs)

    model.eval()
    watch = Watch()
    try:
        with torch.no_grad(), watch:
            model(sample)
    except Exception:
        return False
    return not watch.unsafe


def augment_batch(x: Any, *, shift: int, hflip: bool, channels_last: bool, generator: Any) -> Any:
    """A randomly translated (by up to `shift` pixels each way, edges repeated into the border) and, with
    `hflip`, randomly mirrored copy of a batch of images; one draw per image from `generator`."""
    import torch
    from torch.nn import functional as F

    if channels_last:
        x = x.permute(0, 3, 1, 2)
    n, _, height, width = x.shape
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if shift > 0:
        padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(height))[:, :, None]
        cols = (dx[:, None] + torch.arange(width))[:, None, :]
        # (n, H, W, C) by advanced indexing, back to (n, C, H, W)
        x = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if channels_last:
        return x.permute(0, 2, 3, 1).contiguous()
    # Plain NCHW strides, also when one channel makes the gather's NHWC strides pass as contiguous: `fit`
    # chooses the memory format (see `channels_last_hooks`), the gather's strides must not choose it.
    return x.clone(memory_format=torch.contiguous_format)


def _prunable_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.modules.conv._ConvNd, nn.Linear)


def count_params(model: Any) -> int:
    """Number of parameters (shared ones once)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: Any, input_shape: list[int]) -> int:
    """Multiply-accumulates of one sample, counted on the aten ops (works for any torch model)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(input_shape))
    except Exception as exc:
        raise ModelError(f"model forward failed on input shape {list(input_shape)}: {one_line(exc)}") from exc
    return int(counter.get_total_flops() // 2 // max(input_shape[0], 1))


class _LeafTrace:
    """What one forward pass tells about leaf modules: MACs, run order, output widths."""

    def __init__(self) -> None:
        self.macs: dict[str, int] = {}
        self.order: list[tuple[str, int]] = []  # (conv/linear name, output channels) in run order
        self.out_width = 0

    def classifier(self, num_classes: int) -> str | None:
        """The last conv/linear that ran whose output size is num_classes."""
        return next((name for name, width in reversed(self.order) if width == num_classes), None)


def _trace_leaves(model: Any, input_shape: list[int]) -> _LeafTrace:
    import torch
    from torch import nn

    trace = _LeafTrace()
    batch = max(input_shape[0], 1)

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            if isinstance(module, nn.modules.conv._ConvNd):
                per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
                macs, width = output.numel() // batch * per_out, output.shape[1]
            elif isinstance(module, nn.Linear):
                macs, width = output.numel() // batch * module.in_features, output.shape[-1]
            else:
                return
            trace.macs[name] = trace.macs.get(name, 0) + macs
            trace.order.append((name, int(width)))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if not list(m.children())]
    try:
        out = forward_zeros(model, input_shape)
    finally:
        for h in handles:
            h.remove()
    trace.out_width = int(out.shape[-1]) if isinstance(out, torch.Tensor) else 0
    return trace


def find_classifier(model: Any, input_shape: list[int], num_classes: int) -> str | None:
    """Name of the output layer: the last conv/linear that runs and has num_classes outputs."""
    return _trace_leaves(model, input_shape).classifier(num_classes)


def _coupling(model: Any, input_shape: list[int], ignored: list[Any]) -> dict[Any, str]:
    """Module -> note for every module whose output channels a DepGraph pruning group can remove."""
    import torch
    import torch_pruning as tp
    from torch import nn

    try:
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=torch.zeros(input_shape), verbose=False
        )
        groups = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=_prunable_types()))
    except Exception:  # a model DepGraph cannot trace: every layer then reads "in no pruning group"
        return {}
    finally:
        model.eval()
    names = {m: n for n, m in model.named_modules()}
    rank = {m: i for i, m in enumerate(names)}
    reason = {
        tp.ops.OPTYPE.ELEMENTWISE: "residual add",
        tp.ops.OPTYPE.CONCAT: "concat",
        tp.ops.OPTYPE.SPLIT: "split",
        tp.ops.OPTYPE.DEPTHWISE_CONV: "depthwise conv",
    }
    notes: dict[Any, str] = {}
    for group in groups:
        members: list[nn.Module] = []
        via: list[str] = []
        for dep, _ in group:
            for node in (dep.source, dep.target):
                if node.type in reason and reason[node.type] not in via:
                    via.append(reason[node.type])
            module = dep.target.module
            if graph.is_out_channel_pruning_fn(dep.handler) and module in names and module not in members:
                members.append(module)
        convs = [m for m in members if isinstance(m, _prunable_types())]
        convs.sort(key=lambda c: rank[c])
        for m in members:
            others = [names[c] for c in convs if c is not m]
            shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
            how = f" via {', '.join(via)}" if via else ""
            if not others:
                notes[m] = ""
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and len(others) == 1:
                notes[m] = f"channels follow {shown}"
            else:
                notes[m] = f"coupled with {shown}{how}"
    return notes


def _kind(m: Any) -> str:
    from torch import nn

    name = type(m).__name__
    if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1:
        if m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
            return f"{name}(depthwise)"
        return f"{name}(grouped, groups={m.groups})"
    return name


def _out_channels(m: Any) -> int | None:
    for attr in ("out_channels", "out_features", "num_features", "num_channels", "embedding_dim"):
        value = getattr(m, attr, None)
        if isinstance(value, int):
            return value
    weight = getattr(
        m, "weight", None
    )  # TorchScript modules: conv/linear/norm weights lead with the channels
    return int(weight.shape[0]) if weight is not None and getattr(weight, "ndim", 0) >= 1 else None
