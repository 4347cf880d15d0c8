"""Benchmark: decrypting a 10,000-value sops YAML file against parsing it with PyYAML.

Target: the native decryption (parse, data key via age, AES-GCM for every value, MAC check)
costs at most 1.5x ``yaml.load(text, Loader=yaml.SafeLoader)``, PyYAML's pure-Python loader,
on the same encrypted file. Both run side by side in one process; the table shows medians.

The backend composes YAML with libyaml when PyYAML has it (``yaml.CSafeLoader``); the
second decryption row forces the pure-Python composer to show the cost without libyaml.

Run from the repository root: ``python bench/sops_decrypt.py [--values N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyrage  # noqa: E402
import yaml  # noqa: E402

from secret_init.backends.sops import formats  # noqa: E402
from secret_init.deadline import Deadline  # noqa: E402
from tests.sops_writer import SopsWriter, age_key, make_backend  # noqa: E402

TARGET_RATIO = 1.5
VALUES_PER_SECTION = 100


def build_file(values: int, recipient: str) -> bytes:
    """Encrypt a YAML tree of sections, each with VALUES_PER_SECTION str, int and bool values."""
    tree: dict[str, dict[str, object]] = {}
    for index in range(values):
        section = tree.setdefault(f"service_{index // VALUES_PER_SECTION:04d}", {})
        kind = index % 3
        if kind == 0:
            section[f"password_{index}"] = f"s3cret-value-{index:06d}-padding-to-look-real"
        elif kind == 1:
            section[f"port_{index}"] = 1024 + index
        else:
            section[f"enabled_{index}"] = bool(index % 2)
    return SopsWriter(key_groups=[[age_key(recipient)]]).yaml(tree)


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=10_000, help="encrypted values in the file")
    parser.add_argument("--repeats", type=int, default=7, help="runs per row; the median is shown")
    arguments = parser.parse_args()

    identity = pyrage.x25519.Identity.generate()
    data = build_file(arguments.values, str(identity.to_public()))
    text = data.decode()
    with tempfile.TemporaryDirectory() as home:
        environ = {"HOME": home, "SOPS_AGE_KEY": str(identity), "PATH": os.defpath}

        def decrypt() -> object:
            # A new backend each time, so that its per-file cache is always empty.
            backend = make_backend(environ=environ)
            return backend.decrypt(data, "yaml", "bench.yaml", Deadline.after(600))

        document = decrypt()
        assert sum(len(section) for section in document.values()) == arguments.values

        baseline = median_seconds(lambda: yaml.load(text, Loader=yaml.SafeLoader), arguments.repeats)
        native = median_seconds(decrypt, arguments.repeats)
        original_loader = formats.yaml_loader_class
        formats.yaml_loader_class = lambda: yaml.SafeLoader
        try:
            pure = median_seconds(decrypt, arguments.repeats)
        finally:
            formats.yaml_loader_class = original_loader

    composer = "libyaml" if getattr(yaml, "CSafeLoader", None) is not None else "pure Python"
    rows = [
        ("yaml.load, SafeLoader (pure Python)", baseline),
        (f"sops decrypt + MAC (composer: {composer})", native),
        ("sops decrypt + MAC (composer: pure Python)", pure),
    ]
    print(f"file: {arguments.values} encrypted values, {len(data) / 1024:.0f} KiB; "
          f"median of {arguments.repeats} runs; Python {sys.version.split()[0]}, "
          f"PyYAML {yaml.__version__}")
    print(f"{'measurement':<46} {'median ms':>10} {'x baseline':>11}")
    for label, seconds in rows:
        print(f"{label:<46} {seconds * 1000:>10.1f} {seconds / baseline:>11.2f}")
    ratio = native / baseline
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"ratio {ratio:.2f} {verdict} the target of {TARGET_RATIO}x")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
