"""The simulation wrapper ``sim_top``: a device under test, the host RAM and the clock (DESIGN.md §8).

The device is any Verilog module with ``clk`` and ``rst`` inputs, an AXI4-Lite slave port
``s_axil_*`` (the host's CSR access), an optional AXI4 master port ``m_axi_*`` (64-bit data, its DMA
into host memory) and an optional ``irq`` output. :func:`sim_top` reads its port list from the Verilog
text and writes a wrapper module that

- generates the clock inside (``clock="internal"``: ``always #5 clk = ~clk``, which needs Verilator's
  ``--timing``) or takes it as a top-level input that cocotb drives (``clock="cocotb"``);
- brings ``rst``, every ``s_axil_*`` signal and ``irq`` out as top-level ports for the host link's
  server to drive and watch;
- connects ``m_axi_*`` to a :file:`hdl/host_ram.v` instance ``ram`` (signals the device lacks get their
  AXI defaults: ``*size`` 3, ``*burst`` INCR, ``wstrb`` all ones, IDs 0, valids low);
- ties any other device input to zero.
"""

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HOST_RAM", "CLOCK_NS", "ENV_FD", "ENV_CONFIG", "Port", "module_ports", "sim_top", "TOP", "CLOCKS"]

#: The hand-written host RAM model.
HOST_RAM = Path(__file__).resolve().parent / "hdl" / "host_ram.v"
#: Name of the generated wrapper module.
TOP = "sim_top"
#: Clock period of the wrapper (the design has no notion of time, only of edges).
CLOCK_NS = 10
CLOCKS = ("internal", "cocotb")
#: Environment variable telling the server (in the simulator) its inherited socket's descriptor.
ENV_FD = "FP8TRAIN_LINK_FD"
#: Environment variable holding the session's configuration for the server (JSON).
ENV_CONFIG = "FP8TRAIN_LINK_CONFIG"

# host_ram's slave inputs that a device might lack, with the value they get then.
_RAM_INPUT_DEFAULTS = {
    "awid": "0", "awaddr": "0", "awlen": "8'd0", "awsize": "3'd3", "awburst": "2'b01", "awvalid": "1'b0",
    "wdata": "64'd0", "wstrb": "8'hff", "wlast": "1'b1", "wvalid": "1'b0", "bready": "1'b1",
    "arid": "0", "araddr": "0", "arlen": "8'd0", "arsize": "3'd3", "arburst": "2'b01", "arvalid": "1'b0",
    "rready": "1'b1",
}
_RAM_OUTPUTS = ("awready", "wready", "bid", "bresp", "bvalid", "arready", "rid", "rdata", "rresp",
                "rlast", "rvalid")


@dataclass(frozen=True)
class Port:
    name: str
    direction: str          # "input" | "output" | "inout"
    width: int

    @property
    def range(self) -> str:
        return f"[{self.width - 1}:0] " if self.width > 1 else ""


_MODULE = r"\bmodule\s+{name}\b(?P<body>.*?)\bendmodule\b"
_DECL = re.compile(r"\b(?P<dir>input|output|inout)\b\s*(?:wire|reg|logic)?\s*(?:signed\s*)?"
                   r"(?:\[\s*(?P<msb>\d+)\s*:\s*(?P<lsb>\d+)\s*\])?\s*(?P<names>[\\$\w]+(?:\s*,\s*"
                   r"(?!\s*(?:input|output|inout)\b)[\\$\w]+)*)")


