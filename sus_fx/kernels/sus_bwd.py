"""Triton kernels for the SUS attention backward (CUDA; also run under TRITON_INTERPRET=1 in CI).

Four launches per backward, two of them doing the work (see notes/KERNELS.md for the reasoning
and the measurements):

(a) `_union_kernel`, grid (query blocks, B*H). For one block of BM query rows it recomputes
    S = Q K^T tile by tile (causal tiles above the diagonal skipped, masks applied) and finds the
    *union* of the columns that any row of the block can keep. The random numbers are one
    uniform per (block, column): u_j = frac(R_t + (j mod BN) * alpha) on the 2^-23 grid, with
    R_t = mix32(key ^ t) for key tile t, key one Philox word per (seed, b*h, block), mix32 a
    bijective 32-bit hash, and alpha ~ golden ratio (a randomly shifted lattice). Entry (i, j) is
    kept iff u_j < c W_ij, so the keep probability of every entry is exactly
    q'_ij = min(1, ceil(c W_ij 2^23) / 2^23), whatever the correlations.
    Since exp is monotone, "some row keeps j" is u_j < exp2(max_i x_ij) with x the log2 of c W:
    phase (a) needs one max over the rows per column and no per-entry exp. Per key tile it
    writes one word of keep bits (only for tiles holding union columns); `_union_expand_kernel`
    turns the words into the column indices of the union (capacity U_cap per block) and its size.
    (On Hopper the Gluon kernel of union_hopper.py does both in one launch.)
    It also zeroes the fp32 dK/dV accumulators (stores that hide under its compute).
    `_key_l1_kernel` runs first: the L1 norm of every key row, for the rounding margin.
(b) `_sparse_bwd_kernel`, grid (query blocks, B*H). For each chunk of UB union columns it
    gathers K_j, V_j, recomputes S (tensor cores), re-makes the keep decision itself from the
    same u_j, weights kept entries by W / q' (computed from the same fp32 numbers as the
    decision, so exactly unbiased), and runs a dense mini-backward on the [BM, UB] chunk:
    dP = dO V^T, dS = W~ (dP - D), dQ += dS K, dK_j += dS^T Q, dV_j += W~^T dO (fp32 atomics,
    or per-slot partials reduced by index_add_ in deterministic mode).
    Phase (a)'s threshold is raised by a margin that bounds the fp32 rounding difference
    between the two recomputations of S, so a column that phase (b) would keep is always in
    the union. A block whose union overflows U_cap falls back, inside the kernel, to all its
    columns (the decisions are unchanged, only slower): nothing is ever dropped.
c = inf (exact) skips phase (a): every block takes the all-columns path with W~ = W.
"""
from __future__ import annotations

import contextlib
import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
A23 = 5184561  # odd, ~ 0.618 * 2^23: the lattice step on the 2^-23 grid
GRID23 = 8388608.0


def _patch_interpreter_index() -> None:
    """Triton 3.6's interpreter converts loop bounds with int(array of shape (1,)), which numpy >= 2.4
    rejects ("only 0-dimensional arrays can be converted"). Make __index__ take the single element."""
    try:
        from triton.runtime import interpreter as _it
    except Exception:  # pragma: no cover
        return
    if getattr(_it, "_sus_fx_patched", False):
        return
    orig = _it._patch_lang_tensor

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    _it._patch_lang_tensor = patched
    _it._sus_fx_patched = True


if os.environ.get("TRITON_INTERPRET") == "1":
    _patch_interpreter_index()


@triton.jit
def _block_key(seed, bh, rb):
    """One Philox word per (seed, b*h, query block): the key from which every key tile's lattice
    shift R_t is mixed. Shape [1], uint32."""
    z = tl.zeros([1], dtype=tl.int32)
    r, _r1, _r2, _r3 = tl.philox(seed, rb + z, bh + z, z + 1, z)
    return r


@triton.jit
def _block_keys_kernel(KEYS, SEEDS, seed_idx, seed, n_rb, SEED_PTR: tl.constexpr, R: tl.constexpr):
    """KEYS[bh * n_rb + rb] = _block_key(seed, bh, rb) (as int32 bits) for R blocks per program: the
    keys of union_hopper's kernel, which has no Philox of its own."""
    if SEED_PTR:
        seed = (tl.load(SEEDS + seed_idx).to(tl.int64) + seed) & 0x3FFFFFFFFFFFFFFF
    bh = tl.program_id(1)
    rb = tl.program_id(0) * R + tl.arange(0, R)
    z = tl.zeros([R], dtype=tl.int32)
    r, _r1, _r2, _r3 = tl.philox(seed, rb + z, bh + z, z + 1, z)
    tl.store(KEYS + bh.to(tl.int64) * n_rb + rb, r.to(tl.int32, bitcast=True), mask=rb < n_rb)


