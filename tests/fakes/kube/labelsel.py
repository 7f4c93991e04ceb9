"""Label and field selectors for the FAKE Kubernetes API server (tests only).

Follows https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors
and .../field-selectors/: equality (=, ==, !=), set-based (in, notin), exists (key, !key).
Field selectors: metadata.name, metadata.namespace, status.phase, spec.nodeName (=, ==, !=).
"""

import re


class SelectorError(ValueError):
    pass


_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")


def _split_top(s):
    """Splits on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise SelectorError("unbalanced parentheses in selector %r" % s)
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(s):
    """Returns a list of (key, op, values); op in =, !=, in, notin, exists, !exists."""
    reqs = []
    if not s:
        return reqs
    for part in _split_top(s):
        m = re.match(r"^([A-Za-z0-9._/-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)$", part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, [m.group(3)]))
            continue
        m = _SET_RE.match(part)
        if not m:
            raise SelectorError("unable to parse requirement: %r" % part)
        neg, key, op, vals = m.groups()
        if op:
            if neg:
                raise SelectorError("unable to parse requirement: %r" % part)
            reqs.append((key, op, [v.strip() for v in vals.split(",") if v.strip()]))
        else:
            reqs.append((key, "!exists" if neg else "exists", []))
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=" and not (has and v == vals[0]):
            return False
        if op == "!=" and has and v == vals[0]:
            return False
        if op == "in" and not (has and v in vals):
            return False
        if op == "notin" and has and v in vals:
            return False
        if op == "exists" and not has:
            return False
        if op == "!exists" and has:
            return False
    return True


FIELDS = {
    "metadata.name": lambda o: o.get("metadata", {}).get("name", ""),
    "metadata.namespace": lambda o: o.get("metadata", {}).get("namespace", ""),
    "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
    "type": lambda o: o.get("type", ""),
}


def parse_field_selector(s):
    reqs = []
    if not s:
        return reqs
    for part in _split_top(s):
        m = re.match(r"^([A-Za-z0-9._-]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError("invalid selector: %r; can't understand %r" % (s, part))
        field, op, val = m.group(1), m.group(2), m.group(3)
        if field not in FIELDS:
            raise SelectorError('"%s" is not a known field selector: only "%s"'
                                % (field, '", "'.join(sorted(FIELDS))))
        reqs.append((field, "!=" if op == "!=" else "=", val))
    return reqs


def fields_match(reqs, obj):
    for field, op, val in reqs:
        got = FIELDS[field](obj)
        if (got == val) != (op == "="):
            return False
    return True


class Selector:
    def __init__(self, label="", field=""):
        self.labels = parse_label_selector(label)
        self.fields = parse_field_selector(field)

    def matches(self, obj):
        if obj is None:
            return False
        return labels_match(self.labels, obj.get("metadata", {}).get("labels")) and \
            fields_match(self.fields, obj)
