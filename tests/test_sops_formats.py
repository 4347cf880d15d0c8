"""Formats and value types of sops files written by the test writer, and emit()."""

from __future__ import annotations

import datetime
import json
import math

import pytest

from secret_init.backends.base import Fetched
from secret_init.backends.sops import emit as emit_module
from secret_init.backends.sops.formats import resolve_plain_scalar
from secret_init.backends.sops.gotext import format_float, format_rfc3339_seconds, parse_time
from secret_init.errors import DataError, IntegrityError
from tests.sops_writer import (Comment, CommentKey, SopsWriter, Verbatim, age_key, base_environ,
                               fetch, make_backend)

pyrage = pytest.importorskip("pyrage")

UTC = datetime.timezone.utc


@pytest.fixture
def age_identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def writer(age_identity) -> SopsWriter:
    return SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]])


@pytest.fixture
def decrypt(age_identity, tmp_path):
    """Write ``content`` to a file named ``name`` and decrypt it; return the fetch result."""
    def run(name: str, content: bytes, **config):
        path = tmp_path / name
        path.write_bytes(content)
        environ = base_environ(str(tmp_path), SOPS_AGE_KEY=str(age_identity))
        return fetch(make_backend(config, environ=environ), {"file": str(path)})
    return run


def value_of(result) -> object:
    assert isinstance(result, Fetched), result
    return result.value


# -- the cases a new user ran into -------------------------------------------------------------

def test_yaml_comment_in_list_not_in_mac(writer, decrypt):
    tree = {"items": [Comment(" old"), "real"], "other": "x"}
    content = writer.yaml(tree)
    assert b"- ENC[AES256_GCM" in content
    assert b"type:comment]" in content

    assert value_of(decrypt("list.yaml", content)) == {"items": ["real"], "other": "x"}


def test_yaml_comment_line_inside_list_ignored(writer, decrypt):
    # A plain YAML comment line inside a sequence is not a value: it is neither decrypted
    # nor part of the MAC.
    content = writer.yaml({"items": ["real"], "other": "x"})
    content = content.replace(b"    - ENC[", b"    # old\n    #ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:AAAA,type:comment]\n    - ENC[", 1)
    content = content.replace(b"- ENC[", b"# old\n- ENC[", 1) if b"# old" not in content else content

    assert b"# old" in content
    assert value_of(decrypt("list-line-comment.yaml", content)) == {"items": ["real"], "other": "x"}


def test_yaml_mapping_comments_skipped(writer, decrypt):
    tree = {"db": {"user": "eve", CommentKey("c1"): Comment(" rotate yearly"), "password": "pw"}}
    content = writer.yaml(tree)
    assert b"#ENC[AES256_GCM" in content

    assert value_of(decrypt("comments.yaml", content)) == {"db": {"user": "eve", "password": "pw"}}


def test_yaml_unquoted_timestamp_decrypts_as_time(writer, decrypt):
    expires = datetime.datetime(2031, 1, 1, tzinfo=UTC)
    content = writer.yaml({"expires": expires})
    assert b"type:time]" in content

    value = value_of(decrypt("time.yaml", content))["expires"]

    assert value == expires
    assert value.tzinfo is not None


def test_yaml_unencrypted_timestamp_in_mac(decrypt, age_identity):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]])
    tree = {"expires_unencrypted": Verbatim("2031-01-01T00:00:00Z",
                                            datetime.datetime(2031, 1, 1, tzinfo=UTC)),
            "date_unencrypted": Verbatim("2031-02-03", datetime.datetime(2031, 2, 3, tzinfo=UTC))}

    value = value_of(decrypt("plain-time.yaml", writer.yaml(tree)))

    assert value["expires_unencrypted"] == datetime.datetime(2031, 1, 1, tzinfo=UTC)
    assert value["date_unencrypted"] == datetime.datetime(2031, 2, 3, tzinfo=UTC)