@triton.jit
def _mix32(x):
    """lowbias32 (C. Wellons): a bijection of the 32-bit integers with strong avalanche. R_t =
    _mix32(key ^ t) is exactly uniform for each t when the key is (a bijection of a uniform
    word), which is all the keep probabilities need; ~7 integer ops where a Philox draw per tile
    was ~100 (on the H200 at 16k: -50 us in the union pass, -90 us in the sparse pass)."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    x = x ^ (x >> 16)
    return x


@triton.jit
def _lattice_u_key(key, t, jl):
    """The uniform of column jl of key tile t: frac(R_t + jl * alpha) on the 2^-23 grid."""
    r = _mix32(key ^ t.to(tl.uint32))
    u = (r + jl.to(tl.uint32) * 5184561) & 0x7FFFFF
    return u.to(tl.int32).to(tl.float32) * (1.0 / 8388608.0)


@triton.jit
def _key_l1_kernel(K, K1, skb, skh, skn, skd, Hkv, Lk, n_rows,
                   D: tl.constexpr, DP: tl.constexpr, R: tl.constexpr):
    """K1[(b * Hkv + h) * Lk + n] = sum_d |K[b, h, n, d]| in fp32, R key rows per program (for
    the union kernel's rounding margin). One pass over K at memory speed: 21.7 us at 16k on the
    H200, where torch's vector_norm took 71."""
    r = tl.program_id(0).to(tl.int64) * R + tl.arange(0, R)
    rm = r < n_rows
    bh = r // Lk
    n = r % Lk
    dofs = tl.arange(0, DP)
    base = (bh // Hkv) * skb + (bh % Hkv) * skh + n * skn
    k = tl.load(K + base[:, None] + dofs[None, :] * skd, mask=rm[:, None] & (dofs < D)[None, :], other=0.0)
    tl.store(K1 + r, tl.sum(tl.abs(k.to(tl.float32)), axis=1), mask=rm)


@triton.jit
def _union_kernel(Q, K, LSE, MASK, TW, TI, NT, K1, ZK, ZV, SEEDS, seed_idx, seed,
                  sqb, sqh, sqm, sqd, skb, skh, skn, skd, smb, smh, smm, smn,
                  H, G, Hkv, Lq, Lk, n_rb, T_cap, z_rows,
                  a, log2c, gamma,
                  HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, CAUSAL: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                  IEEE: tl.constexpr, SEED_PTR: tl.constexpr, ZERO: tl.constexpr,
                  DVP: tl.constexpr, DV_: tl.constexpr, PROBE: tl.constexpr = 0):
    """Records, per key tile that holds union columns of the block, the tile (TI) and its BN keep
    bits (TW, bit j: column t * BN + j), and the number of such tiles (NT, may exceed T_cap): one
    word per tile instead of a cumsum and a scattered store per tile (the scan across the tile's
    warps cost ~20% of this kernel on the H200). `_union_expand_kernel` turns them into columns.
    (Expanding at the end of this kernel, measured on the H200, was slower: the latency-bound
    tail of each program did not hide under the other CTA's MMAs.)
    ZERO: also zero this program's share (z_rows key rows) of the fp32 dK/dV accumulators, which
    phase (b) adds into: the stores hide under this compute-bound kernel (a separate fill costs
    ~60 us at 16k).
    PROBE (benchmarks only, wrong results: every union comes out empty): 1 skips the word's
    reduction and store, 2 also the per-entry epilogue; what phase (a) costs without them says
    where its time goes."""
    tl.static_assert(BN <= 64, "a tile's keep bits must fit one int64 word")
    # Float scalars in fp32 whatever the launcher typed them: Inductor's launch of a traced kernel
    # passes Python floats as fp64, which would turn every per-entry op below into fp64 math
    # (measured 2.9x slower on the H200) and break the fp32 dots.
    a, log2c, gamma = tl.cast(a, tl.float32), tl.cast(log2c, tl.float32), tl.cast(gamma, tl.float32)
    # causal: the last blocks have the most tiles; launching them first keeps them out of the tail
    rb = n_rb - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    if SEED_PTR:  # sampling seed = SEEDS[seed_idx] + offset, read on the device
        seed = (tl.load(SEEDS + seed_idx).to(tl.int64) + seed) & 0x3FFFFFFFFFFFFFFF
    b = bh // H
    h = bh % H
    hk = h // G
    b64 = b.to(tl.int64)
    rows = rb * BM + tl.arange(0, BM)
    rmask = rows < Lq
    dofs = tl.arange(0, DP)
    dmask = dofs < D
    q = tl.load(Q + b64 * sqb + h.to(tl.int64) * sqh + rows[:, None].to(tl.int64) * sqm + dofs[None, :] * sqd,
                mask=rmask[:, None] & dmask[None, :], other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * Lq + rows, mask=rmask, other=0.0)
    lse = tl.where(lse == float("-inf"), 0.0, lse)
    lse2 = tl.where(rmask, lse * 1.4426950408889634 - log2c, float("inf"))  # rows past Lq: x = -inf
    qinf = tl.max(tl.max(tl.abs(q.to(tl.float32)), axis=1), axis=0)
    key = _block_key(seed, bh, rb)
    kbase = K + b64 * skb + hk.to(tl.int64) * skh
    mbase = MASK + b64 * smb + h.to(tl.int64) * smh
    k1base = K1 + (b64 * Hkv + hk) * Lk
    if CAUSAL:
        hi = tl.minimum(Lk, (rb + 1) * BM)
        n_full = tl.minimum(rb * BM, Lk) // BN  # tiles entirely at or below the diagonal of every row
    else:
        hi = Lk
        n_full = Lk // BN
    if HAS_MASK:
        n_full = 0
    nt = rb * 0
    blk = bh.to(tl.int64) * n_rb + rb
    bits = tl.full([BN], 1, tl.int64) << tl.arange(0, BN).to(tl.int64)
    if ZERO:
        if h % G == 0:  # one program per (kv head, row share)
            zr = tl.arange(0, 64)
            zrow0 = (b64 * Hkv + hk) * Lk
            zhi = tl.minimum((rb + 1) * z_rows, Lk)
            vofs = tl.arange(0, DVP)
            for r0 in range(rb * z_rows, zhi, 64):
                r = r0 + zr
                rm = r < zhi
                rr = (zrow0 + r.to(tl.int64))[:, None]
                tl.store(ZK + rr * D + dofs[None, :], tl.zeros([64, DP], tl.float32), mask=rm[:, None] & dmask[None, :])
                tl.store(ZV + rr * DV_ + vofs[None, :], tl.zeros([64, DVP], tl.float32),
                         mask=rm[:, None] & (vofs < DV_)[None, :])
    # Two loops over key tiles, the same body: first the tiles that need no masking, then the rest.
    # The body is written here rather than in a helper: torch.compile's analysis of what a kernel
    # writes follows a stored address back through a helper call's arguments, so a helper that
    # loads K and returns slots would make K look written.
    for MASKED in tl.static_range(2):
        t_lo = 0 if MASKED == 0 else n_full
        t_hi = n_full if MASKED == 0 else tl.cdiv(hi, BN)
        for t in range(t_lo, t_hi):
            # S^T = K Q^T for one key tile: keys on the MMA's M axis, so the max over the block's
            # rows is a per-thread/quad reduction
            cols = t * BN + tl.arange(0, BN)
            cmask = cols < hi
            if MASKED == 1:
                k = tl.load(kbase + cols[:, None].to(tl.int64) * skn + dofs[None, :] * skd,
                            mask=cmask[:, None] & dmask[None, :], other=0.0)
            else:
                k = tl.load(kbase + cols[:, None].to(tl.int64) * skn + dofs[None, :] * skd,
                            mask=dmask[None, :], other=0.0)
            if IEEE:
                st = tl.dot(k, tl.trans(q), input_precision="ieee")
            else:
                st = tl.dot(k, tl.trans(q))
            if PROBE == 2:
                nt += tl.sum((tl.max(st, axis=1) > 3.0e38).to(tl.int32), 0)
            else:
                x = st * a - lse2[None, :]
                if MASKED == 1:
                    valid = cmask[:, None] & rmask[None, :]
                    if CAUSAL:
                        valid = valid & (cols[:, None] <= rows[None, :])
                    if HAS_MASK:
                        mv = tl.load(mbase + rows[None, :].to(tl.int64) * smm + cols[:, None].to(tl.int64) * smn,
                                     mask=valid, other=0)
                        if MASK_BOOL:
                            valid = valid & (mv != 0)
                        else:
                            x = x + mv.to(tl.float32) * 1.4426950408889634
                    x = tl.where(valid, x, float("-inf"))
                m = tl.max(x, axis=1)
                # margin: |x_a - x_b| <= a * gamma * max|q| * sum|k_j| between two fp32 recomputations of S
                k1 = tl.load(k1base + cols, mask=cmask, other=0.0)
                delta = a * gamma * qinf * k1 + 0.0009765625
                u = _lattice_u_key(key, t + tl.zeros([1], dtype=tl.int32), tl.arange(0, BN))
                keepc = (u < tl.exp2(m + delta)) & cmask
                if PROBE == 1:
                    nt += tl.max(keepc.to(tl.int32), 0)
                else:
                    # distinct powers of two: their sum is the bitwise or
                    word = tl.sum(tl.where(keepc, bits, 0), 0)
                    hit = word != 0
                    tl.store(TW + blk * T_cap + nt, word, mask=hit & (nt < T_cap))
                    tl.store(TI + blk * T_cap + nt, t, mask=hit & (nt < T_cap))
                    nt += hit.to(tl.int32)
    if PROBE:
        # no tile words were written: report an empty union (nt >= 0) so that phase (b) reads none,
        # while the probed work stays live
        nt = tl.minimum(nt, 0)
    tl.store(NT + blk, nt)


@triton.jit
def _union_expand_kernel(TW, TI, NT, COLS, CNT, T_cap, U_cap, BN: tl.constexpr, WC: tl.constexpr):
    """Phase (a)'s tile words -> the block's union as ascending column indices (COLS, capacity
    U_cap) and its size (CNT). A block with more than T_cap tiles has a union bigger than U_cap
    (every listed tile holds a column): CNT = max(tiles, U_cap + 1) sends it down phase (b)'s
    all-columns path. One program per block, WC words per step."""
    blk = tl.program_id(0).to(tl.int64)
    nt = tl.load(NT + blk)
    jl = tl.arange(0, BN).to(tl.int64)
    base = nt * 0
    n_w = tl.minimum(nt, T_cap)
    for w0 in range(0, n_w, WC):
        ws = w0 + tl.arange(0, WC)
        wm = ws < n_w
        word = tl.load(TW + blk * T_cap + ws, mask=wm, other=0)
        tile = tl.load(TI + blk * T_cap + ws, mask=wm, other=0)
        on = ((word[:, None] >> jl[None, :]) & 1).to(tl.int32)
        per_word = tl.sum(on, axis=1)
        first = base + tl.cumsum(per_word, 0) - per_word
        pos = first[:, None] + tl.cumsum(on, axis=1) - on
        col = tile[:, None] * BN + jl[None, :].to(tl.int32)
        tl.store(COLS + blk * U_cap + pos, col, mask=(on != 0) & (pos < U_cap))
        base += tl.sum(per_word, 0)
    tl.store(CNT + blk, tl.where(nt > T_cap, tl.maximum(nt, U_cap + 1), base))


@triton.jit
def _sparse_bwd_kernel(Q, K, V, O, DO, LSE, MASK, COLS, CNT, DQ, DK, DV, KEPT, SEEDS, seed_idx, seed,
                       sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
                       sob, soh, som, sod, sdob, sdoh, sdom, sdod, smb, smh, smm, smn,
                       H, G, Hkv, Lq, Lk, n_rb, U_cap,
                       sm_scale, a, log2c, inv_c,
                       HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, CAUSAL: tl.constexpr,
                       EXACT: tl.constexpr, DETERMINISTIC: tl.constexpr, STATS: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, UB: tl.constexpr,
                       D: tl.constexpr, DP: tl.constexpr, DV_: tl.constexpr, DVP: tl.constexpr,
                       IEEE: tl.constexpr, SUB: tl.constexpr, SEED_PTR: tl.constexpr,
                       PREFETCH: tl.constexpr = 0):
    # fp32 scalars: see _union_kernel
    sm_scale, a = tl.cast(sm_scale, tl.float32), tl.cast(a, tl.float32)
    log2c, inv_c = tl.cast(log2c, tl.float32), tl.cast(inv_c, tl.float32)
    if SEED_PTR:
        seed = (tl.load(SEEDS + seed_idx).to(tl.int64) + seed) & 0x3FFFFFFFFFFFFFFF
    # BM rows per program here; phase (a)'s blocks are SUB * BM rows: a sub-block reads its parent
    # block's union (a superset of its own) and the parent's uniforms.
    rs = tl.num_programs(0) - 1 - tl.program_id(0)  # longest first, as in _union_kernel
    rb = rs // SUB
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // G
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    rows = rs * BM + tl.arange(0, BM)
    rmask = rows < Lq
    rows64 = rows.to(tl.int64)
    dofs = tl.arange(0, DP)
    dmask = dofs < D
    vofs = tl.arange(0, DVP)
    vmask = vofs < DV_
    q = tl.load(Q + b64 * sqb + h64 * sqh + rows64[:, None] * sqm + dofs[None, :] * sqd,
                mask=rmask[:, None] & dmask[None, :], other=0.0)
    do = tl.load(DO + b64 * sdob + h64 * sdoh + rows64[:, None] * sdom + vofs[None, :] * sdod,
                 mask=rmask[:, None] & vmask[None, :], other=0.0)
    o = tl.load(O + b64 * sob + h64 * soh + rows64[:, None] * som + vofs[None, :] * sod,
                mask=rmask[:, None] & vmask[None, :], other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)
    lse = tl.load(LSE + bh.to(tl.int64) * Lq + rows, mask=rmask, other=0.0)
    lse = tl.where(lse == float("-inf"), 0.0, lse)
    lse2 = lse * 1.4426950408889634 - log2c
    kbase = K + b64 * skb + hk.to(tl.int64) * skh
    vbase = V + b64 * svb + hk.to(tl.int64) * svh
    mbase = MASK + b64 * smb + h64 * smh
    if CAUSAL:
        hi = tl.minimum(Lk, (rs + 1) * BM)
    else:
        hi = Lk
    blk = bh.to(tl.int64) * n_rb + rb
    key = _block_key(seed, bh, rb)
    if EXACT:
        n_items = hi
    else:
        cnt = tl.load(CNT + blk)
        overflow = cnt > U_cap
        n_items = tl.where(overflow, hi, cnt)
    dq = tl.zeros([BM, DP], dtype=tl.float32)
    kept = tl.zeros([BM], dtype=tl.int32)
    dkv_row0 = (b64 * Hkv + hk) * Lk
    if not EXACT and PREFETCH:
        # the column list is read a chunk ahead: the gathers of chunk ch then wait for one load from
        # L2 (the K/V rows), not two in a row (the indices, then the rows)
        nxt = tl.load(COLS + blk * U_cap + tl.arange(0, UB), mask=(tl.arange(0, UB) < n_items)
                      & (tl.arange(0, UB) < U_cap), other=0)
    for ch in range(0, tl.cdiv(n_items, UB)):
        slots = ch * UB + tl.arange(0, UB)
        smask = slots < n_items
        if EXACT:
            cols = slots
        else:
            if PREFETCH:
                listed = nxt
                s2 = slots + UB
                nxt = tl.load(COLS + blk * U_cap + s2, mask=(s2 < n_items) & (s2 < U_cap), other=0)
            else:
                listed = tl.load(COLS + blk * U_cap + slots, mask=smask & (slots < U_cap), other=0)
            cols = tl.where(overflow, slots, listed)
        cols64 = cols.to(tl.int64)
        kg = tl.load(kbase + cols64[:, None] * skn + dofs[None, :] * skd,
                     mask=smask[:, None] & dmask[None, :], other=0.0)
        vg = tl.load(vbase + cols64[:, None] * svn + vofs[None, :] * svd,
                     mask=smask[:, None] & vmask[None, :], other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(kg), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(kg))
        x = s * a - lse2[:, None]
        valid = rmask[:, None] & smask[None, :]
        if CAUSAL:
            valid = valid & (cols[None, :] <= rows[:, None])
        if HAS_MASK:
            mv = tl.load(mbase + rows64[:, None] * smm + cols64[None, :] * smn, mask=valid, other=0)
            if MASK_BOOL:
                valid = valid & (mv != 0)
            else:
                x = x + mv.to(tl.float32) * 1.4426950408889634
        x = tl.where(valid, x, float("-inf"))
        cw = tl.exp2(x)  # c * W_ij  (W_ij when EXACT)
        if EXACT:
            wt = cw
            keep = valid & (cw > 0)
        else:
            u = _lattice_u_key(key, cols // BN, cols % BN)
            keep = u[None, :] < cw
            qp = tl.minimum(tl.ceil(cw * 8388608.0) * (1.0 / 8388608.0), 1.0)
            wt = tl.where(keep, (cw * inv_c) / tl.where(keep, qp, 1.0), 0.0)
            wt = tl.where(cw != cw, cw, wt)  # NaN in, NaN out (as SDPA)
        if STATS:
            kept += tl.sum(keep.to(tl.int32), axis=1)
        # dV_j += W~_ij dO_i first: short live ranges (registers)
        if IEEE:
            dv_c = tl.dot(tl.trans(wt), do.to(tl.float32), input_precision="ieee")
        else:
            dv_c = tl.dot(tl.trans(wt.to(do.dtype)), do)
        if DETERMINISTIC:
            prow = blk * U_cap + slots.to(tl.int64)
            pm = slots < U_cap
            tl.store(DV + prow[:, None] * DVP + vofs[None, :], dv_c, mask=pm[:, None])
        else:
            tl.atomic_add(DV + (dkv_row0 + cols64[:, None]) * DV_ + vofs[None, :], dv_c,
                          mask=smask[:, None] & vmask[None, :], sem="relaxed")
        if IEEE:
            dp = tl.dot(do, tl.trans(vg), input_precision="ieee")
        else:
            dp = tl.dot(do, tl.trans(vg))
        ds = wt * (dp - delta[:, None])
        if IEEE:
            dq += tl.dot(ds, kg.to(tl.float32), input_precision="ieee")
            dk_c = tl.dot(tl.trans(ds), q.to(tl.float32), input_precision="ieee") * sm_scale
        else:
            dq += tl.dot(ds.to(kg.dtype), kg)
            dk_c = tl.dot(tl.trans(ds.to(q.dtype)), q) * sm_scale
        if DETERMINISTIC:
            # per-slot partials, reduced in a fixed order on the host side (index_add_)
            tl.store(DK + prow[:, None] * DP + dofs[None, :], dk_c, mask=pm[:, None])
        else:
            tl.atomic_add(DK + (dkv_row0 + cols64[:, None]) * D + dofs[None, :], dk_c,
                          mask=smask[:, None] & dmask[None, :], sem="relaxed")
    dq = dq * sm_scale
    tl.store(DQ + ((b64 * H + h64) * Lq + rows64[:, None]) * D + dofs[None, :], dq.to(DQ.dtype.element_ty),
             mask=rmask[:, None] & dmask[None, :])
    if STATS:
        tl.store(KEPT + bh.to(tl.int64) * Lq + rows, kept, mask=rmask)


# ----------------------------------------------------------------------------------------------
# Host side

def _pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def config(D: int, Dv: int, dtype: torch.dtype):
    """Fixed launch configuration chosen from the shape (no autotune: see PYTORCH_NOTES, 164124)."""
    DP = max(16, _pow2(D))
    DVP = max(16, _pow2(Dv))
    big = max(DP, DVP) > 128 or dtype == torch.float32
    cfg = dict(BM=64 if big else 128, BN=64, UB=32 if big else 64, DP=DP, DVP=DVP,
               warps_a=4, warps_b=4 if big else 8, stages_a=2 if big else 3, SUB=1,
               WC=32, warps_e=4, stages_b=1, prefetch_cols=0)
    if not big and DP < 128:
        cfg.update(stages_a=4)
    # Phase (b) at D = 64 stays on D = 128's shape (8 warps, 64-column chunks, one CTA per SM). With
    # 4 warps and 32-column chunks (two CTAs per SM) it took 0.98 -> 0.77 ms in the benchmark (16k,
    # H = 32, random contiguous inputs), but in the GPT at 16k (H = 12, trained attention, strided
    # q/k/v views, compiled) its kernel went from 4.6 to 7.1 ms per step; reading the column list a
    # chunk ahead (prefetch_cols) was neutral at D = 128 and was on in that run too. Both stay
    # knobs until the GPT case is explained (H200; notes/KERNELS.md, stop 13).
    # WC = 32 words per step of the union expansion: 80 registers instead of 189 at 64 (H200, 16k:
    # -31 us); stages_b > 1 (phase (b)'s gathers pipelined by cp.async) was slower (+60 us)
    # D = 128: phase (b) on whole 128-row blocks, 64 union columns per chunk, 8 warps: all five dots
    # wgmma, no spill (H200, 16k: 0.69 ms against 0.77 for 64-row halves with 32 columns and 4
    # warps, the H100 choice of stop 7; notes/KERNELS.md, stop 11)
    # Phase (a) in Gluon (union_hopper.py) where the GPU is an sm_90 one and the shape fits it
    # (H200, 16k: 1.13 ms against 1.31 at D = 128, 1.52 against 1.57 at D = 64; notes/KERNELS.md,
    # stop 12)
    cfg["SM90"] = 0 if big else 1
    # FOLD (bf16 only, see run_union): the Gluon union adds -lse2 / a in its MMA (a k16 wgmma more
    # per tile, no per-entry FFMA): 16k union 1.106 -> 1.067 ms at D = 128, 1.491 -> 1.463 at
    # D = 64 (H200; notes/KERNELS.md, stop 13)
    cfg["FOLD"] = cfg["SM90"]
    # PAIR (D = 64): the Gluon union loads K two tiles per TMA, into NBP = 3 buffers of two tiles (48
    # KB; at D = 128 they would take 96 KB and leave one CTA per SM): 4 CTA barriers per two tiles
    # instead of 7. H200, 16k: sus_backward -5.5% (H = 32), -3.2% (GPT-shaped rows); stop 18
    cfg["PAIR"] = int(cfg["SM90"] and DP == 64)
    cfg["NBP"] = 3
    # > 0: ptxas's register limit for the Gluon union. 168 lets three CTAs share an SM; with PAIR it
    # measured no faster (H200, stop 18), so it stays a knob
    cfg["MAXNREG"] = 0
    return cfg


_OVERRIDE: dict = {}  # benchmarks may set keys of config() here
_DEBUG: dict = {}


def union_capacity(c: float, Lk, BM: int) -> int:
    """Union slots per block: BM * c (at least 64, a power of two), or fewer where Lk is smaller.
    The union is the columns any of the BM rows keeps: at most the sum of the rows' kept counts,
    whose mean is <= c per row, so BM * c holds even rows that keep disjoint columns, unless they
    also draw far above their mean. A block beyond the capacity takes the all-columns path, exact
    in its decisions but as slow as a dense backward, so the capacity must not be what a training
    run trips over. It was 64 c until stop 16, and that was overrun:
      - GPT-124M training at 8k, c = 8 (H200): steps of 37-40 ms among steps of 24-27 ms; with 4096
        slots the 90th percentile went 37.4 -> 30.6 ms (benchmarks/results/h200_stop16_*);
      - peaky random rows (q x 3, head dim 64, 16k, c = 8): phase (b) 5.9 ms against 0.34 ms with
        64-row blocks, whose unions fit.
    The slots cost 4 bytes each, 4 n c bytes per head (16k, c = 32, 12 heads: 25 MB), written only
    where the union has a column.
    A symbolic Lk (dynamic shapes) is not read: the capacity must not specialize the graph."""
    cap = max(64, _pow2(int(math.ceil(BM * c))))
    return cap if isinstance(Lk, torch.SymInt) else int(min(_pow2(max(Lk, 1)), cap))


def tile_capacity(U_cap: int, Lk, BN: int) -> int:
    """Tile slots per block: U_cap, or the number of key tiles where that is fewer (a symbolic Lk
    is not read, as in union_capacity)."""
    return U_cap if isinstance(Lk, torch.SymInt) else max(1, min(U_cap, triton.cdiv(int(Lk), BN)))


def cnt_dummy(device):
    return torch.empty(1, dtype=torch.int64, device=device)  # not read (SEED_PTR=False)


def _mask_args(attn_mask, B, H, Lq, Lk, device):
    if attn_mask is None:
        dummy = torch.empty(1, dtype=torch.uint8, device=device)
        return dummy, (0, 0, 0, 0), False, False
    m = attn_mask
    while m.dim() < 4:
        m = m.unsqueeze(0)
    m = m.expand(B, H, Lq, Lk)
    is_bool = m.dtype == torch.bool
    if is_bool:
        m = m.view(torch.uint8)
    return m, tuple(m.stride()), True, is_bool


@contextlib.contextmanager
def _torch_deterministic():
    """torch's deterministic mode for the reductions below, whatever the caller's setting (the
    kernels may be asked for deterministic sums explicitly, with the global flag off)."""
    prev, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=warn_only)


def _direct(kernel):
    return kernel


GLUON_TRITON = ("3.6.",)  # Triton versions whose Gluon union_hopper.py was compiled and run with


def _sm90_union():
    """The Gluon phase (a) module, or None: Gluon is experimental and its API moves between Triton
    releases, and a kernel that fails to compile would fail inside the backward. Other Triton
    versions keep the Triton kernel unless SUS_FX_GLUON=1 (to try one)."""
    if not triton.__version__.startswith(GLUON_TRITON) and os.environ.get("SUS_FX_GLUON") != "1":
        return None
    try:
        from . import union_hopper
    except Exception:  # pragma: no cover  (a Triton without this Gluon API)
        return None
    return union_hopper


def sus_backward(grad_out, q, k, v, attn_mask, out, lse, is_causal, scale, c, sample_seed,
                 deterministic=None, want_kept=False, launch=_direct):
    """(dq, dk, dv[, kept per row, (union size per block, union capacity) or None if c = inf]) for
    canonical 4-D CUDA (or interpreter CPU) tensors.

    `launch` wraps each kernel before it is launched: torch.library.wrap_triton when this runs
    inside the triton_op (sus_fx/kernels/triton_op.py), so that torch.compile traces the launches.
    That path must stay free of host syncs and data-dependent Python: deterministic mode (which
    sizes its buffers from the union counts) is only taken outside it."""
    B, H, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = H // Hkv
    dev = q.device
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    cfg = dict(config(D, Dv, q.dtype))
    cfg.update(_OVERRIDE)
    BM, BN, UB, DP, DVP = cfg["BM"], cfg["BN"], cfg["UB"], cfg["DP"], cfg["DVP"]
    exact = math.isinf(c)
    ieee = q.dtype == torch.float32
    n_rb = triton.cdiv(Lq, BM)
    lse = lse.contiguous()
    if lse.dtype != torch.float32:
        lse = lse.float()
    mask_t, ms, has_mask, mask_bool = _mask_args(attn_mask, B, H, Lq, Lk, dev)
    a = float(scale) * LOG2E
    log2c = 0.0 if exact else math.log2(c)
    inv_c = 1.0 if exact else 1.0 / c
    if isinstance(sample_seed, tuple):  # (int64 tensor, index, offset): seed read on the device
        seeds_t, seed_idx, seed = sample_seed[0], int(sample_seed[1]), int(sample_seed[2]) & ((1 << 62) - 1)
        seed_ptr = True
    else:
        seeds_t, seed_idx, seed = cnt_dummy(dev), 0, int(sample_seed) & ((1 << 62) - 1)
        seed_ptr = False
    grid = (n_rb, B * H)

    U_cap = 0 if exact else int(cfg.get("U_cap", union_capacity(c, Lk, BM)))
    if exact:  # phase (b) reads no union (placeholders); otherwise run_union below makes it
        cols = torch.empty(1, dtype=torch.int32, device=dev)
        cnt = torch.empty(1, dtype=torch.int32, device=dev)

    # The fp32 dK/dV accumulators of the atomics path are zeroed at the start of the union kernel
    # (ZERO; the fastest of the variants timed on the H200, 0.14 ms less than torch.zeros at 16k);
    # otherwise it gets two 1-element dummies (distinct: one tensor passed twice would look aliased
    # to torch.compile's analysis of what a kernel writes) and the buffers are made below.
    zero_in_union = not exact and not deterministic and bool(cfg.get("zero", 1))
    # Phase (a) on Hopper: the Gluon kernel with its explicit MMA pipeline (union_hopper.py), where
    # config() picks it and it applies; SM90=0 keeps the Triton kernel (benchmarks compare the two).
    sm90 = _sm90_union() if int(cfg.get("SM90", 0)) and BM == 128 and BN == 64 else None
    if sm90 is not None and not sm90.supported(q, k, v, attn_mask, exact):
        sm90 = None
    if zero_in_union and sm90 is None:
        dk_buf = torch.empty((B * Hkv * Lk, D), dtype=torch.float32, device=dev)
        dv_buf = torch.empty((B * Hkv * Lk, Dv), dtype=torch.float32, device=dev)
    else:
        dk_buf, dv_buf = (torch.empty(1, dtype=torch.float32, device=dev) for _ in range(2))

    def run_union(U_cap):
        """Phase (a): (union columns [blocks * U_cap], union size per block)."""
        nonlocal dk_buf, dv_buf
        if sm90 is not None:
            keys = torch.empty(B * H * n_rb, dtype=torch.int32, device=dev)
            launch(_block_keys_kernel)[(triton.cdiv(n_rb, 128), B * H)](keys, seeds_t, seed_idx, seed, n_rb,
                                                                        SEED_PTR=seed_ptr, R=128, num_warps=4)
            # eager: the function itself (the custom-op layer costs host time); traced: the opaque op
            union = sm90.union_sm90_impl if launch is _direct else torch.ops.sus.union_sm90
            # FOLD: -lse2 / a added by the MMA (16 more products per entry), in three parts of Q's
            # dtype: bf16 only, since an fp16 part overflows where |lse2 / a| > 65504, and an -inf
            # part would empty the union (a wrong gradient, not a slow one)
            fold = bool(cfg["FOLD"]) and q.dtype == torch.bfloat16
            # (the Gluon kernel lists the columns itself: no tile words, no expansion launch)
            # PAIR: K two tiles per TMA (NBP buffers of two tiles): half the waits, barriers and TMAs
            pair = bool(cfg.get("PAIR", 0))
            ucols, ucnt, zk, zv = union(
                q, k, lse, keys, k1, U_cap, triton.cdiv(Lk, n_rb), a, 4.0 * (D + 16 * fold) * 2.0 ** -24, log2c,
                bool(is_causal), zero_in_union, Dv, int(cfg.get("NBP", 3) if pair else cfg.get("NB", 4)), fold, pair,
                int(cfg.get("MAXNREG", 0)))
            if zero_in_union:
                dk_buf, dv_buf = zk, zv
            return ucols.view(-1), ucnt
        # every listed tile holds >= 1 union column, so U_cap tile slots cover any union that fits,
        # and no block lists more than the key tiles there are (int64 words: 8 bytes a slot)
        T_cap = int(cfg.get("T_cap", tile_capacity(U_cap, Lk, BN)))  # (a smaller T_cap: tests of the overflow path)
        ucols = torch.empty(max(1, B * H * n_rb * U_cap), dtype=torch.int32, device=dev)
        ucnt = torch.empty(B * H * n_rb, dtype=torch.int32, device=dev)
        tw = torch.empty((B * H * n_rb, T_cap), dtype=torch.int64, device=dev)
        ti = torch.empty((B * H * n_rb, T_cap), dtype=torch.int32, device=dev)
        nt = torch.empty(B * H * n_rb, dtype=torch.int32, device=dev)
        launch(_union_kernel)[grid](
            q, k, lse, mask_t, tw, ti, nt, k1, dk_buf, dv_buf, seeds_t, seed_idx, seed,
            *q.stride(), *k.stride(), *ms,
            H, G, Hkv, Lq, Lk, n_rb, T_cap, triton.cdiv(Lk, n_rb),
            a, log2c, 4.0 * D * 2.0 ** -24,
            HAS_MASK=has_mask, MASK_BOOL=mask_bool, CAUSAL=bool(is_causal),
            BM=BM, BN=BN, D=D, DP=DP, IEEE=ieee, SEED_PTR=seed_ptr,
            ZERO=zero_in_union, DVP=DVP, DV_=Dv, PROBE=int(cfg.get("PROBE", 0)),
            num_warps=cfg["warps_a"], num_stages=cfg["stages_a"],
            # (a register cap for more CTAs per SM: a benchmark knob, not set by default)
            **({"maxnreg": int(cfg["maxnreg_a"])} if "maxnreg_a" in cfg else {}))
        launch(_union_expand_kernel)[(B * H * n_rb,)](tw, ti, nt, ucols, ucnt, T_cap, U_cap, BN=BN, WC=cfg["WC"],
                                                        num_warps=cfg["warps_e"])
        return ucols, ucnt

    if not exact:
        k1 = torch.empty(B * Hkv * Lk, dtype=torch.float32, device=dev)  # L1 norm of each key row
        launch(_key_l1_kernel)[(triton.cdiv(B * Hkv * Lk, 64),)](k, k1, *k.stride(), Hkv, Lk, B * Hkv * Lk,
                                                                D=D, DP=DP, R=64, num_warps=4)
        cols, cnt = run_union(U_cap)
        if "debug" in cfg:
            _DEBUG.update(cnt=cnt, cols=cols, U_cap=U_cap, BM=BM)
            if cfg["debug"] == "union_only":
                return None
        if deterministic:
            # the partial buffers are per slot: size the capacity so that no block overflows (the
            # Triton union's count of an overflowing block is a lower bound, so this may take more
            # than one round; the Gluon union's counts are exact)
            need = int(cnt.max().item()) if cnt.numel() else 0
            while need > U_cap:
                U_cap = _pow2(need)
                cols, cnt = run_union(U_cap)
                need = int(cnt.max().item())
            fit = _pow2(max(need, 1))
            if fit < U_cap:  # fewer slots: the partials are [slots, D] fp32 each
                cols = cols.view(-1, U_cap)[:, :fit].contiguous().view(-1)
                U_cap = fit
    elif deterministic:
        U_cap = _pow2(Lk if not is_causal else min(Lk, n_rb * BM))

    # Buffers the kernels write are 2-D (row-major, as the kernels index them) and viewed as 4-D
    # afterwards. This was a try at pytorch/pytorch#181735 (torch 2.11, dynamic shapes, a written
    # buffer with a size-1 leading dim); it did not avoid it on the H200, ops._triton_op_takes
    # does (symbolic shapes keep the opaque op there). The H200 results were measured with it.
    dq = torch.empty((B * H * Lq, D), dtype=q.dtype, device=dev)
    if deterministic:
        nslots = B * H * n_rb * U_cap
        dk_buf = torch.zeros((nslots, DP), dtype=torch.float32, device=dev)
        dv_buf = torch.zeros((nslots, DVP), dtype=torch.float32, device=dev)
    elif not zero_in_union:
        dk_buf = torch.zeros((B * Hkv * Lk, D), dtype=torch.float32, device=dev)
        dv_buf = torch.zeros((B * Hkv * Lk, Dv), dtype=torch.float32, device=dev)
    # (a separate dummy when not recording: a tensor passed twice to one kernel would look aliased
    # to torch.compile's analysis of what the kernel mutates)
    kept = torch.empty((B, H, Lq) if want_kept else (1,), dtype=torch.int32, device=dev)
    SUB = 1 if deterministic else int(cfg.get("SUB", 1))  # deterministic partials are per parent-block slot
    launch(_sparse_bwd_kernel)[(n_rb * SUB, B * H)](
        q, k, v, out, grad_out, lse, mask_t, cols, cnt, dq, dk_buf, dv_buf, kept, seeds_t, seed_idx, seed,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *grad_out.stride(), *ms,
        H, G, Hkv, Lq, Lk, n_rb, U_cap,
        float(scale), a, log2c, inv_c,
        HAS_MASK=has_mask, MASK_BOOL=mask_bool, CAUSAL=bool(is_causal),
        EXACT=exact, DETERMINISTIC=bool(deterministic), STATS=bool(want_kept),
        BM=BM // SUB, BN=BN, UB=UB, D=D, DP=DP, DV_=Dv, DVP=DVP, IEEE=ieee, SUB=SUB, SEED_PTR=seed_ptr,
        PREFETCH=int(cfg["prefetch_cols"]), num_warps=cfg["warps_b"], num_stages=int(cfg["stages_b"]))
    if deterministic:
        # slot s of block (b, h, rb) holds column cols[s] (exact: column s)
        if exact:
            col_idx = torch.arange(U_cap, device=dev, dtype=torch.int64).expand(B * H * n_rb, U_cap)
            nvalid = torch.full((B * H * n_rb, 1), Lk, device=dev)
        else:
            col_idx = cols.view(B * H * n_rb, U_cap).long()
            nvalid = cnt.view(-1, 1).long()
        slot = torch.arange(U_cap, device=dev)[None, :]
        ok = slot < torch.minimum(nvalid, torch.tensor(Lk, device=dev))
        bh = torch.arange(B * H, device=dev).repeat_interleave(n_rb)
        kvrow = ((bh // H) * Hkv + (bh % H) // G) * Lk
        flat = torch.where(ok, kvrow[:, None] + torch.where(ok, col_idx, 0), 0).reshape(-1)
        with _torch_deterministic():  # index_add_ on CUDA sums in a fixed order only in this mode
            dk32 = torch.zeros((B * Hkv * Lk, DP), dtype=torch.float32, device=dev).index_add_(0, flat, dk_buf)
            dv32 = torch.zeros((B * Hkv * Lk, DVP), dtype=torch.float32, device=dev).index_add_(0, flat, dv_buf)
        dk = dk32[:, :D].reshape(B, Hkv, Lk, D).to(k.dtype)
        dv = dv32[:, :Dv].reshape(B, Hkv, Lk, Dv).to(v.dtype)
    else:
        # one fp32 accumulator freed before the other is cast: peak memory is one fp32 buffer less
        dk = dk_buf.view(B, Hkv, Lk, D).to(k.dtype)
        del dk_buf
        dv = dv_buf.view(B, Hkv, Lk, Dv).to(v.dtype)
        del dv_buf
    dq = dq.view(B, H, Lq, D)
    if want_kept:
        # (the union sizes per block and the capacity; cnt > U_cap: the block took all columns)
        return dq, dk, dv, kept, (None if exact else (cnt, U_cap))
    return dq, dk, dv
