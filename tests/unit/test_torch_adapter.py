"""TorchAdapter: every load source, checks, measurements, training, distillation, predict and save."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgecompress.data import DataBundle, Split, load_data  # noqa: E402
from edgecompress.errors import ModelError, RecipeError  # noqa: E402
from edgecompress.frameworks.base import FitOptions  # noqa: E402
from edgecompress.frameworks.torch import TorchAdapter  # noqa: E402
from edgecompress.recipe import DataSpec, ModelSpec  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHAPE = [1, 1, 16, 16]


@pytest.fixture(scope="module")
def adapter() -> TorchAdapter:
    return TorchAdapter()


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    """scikit-learn digits at 16x16 (ships with scikit-learn, no download)."""
    return load_data(DataSpec(image_size=(16, 16)), Path("recipe.yaml"), seed=0)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Model initialisation draws from torch's global generator: make every test start from the same state."""
    torch.manual_seed(0)


@pytest.fixture
def recipe_path() -> Path:
    """A recipe 'living' in examples/, so 'models.py:...' resolves next to it."""
    return EXAMPLES / "recipe.yaml"


def spec(source: str, **kwargs) -> ModelSpec:
    return ModelSpec(source=source, input_shape=SHAPE, **kwargs)


def tiny(adapter: TorchAdapter, recipe_path: Path, **kwargs):
    return adapter.load(spec("models.py:tiny_cnn", **kwargs), recipe_path)


def accuracy(adapter: TorchAdapter, model, split: Split) -> float:
    return float((adapter.predict(model, split.x).argmax(1) == split.y).mean())


class RecordingUI:
    """Duck-typed UI that records the progress bar and debug lines."""

    def __init__(self) -> None:
        self.bars: list[tuple[str, float | None]] = []
        self.fields: list[dict] = []
        self.lines: list[str] = []

    @contextmanager
    def progress(self, description: str, total: float | None):
        self.bars.append((description, total))
        ui = self

        class Task:
            def advance(self, n: float = 1, **fields) -> None:
                ui.fields.append(fields)

        yield Task()

    def debug(self, message: str) -> None:
        self.lines.append(message)

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.lines.append(message)


# ------------------------------------------------------------------------------------------- loading


def test_python_entry_by_file_path(adapter, recipe_path):
    model = adapter.load(spec("models.py:tiny_cnn", kwargs={"num_classes": 5}), recipe_path)
    assert isinstance(model, nn.Module) and not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model(torch.zeros(SHAPE)).shape == (1, 5)


def test_fresh_weights_are_reproducible(adapter, recipe_path):
    state = torch.random.get_rng_state()
    a, b = tiny(adapter, recipe_path), tiny(adapter, recipe_path)
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched


def test_python_entry_by_module_path(adapter, tmp_path, monkeypatch):
    package = tmp_path / "zoo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "import torch.nn as nn\n"
        "def build(classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(256, classes)).train().double()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = adapter.load(spec("zoo_pkg.nets:build", kwargs={"classes": 3}), tmp_path / "recipe.yaml")
    assert not model.training  # returned in eval mode, float32
    assert model[1].weight.dtype == torch.float32
    assert model(torch.zeros(SHAPE)).shape == (1, 3)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("nowhere.py:net", ["file not found", "nowhere.py"]),
        ("models.py:no_such_net", ["no function", "no_such_net"]),
        ("no_such_package_xyz.nets:build", ["module not found", "no_such_package_xyz.nets"]),
        ("missing.pt2", ["file not found", "missing.pt2"]),
    ],
)
def test_missing_source_is_a_recipe_error(adapter, recipe_path, source, words):
    with pytest.raises(RecipeError) as err:
        adapter.load(spec(source), recipe_path)
    assert all(w in str(err.value) for w in words)


