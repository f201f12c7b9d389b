"""The network transforms applied before training: structured pruning and QAT preparation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionops.cli.commands.train import train_config
from visionops.cli.parser import build_parser
from visionops.config import OptimConfig
from visionops.errors import ConfigError
from visionops.models import ImageClassifier, create_model, list_models, model_specs
from visionops.models.compression import COMPRESSIONS, ExportedNetwork, apply_compression
from visionops.training.checks import check_names
from visionops.training.optim import create_optimizer

#: The pruner stops at the first channel step that meets the target, and one step (2% of every
#: layer's channels) removes at most ~5% of a quarter-width ResNet-9's parameters.
OVERSHOOT = 0.05


@pytest.fixture(autouse=True)
def _one_thread():
    """Small batches gain nothing from intra-op threads on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _network(seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    backbone = create_model("resnet9", 10, small_input_stem=True, width_multiplier=0.25)
    return ImageClassifier(backbone, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", COMPRESSIONS.names())
def test_every_compression_predicts_and_trains_a_step(name: str) -> None:
    model = apply_compression(name, _network(), _images(2), 0.5)
    model.train()
    optimizer = create_optimizer(model, OptimConfig(lr=0.05))
    before = [p.detach().clone() for p in model.parameters()]
    logits = model(_images(6))
    assert logits.shape == (6, 10)
    F.cross_entropy(logits, torch.arange(6) % 10).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert model.eval().training is False
    with torch.no_grad():
        assert model(_images(1)).shape == (1, 10)
    assert COMPRESSIONS.get(name).description


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_structured_pruning_removes_the_ratio_of_parameters(ratio: float) -> None:
    source = _network()
    original = _count(source)
    pruned = apply_compression("prune-structured", source, _images(2), ratio)
    assert _count(source) == original  # the caller's network is left alone
    assert (1 - ratio - OVERSHOOT) * original <= _count(pruned) <= (1 - ratio) * original
    assert type(pruned) is ImageClassifier  # an ordinary eager module: it logs like any other
    assert pruned.backbone.fc.out_features == 10  # the classes are never pruned
    assert pruned.eval()(_images(3)).shape == (3, 10)


def test_structured_pruning_is_a_function_of_the_weights() -> None:
    """A resumed run rebuilds the pruned network and loads its checkpoint into it."""
    first = apply_compression("prune-structured", _network(), _images(2, seed=1), 0.5)
    again = apply_compression("prune-structured", _network(), _images(2, seed=2), 0.5)
    shapes = {k: v.shape for k, v in first.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    # The network was in train mode, but tracing the example did not update batch norm.
    assert first.training and int(first.backbone.stem[1].num_batches_tracked) == 0


def test_structured_pruning_refuses_an_unreachable_ratio() -> None:
    with pytest.raises(ConfigError, match=r"prune_ratio=0.999 cannot be reached"):
        apply_compression("prune-structured", _network(), _images(2), 0.999)


def test_qat_network_switches_train_and_eval() -> None:
    qat = apply_compression("qat", _network(), _images(2), 0.5)
    assert isinstance(qat, ExportedNetwork) and qat.training
    batch = _images(8)
    qat(batch)  # one observed pass gives the fake quantisers their ranges
    with torch.no_grad():
        # Training batch norm normalises with the batch's own statistics...
        assert not torch.allclose(qat(batch)[:1], qat(batch[:1].repeat(2, 1, 1, 1))[:1])
        qat.eval()
        # ...inference batch norm with the running ones: an image's logits ignore the batch.
        torch.testing.assert_close(qat(batch)[:1], qat(batch[:1]), atol=1e-5, rtol=1e-4)
    assert _observing(qat) == {False}  # eval froze the quantisation ranges
    copied = copy.deepcopy(qat).train()  # a deep copy keeps the switch (torchao's does not)
    assert _observing(copied) == {True} and _observing(qat) == {False}


def _observing(model: nn.Module) -> set[bool]:
    return {bool(m.observer_enabled) for m in model.modules() if hasattr(m, "observer_enabled")}


def test_qat_optimizer_groups_the_graph_norm_parameters() -> None:
    eager = create_optimizer(_network(), OptimConfig())
    qat = create_optimizer(apply_compression("qat", _network(), _images(2), 0.5), OptimConfig())

    def sizes(optimizer: torch.optim.Optimizer) -> dict[str, int]:
        return {g["name"]: len(g["params"]) for g in optimizer.param_groups}

    assert sizes(qat) == sizes(eager)  # batch-norm weights get the norm rate, not the bias one


def test_qat_checkpoint_loads_into_a_rebuilt_network() -> None:
    """What a resumed run and the fine-tune's result do: rebuild, then load the state."""
    trained = apply_compression("qat", _network(), _images(2), 0.5)
    trained(_images(8))  # observers now hold per-channel ranges the fresh network lacks
    rebuilt = apply_compression("qat", _network(), _images(2, seed=5), 0.5)
    rebuilt.load_state_dict(trained.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(_images(4)), trained.eval()(_images(4)))


def _cfg(*argv: str):  # type: ignore[no-untyped-def]
    return train_config(build_parser().parse_args(["train", *argv]), {})


def test_qat_training_that_would_log_its_model_is_refused_before_it_starts() -> None:
    with pytest.raises(ConfigError) as caught:
        check_names(_cfg("--compression", "qat"))
    message = str(caught.value)
    assert message.startswith("invalid configuration: compression='qat': ")
    assert "visionops optimize --methods qat" in message and "--no-log-model" in message
    check_names(_cfg("--compression", "qat", "--no-log-model"))
    check_names(_cfg("--compression", "prune-structured"))  # a pruned network logs as usual


@pytest.mark.parametrize("name", list_models())
def test_structured_pruning_handles_every_model(name: str) -> None:
    spec = next(s for s in model_specs() if s.name == name)
    torch.manual_seed(0)
    width = {"width_multiplier": 0.25} if spec.supports_width else {}
    backbone = create_model(name, 10, small_input_stem=True, **width)
    source = ImageClassifier(backbone, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    images = torch.rand(2, 3, 32, 32)
    pruned = apply_compression("prune-structured", source, images, 0.5)
    assert _count(pruned) <= 0.5 * _count(source)
    assert pruned.eval()(images).shape == (2, 10)


def _weight_layers(graph: torch.fx.GraphModule) -> tuple[int, int]:
    """(conv/linear nodes whose weight is dequantised from INT8, all conv/linear nodes)."""
    layers = [
        node
        for node in graph.graph.nodes
        if node.op == "call_function"
        and node.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
    ]
    dequantised = [node for node in layers if "dequantize" in str(node.args[1].target)]
    return len(dequantised), len(layers)


@pytest.mark.slow  # torch.export of every model: 20 s and more on 2 cores
@pytest.mark.parametrize("name", list_models())
def test_the_int8_quantizer_covers_every_layer_of_every_model(name: str) -> None:
    """int8-pt2e and QAT quantise what torchao's X86 quantizer annotates, and it matches layers
    by exact type and op: nn.Conv2d subclasses or padding="same" would stay FP32 silently, and a
    module called twice (torchvision's BasicBlock ReLU) makes it raise."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    spec = next(s for s in model_specs() if s.name == name)
    torch.manual_seed(0)
    width = {"width_multiplier": 0.25} if spec.supports_width else {}
    backbone = create_model(name, 10, small_input_stem=True, **width)
    source = ImageClassifier(backbone, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    images = torch.rand(2, 3, 32, 32)
    graph = torch.export.export(source, (images,)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    prepared(images)
    quantised, layers = _weight_layers(convert_pt2e(prepared))
    assert layers > 0 and quantised == layers
