"""Shared parts of the Secrets Manager and SSM backends: configuration, Region, clients, threads."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from ...deadline import Deadline
from ...errors import ConfigError, SecretInitError
from ...fields import Fields
from ..base import Backend, BackendContext, Fetched, Reference
from . import session

T = TypeVar("T")

DEFAULT_CONCURRENCY = 8
# Requests in flight per backend. Each thread uses one pooled HTTPS connection, and the
# BatchGetSecretValue quota is 100 requests per second per Region.
MAX_CONCURRENCY = 64


class AwsBackend(Backend):
    """Common configuration of the AWS backends: ``region``, ``endpoint_url``, ``concurrency``."""

    extra = "aws"
    requires = ("botocore",)
    # The botocore service name, set by subclasses.
    service: str

    def __init__(self, name: str, config: Fields, context: BackendContext) -> None:
        super().__init__(name, config, context)
        self.region: str | None = config.string("region")
        self.endpoint_url: str | None = config.string("endpoint_url")
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise config.error("endpoint_url",
                               f"'{self.endpoint_url}' must start with http:// or https://")
        self.concurrency: int = config.integer("concurrency", DEFAULT_CONCURRENCY, minimum=1,
                                               maximum=MAX_CONCURRENCY)

    def consumed_environment(self) -> set[str]:
        return session.consumed_variables(self.context.environ)

    def region_for(self, arn_region: str | None) -> str:
        """Return the Region of a reference; raises ConfigError when none is configured."""
        return session.resolve_region(arn_region, self.region, self.context.environ)

    def locate(self, references: Sequence[Any]) -> tuple[
            dict[Reference, Fetched | SecretInitError], list[tuple[str, Any]]]:
        """Check the credentials and resolve the Region of each reference before any request.

        Each reference has a ``region`` attribute (from an ARN, or None). Return the results
        already decided (a credentials error for every reference, or a missing Region for
        some) and the (Region, reference) pairs left to fetch.
        """
        try:
            session.ensure_credentials()
        except SecretInitError as error:
            return {reference: error for reference in references}, []
        results: dict[Reference, Fetched | SecretInitError] = {}
        located: list[tuple[str, Any]] = []
        for reference in references:
            try:
                located.append((self.region_for(reference.region), reference))
            except ConfigError as error:
                results[reference] = error
        return results, located

    def client(self, region: str, deadline: Deadline):
        return session.get_client(self.service, region, self.endpoint_url, deadline,
                                  max_pool_connections=self.concurrency)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Split ``items`` into consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_tasks(tasks: Iterable[Callable[[], dict]], concurrency: int) -> dict:
    """Run tasks that each return a dict of results, at most ``concurrency`` at a time.

    A task reports failures inside its dict; an exception escaping one is a bug and is
    raised here after the other tasks finish.
    """
    task_list = list(tasks)
    results: dict = {}
    if len(task_list) <= 1 or concurrency == 1:
        for task in task_list:
            results.update(task())
        return results

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(concurrency, len(task_list)),
                            thread_name_prefix="secret-init-aws") as pool:
        futures = [pool.submit(task) for task in task_list]
        for future in futures:
            results.update(future.result())
    return results
