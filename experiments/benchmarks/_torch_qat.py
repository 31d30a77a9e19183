"""The PyTorch side of the throughput benchmarks: a convolution with per-output-channel
symmetric fake-quantized weights (straight-through estimator), as nasq's QAT does."""

from __future__ import annotations


def quant_conv_class(bits: int):
  """A ``torch.nn.Conv2d`` subclass whose forward pass quantizes its weights to
  ``bits`` (no quantization at 32). Imports torch on call."""
  import torch
  import torch.nn.functional as F

  class QConv(torch.nn.Conv2d):
    def forward(self, x):
      w = self.weight
      if bits < 32:
        qmax = 2 ** (bits - 1) - 1
        scale = w.detach().abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12) / qmax
        w = w + (torch.clamp(torch.round(w / scale), -qmax, qmax) * scale - w).detach()
      return F.conv2d(x, w, None, self.stride, self.padding, 1, self.groups)

  return QConv
