"""Device API backends and the host link they share (DESIGN.md §5).

- :mod:`.link`: the :class:`HostLink` interface and its exceptions;
- :mod:`.wire`: the host protocol's frames (shared by the ``rtl`` and ``serial`` backends);
- :mod:`.rtl`: :class:`RtlLink`, a design running in Verilator or Icarus behind that protocol;
- :mod:`.top` and :file:`hdl/host_ram.v`: the simulation wrapper and its AXI4 host RAM;
- :mod:`.server`: the cocotb module serving the protocol inside the simulator.
"""

from .link import BusError, HostLink, LinkError, LinkTimeout, SimulatorCrashed

__all__ = ["HostLink", "LinkError", "BusError", "SimulatorCrashed", "LinkTimeout", "RtlLink"]


def __getattr__(name):
    if name == "RtlLink":          # keeps `import fp8train.sim.driver` free of cocotb_tools
        from .rtl import RtlLink
        return RtlLink
    raise AttributeError(name)
