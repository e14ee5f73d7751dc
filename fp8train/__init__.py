"""fp8train: an open FP8 training accelerator (Amaranth HDL) and its bit-exact golden model."""

from .device import Device, DeviceError

__all__ = ["Device", "DeviceError"]
