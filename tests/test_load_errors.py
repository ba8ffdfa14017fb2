"""Loading a model (issue 29, item 12): a missing model (not in the cache, not a directory, the Hub
unreachable) is "not available"; weights that are here but cannot be read (a corrupt or truncated file,
a full disk, no permission) are reported as what they are, naming the model, the path and the OS error.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from diffusers import StableDiffusionInstructPix2PixPipeline as Pix2Pix
from huggingface_hub.errors import LocalEntryNotFoundError

from mora.cli import main
from mora.errors import ModelLoadError, ModelUnavailableError
from mora.tools import weights
from mora.tools.tiny import ensure_tiny


def _copy_tiny(name: str, target: Path) -> Path:
    shutil.copytree(ensure_tiny(f"tiny/{name}"), target)
    return target


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as a download or a copy cut short by a full disk
    return path


def _assert_corrupt(error: ModelLoadError, model: str, path: Path, fix: str) -> None:
    message = str(error)
    assert "\n" not in message and "not available" not in message, message
    assert f"model {model!r} could not be read" in message and str(path) in message, message
    assert "a weights file is corrupt or truncated" in message and "SafetensorError" in message, message
    assert message.endswith(f"; {fix}"), message


@pytest.mark.parametrize("component", ["unet/diffusion_pytorch_model.safetensors",  # diffusers wraps the error
                                       "text_encoder/model.safetensors"])  # transformers does not
def test_a_truncated_weights_file_in_a_model_folder_is_reported_as_corrupt(tmp_path, component):
    folder = _copy_tiny("pix2pix", tmp_path / "pix2pix")
    bad = _truncate(folder / component)
    with pytest.raises(ModelLoadError) as info:
        weights.from_pretrained(Pix2Pix, str(folder))
    _assert_corrupt(info.value, str(folder), folder, "save or download the model into that folder again")
    if component.startswith("unet"):
        assert str(bad) in str(info.value)  # diffusers names the file


def test_a_corrupt_file_in_the_hugging_face_cache_is_not_reported_as_not_available(tmp_path):
    """The reported bug: the cache held the model, one file was cut short, and the message said "not available"."""
    repo = tmp_path / "hub" / "models--someone--tiny-pix2pix"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = _copy_tiny("pix2pix", repo / "snapshots" / revision)
    _truncate(snapshot / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ModelLoadError) as info:
        weights.from_pretrained(Pix2Pix, "someone/tiny-pix2pix", cache_dir=str(tmp_path / "hub"))
    _assert_corrupt(info.value, "someone/tiny-pix2pix", snapshot / "vae",
                    "download it again: hf download someone/tiny-pix2pix --force-download")
    assert info.value.exit_code == 1


def test_a_corrupt_tiny_model_says_it_is_rebuilt_once_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("MORA_HOME", str(tmp_path))  # a private tiny cache: the session's stays intact
    folder = ensure_tiny("tiny/pix2pix")
    _truncate(folder / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ModelLoadError) as info:
        weights.from_pretrained(Pix2Pix, "tiny/pix2pix")
    _assert_corrupt(info.value, "tiny/pix2pix", folder, f"delete {folder}: it is built again on the next run")


def test_a_model_missing_from_the_cache_is_still_not_available(tmp_path):
    with pytest.raises(ModelUnavailableError, match=r"model 'someone/not-here' is not available: no local copy"):
        weights.from_pretrained(Pix2Pix, "someone/not-here", cache_dir=str(tmp_path / "hub"))


class _Loader:
    """A pipeline class whose local cache lacks the model and whose download fails with `error`."""

    def __init__(self, error: BaseException):
        self.error = error

    def from_pretrained(self, source: str, local_files_only: bool = False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError(f"{source} is not in the cache")
        raise self.error


@pytest.mark.parametrize(("error", "what"), [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (PermissionError(errno.EACCES, "Permission denied", "/cache/models--a--b/blobs/f1"), "permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "/cache/models--a--b"), "the file system is read-only"),
])
def test_a_file_system_error_while_downloading_is_reported_as_what_it_is(error, what):
    with pytest.raises(ModelLoadError) as info:
        weights.from_pretrained(_Loader(error), "a/b")
    message = str(info.value)
    assert "model 'a/b' could not be read" in message and what in message and error.strerror in message, message
    assert "not available" not in message and "\n" not in message
    if error.filename:
        assert error.filename in message  # the path, when the OS error names it


@pytest.mark.parametrize("error", [ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
                                   PermissionError(errno.EPERM, "Operation not permitted"),  # a socket's: no file
                                   FileNotFoundError(errno.ENOENT, "No such file", "/cache/models--a--b")])
def test_a_network_error_or_a_missing_file_is_still_not_available(error):
    with pytest.raises(ModelUnavailableError, match=r"model 'a/b' is not available"):
        weights.from_pretrained(_Loader(error), "a/b")


def test_the_command_line_says_corrupt_naming_the_model_and_path(tmp_path, capsys):
    folder = _copy_tiny("sdxl-base", tmp_path / "my-sdxl")
    _truncate(folder / "unet" / "diffusion_pytorch_model.safetensors")
    preset = tmp_path / "broken-sdxl.toml"
    preset.write_text('extends = "tiny"\n[roles.text_to_image]\nmodel = "./my-sdxl"\nrefiner = false\n')
    out = tmp_path / "fox.mp4"
    code = main(["text-to-video", "a red fox", "--preset-file", str(preset), "--seed", "0", "--out", str(out),
                 "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    (line,) = err.splitlines()
    assert line.startswith(f"mora: error: model {str(folder)!r} could not be read at "), line
    assert "corrupt or truncated" in line and "unexpected failure" not in line and "not available" not in line, line
    assert not out.exists()
