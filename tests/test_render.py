"""Rendering of fetched values into file content: keys, formats, scalars, base64, templates."""

from __future__ import annotations

import base64
import datetime
import json

import pytest
import yaml

from secret_init.backends.base import Fetched
from secret_init.errors import ConfigError, DataError, KeyNotFoundError
from secret_init.manifest import SecretSpec
from secret_init.render import (fill_template, render_value, scalar_text, template_order,
                                template_references)

SOURCE = "dev:/srv/dev.yaml"
HIDDEN = "hidden-value-e41b"


def render(value, **spec_fields) -> bytes:
    return render_value(Fetched(value=value), SecretSpec(name="s", **spec_fields), SOURCE)


def template(name: str, text: str) -> SecretSpec:
    return SecretSpec(name=name, template=text)


# -- key selection ----------------------------------------------------------------------------

def test_nested_key():
    assert render({"db": {"password": "pw"}}, key=("db", "password")) == b"pw"


def test_key_with_dots_list_form():
    value = {"tls.key": "k", "tls": {"key": "wrong"}}

    assert render(value, key=("tls.key",)) == b"k"


def test_list_index_key():
    assert render({"hosts": ["a", "b", "c"]}, key=("hosts", "1")) == b"b"


def test_list_index_out_of_range():
    with pytest.raises(KeyNotFoundError) as raised:
        render({"hosts": [HIDDEN]}, key=("hosts", "1"))

    assert "key 'hosts.1' not found" in str(raised.value)
    assert "a list" in str(raised.value)
    assert HIDDEN not in str(raised.value)


def test_missing_key_lists_names_not_values():
    with pytest.raises(KeyNotFoundError) as raised:
        render({"db": {"user": "app", "password": HIDDEN}}, key=("db", "pass"))

    message = str(raised.value)
    assert "secret 's'" in message
    assert "no 'pass' at db" in message
    assert "keys there: password, user" in message
    assert SOURCE in message
    assert HIDDEN not in message


def test_missing_key_list_is_capped():
    value = {f"k{index:02d}": HIDDEN for index in range(30)}

    with pytest.raises(KeyNotFoundError) as raised:
        render(value, key=("absent",))

    message = str(raised.value)
    assert "k19, ..." in message
    assert "k20" not in message


def test_key_into_string_value():
    with pytest.raises(KeyNotFoundError) as raised:
        render({"db": HIDDEN}, key=("db", "password"))

    assert "db is a string, not a mapping" in str(raised.value)
    assert HIDDEN not in str(raised.value)


def test_key_on_json_string():
    assert render('{"a": {"b": "c"}}', key=("a", "b")) == b"c"


def test_key_on_json_bytes():
    assert render(b'{"a": 5432}', key=("a",)) == b"5432"


def test_key_selecting_mapping_defaults_to_json():
    rendered = render({"db": {"user": "app", "port": 5432}}, key=("db",))

    assert rendered == b'{\n  "user": "app",\n  "port": 5432\n}\n'


@pytest.mark.parametrize("value", [f'{{"a": "{HIDDEN}", broken', b"\xff\xfe{"],
                         ids=["invalid json", "not utf-8"])
def test_key_on_non_json_value(value):
    with pytest.raises(DataError) as raised:
        render(value, key=("a",))

    message = str(raised.value)
    assert "key 'a' needs a JSON object" in message
    assert "not valid JSON" in message
    assert HIDDEN not in message


# -- whole values and formats -----------------------------------------------------------------

def test_json_string_kept_verbatim():
    text = '{"b": 1,   "a": [2]}'

    assert render(text) == text.encode()


def test_bytes_verbatim():
    data = bytes([0, 255, 10, 128])

    assert render(data) == data


def test_mapping_without_format_is_json():
    assert json.loads(render({"a": 1, "b": [True, None]})) == {"a": 1, "b": [True, None]}


def test_format_json_on_mapping():
    assert render({"a": "é", "b": 2}, format="json") == '{\n  "a": "é",\n  "b": 2\n}\n'.encode()


