"""Training speed-ups in `TorchAdapter.fit`: glibc malloc tuning, channels_last training (safe against the
oneDNN 1x1 stride-2 crash), the `device` option and the `trained_images` count."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgecompress.console import UI  # noqa: E402
from edgecompress.errors import ModelError, RecipeError  # noqa: E402
from edgecompress.frameworks import torch as torch_adapter  # noqa: E402
from edgecompress.frameworks.base import FitOptions, FrameworkAdapter, fit_options  # noqa: E402
from edgecompress.frameworks.torch import TorchAdapter, channels_last_hooks, train_device  # noqa: E402
from edgecompress.recipe import parse_recipe  # noqa: E402
from tests.conftest import BASE_RECIPE, recipe_error  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


class ShortcutNet(nn.Module):
    """A ResNet-style block whose shortcut is the 1x1 stride-2 conv oneDNN mistrains in channels_last
    (8 input channels, 32x32 input), beside a depthwise conv and a 3x3 stride-2 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.main = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16))
        self.shortcut = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16 * 4, 10)

    def forward(self, x):
        x = self.depthwise(self.stem(x))
        x = torch.relu(self.main(x) + self.shortcut(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 2), 1))


class ViewNet(nn.Module):
    """Flattens activations with `.view`, which channels_last strides do not allow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.shape[0], -1))


class FunctionalStride(nn.Module):
    """A 1x1 stride-2 convolution through F.conv2d: no Conv2d module whose input a hook could keep NCHW."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(16, 8, 1, 1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = nn.functional.conv2d(self.conv(x), self.weight, stride=2)
        return self.fc(y.mean((2, 3)))


def nchw_strides(model) -> bool:
    """Every 4-D parameter and buffer has exactly the strides of a fresh NCHW tensor."""
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.stride() == torch.empty(t.shape).stride() for t in tensors if t.ndim == 4)


def run_python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter from the repository root: a native crash fails the test, not pytest."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def recorded(monkeypatch):
    """What `channels_last_hooks` returned in each fit: a list of hooks (channels_last) or None (NCHW)."""
    calls: list = []

    def spy(model, sample):
        calls.append(channels_last_hooks(model, sample))
        return calls[-1]

    monkeypatch.setattr(torch_adapter, "channels_last_hooks", spy)
    return calls


def train_loss(adapter, model, split) -> float:
    logits = torch.from_numpy(adapter.predict(model, split.x))
    return float(nn.functional.cross_entropy(logits, torch.from_numpy(split.y)))


# ------------------------------------------------------------------------------------------- malloc


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_tune_malloc_stops_refaulting_freed_buffers():
    out = run_python(
        """
        import resource, torch
        from edgecompress.frameworks.torch import tune_malloc

        def faults():
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(5):
                torch.ones(48 << 18)  # 48 MiB, freed at once: by default unmapped, faulted in again next time
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

        faults()
        before = faults()
        print(tune_malloc(), tune_malloc(), before, (faults(), faults())[1])
        """
    )
    assert out.returncode == 0, out.stderr
    took, again, before, after = out.stdout.split()
    assert took == again == "True"
    assert int(before) > 5 * 10_000 and int(after) < int(before) / 20, (before, after)


# ------------------------------------------------------------------------------------ channels_last


def test_channels_last_fit_learns_like_nchw(digits16, monkeypatch, recorded):
    adapter = TorchAdapter()
    results = {}
    for layout in ("channels_last", "nchw"):
        if layout == "nchw":
            monkeypatch.setattr(torch_adapter, "channels_last_hooks", lambda model, sample: None)
        torch.manual_seed(0)
        model = ShortcutNet()
        before = train_loss(adapter, model, digits16.train)
        adapter.fit(
            model,
            digits16,
            FitOptions(epochs=3, lr=5e-3, batch_size=31, channels_last=True),
            seed=0,
            ui=UI(verbosity=0),
        )
        after = train_loss(adapter, model, digits16.train)
        assert after < before / 3, (layout, before, after)
        assert nchw_strides(model) and not model.training
        assert not model.shortcut[0]._forward_pre_hooks  # the NCHW hook is gone
        results[layout] = adapter.predict(model, digits16.test.x).argmax(1)
    assert len(recorded) == 1 and len(recorded[0]) == 1  # channels_last, the shortcut conv held in NCHW
    accuracy = {k: float((v == digits16.test.y).mean()) for k, v in results.items()}
    assert min(accuracy.values()) > 0.8, accuracy
    assert (results["channels_last"] == results["nchw"]).mean() > 0.9


