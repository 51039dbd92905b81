"""deploykit_toml: renders a dict as a TOML document (the deploykit role's configs).

Every string goes through json.dumps, whose output is a valid TOML basic string (TOML
also wants DEL escaped, which is added), so no value can end its string or start a key.
Plain keys come first, then one [table] per nested dict; dicts inside lists and as
values of lists become inline tables. None values are left out.
"""
import json
import re
from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

_BARE_KEY = re.compile(r"\A[A-Za-z0-9_-]+\Z")


def _string(text):
    return json.dumps(str(text), ensure_ascii=False).replace("\x7f", "\\u007f")


def _key(key):
    key = str(key)
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        pairs = [f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise AnsibleFilterError(f"deploykit_toml: cannot write a {type(value).__name__} as TOML")


def _table(table, path):
    lines = [f"{_key(k)} = {_value(v)}\n" for k, v in table.items() if v is not None and not isinstance(v, Mapping)]
    for k, v in table.items():
        if isinstance(v, Mapping):
            sub = path + [k]
            body = _table(v, sub)
            # A table holding only tables needs no header of its own ([repos] before [repos.site]).
            if not body.startswith("\n["):
                body = "\n[" + ".".join(_key(p) for p in sub) + "]\n" + body
            lines.append(body)
    return "".join(lines)


def deploykit_toml(document):
    """The TOML text of a dict."""
    if not isinstance(document, Mapping):
        raise AnsibleFilterError("deploykit_toml: expects a dict")
    return _table(document, [])


class FilterModule:
    """The role's filters."""

    def filters(self):
        return {"deploykit_toml": deploykit_toml}