def test_json_large_integer_exact_in_current_file(decrypt, age_identity):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]], version="3.13.2")
    content = writer.json({"big": 1234567890123456789, "big_unencrypted": 1234567890123456789})
    assert b"type:int]" in content

    value = value_of(decrypt("big.json", content))

    assert value["big"] == 1234567890123456789
    assert type(value["big"]) is int
    assert value["big_unencrypted"] == 1234567890123456789


def test_json_old_file_numbers_are_floats(decrypt, age_identity):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]], version="3.7.1")
    content = writer.json({"port": 5432, "count_unencrypted": 2 ** 60 + 1})
    assert b"type:float]" in content

    value = value_of(decrypt("old.json", content))

    assert value["port"] == 5432.0
    # The MAC of an old file hashes the float form, but the integer stays exact here.
    assert value["count_unencrypted"] == 2 ** 60 + 1


def test_dotenv_newline_escape_and_equals(writer, decrypt):
    content = writer.dotenv({"KEY": "line1\nline2", "A": "b=c", "PLAIN_unencrypted": "x\ny"})
    assert b"\\n" in content

    result = decrypt("app.env", content)
    value = value_of(result)

    assert result.document_format == "dotenv"
    assert value["KEY"] == "line1\nline2"
    assert value["A"] == "b=c"
    assert value["PLAIN_unencrypted"] == "x\ny"


def test_dotenv_plain_line_with_equals(age_identity, decrypt):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]])
    content = writer.dotenv({"A_unencrypted": "b=c"})
    assert b"A_unencrypted=b=c\n" in content

    assert value_of(decrypt("plain.env", content)) == {"A_unencrypted": "b=c"}


def test_ini_inline_comment_follows_go_ini(writer, decrypt):
    # go-ini reads "here#there" as "here" plus an inline comment; sops hashed "here".
    tree = {"app": {"secret": "s3cret", "note_unencrypted": "here"}}
    content = writer.ini(tree, raw_values={("app", "note_unencrypted"): "here#there"})
    assert b"note_unencrypted = here#there" in content

    value = value_of(decrypt("app.ini", content))

    assert value["app"] == {"secret": "s3cret", "note_unencrypted": "here"}


def test_ini_quoted_and_continued_values(writer, decrypt):
    tree = {"s": {"q_unencrypted": "a;b", "d_unencrypted": "x y", "c_unencrypted": "ab"}}
    raw = {("s", "q_unencrypted"): "`a;b`", ("s", "d_unencrypted"): '"x y"',
           ("s", "c_unencrypted"): "a\\\nb"}

    value = value_of(decrypt("q.ini", writer.ini(tree, raw_values=raw)))

    assert value["s"] == {"q_unencrypted": "a;b", "d_unencrypted": "x y", "c_unencrypted": "ab"}


def test_yaml_alias_expanded_by_sops_decrypts(writer, decrypt, age_identity):
    import yaml

    # sops expands aliases when it encrypts, so the encrypted file contains two separate
    # values and no alias. This checks that both copies decrypt. Aliases that survive in a file sit in
    # its clear part, which the next test covers.
    plaintext = yaml.safe_load("db: &p hunter2\napp: *p\n")
    assert value_of(decrypt("anchors.yaml", writer.yaml(plaintext))) == {"db": "hunter2",
                                                                          "app": "hunter2"}


def test_yaml_alias_in_clear_part_expands(age_identity, decrypt):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]])
    tree = {"db_unencrypted": Verbatim("&p hunter2", "hunter2"),
            "app_unencrypted": Verbatim("*p", "hunter2")}

    value = value_of(decrypt("alias.yaml", writer.yaml(tree)))

    assert value["db_unencrypted"] == "hunter2"
    assert value["app_unencrypted"] == "hunter2"


