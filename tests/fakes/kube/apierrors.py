"""Status errors of the FAKE Kubernetes API server (tests only), in the API server's own words.

The constructors follow k8s.io/apimachinery/pkg/api/errors (NewNotFound, NewForbidden, NewInvalid)
and k8s.io/apimachinery/pkg/util/validation/field (a field error is "FIELD: BODY", its body
"Required value" or 'Invalid value: "BAD": DETAIL'; several are aggregated as "[e1, e2]").
"""

import json


class ApiError(Exception):
    """Carries a Kubernetes Status object."""

    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = headers or {}

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            s["details"] = self.details
        return s


def _details(name, group, kind, causes=None):
    """metav1.StatusDetails: name, group, kind are omitted when empty (omitempty)."""
    d = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    if causes:
        d["causes"] = causes
    return d


def not_found(rt, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (rt.qualified(), name),
                    {"name": name, "group": rt.group, "kind": rt.plural})


def forbidden(rt, name, err):
    """apierrors.NewForbidden(GroupResource, name, err): 'pods is forbidden: ERR' without a name,
    'pods "x" is forbidden: ERR' with one; details.kind is the resource (plural, no subresource)."""
    if name:
        msg = '%s %s is forbidden: %s' % (rt.qualified(), go_quote(name), err)
    else:
        msg = "%s is forbidden: %s" % (rt.qualified(), err)
    return ApiError(403, "Forbidden", msg, _details(name, rt.group, rt.plural))


def go_quote(s):
    """Go's %q for the plain strings the fake quotes (printable text: the same as JSON's)."""
    return json.dumps(s, ensure_ascii=False)


class FieldError:
    """field.Error: a Required or Invalid value at a field path."""

    TYPES = {"FieldValueRequired": "Required value", "FieldValueInvalid": "Invalid value"}

    def __init__(self, type_, field, bad_value=None, detail=""):
        self.type, self.field, self.bad_value, self.detail = type_, field, bad_value, detail

    def body(self):
        s = self.TYPES[self.type]
        if self.type != "FieldValueRequired":
            v = self.bad_value
            s += ": " + (go_quote(v) if isinstance(v, str) else "null" if v is None else json.dumps(v))
        if self.detail:
            s += ": " + self.detail
        return s

    def __str__(self):
        return "%s: %s" % (self.field, self.body())


def required(field, detail=""):
    return FieldError("FieldValueRequired", field, None, detail)


def invalid(field, value, detail):
    return FieldError("FieldValueInvalid", field, value, detail)


def aggregate(msgs):
    """utilerrors.NewAggregate(...).Error(): one message as is, several as "[a, b]" (duplicates once)."""
    seen = []
    for m in msgs:
        if m not in seen:
            seen.append(m)
    return seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"


def invalid_object(kind, group, name, errs):
    """apierrors.NewInvalid(GroupKind, name, field.ErrorList): 422 Invalid,
    'Pod "x" is invalid: spec.containers[0].image: Required value', one cause per field error."""
    qualified = "%s.%s" % (kind, group) if group else kind
    causes = [{"reason": e.type, "message": e.body(), "field": e.field} for e in errs]
    return ApiError(422, "Invalid", "%s %s is invalid: %s" % (qualified, go_quote(name),
                                                              aggregate([str(e) for e in errs])),
                    _details(name, group, kind, causes))