def test_format_json_parses_json_string():
    assert render('{"a":1}', format="json") == b'{\n  "a": 1\n}\n'


def test_format_yaml_on_mapping():
    value = {"db": {"user": "app", "port": 5432}, "flags": [True, False]}

    rendered = render(value, format="yaml")

    assert yaml.safe_load(rendered) == value
    assert rendered.startswith(b"db:\n")


def test_format_yaml_timestamp_rfc3339():
    moment = datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc)

    rendered = render({"expires": moment}, format="yaml")

    assert rendered == b"expires: 2031-01-01T00:00:00Z\n"
    assert yaml.safe_load(rendered) == {"expires": moment}


def test_format_dotenv_on_mapping():
    value = {"USER": "app", "PORT": 5432, "DEBUG": False, "EMPTY": None}

    assert render(value, format="dotenv") == b"USER=app\nPORT=5432\nDEBUG=false\nEMPTY=''\n"


def test_format_dotenv_quotes_spaces_and_newlines():
    rendered = render({"MOTD": 'say "hi"\nbye'}, format="dotenv")

    assert rendered == b'MOTD="say \\"hi\\"\\nbye"\n'


def test_format_dotenv_dollar_not_expandable():
    # dotenv loaders (python-dotenv, Docker Compose) expand ${VAR} inside double quotes and
    # unquoted values; only single quotes or an escaped \$ keep the dollar literal.
    line = render({"PASSWORD": "pa${HOME}ss"}, format="dotenv").decode()

    assert line in ("PASSWORD='pa${HOME}ss'\n", "PASSWORD=\"pa\\${HOME}ss\"\n")


def test_dotenv_rejects_invalid_name():
    with pytest.raises(DataError) as raised:
        render({"my var": "1"}, format="dotenv")

    assert "'my var'" in str(raised.value)


@pytest.mark.parametrize("nested", [{"inner": HIDDEN}, [HIDDEN]], ids=["mapping", "list"])
def test_format_dotenv_rejects_nested(nested):
    with pytest.raises(DataError) as raised:
        render({"FLAT": "x", "DEEP": nested}, format="dotenv")

    message = str(raised.value)
    assert "format dotenv needs flat values" in message
    assert "'DEEP'" in message
    assert "pick it with 'key'" in message
    assert HIDDEN not in message


def test_format_dotenv_rejects_scalar():
    with pytest.raises(DataError) as raised:
        render(5, format="dotenv")

    assert "format dotenv needs a mapping" in str(raised.value)


def test_format_raw_rejects_mapping():
    with pytest.raises(DataError) as raised:
        render({"a": HIDDEN}, format="raw")

    message = str(raised.value)
    assert "format raw needs a single value" in message
    assert HIDDEN not in message


def test_format_raw_keeps_json_string():
    assert render('{"a": 1}', format="raw") == b'{"a": 1}'


def test_format_json_on_non_json_string():
    with pytest.raises(DataError) as raised:
        render(f"plain {HIDDEN}", format="json")

    assert "format json needs a JSON object" in str(raised.value)
    assert HIDDEN not in str(raised.value)


# -- scalars ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (True, "true"),
    (False, "false"),
    (None, ""),
    (5432, "5432"),
    (1.5, "1.5"),
    (datetime.date(2031, 1, 1), "2031-01-01"),
    (datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc), "2031-01-01T00:00:00Z"),
    (datetime.datetime(2031, 1, 1, 8, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
     "2031-01-01T08:30:00+02:00"),
    (datetime.datetime(2031, 1, 1, 8, 30), "2031-01-01T08:30:00"),
], ids=["true", "false", "null", "int", "float", "date", "utc datetime", "offset datetime",
        "naive datetime"])
def test_scalar_text(value, expected):
    assert scalar_text(value) == expected


def test_scalar_value_file_content():
    assert render({"flag": True}, key=("flag",)) == b"true"
    assert render({"port": 5432}, key=("port",)) == b"5432"