def module_ports(verilog: str, module: str) -> dict[str, Port]:
    """Ports of ``module`` in ``verilog``, from its ``input``/``output`` declarations (the non-ANSI
    style Amaranth writes, or ANSI headers); vector ranges must be numeric."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/|\(\*.*?\*\)", " ", verilog, flags=re.S)
    found = re.search(_MODULE.format(name=re.escape(module)), text, flags=re.S)
    if found is None:
        raise ValueError(f"no module {module!r} in the Verilog source")
    ports = {}
    for decl in _DECL.finditer(found["body"]):
        width = 1 if decl["msb"] is None else abs(int(decl["msb"]) - int(decl["lsb"])) + 1
        for name in re.split(r"\s*,\s*", decl["names"].strip()):
            ports[name] = Port(name, decl["dir"], width)
    return ports


def sim_top(verilog: str, module: str, *, clock: str = "internal", ram_words: int = 1 << 17,
            read_latency: int = 0, write_latency: int = 0) -> str:
    """Verilog text of the wrapper ``sim_top`` around ``module`` (defined in ``verilog``).

    Parameters
    ----------
    clock : "internal" | "cocotb"
        Where the clock comes from (see the module docstring).
    ram_words : int
        Host RAM size in 64-bit words (1 MiB by default).
    read_latency, write_latency : int
        Reset values of the RAM's run-time latency registers.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(map(repr, CLOCKS))}, not {clock!r}")
    if not isinstance(ram_words, int) or ram_words < 1:
        raise ValueError(f"ram_words must be a positive integer, not {ram_words!r}")
    if module in (TOP, "host_ram"):
        raise ValueError(f"the device module may not be called {module!r}")
    ports = module_ports(verilog, module)
    for name, direction in (("clk", "input"), ("rst", "input")):
        if name not in ports or ports[name].direction != direction:
            raise ValueError(f"module {module!r} needs a 1-bit {direction} {name!r}")
    axil = [p for p in ports.values() if p.name.startswith("s_axil_")]
    if not axil:
        raise ValueError(f"module {module!r} has no AXI4-Lite slave port (s_axil_*)")
    axi = {p.name[len("m_axi_"):]: p for p in ports.values() if p.name.startswith("m_axi_")}
    if axi and axi.get("wdata", axi.get("rdata")).width != 64:
        raise ValueError(f"module {module!r}: m_axi data must be 64 bits wide")
    addr_width = max((axi[n].width for n in ("awaddr", "araddr") if n in axi), default=32)
    id_width = max((axi[n].width for n in ("awid", "arid", "bid", "rid") if n in axi), default=1)

    head = ["    input wire clk"] if clock == "cocotb" else []
    head += ["    input wire rst"]
    head += [f"    {p.direction} wire {p.range}{p.name}" for p in axil]
    has_irq = "irq" in ports
    head += ["    output wire irq"]
    lines = [f"// Generated by fp8train.sim.driver.top for the device {module!r}: do not edit.",
             f"module {TOP} (", ",\n".join(head), ");"]
    if clock == "internal":
        lines += ["    reg clk = 1'b0;", f"    always #{CLOCK_NS / 2:g} clk = ~clk;"]
    if not has_irq:
        lines += ["    assign irq = 1'b0;"]
    for name, p in axi.items():
        lines.append(f"    wire {p.range}m_axi_{name};")
    conns = [f"        .{p.name}({p.name})" for p in axil]
    conns += [f"        .m_axi_{name}(m_axi_{name})" for name in axi]
    conns += ["        .clk(clk)", "        .rst(rst)"] + (["        .irq(irq)"] if has_irq else [])
    for p in ports.values():
        if p.name in ("clk", "rst", "irq") or p.name.startswith(("s_axil_", "m_axi_")):
            continue
        if p.direction == "input":
            conns.append(f"        .{p.name}({p.width}'d0)")
    lines += [f"    {module} dut (", ",\n".join(conns), "    );"]
    ram = ["        .clk(clk)", "        .rst(rst)"]
    for name, default in _RAM_INPUT_DEFAULTS.items():
        ram.append(f"        .s_axi_{name}({f'm_axi_{name}' if name in axi else default})")
    for name in _RAM_OUTPUTS:
        ram.append(f"        .s_axi_{name}({f'm_axi_{name}' if name in axi else ''})")
    lines += [f"    host_ram #(.ADDR_WIDTH({addr_width}), .ID_WIDTH({id_width}), .WORDS({ram_words}),",
              f"               .READ_LATENCY({read_latency}), .WRITE_LATENCY({write_latency})) ram (",
              ",\n".join(ram), "    );", "endmodule", ""]
    return "\n".join(lines)
