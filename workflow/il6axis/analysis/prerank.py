"""Preranked GSEA by gene-label permutation: gseapy 1.3.1's ``prerank`` results bit for bit, in little memory.

Why this exists: gseapy's Rust core draws every permutation of the whole ranking up front and keeps them
all (each as an index vector plus a hash map of the same length, ~0.8 MB per permutation at 17,600 genes),
then a 0/1 tag vector per permutation for each gene set. With 1,000 permutations that is ~0.8 GB resident
at once, several times what the rest of the expression/scores step needs. This module draws the *same*
permutations (same generator, same seed, same shuffle) one at a time, keeps only where the gene-set genes
land, and scores permutations in blocks, so memory is O(block x set genes) and the statistics (ES, NES,
nominal p, FDR, leading edge) equal gseapy's to the last bit (checked against gseapy in
tests/test_expression_memory.py and bench/bench_expression_memory.py).

What is reproduced, from gseapy 1.3.1 (Rust crate ``rand`` 0.9.2, 64-bit):

- generator: ``SmallRng`` = xoshiro256++, state from the u64 seed by SplitMix64; 32-bit draws are the upper
  half of a 64-bit output. Outputs are produced many at a time: the state update is linear over GF(2), so
  the state ``L`` steps ahead is a 256 x 256 bit-matrix product, and ``K`` lanes ``L`` steps apart run
  side by side in NumPy.
- shuffle: permutation 0 is the ranking itself; permutation k shuffles permutation k - 1 in place
  (Fisher-Yates from the front; ``rand``'s ``IncreasingUniform`` packs several indices into one bounded
  32-bit draw, drawn by the widening-multiply method with one extra draw when the first one is biased).
  Only the swap indices are computed; where each set gene ends up is followed through the swaps.
- enrichment score: gseapy's ``fast_random_walk`` (weight 1: ``|stat|``), same floating-point operations in
  the same order (sums are sequential, as Rust's).
- statistics: nominal p, NES (per-set mean of the same-signed null), FDR over the sets of one library
  (name prefix before ``__``) from the pooled normalised null, and the leading edge from the running sum.

:func:`prerank` returns None where this port is not used and gseapy is called instead: gseapy's
upper-casing of gene names (ranking mostly not upper case, sets upper case), no permutations, a seed
outside u64, or a degenerate set (NaN ES or NES).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

_M32 = (1 << 32) - 1
_M64 = (1 << 64) - 1
_B32 = 1 << 32
# Lanes x steps of one block of generator draws: 262,144 32-bit draws (1 MiB), ~30 shuffles of 17,600 genes.
LANES = 1024
LANE_STEPS = 256
# Permutations scored together (positions of the set genes: PERMUTATION_BLOCK x set genes integers).
PERMUTATION_BLOCK = 250


@dataclass(frozen=True)
class SetResult:
    """One gene set's preranked GSEA, as gseapy reports it (``Lead_genes`` joined by ``;``)."""

    es: float
    nes: float
    pval: float
    fdr: float
    lead_genes: str


# ---- generator: xoshiro256++ (rand 0.9.2 SmallRng on 64-bit) ---------------------------------------------


def _seed_state(seed: int) -> list[int]:
    """SplitMix64 expansion of the u64 seed into the four state words (rand's ``seed_from_u64``)."""
    state, words = seed, []
    for _ in range(4):
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        words.append(z ^ (z >> 31))
    return words


def _advance(words: list[int]) -> list[int]:
    """One xoshiro256 state update (the linear part; the output function is not needed here)."""
    s0, s1, s2, s3 = words
    t = (s1 << 17) & _M64
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = ((s3 << 45) | (s3 >> 19)) & _M64
    return [s0, s1, s2, s3]


def _to_bits(words: list[int]) -> np.ndarray:
    """State words -> 256 bits (word w, bit b at 64 w + b)."""
    return np.unpackbits(np.array(words, dtype="<u8").view(np.uint8), bitorder="little")