def test_factory_failures_are_model_errors(adapter, tmp_path):
    (tmp_path / "bad.py").write_text(
        "def boom():\n    raise ValueError('width must be even')\ndef not_a_model():\n    return 42\n"
    )
    recipe = tmp_path / "recipe.yaml"
    with pytest.raises(ModelError, match="width must be even"):
        adapter.load(spec("bad.py:boom"), recipe)
    with pytest.raises(ModelError, match=r"not a torch\.nn\.Module"):
        adapter.load(spec("bad.py:not_a_model"), recipe)
    (tmp_path / "broken.py").write_text("import this_module_does_not_exist_xyz\n")
    with pytest.raises(ModelError, match=r"broken\.py.*this_module_does_not_exist_xyz"):
        adapter.load(spec("broken.py:net"), recipe)


def test_export_roundtrip_rebuilds_layers(adapter, recipe_path, tmp_path):
    model = tiny(adapter, recipe_path)
    path = adapter.save(model, tmp_path / "tiny.pt2", SHAPE)
    assert path == tmp_path / "tiny.pt2" and path.is_file()
    loaded = adapter.load(spec(str(path)), recipe_path)
    x = torch.randn(5, *SHAPE[1:])  # other batch sizes: the batch dimension is dynamic
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    modules = dict(loaded.named_modules())
    assert isinstance(modules["stem.0"], nn.Conv2d) and isinstance(modules["stem.1"], nn.BatchNorm2d)
    assert isinstance(modules["fc"], nn.Linear)
    assert modules["mix.depthwise.0"].groups == 16
    assert adapter.stats(loaded, SHAPE) == adapter.stats(model, SHAPE)
    loaded.train()  # allowed again once batch norm is a module
    loaded.eval()


def test_export_with_fixed_batch_still_takes_other_batches(adapter, recipe_path, tmp_path):
    model = tiny(adapter, recipe_path)
    torch.export.save(torch.export.export(model, (torch.zeros(SHAPE),)), tmp_path / "static.pt2")
    loaded = adapter.load(spec(str(tmp_path / "static.pt2")), recipe_path)
    x = torch.randn(4, *SHAPE[1:])
    assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_corrupt_export_is_a_model_error(adapter, recipe_path, tmp_path):
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"junk\.pt2"):
        adapter.load(spec(str(tmp_path / "junk.pt2")), recipe_path)


@pytest.mark.parametrize("suffix", [".pt", ".ts", ".torchscript"])
def test_torchscript(adapter, recipe_path, tmp_path, suffix):
    model = tiny(adapter, recipe_path)
    torch.jit.script(model).save(str(tmp_path / f"m{suffix}"))
    loaded = adapter.load(spec(str(tmp_path / f"m{suffix}")), recipe_path)
    x = torch.randn(3, *SHAPE[1:])
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert adapter.stats(loaded, SHAPE) == adapter.stats(model, SHAPE)
    layers = adapter.layers(loaded, SHAPE)
    assert layers and not any(layer.prunable for layer in layers)


def test_pickle_named_pt_is_rejected_clearly(adapter, recipe_path, tmp_path):
    torch.save(tiny(adapter, recipe_path).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ModelError) as err:
        adapter.load(spec(str(tmp_path / "weights.pt")), recipe_path)
    assert "not a TorchScript file" in str(err.value) and "checkpoint" in str(err.value)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_checkpoint(adapter, recipe_path, tmp_path, wrap):
    source = tiny(adapter, recipe_path)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1)
    state = source.state_dict()
    torch.save({wrap: state, "epoch": 3} if wrap else state, tmp_path / "ckpt.pth")
    loaded = tiny(adapter, recipe_path, checkpoint=str(tmp_path / "ckpt.pth"))
    x = torch.randn(2, *SHAPE[1:])
    assert torch.equal(loaded(x), source(x))


def test_checkpoint_mismatch_names_file_and_keys(adapter, recipe_path, tmp_path):
    state = tiny(adapter, recipe_path).state_dict()
    state.pop("fc.weight")
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(ModelError) as err:
        tiny(adapter, recipe_path, checkpoint=str(tmp_path / "wrong.pth"))
    message = str(err.value)
    assert "\n" not in message
    assert all(
        w in message for w in ("wrong.pth", "missing 1 keys (fc.weight)", "unexpected 1 keys (head.weight)")
    )
    torch.save(
        adapter.load(spec("models.py:tiny_cnn", kwargs={"num_classes": 4}), recipe_path).state_dict(),
        tmp_path / "shape.pth",
    )
    with pytest.raises(ModelError, match=r"shape\.pth.*size mismatch"):
        tiny(adapter, recipe_path, checkpoint=str(tmp_path / "shape.pth"))
    with pytest.raises(RecipeError, match=r"absent\.pth"):
        tiny(adapter, recipe_path, checkpoint=str(tmp_path / "absent.pth"))