def test_scalar_with_format_json():
    assert render({"port": 5432}, key=("port",), format="json") == b"5432\n"


def test_dates_in_json_format():
    value = {"expires": datetime.date(2031, 1, 1)}

    assert json.loads(render(value, format="json")) == {"expires": "2031-01-01"}


# -- base64 -----------------------------------------------------------------------------------

def test_base64_standard():
    payload = bytes(range(256))

    assert render(base64.b64encode(payload).decode(), encoding="base64") == payload


def test_base64_with_line_breaks():
    encoded = base64.encodebytes(bytes(range(200))).decode()

    assert "\n" in encoded.strip()
    assert render(encoded, encoding="base64") == bytes(range(200))


def test_base64_urlsafe_unpadded():
    payload = b"\xfb\xff\xfe\x00"
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")

    assert "-" in encoded or "_" in encoded
    assert render(encoded, encoding="base64") == payload


def test_base64_urlsafe_unpadded_without_dash():
    # Unpadded URL-safe base64 of b"hi" happens to contain neither '-' nor '_'.
    assert render("aGk", encoding="base64") == b"hi"


def test_base64_after_key():
    value = {"tls": {"crt": base64.b64encode(b"PEM").decode()}}

    assert render(value, key=("tls", "crt"), encoding="base64") == b"PEM"


@pytest.mark.parametrize("encoded", ["not*base64!", "abcd-efg*", "ab-d!!", "YWJj=ZGVm"],
                         ids=["standard alphabet", "url-safe with star", "url-safe with bang",
                              "padding inside"])
def test_base64_invalid(encoded):
    with pytest.raises(DataError) as raised:
        render(encoded, encoding="base64")

    message = str(raised.value)
    assert "not valid base64" in message
    assert "remove 'encoding'" in message
    assert encoded not in message


def test_base64_on_mapping():
    with pytest.raises(DataError) as raised:
        render({"a": "b"}, encoding="base64")

    assert "encoding base64 needs a string" in str(raised.value)


# -- templates --------------------------------------------------------------------------------

def test_template_fill():
    filled = fill_template("user=${user} pass=${ pass } cost=5$$", {"user": b"app", "pass": b"p w"})

    assert filled == b"user=app pass=p w cost=5$"


def test_template_value_not_expanded_again():
    assert fill_template("${a}", {"a": b"${b} $$ $", "b": b"no"}) == b"${b} $$ $"


def test_template_binary_value():
    assert fill_template("k=${a}\n", {"a": b"\x00\xff"}) == b"k=\x00\xff\n"


def test_template_references():
    assert template_references("${a}-$${b}-${ c }") == ["a", "c"]


@pytest.mark.parametrize("text, fragment", [
    ("cost 5$ each", "lone '$' at offset 6"),
    ("${}", "empty reference"),
    ("$name", "lone '$'"),
], ids=["lone dollar", "empty reference", "dollar without braces"])
def test_template_references_invalid(text, fragment):
    with pytest.raises(ValueError) as raised:
        template_references(text)

    assert fragment in str(raised.value)


def test_template_order_dependencies_first():
    secrets = [template("outer", "${inner}!"), template("inner", "${base}?"),
               SecretSpec(name="base", source="dev")]

    ordered = [spec.name for spec in template_order(secrets)]

    assert ordered == ["inner", "outer"]


def test_template_order_cycle():
    secrets = [template("a", "${b}"), template("b", "${c}"), template("c", "${a}")]

    with pytest.raises(ConfigError) as raised:
        template_order(secrets)

    assert "cycle: a -> b -> c -> a" in str(raised.value)


def test_template_order_self_reference():
    with pytest.raises(ConfigError) as raised:
        template_order([template("a", "x${a}")])

    assert "refers to itself" in str(raised.value)


def test_template_order_unknown_reference():
    with pytest.raises(ConfigError) as raised:
        template_order([template("a", "${b}"), SecretSpec(name="c", source="dev")])

    message = str(raised.value)
    assert "unknown secret '${b}'" in message
    assert "known secrets: a, c" in message
