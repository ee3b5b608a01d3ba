"""Profiling devices: where the self-contained profiler script runs.

A device takes a profiler configuration and the files it names, runs ``profiler.py`` on its
target, and returns the JSON document the script prints. Three kinds are registered:

- ``local`` (or ``local?python=PATH``): the host CPU, in a subprocess of the same Python.
- ``qemu-aarch64``: the real aarch64 ONNX Runtime wheel in an arm64 Debian sysroot, run by
  ``qemu-aarch64-static``. Its latencies are emulation and are labelled so.
- ``ssh://user@host[:port][?python=PATH&identity=KEY&known_hosts=FILE&core=NAME]``: a real
  board. The model and the profiler are copied with scp and run with ssh.

Spec options follow ``?`` as a URL query. ``core=cortex-a72`` names the Arm core for the
roofline bound. Every failure a user can fix raises :class:`benchmark.errors.DeviceError` with
the fix in its message.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from benchmark.errors import DeviceError
from benchmark.measure.roofline import CORES

__all__ = [
    "DEVICE_TYPES",
    "Device",
    "LocalDevice",
    "QemuDevice",
    "SshDevice",
    "build_qemu_sysroot",
    "default_qemu_cache",
    "describe_devices",
    "get_device",
    "parse_spec",
    "register_device_type",
    "setup",
]

logger = logging.getLogger(__name__)

PROFILER_SCRIPT = Path(__file__).with_name("profiler.py")
# Exit status of profiler.py when numpy or onnxruntime cannot be imported.
EXIT_MISSING_PACKAGE = 3
DEFAULT_TIMEOUT_S = 3600.0


class Device(ABC):
    """A target that runs ``profiler.py`` and returns its JSON document.

    Subclasses implement :meth:`_python` (the command that starts the target's Python),
    :meth:`_stage` and :meth:`_write_config` (which make files readable on the target) and
    :meth:`_run` (which runs an argument list there). :meth:`profile` and :meth:`check` are
    the public entry points. One instance is not thread-safe.
    """

    #: True when latencies come from an emulator and must never be shown as device timing.
    emulated: bool = False

    def __init__(self, spec: str, options: dict[str, str]) -> None:
        self.spec = spec
        self.options = dict(options)
        self.core = options.get("core")
        if self.core is not None and self.core.lower() not in CORES:
            raise DeviceError(
                f"{spec}: core={self.core!r} is not a known core; expected one of {sorted(CORES)}"
            )
        try:
            self.timeout_s = float(options.get("timeout", DEFAULT_TIMEOUT_S))
        except ValueError as err:
            raise DeviceError(
                f"{spec}: timeout={options['timeout']!r} is invalid; expected seconds, e.g. 600"
            ) from err

    @property
    def name(self) -> str:
        """The spec the device was created from, used as its key in results."""
        return self.spec

    def check(self) -> dict:
        """Verify that the target can import numpy and onnxruntime; return their versions."""
        code = (
            "import json, numpy, onnxruntime; "
            "print(json.dumps([numpy.__version__, onnxruntime.__version__]))"
        )
        completed = self._run([*self._python(), "-c", code])
        if completed.returncode != 0 and "ModuleNotFoundError" in completed.stderr:
            raise DeviceError(self._missing_packages_message(completed.stderr))
        if completed.returncode != 0:
            raise DeviceError(
                f"{self.name}: importing numpy and onnxruntime failed with exit status "
                f"{completed.returncode}: {_tail(completed.stderr)}"
            )
        numpy_version, ort_version = json.loads(completed.stdout.strip().splitlines()[-1])
        return {
            "device": self.name,
            "numpy": numpy_version,
            "onnxruntime": ort_version,
            "emulated": self.emulated,
        }

    def profile(self, config: dict, files: dict[str, Path]) -> dict:
        """Run the profiler with ``config`` and return its JSON document.

        ``files`` maps config keys (``model``, ``reference``, ``floor_model``) and the parity
        keys ``parity.inputs`` and ``parity.expected`` to local paths. The device copies them
        where the target can read them and rewrites the config to the target paths.
        """
        for key, path in files.items():
            if not Path(path).is_file():
                raise DeviceError(f"{self.name}: file for {key!r} not found: {path}")
        staged = self._stage(
            {"profiler": PROFILER_SCRIPT, **{k: Path(v) for k, v in files.items()}}
        )
        target_config = _with_paths(config, staged)
        config_path = self._write_config(target_config)
        logger.info("profiling on %s (%s)", self.name, "emulated" if self.emulated else "native")
        completed = self._run([*self._python(), staged["profiler"], "--config", config_path])
        return self._parse(completed)

    def cleanup(self) -> None:  # noqa: B027 - an optional hook whose default does nothing
        """Remove what :meth:`profile` left on the target; the default has nothing to remove."""

    @abstractmethod
    def _python(self) -> list[str]:
        """Argument list that starts the target's Python."""

    @abstractmethod
    def _stage(self, files: dict[str, Path]) -> dict[str, str]:
        """Make ``files`` readable on the target; return their paths there, by key."""

    @abstractmethod
    def _write_config(self, config: dict) -> str:
        """Write ``config`` as JSON where the target can read it; return its path there."""

    @abstractmethod
    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        """Run ``argv`` on the target, capturing text output, with this device's timeout."""

    def _missing_packages_message(self, stderr: str) -> str:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        return (
            f"{self.name}: numpy or onnxruntime is missing on the target ({last}). Install both "
            f"there (python3 -m pip install numpy onnxruntime), or point the device at another "
            f"interpreter with '?python=PATH'."
        )

    def _parse(self, completed: subprocess.CompletedProcess) -> dict:
        if completed.returncode == EXIT_MISSING_PACKAGE:
            raise DeviceError(self._missing_packages_message(completed.stderr))
        if completed.returncode != 0:
            raise DeviceError(
                f"{self.name}: profiler failed with exit status {completed.returncode}: "
                f"{_tail(completed.stderr)}"
            )
        try:
            report = json.loads(completed.stdout)
        except ValueError as err:
            raise DeviceError(
                f"{self.name}: profiler printed invalid JSON ({err}): {_tail(completed.stdout)}"
            ) from err
        report["device"] = {"name": self.name, "emulated": self.emulated, "core": self.core}
        return report


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "no output"


def _with_paths(config: dict, staged: dict[str, str]) -> dict:
    """Return a copy of ``config`` with file keys replaced by their staged paths."""
    result = dict(config)
    for key, path in staged.items():
        if key.startswith("parity."):
            result["parity"] = {**result.get("parity", {}), key.split(".", 1)[1]: path}
        elif key != "profiler":
            result[key] = path
    return result


def _run_local(
    argv: list,
    timeout_s: float,
    env: dict[str, str] | None = None,
    action: str = "command",
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``argv`` without a shell; raise DeviceError on a missing program or a timeout."""
    logger.debug("running %s", shlex.join(str(a) for a in argv))
    try:
        return subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as err:
        raise DeviceError(f"{action}: program {argv[0]!r} not found ({err})") from err
    except subprocess.TimeoutExpired as err:
        raise DeviceError(
            f"{action}: timed out after {timeout_s:.0f} s; raise the device's '?timeout=SECONDS' "
            f"or shorten the protocol"
        ) from err


class _HostFilesystemDevice(Device):
    """A device whose target reads the host's files in place (a subprocess or qemu-user)."""

    def __init__(self, spec: str, options: dict[str, str]) -> None:
        super().__init__(spec, options)
        self._workdir: Path | None = None

    def _stage(self, files: dict[str, Path]) -> dict[str, str]:
        return {key: str(Path(path).resolve()) for key, path in files.items()}

    def _write_config(self, config: dict) -> str:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="compressbench-device-"))
        path = self._workdir / "profiler-config.json"
        path.write_text(json.dumps(config, indent=1), encoding="utf-8")
        return str(path)

    def cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