def test_yaml_merge_key_is_ordinary_key(age_identity, tmp_path):
    # "<<" stays a key named "<<" holding the mapping, as in sops; its values count in the MAC.
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]])
    encrypted, mac_hex = writer.encrypt_tree({"base_unencrypted": {"x": 1},
                                             "site_unencrypted": {"<<": {"x": 1}, "y": 2}})
    body = ("base_unencrypted: &b\n    x: 1\nsite_unencrypted:\n    <<: *b\n    y: 2\n")
    import yaml

    content = body + yaml.safe_dump({"sops": writer.metadata(mac_hex)}, sort_keys=False)
    path = tmp_path / "merge.yaml"
    path.write_text(content)
    environ = base_environ(str(tmp_path), SOPS_AGE_KEY=str(age_identity))

    value = value_of(fetch(make_backend(environ=environ), {"file": str(path)}))

    assert value["site_unencrypted"] == {"<<": {"x": 1}, "y": 2}


def test_mac_only_encrypted_file_verifies(age_identity, decrypt):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]],
                        mac_only_encrypted=True)
    content = writer.yaml({"secret": "s", "public_unencrypted": "p"})
    assert b"mac_only_encrypted: true" in content

    assert value_of(decrypt("only.yaml", content)) == {"secret": "s", "public_unencrypted": "p"}


def test_mac_only_encrypted_ignores_clear_values(age_identity, decrypt):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]],
                        mac_only_encrypted=True)
    content = writer.yaml({"secret": "s", "public_unencrypted": "p"})
    edited = content.replace(b'public_unencrypted: "p"', b'public_unencrypted: "changed"')
    assert edited != content

    # Clear values are outside the MAC with mac_only_encrypted, as in sops.
    assert value_of(decrypt("only.yaml", edited))["public_unencrypted"] == "changed"


def test_mac_only_flag_removed_fails(age_identity, decrypt):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]],
                        mac_only_encrypted=True)
    content = writer.yaml({"secret": "s", "public_unencrypted": "p"})
    stripped = content.replace(b"  mac_only_encrypted: true\n", b"")
    assert stripped != content

    assert isinstance(decrypt("only.yaml", stripped), IntegrityError)


# -- value types --------------------------------------------------------------------------------

def test_all_value_types_round_trip(writer, decrypt):
    tree = {"s": "text", "i": -42, "f": 1.5, "whole": 3.0, "huge": 1e21, "t": True, "b": False,
            "when": datetime.datetime(2030, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
            "empty": "", "nothing": None, "nested": {"list": [1, "two", [3.25]]}}

    value = value_of(decrypt("types.yaml", writer.yaml(tree)))

    assert value == tree
    assert type(value["i"]) is int
    assert type(value["whole"]) is float


def test_encrypted_regex_selection(age_identity, decrypt):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]],
                        selection=("encrypted_regex", "^(data|stringData)$"))
    content = writer.yaml({"kind": "Secret", "data": {"password": "pw"}})
    assert b"kind: \"Secret\"" in content

    assert value_of(decrypt("k8s.yaml", content)) == {"kind": "Secret", "data": {"password": "pw"}}


def test_encrypted_suffix_selection(age_identity, decrypt):
    writer = SopsWriter(key_groups=[[age_key(str(age_identity.to_public()))]],
                        selection=("encrypted_suffix", "_secret"))
    content = writer.yaml({"host": "db", "pass_secret": "pw"})

    assert value_of(decrypt("suffix.yaml", content)) == {"host": "db", "pass_secret": "pw"}


def test_binary_file_keeps_bytes(writer, decrypt):
    data = bytes(range(256))
    result = decrypt("blob.bin", writer.binary(data))

    assert result.document_format == "binary"
    assert value_of(result) == data


def test_format_field_overrides_extension(writer, decrypt):
    result = decrypt("secrets.txt", writer.yaml({"a": "b"}), format="yaml")

    assert result.document_format == "yaml"
    assert value_of(result) == {"a": "b"}


def test_yaml_duplicate_key_rejected(writer, decrypt):
    content = writer.yaml({"a": "b"})
    duplicated = content.replace(b"a: ", b"a: x\na: ", 1)

    result = decrypt("dup.yaml", duplicated)

    assert isinstance(result, DataError)
    assert "duplicate mapping key 'a'" in str(result)


