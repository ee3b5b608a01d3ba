"""Roofline lower bound on inference latency for named Arm cores.

The bound is the lowest latency that a core's peak arithmetic rate and its memory bandwidth
allow (Williams, Waterman and Patterson, "Roofline: an insightful visual performance model for
multicore architectures", Communications of the ACM, 2009)::

    bound_s = max(2 * MACs / peak_flops, bytes / bandwidth)
    peak_flops = fp32_flops_per_cycle * clock_hz * min(threads, cores)

A multiply-accumulate counts as two floating-point operations. ``bytes`` is the traffic that a
query must move at least once. The harness passes the model's file size (its weights), which
ignores activations, so the bound is optimistic. No real run reaches it, and a model far above
it is limited by per-call overhead or poor kernel use rather than by the hardware.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from benchmark.errors import ConfigError

__all__ = ["CORES", "CoreSpec", "core_spec", "roofline_bound"]


@dataclass(frozen=True)
class CoreSpec:
    """Peak figures of one Arm core in a typical board; ``sources`` names where each came from."""

    name: str
    board: str
    cores: int
    clock_hz: float
    # Peak fp32 FLOPs per cycle and core with NEON fused multiply-add.
    fp32_flops_per_cycle: int
    # DRAM bandwidth in bytes per second.
    bandwidth_bytes_per_s: float
    bandwidth_kind: str
    sources: tuple[str, ...]

    def peak_flops(self, threads: int | None = None) -> float:
        """Peak fp32 FLOP/s of ``threads`` cores (all cores when ``threads`` is None)."""
        active = self.cores if threads is None else max(1, min(threads, self.cores))
        return self.fp32_flops_per_cycle * self.clock_hz * active


# WikiChip's table of FLOPs per cycle by microarchitecture, revision of 2021.
WIKICHIP_FLOPS = "https://en.wikichip.org/w/index.php?diff=98766&oldid=96512&title=flops"
PI_GUIDE = "The Official Raspberry Pi Beginner's Guide"

CORES: dict[str, CoreSpec] = {
    # Raspberry Pi 3 Model B+ (BCM2837B0): 4 cores at 1.4 GHz with LPDDR2 at 900 MHz, per
    # "The Official Raspberry Pi Beginner's Guide" (2018), appendix F.
    # NOTE: the Cortex-A53 NEON datapath is 64 bits wide, so 4 fp32 FLOPs per cycle (one
    # 2-lane FMA) is an estimate, not a figure from an opened source. The bandwidth is an
    # estimate too: a 32-bit LPDDR2 bus at 900 MHz double data rate gives 7.2 GB/s.
    "cortex-a53": CoreSpec(
        name="cortex-a53",
        board="Raspberry Pi 3 Model B+",
        cores=4,
        clock_hz=1.4e9,
        fp32_flops_per_cycle=4,
        bandwidth_bytes_per_s=7.2e9,
        bandwidth_kind="estimate: theoretical peak of a 32-bit LPDDR2-900 bus",
        sources=(f"{PI_GUIDE} (2018), appendix F: 4x Cortex-A53 at 1.4 GHz, LPDDR2 at 900 MHz",),
    ),
    # Raspberry Pi 4 Model B (BCM2711B0): 4 cores at 1.5 GHz, per "The Official Raspberry Pi
    # Beginner's Guide" (v3), appendix F. STREAM scale reached 5562 MB/s (the page quotes
    # 5560) on a headless Pi 4, a measured rather than theoretical figure.
    # NOTE: WikiChip lists 8 fp32 FLOPs/cycle (one 128-bit FMA) for the Cortex-A57; using it
    # for the A57-derived Cortex-A72 is an estimate.
    "cortex-a72": CoreSpec(
        name="cortex-a72",
        board="Raspberry Pi 4 Model B",
        cores=4,
        clock_hz=1.5e9,
        fp32_flops_per_cycle=8,
        bandwidth_bytes_per_s=5.56e9,
        bandwidth_kind="measured: STREAM scale on a Raspberry Pi 4",
        sources=(
            f"{PI_GUIDE} (v3), appendix F: 4x Cortex-A72 at 1.5 GHz",
            "https://www.sci-pi.org.uk/bench/stream.html: STREAM best rate 5560 MB/s",
            f"{WIKICHIP_FLOPS}: Cortex-A57 8 SP FLOPs/cycle (1x 128-bit FMA)",
        ),
    ),
    # Raspberry Pi 5 (BCM2712): 4 cores at 2.4 GHz with 32-bit LPDDR4X at 4267 MT/s, per the
    # launch coverage at circuitdigest.com. WikiChip lists the Cortex-A76 with 2x 128-bit FMA
    # units, 16 fp32 FLOPs/cycle. 4267e6 transfers/s x 4 bytes = 17.1 GB/s is the theoretical
    # peak of that bus; sustained bandwidth is lower.
    "cortex-a76": CoreSpec(
        name="cortex-a76",
        board="Raspberry Pi 5",
        cores=4,
        clock_hz=2.4e9,
        fp32_flops_per_cycle=16,
        bandwidth_bytes_per_s=4267e6 * 4,
        bandwidth_kind="theoretical peak of a 32-bit LPDDR4X-4267 bus",
        sources=(
            "https://circuitdigest.com/news/the-new-raspberry-pi-5-is-here-faster-than-ever: "
            "4x Cortex-A76 at 2.4 GHz, 32-bit LPDDR4 at 4267 MT/s",
            f"{WIKICHIP_FLOPS}: Cortex-A76 2x 128-bit FMA, 16 SP FLOPs/cycle",
        ),
    ),
}


def core_spec(name: str) -> CoreSpec:
    """Return the spec of core ``name`` (case-insensitive, ``Cortex-A72`` or ``cortex-a72``)."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key not in CORES:
        raise ConfigError(f"unknown core {name!r}; expected one of {sorted(CORES)}")
    return CORES[key]


def roofline_bound(
    core: str | CoreSpec, macs: int, bytes_moved: int, threads: int | None = None
) -> dict:
    """Compute the roofline lower bound of one query in seconds, and which roof limits it.

    ``macs`` is the multiply-accumulate count of one query and ``bytes_moved`` the bytes it must
    read from DRAM at least once. ``threads`` caps the number of active cores; None uses all.
    """
    spec = core if isinstance(core, CoreSpec) else core_spec(core)
    if macs < 0 or bytes_moved < 0:
        raise ConfigError(
            f"macs and bytes_moved must be >= 0, got macs={macs}, bytes_moved={bytes_moved}"
        )
    peak = spec.peak_flops(threads)
    compute_s = 2.0 * macs / peak
    memory_s = bytes_moved / spec.bandwidth_bytes_per_s
    return {
        "core": spec.name,
        "board": spec.board,
        "active_cores": max(1, min(threads, spec.cores)) if threads is not None else spec.cores,
        "peak_gflops": peak / 1e9,
        "bandwidth_gb_per_s": spec.bandwidth_bytes_per_s / 1e9,
        "compute_s": compute_s,
        "memory_s": memory_s,
        "bound_s": max(compute_s, memory_s),
        "limited_by": "compute" if compute_s >= memory_s else "memory",
        "spec": asdict(spec),
    }
