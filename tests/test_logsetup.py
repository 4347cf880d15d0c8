"""Logging set-up: library loggers stay quiet at debug, and registered values are masked."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from secret_init import logsetup, redact


class CapturedStderr:
    """What the handler that configure() creates wrote to stderr, read through capsys."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys):
    # configure() binds its handler to sys.stderr when called inside the test, which capsys
    # has replaced by then.
    yield CapturedStderr(capsys)
    logging.getLogger().handlers.clear()


@pytest.mark.parametrize("library", ["botocore", "botocore.endpoint", "urllib3", "hvac", "boto3"])
def test_debug_level_keeps_libraries_quiet(stderr, library):
    logsetup.configure("debug", "text")

    # botocore logs whole request and response bodies (a KMS data key) at DEBUG.
    logging.getLogger(library).debug("body: %s", "DATA-KEY-CANARY")
    logging.getLogger(library).info("body: %s", "DATA-KEY-CANARY")

    assert "DATA-KEY-CANARY" not in stderr.getvalue()
    assert logging.getLogger("secret_init").isEnabledFor(logging.DEBUG)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_registered_value_masked_in_every_form(stderr, log_format):
    logsetup.configure("debug", log_format)
    redact.register("hunter2-canary-value")
    encoded = base64.b64encode(b"hunter2-canary-value").decode()

    logging.getLogger("secret_init.test").warning("plain %s and encoded %s",
                                                  "hunter2-canary-value", encoded)

    output = stderr.getvalue()
    assert "hunter2-canary-value" not in output
    assert encoded not in output
    assert output.count(redact.MASK) == 2
    if log_format == "json":
        assert json.loads(output)["level"] == "warning"
