"""torch.compile traces the whole network, mask branch included, as one graph that serves any input size.

Dynamo's ``eager`` backend checks the tracing (no graph breaks, symbolic shapes through the hourglass's
ceil-mode pooling and size-matched up-sampling) without inductor's minutes of C++ compilation on a CPU.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch._dynamo.utils import counters

import resattn  # noqa: F401  (registers the variants)


@pytest.mark.parametrize(("arch", "sizes"), [("resattn_tiny_cifar", (32, 44)), ("resattn_tiny", (64, 97))])
def test_one_dynamic_graph_serves_every_input_size(arch: str, sizes: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = timm.create_model(arch, num_classes=5).eval()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(net, backend="eager", fullgraph=True, dynamic=True)
    with torch.no_grad():
        for batch, size in zip((2, 3), sizes, strict=True):
            x = torch.randn(batch, 3, size, size)
            torch.testing.assert_close(compiled(x), net(x), rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1  # the second size reused the first graph
