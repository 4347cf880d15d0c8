"""Benchmark the vault backend's fetch phase: parallel reads against reads one after another.

Serves 50 distinct KV version 2 secrets from the Vault emulator in tests/ with 20 ms of added
latency on every request, then times ``VaultBackend.fetch`` for each concurrency setting.
Every run builds a new backend, so each includes one mount lookup; the token is supplied
(no login). Prints the median and spread of several runs per setting, and the ratio of the
parallel median to the sequential one. The target is a ratio of at most 0.25.

Run: .venv/bin/python bench/vault_fetch.py [--runs 7] [--secrets 50] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "tests"))

from secret_init.backends.base import BackendContext, Fetched  # noqa: E402
from secret_init.backends.vault import VaultBackend  # noqa: E402
from secret_init.deadline import Deadline  # noqa: E402
from secret_init.fields import Fields  # noqa: E402
from vault_emulator import VaultEmulator  # noqa: E402

TARGET_RATIO = 0.25


def time_fetch(vault: VaultEmulator, secrets: int, concurrency: int) -> float:
    """Return the seconds one fetch of ``secrets`` paths takes at ``concurrency``."""
    config = Fields({"address": vault.url, "concurrency": concurrency}, file="bench",
                    where="backends.vault")
    backend = VaultBackend("vault", config, BackendContext(Path("."),
                                                           {"VAULT_TOKEN": vault.root_token}))
    references = [backend.reference(Fields({"path": f"secret/bench/{index}"}, file="bench",
                                           where="secrets.s"))[0]
                  for index in range(secrets)]
    started = time.perf_counter()
    results = backend.fetch(references, Deadline.after(120))
    elapsed = time.perf_counter() - started
    backend.close()
    failed = [reference for reference, result in results.items() if not isinstance(result, Fetched)]
    if failed:
        raise SystemExit(f"fetch failed for {len(failed)} secrets: {results[failed[0]]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per setting")
    parser.add_argument("--secrets", type=int, default=50, help="distinct secret paths")
    parser.add_argument("--latency", type=float, default=0.02,
                        help="seconds added to every Vault request")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="concurrency of the parallel setting")
    arguments = parser.parse_args()

    with VaultEmulator() as vault:
        vault.enable_kv("secret", version=2)
        for index in range(arguments.secrets):
            vault.kv_put("secret", f"bench/{index}", {"value": f"v{index}"})
        vault.set_latency(arguments.latency)

        settings = [("sequential", 1), ("parallel", arguments.concurrency)]
        timings: dict[str, list[float]] = {name: [] for name, _ in settings}
        time_fetch(vault, arguments.secrets, arguments.concurrency)  # warm-up, not counted
        for _ in range(arguments.runs):
            for name, concurrency in settings:
                timings[name].append(time_fetch(vault, arguments.secrets, concurrency))

    print(f"{arguments.secrets} KV v2 secrets, {arguments.latency * 1000:g} ms latency per "
          f"request, {arguments.runs} runs each (Python {sys.version.split()[0]})")
    print(f"{'setting':<12} {'concurrency':>11} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    medians = {}
    for name, concurrency in settings:
        values = timings[name]
        medians[name] = statistics.median(values)
        print(f"{name:<12} {concurrency:>11} {medians[name] * 1000:>10.1f} "
              f"{min(values) * 1000:>8.1f} {max(values) * 1000:>8.1f}")
    ratio = medians["parallel"] / medians["sequential"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"ratio parallel/sequential: {ratio:.3f} ({verdict} the target of {TARGET_RATIO})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
