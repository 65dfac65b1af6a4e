"""Winograd 3x3 convolutions for the CPU inference path: fewer multiplies, same outputs (~1e-5).

Why: at 8 ROIs the person model is ~460 GFLOPs of dense 3x3 convolution, and oneDNN already runs
those near this CPU's fp32 peak, so the only exact-arithmetic way to go faster is to do fewer
multiplies. Winograd F(m x m, 3 x 3) turns each m x m output tile into (m+2)^2 element-wise
products: 2.25x fewer multiplies for m=2, 4x for m=4. Here the products are one batched GEMM
(PyTorch/MKL) and the tile transforms are a small C kernel (``kernels/winograd.c``) compiled on
first use with the system C compiler, cached under ``$STREAMSEG_CACHE/kernels``, and called via
ctypes; it runs on PyTorch's own OpenMP thread pool (same libgomp), torch.get_num_threads() wide. The output transform
also applies the bias, an optional residual and an optional ReLU, which removes those passes.

Numerics (fp32 against a float64 conv, benchmarks/winograd_probe.py): F(2x2) errs less than
oneDNN's direct conv, F(4x4) with the points 0, +-1, 2, -1/2 about 2-3x more (1e-5 to 2e-5 on
unit-scale outputs); the whole B0 fast path stays within 1e-4 of upstream's masks.
Without a C compiler, on CUDA, for non-float32 input or when gradients are needed, the layer runs
``F.conv2d`` with its own weights, so results never depend on the kernel being present.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import subprocess
import tempfile
import threading
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .weights import cache_root

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "winograd.c"
#: interpolation points per output tile size m (m + 1 finite points plus infinity)
POINTS: dict[int, tuple[Fraction, ...]] = {
    2: (Fraction(0), Fraction(1), Fraction(-1)),
    4: (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-1, 2)),
}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_error: str | None = None
_local = threading.local()


# ----------------------------------------------------------------------------- transform matrices
def _polymul(a: list[Fraction], b: list[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def winograd_matrices(m: int, r: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B^T, G, A^T) of F(m, r) by Toom-Cook on ``POINTS[m]`` plus infinity, in float64.

    ``y = A^T [(G g) * (B^T d)]`` is the correlation of ``d`` (m + r - 1 values) with ``g``.
    """
    pts = POINTS[m]
    n = len(pts)
    if n + 1 != m + r - 1:
        raise ValueError(f"F({m},{r}) needs {m + r - 2} finite points, have {n}")
    at = [[p**i for p in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = []
    bt = []
    for j, pj in enumerate(pts):
        f = Fraction(1)
        poly = [Fraction(1)]
        for l, pl in enumerate(pts):
            if l != j:
                f *= pj - pl
                poly = _polymul(poly, [-pl, Fraction(1)])
        g.append([pj**k / f for k in range(r)])
        bt.append(poly + [Fraction(0)] * (n + 1 - len(poly)))
    g.append([Fraction(0)] * (r - 1) + [Fraction(1)])
    full = [Fraction(1)]
    for pl in pts:
        full = _polymul(full, [-pl, Fraction(1)])
    bt.append(full)

    def t(rows: list[list[Fraction]]) -> torch.Tensor:
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    return t(bt), t(g), t(at)


# ----------------------------------------------------------------------------- the C kernel
def _cpu_key() -> str:
    """Identifies the instruction set the kernel was built for (it is built with -march=native)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


def _c_matrix(t: torch.Tensor) -> str:
    """A C brace initialiser with exact float literals (the entries are dyadic or small ratios)."""
    return "{" + ",".join("{" + ",".join(f"{float(v)!r}f" for v in row) + "}" for row in t) + "}"


def kernel_defines() -> list[str]:
    """-D flags carrying B^T and A^T of every tile size as compile-time constants."""
    out = []
    for m in POINTS:
        bt, _, at = winograd_matrices(m)
        out += [f"-DWINO_BT_{m + 2}={_c_matrix(bt)}", f"-DWINO_AT_{m + 2}={_c_matrix(at)}"]
    return out


def build_kernel(cc: str | None = None) -> Path:
    """Compile ``kernels/winograd.c`` into the cache (once per source, compiler, flags and CPU)."""
    cc = cc or os.environ.get("CC", "cc")
    flags = [
        "-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", *kernel_defines()
    ]
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cc, *flags]).encode() + _cpu_key().encode()).hexdigest()
    out = cache_root() / "kernels" / f"winograd-{key[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        subprocess.run(
            [cc, *flags, "-o", tmp, str(SOURCE)], check=True, capture_output=True, text=True, timeout=120
        )
        os.replace(tmp, out)  # atomic: concurrent builders never see a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load_kernel() -> ctypes.CDLL | None:
    """The compiled transforms, or None (logged once) when no C compiler can build them."""
    global _lib, _lib_error
    with _lock:
        if _lib is not None or _lib_error is not None:
            return _lib
        try:
            lib = ctypes.CDLL(str(build_kernel()))
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            _lib_error = f"{type(exc).__name__}: {detail.strip().splitlines()[-1] if detail.strip() else exc}"
            log.warning(
                "Winograd kernel unavailable (%s); 3x3 convolutions use oneDNN instead", _lib_error
            )
            return None
        vp, lg = ctypes.c_void_p, ctypes.c_long
        for a in (4, 6):
            fin = getattr(lib, f"wino_input_{a}")
            fin.argtypes = [vp, vp, vp, lg, lg, lg, lg, lg, lg, ctypes.c_int]
            fin.restype = None
            fout = getattr(lib, f"wino_output_{a}")
            fout.argtypes = [vp, vp, vp, ctypes.c_int, vp, lg, lg, lg, lg, lg, lg, ctypes.c_int]
            fout.restype = None
        _lib = lib
        return lib


def kernel_available() -> bool:
    return load_kernel() is not None


#: bytes of transformed tiles (per side, input and product) handled per GEMM; bounds the workspace
CHUNK_BYTES = 64 << 20


def _run_tiles(fn: ctypes._CFuncPtr, p0: int, p1: int, *args: object) -> None:
    """Run a transform over tiles [p0, p1) on as many OpenMP threads as torch uses."""
    fn(*args, p0, p1, max(1, min(torch.get_num_threads(), p1 - p0)))


def _workspace(name: str, numel: int) -> torch.Tensor:
    """A per-thread grow-only float32 buffer: large temporaries are not re-faulted every call."""
    bufs = _local.__dict__.setdefault("bufs", {})
    t = bufs.get(name)
    if t is None or t.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: writable under no_grad too
            t = bufs[name] = torch.empty(numel, dtype=torch.float32)
    return t[:numel]


def _storage_users(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)  # noqa: SLF001


#: upper bound on the bytes kept by one thread's output pool (ROI counts vary, so shapes do too)
POOL_BYTES = 1 << 30


def _output_buffer(shape: tuple[int, ...], keep: int = 6) -> torch.Tensor:
    """A float32 tensor of ``shape`` from a per-thread pool of outputs nobody holds any more.

    Why: a fresh 25-50 MB output is page-faulted in on every call (glibc returns big blocks to
    the OS when they are freed), which cost about a third of a Winograd layer here. A pooled
    buffer is reused only when no tensor or view other than the pool's own refers to it. The
    least recently used shapes are dropped once the pool holds more than ``POOL_BYTES``.
    """
    if not hasattr(torch._C, "_storage_Use_Count"):  # noqa: SLF001 - private API: stay correct
        return torch.empty(shape, dtype=torch.float32)
    pools: OrderedDict[tuple[int, ...], list[torch.Tensor]] = _local.__dict__.setdefault(
        "outputs", OrderedDict()
    )
    pool = pools.setdefault(shape, [])
    pools.move_to_end(shape)
    for t in pool:
        if _storage_users(t) <= 2:  # the pool's tensor + the temporary storage object
            return t
    with torch.inference_mode(False):
        t = torch.empty(shape, dtype=torch.float32)
    if len(pool) < keep:
        pool.append(t)
        total = sum(b.numel() * 4 for bufs in pools.values() for b in bufs)
        while total > POOL_BYTES and len(pools) > 1:
            _, dropped = pools.popitem(last=False)
            total -= sum(b.numel() * 4 for b in dropped)
    return t


# ----------------------------------------------------------------------------- the layer
def winograd_eligible(conv: nn.Module) -> bool:
    """3x3, stride 1, zero padding 1, no dilation or groups: the convs Winograd replaces exactly."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


class WinogradConv2d(nn.Module):
    """Inference stand-in for a 3x3/s1/p1 ``nn.Conv2d``, optionally fused with residual + ReLU.

    ``forward(x, residual=None)`` returns ``relu?(conv(x) + residual)`` as a channels_last tensor.
    """

    def __init__(self, conv: nn.Conv2d, tile: int = 4, relu: bool = False):
        super().__init__()
        if not winograd_eligible(conv):
            raise ValueError(f"not a 3x3 stride-1 padding-1 conv: {conv}")
        if tile not in POINTS:
            raise ValueError(f"tile must be one of {sorted(POINTS)}, got {tile}")
        self.tile = tile
        self.relu = relu
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        w = conv.weight.detach()
        b = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("weight", w.clone())
        self.register_buffer("bias", b.clone().float().contiguous())
        _, g, _ = winograd_matrices(tile)
        a = tile + 2
        u = torch.einsum("ij,ocjk,lk->ilco", g, w.double(), g)  # [a, a, Cin, Cout]
        self.register_buffer("u", u.reshape(a * a, w.shape[1], w.shape[0]).float().contiguous())

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, tile={self.tile}, relu={self.relu}"

    def _fallback(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        y = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=1)
        if residual is not None:
            y = y + residual
        return torch.relu(y) if self.relu else y

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or (torch.is_grad_enabled() and x.requires_grad)
            or (lib := load_kernel()) is None
        ):
            return self._fallback(x, residual)
        n, c, h, w = x.shape
        a, m, co = self.tile + 2, self.tile, self.out_channels
        xn = x.permute(0, 2, 3, 1).contiguous()  # a no-op for channels_last input
        rn = residual.permute(0, 2, 3, 1).contiguous() if residual is not None else None
        tiles = n * (-(-h // m)) * (-(-w // m))
        step = max(1, min(tiles, CHUNK_BYTES // (a * a * max(c, co) * 4)))
        v_all = _workspace("v", a * a * step * c)
        m_all = _workspace("m", a * a * step * co)
        zeros = _workspace("zeros", c).zero_()
        y = _output_buffer((n, h, w, co))
        res_ptr = rn.data_ptr() if rn is not None else None
        for p0 in range(0, tiles, step):  # one chunk (a single GEMM) for 8 ROIs of 64x48 at 256 ch
            p1 = min(p0 + step, tiles)
            v = v_all[: a * a * (p1 - p0) * c].view(a * a, p1 - p0, c)
            mm = m_all[: a * a * (p1 - p0) * co].view(a * a, p1 - p0, co)
            _run_tiles(
                getattr(lib, f"wino_input_{a}"), p0, p1,
                xn.data_ptr(), v.data_ptr(), zeros.data_ptr(), n, h, w, c,
            )
            torch.bmm(v, self.u, out=mm)
            _run_tiles(
                getattr(lib, f"wino_output_{a}"), p0, p1,
                mm.data_ptr(), self.bias.data_ptr(), res_ptr, int(self.relu), y.data_ptr(), n, h, w, co,
            )
        return y.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory


# ----------------------------------------------------------------------------- model rewriting
class FusedResBlock(nn.Module):
    """A BN-folded ``ResBlock`` as two Winograd convs: relu(conv1 x), then relu(conv2 y + x)."""

    def __init__(self, conv1: WinogradConv2d, conv2: WinogradConv2d):
        super().__init__()
        conv1.relu, conv2.relu = True, True
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x), residual=x)


class GemmConvTranspose2x2(nn.Module):
    """Inference stand-in for ``ConvTranspose2d(k=2, s=2)``: one GEMM, then a pixel shuffle.

    Why: with kernel == stride every output pixel is one tap times one input pixel, so the layer
    is ``X[NHW, Cin] @ W[Cin, 4*Cout]`` followed by a rearrangement; oneDNN's generic deconvolution
    path took ~45 ms for the 256->128 one of the head at 8 ROIs. ``relu`` applies a following ReLU.
    """

    def __init__(self, deconv: nn.ConvTranspose2d, relu: bool = False):
        super().__init__()
        if not gemm_deconv_eligible(deconv):
            raise ValueError(f"not a 2x2 stride-2 transposed conv: {deconv}")
        self.relu = relu
        cin, cout = deconv.in_channels, deconv.out_channels
        self.out_channels = cout
        w = deconv.weight.detach()  # [Cin, Cout, 2, 2]
        b = deconv.bias.detach() if deconv.bias is not None else torch.zeros(cout)
        self.register_buffer("weight", w.clone())
        self.register_buffer("bias", b.clone())
        self.register_buffer("w2", w.permute(0, 2, 3, 1).reshape(cin, 4 * cout).contiguous())
        self.register_buffer("b4", b.repeat(4).contiguous())

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.out_channels}, relu={self.relu}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.w2.dtype or (torch.is_grad_enabled() and x.requires_grad):
            y = F.conv_transpose2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), stride=2)
            return torch.relu(y) if self.relu else y
        n, c, h, w = x.shape
        co = self.out_channels
        xn = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        taps = torch.addmm(self.b4, xn, self.w2)  # [NHW, (a, b, Cout)]
        if self.relu:
            taps.relu_()
        y = _output_buffer((n, 2 * h, 2 * w, co)) if x.device.type == "cpu" else None
        shuffled = taps.view(n, h, w, 2, 2, co).permute(0, 1, 3, 2, 4, 5)
        if y is None:
            y = shuffled.reshape(n, 2 * h, 2 * w, co)
        else:
            y.view(n, h, 2, w, 2, co).copy_(shuffled)
        return y.permute(0, 3, 1, 2)


