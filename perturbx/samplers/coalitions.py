"""Coalitions of superpixels: the perturbations of LIME and KernelSHAP.

A coalition is a binary vector ``z`` of length ``M`` (1 keeps superpixel ``j``, 0 hides
it). Chunks carry coalitions in this compact form, ``(n, M)`` bytes, and
:meth:`CoalitionChunk.materialize` gathers them through the segment map into full-size
keep-masks ``(n, H, W)`` on the model's backend (``z[:, segments]``), one batch at a time.

* :class:`UniformCoalitionSampler`: every bit an independent fair coin (LIME, as
  ``lime_image`` draws them).
* :class:`ShapleyKernelSampler`: KernelSHAP's design, by default *stratified*: one
  stratum per pair of coalition sizes ``{s, M - s}``; from the outside in, a pair of sizes
  whose coalitions all fit its share of the remaining budget is enumerated (as
  ``shap.KernelExplainer`` does), the other sizes get a fixed number of distinct
  coalitions, drawn without replacement together with their complements (antithetic
  pairs). The strata are interleaved in the stream in proportion to their allocation and
  the estimator scales the weights seen in each stratum to its Shapley kernel mass
  (post-stratification), so every prefix of the stream is a valid design and a run can
  stop early. Also: i.i.d. pairs from the Shapley kernel (``"kernel"``) or with sizes
  uniform (``"leverage"``, Musco & Witter 2024), and the stratified design with equal
  shares per size (``"leverage-stratified"``). With ``n_samples >= 2**M`` every coalition
  is enumerated and the regression returns the exact Shapley values.
* :class:`PermutationSampler`: the prefixes of random orders of the superpixels and of
  their reverses (antithetic permutation sampling).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np


class SegmentMap:
    """A segment map ``(H, W)`` with labels ``0 .. M-1``, cached on each backend it is used on.

    Superpixels are contiguous, so the flattened map is mostly long runs of one label
    (about 22 pixels a run for 50 SLIC segments at 224 x 224). Where runs average at
    least ``MIN_RUN`` pixels, host masks are built run by run (``np.repeat`` of each run's
    coalition bit), which writes each mask once at memory speed: half the time of a
    per-pixel gather (benchmarks/RESULTS.md, issue 16).
    """

    #: mean run length (pixels) from which masks on the host are repeated runs rather than a per-pixel gather
    MIN_RUN = 12

    def __init__(self, segments: np.ndarray) -> None:
        self.segments = np.asarray(segments, dtype=np.int64)
        self.n_segments = int(self.segments.max()) + 1
        self._cache: dict[tuple[str, str], object] = {}
        flat = self.segments.ravel()
        starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
        self.runs: tuple[np.ndarray, np.ndarray] | None = None
        if flat.size >= self.MIN_RUN * len(starts):
            self.runs = (flat[starts], np.diff(np.r_[starts, flat.size]))  # (label, length) of each run

    def on(self, backend):
        """The flattened map ``(H * W,)`` as an int64 array on ``backend`` (made once per backend)."""
        key = (backend.name, str(backend.device))
        if key not in self._cache:
            self._cache[key] = backend.asarray(self.segments.ravel(), np.int64)
        return self._cache[key]

    def masks(self, z: np.ndarray, backend, dtype):
        """Keep-masks ``(n, H, W)`` of ``dtype`` on ``backend``: pixel u of row i is ``z[i, segments[u]]``."""
        shape = (len(z), *self.segments.shape)
        if self.runs is not None and getattr(backend.device, "type", "cpu") == "cpu":
            labels, lengths = self.runs
            picked = np.repeat(np.asarray(z, dtype=dtype)[:, labels], lengths, axis=1)
            return backend.asarray(picked.reshape(shape), dtype)
        z, flat = backend.asarray(z, dtype), self.on(backend)
        # torch's index_select is ~3x faster than advanced indexing
        picked = z.index_select(1, flat) if hasattr(z, "index_select") else np.take(z, flat, axis=1)
        return picked.reshape(shape)


@dataclass(frozen=True)
class CoalitionChunk:
    """Coalitions ``z`` (n, M) of 0/1, with regression ``weights`` (n,) and replicate ``groups`` (n,).

    ``weights`` is None when the estimator computes its own (LIME's kernel). ``groups``
    labels the random replicate each row belongs to (for the jackknife error estimate);
    -1 marks rows that are not random (enumerated coalitions). ``strata`` (n,), when
    given, is each row's stratum in the sampler's :class:`Strata` (KernelSHAP).
    """

    z: np.ndarray
    weights: np.ndarray | None
    groups: np.ndarray | None
    segmap: SegmentMap
    strata: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.z)

    def materialize(self, backend, dtype):
        """Keep-masks ``(n, H, W)``: pixel u of row i is ``z[i, segments[u]]``."""
        return self.segmap.masks(self.z, backend, dtype)


@dataclass(frozen=True)
class WeightedCoalitionChunk(CoalitionChunk):
    """Coalitions of KernelSHAP's design: ``weights``, replicate ``groups`` and ``strata`` all given."""


def sylvester_hadamard(h: int) -> np.ndarray:
    """The ``h x h`` Sylvester Hadamard matrix of +-1 (``h`` a power of two): orthogonal columns."""
    out = np.ones((1, 1), dtype=np.int8)
    while len(out) < h:
        out = np.block([[out, out], [out, -out]])
    return out


def orthogonal_block(rng: np.random.Generator, m: int) -> np.ndarray:
    """``2 h`` coalitions (2h, M) uint8: a randomised two-level orthogonal array and its foldover.

    ``h`` is the smallest power of two above ``M``. ``M`` distinct non-constant columns
    of the Sylvester Hadamard matrix, each with a random sign, in a random row order;
    every row is followed by its complement. Each row is uniform on ``{0, 1}^M`` (the
    random signs), so every coalition is still lime's draw; within the block every
    superpixel is kept exactly half the time, every pair of superpixels is (on, on)
    exactly a quarter of the time and the foldover makes the design balanced to third
    order, which removes the noise of the model's low-order interactions from a linear fit.
    """
    h = 1 << int(m).bit_length()  # > m
    columns = rng.choice(np.arange(1, h), size=m, replace=False)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=m)
    rows = (sylvester_hadamard(h)[:, columns] * signs)[rng.permutation(h)] > 0
    block = np.empty((2 * h, m), dtype=np.uint8)
    block[0::2], block[1::2] = rows, ~rows
    return block