# ------------------------------------------------------------------------------ checks and measuring


class TupleOut(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10], x


def test_check(adapter, recipe_path):
    adapter.check(tiny(adapter, recipe_path), SHAPE, 10)
    broken = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))
    with pytest.raises(
        ModelError, match=r"^model forward failed on input shape \[1, 1, 16, 16\]: RuntimeError"
    ):
        adapter.check(broken, SHAPE, 10)
    with pytest.raises(ModelError, match=r"shape \[1, 7\].*got \[1, 10\]"):
        adapter.check(tiny(adapter, recipe_path), SHAPE, 7)
    with pytest.raises(ModelError, match="one logits tensor"):
        adapter.check(TupleOut(), SHAPE, 10)


def test_stats_counts_macs_exactly(adapter):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 16 * 16, 10))
    stats = adapter.stats(model, [2, 1, 16, 16])  # per sample, whatever the batch
    assert stats.macs == 9 * 4 * 16 * 16 + 4 * 16 * 16 * 10
    assert stats.params == 36 + 4 * 16 * 16 * 10 + 10


def test_layers(adapter, recipe_path):
    model = tiny(adapter, recipe_path)
    layers = {layer.name: layer for layer in adapter.layers(model, SHAPE)}
    assert sum(layer.macs for layer in layers.values()) == adapter.stats(model, SHAPE).macs
    assert sum(layer.params for layer in layers.values()) == adapter.stats(model, SHAPE).params
    assert layers["mix.depthwise.0"].kind == "Conv2d(depthwise)"
    assert layers["stem.1"].kind == "BatchNorm2d" and layers["stem.1"].out_channels == 8
    assert not layers["fc"].prunable and "classifier" in layers["fc"].note
    assert "layer1.conv2.0" in layers["stem.0"].note and "residual add" in layers["stem.0"].note
    assert "concat" in layers["mix.branch.0"].note and "depthwise" in layers["mix.branch.0"].note
    assert layers["layer1.conv1.1"].note == "channels follow layer1.conv1.0"
    assert all(layer.prunable for name, layer in layers.items() if name != "fc")
    assert (
        layers["layer2.conv2.0"].macs == 9 * 16 * 16 * 4 * 4
        and layers["layer2.conv2.0"].params == 9 * 16 * 16
    )


def test_copy_is_independent(adapter, recipe_path):
    model = tiny(adapter, recipe_path)
    clone = adapter.copy(model)
    with torch.no_grad():
        clone.fc.weight.zero_()
    assert model.fc.weight.abs().sum() > 0


def test_predict(adapter, recipe_path, digits):
    model = tiny(adapter, recipe_path)
    out = adapter.predict(model, digits.test.x[:50], batch_size=7)
    assert out.shape == (50, 10) and out.dtype == np.float32
    assert np.allclose(out, adapter.predict(model, digits.test.x[:50]), atol=1e-5)


