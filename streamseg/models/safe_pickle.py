"""A restricted unpickler for checkpoint files that pickle foreign classes.

Upstream's people-seg UNet files pickle its config dataclasses (module ``src.human_edge_detection...``),
so ``torch.load(weights_only=True)`` rejects them and ``weights_only=False`` would need upstream's
code and allow arbitrary code execution. This unpickler resolves only an allowlist of tensor-rebuild
and container globals; classes from unknown third-party modules become inert stubs (they keep their
state as attributes, never run code); anything from the standard library or torch outside the
allowlist (os.system, builtins.eval, subprocess, ...) is refused.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

_ALLOWED = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("builtins", "object"), ("builtins", "tuple"), ("builtins", "list"), ("builtins", "dict"),
    ("builtins", "bytearray"), ("builtins", "int"), ("builtins", "float"), ("builtins", "str"),
    ("copyreg", "_reconstructor"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
    ("torch", "Size"), ("torch", "device"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch.nn.parameter", "Parameter"),
    ("torch.serialization", "_get_layout"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
}
_DTYPES = {"float16", "float32", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
           "complex64", "complex128", "float", "half", "double", "long", "int"}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for a global that could run code; it was not loaded."""


class Stub:
    """Stand-in for a foreign class: accepts any construction and keeps state, does nothing else."""

    _stub_origin = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._stub_args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._stub_state = state

    def __repr__(self) -> str:
        return f"<stub {self._stub_origin}>"


_STUBS: dict[str, type] = {}


def _stub_for(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _STUBS:
        _STUBS[key] = type(name, (Stub,), {"_stub_origin": key, "__module__": "streamseg.models.safe_pickle.stubs"})
    return _STUBS[key]


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


class Unpickler(pickle.Unpickler):
    """Allowlist unpickler; see the module docstring."""

    stubbed: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and (name.endswith("Storage") or name in _DTYPES):
            return super().find_class(module, name)
        top = module.split(".")[0]
        if _is_stdlib(module) or top in {"torch", "numpy", "pickle", "dill", "cloudpickle", "streamseg"}:
            raise UnsafePickleError(f"refusing to load global {module}.{name} (not a tensor or plain data type)")
        Unpickler.stubbed.append(f"{module}.{name}")
        return _stub_for(module, name)


def load(file: Any, **kwargs: Any) -> Any:
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    import io

    return Unpickler(io.BytesIO(data), **kwargs).load()


# torch.load(pickle_module=...) needs these names on the module object.
Unpickler.__module__ = __name__
dump = pickle.dump
dumps = pickle.dumps
HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL
DEFAULT_PROTOCOL = pickle.DEFAULT_PROTOCOL
UnpicklingError = pickle.UnpicklingError