class LocalDevice(_HostFilesystemDevice):
    """The host CPU. ``local?python=PATH`` runs another interpreter than the harness's own."""

    def __init__(self, spec: str, options: dict[str, str]) -> None:
        super().__init__(spec, options)
        self.python = options.get("python", sys.executable)
        if shutil.which(self.python) is None and not Path(self.python).is_file():
            raise DeviceError(
                f"{spec}: Python interpreter {self.python!r} not found; fix '?python=PATH'"
            )

    @property
    def name(self) -> str:
        """``local``, or ``local?python=PATH`` when another interpreter was requested."""
        return self.spec if self.python == sys.executable else f"{self.spec}?python={self.python}"

    def _python(self) -> list[str]:
        return [self.python]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return _run_local(argv, self.timeout_s, action=self.name)


QEMU_BINARY = "qemu-aarch64-static"
SYSROOT_PYTHON = "usr/bin/python3.11"
SYSROOT_SITE = "opt/compressbench/site-packages"
SYSROOT_MARKER = ".compressbench-sysroot.json"


def default_qemu_cache() -> Path:
    """Sysroot cache: ``$COMPRESSBENCH_QEMU_CACHE`` or ~/.cache/compressbench/qemu-aarch64."""
    override = os.environ.get("COMPRESSBENCH_QEMU_CACHE")
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "compressbench" / "qemu-aarch64"


