"""Roofline bound for named Arm cores."""

from __future__ import annotations

import pytest

from benchmark.errors import ConfigError
from benchmark.measure.roofline import CORES, core_spec, roofline_bound


@pytest.mark.parametrize("name", sorted(CORES))
def test_core_specs_are_complete(name):
    spec = CORES[name]
    assert spec.cores >= 1
    assert spec.clock_hz > 1e8
    assert spec.fp32_flops_per_cycle in (4, 8, 16)
    assert spec.bandwidth_bytes_per_s > 1e9
    assert spec.sources
    assert spec.board


def test_core_lookup_is_case_insensitive():
    assert core_spec("Cortex-A72") is CORES["cortex-a72"]
    assert core_spec("cortex_a76") is CORES["cortex-a76"]
    with pytest.raises(ConfigError, match="cortex-a53"):
        core_spec("cortex-a15")


def test_compute_bound_model():
    spec = CORES["cortex-a72"]
    bound = roofline_bound("cortex-a72", macs=10**9, bytes_moved=1000, threads=1)
    assert bound["limited_by"] == "compute"
    assert bound["compute_s"] == pytest.approx(2e9 / (spec.fp32_flops_per_cycle * spec.clock_hz))
    assert bound["bound_s"] == bound["compute_s"]
    assert bound["active_cores"] == 1


def test_memory_bound_model():
    spec = CORES["cortex-a53"]
    bound = roofline_bound(spec, macs=1000, bytes_moved=10**8)
    assert bound["limited_by"] == "memory"
    assert bound["memory_s"] == pytest.approx(1e8 / spec.bandwidth_bytes_per_s)
    assert bound["bound_s"] == bound["memory_s"]


def test_threads_scale_compute_up_to_core_count():
    one = roofline_bound("cortex-a76", macs=10**9, bytes_moved=0, threads=1)
    four = roofline_bound("cortex-a76", macs=10**9, bytes_moved=0, threads=4)
    eight = roofline_bound("cortex-a76", macs=10**9, bytes_moved=0, threads=8)
    assert four["compute_s"] == pytest.approx(one["compute_s"] / 4)
    assert eight["compute_s"] == four["compute_s"]
    assert eight["active_cores"] == 4


def test_lenet_bound_on_cortex_a72():
    # LeNet-5: 2.29 M MACs and 1.7 MB of fp32 weights. One core cannot do the MACs in the time
    # the weights take to stream (0.38 ms against 0.31 ms); four cores can.
    one = roofline_bound("cortex-a72", macs=2_293_000, bytes_moved=1_724_000, threads=1)
    four = roofline_bound("cortex-a72", macs=2_293_000, bytes_moved=1_724_000, threads=4)
    assert one["limited_by"] == "compute"
    assert one["bound_s"] == pytest.approx(2 * 2_293_000 / 12e9)
    assert four["limited_by"] == "memory"
    assert four["bound_s"] == pytest.approx(1_724_000 / 5.56e9)


def test_negative_counts_rejected():
    with pytest.raises(ConfigError, match="macs=-1"):
        roofline_bound("cortex-a72", macs=-1, bytes_moved=0)
