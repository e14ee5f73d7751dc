# fp8train: every target runs inside .venv, which is (re)built from pyproject.toml when that changes.
# Generated files go to build/ only.

VENV   := .venv
STAMP  := $(VENV)/.stamp
PYTEST := $(VENV)/bin/python -m pytest -n 2
CLI    := $(VENV)/bin/fp8train

.PHONY: test test-long test-icarus demo verilog bench clean report bitstream flash

test: $(STAMP)
	$(PYTEST) tests/

# Same suite with enlarged case counts (test modules and benches read FP8TRAIN_LONG).
test-long: $(STAMP)
	FP8TRAIN_LONG=1 $(PYTEST) tests/

# The RTL tests under Icarus. pytest exit status 5 ("no tests collected") is not a failure here:
# it only means no unit has an RTL test yet.
test-icarus: $(STAMP)
	SIM=icarus $(PYTEST) -m rtl tests/ || test $$? -eq 5

# Formal proofs (SymbiYosys from YoWASP, Yices from PyPI) of the CSR slave, the DMA master and the UART
# frame parser, which also run in `make test`, plus a bounded check of the DMA as the engine builds it.
.PHONY: test-formal
test-formal: $(STAMP)
	FP8TRAIN_LONG=1 $(VENV)/bin/python -m pytest tests/test_formal.py

# Gate-level simulation: the smallest accelerator synthesised for iCE40 (minutes, cached in build/gate/)
# and its netlist running GEMMs under Verilator, checked against the golden model.
.PHONY: test-gate
test-gate: $(STAMP)
	FP8TRAIN_GATE=1 $(VENV)/bin/python -m pytest tests/test_gate.py

# The main job: Verilog, the digits MLP trained with the FP8 recipe on the golden model (full run) and on
# the simulated RTL (first DEMO_STEPS steps, checked bit for bit against the golden run), the ablations
# table and plot, and the accumulation experiment.
DEMO_EPOCHS ?= 10
DEMO_STEPS ?= 12
demo: $(STAMP)
	$(CLI) verilog
	$(CLI) train digits --backend golden --epochs $(DEMO_EPOCHS) --out build/train_golden.json
	$(CLI) train digits --backend rtl --epochs $(DEMO_EPOCHS) --steps $(DEMO_STEPS) \
		--compare build/train_golden.json --out build/train_rtl.json
	$(CLI) experiment ablations
	$(CLI) experiment accumulation

verilog: $(STAMP)
	$(CLI) verilog

bench: $(STAMP)
	$(CLI) bench golden
	$(CLI) bench gemm

# Resource and Fmax table of the PEs, arrays and accelerator (YoWASP Yosys/nextpnr; minutes).
report: $(STAMP)
	$(CLI) report

# make bitstream BOARD=icebreaker|ulx3s: bitstream and report.json in build/$(BOARD)/.
bitstream: $(STAMP)
	@test -n "$(BOARD)" || { echo "usage: make bitstream BOARD=icebreaker|ulx3s"; exit 2; }
	$(CLI) build $(BOARD)

flash: $(STAMP)
	@test -n "$(BOARD)" || { echo "usage: make flash BOARD=icebreaker|ulx3s"; exit 2; }
	$(CLI) flash $(BOARD)

clean:
	rm -rf build

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -e .
	touch $@
