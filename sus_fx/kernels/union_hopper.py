"""Phase (a) of the SUS backward for Hopper (sm_90), written in Gluon with an explicit MMA pipeline.

Same inputs and decisions as sus_bwd._union_kernel (read its docstring first): per query block of
128 rows, per key tile of 64 keys, S^T = K Q^T on the tensor cores, x = a S - lse2, the column max
over the block's rows, and the keep bits of each tile. Its outputs are what _union_kernel and
_union_expand_kernel produce between them: the union's columns and its size per block.

Why a second version. Triton 3.6 compiles _union_kernel's loop as "wait for the K tile, one wgmma,
wait for it, epilogue", and that kernel ran at ~51% tensor-pipe activity on the H200 with nothing
saturated (Nsight Compute: notes/KERNELS.md, stop 12). Here:

  * the MMA of tile t+1 is issued before the epilogue of tile t, which then waits with one MMA
    outstanding, so the tensor cores have work queued behind every epilogue;
  * K tiles come by TMA (one instruction, an mbarrier per buffer) rather than cp.async (~60
    instructions per tile per warp of addresses, masks, waits and fences);
  * each warp's 16 keep bits of a tile go to shared memory, and the block's union columns are listed
    once at its end, instead of a reduction across the four warps (three barriers) per tile;
  * FOLD (the default for bf16; an fp16 part could overflow): -lse2 / a is added by the MMA
    itself (its three 16-bit parts against a column of ones, one k16 wgmma more per tile), so the
    per-entry epilogue is a max alone;
  * that max is a tree over each lane's 32 columns, and the lanes of a quad are not reduced: each
    lane tests its own max and one warp-wide redux.sync ORs the bits (a 31-deep FMNMX chain and 5
    dependent shuffles per tile before; stop 18);
  * PAIR (head dim 64): K arrives two tiles per TMA, so the waits, barriers and TMAs of the K ring
    come once per two tiles (7 -> 4 CTA barriers per two tiles; stop 18).

With two CTAs of four warps per SM (registers), time per tile was set by each warp's instruction
stream (~260 instructions at ~5.5 cycles) more than by the MMA: fewer instructions per tile is what
moved it (1.31 -> 1.17 -> 1.13 ms at 16k, D = 128, on the H200). FOLD then took 24% of the
instructions out for 4% (1.11 -> 1.07 ms): past that point the instruction count no longer sets it.
The dependency depth did: the tree and the redux took the kernel at D = 64 (16k, H = 32) from 1.40
to 1.24 ms, PAIR to 1.10 ms, within ~1.3x of its tensor-core time (FOLD's k16 included); at D = 128
it runs 0.855 ms, within ~1.1-1.3x of it.

    prologue: TMA K tiles 0 .. NB-2; MMA(0)
    for t:    wait K tile t+1 -> barrier -> TMA K tile t+NB-1 -> MMA(t+1) -> wait MMA(t) -> epilogue(t)
    last:     wait MMA(n-1) -> epilogue(n-1)
    end:      expand the block's per-tile words into its union's columns, COLS / CNT

The barrier orders the reuse of K buffers: the buffer refilled in iteration t was read by MMA(t-1),
which every warp retired (wgmma.wait_group 1) in iteration t-1, before the barrier.

Scope (sus_bwd.sus_backward falls back to the Triton kernel otherwise): an sm_90 GPU, fp16/bf16,
head dim 64 or 128, no attention mask (causal or not), Lk <= 65536 (a key tensor TMA cannot read,
a base or stride not 16-byte aligned, is copied first). It runs as the opaque op sus::union_sm90: Inductor
cannot trace Gluon. Gluon's API moves between Triton releases: sus_bwd._sm90_union takes this
module only with the Triton versions it was checked with (sus_bwd.GLUON_TRITON). The per-block
random key is an input (KEYS, from sus_bwd._block_keys_kernel):
Gluon has no Philox, and one Triton launch computes it bit for bit as the Triton kernels do.
"""
from __future__ import annotations

import functools
from typing import Tuple

import torch
import triton
from torch import Tensor
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .sus_bwd import _pow2

BM = gl.constexpr(128)  # query rows per program (the wgmma's N)
BN = gl.constexpr(64)   # keys per tile (the wgmma's M: one warpgroup, 16 keys per warp)
MAX_LK = 65536


@gluon.jit
def _mix32(x):
    """lowbias32, as sus_bwd._mix32 (uint32 in, uint32 out)."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    x = x ^ (x >> 16)
    return x


@gluon.jit
def _load_k(k_desc, k_smem, bars, b, hk, t, n_t, NB: gl.constexpr, BN: gl.constexpr):
    """TMA of key tile t (rows past Lk zero-filled) into buffer t % NB; its barrier counts the bytes.
    Tiles past the block's last are not loaded (their barrier is never waited for)."""
    i = t % NB
    mbarrier.expect(bars.index(i), k_desc.block_type.nbytes, pred=t < n_t)
    tma.async_copy_global_to_shared(k_desc, [b, hk, t * BN, 0], bars.index(i), k_smem.index(i), pred=t < n_t)