def _gf2_product(matrix: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """``matrix @ bits`` over GF(2), by a float32 product (exact: sums <= 256) on one BLAS thread."""
    with threadpool_limits(1):  # a 256 x 256 product: extra threads only contend
        return (np.matmul(matrix, bits.astype(np.float32)).astype(np.uint16) & 1).astype(np.uint8)


def _jump_matrix(steps: int) -> np.ndarray:
    """The 256 x 256 GF(2) matrix of ``steps`` state updates."""
    one = np.empty((256, 256), dtype=np.uint8)
    for k in range(256):
        basis = [0, 0, 0, 0]
        basis[k // 64] = 1 << (k % 64)
        one[:, k] = _to_bits(_advance(basis))
    result, base = np.eye(256, dtype=np.uint8), one
    while steps:
        if steps & 1:
            result = _gf2_product(result, base)
        base = _gf2_product(base, base)
        steps >>= 1
    return result.astype(np.float32)


class _Draws:
    """The generator's 32-bit draws in stream order, produced ``lanes x lane_steps`` at a time.

    Lane l of a block starts ``l * lane_steps`` draws after the block's start; the next block's lane starts
    are this block's advanced by ``lanes * lane_steps`` steps (one GF(2) matrix product for all lanes).
    """

    def __init__(self, seed: int, lanes: int = LANES, lane_steps: int = LANE_STEPS):
        if lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of 2, got {lanes}")
        self._lane_steps = lane_steps
        starts = _to_bits(_seed_state(seed))[:, None]
        jump = _jump_matrix(lane_steps)
        while starts.shape[1] < lanes:  # lanes [0, m) -> [0, 2m): advance all by m * lane_steps
            starts = np.concatenate([starts, _gf2_product(jump, starts)], axis=1)
            jump = _gf2_product(jump, jump).astype(np.float32)
        self._starts = starts  # 256 bits x lanes
        self._block_jump = jump  # lanes * lane_steps steps
        self._buffer = np.empty(0, dtype=np.uint32)
        self._pos = 0

    def _block(self) -> np.ndarray:
        packed = np.packbits(self._starts, axis=0, bitorder="little")  # 32 bytes x lanes
        words = np.ascontiguousarray(packed.T).view("<u8").astype(np.uint64)  # lanes x 4
        s0, s1, s2, s3 = (words[:, i].copy() for i in range(4))
        x, y, t = np.empty_like(s0), np.empty_like(s0), np.empty_like(s0)
        c17, c19, c23, c32, c41, c45 = (np.uint64(c) for c in (17, 19, 23, 32, 41, 45))
        out = np.empty((self._lane_steps, len(s0)), dtype=np.uint32)
        for step in range(self._lane_steps):  # uint64 arithmetic wraps modulo 2**64, as Rust's wrapping_add
            np.add(s0, s3, out=x)
            np.left_shift(x, c23, out=y)
            np.right_shift(x, c41, out=x)
            np.bitwise_or(x, y, out=x)
            np.add(x, s0, out=x)
            np.right_shift(x, c32, out=x)
            out[step] = x  # the draw: the upper 32 bits of the output
            np.left_shift(s1, c17, out=t)
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            np.left_shift(s3, c45, out=y)
            np.right_shift(s3, c19, out=s3)
            s3 |= y
        self._starts = _gf2_product(self._block_jump, self._starts)
        return out  # steps x lanes: lane after lane (out.T) is stream order

    def take(self, n: int) -> list[int]:
        """The next ``n`` draws (not consumed: call :meth:`consume` with how many were used)."""
        while len(self._buffer) - self._pos < n:
            left = self._buffer[self._pos :]
            block = self._block()
            buffer = np.empty(len(left) + block.size, dtype=np.uint32)
            buffer[: len(left)] = left
            buffer[len(left) :].reshape(block.shape[::-1])[...] = block.T
            self._buffer, self._pos = buffer, 0
        return self._buffer[self._pos : self._pos + n].tolist()

    def consume(self, n: int) -> None:
        self._pos += n


# ---- shuffle: rand 0.9.2 SliceRandom::shuffle (IncreasingUniform) ------------------------------------------


def _chunk_bound(m: int) -> tuple[int, int]:
    """(m (m+1) ... (m+c-1), c), c as large as fits in 32 bits (rand's ``calculate_bound_u32``)."""
    product, current = m, m + 1
    while product * current <= _M32:
        product *= current
        current += 1
    return product, current - m


@dataclass(frozen=True)
class _ShufflePlan:
    """The bounded draws one shuffle of ``n`` items makes, and how their digits become swap indices.

    Which steps share a draw depends on ``n`` only; the draws' values come from the generator.
    """

    n: int
    requests: list[tuple[int, int]]  # (bound, 2**32 - bound) per draw
    # Per digit d: (draws with a d-th digit, their steps, radix = step + 1, whether d is the draw's last)
    digits: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]

    @classmethod
    def build(cls, n: int) -> _ShufflePlan:
        requests, first, count, chunk = [], [], [], []
        step = 1  # step 0 swaps item 0 with itself and draws nothing
        while step < n:
            bound, remaining = _chunk_bound(step + 1)
            requests.append((bound, (_B32 - bound) & _M32))
            first.append(step)
            count.append(min(remaining, n - step))
            chunk.append(remaining)
            step += remaining
        first_a, count_a, chunk_a = np.array(first), np.array(count), np.array(chunk)
        digits = []
        for d in range(int(count_a.max()) if len(count_a) else 0):
            draw = np.flatnonzero(count_a > d)
            steps = first_a[draw] + d
            digits.append((draw, steps, steps + 1, chunk_a[draw] - 1 == d))
        return cls(n=n, requests=requests, digits=digits)

    def swap_indices(self, draws: _Draws) -> np.ndarray:
        """Index swapped with position i at step i, for i in 0..n-1, for the next shuffle."""
        requests = self.requests
        values, p = draws.take(2 * len(requests)), 0  # a draw takes at most two values
        chunks = []
        append = chunks.append
        for bound, threshold in requests:  # the one sequential part: a biased draw takes a second one
            x = values[p] * bound
            p += 1
            low = x & _M32
            if low > threshold:
                if low + ((values[p] * bound) >> 32) > _M32:
                    x += _B32
                p += 1
            append(x >> 32)
        draws.consume(p)
        chunk = np.array(chunks, dtype=np.int64)
        swap = np.zeros(self.n, dtype=np.int64)
        for draw, steps, radix, last in self.digits:
            value = chunk[draw]
            swap[steps] = np.where(last, value, value % radix)
            chunk[draw] = np.where(last, value, value // radix)
        return swap


def _follow(swap: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Where the items at ``positions`` end up after the swaps ``(i, swap[i])`` for i = 0, 1, ..., n-1.

    Step i swaps positions i and swap[i] <= i, so nothing before step q touches the item at q; step q
    moves it to swap[q], and after that it moves only at a step i whose swap index is its position (to i).
    Chains are short (a few moves), and every item is followed at once.
    """
    n = len(swap)
    order = np.argsort(swap.astype(np.uint16) if n <= 1 << 16 else swap, kind="stable")  # radix for uint16
    keys = swap[order] * n + order  # (swap index, step), sorted
    at, after = swap[positions], positions.copy()
    while True:
        k = np.searchsorted(keys, at * n + after, side="right")  # first step > after swapping at `at`
        hit = keys[np.minimum(k, n - 1)]
        moves = (k < n) & (hit // n == at)
        if not moves.any():
            return at
        at = np.where(moves, hit % n, at)
        after = np.where(moves, at, after)


# ---- enrichment scores and statistics (gseapy's Rust stats, weight 1) ------------------------------------


def _sequential_sum(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Left-to-right sum (Rust's ``iter().sum()``), not NumPy's pairwise one."""
    return np.add.accumulate(values, axis=axis).take(-1, axis=axis)


def _walk_es(metric: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """gseapy ``fast_random_walk`` for each row of sorted hit positions (rows = permutations)."""
    n_genes, k = float(len(metric)), float(hits.shape[1])
    values = metric[hits]
    q1 = 1.0 / (n_genes - k)
    q2 = 1.0 / _sequential_sum(values, axis=1)
    res = np.zeros(hits.shape[0])
    cur = np.zeros(hits.shape[0])
    last = np.full(hits.shape[0], -1.0)
    for col in range(hits.shape[1]):
        pos = hits[:, col].astype(np.float64)
        cur = cur - q1 * (pos - last - 1.0)
        res = np.where(np.abs(cur) > np.abs(res), cur, res)
        cur = cur + q2 * values[:, col]
        res = np.where(np.abs(cur) > np.abs(res), cur, res)
        last = pos
    return res


def _running_es(metric: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """gseapy ``running_enrichment_score`` of the observed ranking (for the leading edge)."""
    tag = np.zeros(len(metric))
    tag[hits] = 1.0
    correl = tag * metric
    norm_tag = 1.0 / _sequential_sum(correl)
    norm_notag = 1.0 / (len(metric) - _sequential_sum(tag))
    return np.add.accumulate(correl * norm_tag - (1.0 - tag) * norm_notag)


def _nominal_p(es: float, null: np.ndarray) -> float:
    if es < 0.0:
        deno, nomi = int((null < 0.0).sum()), int((null <= es).sum())
    else:
        deno, nomi = int((null >= 0.0).sum()), int((null >= es).sum())
    return 1.0 if deno == 0 else nomi / deno


def _normalise(es: float, null: np.ndarray) -> tuple[float, np.ndarray]:
    """NES and the normalised null: divided by the mean of the same-signed null (the ES itself if none)."""
    pos, neg = null[null >= 0.0], null[null < 0.0]
    pos_mean = _sequential_sum(pos) / len(pos) if len(pos) else np.float64(es)
    neg_mean = _sequential_sum(neg) / len(neg) if len(neg) else np.float64(es)
    nes = es / pos_mean if es >= 0.0 else es / abs(neg_mean)  # NumPy scalars: 0/0 is NaN, not an error
    return float(nes), np.where(null >= 0.0, null / pos_mean, null / abs(neg_mean))


def _fdr(nes: np.ndarray, nes_null: np.ndarray) -> np.ndarray:
    """GSEA FDR per set from the pooled normalised null of the library, capped at 1."""
    null, obs = np.sort(nes_null), np.sort(nes)
    null_neg, obs_neg = np.searchsorted(null, 0.0, "left"), np.searchsorted(obs, 0.0, "left")
    out = np.empty(len(nes))
    for i, e in enumerate(nes):
        if e < 0.0:
            obs_higher, null_higher = np.searchsorted(obs, e, "right"), np.searchsorted(null, e, "right")
            null_n, obs_n = null_neg, obs_neg
        else:
            obs_higher = len(obs) - np.searchsorted(obs, e, "left")
            null_higher = len(null) - np.searchsorted(null, e, "left")
            null_n, obs_n = len(null) - null_neg, len(obs) - obs_neg
        phi_null = int(null_higher) / int(null_n) if null_n > 0 else 0.0
        phi_obs = int(obs_higher) / int(obs_n) if obs_n > 0 else 0.0
        out[i] = min(np.float64(phi_null) / np.float64(phi_obs), 1.0)
    return out


def _mostly_upper(genes: Sequence[object]) -> bool:
    """gseapy's ``check_uppercase``: False for all-integer IDs, else >= 90% of names upper case."""

    def integer(g: object) -> bool:
        try:
            int(g)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False
        return True

    if all(integer(g) for g in genes):
        return False
    return sum(str(g).isupper() for g in genes) / len(genes) >= 0.9


def prerank(
    ranking: pd.Series,
    gene_sets: Mapping[str, Sequence[str]],
    permutations: int,
    seed: int,
    block: int = PERMUTATION_BLOCK,
) -> dict[str, SetResult] | None:
    """gseapy 1.3.1 ``prerank(..., weight=1, permutation_num=permutations, seed=seed)`` results per set.

    ``ranking``: unique gene names -> finite statistic, already in the order gseapy should use (it is not
    re-sorted). ``gene_sets``: set name -> genes of the ranking, each set already within gseapy's
    ``min_size``/``max_size``. Sets with every ranked gene are left out, as gseapy leaves them out. Returns
    None where gseapy must be called instead (see the module docstring).
    """
    genes = [str(g) for g in ranking.index]
    index = {g: i for i, g in enumerate(genes)}
    overlap = {name: {index[g] for g in members if g in index} for name, members in gene_sets.items()}
    names = [name for name, found in overlap.items() if 0 < len(found) < len(genes)]
    upper_cased = not _mostly_upper(genes) and all(
        _mostly_upper(list(gene_sets[s])) for s in list(gene_sets)[:20]
    )
    if permutations < 1 or not 0 <= seed <= _M64 or len(genes) < 2 or not names or upper_cased:
        return None
    hits = {name: np.array(sorted(overlap[name]), dtype=np.int64) for name in names}
    metric = np.abs(ranking.to_numpy(dtype=np.float64))  # gseapy's weight 1: |stat|
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate sets give NaN and go to gseapy
        return _prerank(genes, metric, hits, permutations, seed, block)


def _prerank(
    genes: list[str],
    metric: np.ndarray,
    hits: dict[str, np.ndarray],
    permutations: int,
    seed: int,
    block: int,
) -> dict[str, SetResult] | None:
    names = list(hits)
    tracked = np.unique(np.concatenate(list(hits.values())))
    columns = {name: np.searchsorted(tracked, h) for name, h in hits.items()}
    es = {name: float(_walk_es(metric, h[None, :])[0]) for name, h in hits.items()}
    null = {name: np.empty(permutations) for name in names}
    plan, draws = _ShufflePlan.build(len(genes)), _Draws(seed)
    where = tracked.copy()  # current position of each tracked gene
    for start in range(0, permutations, block):
        size = min(block, permutations - start)
        landed = np.empty((size, len(tracked)), dtype=np.int64)
        for row in range(size):
            where = _follow(plan.swap_indices(draws), where)
            landed[row] = where
        for name in names:
            null[name][start : start + size] = _walk_es(metric, np.sort(landed[:, columns[name]], axis=1))

    nes, nes_null, pval = {}, {}, {}
    for name in names:
        nes[name], nes_null[name] = _normalise(es[name], null[name])
        pval[name] = _nominal_p(es[name], null[name])
    if any(np.isnan(es[n]) or np.isnan(nes[n]) or np.isnan(nes_null[n]).any() for n in names):
        return None
    fdr = {}
    libraries: dict[str, list[str]] = {}
    for name in names:
        libraries.setdefault(name[: name.find("__")] if "__" in name else "", []).append(name)
    for members in libraries.values():
        values = _fdr(np.array([nes[n] for n in members]), np.concatenate([nes_null[n] for n in members]))
        fdr.update(zip(members, values.tolist(), strict=True))

    out = {}
    for name in names:
        running = _running_es(metric, hits[name])
        if es[name] >= 0.0:
            peak = int(running.argmax())
            lead = [int(p) for p in hits[name] if p <= peak]
        else:
            peak = int(running.argmin())
            lead = [int(p) for p in hits[name] if p >= peak][::-1]
        out[name] = SetResult(
            es=es[name],
            nes=float(nes[name]),
            pval=float(pval[name]),
            fdr=float(fdr[name]),
            lead_genes=";".join(genes[p] for p in lead),
        )
    log.info(
        "prerank: %d sets, %d genes, %d permutations (seed %d) drawn as gseapy 1.3.1 draws them",
        len(names),
        len(genes),
        permutations,
        seed,
    )
    return out
