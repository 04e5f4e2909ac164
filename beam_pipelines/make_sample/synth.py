"""Seed-like synthetic RIPE Atlas ping data (pure, vectorized, deterministic for a seed).

The data carries structure a model can learn, like the seed's dataset: probes and targets with stable
addresses and a position in a latent geography of seven regions (probes mostly in Europe and North
America, addresses from their region's space as the RIRs allocate them); measurement ids shared by
many probes; RTT per (source, destination) from distance, path inflation and access latency, plus
jitter and rare spikes; failures as ``rtt = -1.0``; size mostly 64; error counts mostly 0; about 58% IPv4; 28 days of
timestamps; and a small share of dirty rows as real exports have (empty source, null destination).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from beam_pipelines.common.schema import SEED_SCHEMA

SCHEMA = SEED_SCHEMA

START_US = 1_750_723_200_000_000  # 2025-06-24T00:00:00Z, the seed's first day
SPAN_US = 28 * 86_400 * 1_000_000  # 28 days
DIRTY_FRACTION = 0.003  # share of rows made dirty like real exports
FAILURE_RATE = 0.02


class Region(NamedTuple):
    """A region of the latent geography: a population centre, the shares of probes and targets placed
    there, and the address space allocated there. RIPE Atlas probes sit mostly in Europe and North
    America, and addresses are allocated by region (the RIRs), so a destination and a source's prefix
    both say something about the RTT; in the real results in shared/data/atlas a destination's median
    RTT halves the global median's error, and a source's /8 together with the destination cuts it further.
    """

    name: str
    centre: tuple[float, float]  # latitude, longitude in degrees
    probe_share: float  # share of the probes placed here
    target_share: float  # share of the targets placed here
    ipv4_first_octets: tuple[int, ...]  # this region's IPv4 space (no reserved octet)
    ipv6_prefixes: tuple[str, ...]  # this region's IPv6 prefixes (first two groups)


REGIONS = (
    Region("frankfurt", (50, 8), 0.35, 0.20, tuple(range(77, 96)), ("2a02:1810", "2a01:4f8")),
    Region("london", (52, 0), 0.25, 0.15, tuple(range(176, 192)), ("2a00:23c8", "2a02:c7f")),
    Region("new_york", (40, -75), 0.18, 0.20, tuple(range(20, 77)), ("2600:3c00", "2601:18")),
    Region("tokyo", (35, 135), 0.06, 0.12, tuple(range(110, 127)), ("2400:4050", "2404:7a80")),
    Region("sao_paulo", (-23, -46), 0.04, 0.08, tuple(range(196, 202)), ("2804:14c", "2800:3f0")),
    Region("singapore", (1, 104), 0.07, 0.13, tuple(range(202, 224)), ("2401:fa00", "2406:da18")),
    Region("delhi", (28, 77), 0.05, 0.12, tuple(range(100, 110)), ("2401:4900", "2405:201")),
)
FOREIGN_ADDRESS_SHARE = 0.08  # addresses from another region's space (multinational networks, moved blocks)

# Every region's first octets, region after region, and where each region's run starts in it.
_V4_POOL = np.concatenate([r.ipv4_first_octets for r in REGIONS])
_V4_SIZE = np.array([len(r.ipv4_first_octets) for r in REGIONS])
_V4_START = np.cumsum(_V4_SIZE) - _V4_SIZE
_CENTRES = np.radians(np.array([r.centre for r in REGIONS], dtype=float))  # (regions, 2)


def _regions(rng: np.random.Generator, n: int, shares: list[float]) -> np.ndarray:
    """Region index of ``n`` hosts, drawn with the given per-region shares."""
    weights = np.array(shares)
    return rng.choice(len(REGIONS), size=n, p=weights / weights.sum())


def _address_region(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """The region whose address space a host's addresses come from: its own, or rarely another."""
    foreign = rng.random(len(region)) < FOREIGN_ADDRESS_SHARE
    return np.where(foreign, rng.integers(0, len(REGIONS), size=len(region)), region)


def _ipv4(rng: np.random.Generator, region: np.ndarray, private_share: float) -> np.ndarray:
    """IPv4 addresses from each host's regional space; a share of them private (probes behind NAT)."""
    n = len(region)
    octets = rng.integers(1, 255, size=(n, 4))
    octets[:, 0] = _V4_POOL[_V4_START[region] + rng.integers(0, _V4_SIZE[region])]
    private = rng.random(n) < private_share
    octets[private, 0] = 192
    octets[private, 1] = 168
    return np.array([f"{a}.{b}.{c}.{d}" for a, b, c, d in octets.tolist()], dtype=object)