#: designs of :class:`UniformCoalitionSampler`
UNIFORM_DESIGNS = ("iid", "antithetic", "orthogonal")


class UniformCoalitionSampler:
    """``n_total`` coalitions, each uniform on ``{0, 1}^M`` (every superpixel kept with probability 1/2).

    ``design``:

    * ``"iid"``: independent coalitions, bits drawn one uniform double each (lime's scheme).
    * ``"antithetic"``: every other coalition is the complement of the one before it
      (rows ``2k`` and ``2k + 1``): the pair's centred bits cancel, so a surrogate fitted on
      them is blind to the model's even-order interactions.
    * ``"orthogonal"``: consecutive blocks of :func:`orthogonal_block` (randomised
      Hadamard orthogonal arrays with their foldover; each row still uniform, the rows of a
      block balanced to third order); a prefix of a block is used at the end.

    The coalitions do not depend on the chunk size (the model's batch size).
    """

    chunk_type = CoalitionChunk

    def __init__(self, segmap: SegmentMap, n_total: int, rng: np.random.Generator, design: str = "iid") -> None:
        if design not in UNIFORM_DESIGNS:
            raise ValueError(f"Unknown coalition design {design!r}; expected one of {UNIFORM_DESIGNS}.")
        self.segmap, self.n_total, self._rng, self.design = segmap, int(n_total), rng, design

    def chunks(self, chunk_size: int) -> Iterator[CoalitionChunk]:
        m = self.segmap.n_segments
        owed = None  # antithetic: the complement the next row must be
        buffer = np.zeros((0, m), dtype=np.uint8)  # orthogonal: rows of the current block not yet streamed
        for start in range(0, self.n_total, chunk_size):
            n = min(chunk_size, self.n_total - start)
            if self.design == "iid":
                z = (self._rng.random((n, m)) < 0.5).astype(np.uint8)
            elif self.design == "orthogonal":
                while len(buffer) < n:
                    buffer = np.concatenate([buffer, orthogonal_block(self._rng, m)])
                z, buffer = buffer[:n], buffer[n:]
            else:
                head = [] if owed is None else [owed[None]]
                k = n - len(head)
                fresh = (self._rng.random(((k + 1) // 2, m)) < 0.5).astype(np.uint8)
                pairs = np.empty((2 * len(fresh), m), dtype=np.uint8)
                pairs[0::2], pairs[1::2] = fresh, 1 - fresh
                z = np.concatenate([*head, pairs[:k]])
                owed = pairs[k] if k < len(pairs) else None
            yield CoalitionChunk(z, None, None, self.segmap)


def shapley_kernel(m: int) -> np.ndarray:
    """Shapley kernel weight of one coalition of each size ``s = 0 .. M``: ``(M-1) / (C(M,s) s (M-s))``.

    The two ends (the empty and the full coalition) have infinite weight in the theory;
    they enter the regression as constraints, so they get weight 0 here.
    """
    w = np.zeros(m + 1)
    for s in range(1, m):
        w[s] = (m - 1) / (math.comb(m, s) * s * (m - s))
    return w


@dataclass(frozen=True)
class SizeGroup:
    """Coalition sizes ``{s, M - s}``; a draw is a coalition of size s and its complement."""

    s: int
    m: int

    @property
    def paired(self) -> bool:
        return 2 * self.s != self.m

    @property
    def n_coalitions(self) -> int:
        c = math.comb(self.m, self.s)
        return 2 * c if self.paired else c

    @property
    def mass(self) -> float:
        """Total Shapley kernel weight of the group's coalitions."""
        per_size = (self.m - 1) / (self.s * (self.m - self.s))
        return 2 * per_size if self.paired else per_size


def _allocate(total: int, shares: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Integers ``<= caps`` summing to ``min(total, caps.sum())``, proportional to ``shares``.

    Groups whose share exceeds their cap get the cap and the rest is shared again
    (water-filling); the fractions left over go to the largest remainders.
    """
    capped = np.zeros(len(shares), dtype=bool)
    total = min(int(total), int(caps.sum()))
    while True:
        ideal = caps.astype(np.float64)
        if not capped.all():
            left = total - int(caps[capped].sum())
            ideal[~capped] = left * shares[~capped] / shares[~capped].sum()
        over = ~capped & (ideal >= caps)
        if not over.any():
            break
        capped |= over
    out = np.floor(ideal).astype(np.int64)
    remainder = total - int(out.sum())
    out[np.argsort(-(ideal - out) * ~capped, kind="stable")[:remainder]] += 1
    return out


def _distinct_draws(rng: np.random.Generator, group: SizeGroup, k: int) -> np.ndarray:
    """``k`` distinct coalitions of size ``group.s``, uniformly without replacement, ``(k, M)`` uint8.

    Candidates are drawn in vectorised rounds and the first occurrence of each new one is
    kept, in draw order. For the middle size of an even M, a coalition and its
    complement are the same draw; the member holding superpixel 0 stands for the pair.
    """
    m, s = group.m, group.s
    total = math.comb(m, s) // (1 if group.paired else 2)  # distinct draws there are
    found = np.zeros((0, m), dtype=np.uint8)
    while len(found) < k:
        need = k - len(found)
        expected = need * total / (total - len(found))  # draws that yield `need` new ones, on average
        idx = rng.random((min(int(1.25 * expected) + 8, 1 << 20), m)).argsort(axis=1)[:, :s]
        z = np.zeros((len(idx), m), dtype=np.uint8)
        np.put_along_axis(z, idx, 1, axis=1)
        if not group.paired:
            z[z[:, 0] == 0] ^= 1
        both = np.concatenate([found, z])
        keys = np.ascontiguousarray(np.packbits(both, axis=1))
        _, first = np.unique(keys.view(np.dtype((np.void, keys.shape[1]))).ravel(), return_index=True)
        new = np.sort(first[first >= len(found)])[:need]
        found = np.concatenate([found, both[new]])
    return found


def _enumerate(group: SizeGroup) -> np.ndarray:
    """Every coalition of the group's sizes, ``(n_coalitions, M)`` uint8, each followed by its complement."""
    idx = np.array(list(combinations(range(group.m), group.s)), dtype=np.int64).reshape(-1, group.s)
    z = np.zeros((len(idx), group.m), dtype=np.uint8)
    np.put_along_axis(z, idx, 1, axis=1)
    return _with_complements(z) if group.paired else z


def _with_complements(z: np.ndarray) -> np.ndarray:
    """Rows ``z_0, 1 - z_0, z_1, 1 - z_1, ...``."""
    return np.stack([z, 1 - z], axis=1).reshape(-1, z.shape[1])


#: coalition samplers of :class:`ShapleyKernelSampler` (``sampling=``)
SAMPLING = ("stratified", "leverage-stratified", "kernel", "leverage")


@dataclass(frozen=True)
class Strata:
    """The strata of a KernelSHAP design; rows carry their stratum's index.

    The estimator rescales the weights of the rows it has seen in stratum ``k`` so that
    they sum to ``mass[k]`` (post-stratification); ``mass[k]`` NaN keeps the rows'
    weights as given (enumerated designs, the empty coalition). ``population[k]`` is the
    number of distinct coalitions of the stratum (rows); once all of them are seen the
    stratum is complete and carries no sampling error. 0: drawn with replacement,
    never complete.
    """

    mass: np.ndarray
    population: np.ndarray


class ShapleyKernelSampler:
    """KernelSHAP coalitions for ``M`` superpixels and a budget of ``n_samples`` model queries.

    The budget counts the full coalition (the unperturbed input, which the explainer has
    already scored) and the empty one (the baseline, always the first row), so the
    sampler yields at most ``n_samples - 1`` rows: ``min(n_samples, 2**M) - 1``. It may
    yield one row fewer when the random part's budget is odd (draws come in pairs).
    Every draw is a coalition followed by its complement (antithetic pairs).

    Every prefix of the stream is a valid design, so a run may stop early: rows carry a
    stratum (:class:`Strata`) and the estimator rescales the weights seen in each stratum
    to its Shapley kernel mass (post-stratification).

    Parameters
    ----------
    segmap : SegmentMap
    n_samples : int
        Model queries of the whole explanation, the unperturbed input included.
    rng : numpy Generator
        Source of the random draws; all draws happen here, so the design does not
        depend on the chunk size.
    n_groups : int, default 16
        Random pairs are dealt round-robin to this many replicate groups (``groups``).
    sampling : {"stratified", "leverage-stratified", "kernel", "leverage"}, default "stratified"
        ``"stratified"``: one stratum per pair of sizes ``{s, M - s}``; from the outside in,
        a pair of sizes whose coalitions all fit its share of the budget (shares in
        proportion to the kernel mass) is enumerated, the others get a share of distinct
        coalitions drawn without replacement. ``"leverage-stratified"``: the same with
        equal shares per size (the leverage scores of the Shapley regression are uniform
        over sizes, Musco & Witter 2024). ``"kernel"``: i.i.d. pairs from the Shapley
        kernel distribution (``shap.KernelExplainer`` without its enumeration).
        ``"leverage"``: i.i.d. pairs with sizes uniform and importance weights (Leverage
        SHAP's distribution, with replacement). Stratified streams interleave the strata
        in proportion to their allocation, after two pairs of each (so every stratum is
        seen early); enumerated strata are streamed in random order.

    Attributes
    ----------
    exact : bool
        Every coalition is enumerated: the regression gives the exact Shapley values.
    n_total : int
        Rows the sampler yields (model queries).
    strata : Strata

    Notes
    -----
    Memory: the design, at most ``min(n_samples, 2**M)`` rows of ``M`` bytes, is drawn in
    ``__init__`` (sampling without replacement needs to know what was drawn).
    """

    chunk_type = WeightedCoalitionChunk

    def __init__(self, segmap: SegmentMap, n_samples: int, rng: np.random.Generator, *,
                 n_groups: int = 16, sampling: str = "stratified") -> None:
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}; got {sampling!r}.")
        self.segmap, self.n_groups, self.sampling = segmap, int(n_groups), sampling
        m = segmap.n_segments
        self.kernel = shapley_kernel(m)
        self.exact = n_samples >= 2 ** m
        groups = [SizeGroup(s, m) for s in range(1, m // 2 + 1)]
        budget = min(int(n_samples), 2 ** m) - 2
        if sampling in ("kernel", "leverage") and not self.exact:
            parts = self._iid(groups, budget // 2, rng)
        else:  # exact: every stratum complete, streamed in random order (so prefixes are valid samples)
            parts = self._stratified(groups, budget, rng)
        self._design, self.strata = parts
        self.n_total = len(self._design[0])

    def _share(self, group: SizeGroup) -> float:
        if self.sampling in ("stratified", "kernel"):
            return group.mass
        return 2.0 if group.paired else 1.0

    def _allocation(self, groups: list[SizeGroup], budget: int) -> np.ndarray:
        """Pairs per size group for ``budget`` rows: as ``shap``, enumerate from the outside in, then share."""
        table = self._group_table(groups)
        n_pairs = np.zeros(len(groups), dtype=np.int64)
        first = 0
        for i, (share_i, rest_i, n_coal) in enumerate(table["outside_in"]):  # enumerate while they fit their share
            share = budget * share_i / rest_i
            if share < n_coal - 1e-9:
                break
            n_pairs[i] = n_coal // 2
            budget -= n_coal
            first = i + 1
        if first < len(groups):
            caps, shares = table["rest"](first)
            n_pairs[first:] = _allocate(budget // 2, shares, np.minimum(caps, budget // 2 + 1))
        return n_pairs

    def _group_table(self, groups: list[SizeGroup]) -> dict:
        """What :meth:`_allocation` reads of the groups, computed once per sampler (it is called per schedule step).

        The same numbers, summed in the same order, as computing them in each call.
        """
        key = tuple(groups)
        cached = getattr(self, "_table", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        m = self.segmap.n_segments
        shares = [self._share(g) for g in groups]
        outside_in = [(shares[i], sum(shares[i:]), g.n_coalitions) for i, g in enumerate(groups)]
        rest_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def rest(first: int) -> tuple[np.ndarray, np.ndarray]:
            if first not in rest_cache:
                tail = groups[first:]
                rest_cache[first] = (np.array([math.comb(m, g.s) // (1 if g.paired else 2) for g in tail]),
                                     np.array(shares[first:]))
            return rest_cache[first]

        table = {"outside_in": outside_in, "rest": rest}
        self._table = (key, table)
        return table

    def _schedule(self, groups: list[SizeGroup], budget: int, final: np.ndarray) -> list[np.ndarray]:
        """When each stratum's pairs come: pair j of group k is due at the budget whose allocation holds it.

        The allocation of the growing budgets ``budget * i / S`` is nested in the final one,
        so every prefix of the stream is close to the design of its own size; the first
        two pairs of every group come first (every stratum is seen early).
        """
        steps = max(1, min(256, budget // 8))
        grid = np.linspace(0.0, 1.0, steps + 1)
        counts = np.stack([np.zeros_like(final)] + [self._allocation(groups, int(budget * f)) for f in grid[1:-1]]
                          + [final])
        counts = np.maximum.accumulate(np.minimum(counts, final), axis=0)
        due = []
        for k, n in enumerate(final):
            j = np.arange(n)
            i = np.searchsorted(counts[:, k], j + 1)  # first grid point whose allocation holds pair j
            lo, hi = counts[i - 1, k], counts[i, k]
            t = grid[i - 1] + (j + 1 - lo) / np.maximum(hi - lo, 1) * (grid[i] - grid[i - 1])
            due.append(np.where(j < 2, j - 2.0, t))
        return due

    def _stratified(self, groups: list[SizeGroup], budget: int, rng: np.random.Generator):
        """The allocation, the draws, then the stream interleaved on the nested schedule."""
        m = self.segmap.n_segments
        final = self._allocation(groups, budget)
        schedule = self._schedule(groups, budget, final)
        n_pairs = dict(zip(groups, final.tolist(), strict=True))
        due_of = dict(zip(groups, schedule, strict=True))
        used = [g for g in groups if n_pairs.get(g, 0) > 0]
        draws, due, stratum = [], [], []
        for k, group in enumerate(used, start=1):
            n = int(n_pairs[group])
            population = math.comb(m, group.s) // (1 if group.paired else 2)
            if n == population:  # complete: every draw, in random order
                z = _enumerate(group)[::2] if group.paired else _enumerate(group)
                if not group.paired:
                    z = z[z[:, 0] == 1]
                z = z[rng.permutation(len(z))]
            else:
                z = _distinct_draws(rng, group, n)
            draws.append(z)
            due.append(due_of[group])
            stratum.append(np.full(n, k))
        order = np.lexsort((np.concatenate(stratum), np.concatenate(due)))
        first = np.concatenate(draws)[order]
        k_pair = np.concatenate(stratum)[order]
        mass = np.array([g.mass for g in used])
        count = np.array([2 * n_pairs[g] for g in used])  # rows per stratum in the full design
        population = np.array([g.n_coalitions for g in used])
        enumerated = count == population
        weights = (mass / count)[k_pair - 1]
        reps = np.where(enumerated[k_pair - 1], -1, np.arange(len(first)) % self.n_groups)
        return self._assemble(first, np.repeat(weights, 2), np.repeat(reps, 2), np.repeat(k_pair, 2),
                              Strata(np.concatenate([[np.nan], mass]), np.concatenate([[0], population])))

    def _iid(self, groups: list[SizeGroup], n_pairs: int, rng: np.random.Generator):
        """``n_pairs`` i.i.d. pairs: size pair from ``_share``, coalition uniform within its size."""
        m = self.segmap.n_segments
        share = np.array([self._share(g) for g in groups])
        mass = np.array([g.mass for g in groups])
        p = share / share.sum()
        which = rng.choice(len(groups), size=n_pairs, p=p)
        sizes = np.array([g.s for g in groups])[which]
        idx = rng.random((n_pairs, m)).argsort(axis=1)
        first = (np.argsort(idx, axis=1) < sizes[:, None]).astype(np.uint8)  # a random coalition of each size
        flip = rng.random(n_pairs) < 0.5  # which of the pair comes first
        first[flip] ^= 1
        weights = mass[which] / p[which] / (2 * n_pairs)  # importance weights, summing to the mass on average
        reps = np.arange(n_pairs) % self.n_groups
        return self._assemble(first, np.repeat(weights, 2), np.repeat(reps, 2), np.ones(2 * n_pairs, dtype=np.int64),
                              Strata(np.array([np.nan, mass.sum()]), np.zeros(2, dtype=np.int64)))

    def _assemble(self, first, weights, reps, strata, info):
        m = self.segmap.n_segments
        z = np.concatenate([np.zeros((1, m), dtype=np.uint8), _with_complements(first)])
        return (z, np.concatenate([[0.0], weights]), np.concatenate([[-1], reps]).astype(np.int64),
                np.concatenate([[0], strata]).astype(np.int64)), info

    def chunks(self, chunk_size: int) -> Iterator[CoalitionChunk]:
        z, w, g, k = self._design
        for start in range(0, self.n_total, chunk_size):
            stop = min(start + chunk_size, self.n_total)
            yield WeightedCoalitionChunk(z[start:stop], w[start:stop], g[start:stop], self.segmap, k[start:stop])

    def gram(self) -> np.ndarray:
        """``sum_z w(z) z z^T`` (M, M) of the whole design (known before any query)."""
        z, w, _, _ = self._design
        z = z.astype(np.float64)
        return (z * w[:, None]).T @ z


@dataclass(frozen=True)
class PermutationChunk(CoalitionChunk):
    """Prefix coalitions of permutations: row i adds superpixel ``player[i]`` to the row before it.

    ``perm[i]`` is the permutation the row belongs to (permutations ``2k`` and ``2k + 1``
    are reverses of each other), -1 for the empty coalition; ``position[i]`` is the
    prefix size minus one.
    """

    player: np.ndarray | None = None
    position: np.ndarray | None = None
    perm: np.ndarray | None = None


class PermutationSampler:
    """Antithetic permutation sampling: ``n_pairs`` random orders of the superpixels and their reverses.

    Rows: the empty coalition, then for each permutation its prefixes of sizes 1 .. M-1
    (the full coalition is the unperturbed input, already scored). ``n_total = 1 +
    2 * n_pairs * (M - 1)``. Permutations are drawn in ``__init__`` (``2 * n_pairs * M``
    small ints); prefixes are built chunk by chunk.
    """

    chunk_type = PermutationChunk

    def __init__(self, segmap: SegmentMap, n_pairs: int, rng: np.random.Generator) -> None:
        m = segmap.n_segments
        self.segmap, self.n_pairs = segmap, int(n_pairs)
        first = rng.permuted(np.tile(np.arange(m), (self.n_pairs, 1)), axis=1)
        self.orders = np.stack([first, first[:, ::-1]], axis=1).reshape(-1, m)  # (2 * n_pairs, M)
        self.n_total = 1 + len(self.orders) * (m - 1)

    def chunks(self, chunk_size: int) -> Iterator[PermutationChunk]:
        m = self.segmap.n_segments
        for start in range(0, self.n_total, chunk_size):
            rows = np.arange(start, min(start + chunk_size, self.n_total)) - 1  # -1: the empty coalition
            perm, pos = np.maximum(rows, 0) // (m - 1), np.maximum(rows, 0) % (m - 1)
            rank = np.argsort(self.orders[perm], axis=1)  # rank[i, j]: where player j comes in the order
            z = (rank <= pos[:, None]).astype(np.uint8)
            empty = rows < 0
            z[empty] = 0
            player = self.orders[perm, pos]
            yield PermutationChunk(z, None, None, self.segmap, player=np.where(empty, -1, player), position=pos,
                                   perm=np.where(empty, -1, perm))