def gemm_deconv_eligible(m: nn.Module) -> bool:
    return (
        type(m) is nn.ConvTranspose2d
        and m.kernel_size == (2, 2)
        and m.stride == (2, 2)
        and m.padding == (0, 0)
        and m.output_padding == (0, 0)
        and m.dilation == (1, 1)
        and m.groups == 1
    )


def _wants(conv: nn.Module, min_channels: int) -> bool:
    return (
        winograd_eligible(conv)
        and conv.in_channels >= min_channels
        and conv.out_channels >= min_channels
    )


def apply_winograd(model: nn.Module, tile: int = 4, min_channels: int = 64) -> int:
    """Replace (in place) eligible 3x3 convs of an eval, BN-folded model; returns how many.

    ``min_channels``: below it Winograd is not reliably faster than oneDNN's direct conv on this
    kind of CPU (``benchmarks/winograd_probe.py``: 96->32 at 320x320 came out slower in one run and
    faster in another; every layer with 64+ channels was faster in every run). A ReLU that directly follows a replaced conv in a
    Sequential, and the ReLU/residual of a folded ResBlock, move into the conv's output pass.
    """
    from .blocks import ResBlock
    from .fuse import replace_child

    count = 0
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if (
                isinstance(child, ResBlock)
                and isinstance(child.norm1, nn.Identity)
                and isinstance(child.norm2, nn.Identity)
                and _wants(child.conv1, min_channels)
                and _wants(child.conv2, min_channels)
            ):
                fused = FusedResBlock(
                    WinogradConv2d(child.conv1, tile), WinogradConv2d(child.conv2, tile)
                )
                replace_child(mod, child_name, fused)
                count += 2
            elif _wants(child, min_channels):
                replace_child(mod, child_name, WinogradConv2d(child, tile))
                count += 1
            elif gemm_deconv_eligible(child) and child.in_channels >= min_channels:
                replace_child(mod, child_name, GemmConvTranspose2x2(child))
    for seq in _chains(model):
        _fuse_following_relu(seq)
    return count


def _chains(model: nn.Module) -> list[nn.Sequential | nn.ModuleList]:
    """Containers whose items run one after another on one tensor: every Sequential, plus the
    hierarchical head's target/non-target ModuleList (its forward loops over it in order)."""
    from .head import HierarchicalHeadV2

    out: list[nn.Sequential | nn.ModuleList] = [m for m in model.modules() if isinstance(m, nn.Sequential)]
    out += [m.target_vs_nontarget_branch for m in model.modules() if isinstance(m, HierarchicalHeadV2)]
    return out


def _fuse_following_relu(seq: nn.Sequential | nn.ModuleList) -> None:
    """[fast conv, Identity*, ReLU] -> the conv applies the ReLU; the ReLU becomes Identity."""
    items = list(seq)
    for i, mod in enumerate(items):
        if not isinstance(mod, (WinogradConv2d, GemmConvTranspose2x2)) or mod.relu:
            continue
        j = i + 1
        while j < len(items) and isinstance(items[j], nn.Identity):
            j += 1
        if j < len(items) and type(items[j]) is nn.ReLU:
            mod.relu = True
            seq[j] = nn.Identity()