@pytest.mark.parametrize("threads", [2, 3])
def test_odd_batches_through_the_strided_1x1_conv_do_not_crash(threads):
    # Without the NCHW hook this crashes (SIGSEGV/SIGABRT) or corrupts memory with torch 2.13's oneDNN on
    # AVX-512: batches of 15 and 13 do not split evenly over 2 or 3 threads.
    out = run_python(
        f"""
        import numpy as np, torch
        from edgecompress.console import UI
        from edgecompress.data import DataBundle, Split
        from edgecompress.frameworks import torch as adapter_module
        from edgecompress.frameworks.base import FitOptions
        from tests.unit.test_training_speed import ShortcutNet, nchw_strides

        torch.set_num_threads({threads})
        rng = np.random.default_rng(0)
        train = Split(rng.standard_normal((43, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, 43))
        val = Split(train.x[:7], train.y[:7])
        data = DataBundle(train, val, val, val, 10, [str(i) for i in range(10)], "NCHW", (1, 32, 32), None, None)
        used = []
        hooks = adapter_module.channels_last_hooks
        adapter_module.channels_last_hooks = lambda m, s: used.append(hooks(m, s)) or used[-1]
        adapter = adapter_module.TorchAdapter()
        model = ShortcutNet()
        adapter.fit(model, data, FitOptions(epochs=2, lr=1e-3, batch_size=15, channels_last=True), seed=0, ui=UI(verbosity=0))
        print("ok", len(used[0]), adapter.trained_images, nchw_strides(model))
        """
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.split() == ["ok", "1", "86", "True"]  # batches of 15, 15, 13, twice


@pytest.mark.parametrize("make", [ViewNet, FunctionalStride])
def test_channels_last_refused_keeps_the_model_nchw(make):
    model = make()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert channels_last_hooks(model, torch.zeros(2, 1, 16, 16)) is None
    assert nchw_strides(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_exported_graphs_and_torchscript_stay_nchw():
    assert channels_last_hooks(ShortcutNet(), torch.zeros(2, 1, 16, 16)) is not None  # the plain module would
    exported = torch.export.export(ShortcutNet().eval(), (torch.zeros(2, 1, 16, 16),)).module()
    assert channels_last_hooks(exported, torch.zeros(2, 1, 16, 16)) is None
    assert channels_last_hooks(torch.jit.script(ShortcutNet()), torch.zeros(2, 1, 16, 16)) is None


def test_after_channels_last_fit_pruning_and_export_work(digits16, tmp_path):
    import torch_pruning as tp

    adapter = TorchAdapter()
    model = ShortcutNet()
    adapter.fit(
        model, digits16, FitOptions(epochs=1, lr=5e-3, channels_last=True), seed=0, ui=UI(verbosity=0)
    )
    assert nchw_strides(model)
    adapter.save(model, tmp_path / "m.pt2", [1, 1, 16, 16])
    pruner = tp.pruner.MagnitudePruner(
        model, torch.zeros(1, 1, 16, 16), importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5, ignored_layers=[model.fc],
    )  # fmt: skip
    pruner.step()
    assert model.main[0].out_channels == 8
    assert model(torch.zeros(3, 1, 16, 16)).shape == (3, 10)


# ------------------------------------------------------------------------------------------- device


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_device("auto", "train") == torch.device("cpu") == train_device("cpu", "train")
    with pytest.raises(RecipeError) as info:
        train_device("cuda", "distill")
    assert "distill: device is 'cuda'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        train_device("tpu", "train")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train_device("auto", "train") == torch.device("cuda")


def test_fit_with_cuda_but_no_gpu_fails_before_training(digits16, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    adapter = TorchAdapter()
    with pytest.raises(RecipeError, match="sees no CUDA GPU"):
        adapter.fit(
            ShortcutNet(), digits16, FitOptions(epochs=1, lr=1e-3, device="cuda"), seed=0, ui=UI(verbosity=0)
        )
    assert adapter.trained_images == 0


@pytest.mark.parametrize("stage", ["train", "distill", "quantize"])
def test_device_is_a_shared_training_field(stage):
    recipe = parse_recipe(BASE_RECIPE + f"stages:\n  - {{type: {stage}, device: cpu}}\n")
    config = recipe.stages[0]
    assert config.device == "cpu"
    assert fit_options(config, data=recipe.data, description=stage).device == "cpu"
    assert "auto" in recipe_error(BASE_RECIPE + f"stages:\n  - {{type: {stage}, device: tpu}}\n")


def test_device_is_qat_only():
    message = recipe_error(BASE_RECIPE + "stages:\n  - {type: quantize, mode: ptq, device: cpu}\n")
    assert "device only apply to mode 'qat'" in message


# ----------------------------------------------------------------------------------- trained images


def test_trained_images_counts_every_example_of_every_epoch(digits16):
    assert FrameworkAdapter.trained_images == 0
    adapter = TorchAdapter()
    assert adapter.trained_images == 0
    n = len(digits16.train)
    bs = next(b for b in range(50, 80) if n % b == 1)  # a last batch of one is skipped (batch norm)
    adapter.fit(
        ShortcutNet(), digits16, FitOptions(epochs=2, lr=1e-3, batch_size=bs), seed=0, ui=UI(verbosity=0)
    )
    assert adapter.trained_images == 2 * (n - 1)
    adapter.fit(
        ShortcutNet(), digits16, FitOptions(epochs=1, lr=1e-3, batch_size=bs), seed=0, ui=UI(verbosity=0)
    )
    assert adapter.trained_images == 3 * (n - 1)
    assert TorchAdapter().trained_images == 0 and FrameworkAdapter.trained_images == 0


def test_channels_last_is_opt_in(digits16, recorded):
    """Without `channels_last: true` fit never tries it (it changes the trained weights' rounding)."""
    TorchAdapter().fit(ShortcutNet(), digits16, FitOptions(epochs=1, lr=1e-3), seed=0, ui=UI(verbosity=0))
    assert recorded == []
