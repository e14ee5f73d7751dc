// host_ram: simulation-only AXI4 slave RAM, the host memory of the `rtl` backend (DESIGN.md §5, §8).
//
// 64-bit data, ADDR_WIDTH-bit byte addresses, ID_WIDTH-bit IDs. FIXED and INCR bursts of up to 256
// beats at one beat per cycle (a WRAP burst is treated as INCR); narrow transfers (AxSIZE < 3) use
// the byte lanes their address selects. Writes honour WSTRB. Up to QDEPTH read bursts and QDEPTH
// write bursts may be outstanding (16, as a memory controller behind an interconnect takes); each kind
// completes in order, and R beats of consecutive read bursts follow each other without a gap.
//
// Latency (run-time registers `rd_latency`/`wr_latency`, reset from READ_LATENCY/WRITE_LATENCY):
// each unit delays a read burst's first beat (or a write burst's B response) by one more cycle; at
// 0 the first R beat is valid in the second cycle after the AR handshake edge and B in the second
// cycle after the last W beat's, and back-to-back beats of a burst come one per cycle.
//
// Errors: a beat whose byte address lies in [err_base, err_limit) (run-time registers, reset from
// ERR_BASE/ERR_LIMIT; empty by default) is answered with err_resp (reset ERR_RESP, SLVERR) and
// neither reads nor writes memory; a beat at or beyond WORDS*8 with DECERR. A write burst's B
// response carries the error of its last failing beat (OKAY if none); read data of a failing beat
// is zero.
//
// Backdoor (the host link's bulk path, no simulated time): set bd_first/bd_last (word indices,
// inclusive) and change bd_load to $readmemh the file named by the +host_ram_file=<path> plusarg into
// mem[bd_first..bd_last], or change bd_dump to $writememh that range into it. bd_done follows
// bd_load + bd_dump once the transfer is done. Single words can also be read and written through
// the `mem` array by VPI (the design is built with public signals).
module host_ram #(
    parameter integer ADDR_WIDTH = 32,
    parameter integer ID_WIDTH = 4,
    parameter integer WORDS = 131072,
    parameter integer QDEPTH = 16,
    parameter integer READ_LATENCY = 0,
    parameter integer WRITE_LATENCY = 0,
    parameter [ADDR_WIDTH-1:0] ERR_BASE = 0,
    parameter [ADDR_WIDTH-1:0] ERR_LIMIT = 0,
    parameter [1:0] ERR_RESP = 2'b10
) (
    input  wire                  clk,
    input  wire                  rst,
    input  wire [ID_WIDTH-1:0]   s_axi_awid,
    input  wire [ADDR_WIDTH-1:0] s_axi_awaddr,
    /* verilator lint_off UNUSEDSIGNAL */  // a write burst ends at WLAST
    input  wire [7:0]            s_axi_awlen,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [2:0]            s_axi_awsize,
    input  wire [1:0]            s_axi_awburst,
    input  wire                  s_axi_awvalid,
    output wire                  s_axi_awready,
    input  wire [63:0]           s_axi_wdata,
    input  wire [7:0]            s_axi_wstrb,
    input  wire                  s_axi_wlast,
    input  wire                  s_axi_wvalid,
    output wire                  s_axi_wready,
    output wire [ID_WIDTH-1:0]   s_axi_bid,
    output wire [1:0]            s_axi_bresp,
    output wire                  s_axi_bvalid,
    input  wire                  s_axi_bready,
    input  wire [ID_WIDTH-1:0]   s_axi_arid,
    input  wire [ADDR_WIDTH-1:0] s_axi_araddr,
    input  wire [7:0]            s_axi_arlen,
    input  wire [2:0]            s_axi_arsize,
    input  wire [1:0]            s_axi_arburst,
    input  wire                  s_axi_arvalid,
    output wire                  s_axi_arready,
    output reg  [ID_WIDTH-1:0]   s_axi_rid,
    output reg  [63:0]           s_axi_rdata,
    output reg  [1:0]            s_axi_rresp,
    output reg                   s_axi_rlast,
    output reg                   s_axi_rvalid,
    input  wire                  s_axi_rready
);
    localparam integer QBITS = $clog2(QDEPTH);
    localparam integer WBITS = $clog2(WORDS);
    localparam [QBITS:0] QFULL = QDEPTH[QBITS:0];
    localparam [1:0] OKAY = 2'b00, DECERR = 2'b11;
    localparam [63:0] BYTES = WORDS * 8;

    reg [63:0] mem [0:WORDS-1];

    // Run-time configuration (written by VPI from the host link or a bench).
    reg [31:0]           rd_latency;
    reg [31:0]           wr_latency;
    reg [ADDR_WIDTH-1:0] err_base;
    reg [ADDR_WIDTH-1:0] err_limit;
    reg [1:0]            err_resp;

    // Backdoor. Written and read only by VPI: Verilator's lint does not know that.
    /* verilator lint_off UNUSEDSIGNAL */
    /* verilator lint_off SYNCASYNCNET */
    reg [8*1024-1:0] bd_path;
    reg [31:0]       bd_first, bd_last;
    reg [31:0]       bd_load, bd_dump, bd_done;
    /* verilator lint_on SYNCASYNCNET */
    /* verilator lint_on UNUSEDSIGNAL */

    integer i;
    initial begin
        for (i = 0; i < WORDS; i = i + 1) mem[i] = 64'd0;
        rd_latency = READ_LATENCY;
        wr_latency = WRITE_LATENCY;
        err_base = ERR_BASE;
        err_limit = ERR_LIMIT;
        err_resp = ERR_RESP;
        bd_first = 0;
        bd_last = 0;
        bd_load = 0;
        bd_dump = 0;
        bd_done = 0;
        if (!$value$plusargs("host_ram_file=%s", bd_path)) bd_path = "host_ram.hex";
    end

    always @(bd_load) begin
        if (bd_load != 0) $readmemh(bd_path, mem, bd_first, bd_last);
        bd_done = bd_load + bd_dump;
    end

    always @(bd_dump) begin
        if (bd_dump != 0) $writememh(bd_path, mem, bd_first, bd_last);
        bd_done = bd_load + bd_dump;
    end

    reg [63:0] cycle;

    // Response of one beat at byte address `a`.
    function [1:0] beat_resp(input [ADDR_WIDTH-1:0] a);
        if (a >= err_base && a < err_limit) beat_resp = err_resp;
        else if ({{(64 - ADDR_WIDTH){1'b0}}, a} >= BYTES) beat_resp = DECERR;
        else beat_resp = OKAY;
    endfunction

    // Address of the beat after the one at `a`.
    function [ADDR_WIDTH-1:0] next_addr(input [ADDR_WIDTH-1:0] a, input [2:0] size, input [1:0] burst);
        if (burst == 2'b00) next_addr = a;
        else next_addr = (a & ~((1 << size) - 1)) + (1 << size);
    endfunction

    // ---- Read: AR queue, then one burst at a time on R --------------------------------------------
    reg [ID_WIDTH-1:0]   arq_id    [0:QDEPTH-1];
    reg [ADDR_WIDTH-1:0] arq_addr  [0:QDEPTH-1];
    reg [7:0]            arq_len   [0:QDEPTH-1];
    reg [2:0]            arq_size  [0:QDEPTH-1];
    reg [1:0]            arq_burst [0:QDEPTH-1];
    reg [63:0]           arq_due   [0:QDEPTH-1];
    reg [QBITS-1:0]      arq_wr, arq_rd;
    reg [QBITS:0]        arq_count;

    reg                  r_active;
    reg [ID_WIDTH-1:0]   r_id;
    reg [ADDR_WIDTH-1:0] r_addr;
    reg [7:0]            r_left;
    reg [2:0]            r_size;
    reg [1:0]            r_burst;

    assign s_axi_arready = !rst && arq_count < QFULL;
    wire ar_take = s_axi_arvalid && s_axi_arready;
    wire r_free = !s_axi_rvalid || s_axi_rready;
    // The next burst loads when R is idle or its current burst's last beat goes out this cycle.
    wire r_load = (!r_active || (r_free && r_left == 0)) && arq_count != 0 && cycle >= arq_due[arq_rd];

    always @(posedge clk) begin
        if (rst) begin
            arq_wr <= 0; arq_rd <= 0; arq_count <= 0;
            r_active <= 0;
            s_axi_rvalid <= 0; s_axi_rlast <= 0; s_axi_rresp <= OKAY; s_axi_rdata <= 0; s_axi_rid <= 0;
        end else begin
            if (ar_take) begin
                arq_id[arq_wr] <= s_axi_arid;
                arq_addr[arq_wr] <= s_axi_araddr;
                arq_len[arq_wr] <= s_axi_arlen;
                arq_size[arq_wr] <= s_axi_arsize;
                arq_burst[arq_wr] <= s_axi_arburst;
                arq_due[arq_wr] <= cycle + {32'd0, rd_latency} + 1;
                arq_wr <= arq_wr + 1'b1;
            end
            arq_count <= arq_count + {{QBITS{1'b0}}, ar_take} - {{QBITS{1'b0}}, r_load};
            if (r_free) begin
                s_axi_rvalid <= r_active;
                if (r_active) begin
                    s_axi_rid <= r_id;
                    s_axi_rresp <= beat_resp(r_addr);
                    s_axi_rdata <= beat_resp(r_addr) == OKAY ? mem[r_addr[WBITS+2:3]] : 64'd0;
                    s_axi_rlast <= r_left == 0;
                    r_addr <= next_addr(r_addr, r_size, r_burst);
                    r_left <= r_left - 1'b1;
                    if (r_left == 0) r_active <= 0;
                end
            end
            if (r_load) begin                  // after the R update: a reload wins
                r_active <= 1;
                r_id <= arq_id[arq_rd];
                r_addr <= arq_addr[arq_rd];
                r_left <= arq_len[arq_rd];
                r_size <= arq_size[arq_rd];
                r_burst <= arq_burst[arq_rd];
                arq_rd <= arq_rd + 1'b1;
            end
        end
    end

    // ---- Write: AW queue, W beats of the oldest burst, B queue ------------------------------------
    reg [ID_WIDTH-1:0]   awq_id    [0:QDEPTH-1];
    reg [ADDR_WIDTH-1:0] awq_addr  [0:QDEPTH-1];
    reg [2:0]            awq_size  [0:QDEPTH-1];
    reg [1:0]            awq_burst [0:QDEPTH-1];
    reg [QBITS-1:0]      awq_wr, awq_rd;
    reg [QBITS:0]        awq_count;

    reg                  w_active;
    reg [ID_WIDTH-1:0]   w_id;
    reg [ADDR_WIDTH-1:0] w_addr;
    reg [2:0]            w_size;
    reg [1:0]            w_burst;
    reg [1:0]            w_err;

    reg [ID_WIDTH-1:0]   bq_id   [0:QDEPTH-1];
    reg [1:0]            bq_resp [0:QDEPTH-1];
    reg [63:0]           bq_due  [0:QDEPTH-1];
    reg [QBITS-1:0]      bq_wr, bq_rd;
    reg [QBITS:0]        bq_count;

    assign s_axi_awready = !rst && awq_count < QFULL;
    wire aw_take = s_axi_awvalid && s_axi_awready;
    assign s_axi_wready = w_active && bq_count < QFULL;
    wire w_take = s_axi_wvalid && s_axi_wready;
    wire w_load = !w_active && awq_count != 0;
    assign s_axi_bvalid = bq_count != 0 && cycle >= bq_due[bq_rd];
    assign s_axi_bid = bq_id[bq_rd];
    assign s_axi_bresp = bq_resp[bq_rd];
    wire b_take = s_axi_bvalid && s_axi_bready;
    wire [1:0] w_resp = beat_resp(w_addr);
    wire b_push = w_take && s_axi_wlast;

    always @(posedge clk) begin
        if (rst) begin
            awq_wr <= 0; awq_rd <= 0; awq_count <= 0;
            bq_wr <= 0; bq_rd <= 0; bq_count <= 0;
            w_active <= 0;
        end else begin
            if (aw_take) begin
                awq_id[awq_wr] <= s_axi_awid;
                awq_addr[awq_wr] <= s_axi_awaddr;
                awq_size[awq_wr] <= s_axi_awsize;
                awq_burst[awq_wr] <= s_axi_awburst;
                awq_wr <= awq_wr + 1'b1;
            end
            awq_count <= awq_count + {{QBITS{1'b0}}, aw_take} - {{QBITS{1'b0}}, w_load};
            if (w_load) begin
                w_active <= 1;
                w_id <= awq_id[awq_rd];
                w_addr <= awq_addr[awq_rd];
                w_size <= awq_size[awq_rd];
                w_burst <= awq_burst[awq_rd];
                w_err <= OKAY;
                awq_rd <= awq_rd + 1'b1;
            end
            if (w_take) begin
                if (w_resp == OKAY) begin
                    for (i = 0; i < 8; i = i + 1)
                        if (s_axi_wstrb[i]) mem[w_addr[WBITS+2:3]][8*i +: 8] <= s_axi_wdata[8*i +: 8];
                end
                w_addr <= next_addr(w_addr, w_size, w_burst);
                if (w_resp != OKAY) w_err <= w_resp;
                if (s_axi_wlast) begin
                    w_active <= 0;
                    bq_id[bq_wr] <= w_id;
                    bq_resp[bq_wr] <= w_resp != OKAY ? w_resp : w_err;
                    bq_due[bq_wr] <= cycle + {32'd0, wr_latency} + 1;
                    bq_wr <= bq_wr + 1'b1;
                end
            end
            if (b_take) bq_rd <= bq_rd + 1'b1;
            bq_count <= bq_count + {{QBITS{1'b0}}, b_push} - {{QBITS{1'b0}}, b_take};
        end
    end

    always @(posedge clk) begin
        if (rst) cycle <= 0;
        else cycle <= cycle + 1;
    end
endmodule
