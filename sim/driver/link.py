"""The host link: what the Device API needs from a backend (DESIGN.md §5).

Four operations (read/write a 32-bit register, read/write host memory) and a wait for the interrupt
line. The ``golden`` backend (:class:`~fp8train.sim.golden.device.GoldenDevice`) has the same methods;
the ``rtl`` backend's :class:`~fp8train.sim.driver.rtl.RtlLink` and the future ``serial`` one speak the
protocol of :mod:`fp8train.sim.driver.wire` to the device side.
"""

import abc

__all__ = ["HostLink", "LinkError", "BusError", "SimulatorCrashed", "LinkTimeout"]


class LinkError(RuntimeError):
    """The link failed: the device side refused a request or is gone. ``log_tail`` holds the end of
    the simulator's (or board's) log when there is one."""

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        super().__init__(message + (f"\n--- end of the simulator log ---\n{log_tail}" if log_tail else ""))


class BusError(LinkError):
    """A register access ended with an AXI error response (``resp``: 2 SLVERR, 3 DECERR)."""

    def __init__(self, message: str, resp: int):
        self.resp = resp
        super().__init__(message)


class SimulatorCrashed(LinkError):
    """The simulator exited (or never got ready); ``returncode`` is its exit status."""

    def __init__(self, message: str, returncode: int | None, log_tail: str = ""):
        self.returncode = returncode
        super().__init__(message, log_tail)


class LinkTimeout(LinkError):
    """A request got no answer before its wall-clock deadline; the simulator was killed."""


class HostLink(abc.ABC):
    """A connection to one device. Use as a context manager, or call :meth:`close`.

    Addresses are byte addresses: registers in the AXI4-Lite space (32-bit, aligned), memory in the
    device's host-memory space as its DMA sees it.
    """

    @abc.abstractmethod
    def read_csr(self, addr: int) -> int:
        """The 32-bit register at ``addr``; :class:`BusError` on an error response."""

    @abc.abstractmethod
    def write_csr(self, addr: int, value: int) -> None:
        """Write the 32-bit register at ``addr`` (all byte lanes); :class:`BusError` on an error
        response."""

    @abc.abstractmethod
    def read_mem(self, addr: int, nbytes: int) -> bytes:
        """``nbytes`` of host memory from ``addr``."""

    @abc.abstractmethod
    def write_mem(self, addr: int, data: bytes) -> None:
        """Store ``data`` into host memory at ``addr``."""

    @abc.abstractmethod
    def wait_irq(self, timeout_cycles: int) -> bool:
        """Let the device run until ``irq`` is high (True at once if it already is), or for
        ``timeout_cycles`` clock cycles (False)."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the session; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
