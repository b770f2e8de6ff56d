"""Gram matrices, and named intermediate activations of any ``nn.Module``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["gram_matrix", "FeatureExtractor"]


def gram_matrix(features: Tensor, normalize: bool = True, center: bool = False) -> Tensor:
    """Gram matrix of feature maps: ``(B, K, H, W)`` -> ``(B, K, K)``.

    ``G[b, i, j] = sum_p F[b, i, p] F[b, j, p]``, divided by ``H * W`` when ``normalize``
    (so images of different sizes give comparable matrices). ``center=True`` subtracts each
    map's spatial mean first (a covariance).

    >>> f = torch.ones(1, 2, 4, 4); f[0, 1] = 2
    >>> gram_matrix(f)[0].tolist()
    [[1.0, 2.0], [2.0, 4.0]]
    """
    if features.dim() != 4:
        raise ValueError(f"features must have shape (B, K, H, W), got {tuple(features.shape)}")
    B, K, H, W = features.shape
    f = features.reshape(B, K, H * W)
    if center:
        f = f - f.mean(dim=2, keepdim=True)
    g = torch.bmm(f, f.transpose(1, 2))
    return g / (H * W) if normalize else g


class _Stop(Exception):
    """Raised by a hook once every requested activation is collected."""


def _describe(names: Sequence[str], limit: int = 80) -> str:
    names = list(names)
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class FeatureExtractor(nn.Module):
    """Named intermediate activations of any ``nn.Module`` (torchvision's or your own).

    Args:
        model: the network. Its parameters are not modified.
        layers: names of submodules (as in ``model.named_modules()``, e.g. ``"features.3"``,
            ``"layer2.1.relu"``) or, when the model can be traced by ``torch.fx``, any node
            name of ``torchvision.models.feature_extraction.get_graph_node_names``.
        method: ``"auto"`` (``torch.fx`` via torchvision's ``create_feature_extractor``,
            falling back to forward hooks where tracing fails), ``"fx"`` or ``"hooks"``.

    ``forward(x)`` returns ``{name: activation}`` in the order of ``layers``. The traced
    graph drops everything after the last requested node; the hook path stops the forward
    pass (by an exception caught here) once every requested module has produced output.
    With hooks, a module called several times reports its first output.

    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> ex = FeatureExtractor(m, ["1", "2"])
    >>> {k: tuple(v.shape) for k, v in ex(torch.rand(1, 1, 8, 8)).items()}
    {'1': (1, 4, 6, 6), '2': (1, 2, 4, 4)}
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], method: str = "auto") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("layers must name at least one layer")
        if len(set(layers)) != len(layers):
            raise ValueError(f"duplicate layer names in {layers}")
        if method not in ("auto", "fx", "hooks"):
            raise ValueError(f"method must be 'auto', 'fx' or 'hooks', got {method!r}")
        self.layers = layers
        self.model = model
        self.method = "hooks"
        self.traced: nn.Module | None = None
        modules = dict(model.named_modules())
        fx_error: Exception | None = None
        if method in ("auto", "fx"):
            try:
                self.traced = self._trace(model, layers)
                self.method = "fx"
            except _UnknownNode as e:
                if method == "fx" or not all(name in modules for name in layers):
                    raise ValueError(
                        f"unknown layer name(s) {e.unknown}; valid names: "
                        f"{_describe(e.valid)}") from None
                fx_error = e
            except Exception as e:  # tracing failed (data-dependent control flow, ...)
                if method == "fx":
                    raise RuntimeError(f"torch.fx cannot trace {type(model).__name__}: {e}; "
                                       "use method='hooks'") from e
                fx_error = e
        if self.traced is None:
            unknown = [name for name in layers if name not in modules or name == ""]
            if unknown:
                valid = [n for n in modules if n]
                hint = f" (torch.fx tracing failed: {fx_error})" if fx_error else ""
                raise ValueError(f"unknown layer name(s) {unknown}; valid module names: "
                                 f"{_describe(valid)}{hint}")

    @staticmethod
    def _trace(model: nn.Module, layers: list[str]) -> nn.Module:
        from torchvision.models.feature_extraction import (
            create_feature_extractor,
            get_graph_node_names,
        )

        was_training = model.training
        train_nodes, eval_nodes = get_graph_node_names(model)
        model.train(was_training)
        valid = eval_nodes if not was_training else train_nodes
        unknown = [name for name in layers if name not in valid]
        if unknown:
            raise _UnknownNode(unknown, valid)
        gm = create_feature_extractor(model, return_nodes={n: n for n in layers})
        if _has_inplace(gm):
            _clone_outputs(gm)
        return gm

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.traced is not None:
            out = self.traced(x)
            return {name: out[name] for name in self.layers}
        return self._run_hooks(x)

    def _run_hooks(self, x: Tensor) -> dict[str, Tensor]:
        modules = dict(self.model.named_modules())
        found: dict[str, Tensor] = {}
        wanted = set(self.layers)

        inplace = any(getattr(m, "inplace", False) is True for m in modules.values())

        def make_hook(name: str):
            def hook(module: nn.Module, inputs: object, output: Tensor) -> None:
                if name not in found:
                    # a later in-place op (nn.ReLU(inplace=True)) would overwrite it
                    found[name] = output.clone() if inplace and torch.is_tensor(output) \
                        else output
                if len(found) == len(wanted):
                    raise _Stop

            return hook

        handles = [modules[name].register_forward_hook(make_hook(name)) for name in wanted]
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [name for name in self.layers if name not in found]
        if missing:
            raise RuntimeError(f"layer(s) {missing} were not called during the forward pass "
                               f"of {type(self.model).__name__}")
        return {name: found[name] for name in self.layers}


def _has_inplace(gm: nn.Module) -> bool:
    """Whether a traced graph holds in-place operations (``relu_``, ``inplace=True``)."""
    if any(getattr(m, "inplace", False) is True for m in gm.modules()):
        return True
    for node in gm.graph.nodes:  # type: ignore[union-attr]
        if node.kwargs.get("inplace") is True:
            return True
        name = getattr(node.target, "__name__", str(node.target))
        if node.op in ("call_function", "call_method") and name.endswith("_") \
                and not name.endswith("__"):
            return True
    return False


def _clone_outputs(gm: nn.Module) -> None:
    """Insert ``torch.clone`` right after each returned node, so that a later in-place op
    does not overwrite an activation handed to the caller."""
    graph = gm.graph  # type: ignore[union-attr]
    out = next(n for n in graph.nodes if n.op == "output")
    ret = out.args[0]
    new = {}
    for key, node in ret.items():
        with graph.inserting_after(node):
            new[key] = graph.call_function(torch.clone, (node,))
    out.args = (new,)
    gm.recompile()  # type: ignore[operator]


class _UnknownNode(Exception):
    def __init__(self, unknown: list[str], valid: list[str]) -> None:
        super().__init__(f"unknown nodes {unknown}")
        self.unknown = unknown
        self.valid = valid
