"""Seed-like synthetic RIPE Atlas ping data (pure, vectorized, deterministic for a seed).

The data carries structure a model can learn, like the seed's dataset: probes and targets with stable
addresses and a position in a latent geography of seven regions (probes mostly in Europe and North
America, addresses from their region's space as the RIRs allocate them); measurement ids shared by
many probes; RTT per (source, destination) from distance, path inflation and access latency, plus
jitter and rare spikes; failures as ``rtt = -1.0``; size mostly 64; error counts mostly 0; about 58% IPv4; 28 days of
timestamps; and a small share of dirty rows as real exports have (empty source, null destination).
"""

from __future__ import annotations

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


def generate(rows: int, seed: int = 0) -> pa.Table:
    """Generate ``rows`` seed-like measurements, sorted by event time, in the seed's schema."""
    rng = np.random.default_rng(seed)
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
    msm_of_row = rng.choice(n_msm, size=rows, p=msm_weight)
    family = msm_family[msm_of_row]

    # Each probe takes part in a handful of measurements: pick the probe from the msm's probe pool.
    pool_size = max(4, n_probes // 4)
    dual_idx = np.flatnonzero(probe_dual)
    pools = np.stack(
        [
            rng.choice(dual_idx if f == 6 else n_probes, size=pool_size, replace=True)
            for f in msm_family.tolist()
        ]
    )  # (n_msm, pool_size)
    probe = pools[msm_of_row, rng.integers(0, pool_size, size=rows)]
    target = msm_target[msm_of_row]

    src = np.where(family == 4, probe_v4[probe], probe_v6[probe])
    dst = np.where(family == 4, target_v4[target], target_v6[target])

    pair_inflation = 1.3 + 0.5 * ((probe * 7919 + target * 104729 + family) % 97) / 97.0
    base_ms = _distance_km(probe_pos[probe], target_pos[target]) / 100.0 * pair_inflation  # ~200 km/ms one way
    rtt = base_ms + probe_access_ms[probe] + rng.exponential(1.5, size=rows) + np.where(family == 6, 0.8, 0.0)
    spikes = rng.random(rows) < 0.005
    rtt[spikes] *= rng.uniform(3, 40, size=spikes.sum())
    rtt = np.round(rtt, 3)
    failed = rng.random(rows) < FAILURE_RATE
    rtt[failed] = -1.0
    errors = np.where(failed, 3, np.where(rng.random(rows) < 0.01, rng.integers(1, 17, size=rows), 0))
    size = np.where(rng.random(rows) < 0.92, 64, rng.choice([32, 48, 1000, 1500, 2000], size=rows))

    t_us = np.sort(START_US + rng.integers(0, SPAN_US, size=rows))

    src = src.astype(object)
    dst = dst.astype(object)
    dirty = np.flatnonzero(rng.random(rows) < DIRTY_FRACTION)
    kind = rng.integers(0, 3, size=len(dirty))
    src[dirty[kind == 0]] = ""  # empty source, as in real exports
    dst[dirty[kind == 1]] = None  # null destination
    src[dirty[kind == 2]] = "not-an-address"

    return pa.table(
        {
            "msm_id": pa.array(msm_ids[msm_of_row], pa.int64()),
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
