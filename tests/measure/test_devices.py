"""Devices: registry, clear errors, local, qemu-aarch64 for real, ssh against a loopback sshd."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.errors import DeviceError
from benchmark.measure import devices
from benchmark.measure.device_cli import add_commands
from benchmark.measure.devices import SshDevice, get_device, parse_spec
from benchmark.measure.profiling import ProfileSettings, profile_model

QEMU_MISSING = shutil.which("qemu-aarch64-static") is None


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="compressbench")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def qemu_sysroot() -> Path:
    """The cached arm64 sysroot, built on first use (downloads about 70 MB)."""
    if QEMU_MISSING:
        pytest.skip("qemu-aarch64-static not installed (Debian package qemu-user-static)")
    cache = devices.default_qemu_cache()
    if (cache / "sysroot" / devices.SYSROOT_MARKER).is_file():
        return cache / "sysroot"
    try:
        return devices.build_qemu_sysroot(cache)
    except DeviceError as err:
        pytest.skip(f"cannot build the arm64 sysroot in {cache}: {err}")


def test_parse_spec_options():
    assert parse_spec("local") == ("local", "local", {})
    kind, base, options = parse_spec("ssh://pi@board:2222?python=/usr/bin/python3&core=cortex-a72")
    assert kind == "ssh"
    assert base == "ssh://pi@board:2222"
    assert options == {"python": "/usr/bin/python3", "core": "cortex-a72"}


def test_unknown_device_names_known_kinds():
    with pytest.raises(DeviceError) as caught:
        get_device("raspberry")
    assert "'raspberry'" in str(caught.value)
    for kind in ("local", "qemu-aarch64", "ssh://user@host[:port]"):
        assert kind in str(caught.value)


def test_local_missing_interpreter(tmp_path):
    with pytest.raises(DeviceError, match="not found"):
        get_device(f"local?python={tmp_path / 'python3'}")


def test_local_without_onnxruntime(bare_python):
    device = get_device(f"local?python={bare_python}")
    with pytest.raises(DeviceError) as caught:
        device.check()
    message = str(caught.value)
    assert "onnxruntime" in message
    assert "pip install numpy onnxruntime" in message
    assert "?python=PATH" in message


def test_profile_without_onnxruntime_is_recorded(bare_python, tiny_models, short_settings):
    settings = ProfileSettings(
        **{**short_settings.__dict__, "devices": (f"local?python={bare_python}",)}
    )
    results = profile_model(tiny_models["small"], settings)
    (entry,) = results.values()
    assert entry["status"] == "failed"
    assert "pip install numpy onnxruntime" in entry["error"]


def test_local_check_reports_versions():
    import onnxruntime

    summary = get_device("local").check()
    assert summary["onnxruntime"] == onnxruntime.__version__
    assert summary["emulated"] is False


def test_qemu_missing_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceError, match="qemu-user-static"):
        get_device("qemu-aarch64")
    with pytest.raises(DeviceError, match="apt-get install qemu-user-static"):
        devices.setup("qemu-aarch64", tmp_path / "cache")


@pytest.mark.skipif(
    QEMU_MISSING, reason="qemu-aarch64-static not installed (Debian package qemu-user-static)"
)
def test_qemu_without_sysroot(tmp_path):
    with pytest.raises(DeviceError) as caught:
        get_device(f"qemu-aarch64?cache={tmp_path}")
    assert "compressbench device setup qemu-aarch64" in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_fake_cpu_files_describe_cortex_a72(tmp_path):
    devices._write_fake_cpu_files(tmp_path)
    cpuinfo = (tmp_path / "proc" / "cpuinfo").read_text()
    cpu = tmp_path / "sys" / "devices" / "system" / "cpu"
    assert cpuinfo.count("CPU part\t: 0xd08") == devices.FAKE_CPU_COUNT
    assert "CPU implementer\t: 0x41" in cpuinfo
    assert (cpu / "possible").read_text() == "0-3\n"
    assert (cpu / "kernel_max").read_text() == "3\n"
    assert (cpu / "cpu3" / "topology" / "core_siblings_list").read_text() == "0-3\n"
    assert (cpu / "cpu0" / "cpufreq" / "cpuinfo_max_freq").read_text() == "1500000\n"


def test_qemu_lenet_parity_and_emulated_latency(qemu_sysroot, lenets, tmp_path):
    settings = ProfileSettings(
        devices=(f"qemu-aarch64?cache={qemu_sysroot.parent}",), threads=(1,), emulated_queries=3
    )
    results = profile_model(
        lenets["dense"], settings, workdir=tmp_path, parity=(lenets["inputs"], lenets["expected"])
    )
    entry = results["qemu-aarch64"]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["emulated"] is True
    assert entry["timing"] == "emulation"
    assert entry["environment"]["machine"] == "aarch64"
    assert entry["environment"]["cpu"]["core"] == "cortex-a72"
    assert entry["parity"]["passed"] is True
    assert entry["parity"]["max_abs_diff"] < 1e-5
    measured = entry["threads"]["1"]
    assert measured["latency"]["count"] == 3
    assert measured["p50_us"] > 0
    assert "roofline" not in measured
    print(
        f"qemu-aarch64 LeNet-5 fp32: parity max abs diff {entry['parity']['max_abs_diff']:.2e}, "
        f"emulated p50 {measured['p50_us'] / 1000:.1f} ms, "
        f"floor {measured['floor_us'] / 1000:.2f} ms"
    )


def test_qemu_cli_setup_and_check(qemu_sysroot, capsys):
    assert run_cli("device", "setup", "qemu-aarch64", "--cache-dir", str(qemu_sysroot.parent)) == 0
    setup_summary = json.loads(capsys.readouterr().out)
    assert setup_summary["sysroot"] == str(qemu_sysroot)
    assert setup_summary["emulated"] is True
    assert (
        run_cli("device", "check", f"qemu-aarch64?cache={qemu_sysroot.parent}", "--queries", "3")
        == 0
    )
    check = json.loads(capsys.readouterr().out)["qemu-aarch64"]
    assert check["timing"] == "emulation"
    assert check["machine"] == "aarch64"
    assert check["parity_passed"] is True


def test_local_cli_check(capsys):
    assert run_cli("device", "check", "local", "--queries", "10") == 0
    check = json.loads(capsys.readouterr().out)["local"]
    assert check["timing"] == "device"
    assert check["parity_passed"] is True
    assert check["queries"] >= 10


def test_cli_check_missing_device(capsys):
    assert run_cli("device", "check", "board") == 1
    output = json.loads(capsys.readouterr().out)
    assert "unknown device 'board'" in output["board"]["error"]


def test_ssh_spec_name_hides_options():
    device = SshDevice("ssh://pi@board:2200", {"identity": "/secret/key", "python": "python3"})
    assert device.name == "ssh://pi@board:2200"
    assert device.port == 2200
    with pytest.raises(DeviceError, match="invalid port"):
        SshDevice("ssh://pi@board:99999", {})


def test_ssh_profile_on_loopback(sshd, tiny_models, short_settings, tmp_path):
    inputs = np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)
    from benchmark.measure import profiler

    expected = profiler.make_session(str(tiny_models["small"]), profiler.DEFAULTS, 1).run(
        None, {"input": inputs}
    )[0]
    settings = ProfileSettings(
        **{**short_settings.__dict__, "devices": (sshd["spec"] + "&core=cortex-a72",)}
    )
    results = profile_model(
        tiny_models["small"],
        settings,
        reference_onnx=tiny_models["large"],
        macs=1184,
        reference_macs=151552,
        workdir=tmp_path,
        parity=(inputs, expected),
    )
    name = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"
    entry = results[name]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["timing"] == "device"
    assert entry["parity"]["passed"] is True
    measured = entry["threads"]["1"]
    assert measured["speedup"]["median"] > 1.0
    assert measured["roofline"]["core"] == "cortex-a72"
    assert measured["roofline"]["bound_us"] > 0


def test_ssh_leaves_no_remote_files(sshd, tiny_models):
    device = get_device(sshd["spec"])
    device.profile(
        {
            "threads": [1],
            "min_queries": 5,
            "min_seconds": 0.0,
            "warmup_seconds": 0.0,
            "top_operators": 0,
        },
        {"model": tiny_models["small"]},
    )
    remote_dir = device._remote_dir
    assert remote_dir and Path(remote_dir).is_dir()
    device.cleanup()
    assert not Path(remote_dir).exists()


def test_ssh_paths_with_spaces_and_quotes(sshd, tiny_models, tmp_path):
    odd = tmp_path / "it's a model; rm -rf x.onnx"
    odd.write_bytes(tiny_models["small"].read_bytes())
    device = get_device(sshd["spec"])
    try:
        report = device.profile(
            {
                "threads": [1],
                "min_queries": 5,
                "min_seconds": 0.0,
                "warmup_seconds": 0.0,
                "top_operators": 0,
            },
            {"model": odd},
        )
    finally:
        device.cleanup()
    assert report["model_size_bytes"] == odd.stat().st_size


def test_ssh_without_onnxruntime(sshd, bare_python):
    spec = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}?python={bare_python}&{sshd['options']}"
    with pytest.raises(DeviceError) as caught:
        get_device(spec).check()
    assert "onnxruntime" in str(caught.value)
    assert "pip install" in str(caught.value)


def test_ssh_unreachable_port(sshd):
    port = sshd["port"] + 1 if sshd["port"] < 65535 else sshd["port"] - 1
    spec = f"ssh://{sshd['user']}@127.0.0.1:{port}?python={sys.executable}&{sshd['options']}"
    with pytest.raises(DeviceError, match="ssh connection failed"):
        get_device(spec).check()


def test_ssh_rejected_key(sshd, tmp_path):
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {tmp_path / 'other'}")
    spec = sshd["spec"].replace("identity=", f"identity={tmp_path / 'other'}&unused=")
    with pytest.raises(DeviceError, match="key is accepted"):
        get_device(spec).check()


def test_unknown_core_option():
    with pytest.raises(DeviceError) as caught:
        get_device("local?core=cortex-a15")
    assert "'cortex-a15'" in str(caught.value)
    assert "cortex-a72" in str(caught.value)


@pytest.mark.slow
@pytest.mark.skipif(QEMU_MISSING, reason="qemu-aarch64-static not installed (qemu-user-static)")
def test_qemu_sysroot_fresh_build(tmp_path):
    """Builds a sysroot from scratch; needs deb.debian.org and PyPI, and about a minute."""
    try:
        sysroot = devices.build_qemu_sysroot(tmp_path / "cache")
    except DeviceError as err:
        pytest.skip(f"no network for the sysroot downloads: {err}")
    record = json.loads((sysroot / devices.SYSROOT_MARKER).read_text())
    assert record["machine"] == "aarch64"
    assert record["python"].startswith("3.11.")
    assert (sysroot / devices.SYSROOT_PYTHON).is_file()
    assert (sysroot / "proc" / "cpuinfo").is_file()
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["downloads", "sysroot"]
    assert devices.build_qemu_sysroot(tmp_path / "cache") == sysroot
