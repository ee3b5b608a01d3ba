"""Fixtures for the profiling tests: tiny ONNX models, short protocols, LeNets, loopback sshd."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from benchmark.measure.profiling import ProfileSettings

SSHD = "/usr/sbin/sshd"
# scp of OpenSSH 9 copies over the SFTP protocol, so the server needs this subsystem.
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def write_mlp(path: Path, hidden: int, seed: int = 0, batch="batch") -> Path:
    """Write a 64 -> ``hidden`` -> 10 MatMul/Relu model with the given batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((64, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((hidden, 10)).astype(np.float32), "w2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w1"], ["hidden"]),
            helper.make_node("Relu", ["hidden"], ["activation"]),
            helper.make_node("MatMul", ["activation", "w2"], ["output"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A small and a large MLP with a dynamic batch axis, and a small one with batch fixed at 1."""
    folder = tmp_path_factory.mktemp("tiny_models")
    return {
        "small": write_mlp(folder / "small.onnx", hidden=16),
        "large": write_mlp(folder / "large.onnx", hidden=2048),
        "static": write_mlp(folder / "static.onnx", hidden=16, batch=1),
        "wrong": write_mlp(folder / "wrong.onnx", hidden=16, seed=1),
    }


@pytest.fixture
def short_settings() -> ProfileSettings:
    """A protocol short enough for tests: one thread, 30 queries or 0.1 s."""
    return ProfileSettings(
        threads=(1,),
        warmup_runs=10,
        warmup_seconds=0.05,
        min_queries=30,
        min_seconds=0.1,
        top_operators=3,
        emulated_queries=3,
    )


@pytest.fixture(scope="session")
def lenets(tmp_path_factory) -> dict:
    """Dense LeNet-5 (conv 20/50, fc 500) and a thin one (conv 5/10, fc 100), exported to ONNX.

    Also returns 8 MNIST-shaped inputs and the dense model's PyTorch outputs for them.
    """
    torch = pytest.importorskip("torch")
    from benchmark.tasks.models import LeNet5

    folder = tmp_path_factory.mktemp("lenets")
    torch.manual_seed(0)
    example = torch.randn(1, 1, 28, 28)
    paths = {}
    models = {
        "dense": LeNet5(widths=(20, 50, 500)).eval(),
        "thin": LeNet5(widths=(5, 10, 100)).eval(),
    }
    for name, model in models.items():
        paths[name] = folder / f"lenet_{name}.onnx"
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), str(paths[name]), dynamo=False, opset_version=17)
    inputs = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        expected = torch.cat([models["dense"](x.unsqueeze(0)) for x in inputs])
    return {
        **paths,
        "inputs": inputs.numpy(),
        "expected": expected.numpy(),
        # MACs of the conv and linear layers for 28x28 inputs and 10 classes.
        "dense_macs": 24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25 + 800 * 500 + 500 * 10,
        "thin_macs": 24 * 24 * 5 * 25 + 8 * 8 * 10 * 5 * 25 + 160 * 100 + 100 * 10,
    }


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> Path:
    """A virtual environment without numpy and onnxruntime."""
    folder = tmp_path_factory.mktemp("bare_venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return folder / "bin" / "python"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"sshd exited with status {process.returncode}: {process.stderr.read()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout_s} s")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """An OpenSSH server on 127.0.0.1 and a free port, accepting a key made for this session.

    Yields a dict with ``spec`` (an ssh:// device spec for the current user, with the key,
    a private known-hosts file and this Python as the remote interpreter), ``port``, ``user``
    and ``options`` (the query string without ``python``).
    """
    if (
        not os.path.exists(SSHD)
        or not os.path.exists(SFTP_SERVER)
        or shutil.which("ssh-keygen") is None
    ):
        pytest.skip("OpenSSH server not installed (Debian package openssh-server)")
    if not os.path.isdir("/run/sshd"):
        try:
            os.makedirs("/run/sshd", mode=0o755)
        except OSError as err:
            pytest.skip(
                f"sshd needs its privilege separation folder /run/sshd, which cannot be made: {err}"
            )

    folder = tmp_path_factory.mktemp("sshd")
    host_key, user_key = folder / "host_ed25519", folder / "user_ed25519"
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (folder / "authorized_keys").write_text((folder / "user_ed25519.pub").read_text())
    port, user = _free_port(), getpass.getuser()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\nSubsystem sftp {SFTP_SERVER}\n"
    )
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_port(port, process)
        options = f"identity={user_key}&known_hosts={folder / 'known_hosts'}"
        yield {
            "spec": f"ssh://{user}@127.0.0.1:{port}?python={sys.executable}&{options}",
            "port": port,
            "user": user,
            "options": options,
        }
    finally:
        process.terminate()
        process.wait(timeout=10)
