"""The position-keeping YAML loader: libyaml's C parser and PyYAML's pure-Python parser agree."""

from __future__ import annotations

import pytest

from secret_init import located
from secret_init.errors import ManifestError

DOCUMENT = """\
version: 1
defaults: &defaults {mode: 0400, owner: app}
backends:
  aws: {type: aws-secretsmanager, region: eu-central-1}
secrets:
  db:
    <<: *defaults
    from: aws
    id: "prod/db"
    key: [connection, password]
  token: {from: aws, id: prod/token, optional: true}
keep_env:
  - PATH
  - HOME
"""


def _positions(value):
    """Return every value with the positions the loader recorded, recursively."""
    if isinstance(value, located.LocatedMap):
        return {"position": value.position, "keys": value.key_positions,
                "values": value.value_positions, "sources": value.value_sources,
                "items": {key: _positions(item) for key, item in value.items()}}
    if isinstance(value, located.LocatedList):
        return {"position": value.position, "items": value.item_positions,
                "values": [_positions(item) for item in value]}
    return value


@pytest.mark.skipif(located._FastLoader is None, reason="PyYAML is built without libyaml")
def test_c_parser_matches_python_parser():
    fast = located._FastLoader(DOCUMENT).get_single_data()
    pure = located._load_with(located._Loader(DOCUMENT), "manifest.yaml")

    assert fast == pure
    assert located.load_located_yaml(DOCUMENT, "manifest.yaml") == pure
    assert _positions(fast) == _positions(pure)
    assert fast["secrets"]["db"]["mode"] == 0o400
    assert fast["secrets"]["db"].value_sources["mode"] == "0400"
    assert fast["secrets"].key_positions["token"] == (11, 3)


def test_syntax_error_keeps_pyyaml_message():
    with pytest.raises(ManifestError) as raised:
        located.load_located_yaml("version: 1\nsecrets:\n\ta: b\n", "manifest.yaml")

    assert "found character '\\t' that cannot start any token" in str(raised.value)
    assert (raised.value.line, raised.value.column) == (3, 1)


def test_duplicate_key_rejected_with_position():
    with pytest.raises(ManifestError) as raised:
        located.load_located_yaml("version: 1\nversion: 2\n", "manifest.yaml")

    assert "duplicate key 'version' (first defined on line 1)" in str(raised.value)
    assert (raised.value.line, raised.value.column) == (2, 1)
