"""Benchmark: secret-init with the AWS backend against a plain boto3 script, on moto server.

Runs moto server on 127.0.0.1 with an ephemeral port, seeds 101 secrets, then times, as
whole processes from start to exit and interleaved round by round:

  boto3 script    python -c "import boto3; boto3.client(...).get_secret_value(...)"
  secret-init 1   secret-init run -f one.yaml ... -- true  (the venv's console script)
  secret-init 100 the same with 100 distinct secrets in one manifest

and the import cost of ``botocore.session``, ``boto3`` and an empty interpreter. Prints
medians, the ratios against the targets (one secret <= 0.85 x the boto3 script, 100 secrets
<= 1.3 x one secret) and the HTTP requests each variant sent. Every request stays on
loopback: the environment has dummy keys, a temporary HOME and AWS_EC2_METADATA_DISABLED.

Usage: python bench/aws_fetch.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from tests.moto_server import RequestCounter, start_moto_server  # noqa: E402

REGION = "eu-central-1"
MANY = 100


def isolated_environment(home: Path, endpoint: str, bytecode: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AWS_") and name.lower() not in ("http_proxy", "https_proxy")}
    # Every variant reads bytecode from one cache that the warm-up round fills. With an
    # inherited PYTHONDONTWRITEBYTECODE, each run would instead recompile every module whose
    # .pyc is missing or stale (any file edited since the last import) and time the compiler.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({
        "PYTHONPYCACHEPREFIX": str(bytecode),
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST",
        "AWS_SECRET_ACCESS_KEY": "dummy-secret-access-key",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "NO_PROXY": "127.0.0.1",
        "PYTHONPATH": str(REPOSITORY),
    })
    return env


def write_manifest(path: Path, names: list[str]) -> None:
    lines = ["version: 1", "backends:", "  aws: {type: aws-secretsmanager}", "secrets:"]
    lines += [f"  s{index}: {{from: aws, id: {name}}}" for index, name in enumerate(names)]
    path.write_text("\n".join(lines) + "\n")


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed with exit code {result.returncode}:\n"
                         f"{result.stderr.decode(errors='replace')}")
    return elapsed


def enter_tmpfs_namespace() -> None:
    """Re-run this script in a private mount namespace with a tmpfs over the temp folder.

    secret-init writes to tmpfs in production, where fsync costs nothing. On a disk the
    fsync of each file would dominate and measure the disk, not secret-init. Without root,
    the benchmark runs on disk and prints a note.
    """
    if os.environ.get("BENCH_IN_TMPFS") == "1":
        return
    if os.geteuid() != 0:
        print("note: not root, so secret-init writes to disk with --allow-disk", file=sys.stderr)
        return
    os.environ["BENCH_IN_TMPFS"] = "1"
    temp = tempfile.gettempdir()
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                          f'mount -t tmpfs -o size=256m tmpfs {temp} && exec "$@"', "sh",
                          sys.executable, *sys.argv])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="runs per variant (default 15)")
    args = parser.parse_args()
    enter_tmpfs_namespace()

    import boto3

    counter = RequestCounter()
    server, endpoint = start_moto_server(counter)
    work = Path(tempfile.mkdtemp(prefix="aws-fetch-bench-"))
    home = work / "home"
    home.mkdir()
    env = isolated_environment(home, endpoint, work / "bytecode")

    client = boto3.client("secretsmanager", region_name=REGION, endpoint_url=endpoint,
                          aws_access_key_id="AKIATESTTESTTESTTEST",
                          aws_secret_access_key="dummy-secret-access-key")
    client.create_secret(Name="bench/one", SecretString="one-value")
    names = [f"bench/many/{index:03d}" for index in range(MANY)]
    for name in names:
        client.create_secret(Name=name, SecretString=f"value-of-{name}")
    write_manifest(work / "one.yaml", ["bench/one"])
    write_manifest(work / "many.yaml", names)

    python = sys.executable
    boto3_script = (f"import boto3; boto3.client('secretsmanager', region_name='{REGION}')"
                    ".get_secret_value(SecretId='bench/one')")
    # The console script, as an image's ENTRYPOINT runs it; python -m secret_init where the
    # package is not installed in this interpreter's environment.
    script = Path(python).with_name("secret-init")
    secret_init = [str(script)] if script.exists() else [python, "-m", "secret_init"]
    variants = {
        "python (empty)": [python, "-c", "pass"],
        "import botocore.session": [python, "-c", "import botocore.session"],
        "import boto3": [python, "-c", "import boto3"],
        "boto3 script, 1 secret": [python, "-c", boto3_script],
        "secret-init run, 1 secret": [*secret_init, "run", "-f", "one.yaml",
                                      "--allow-disk", "--output-dir", "OUT", "--", "true"],
        f"secret-init run, {MANY} secrets": [*secret_init, "run", "-f",
                                             "many.yaml", "--allow-disk", "--output-dir", "OUT",
                                             "--", "true"],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    requests: dict[str, int] = {}

    for round_number in range(args.rounds + 1):
        for name, command in variants.items():
            output = work / f"out-{round_number}-{len(times[name])}"
            command = [str(output) if part == "OUT" else part for part in command]
            counter.clear()
            elapsed = timed(command, env, work)
            requests[name] = counter.count()
            if round_number > 0:  # the first round warms the page cache and .pyc files
                times[name].append(elapsed)
    server.stop()

    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"{'variant':34} {'median ms':>10} {'min ms':>8} {'HTTP requests':>14}")
    for name in variants:
        print(f"{name:34} {medians[name]:10.1f} {min(times[name]) * 1000:8.1f} "
              f"{requests[name]:14d}")

    one = medians["secret-init run, 1 secret"]
    script = medians["boto3 script, 1 secret"]
    many = medians[f"secret-init run, {MANY} secrets"]
    print()
    print(f"secret-init 1 secret / boto3 script:     {one / script:.2f}x (target <= 0.85x)")
    print(f"secret-init {MANY} secrets / 1 secret:     {many / one:.2f}x (target <= 1.30x)")
    print(f"rounds: {args.rounds}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          f"moto server in this process on {endpoint}")


if __name__ == "__main__":
    main()
