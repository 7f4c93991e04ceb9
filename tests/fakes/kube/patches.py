"""Patches of the FAKE Kubernetes API server (tests only): JSON merge patch (RFC 7386), the subset
of strategic merge patch that `kubectl apply` sends for the kinds the fake serves, and JSON patch
(RFC 6902). See https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/
"""

import copy

from apierrors import ApiError


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target, patch):
    """A subset of strategic merge patch: maps merge; lists of objects that all carry "name"
    merge by name (containers, env, volumes, ports...); "$patch: delete" items are removed;
    other "$" directives ($setElementOrder, $retainKeys, ...) are ignored; other lists replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if not k.startswith("$")}
    out = dict(target)
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and isinstance(out.get(k), list) and v and \
                all(isinstance(i, dict) and "name" in i for i in v) and \
                all(isinstance(i, dict) and "name" in i for i in out[k]):
            merged = list(out[k])
            for item in v:
                idx = next((i for i, t in enumerate(merged) if t["name"] == item["name"]), None)
                if item.get("$patch") == "delete":
                    if idx is not None:
                        merged.pop(idx)
                elif idx is None:
                    merged.append(strategic_merge_patch({}, item))
                else:
                    merged[idx] = strategic_merge_patch(merged[idx], item)
            out[k] = merged
        else:
            out[k] = strategic_merge_patch(out.get(k), v) if isinstance(v, dict) else copy.deepcopy(v)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", "json patch path %r must start with /" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "json patch must be a list of operations")

    def walk(parts):
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(path):
        cur = doc
        for p in _pointer(path):
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    def add(path, value):
        parent, last = walk(_pointer(path))
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value

    def remove(path):
        parent, last = walk(_pointer(path))
        if isinstance(parent, list):
            return parent.pop(int(last))
        return parent.pop(last)

    try:
        for op in ops:
            kind, path = op.get("op"), op.get("path", "")
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(path, remove(op["from"]))
            elif kind == "copy":
                add(path, copy.deepcopy(get(op["from"])))
            elif kind == "test":
                if get(path) != op.get("value"):
                    raise ApiError(422, "Invalid", "json patch test failed at %s" % path)
            else:
                raise ApiError(400, "BadRequest", "unknown json patch op %r" % kind)
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", "json patch failed: %s" % e)
    return doc