@gluon.jit
def _k_tile(k_smem, bars, t, NB: gl.constexpr, BN: gl.constexpr, D: gl.constexpr):
    """Key tile t in shared memory, once its TMA has landed, as the wgmma's [BN, D] operand."""
    i = t % NB
    mbarrier.wait(bars.index(i), (t // NB) & 1)
    return k_smem.index(i).reshape([BN, D])


@gluon.jit
def _next_k_tile(k_desc, k_smem, bars, b, hk, t, n_t, NB: gl.constexpr, BN: gl.constexpr, D: gl.constexpr):
    """Before MMA(t+1): K tile t+1 in shared memory; then refill the buffer that MMA(t-1) read (every
    warp retired it, wgmma.wait_group 1, before the barrier) with tile t+NB-1."""
    kt = _k_tile(k_smem, bars, t + 1, NB, BN, D)
    gl.thread_barrier()
    _load_k(k_desc, k_smem, bars, b, hk, t + NB - 1, n_t, NB, BN)
    return kt


@gluon.jit
def _load_pair(k_desc, k_smem, bars, b, hk, P, n_p, NB: gl.constexpr, BN: gl.constexpr):
    """PAIR: TMA of key tiles 2P and 2P+1 (one [2 BN, D] box) into buffer P % NB."""
    i = P % NB
    mbarrier.expect(bars.index(i), k_desc.block_type.nbytes, pred=P < n_p)
    tma.async_copy_global_to_shared(k_desc, [b, hk, P * 2 * BN, 0], bars.index(i), k_smem.index(i), pred=P < n_p)


@gluon.jit
def _pair_half(k_smem, P, h: gl.constexpr, NB: gl.constexpr, BN: gl.constexpr, D: gl.constexpr):
    """Key tile 2P + h of pair buffer P % NB (landed: its barrier was waited for)."""
    return k_smem.index(P % NB).reshape([2 * BN, D]).slice(h * BN, BN)


@gluon.jit
def _next_pair(k_desc, k_smem, bars, b, hk, P, n_p, NB: gl.constexpr, BN: gl.constexpr, D: gl.constexpr):
    """Before MMA(2P+2): pair P+1 in shared memory; then refill the buffer that pair P-1's MMAs read
    (every warp retired them before the barrier) with pair P+NB-1."""
    i = (P + 1) % NB
    mbarrier.wait(bars.index(i), ((P + 1) // NB) & 1)
    gl.thread_barrier()
    _load_pair(k_desc, k_smem, bars, b, hk, P + NB - 1, n_p, NB, BN)
    return _pair_half(k_smem, P + 1, 0, NB, BN, D)


@gluon.jit
def _mma(kt, qT, acc, ones_s, lT, FOLD: gl.constexpr):
    """acc = S^T for one key tile, asynchronously (acc's old value is dead: use_acc=False). FOLD:
    a second k16 MMA adds -lse2 / a per row (three 16-bit parts against a column of ones), so that
    the epilogue is a max alone; two wgmma groups per tile then."""
    acc = warpgroup_mma(kt, qT, acc, use_acc=False, is_async=True)
    if FOLD:
        acc = warpgroup_mma(ones_s, lT, acc, use_acc=True, is_async=True)
    return acc


@gluon.jit
def _keep_word(st, t, MASKED: gl.constexpr, a, lse2, rows, hi, k1, qinf, key, gamma, vmax2,
               CAUSAL: gl.constexpr, FOLD: gl.constexpr, BN: gl.constexpr, mma_layout: gl.constexpr):
    """Tile t's keep bits, 16 per warp (its 16 keys): [BN // 16] int16, warp w's word at w."""
    keep = _tile_keep(st, t, MASKED, a, lse2, rows, hi, k1, qinf, key, gamma, vmax2, CAUSAL, FOLD, BN, mma_layout)
    # keep: [BN keys, 4 lanes of a quad]; a key is in the union if any lane of its quad keeps it
    jl = gl.arange(0, BN, layout=gl.SliceLayout(1, keep.type.layout))
    bits = gl.where(keep, (gl.full([BN], 1, gl.int32, layout=gl.SliceLayout(1, keep.type.layout)) << (jl % 16))[:, None], 0)
    # [warp, 16 keys x 4 lanes]: the 64 values of a warp sit in its 32 lanes and two registers, so
    # this is one OR in each thread and one warp-wide redux.sync (its shuffle tree was 5 deep)
    return gl.reduce(gl.reshape(bits, [BN // 16, 64]), 1, _or).to(gl.int16)


@gluon.jit
def _emit(st, t, MASKED: gl.constexpr, words, a, lse2, rows, hi, k1, qinf, key, gamma, vmax2,
          CAUSAL: gl.constexpr, FOLD: gl.constexpr, BN: gl.constexpr, mma_layout: gl.constexpr):
    """Tile t's keep bits into words[t, warp]: one shared store, no barrier. The block's columns are
    listed once at its end (_expand_words); a per-tile reduction across the warps cost three
    barriers per tile."""
    words.index(t).store(_keep_word(st, t, MASKED, a, lse2, rows, hi, k1, qinf, key, gamma, vmax2,
                                    CAUSAL, FOLD, BN, mma_layout))


@gluon.jit
def _store_pair_words(words, t, w0, w1, BN: gl.constexpr):
    """PAIR: tiles t and t+1's words (t even) in one shared store, as one int32 per warp (tile t's
    bits low): `words` holds [pair, warp, tile of the pair] there (_expand_pair_words reads that).
    Two stores into `words` with no barrier between them make Triton's membar pass put one there
    (it tracks whole allocations)."""
    TMAX: gl.constexpr = words.shape[0]
    pw = words._reinterpret(gl.int32, [TMAX // 2, BN // 16],  # (a rank-1 layout: index() drops a dim)
                            gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0]))
    pw.index(t // 2).store((w0.to(gl.int32) & 0xFFFF) | (w1.to(gl.int32) << 16))


@gluon.jit
def _or(x, y):
    return x | y


@gluon.jit
def _add(x, y):
    return x + y


@gluon.jit
def _popc64(x):
    return gl.inline_asm_elementwise("popc.b64 $0, $1;", "=r,l", [x], dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def _place_tile_columns(w, tile, first, COLS, row, U_cap, jl, BN: gl.constexpr):
    """Columns of the tiles whose 64-bit keep words are w (one per thread), in ascending order from
    position first, into COLS[row + ...] (those past U_cap dropped: the block overflows)."""
    on = ((w[:, None] >> jl[None, :].to(gl.int64)) & 1).to(gl.int32)
    pos = first[:, None] + gl.associative_scan(on, 1, _add) - on
    gl.store(COLS + row + pos, tile[:, None] * BN + jl[None, :], mask=(on != 0) & (pos < U_cap))


@gluon.jit
def _expand_words(words, n_t, COLS, CNT, blk, U_cap, TMAX: gl.constexpr, BN: gl.constexpr):
    """The block's union as ascending column indices (COLS, capacity U_cap) and its size (CNT),
    straight from the per-tile keep bits: words[t, w] holds bits 16w .. 16w+15 of tile t. A union
    larger than U_cap stores its first U_cap columns and its full size, which sends the block down
    phase (b)'s all-columns path.

    This was a separate launch (sus_bwd._union_expand_kernel, 41.5 us at 16k on the H200, with a
    round trip of tile words through global memory); here it runs while the SM's other CTA keeps
    the tensor cores busy. One thread per tile: each thread walks its tile's 64 bits (the
    within-tile prefix stays in registers), and a scan over the threads places the tiles."""
    CH: gl.constexpr = 128
    cl: gl.constexpr = gl.BlockedLayout([1, BN // 16], [32, 1], [4, 1], [1, 0])
    bl: gl.constexpr = gl.BlockedLayout([1, BN], [32, 1], [4, 1], [1, 0])  # one tile's bits per thread
    l1: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    shifts = (gl.arange(0, BN // 16, layout=gl.SliceLayout(0, cl)) * 16).to(gl.int64)
    jl = gl.arange(0, BN, layout=gl.SliceLayout(0, bl))
    w2d = words._reinterpret(gl.int16, [TMAX, BN // 16],
                             gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))
    base = n_t * 0
    row = blk * U_cap
    for ci in gl.static_range(TMAX // CH):
        if ci * CH < n_t:
            w4 = w2d.slice(ci * CH, CH).load(cl).to(gl.int64) & 0xFFFF
            word = gl.sum(w4 << shifts[None, :], axis=1)
            tiles = ci * CH + gl.arange(0, CH, layout=gl.SliceLayout(1, bl))
            word = gl.where(tiles < n_t, gl.convert_layout(word, gl.SliceLayout(1, bl)), 0)
            per_tile = gl.convert_layout(_popc64(word), l1)  # (the scan wants a plain layout)
            first = gl.convert_layout(base + gl.associative_scan(per_tile, 0, _add) - per_tile,
                                      gl.SliceLayout(1, bl))
            _place_tile_columns(word, tiles, first, COLS, row, U_cap, jl, BN)
            base += gl.sum(per_tile, 0)
    gl.store(CNT + blk, base)


@gluon.jit
def _expand_pair_words(words, n_t, COLS, CNT, blk, U_cap, TMAX: gl.constexpr, BN: gl.constexpr):
    """_expand_words for PAIR's layout of `words` (_store_pair_words): one int32 per (pair, warp),
    tile 2P's 16 bits low and tile 2P+1's high. One thread per pair: both tiles' 64-bit words and
    their counts, one scan over the pairs, then the even tiles' columns and the odd ones' (tile 2P+1
    starts where tile 2P ends). One tile's bit array at a time: with both live the expansion spilled
    at 168 registers."""
    CH: gl.constexpr = 128  # pairs per step (TMAX >= 256 under PAIR)
    cl: gl.constexpr = gl.BlockedLayout([1, BN // 16], [32, 1], [4, 1], [1, 0])
    bl: gl.constexpr = gl.BlockedLayout([1, BN], [32, 1], [4, 1], [1, 0])  # one tile's bits per thread
    l1: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    shifts = (gl.arange(0, BN // 16, layout=gl.SliceLayout(0, cl)) * 16).to(gl.int64)
    jl = gl.arange(0, BN, layout=gl.SliceLayout(0, bl))
    pw = words._reinterpret(gl.int32, [TMAX // 2, BN // 16],
                            gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))
    n_p = (n_t + 1) // 2
    base = n_t * 0
    row = blk * U_cap
    for ci in gl.static_range(TMAX // 2 // CH):
        if ci * CH < n_p:
            x = pw.slice(ci * CH, CH).load(cl).to(gl.int64)
            te = 2 * (ci * CH + gl.arange(0, CH, layout=gl.SliceLayout(1, bl)))
            we = gl.convert_layout(gl.sum((x & 0xFFFF) << shifts[None, :], axis=1), gl.SliceLayout(1, bl))
            wo = gl.convert_layout(gl.sum(((x >> 16) & 0xFFFF) << shifts[None, :], axis=1), gl.SliceLayout(1, bl))
            we = gl.where(te < n_t, we, 0)
            wo = gl.where(te + 1 < n_t, wo, 0)
            ce = _popc64(we)
            per_pair = gl.convert_layout(ce + _popc64(wo), l1)  # (the scan wants a plain layout)
            first_e = gl.convert_layout(base + gl.associative_scan(per_pair, 0, _add) - per_pair,
                                        gl.SliceLayout(1, bl))
            _place_tile_columns(we, te, first_e, COLS, row, U_cap, jl, BN)
            _place_tile_columns(wo, te + 1, first_e + ce, COLS, row, U_cap, jl, BN)
            base += gl.sum(per_pair, 0)
    gl.store(CNT + blk, base)


@gluon.jit
def _k1(k1base, t, hi, BN: gl.constexpr, mma_layout: gl.constexpr):
    """The L1 norms of key tile t's rows (the margin), in the layout of the epilogue's column max.
    Loaded a tile ahead of its use, so that no epilogue waits on L2 for them (on the H200 this
    measured no different from a load in the epilogue: that latency was hidden either way)."""
    cols = t * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, mma_layout))
    return gl.load(k1base + cols, mask=cols < hi, other=0.0)


@gluon.jit
def _max_halves(x, W: gl.constexpr):
    """[R, W] -> [R, W // 2]: the max of column j and column j + W // 2, elementwise."""
    return gl.max(gl.reshape(x, [x.shape[0], 2, W // 2]), axis=1)


@gluon.jit
def _lane_max(x):
    """gl.max(x, axis=1) for the accumulator [BN, 128], as a tree. A thread holds 32 columns of
    each of its rows (column bits 0 and 3..6 in registers, 1..2 across a quad of lanes), and
    gl.max folds them one after another: a chain of 31 dependent FMNMX per row. Halving on the
    register bits instead (6, 5, 4, 3, then 0) leaves chains 5 deep. The result is each lane's
    maximum, [BN, 4]: the lanes of a quad are not reduced here (_keep_word ORs their decisions)."""
    gl.static_assert(x.shape[1] == 128, "the halving steps are written for 128 columns")
    y = _max_halves(_max_halves(_max_halves(_max_halves(x, 128), 64), 32), 16)  # [BN, 8]
    return gl.max(gl.reshape(y, [x.shape[0], 4, 2]), axis=2)  # column bit 0 -> [BN, 4 lanes]


@gluon.jit
def _tile_keep(st, t, MASKED: gl.constexpr, a, lse2, rows, hi, k1, qinf, key, gamma, vmax2,
               CAUSAL: gl.constexpr, FOLD: gl.constexpr, BN: gl.constexpr, mma_layout: gl.constexpr):
    """Which columns of key tile t are in the union, from st = S^T (as sus_bwd._union_kernel);
    FOLD: st = S^T - lse2 / a already (x / a)."""
    cols = t * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, mma_layout))
    cmask = cols < hi
    if FOLD:
        x = st
    else:
        x = st * a - lse2[None, :]
    if MASKED:  # keys past hi (zero-filled); and above the diagonal
        x = gl.where(cmask[:, None], x, float("-inf"))
        if CAUSAL:
            x = gl.where(cols[:, None] <= rows[None, :], x, float("-inf"))
    m = _lane_max(x)  # [BN, 4]: each lane's maximum over its 32 columns
    if FOLD:
        m = m * a  # a > 0
    # margin: |x_a - x_b| <= a * gamma * (max|q| * sum|k_j| [+ 2 max|lse2 / a|, FOLD]) between two fp32
    # computations of S (here and in phase (b))
    delta = a * gamma * (qinf * k1 + vmax2) + 0.0009765625
    jl = gl.arange(0, BN, layout=gl.SliceLayout(1, mma_layout))
    r = _mix32(key ^ t.to(gl.uint32))
    u = ((r + jl.to(gl.uint32) * 5184561) & 0x7FFFFF).to(gl.int32).to(gl.float32) * (1.0 / 8388608.0)
    # u < exp2(max over lanes) iff u < exp2(some lane's max): the keep test per lane, ORed in _keep_word
    ml: gl.constexpr = gl.SliceLayout(1, m.type.layout)
    thr = gl.convert_layout(delta, ml)[:, None] + m
    return (gl.convert_layout(u, ml)[:, None] < gl.exp2(thr)) & gl.convert_layout(cmask, ml)[:, None]


@gluon.jit
def _run_tiles(k_desc, k_smem, bars, qT, ones_s, lT, b, hk, t_lo, t_hi, n_t, hi, words, a, lse2, rows, k1base,
               qinf, key, gamma, vmax2, MASKED: gl.constexpr, CAUSAL: gl.constexpr, FOLD: gl.constexpr,
               NB: gl.constexpr, BN: gl.constexpr, BM: gl.constexpr, D: gl.constexpr, mma_layout: gl.constexpr):
    """Tiles t_lo .. t_hi-1 (the TMA of K tile t_lo issued), pipelined, their keep bits into words.
    Two accumulators, used alternately, the loop unrolled by two: a loop-carried "acc = acc_next"
    would copy an in-flight accumulator at the back edge, and ptxas then serializes every wgmma
    (warning C7514). Each MMA takes its slot's dead previous value as C (use_acc=False), so the
    result is written in place. FOLD issues two wgmma groups per tile, so "one tile outstanding" is
    FOLD + 1 groups."""
    OUT1: gl.constexpr = 2 if FOLD else 1
    acc0 = gl.zeros([BN, BM], gl.float32, layout=mma_layout)
    acc1 = gl.zeros([BN, BM], gl.float32, layout=mma_layout)
    acc0 = _mma(_k_tile(k_smem, bars, t_lo, NB, BN, D), qT, acc0, ones_s, lT, FOLD)
    k1a = _k1(k1base, t_lo, hi, BN, mma_layout)
    for p in range(0, (t_hi - t_lo - 1) // 2):
        t = t_lo + 2 * p
        kt = _next_k_tile(k_desc, k_smem, bars, b, hk, t, n_t, NB, BN, D)
        acc1 = _mma(kt, qT, acc1, ones_s, lT, FOLD)
        k1b = _k1(k1base, t + 1, hi, BN, mma_layout)
        acc0 = warpgroup_mma_wait(num_outstanding=OUT1, deps=(acc0, ))
        _emit(acc0, t, MASKED, words, a, lse2, rows, hi, k1a, qinf, key, gamma, vmax2,
              CAUSAL, FOLD, BN, mma_layout)
        kt = _next_k_tile(k_desc, k_smem, bars, b, hk, t + 1, n_t, NB, BN, D)
        acc0 = _mma(kt, qT, acc0, ones_s, lT, FOLD)
        k1a = _k1(k1base, t + 2, hi, BN, mma_layout)
        acc1 = warpgroup_mma_wait(num_outstanding=OUT1, deps=(acc1, ))
        _emit(acc1, t + 1, MASKED, words, a, lse2, rows, hi, k1b, qinf, key, gamma, vmax2,
              CAUSAL, FOLD, BN, mma_layout)
    # the last one or two tiles; MMA(t) is in flight in acc0
    t = t_lo + 2 * ((t_hi - t_lo - 1) // 2)
    if t_hi - t == 2:
        kt = _next_k_tile(k_desc, k_smem, bars, b, hk, t, n_t, NB, BN, D)
        pend = _mma(kt, qT, acc1, ones_s, lT, FOLD)
        k1b = _k1(k1base, t + 1, hi, BN, mma_layout)
        s0 = warpgroup_mma_wait(num_outstanding=OUT1, deps=(acc0, ))
        _emit(s0, t, MASKED, words, a, lse2, rows, hi, k1a, qinf, key, gamma, vmax2,
              CAUSAL, FOLD, BN, mma_layout)
        s1 = warpgroup_mma_wait(num_outstanding=0, deps=(pend, ))
        _emit(s1, t + 1, MASKED, words, a, lse2, rows, hi, k1b, qinf, key, gamma, vmax2,
              CAUSAL, FOLD, BN, mma_layout)
    else:
        s0 = warpgroup_mma_wait(num_outstanding=0, deps=(acc0, ))
        _emit(s0, t, MASKED, words, a, lse2, rows, hi, k1a, qinf, key, gamma, vmax2,
              CAUSAL, FOLD, BN, mma_layout)


@gluon.jit
def _run_pairs(k_desc, k_smem, bars, qT, ones_s, lT, b, hk, p_lo, p_hi, n_p, t_end, hi, words, a, lse2, rows,
               k1base, qinf, key, gamma, vmax2, MASKED: gl.constexpr, CAUSAL: gl.constexpr, FOLD: gl.constexpr,
               NB: gl.constexpr, BN: gl.constexpr, BM: gl.constexpr, D: gl.constexpr, mma_layout: gl.constexpr):
    """PAIR: tiles 2 p_lo .. min(2 p_hi, t_end) - 1, as _run_tiles, with K loaded a pair of tiles per
    TMA: the wait, the barrier, the expect and the TMA (and the barriers Triton's membar pass puts
    around the last three) come once per two tiles. Pair p_lo's TMA was issued."""
    OUT1: gl.constexpr = 2 if FOLD else 1
    acc0 = gl.zeros([BN, BM], gl.float32, layout=mma_layout)
    acc1 = gl.zeros([BN, BM], gl.float32, layout=mma_layout)
    i0 = p_lo % NB
    mbarrier.wait(bars.index(i0), (p_lo // NB) & 1)
    acc0 = _mma(_pair_half(k_smem, p_lo, 0, NB, BN, D), qT, acc0, ones_s, lT, FOLD)
    k1a = _k1(k1base, 2 * p_lo, hi, BN, mma_layout)
    for P in range(p_lo, p_hi - 1):
        t = 2 * P
        acc1 = _mma(_pair_half(k_smem, P, 1, NB, BN, D), qT, acc1, ones_s, lT, FOLD)
        k1b = _k1(k1base, t + 1, hi, BN, mma_layout)
        acc0 = warpgroup_mma_wait(num_outstanding=OUT1, deps=(acc0, ))
        w0 = _keep_word(acc0, t, MASKED, a, lse2, rows, hi, k1a, qinf, key, gamma, vmax2,
                        CAUSAL, FOLD, BN, mma_layout)
        kt = _next_pair(k_desc, k_smem, bars, b, hk, P, n_p, NB, BN, D)
        acc0 = _mma(kt, qT, acc0, ones_s, lT, FOLD)
        k1a = _k1(k1base, t + 2, hi, BN, mma_layout)
        acc1 = warpgroup_mma_wait(num_outstanding=OUT1, deps=(acc1, ))
        w1 = _keep_word(acc1, t + 1, MASKED, a, lse2, rows, hi, k1b, qinf, key, gamma, vmax2,
                        CAUSAL, FOLD, BN, mma_layout)
        _store_pair_words(words, t, w0, w1, BN)
    # the last pair; MMA(t) is in flight in acc0, and tile t + 1 may be past the run
    P = p_hi - 1
    t = 2 * P
    if t + 1 < t_end:
        pend = _mma(_pair_half(k_smem, P, 1, NB, BN, D), qT, acc1, ones_s, lT, FOLD)
        k1b = _k1(k1base, t + 1, hi, BN, mma_layout)
        s0 = warpgroup_mma_wait(num_outstanding=OUT1, deps=(acc0, ))
        w0 = _keep_word(s0, t, MASKED, a, lse2, rows, hi, k1a, qinf, key, gamma, vmax2,
                        CAUSAL, FOLD, BN, mma_layout)
        s1 = warpgroup_mma_wait(num_outstanding=0, deps=(pend, ))
        w1 = _keep_word(s1, t + 1, MASKED, a, lse2, rows, hi, k1b, qinf, key, gamma, vmax2,
                        CAUSAL, FOLD, BN, mma_layout)
        _store_pair_words(words, t, w0, w1, BN)
    else:
        s0 = warpgroup_mma_wait(num_outstanding=0, deps=(acc0, ))
        w0 = _keep_word(s0, t, MASKED, a, lse2, rows, hi, k1a, qinf, key, gamma, vmax2,
                        CAUSAL, FOLD, BN, mma_layout)
        _store_pair_words(words, t, w0, w0 * 0, BN)  # (tile t + 1 is past the block's keys)


@gluon.jit
def union_kernel_sm90(Q, k_desc, LSE, KEYS, COLS, CNT, K1, ZK, ZV,
                      sqb, sqh, sqm,
                      H, G, Hkv, Lq, Lk, n_rb, U_cap, z_rows,
                      a, gamma, log2c,
                      CAUSAL: gl.constexpr, D: gl.constexpr, NB: gl.constexpr,
                      ZERO: gl.constexpr, DV_: gl.constexpr, DVP: gl.constexpr,
                      q_smem_layout: gl.constexpr, TMAX: gl.constexpr, FOLD: gl.constexpr = False,
                      fold_layout: gl.constexpr = None, PAIR: gl.constexpr = False):
    gl.static_assert(NB >= 3, "tile t+1 must be in flight before MMA(t) is waited for")
    # fp32 whatever the launcher typed them (see sus_bwd._union_kernel)
    a, gamma, log2c = gl.cast(a, gl.float32), gl.cast(gamma, gl.float32), gl.cast(log2c, gl.float32)
    # layouts: S^T = K Q^T is [BN keys, BM rows]; one warpgroup, 16 keys per warp
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BM, 16])
    TPC: gl.constexpr = D // 8  # threads along the head dim, 16 bytes each
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 // TPC, TPC], [4, 1], [1, 0])
    row_layout: gl.constexpr = gl.SliceLayout(0, mma_layout)

    rb = n_rb - 1 - gl.program_id(0)  # causal: the longest blocks first
    bh = gl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // G
    b64 = b.to(gl.int64)
    blk = bh.to(gl.int64) * n_rb + rb
    key = gl.load(KEYS + blk).to(gl.uint32, bitcast=True)

    # Q block -> shared memory (the wgmma's B operand, K-major), and max |q| for the margin
    qr = rb * BM + gl.arange(0, BM, layout=gl.SliceLayout(1, ld_layout))
    qd = gl.arange(0, D, layout=gl.SliceLayout(0, ld_layout))
    q = gl.load(Q + b64 * sqb + h.to(gl.int64) * sqh + qr[:, None].to(gl.int64) * sqm + qd[None, :],
                mask=(qr < Lq)[:, None], other=0.0)
    qinf = gl.max(gl.max(gl.abs(q.to(gl.float32)), axis=1), axis=0)
    q_smem = gl.allocate_shared_memory(Q.dtype.element_ty, [BM, D], q_smem_layout, q)
    qT = q_smem.permute((1, 0))
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [NB] + k_desc.block_type.shape, k_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NB, 1], mbarrier.MBarrierLayout())
    # per tile and warp, the warp's 16 keep bits (TMAX >= the block's tile count)
    # (one buffer of BN/16 per tile: words.index(t) is tile t's row; _expand_words reads it as 2-D)
    words = gl.allocate_shared_memory(gl.int16, [TMAX, BN // 16],
                                      gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0]))
    for i in gl.static_range(NB):
        mbarrier.init(bars.index(i), count=1)

    rows = rb * BM + gl.arange(0, BM, layout=row_layout)
    rmask = rows < Lq
    lse = gl.load(LSE + bh.to(gl.int64) * Lq + rows, mask=rmask, other=0.0)
    lse = gl.where(lse == float("-inf"), 0.0, lse)
    lse2 = gl.where(rmask, lse * 1.4426950408889634 - log2c, float("inf"))  # rows past Lq: x = -inf
    if FOLD:
        # -lse2 / a per row as three 16-bit parts (their sum is the fp32 value exactly), the B operand
        # of a k16 MMA against a column of ones ([BN, 16], A): S^T - lse2 / a comes out of the MMA.
        # Rows past Lq get -30000: their x is far below any threshold (a larger union at worst).
        fl: gl.constexpr = gl.BlockedLayout([1, 16], [32, 1], [4, 1], [1, 0])
        ty: gl.constexpr = Q.dtype.element_ty
        fr = rb * BM + gl.arange(0, BM, layout=gl.SliceLayout(1, fl))
        frm = fr < Lq
        fls = gl.load(LSE + bh.to(gl.int64) * Lq + fr, mask=frm, other=0.0)
        fls = gl.where(fls == float("-inf"), 0.0, fls)
        v = gl.where(frm, -(fls * 1.4426950408889634 - log2c) / a, -30000.0)
        v1 = v.to(ty).to(gl.float32)
        v2 = (v - v1).to(ty).to(gl.float32)
        v3 = (v - v1 - v2).to(ty).to(gl.float32)
        p16 = gl.arange(0, 16, layout=gl.SliceLayout(0, fl))[None, :]
        lcol = gl.where(p16 == 0, v1[:, None], gl.where(p16 == 1, v2[:, None], gl.where(p16 == 2, v3[:, None], 0.0)))
        l_smem = gl.allocate_shared_memory(ty, [BM, 16], fold_layout, lcol.to(ty))
        ones_s = gl.allocate_shared_memory(ty, [BN, 16], fold_layout, gl.full([BN, 16], 1.0, ty, layout=fl))
        lT = l_smem.permute((1, 0))
        # the parts' sizes enter the accumulation's rounding bound (the margin in _tile_keep)
        vmax2 = 2.0 * gl.max(gl.where(frm, gl.abs(v), 0.0), axis=0)
    else:
        ones_s = q_smem  # (unused)
        lT = qT
        vmax2 = 0.0

    k1base = K1 + (b64 * Hkv + hk) * Lk
    if CAUSAL:
        hi = gl.minimum(Lk, (rb + 1) * BM)
        n_full = gl.minimum(rb * BM, Lk) // BN
    else:
        hi = Lk
        n_full = Lk // BN
    n_t = gl.cdiv(hi, BN)

    n_p = gl.cdiv(n_t, 2)  # PAIR: pairs of tiles
    # the first NB-1 K tiles (PAIR: pairs of tiles) start loading now, under the zeroing stores below
    for s in gl.static_range(NB - 1):
        if PAIR:
            _load_pair(k_desc, k_smem, bars, b, hk, s, n_p, NB, BN)
        else:
            _load_k(k_desc, k_smem, bars, b, hk, s, n_t, NB, BN)

    if ZERO:  # this program's share of the fp32 dK/dV accumulators that phase (b) adds into
        if h % G == 0:
            z_layout: gl.constexpr = gl.BlockedLayout([1, 4], [32 // (D // 4), D // 4], [4, 1], [1, 0])
            zr = gl.arange(0, 64, layout=gl.SliceLayout(1, z_layout))
            zd = gl.arange(0, D, layout=gl.SliceLayout(0, z_layout))
            zrow0 = (b64 * Hkv + hk) * Lk
            zhi = gl.minimum((rb + 1) * z_rows, Lk)
            zv_layout: gl.constexpr = gl.BlockedLayout([1, 4], [32 // (DVP // 4), DVP // 4], [4, 1], [1, 0])
            zrv = gl.arange(0, 64, layout=gl.SliceLayout(1, zv_layout))
            vofs = gl.arange(0, DVP, layout=gl.SliceLayout(0, zv_layout))
            for r0 in range(rb * z_rows, zhi, 64):
                r = r0 + zr
                rr = (zrow0 + r.to(gl.int64))[:, None]
                gl.store(ZK + rr * D + zd[None, :], gl.zeros([64, D], gl.float32, layout=z_layout),
                         mask=(r < zhi)[:, None])
                rv = r0 + zrv
                rrv = (zrow0 + rv.to(gl.int64))[:, None]
                gl.store(ZV + rrv * DV_ + vofs[None, :], gl.zeros([64, DVP], gl.float32, layout=zv_layout),
                         mask=(rv < zhi)[:, None] & (vofs < DV_)[None, :])

    fence_async_shared()  # the Q block, stored by the threads, is read by the tensor cores
    gl.thread_barrier()
    # The tiles below the diagonal need no masking; their epilogue is ~40% shorter. Two pipelined
    # runs (a branch inside one loop was if-converted: every tile paid for the masking).
    if PAIR:
        # the unmasked run in whole pairs (causal: n_full is even); the masked run takes the rest
        p_full = n_full // 2
        if p_full > 0:
            _run_pairs(k_desc, k_smem, bars, qT, ones_s, lT, b, hk, 0, p_full, n_p, 2 * p_full, hi, words, a,
                       lse2, rows, k1base, qinf, key, gamma, vmax2, False, CAUSAL, FOLD, NB, BN, BM, D, mma_layout)
            if p_full < n_p:
                gl.thread_barrier()  # every warp retired the last MMA before its buffer is refilled
                _load_pair(k_desc, k_smem, bars, b, hk, p_full + NB - 2, n_p, NB, BN)
        if p_full < n_p:
            _run_pairs(k_desc, k_smem, bars, qT, ones_s, lT, b, hk, p_full, n_p, n_p, n_t, hi, words, a,
                       lse2, rows, k1base, qinf, key, gamma, vmax2, True, CAUSAL, FOLD, NB, BN, BM, D, mma_layout)
    else:
        if n_full > 0:
            _run_tiles(k_desc, k_smem, bars, qT, ones_s, lT, b, hk, 0, n_full, n_t, hi, words, a, lse2,
                       rows, k1base, qinf, key, gamma, vmax2, False, CAUSAL, FOLD, NB, BN, BM, D, mma_layout)
            if n_full < n_t:
                gl.thread_barrier()  # every warp retired the last MMA before its buffer is refilled
                _load_k(k_desc, k_smem, bars, b, hk, n_full + NB - 2, n_t, NB, BN)
        if n_full < n_t:
            _run_tiles(k_desc, k_smem, bars, qT, ones_s, lT, b, hk, n_full, n_t, n_t, hi, words, a, lse2,
                       rows, k1base, qinf, key, gamma, vmax2, True, CAUSAL, FOLD, NB, BN, BM, D, mma_layout)
    for i in gl.static_range(NB):
        mbarrier.invalidate(bars.index(i))
    gl.thread_barrier()  # every warp's words are in
    if PAIR:
        _expand_pair_words(words, n_t, COLS, CNT, blk, U_cap, TMAX, BN)
    else:
        _expand_words(words, n_t, COLS, CNT, blk, U_cap, TMAX, BN)


def supported(q, k, v, attn_mask, exact: bool) -> bool:
    """Whether union_kernel_sm90 can take this backward's phase (a)."""
    if exact or attn_mask is not None or q.device.type != "cuda":
        return False
    if torch.cuda.get_device_capability(q.device) != (9, 0):
        return False
    # Lk: the per-block keep words staged in shared memory (8 bytes per key tile) stay within 8 KB.
    # Only shapes and dtypes here: under torch.compile this runs on fake tensors (no data pointer);
    # union_sm90 itself copies a key tensor TMA cannot read.
    return (q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] in (64, 128) and 16 <= v.shape[-1] <= 128
            and k.shape[2] <= MAX_LK)


def _gl_dtype(dtype):
    return gl.bfloat16 if dtype == torch.bfloat16 else gl.float16


# (the layouts are cached: built on every call they cost ~5-10 us of host time each, H200 host)
@functools.lru_cache(maxsize=None)
def fold_layout(dtype):
    """Shared layout of the FOLD operands ([BM, 16] parts of -lse2 / a, [BN, 16] ones)."""
    return gl.NVMMASharedLayout.get_default_for([BM.value, 16], _gl_dtype(dtype))


@functools.lru_cache(maxsize=None)
def q_smem_layout(dtype, D):
    """The Q block's shared layout: NVMMA, widest swizzle (the wgmma's B operand)."""
    return gl.NVMMASharedLayout.get_default_for([BM.value, D], _gl_dtype(dtype))


@functools.lru_cache(maxsize=None)
def k_box_layout(dtype, D, pair=False):
    """The K box ([1, 1, BN, D], PAIR: two tiles' rows) and its shared layout (cached: ~15 us of host
    time per backward otherwise)."""
    box = [1, 1, BN.value * (2 if pair else 1), D]
    return box, gl.NVMMASharedLayout.get_default_for(box, _gl_dtype(dtype))


def k_descriptor(k, pair=False):
    """TMA descriptor of K [B, Hkv, Lk, D], any strides TMA takes, one box per tile (PAIR: per pair)."""
    box, layout = k_box_layout(k.dtype, k.shape[-1], pair)
    return TensorDescriptor(k, list(k.shape), list(k.stride()), list(box), layout)


def _new_outputs(q, k, U_cap: int, zero: bool, Dv: int):
    """The op's outputs, uninitialized: the real op fills them, its fake (torch.compile) returns
    them. new_empty makes both real and fake tensors."""
    B, H, Lq, D = q.shape
    n_blk = B * H * triton.cdiv(Lq, BM.value)
    zrows = B * k.shape[1] * k.shape[2] if zero else 1
    return (q.new_empty((n_blk, U_cap), dtype=torch.int32), q.new_empty((n_blk,), dtype=torch.int32),
            q.new_empty((zrows, D if zero else 1), dtype=torch.float32),
            q.new_empty((zrows, Dv if zero else 1), dtype=torch.float32))


def union_sm90_impl(q: Tensor, k: Tensor, lse: Tensor, keys: Tensor, k1: Tensor, U_cap: int, z_rows: int,
                    a: float, gamma: float, log2c: float, causal: bool, zero: bool, Dv: int, NB: int,
                    fold: bool = False, pair: bool = False, maxnreg: int = 0) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(union columns [blocks, U_cap], union sizes [blocks], zeroed fp32 dK and dV accumulators
    (1-element placeholders unless `zero`)) of phase (a): what sus_bwd._union_kernel and
    _union_expand_kernel produce between them, in one launch (a union over U_cap columns: its
    first U_cap and its full size, so phase (b) takes all columns there). Eager callers
    call this directly; traced ones go through the custom op below. `fold`: -lse2 / a added by the
    MMA (the caller's gamma must count its 16 extra products). `pair`: K arrives two tiles per TMA,
    and NB counts buffers of two tiles. `maxnreg` > 0: ptxas's register limit per thread (168 lets
    three CTAs share an SM, if their shared memory fits too)."""
    if fold and q.dtype != torch.bfloat16:
        raise ValueError(f"union_sm90: fold needs bfloat16 inputs (an {q.dtype} part of -lse2 / a can overflow), "
                         f"got {q.dtype}")
    B, H, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    n_rb = triton.cdiv(Lq, BM.value)
    if U_cap < 1:
        raise ValueError(f"union_sm90: the union capacity must be at least 1, got {U_cap}")
    cols, cnt, zk, zv = _new_outputs(q, k, U_cap, zero, Dv)
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.data_ptr() % 16 or any(st % 8 for st in k.stride()[:-1]) or k.stride(-1) != 1:
        k = k.contiguous() if not k.is_contiguous() else k.clone()  # TMA: 16-byte aligned base and strides
    if NB < 3:
        raise ValueError(f"union_sm90: NB (K buffers) must be at least 3, got {NB}")
    args = (q, k_descriptor(k, pair), lse, keys, cols, cnt, k1, zk, zv, q.stride(0), q.stride(1), q.stride(2),
            H, H // Hkv, Hkv, Lq, Lk, n_rb, U_cap, z_rows, a, gamma, log2c)
    constexprs = dict(CAUSAL=bool(causal), D=D, NB=NB, ZERO=bool(zero), DV_=Dv, DVP=max(16, _pow2(Dv)),
                      q_smem_layout=q_smem_layout(q.dtype, D),
                      TMAX=max(256 if pair else 128, _pow2(triton.cdiv(Lk, BN.value))),
                      FOLD=bool(fold), fold_layout=fold_layout(q.dtype) if fold else None, PAIR=bool(pair))
    _launch((n_rb, B * H, 1), args, constexprs, q.device, int(maxnreg))
    return cols, cnt, zk, zv


# The union op is launched once per layer per backward, and `kernel[grid](...)` binds and
# specializes its ~30 arguments on every call: 67 us of host time per launch on the H200 host,
# against 23 us for launching the CompiledKernel that the first launch returns, with the arguments
# in signature order (benchmarks/overhead_pieces.py; stop 17). _compiled keeps those kernels under
# a key that holds everything Triton 3.6 specializes a launch on: the constexprs, and per runtime
# argument its kind, a tensor's dtype and 16-byte alignment, an integer's width and whether it is
# 1 or a multiple of 16 (floats are not specialized; the K descriptor's block and layout follow
# from the dtype, D and PAIR), and the register limit (maxnreg). A launch whose key is new goes
# through kernel[grid](...) (which compiles it if need be).
_compiled: dict = {}
_ARG_ORDER = tuple(union_kernel_sm90.arg_names)


def _int_class(x: int):
    width = 0 if -2 ** 31 <= x < 2 ** 31 else 1
    return (width, x == 1, x % 16 == 0)


def launch_key(args, constexprs, device, maxnreg: int = 0) -> tuple:
    """What Triton specializes union_kernel_sm90's launch on (see above), as a hashable key."""
    key = [device.index, maxnreg, tuple(constexprs[n] for n in ("CAUSAL", "D", "NB", "ZERO", "DV_", "DVP", "TMAX", "FOLD", "PAIR"))]
    for x in args:
        if isinstance(x, Tensor):
            key.append((x.dtype, x.data_ptr() % 16 == 0))
        elif isinstance(x, bool):
            key.append(("b", x))
        elif isinstance(x, int):
            key.append(_int_class(x))
        elif isinstance(x, float):
            key.append("f")
        else:  # the K descriptor
            key.append((x.base.dtype, tuple(x.block_shape)))
    return tuple(key)


def _launch(grid, args, constexprs, device, maxnreg: int = 0) -> None:
    key = launch_key(args, constexprs, device, maxnreg)
    kernel = _compiled.get(key)
    if kernel is not None:
        values = dict(zip(_ARG_ORDER, args), **constexprs)
        kernel[grid](*(values[name] for name in _ARG_ORDER))
        return
    kernel = union_kernel_sm90[grid](*args, **constexprs, num_warps=4, **({"maxnreg": maxnreg} if maxnreg else {}))
    if hasattr(kernel, "__getitem__") and len(_ARG_ORDER) == len(args) + len(constexprs):
        _compiled[key] = kernel


# An opaque op: Inductor cannot trace a Gluon kernel (its user-defined-kernel path re-emits the
# source as @triton.jit), so inside the traced backward (kernels/triton_op.py) this is one node,
# called from Inductor's generated code every backward. Defined with the low-level API for the host
# time, as sus::attention_forward is (sus_fx/ops.py says why).
_lib = torch.library.Library("sus", "FRAGMENT")
_lib.define(
    "union_sm90(Tensor q, Tensor k, Tensor lse, Tensor keys, Tensor k1, int U_cap, int z_rows, float a, "
    "float gamma, float log2c, bool causal, bool zero, int Dv, int NB, bool fold=False, bool pair=False, "
    "int maxnreg=0) "
    "-> (Tensor, Tensor, Tensor, Tensor)")
_lib.impl("union_sm90", union_sm90_impl, "CUDA")
union_sm90 = torch.ops.sus.union_sm90.default


@torch.library.register_fake("sus::union_sm90", lib=_lib)
def _(q, k, lse, keys, k1, U_cap, z_rows, a, gamma, log2c, causal, zero, Dv, NB, fold=False, pair=False, maxnreg=0):
    return _new_outputs(q, k, U_cap, zero, Dv)
