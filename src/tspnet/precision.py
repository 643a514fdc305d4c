"""The network's numeric precision (params `base.precision`): fp32, tf32 or bf16.

`bf16` runs the matrix products of the network in bfloat16 through autocast,
on CUDA and on the CPU alike: forward and backward in training, the
forwards of saliency point updating, and inference. A bfloat16 product keeps
float32's exponent but 8 bits of mantissa (2-3 significant digits) in its
operands and result; the kernels (oneDNN on the CPU, cuBLAS on CUDA)
accumulate each dot product in float32. The activations between the
products (ReLU, dropout) stay in the products' bfloat16.

What stays in float32 or float64, and why:
- weights, gradients as the optimizer sees them, Adam's moments (float32):
  autocast multiplies a bfloat16 copy of each weight, made once per forward;
  the master copy must stay float32 because an update of lr = 5e-5 times a
  gradient is far below the 2^-8 relative step of a bfloat16 weight and
  would be lost;
- the RoI features and their contrast pooling (float32, from float32
  features): the pooled network input is rounded to bfloat16 once, when it
  enters the cache (`cache_dtype`) -- the same rounding autocast applies when
  the first layer reads a float32 input, so the cache holds the same numbers
  in half the memory;
- the losses (float32): the heads are cast up before the sigmoid, the
  log-softmax and the per-video means, whose sums run over thousands of
  proposals;
- labels, saliency point times, post-processing and evaluation (float64);
- the built-in base locator (float32): a small network, whose `base`
  metrics are the reference TSPNet's gain is measured against, so they do
  not move with this switch. A locator network that should follow it (LACP's)
  wraps its forwards in `autocast` as TSPNet's do.

bf16 needs hardware that multiplies bfloat16 natively: a CUDA device that
supports it, or a CPU with AVX512_BF16 or AMX-BF16 (x86) or BF16 (Arm).
Elsewhere torch would emulate it, slower than float32, so the request is
refused with one line naming `base.precision` instead of running in another
precision than the params (and so the experiment table) say. `tf32` is a
CUDA matmul mode; on the CPU it computes in float32, with a warning.
"""

from __future__ import annotations

import logging
from typing import Mapping

import torch

from tspnet.files import ParamsError

PRECISIONS = ("fp32", "tf32", "bf16")
# torch.cpu.get_capabilities() keys of native bfloat16 arithmetic: x86 AVX-512 and AMX, Arm NEON and SVE.
CPU_BF16_CAPABILITIES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")

log = logging.getLogger(__name__)


def cpu_capabilities() -> Mapping[str, object]:
    """What torch's cpuinfo detected on this CPU (a function, so that a test can fake another CPU)."""
    return torch.cpu.get_capabilities()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        capabilities = cpu_capabilities()
        return any(bool(capabilities.get(name, False)) for name in CPU_BF16_CAPABILITIES)
    return False


def configure(precision: str, device: torch.device) -> bool:
    """Check `base.precision` for `device` and set torch's matmul switches; True when bf16 autocast is on."""
    if precision not in PRECISIONS:
        raise ParamsError(f"params.yaml: base.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and not native_bf16(device):
        hardware = ("a CUDA device with bfloat16 support" if device.type == "cuda" else
                    "a CPU with AVX512_BF16, AMX-BF16 or Arm BF16")
        raise ParamsError(f"params.yaml: base.precision is bf16, which needs {hardware}; {device} has none, "
                          f"and emulated bfloat16 is slower than float32: set base.precision: fp32")
    if precision == "tf32" and device.type != "cuda":
        log.warning("base.precision tf32 applies to CUDA only; %s computes in float32", device)
    # TF32 matmuls trade about 3 decimal digits for speed on Ampere and later GPUs.
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    if precision == "bf16":
        log.info("base.precision bf16: the network's matrix products run in bfloat16 on %s", device)
    return precision == "bf16"


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast for the network's forwards (and so their backwards) on `device`; a no-op unless `bf16`."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def cache_dtype(bf16: bool) -> torch.dtype:
    """The dtype of a cache of network inputs: what the first matrix product reads them as."""
    return torch.bfloat16 if bf16 else torch.float32