def _ipv6(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """IPv6 addresses under one of each host's regional prefixes."""
    n = len(region)
    groups = rng.integers(0, 1 << 16, size=(n, 4))
    pick = rng.integers(0, 2, size=n)
    prefixes = [REGIONS[r].ipv6_prefixes[p] for r, p in zip(region.tolist(), pick.tolist())]
    return np.array(
        [f"{p}:{a:x}:{b:x}::{c:x}:{d:x}" for p, (a, b, c, d) in zip(prefixes, groups.tolist())], dtype=object
    )


def _positions(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """Points on a globe (radians), scattered around their region's centre."""
    return _CENTRES[region] + rng.normal(0, 0.12, size=(len(region), 2))


def _distance_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dlat, dlon = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(a[:, 0]) * np.cos(b[:, 0]) * np.sin(dlon / 2) ** 2
    return 2 * 6371 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


class _World(NamedTuple):
    """The hosts and measurement ids behind a data set (sized by ``rows / 400`` and ``rows / 1000``, never by
    the rows themselves), drawn first from the seed's generator."""

    n_probes: int
    probe_pos: np.ndarray
    probe_v4: np.ndarray
    probe_v6: np.ndarray
    probe_access_ms: np.ndarray
    dual_idx: np.ndarray  # the dual-stack probes (they can run IPv6 measurements)
    target_pos: np.ndarray
    target_v4: np.ndarray
    target_v6: np.ndarray
    msm_ids: np.ndarray
    msm_target: np.ndarray
    msm_family: np.ndarray
    msm_weight: np.ndarray  # each measurement id's share of the rows
    pool_size: int  # probes in each measurement id's pool


def _world(rng: np.random.Generator, rows: int) -> _World:
    # Sources have hundreds of measurements each, as in the seed's data.
    n_probes = max(8, rows // 400)
    n_targets = max(6, rows // 2000)
    n_msm = max(6, n_targets * 2)

    probe_region = _regions(rng, n_probes, [r.probe_share for r in REGIONS])
    probe_pos = _positions(rng, probe_region)
    probe_v4 = _ipv4(rng, _address_region(rng, probe_region), private_share=0.15)
    probe_v6 = _ipv6(rng, _address_region(rng, probe_region))
    probe_dual = rng.random(n_probes) < 0.7  # dual-stack probes can run IPv6 measurements
    probe_access_ms = rng.gamma(2.0, 3.0, size=n_probes)  # last-mile latency of the probe
    target_region = _regions(rng, n_targets, [r.target_share for r in REGIONS])
    target_pos = _positions(rng, target_region)
    target_v4 = _ipv4(rng, _address_region(rng, target_region), private_share=0.0)
    target_v6 = _ipv6(rng, _address_region(rng, target_region))

    # Measurement ids: built-in-like small ids and user-defined large ones, each pinging one target
    # over one family; IPv4 measurements are somewhat more frequent (about 58% of rows).
    msm_ids = np.where(
        np.arange(n_msm) < 32,
        1001 + np.arange(n_msm),
        5_000_000 + rng.choice(10_000_000, size=n_msm, replace=False),
    )
    msm_target = rng.integers(0, n_targets, size=n_msm)
    msm_family = np.where(np.arange(n_msm) % 2 == 0, 4, 6)
    msm_weight = np.where(msm_family == 4, 0.58, 0.42) * rng.gamma(3.0, 1.0, size=n_msm)
    msm_weight = msm_weight / msm_weight.sum()
    # Normalise the family shares exactly (weights per family sum to 0.58 / 0.42).
    for fam, share in ((4, 0.58), (6, 0.42)):
        sel = msm_family == fam
        msm_weight[sel] *= share / msm_weight[sel].sum()
    return _World(n_probes, probe_pos, probe_v4, probe_v6, probe_access_ms, np.flatnonzero(probe_dual),
                  target_pos, target_v4, target_v6, msm_ids, msm_target, msm_family, msm_weight,
                  max(4, n_probes // 4))


def _msm_of_rows(rng: np.random.Generator, world: _World, n: int) -> np.ndarray:
    """The measurement id (index) of ``n`` rows."""
    return rng.choice(len(world.msm_ids), size=n, p=world.msm_weight)


def _pool(rng: np.random.Generator, world: _World, m: int) -> np.ndarray:
    """Measurement id ``m``'s probe pool (``pool_size`` probes, drawn with replacement; dual-stack for IPv6)."""
    f = int(world.msm_family[m])
    return rng.choice(world.dual_idx if f == 6 else world.n_probes, size=world.pool_size, replace=True)


def _pick(rng: np.random.Generator, world: _World, n: int) -> np.ndarray:
    """Each of ``n`` rows' slot in its measurement id's pool."""
    return rng.integers(0, world.pool_size, size=n)


def _times(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` event times in microseconds (unsorted)."""
    return START_US + rng.integers(0, SPAN_US, size=n)


def _rows(world: _World, msm_of_row: np.ndarray, probe: np.ndarray, draw, sorted_times) -> pa.Table:
    """The rows of these measurement ids and probes: the per-row draws after the probe's, made by ``draw(name,
    f)`` (``f(generator)`` on the generator that makes draw ``name``) in :data:`ROW_DRAWS` order, and the
    rows' event times (already sorted) from ``sorted_times(n)``, asked for where the time draw comes."""
    rows = len(msm_of_row)
    family = world.msm_family[msm_of_row]
    target = world.msm_target[msm_of_row]

    src = np.where(family == 4, world.probe_v4[probe], world.probe_v6[probe])
    dst = np.where(family == 4, world.target_v4[target], world.target_v6[target])

    pair_inflation = 1.3 + 0.5 * ((probe * 7919 + target * 104729 + family) % 97) / 97.0
    # ~200 km/ms one way
    base_ms = _distance_km(world.probe_pos[probe], world.target_pos[target]) / 100.0 * pair_inflation
    rtt = (base_ms + world.probe_access_ms[probe] + draw("jitter", lambda g: g.exponential(1.5, size=rows))
           + np.where(family == 6, 0.8, 0.0))
    spikes = draw("spike", lambda g: g.random(rows)) < 0.005
    rtt[spikes] *= draw("spike_size", lambda g: g.uniform(3, 40, size=spikes.sum()))
    rtt = np.round(rtt, 3)
    failed = draw("failed", lambda g: g.random(rows)) < FAILURE_RATE
    rtt[failed] = -1.0
    errors = np.where(failed, 3, np.where(draw("error", lambda g: g.random(rows)) < 0.01,
                                          draw("error_count", lambda g: g.integers(1, 17, size=rows)), 0))
    size = np.where(draw("size", lambda g: g.random(rows)) < 0.92, 64,
                    draw("size_other", lambda g: g.choice([32, 48, 1000, 1500, 2000], size=rows)))

    t_us = sorted_times(rows)

    src = src.astype(object)
    dst = dst.astype(object)
    dirty = np.flatnonzero(draw("dirty", lambda g: g.random(rows)) < DIRTY_FRACTION)
    kind = draw("dirty_kind", lambda g: g.integers(0, 3, size=len(dirty)))
    src[dirty[kind == 0]] = ""  # empty source, as in real exports
    dst[dirty[kind == 1]] = None  # null destination
    src[dirty[kind == 2]] = "not-an-address"

    return pa.table(
        {
            "msm_id": pa.array(world.msm_ids[msm_of_row], pa.int64()),
            "event_time": pa.array(t_us, pa.timestamp("us", tz="UTC")),
            "src_addr": pa.array(src, pa.string()),
            "dst_addr": pa.array(dst, pa.string()),
            "ip_version": pa.array(family, pa.int64()),
            "rtt": pa.array(rtt, pa.float64()),
            "size": pa.array(size, pa.int64()),
            "packet_error_count": pa.array(errors, pa.int64()),
        },
        schema=SCHEMA,
    )


# The draws of a row's values after the world, in the order the seed's generator makes them: each is one
# call of ``rows`` values (``spike_size`` and ``dirty_kind``: one per spike or dirty row), except
# ``pools``, one call per measurement id (its pool). The time draw is sorted as a whole.
ROW_DRAWS = ("msm", "pools", "pick", "jitter", "spike", "spike_size", "failed", "error", "error_count", "size",
             "size_other", "time", "dirty", "dirty_kind")


def generate(rows: int, seed: int = 0) -> pa.Table:
    """Generate ``rows`` seed-like measurements, sorted by event time, in the seed's schema, in memory (every
    row at once: about 250 bytes a row, and the probe pools grow with the square of ``rows``; see
    :func:`stream` for any size). The reference :func:`stream` is checked against."""
    rng = np.random.default_rng(seed)
    world = _world(rng, rows)
    msm_of_row = _msm_of_rows(rng, world, rows)
    # Each probe takes part in a handful of measurements: pick the probe from the msm's probe pool.
    pools = np.stack([_pool(rng, world, m) for m in range(len(world.msm_ids))])  # (n_msm, pool_size)
    probe = pools[msm_of_row, _pick(rng, world, rows)]
    return _rows(world, msm_of_row, probe, lambda name, f: f(rng), lambda n: np.sort(_times(rng, n)))


# ----------------------------------------------------------------------------------------------------------
# Streaming: the same rows as generate, a piece at a time, in memory bounded by a piece

CHUNK_ROWS = 1 << 20  # rows per piece of every pass (and of the spill files) in stream
POOL_BLOCK = 1 << 23  # pool entries (measurement ids x pool_size) held at once while probes are resolved


def _generator(state: dict) -> np.random.Generator:
    g = np.random.Generator(np.random.PCG64())
    g.bit_generator.state = state
    return g


class _Fifo:
    """Values from an iterator of arrays, handed out ``n`` at a time whatever the arrays' sizes."""

    def __init__(self, arrays):
        self._arrays, self._head = iter(arrays), np.zeros(0, np.int64)

    def take(self, n: int) -> np.ndarray:
        parts, have = [], 0
        while have < n:
            if not len(self._head):
                self._head = next(self._arrays)
            part = self._head[: n - have]
            self._head = self._head[len(part) :]
            parts.append(part)
            have += len(part)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


class _Spill:
    """Append-only binary files of one dtype under a folder, one per integer key."""

    def __init__(self, folder: str, name: str, dtype):
        self.folder, self.name, self.dtype = folder, name, np.dtype(dtype)

    def path(self, key: int) -> str:
        return os.path.join(self.folder, f"{self.name}-{key:06d}.bin")

    def append(self, key_of: np.ndarray, values: np.ndarray) -> None:
        """Append ``values[i]`` to file ``key_of[i]``, keeping their order within each file."""
        key_of = np.asarray(key_of)
        if len(key_of) and 0 <= key_of.min() and key_of.max() < 1 << 16:
            key_of = key_of.astype(np.uint16)  # a stable sort of 16-bit keys is a radix sort
        order = np.argsort(key_of, kind="stable")
        keys, starts = np.unique(key_of[order], return_index=True)
        bounds = np.append(starts, len(order))
        values = np.ascontiguousarray(values[order], self.dtype)
        for k, lo, hi in zip(keys.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
            with open(self.path(k), "ab") as f:
                values[lo:hi].tofile(f)

    def read(self, key: int) -> np.ndarray:
        """File ``key``'s values (removed once read: every spill file is read once)."""
        path = self.path(key)
        if not os.path.exists(path):
            return np.zeros(0, self.dtype)
        out = np.fromfile(path, self.dtype)
        os.remove(path)
        return out


class RowStream:
    """The rows :func:`generate` makes for ``(rows, seed)``, byte for byte, handed out in order by
    :meth:`take`, in memory bounded by :data:`CHUNK_ROWS` and :data:`POOL_BLOCK` (plus the world, which
    grows with ``rows / 400``), with spill files in ``scratch`` (about 32 bytes a row; removed as read).

    :func:`generate` draws every value from one generator, each draw of ``rows`` values at once; numpy's
    draws give the same values in pieces as at once (the generator's state carries over between calls), so
    each draw can be replayed piece by piece from a copy of the generator at the state where it starts. A
    first pass (:meth:`_states`) makes every draw once, in pieces, to find those states. Two draws need
    the whole data set, and are made out of core:

    * the probe of a row is entry ``pick`` of its measurement id's pool, and the pools (``n_msm x pool_size``
      values, which grow with the square of ``rows``) are drawn one measurement id after another: the rows'
      (measurement id, pick) requests are spilled by block of measurement ids, each block's pools are drawn
      in turn and answer its requests, and the answers are spilled by row piece;
    * the event times are sorted as a whole: they are spilled into buckets of equal time spans (about a
      piece each), and each bucket is sorted when it is read, buckets in time order.
    """

    def __init__(self, rows: int, seed: int, scratch: str, *, chunk_rows: int = CHUNK_ROWS,
                 pool_block: int = POOL_BLOCK):
        self.rows, self.chunk = rows, max(1, chunk_rows)
        rng = np.random.default_rng(seed)
        self.world = _world(rng, rows)
        self._msm_per_block = max(1, pool_block // self.world.pool_size)
        self._time_buckets = max(1, -(-rows // self.chunk))
        self._scratch = scratch
        start = self._states(rng)
        self._gen = {name: _generator(state) for name, state in start.items()}
        self._probes = _Fifo(self._resolve_probes(start))
        self._times = _Fifo(self._sorted_times(start["time"]))
        self._done = 0

    def _pieces(self, total: int):
        for lo in range(0, total, self.chunk):
            yield lo, min(self.chunk, total - lo)

    def _states(self, rng: np.random.Generator) -> dict:
        """The generator's state where each draw of :data:`ROW_DRAWS` starts (every draw made once, in pieces)."""
        world, rows, start, counts = self.world, self.rows, {}, {}

        def skip(name, f, total):  # make draw `name` of `total` values, in pieces; returns them reduced by f
            start[name] = rng.bit_generator.state
            return sum(f(n) for _, n in self._pieces(total))

        # choice with p draws one double per value (then a search of the cumulative shares): the doubles alone
        # move the generator as far, without the search.
        skip("msm", lambda n: rng.random(n).size, rows)
        start["pools"] = rng.bit_generator.state
        for m in range(len(world.msm_ids)):
            _pool(rng, world, m)
        skip("pick", lambda n: _pick(rng, world, n).size, rows)
        skip("jitter", lambda n: rng.exponential(1.5, size=n).size, rows)
        counts["spike"] = skip("spike", lambda n: int(np.sum(rng.random(n) < 0.005)), rows)
        skip("spike_size", lambda n: rng.uniform(3, 40, size=n).size, counts["spike"])
        skip("failed", lambda n: rng.random(n).size, rows)
        skip("error", lambda n: rng.random(n).size, rows)
        skip("error_count", lambda n: rng.integers(1, 17, size=n).size, rows)
        skip("size", lambda n: rng.random(n).size, rows)
        skip("size_other", lambda n: rng.choice([32, 48, 1000, 1500, 2000], size=n).size, rows)
        skip("time", lambda n: _times(rng, n).size, rows)
        counts["dirty"] = skip("dirty", lambda n: int(np.sum(rng.random(n) < DIRTY_FRACTION)), rows)
        skip("dirty_kind", lambda n: rng.integers(0, 3, size=n).size, counts["dirty"])
        return start

    def _resolve_probes(self, start: dict):
        """Each row's probe, one piece's array after another (see the class docstring)."""
        world, per = self.world, self._msm_per_block
        requests = _Spill(self._scratch, "requests", np.int64)  # per row: row << 32 | pick, by msm block
        msms = _Spill(self._scratch, "msms", np.int64)  # the same rows' measurement ids, alongside
        answers = _Spill(self._scratch, "probes", np.int64)  # per row: row << 32 | probe, by row piece
        g_msm, g_pick = _generator(start["msm"]), _generator(start["pick"])
        for lo, n in self._pieces(self.rows):
            m = _msm_of_rows(g_msm, world, n)
            pick = _pick(g_pick, world, n)
            row = np.arange(lo, lo + n, dtype=np.int64)
            requests.append(m // per, (row << 32) | pick)
            msms.append(m // per, m)
        g_pools = _generator(start["pools"])
        n_msm = len(world.msm_ids)
        for block, m0 in enumerate(range(0, n_msm, per)):
            pools = np.stack([_pool(g_pools, world, m) for m in range(m0, min(m0 + per, n_msm))])
            req, m = requests.read(block), msms.read(block)
            row, pick = req >> 32, req & 0xFFFFFFFF
            answers.append(row // self.chunk, (row << 32) | pools[m - m0, pick])
        for piece, (lo, n) in enumerate(self._pieces(self.rows)):
            got = answers.read(piece)
            probe = np.empty(n, np.int64)
            probe[(got >> 32) - lo] = got & 0xFFFFFFFF
            yield probe

    def _sorted_times(self, state: dict):
        """The rows' event times in sorted order, a bucket at a time (see the class docstring)."""
        k = self._time_buckets
        buckets = _Spill(self._scratch, "times", np.int64)
        g = _generator(state)
        for _, n in self._pieces(self.rows):
            t = _times(g, n)
            buckets.append((t - START_US) * k // SPAN_US, t)
        for b in range(k):
            t = buckets.read(b)
            t.sort()
            yield t

    def take(self, n: int) -> pa.Table:
        """The next ``n`` rows (``n`` at most what is left)."""
        if n < 1 or self._done + n > self.rows:
            raise ValueError(f"take({n}) after {self._done} of {self.rows} rows")
        self._done += n
        msm_of_row = _msm_of_rows(self._gen["msm"], self.world, n)
        return _rows(self.world, msm_of_row, self._probes.take(n), lambda name, f: f(self._gen[name]),
                     self._times.take)