def test_yaml_alias_cycle_rejected(writer, decrypt):
    content = b"a_unencrypted: &x [*x]\n" + writer.yaml({"b": "c"})

    result = decrypt("cycle.yaml", content)

    assert isinstance(result, DataError)
    assert "alias" in str(result)


# -- Go text forms ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (1.0, "1"), (1.5, "1.5"), (1e21, "1000000000000000000000"), (0.000001, "0.000001"),
    (-0.0, "-0"), (1234567890.45, "1234567890.45"), (math.inf, "+Inf"), (math.nan, "NaN"),
])
def test_format_float_matches_go(value, text):
    assert format_float(value) == text


@pytest.mark.parametrize("text, expected", [
    ("yes", "yes"), ("on", "on"), ("true", True), ("False", False), ("~", None), ("null", None),
    ("0x10", 16), ("0o17", 15), ("017", 15), ("1_000", 1000), ("-5", -5), ("1.50", 1.5),
    (".5", 0.5), ("1e3", 1000.0), ("08", 8.0), ("12:30", "12:30"), ("ENC[x]", "ENC[x]"),
])
def test_yaml_plain_scalars_resolve_like_yaml_v3(text, expected):
    assert resolve_plain_scalar(text) == expected
    assert type(resolve_plain_scalar(text)) is type(expected)


def test_yaml_timestamp_resolves_with_go_text():
    resolved = resolve_plain_scalar("2031-01-01T00:00:00.500+02:00")
    assert resolved.text == "2031-01-01T00:00:00.5+02:00"
    assert resolve_plain_scalar("2031-1-2").text == "2031-01-02T00:00:00Z"
    assert resolve_plain_scalar("2031-13-02") == "2031-13-02"


def test_time_keeps_nanoseconds_for_mac():
    assert parse_time("2030-01-01T00:00:00.123456789Z").text == "2030-01-01T00:00:00.123456789Z"
    assert format_rfc3339_seconds("2025-08-06T18:55:05.123+00:00") == "2025-08-06T18:55:05Z"


# -- emit ------------------------------------------------------------------------------------

def test_emit_dotenv_escapes_newlines():
    assert emit_module.emit({"A": "x\ny", "B": "b=c"}, "dotenv") == b"A=x\\ny\nB=b=c\n"


def test_emit_ini_quotes_like_go_ini():
    document = {"DEFAULT": {}, "app": {"plain": "v", "hash": "here#there", "pad": " x",
                                       "multi": "a\nb"}}

    text = emit_module.emit(document, "ini").decode()

    assert text == ('[app]\nplain = v\nhash = `here#there`\npad = " x"\n'
                    'multi = """a\nb"""\n')


def test_emit_ini_round_trips_through_parser():
    from secret_init.backends.sops.formats import Pairs, _parse_ini

    document = {"DEFAULT": {"top": "1"}, "s": {"k": "v;w", "m": "l1\nl2", "q": "'x'"}}

    sections = _parse_ini(emit_module.emit(document, "ini").decode(), "test.ini")

    parsed = {name: dict(items) for name, items in sections}
    assert parsed == {"DEFAULT": {"top": "1"}, "s": {"k": "v;w", "m": "l1\nl2", "q": "'x'"}}
    assert all(isinstance(items, Pairs) for _, items in sections)


def test_emit_rejects_nested_dotenv():
    with pytest.raises(DataError, match="nested"):
        emit_module.emit({"A": {"b": 1}}, "dotenv")


def test_emit_yaml_and_json_and_binary():
    when = datetime.datetime(2031, 1, 1, tzinfo=UTC)
    assert json.loads(emit_module.emit({"a": 1, "t": when}, "json")) == {"a": 1, "t": "2031-01-01T00:00:00Z"}
    assert emit_module.emit({"a": [1, 2]}, "yaml") == b"a:\n- 1\n- 2\n"
    assert emit_module.emit(b"\x00\x01", "binary") == b"\x00\x01"