def test_import_loads_no_torch():
    code = (
        "import sys, edgecompress.frameworks.torch, edgecompress.frameworks.torch_loading, "
        "edgecompress.stages.prune.torch_backend; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------ training


def cross_entropy(adapter, model, split: Split) -> float:
    logits = torch.from_numpy(adapter.predict(model, split.x))
    return float(nn.functional.cross_entropy(logits, torch.from_numpy(split.y)))


def test_fit_learns_digits(adapter, recipe_path, digits):
    model = tiny(adapter, recipe_path)
    before = cross_entropy(adapter, model, digits.train)
    ui = RecordingUI()
    out = adapter.fit(model, digits, FitOptions(epochs=4, lr=5e-3, description="train"), seed=0, ui=ui)
    assert out is model and not model.training
    assert cross_entropy(adapter, model, digits.train) < before / 3
    assert accuracy(adapter, model, digits.test) > 0.8
    assert ui.bars == [("train", 4)]
    assert len(ui.fields) == 4 and all({"loss", "val_acc"} <= set(f) for f in ui.fields)
    assert len([line for line in ui.lines if "epoch" in line]) == 4


def test_fit_is_seeded(adapter, recipe_path, digits):
    outs = []
    for _ in range(2):
        torch.manual_seed(len(outs))  # whatever the global state, the same seed gives the same result
        model = tiny(adapter, recipe_path)
        adapter.fit(
            model,
            digits,
            FitOptions(epochs=1, lr=2e-3, optimizer="sgd", schedule="constant"),
            seed=5,
            ui=RecordingUI(),
        )
        outs.append(adapter.predict(model, digits.val.x))
    assert np.array_equal(outs[0], outs[1])


class ConstantTeacher(nn.Module):
    """Always says 'class 3', whatever the input."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 3] = 5.0
        return logits


def test_distillation_follows_the_teacher(adapter, recipe_path, digits):
    student = tiny(adapter, recipe_path)
    options = FitOptions(
        epochs=2, lr=5e-3, teacher=ConstantTeacher(), alpha=1.0, temperature=2.0, keep_best=False
    )
    adapter.fit(student, digits, options, seed=0, ui=RecordingUI())
    predictions = adapter.predict(student, digits.test.x).argmax(1)
    assert (predictions == 3).mean() > 0.95  # learnt from the teacher alone, not from the labels


def test_distillation_moves_student_toward_teacher(adapter, recipe_path, digits):
    teacher = tiny(adapter, recipe_path)
    adapter.fit(teacher, digits, FitOptions(epochs=6, lr=5e-3), seed=0, ui=RecordingUI())
    student = adapter.load(spec("models.py:tiny_cnn"), recipe_path)

    def gap() -> float:
        t = torch.from_numpy(adapter.predict(teacher, digits.test.x) / 4.0)
        s = torch.from_numpy(adapter.predict(student, digits.test.x) / 4.0)
        return float(
            nn.functional.kl_div(s.log_softmax(1), t.log_softmax(1), reduction="batchmean", log_target=True)
        )

    before = gap()
    options = FitOptions(
        epochs=6, lr=5e-3, teacher=teacher, temperature=4.0, alpha=0.9, description="distill"
    )
    ui = RecordingUI()
    adapter.fit(student, digits, options, seed=0, ui=ui)
    assert gap() < before / 4, (gap(), before)
    assert ui.bars == [("distill", 6)]
    agreement = (
        adapter.predict(student, digits.test.x).argmax(1) == adapter.predict(teacher, digits.test.x).argmax(1)
    ).mean()
    assert agreement > 0.9, agreement


@pytest.mark.parametrize("keep_best", [True, False])
def test_keep_best(adapter, recipe_path, digits, keep_best):
    model = tiny(adapter, recipe_path)
    adapter.fit(model, digits, FitOptions(epochs=4, lr=5e-3), seed=0, ui=RecordingUI())
    # Distilling a good model from a teacher that always says '3' makes it worse with every epoch.
    options = FitOptions(
        epochs=3, lr=3e-4, schedule="constant", teacher=ConstantTeacher(), alpha=1.0, keep_best=keep_best
    )
    ui = RecordingUI()
    adapter.fit(model, digits, options, seed=0, ui=ui)
    history = [f["val_acc"] for f in ui.fields]
    assert history[0] > history[-1] + 0.1  # the scenario is meaningful
    assert accuracy(adapter, model, digits.val) == pytest.approx(max(history) if keep_best else history[-1])


def test_fit_trains_torchscript_and_exported_models(adapter, recipe_path, digits, tmp_path):
    model = tiny(adapter, recipe_path)
    torch.jit.script(model).save(str(tmp_path / "m.ts"))
    adapter.save(model, tmp_path / "m.pt2", SHAPE)
    for name in ("m.ts", "m.pt2"):
        loaded = adapter.load(spec(str(tmp_path / name)), recipe_path)
        before = cross_entropy(adapter, loaded, digits.train)
        adapter.fit(loaded, digits, FitOptions(epochs=4, lr=5e-3), seed=0, ui=RecordingUI())
        assert cross_entropy(adapter, loaded, digits.train) < before / 3


def test_fit_without_trainable_parameters(adapter, digits):
    with pytest.raises(ModelError, match="no trainable parameters"):
        adapter.fit(ConstantTeacher(), digits, FitOptions(epochs=1, lr=1e-3), seed=0, ui=RecordingUI())


# ------------------------------------------------------------------------------------------- augmentation


def test_augment_batch_translates_each_image_by_at_most_shift():
    from edgecompress.frameworks.torch import augment_batch

    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the middle
    out = augment_batch(
        x, shift=2, hflip=False, channels_last=False, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))
    where = out[:, 0].flatten(1).argmax(1)
    rows, cols = where // 9, where % 9
    assert (rows - 4).abs().max() <= 2 and (cols - 4).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # drawn per image
    assert torch.equal(
        augment_batch(x, shift=0, hflip=False, channels_last=False, generator=torch.Generator()), x
    )


def test_augment_batch_replicates_edges_and_flips_in_either_layout():
    from edgecompress.frameworks.torch import augment_batch

    ramp = torch.arange(6.0).repeat(6, 1)  # columns 0..5
    x = ramp[None, None].repeat(32, 1, 1, 1)
    out = augment_batch(
        x, shift=1, hflip=False, channels_last=False, generator=torch.Generator().manual_seed(1)
    )
    assert out.min() == 0 and out.max() == 5  # edges repeated, never zero-filled beyond the range
    flipped = augment_batch(
        x, shift=0, hflip=True, channels_last=False, generator=torch.Generator().manual_seed(1)
    )
    mirrored = [bool(torch.equal(f, x[0].flip(2))) for f in flipped]
    assert any(mirrored) and not all(mirrored)
    nhwc = augment_batch(
        x.permute(0, 2, 3, 1),
        shift=0,
        hflip=True,
        channels_last=True,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(nhwc.permute(0, 3, 1, 2), flipped)


def test_augment_batch_keeps_one_channel_batches_in_plain_nchw_strides():
    """The gather makes NHWC strides, which a 1-channel batch passes off as contiguous; convs would then run
    channels_last, where oneDNN's 1x1 stride-2 backward kernel crashed a pruned ResNet-18's distillation."""
    from edgecompress.frameworks.torch import augment_batch

    x = torch.rand(15, 1, 32, 32)
    out = augment_batch(
        x, shift=1, hflip=True, channels_last=False, generator=torch.Generator().manual_seed(0)
    )
    assert out.stride() == (32 * 32, 32 * 32, 32, 1)


class CountingTeacher(nn.Module):
    """A fixed teacher that counts the images it is shown."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.inner(x)


def test_distillation_with_augmentation_asks_the_teacher_per_batch(adapter, recipe_path, digits):
    teacher = CountingTeacher(tiny(adapter, recipe_path))
    student = tiny(adapter, recipe_path)
    options = FitOptions(epochs=2, lr=5e-3, teacher=teacher, augment_shift=1, keep_best=False)
    adapter.fit(student, digits, options, seed=0, ui=RecordingUI())
    assert teacher.seen == 2 * len(digits.train)  # the augmented batches, not one pass over the split
    teacher.seen = 0
    plain = FitOptions(epochs=2, lr=5e-3, teacher=teacher, keep_best=False)
    adapter.fit(tiny(adapter, recipe_path), digits, plain, seed=0, ui=RecordingUI())
    assert teacher.seen == len(digits.train)  # targets computed once


def test_fit_options_take_batch_size_and_augmentation_from_the_data_section():
    from edgecompress.frameworks.base import fit_options
    from edgecompress.stages.distill.stage import DistillConfig

    data = DataSpec(batch_size=32, augment={"shift": 2})
    options = fit_options(DistillConfig(epochs=3), data=data, description="distill")
    assert (options.batch_size, options.augment_shift, options.augment_hflip, options.epochs) == (
        32,
        2,
        False,
        3,
    )
