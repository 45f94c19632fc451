"""Replay tensor work as CUDA graphs: one launch instead of hundreds or thousands.

Two users: :class:`GraphCache` for no-grad queries (the deformation field), and
:class:`StepGraphs` for whole training passes (forward, loss, backward) of a large
model whose Python and launch overhead the GPU would otherwise wait for.

Why: the deformation query (HexPlane sampling, a small MLP, adding the deltas) is
some thirty tiny kernels. On a GPU its cost is the CPU launching them, not the
arithmetic, so a viewer frame or an evaluation pass paid more for the deformation
than for rasterising. A captured graph replays all of them with one launch.

A graph bakes in the *addresses* of every tensor it reads. So the cache holds
graphs for one set of the tensors the function reads by reference (``fixed``:
model parameters, updated in place by the optimiser), identified by their
addresses, shapes and dtypes, one graph per shape of the per-call inputs
(``dynamic``: e.g. the query times, copied into the graph's own buffers). When
a fixed tensor is replaced (densification grows the model, a rollback loads
new storage) every graph is dropped, freeing its memory, and new ones are captured.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

_Key = tuple
Out = TypeVar("Out", Tensor, tuple[Tensor, ...])  # what a pass returns: a loss, or a tuple of tensors


class _Entry:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: tuple[Tensor, ...], outputs: tuple[Tensor, ...]):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class GraphCache:
    """Captured CUDA graphs of ``fn(*dynamic) -> tuple[Tensor, ...]``, at most ``capacity`` input shapes kept.

    Call it under ``torch.no_grad()`` with CUDA tensors. Outputs are fresh tensors
    (cloned from the graph's buffers), so callers may keep them across calls.
    Thread-safe: one replay at a time.

    Example::

        cache = GraphCache(lambda t: (field(means, t).position,))
        (position,) = cache((t,), fixed=(means, *field.parameters()))
    """

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]], capacity: int = 4, warmup: int = 2):
        self.fn = fn
        self.capacity = capacity
        self.warmup = warmup
        self.captures = 0  # how many graphs were captured (tests and benchmarks read it)
        self._fixed: _Key = ()
        self._graphs: OrderedDict[_Key, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, dynamic: Sequence[Tensor], fixed: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError("GraphCache replays forward passes only; call it under torch.no_grad()")
        fixed_key = tuple((x.data_ptr(), tuple(x.shape), x.dtype) for x in fixed)
        key = tuple((tuple(x.shape), x.dtype, x.device) for x in dynamic)
        with self._lock:
            if fixed_key != self._fixed:  # the graphs read tensors that are gone
                self._graphs.clear()
                self._fixed = fixed_key
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._capture(dynamic)
                self._graphs[key] = entry
                while len(self._graphs) > self.capacity:
                    self._graphs.popitem(last=False)
            else:
                self._graphs.move_to_end(key)
            for buffer, x in zip(entry.inputs, dynamic):
                buffer.copy_(x, non_blocking=True)
            entry.graph.replay()
            return tuple(out.clone() for out in entry.outputs)

    def __deepcopy__(self, memo: dict) -> GraphCache:
        """A copy starts empty: captured graphs read the original's tensors, and a lock cannot be copied."""
        return GraphCache(copy.deepcopy(self.fn, memo), self.capacity, self.warmup)

    def _capture(self, dynamic: Sequence[Tensor]) -> _Entry:
        inputs = tuple(x.detach().clone() for x in dynamic)
        side = torch.cuda.Stream(device=inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side):  # warm-up off the main stream, as capture requires
            for _ in range(self.warmup):
                self.fn(*inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (training, a second viewer) may keep launching meanwhile.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = tuple(self.fn(*inputs))
        self.captures += 1
        return _Entry(graph, inputs, outputs)


class StepGraphs:
    """Run training passes (forward, loss and ``backward()``) as CUDA graphs, one per ``key``.

    Why: a MotionDirector step runs a 1.4 B-parameter UNet3D wrapped in ~270 peft layers
    twice, forward and backward; on an H100 the GPU was busy for 0.22 s of a 0.52 s step, the
    rest it waited for Python and kernel launches. Replayed, a pass costs one launch.

    A pass is ``fn(**inputs) -> loss`` (a tensor, or a tuple of them: e.g. a loss and an input
    gradient from ``torch.autograd.grad``) that runs its backward itself. Gradients it leaves in
    parameters must accumulate into ``.grad`` tensors that already exist (:meth:`prepare_grads`),
    so every graph writes into the same buffers the optimiser reads; zero them with
    ``zero_grad(set_to_none=False)``. The first call of the first key runs eagerly on a side
    stream (lazy library set-up and allocations happen outside any graph); the second captures
    and replays; later calls copy the inputs into the graph's buffers and replay. All graphs
    share one memory pool, so passes that never run at the same time cost the memory of the
    largest; replayed outputs are therefore cloned out before another graph can overwrite them.
    A later key (a new input shape: the next novel-view size of an SDS run) is captured on its
    first call: its eager run would hold a whole pass's activations outside that pool (8 GiB on
    top of 13 GiB for a 4d.yaml SDS chunk). Only while cuDNN autotuning is on, which must not
    time kernels inside a capture, does every new key run eagerly first.
    Disabled (``enabled=False`` or off CUDA) it simply calls ``fn``.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and torch.cuda.is_available()
        self.captures = 0  # tests and benchmarks read it
        self._seen: set = set()
        self._graphs: dict = {}
        self._pool: torch.cuda._POOL_HANDLE | None = None  # the first capture's memory pool, shared by the later ones

    @staticmethod
    def prepare_grads(params: Sequence[Tensor]) -> None:
        """Give every parameter a zero ``.grad`` the graphs can accumulate into."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def clear(self) -> None:
        """Drop every graph (their pool goes with them): for when a tensor the passes read by
        reference, not as an input, is replaced."""
        self._seen.clear()
        self._graphs.clear()
        self._pool = None

    def __call__(self, key, fn: Callable[..., Out], **inputs: Tensor) -> Out:
        device = next(iter(inputs.values())).device
        if not self.enabled or device.type != "cuda":
            return fn(**inputs)
        entry = self._graphs.get(key)
        if entry is not None:
            graph, static, outputs = entry
            for name, x in inputs.items():
                static[name].copy_(x, non_blocking=True)
            graph.replay()
            return _cloned(outputs)
        warmed_up = bool(self._graphs) and not torch.backends.cudnn.benchmark
        if key not in self._seen and not warmed_up:
            self._seen.add(key)
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                outputs = fn(**inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            return outputs
        static = {name: x.detach().clone() for name, x in inputs.items()}
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # blocks cached by the eager passes cannot serve the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            outputs = fn(**static)
        if self._pool is None:
            self._pool = graph.pool()
        self.captures += 1
        self._graphs[key] = (graph, static, outputs)
        graph.replay()
        return _cloned(outputs)


def _cloned(outputs: Out) -> Out:
    if isinstance(outputs, Tensor):
        return outputs.clone()
    return tuple(x.clone() for x in outputs)