class QemuDevice(_HostFilesystemDevice):
    """Emulated arm64: the aarch64 ONNX Runtime in a Debian sysroot under ``qemu-aarch64-static``.

    ``qemu-aarch64?cache=DIR`` selects the sysroot cache (default :func:`default_qemu_cache`).
    qemu-user opens an absolute path inside the sysroot when it exists there and on the host
    otherwise, so the profiler reads the host's model files in place while ``/proc/cpuinfo`` and
    ``/sys/devices/system/cpu`` come from the fake Cortex-A72 files in the sysroot.
    """

    emulated = True

    def __init__(self, spec: str, options: dict[str, str]) -> None:
        super().__init__(spec, options)
        self.cache_dir = (
            Path(options["cache"]).expanduser() if "cache" in options else default_qemu_cache()
        )
        self.sysroot = self.cache_dir / "sysroot"
        self.qemu = shutil.which(QEMU_BINARY)
        if self.qemu is None:
            raise DeviceError(
                f"{spec}: {QEMU_BINARY} not found on PATH; install the Debian package "
                f"qemu-user-static (apt-get install qemu-user-static)"
            )
        if not (self.sysroot / SYSROOT_MARKER).is_file():
            raise DeviceError(
                f"{spec}: no arm64 sysroot in {self.cache_dir}; build it with "
                f"'compressbench device setup qemu-aarch64 --cache-dir {self.cache_dir}'"
            )

    def _python(self) -> list[str]:
        return [self.qemu, "-L", str(self.sysroot), str(self.sysroot / SYSROOT_PYTHON)]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "PYTHONPATH": "/" + SYSROOT_SITE,
            "PYTHONNOUSERSITE": "1",
            "LANG": "C.UTF-8",
        }
        return _run_local(argv, self.timeout_s, env=env, action=self.name)


# Debian bookworm arm64 packages that make a working python3.11 with the modules numpy and
# onnxruntime load (libpython3.11-stdlib's dependencies, plus libstdc++6 and libgcc-s1 for
# onnxruntime's C++ extension).
DEBIAN_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "libexpat1",
    "zlib1g",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libcrypt1",
    "libdb5.3",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libsqlite3-0",
    "libuuid1",
    "libnsl2",
    "libtirpc3",
    "libgssapi-krb5-2",
    "libkrb5-3",
    "libk5crypto3",
    "libkrb5support0",
    "libcom-err2",
    "libkeyutils1",
    "media-types",
)
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
FAKE_CPU_COUNT = 4
FAKE_CPU_HZ_KHZ = 1_500_000


