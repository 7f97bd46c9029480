"""Shared command-line plumbing for the scripts in this folder (standard library only).

Every script answers bad input with one line on stderr that names the flag and the fix, and a non-zero exit
status, before any heavy work; and writes its output files only whole (to a temporary name, renamed on
success), so no script leaves a broken output file behind with exit status 0.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import pathlib

USAGE = 2  # argparse's own exit status for bad arguments

IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


class CliError(Exception):
    """Bad input: ``str(exc)`` is the one line to print (it names the flag and the fix)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``<prog>: error: <message>`` and exit status ``usage_status`` (2, as
    argparse's own), no usage block."""

    usage_status = USAGE

    def error(self, message):  # argparse's hook
        self.exit(self.usage_status, f"{self.prog}: error: {message}. Fix: see {self.prog} --help\n")

    def fail(self, exc: CliError):
        self.exit(self.usage_status, f"{self.prog}: error: {exc}\n")


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_at_least(low: int, high: int | None = None):
    """argparse ``type=``: a whole number ``low <= n (<= high)``; the message names the allowed range."""

    def parse(text: str) -> int:
        value = _number(int, text)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def float_between(low: float, high: float, low_open: bool = True):
    """argparse ``type=``: a number in ``(low, high]`` (or ``[low, high]`` with ``low_open=False``)."""

    def parse(text: str) -> float:
        value = _number(float, text)
        if (value <= low if low_open else value < low) or value > high:
            bound = f"{'above' if low_open else 'at least'} {low:g} and at most {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def readable_file(flag: str, path, what: str = "file") -> pathlib.Path:
    """``path`` as a Path when it is a readable file; else CliError naming ``flag``."""
    path = pathlib.Path(path)
    if not path.exists():
        raise CliError(f"{flag}: no such {what}: {path}. Fix: check the path")
    if not path.is_file():
        raise CliError(f"{flag}: {path} is a folder, not a {what}. Fix: name the file itself")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise CliError(f"{flag}: cannot read {path} ({exc.strerror or exc}). Fix: check its permissions") from None
    return path


def image_file(flag: str, path) -> pathlib.Path:
    """A readable PNG / JPEG / WEBP / GIF / BMP / TIFF file (by its first bytes)."""
    path = readable_file(flag, path, "image file")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not (any(head.startswith(sig) for sig in IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
        raise CliError(f"{flag}: {path} is not an image (not PNG, JPEG, WEBP, GIF, BMP or TIFF). "
                       f"Fix: give a picture file")
    return path


def output_path(flag: str, path, suffixes: tuple[str, ...] = ()) -> pathlib.Path:
    """An output file path whose folder exists and whose suffix is one of ``suffixes`` (when given)."""
    path = pathlib.Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise CliError(f"{flag}: {path} must end in {' or '.join(suffixes)}. Fix: e.g. {flag} "
                       f"{path.with_suffix(suffixes[0]).name}")
    if path.is_dir():
        raise CliError(f"{flag}: {path} is a folder. Fix: give a file name, e.g. {flag} {path / ('out' + (suffixes or ('',))[0])}")
    parent = path.parent if str(path.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise CliError(f"{flag}: the folder {parent} does not exist. Fix: create it or write elsewhere")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{flag}: cannot write into {parent}. Fix: choose a folder you can write to")
    return path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path`` (same suffix, so writers that go by the suffix still work);
    rename it onto ``path`` when the block succeeds, delete it when the block fails."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if not tmp.is_file():
            raise OSError(f"nothing was written to {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
