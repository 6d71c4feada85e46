"""Per-user ONNX export by patching a template's initializers, never by re-tracing.

The serving graph (``model.onnx``, see :func:`metarec.artifact.export_onnx`) takes the user
index and the adapted weights as inputs. :class:`UserTemplate` turns it once, by graph
surgery, into a self-contained per-user model ``ctx (B, F) -> scores (B, N)``: the user index
and the adapted weights become initializers (leading axis 1, expanded to ``B`` inside the
graph). Exporting a user is then a byte copy of the serialized template with those
initializers' ``raw_data`` overwritten in place: no tracing, no protobuf re-serialization.

:func:`export_retraced` is the reference (``torch.onnx.export`` of a module with the user's
weights baked in), which the patched file must equal and which the benchmark races.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import Tensor, nn

from metarec.artifact import ONNX_OPSET
from metarec.model import RecModel, score_matrix

USER_INPUT = "users"
CTX_INPUT = "ctx"
FAST_PREFIX = "fast."
PATCH_PREFIX = "user."  # initializers patched per user: user.index, user.fast.<name>


class UserTemplate:
    """A serving graph rewritten as a per-user model, serialized once, patched per user.

    ``shapes`` maps each adapted parameter name to its shape without the user axis.
    """

    def __init__(self, serving: onnx.ModelProto, metadata: Mapping[str, str] | None = None) -> None:
        g = serving.graph
        inputs = {i.name: i for i in g.input}
        if USER_INPUT not in inputs or CTX_INPUT not in inputs:
            raise ValueError(f"template: the serving graph needs inputs {USER_INPUT!r} and {CTX_INPUT!r}, "
                             f"has {sorted(inputs)}")
        fast = [i for i in g.input if i.name.startswith(FAST_PREFIX)]
        self.shapes: dict[str, tuple[int, ...]] = {
            i.name.removeprefix(FAST_PREFIX): tuple(d.dim_value for d in i.type.tensor_type.shape.dim[1:])
            for i in fast
        }
        rng = np.random.default_rng(20240611)
        # Distinct random sentinels locate each patched tensor's bytes in the serialized template.
        sentinels: dict[str, np.ndarray] = {f"{PATCH_PREFIX}index": rng.integers(1 << 40, 1 << 62, (1,))}
        for name, shape in self.shapes.items():
            sentinels[f"{PATCH_PREFIX}fast.{name}"] = rng.standard_normal((1, *shape)).astype(np.float32)

        model = onnx.ModelProto()
        model.CopyFrom(serving)
        g = model.graph
        keep = [i for i in g.input if i.name == CTX_INPUT]
        del g.input[:]
        g.input.extend(keep)
        # batch = Shape(ctx)[0:1]; each former input = Expand(its per-user initializer, batch ++ shape)
        pre = [
            helper.make_node("Shape", [CTX_INPUT], ["user.ctx_shape"]),
            helper.make_node("Slice", ["user.ctx_shape", "user.c0", "user.c1"], ["user.batch"]),
            helper.make_node("Expand", [f"{PATCH_PREFIX}index", "user.batch"], [USER_INPUT]),
        ]
        consts = [numpy_helper.from_array(np.array([0], np.int64), "user.c0"),
                  numpy_helper.from_array(np.array([1], np.int64), "user.c1")]
        for name, shape in self.shapes.items():
            rest = f"user.shape.{name}"
            consts.append(numpy_helper.from_array(np.array(shape, np.int64), rest))
            pre += [helper.make_node("Concat", ["user.batch", rest], [f"user.target.{name}"], axis=0),
                    helper.make_node("Expand", [f"{PATCH_PREFIX}fast.{name}", f"user.target.{name}"],
                                     [f"{FAST_PREFIX}{name}"])]
        g.initializer.extend(consts + [numpy_helper.from_array(v, k) for k, v in sentinels.items()])
        nodes = list(g.node)
        del g.node[:]
        g.node.extend(pre + nodes)
        for key, value in (metadata or {}).items():
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
        model.metadata_props.append(onnx.StringStringEntryProto(key="user_id", value=" " * 128))
        onnx.checker.check_model(model)

        self.bytes = model.SerializeToString()
        self.slots: dict[str, tuple[int, int]] = {}
        for k, v in sentinels.items():
            raw = v.tobytes()
            at = self.bytes.find(raw)
            if at < 0 or self.bytes.find(raw, at + 1) >= 0:
                raise ValueError(f"template: could not locate initializer {k!r} uniquely in the serialized model")
            self.slots[k] = (at, len(raw))
        pad = (" " * 128).encode()
        at = self.bytes.rfind(pad)
        self.slots["user_id"] = (at, len(pad))

    @classmethod
    def from_file(cls, path: Path, metadata: Mapping[str, str] | None = None) -> UserTemplate:
        return cls(onnx.load(str(path)), metadata)

    def patch(self, user_index: int, fast: Mapping[str, np.ndarray], user_id: str = "") -> bytes:
        """The per-user model's bytes: ``fast[name]`` has the parameter's shape (no user axis)."""
        buf = bytearray(self.bytes)

        def put(slot: str, raw: bytes) -> None:
            at, n = self.slots[slot]
            if len(raw) != n:
                raise ValueError(f"patch: {slot} needs {n} bytes, got {len(raw)}")
            buf[at:at + n] = raw

        put(f"{PATCH_PREFIX}index", np.array([user_index], np.int64).tobytes())
        for name, shape in self.shapes.items():
            arr = np.ascontiguousarray(fast[name], dtype=np.float32)
            if arr.shape != shape:
                raise ValueError(f"patch: {name} must have shape {shape}, got {arr.shape}")
            put(f"{PATCH_PREFIX}fast.{name}", arr.tobytes())
        uid = user_id.encode()[:128]
        put("user_id", uid + b" " * (128 - len(uid)))  # fixed width, stripped by the reader
        return bytes(buf)

    def write(self, path: Path, user_index: int, fast: Mapping[str, np.ndarray], user_id: str = "") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.patch(user_index, fast, user_id))
        return path


class UserGraph(nn.Module):
    """The per-user model as a torch module (the re-tracing reference): ``ctx (B, F) -> (B, N)``."""

    def __init__(self, model: RecModel, user_index: int, fast: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.model = model
        self.names = list(fast)
        for i, n in enumerate(self.names):
            self.register_buffer(f"fast_{i}", torch.as_tensor(fast[n]).detach().clone().unsqueeze(0))
        self.register_buffer("user", torch.tensor([user_index], dtype=torch.long))
        self.register_buffer("items", torch.arange(1, model.cfg.n_items, dtype=torch.long))

    def forward(self, ctx: Tensor) -> Tensor:
        b = ctx.shape[0]
        fast = {}
        for i, n in enumerate(self.names):
            w = self.get_buffer(f"fast_{i}")
            fast[n] = w.expand(b, *w.shape[1:])
        return score_matrix(self.model, fast, self.get_buffer("user").expand(b), ctx, self.get_buffer("items"))


def export_retraced(model: RecModel, user_index: int, fast: Mapping[str, Tensor], path: Path | io.BytesIO) -> None:
    """Per-user export the slow way: trace :class:`UserGraph` with ``torch.onnx.export``."""
    graph = UserGraph(model, user_index, fast).eval()
    ctx = torch.zeros(2, model.cfg.max_context, dtype=torch.long)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (ctx,), path if isinstance(path, io.BytesIO) else str(path),  # type: ignore[arg-type]
                          dynamo=False,
                          opset_version=ONNX_OPSET, input_names=[CTX_INPUT], output_names=["scores"],
                          dynamic_axes={CTX_INPUT: {0: "batch"}, "scores": {0: "batch"}})


def user_fast(model: RecModel, buffer: Sequence, user_id: str, vocab: object) -> dict[str, np.ndarray]:
    """One user's adapted weights from a buffer of :class:`~metarec.state.Buffered` events."""
    from metarec.adapt import adapt
    from metarec.features import support_from_buffers

    if not buffer:
        return {k: v.detach().numpy().copy() for k, v in model.fast_init().items()}
    sup = support_from_buffers([user_id], [list(buffer)], vocab, model.cfg)  # type: ignore[arg-type]
    with torch.no_grad():
        fast = adapt(model, sup, model.cfg.inner_steps, model.inner_lr_map())
    return {k: v[0].numpy().copy() for k, v in fast.items()}