def build_qemu_sysroot(
    cache_dir: Path, wheels: tuple[str, ...] | None = None, rebuild: bool = False
) -> Path:
    """Build (or reuse) the arm64 sysroot in ``cache_dir/sysroot`` and return its path.

    The build downloads the :data:`DEBIAN_PACKAGES` for arm64 with a private apt state, so the
    host's dpkg configuration is untouched, and extracts them with ``dpkg -x``. It downloads the
    aarch64 cp311 wheels with pip and unzips them onto the sysroot's site-packages. Then it
    writes fake Cortex-A72 CPU files and checks that the emulated Python imports both packages.

    ``wheels`` are pip requirement strings, and the default pins numpy and onnxruntime to the
    host's versions. The sysroot is built in a private folder next to its final place and
    renamed, so a failed build leaves no half sysroot behind. Downloads stay in
    ``cache_dir/downloads`` and are reused by the next build.
    """
    cache_dir = Path(cache_dir).expanduser()
    sysroot = cache_dir / "sysroot"
    wheels = wheels or _host_pinned_wheels()
    if not rebuild and _sysroot_matches(sysroot, wheels):
        logger.info("reusing arm64 sysroot in %s", sysroot)
        return sysroot
    for program in (QEMU_BINARY, "apt-get", "dpkg"):
        if shutil.which(program) is None:
            raise DeviceError(
                f"qemu-aarch64 setup: {program} not found on PATH; it needs a Debian or Ubuntu "
                f"host with the packages qemu-user-static, apt and dpkg installed"
            )

    downloads = cache_dir / "downloads"
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A private folder per build, so two builds at once (parallel CI jobs) cannot mix files.
    partial = Path(tempfile.mkdtemp(prefix="sysroot.partial-", dir=cache_dir))
    try:
        for deb in _download_debs(downloads):
            _checked(["dpkg", "-x", deb, partial], "extracting " + deb.name)
        _install_wheels(_download_wheels(downloads / "wheels", wheels), partial / SYSROOT_SITE)
        _write_fake_cpu_files(partial)
        versions = _probe_sysroot(partial)
        record = {"wheels": list(wheels), **versions}
        (partial / SYSROOT_MARKER).write_text(json.dumps(record, indent=1), encoding="utf-8")
        _move_into_place(partial, sysroot, wheels)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("built arm64 sysroot in %s (%s)", sysroot, versions)
    return sysroot


def _sysroot_matches(sysroot: Path, wheels: tuple[str, ...]) -> bool:
    """Whether ``sysroot`` is complete and was built with these wheel requirements."""
    marker = sysroot / SYSROOT_MARKER
    if not marker.is_file():
        return False
    return json.loads(marker.read_text(encoding="utf-8")).get("wheels") == list(wheels)


def _move_into_place(partial: Path, sysroot: Path, wheels: tuple[str, ...]) -> None:
    """Rename ``partial`` to ``sysroot``, unless a concurrent build already put a match there."""
    if _sysroot_matches(sysroot, wheels):
        return
    shutil.rmtree(sysroot, ignore_errors=True)
    try:
        partial.rename(sysroot)
    except OSError:
        if not _sysroot_matches(sysroot, wheels):
            raise


def _host_pinned_wheels() -> tuple[str, ...]:
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for package in ("numpy", "onnxruntime"):
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pinned.append(package)
    return tuple(pinned)


def _checked(argv: list, action: str, env: dict[str, str] | None = None, timeout_s: float = 1800.0):
    completed = _run_local(argv, timeout_s, env=env, action=action)
    if completed.returncode != 0:
        raise DeviceError(
            f"{action} failed with exit status {completed.returncode}: {_tail(completed.stderr)}"
        )
    return completed


def _download_debs(downloads: Path) -> list[Path]:
    """Download :data:`DEBIAN_PACKAGES` for arm64 into ``downloads/debs`` (private apt state)."""
    apt_state = downloads / "apt"
    debs = downloads / "debs"
    for folder in (
        apt_state / "lists" / "partial",
        apt_state / "cache" / "archives" / "partial",
        debs,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    settings = [
        "APT::Architecture=arm64",
        "APT::Architectures::=arm64",
        f"Dir::State::Lists={apt_state / 'lists'}",
        f"Dir::Cache={apt_state / 'cache'}",
        "Dir::State::status=/dev/null",
        "Debug::NoLocking=1",
    ]
    if os.geteuid() == 0:
        # Root would hand downloads to the _apt user, who cannot write into a private cache.
        settings.append("APT::Sandbox::User=root")
    options = [arg for setting in settings for arg in ("-o", setting)]

    missing = [name for name in DEBIAN_PACKAGES if not any(debs.glob(f"{name}_*_*.deb"))]
    if missing:
        _checked(["apt-get", *options, "update"], "apt-get update for arm64")
        # apt-get download writes into the current directory.
        argv = ["apt-get", *options, "download", *missing]
        completed = _run_local(argv, 1800.0, action="apt-get download", cwd=debs)
        if completed.returncode != 0:
            raise DeviceError(
                f"apt-get download of arm64 packages failed: {_tail(completed.stderr)}"
            )
    return sorted(debs.glob("*.deb"))


def _download_wheels(folder: Path, requirements: tuple[str, ...]) -> list[Path]:
    """Download the aarch64 cp311 wheels of ``requirements`` into a folder named after them."""
    folder = folder / "_".join(
        req.replace("=", "").replace("<", "").replace(">", "") for req in requirements
    )
    folder.mkdir(parents=True, exist_ok=True)
    target = ["--platform", WHEEL_PLATFORM, "--python-version", "3.11", "--implementation", "cp"]
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", "--no-deps", *target, "--abi", "cp311"]
    argv += ["--dest", str(folder), *requirements]
    _checked(argv, "pip download of aarch64 wheels " + " ".join(requirements))
    return sorted(folder.glob("*.whl"))


def _install_wheels(wheels: list[Path], site_packages: Path) -> None:
    """Unzip wheels onto ``site_packages``; pip cannot install for a foreign platform."""
    import zipfile

    site_packages.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site_packages)
        logger.info("unpacked %s", wheel.name)


def _write_fake_cpu_files(sysroot: Path) -> None:
    """Write an Arm Cortex-A72 ``/proc/cpuinfo`` and ``/sys/devices/system/cpu`` tree.

    Without them, qemu-user lets the guest read the host's x86 files, which ONNX Runtime's CPU
    detection cannot handle. onnxruntime 1.32 under qemu-aarch64-static 7.2 (Debian 12) then
    ends in a segmentation fault when it profiles a model.
    The values describe a 4-core Cortex-A72 (implementer 0x41, part 0xd08) at 1.5 GHz.
    """
    blocks = [
        f"processor\t: {cpu}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
        f"CPU revision\t: 3\n"
        for cpu in range(FAKE_CPU_COUNT)
    ]
    (sysroot / "proc").mkdir(parents=True, exist_ok=True)
    (sysroot / "proc" / "cpuinfo").write_text("\n".join(blocks), encoding="ascii")

    last = FAKE_CPU_COUNT - 1
    cpu_root = sysroot / "sys" / "devices" / "system" / "cpu"
    files = {
        "possible": f"0-{last}",
        "present": f"0-{last}",
        "online": f"0-{last}",
        "kernel_max": str(last),
    }
    for cpu in range(FAKE_CPU_COUNT):
        files.update(
            {
                f"cpu{cpu}/topology/core_id": str(cpu),
                f"cpu{cpu}/topology/physical_package_id": "0",
                f"cpu{cpu}/topology/cluster_id": "0",
                f"cpu{cpu}/topology/thread_siblings_list": str(cpu),
                f"cpu{cpu}/topology/thread_siblings": f"{1 << cpu:x}",
                f"cpu{cpu}/topology/core_siblings_list": f"0-{last}",
                f"cpu{cpu}/topology/core_siblings": f"{(1 << FAKE_CPU_COUNT) - 1:x}",
                f"cpu{cpu}/regs/identification/midr_el1": "0x00000000410fd083",
            }
        )
        for name in (
            "cpuinfo_max_freq",
            "cpuinfo_min_freq",
            "scaling_max_freq",
            "scaling_cur_freq",
        ):
            files[f"cpu{cpu}/cpufreq/{name}"] = str(FAKE_CPU_HZ_KHZ)
    for relative, value in files.items():
        path = cpu_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n", encoding="ascii")


def _probe_sysroot(sysroot: Path) -> dict:
    """Import numpy and onnxruntime in the emulated Python; return their versions."""
    code = (
        "import json, platform, numpy, onnxruntime; "
        "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
        "'numpy': numpy.__version__, 'onnxruntime': onnxruntime.__version__}))"
    )
    argv = [shutil.which(QEMU_BINARY), "-L", sysroot, sysroot / SYSROOT_PYTHON, "-c", code]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": "/" + SYSROOT_SITE,
        "PYTHONNOUSERSITE": "1",
    }
    completed = _checked(
        argv, "importing onnxruntime in the arm64 sysroot", env=env, timeout_s=600.0
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


class SshDevice(Device):
    """A real board reached with OpenSSH: ``ssh://user@host[:port]?python=...&identity=...``.

    Options are ``python`` (remote interpreter, default ``python3``), ``identity`` (private key
    file), ``core`` (Arm core for the roofline bound) and ``timeout`` (seconds per command).
    With ``known_hosts`` (a known-hosts file), unknown host keys are accepted on first use.
    Every command runs with ``BatchMode=yes``, so a missing key fails instead of prompting.
    Remote paths come from ``mktemp -d`` plus fixed file names, and every remote command line
    is built with :func:`shlex.join`, so no path reaches the remote shell unquoted.
    """

    def __init__(self, spec: str, options: dict[str, str]) -> None:
        super().__init__(spec, options)
        parts = urlsplit(spec)
        if not parts.hostname:
            raise DeviceError(f"{spec!r}: no host; expected ssh://user@host[:port]")
        self.user = parts.username
        self.host = parts.hostname
        try:
            self.port = parts.port or 22
        except ValueError as err:
            raise DeviceError(
                f"{spec!r}: invalid port ({err}); expected ssh://user@host[:port]"
            ) from err
        self.python = options.get("python", "python3")
        self._remote_dir: str | None = None
        for program in ("ssh", "scp"):
            if shutil.which(program) is None:
                raise DeviceError(
                    f"{spec}: {program} not found on PATH; install the OpenSSH client "
                    f"(Debian package openssh-client)"
                )

    @property
    def name(self) -> str:
        """``ssh://user@host:port`` without the options, so keys and paths stay out of results."""
        user = f"{self.user}@" if self.user else ""
        return f"ssh://{user}{self.host}:{self.port}"

    def _ssh_options(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        if "identity" in self.options:
            options += ["-o", "IdentitiesOnly=yes", "-i", self.options["identity"]]
        if "known_hosts" in self.options:
            options += [
                "-o",
                f"UserKnownHostsFile={self.options['known_hosts']}",
                "-o",
                "StrictHostKeyChecking=accept-new",
            ]
        return options

    def _destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _python(self) -> list[str]:
        return [self.python]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        command = shlex.join(str(a) for a in argv)
        ssh = ["ssh", *self._ssh_options(), "-p", str(self.port), self._destination(), command]
        completed = _run_local(ssh, self.timeout_s, action=self.name)
        if completed.returncode == 255:
            raise DeviceError(
                f"{self.name}: ssh connection failed: {_tail(completed.stderr, 3)}. Check the "
                f"host, port and user, and that the key is accepted (set '?identity=KEY')."
            )
        return completed

    def _ensure_remote_dir(self) -> str:
        if self._remote_dir is None:
            completed = self._run(["mktemp", "-d", "/tmp/compressbench-XXXXXXXX"])
            if completed.returncode != 0:
                raise DeviceError(
                    f"{self.name}: cannot create a remote folder: {_tail(completed.stderr)}"
                )
            self._remote_dir = completed.stdout.strip()
        return self._remote_dir

    def _copy(self, local_paths: list[Path]) -> None:
        remote = f"{self._destination()}:{self._ensure_remote_dir()}/"
        scp = [
            "scp",
            "-q",
            *self._ssh_options(),
            "-P",
            str(self.port),
            *[str(p) for p in local_paths],
            remote,
        ]
        completed = _run_local(scp, self.timeout_s, action=f"{self.name} scp")
        if completed.returncode != 0:
            raise DeviceError(
                f"{self.name}: copying files with scp failed: {_tail(completed.stderr)}"
            )

    def _stage(self, files: dict[str, Path]) -> dict[str, str]:
        """Copy each file as ``<key><suffix>`` into the remote folder, so names never clash."""
        remote_dir = self._ensure_remote_dir()
        with tempfile.TemporaryDirectory(prefix="compressbench-stage-") as local:
            staged, copies = {}, []
            for key, path in files.items():
                name = key.replace(".", "-") + "".join(Path(path).suffixes[-1:])
                link = Path(local) / name
                os.symlink(Path(path).resolve(), link)
                copies.append(link)
                staged[key] = f"{remote_dir}/{name}"
            self._copy(copies)
        return staged

    def _write_config(self, config: dict) -> str:
        with tempfile.TemporaryDirectory(prefix="compressbench-config-") as local:
            path = Path(local) / "profiler-config.json"
            path.write_text(json.dumps(config, indent=1), encoding="utf-8")
            self._copy([path])
        return f"{self._ensure_remote_dir()}/profiler-config.json"

    def cleanup(self) -> None:
        if self._remote_dir is not None:
            completed = self._run(["rm", "-rf", "--", self._remote_dir])
            if completed.returncode != 0:
                logger.warning(
                    "%s: could not remove %s: %s",
                    self.name,
                    self._remote_dir,
                    _tail(completed.stderr),
                )
            self._remote_dir = None


DeviceFactory = Callable[[str, dict[str, str]], Device]

DEVICE_TYPES: dict[str, DeviceFactory] = {}


def register_device_type(kind: str, factory: DeviceFactory) -> None:
    """Register ``factory(spec, options)`` for specs of ``kind`` (``name`` or ``scheme://...``).

    Registering a kind twice replaces the earlier factory and warns.
    """
    if kind in DEVICE_TYPES:
        warnings.warn(
            f"device type {kind!r} is registered twice; the later factory wins", stacklevel=2
        )
    DEVICE_TYPES[kind] = factory


register_device_type("local", LocalDevice)
register_device_type("qemu-aarch64", QemuDevice)
register_device_type("ssh", SshDevice)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split a device spec into (kind, spec without options, options)."""
    base, _, query = spec.strip().partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    kind = base.split("://", 1)[0] if "://" in base else base
    return kind, base, options


def get_device(spec: str) -> Device:
    """Create the device for ``spec``; raise DeviceError naming the known kinds if it is unknown."""
    kind, base, options = parse_spec(spec)
    if kind not in DEVICE_TYPES:
        known = ", ".join(
            f"{k}://user@host[:port]" if k == "ssh" else k for k in sorted(DEVICE_TYPES)
        )
        raise DeviceError(f"unknown device {spec!r}; expected one of: {known}")
    return DEVICE_TYPES[kind](base, options)


def setup(device_name: str, cache_dir: Path | None = None) -> dict:
    """Prepare a device and return a summary of it.

    For ``qemu-aarch64`` this builds (or reuses) the arm64 sysroot in ``cache_dir``, default
    :func:`default_qemu_cache`. Other devices need no preparation and are only checked.
    """
    kind, base, options = parse_spec(device_name)
    if kind == "qemu-aarch64":
        if shutil.which(QEMU_BINARY) is None:
            raise DeviceError(
                f"{QEMU_BINARY} not found on PATH; install the Debian package qemu-user-static "
                f"(apt-get install qemu-user-static)"
            )
        cache = (
            Path(cache_dir)
            if cache_dir is not None
            else Path(options.get("cache", default_qemu_cache()))
        )
        build_qemu_sysroot(cache)
        options["cache"] = str(cache)
        device = QemuDevice(base, options)
        return {**device.check(), "sysroot": str(device.sysroot)}
    device = get_device(device_name)
    return device.check()


def describe_devices() -> list[str]:
    """Describe each device kind in one line for ``compressbench list``, with its readiness."""
    if shutil.which(QEMU_BINARY) is None:
        qemu_state = f"not ready: install qemu-user-static ({QEMU_BINARY} not found)"
    elif (default_qemu_cache() / "sysroot" / SYSROOT_MARKER).is_file():
        qemu_state = f"ready: sysroot in {default_qemu_cache()}"
    else:
        qemu_state = "not ready: run 'compressbench device setup qemu-aarch64'"
    return [
        f"{'local':<24} the host CPU, in a subprocess of {sys.executable}",
        f"{'qemu-aarch64':<24} emulated arm64 ONNX Runtime; latencies are emulation ({qemu_state})",
        f"{'ssh://user@host[:port]':<24} a board with python3, numpy and onnxruntime, over ssh",
    ]
