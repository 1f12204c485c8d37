#!/usr/bin/env python3
"""Validate OCSF 1.5.0 events (NDJSON on stdin or in files) with outside OCSF libraries.

Exit 0 when every event is valid, 1 when any is not (every problem is printed to stderr with
the event's line, class and metadata.uid), 2 on bad usage. A summary line goes to stdout:
`validated N events: class=count ...; py-ocsf-models: M`.

Checks, per event (see tests/ocsf/README.md for what is and is not covered):
 1. pydantic-ocsf (ocsf.v1_5_0): the model of the event's class_uid validates the event
    (types, required attributes, enum values, id/caption agreement such as severity_id/severity).
 2. Declared attributes only: every key of the event and of every nested object must be an
    attribute of the pydantic-ocsf model at that place (free-form objects such as `unmapped`
    and `data` excepted). Attributes of the host profile (`actor`, `device`) are accepted on
    classes that do not declare them only when `metadata.profiles` lists "host".
 3. Constraints of the OCSF 1.5.0 schema that pydantic-ocsf ships (`at_least_one`,
    `just_one`) for the event class (and its parents) and every nested object.
 4. Identity: class_uid known to the schema, category_uid and class_name match it,
    type_uid == class_uid * 100 + activity_id, metadata.version == "1.5.0".
 5. py-ocsf-models (OCSF 1.5.0): Detection Finding events also validate with its
    DetectionFinding model.
"""

import json
import re
import sys
import typing

import pydantic
from ocsf import get_schema_loader
from ocsf._utils import extract_observable_type_ids
from ocsf.v1_5_0 import events as ocsf_events
from py_ocsf_models import OCSF_VERSION as PY_OCSF_MODELS_VERSION
from py_ocsf_models.events.findings.detection_finding import DetectionFinding as PyDetectionFinding

OCSF_VERSION = "1.5.0"

# class_uid -> (pydantic-ocsf event model name, schema event name)
CLASSES = {
    0: ("BaseEvent", "base_event"),
    2004: ("DetectionFinding", "detection_finding"),
    2005: ("IncidentFinding", "incident_finding"),
    3001: ("AccountChange", "account_change"),
    3002: ("Authentication", "authentication"),
    3004: ("EntityManagement", "entity_management"),
    6003: ("ApiActivity", "api_activity"),
}

# OCSF 1.5.0 profiles/host.json: the attributes the host profile adds to any class.
PROFILE_ATTRIBUTES = {"host": {"actor": "Actor", "device": "Device"}}


def load_schema():
    schema = get_schema_loader().load_schema(OCSF_VERSION)
    if schema.get("version") != OCSF_VERSION:
        raise SystemExit(f"pydantic-ocsf schema is {schema.get('version')}, expected {OCSF_VERSION}")
    return schema


SCHEMA = load_schema()

# pydantic-ocsf 3.0.0 leaves BaseEvent's forward reference to Enrichment unresolved.
ocsf_events.BaseEvent.model_rebuild(_types_namespace={"Enrichment": __import__("ocsf.v1_5_0", fromlist=["objects"]).objects.Enrichment})


def pascal_to_snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def inherited_constraints(table, name):
    """Constraints of a schema event/object: its own, else the nearest parent's (a class that
    declares a constraint kind replaces the one it extends, as the OCSF compiler does)."""
    out = {}
    seen = set()
    while name and name in table and name not in seen:
        seen.add(name)
        spec = table[name]
        for kind, attrs in (spec.get("constraints") or {}).items():
            out.setdefault(kind, (kind, tuple(attrs), name))
        name = spec.get("extends")
    return list(out.values())


def inherited(table, name, key):
    """A key of a schema event/object, looked up through `extends`."""
    seen = set()
    while name and name in table and name not in seen:
        seen.add(name)
        if table[name].get(key) is not None:
            return table[name][key]
        name = table[name].get("extends")
    return None


def nested_models(annotation):
    """pydantic models inside an annotation (Optional, list, Annotated, unions)."""
    found = []
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        found.extend(nested_models(arg))
    return found


def model_path(model, loc):
    """Follow a pydantic error location through pydantic-ocsf models: the model that holds the
    last attribute of `loc`, and that attribute's name (None when the path leaves the models)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        f = fields_by_name(model).get(part)
        subs = nested_models(f.annotation) if f else []
        if not subs:
            return None, None
        model = subs[0]
    return model, loc[-1] if loc and isinstance(loc[-1], str) else None


def string_enum(object_name, attr):
    """The string enum keys of an OCSF 1.5.0 object attribute, if it has a string enum."""
    spec = SCHEMA["objects"].get(object_name, {}).get("attributes", {}).get(attr) or {}
    keys = list((spec.get("enum") or {}).keys())
    return keys if keys and not all(k.lstrip("-").isdigit() for k in keys) else None


def pydantic_ocsf_errors(model, ev, where, c):
    """pydantic-ocsf 3.0.0 builds integer enums for the few OCSF attributes whose enum is of
    strings (e.g. http_request.http_method). Those values are checked here against the schema's
    string enum instead; every other error counts."""
    try:
        model.model_validate(ev)
    except pydantic.ValidationError as e:
        for err in e.errors():
            parent, attr = model_path(model, err["loc"])
            if err["type"] in ("int_parsing", "enum", "int_type") and parent is not None and attr:
                keys = string_enum(pascal_to_snake(parent.__name__), attr)
                if keys is not None:
                    if err.get("input") not in keys:
                        c.err(f"{where}{loc_text(err['loc'])}", f"{err['input']!r} is not one of {keys}")
                    continue
            c.err(f"{where}{loc_text(err['loc'])}", f"pydantic-ocsf {model.__name__}: {err['msg']}")


# Observable type ids of OCSF 1.5.0 as its compiler derives them (types, objects and dictionary
# attributes that declare an `observable` id, e.g. 13 Command Line from `cmd_line`).
OBSERVABLE_TYPE_IDS = set(extract_observable_type_ids(SCHEMA))


def py_ocsf_models_errors(ev, where, c, stats):
    """py-ocsf-models marks as required some attributes that OCSF 1.5.0 only recommends (for
    example device.region, technique.name, analytic.uid), and its observable type_id enum
    lacks the ids OCSF 1.5.0 derives from dictionary attributes (13 Command Line, ...).
    A `missing` error is waived, and counted, when pydantic-ocsf's 1.5.0 model says that
    attribute is not required at that place; an observable type_id error when the value is an
    OCSF 1.5.0 observable type id. Every other error counts."""
    try:
        PyDetectionFinding.model_validate(ev)
    except pydantic.ValidationError as e:
        for err in e.errors():
            loc = err["loc"]
            if (
                err["type"] == "enum"
                and len(loc) == 3
                and loc[0] == "observables"
                and loc[2] == "type_id"
                and err.get("input") in OBSERVABLE_TYPE_IDS
            ):
                key = f"Observable.type_id={err['input']}"
                stats[key] = stats.get(key, 0) + 1
                continue
            if err["type"] == "missing":
                parent, attr = model_path(ocsf_events.DetectionFinding, err["loc"])
                f = fields_by_name(parent).get(attr) if parent is not None else None
                if f is not None and not f.is_required():
                    key = f"{parent.__name__}.{attr}"
                    stats[key] = stats.get(key, 0) + 1
                    continue
            c.err(f"{where}{loc_text(err['loc'])}", f"py-ocsf-models DetectionFinding: {err['msg']}")


def loc_text(loc):
    """`.a.0.b` for a pydantic error location ("" for the event itself)."""
    return "".join(f".{p}" for p in loc)


def fields_by_name(model):
    return {(f.alias or n): f for n, f in model.model_fields.items()}


class Checker:
    def __init__(self):
        self.errors = []

    def err(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def constraints(self, obj, schema_name, table, where):
        for kind, attrs, owner in inherited_constraints(table, schema_name):
            present = [a for a in attrs if obj.get(a) is not None]
            if kind == "at_least_one" and not present:
                self.err(where, f"{owner}: at least one of {list(attrs)} is required")
            elif kind == "just_one" and len(present) != 1:
                self.err(where, f"{owner}: exactly one of {list(attrs)} is required, found {present}")

    def walk(self, obj, model, where, profiles, is_event):
        fields = fields_by_name(model)
        if not fields:
            return  # free-form object (e.g. `unmapped`)
        if not is_event:
            self.constraints(obj, pascal_to_snake(model.__name__), SCHEMA["objects"], where)
        for key, val in obj.items():
            sub_models = []
            if key in fields:
                sub_models = nested_models(fields[key].annotation)
            else:
                profile_model = None
                if is_event:
                    for profile in profiles:
                        name = PROFILE_ATTRIBUTES.get(profile, {}).get(key)
                        if name:
                            profile_model = getattr(ocsf_objects(), name)
                if profile_model is None:
                    self.err(f"{where}.{key}", f"not an attribute of {model.__name__} in OCSF {OCSF_VERSION}")
                    continue
                try:
                    profile_model.model_validate(val)
                except pydantic.ValidationError as e:
                    self.err(f"{where}.{key}", f"invalid {profile_model.__name__}: {e}")
                sub_models = [profile_model]
            if not sub_models:
                continue
            sub = sub_models[0]
            if isinstance(val, dict):
                self.walk(val, sub, f"{where}.{key}", profiles, False)
            elif isinstance(val, list):
                for i, item in enumerate(val):
                    if isinstance(item, dict):
                        self.walk(item, sub, f"{where}.{key}[{i}]", profiles, False)


_OBJECTS = None


def ocsf_objects():
    global _OBJECTS
    if _OBJECTS is None:
        from ocsf.v1_5_0 import objects

        _OBJECTS = objects
    return _OBJECTS


def check_event(ev, where, waived):
    c = Checker()
    if not isinstance(ev, dict):
        c.err(where, "not a JSON object")
        return c.errors, None
    class_uid = ev.get("class_uid")
    if class_uid not in CLASSES:
        c.err(where, f"class_uid {class_uid!r} is not one this validator knows")
        return c.errors, None
    model_name, schema_name = CLASSES[class_uid]
    spec = SCHEMA["events"].get(schema_name)
    if spec is None:
        c.err(where, f"class {schema_name} is not in OCSF {OCSF_VERSION}")
        return c.errors, None
    # 4. identity
    cat_name = inherited(SCHEMA["events"], schema_name, "category")
    categories = SCHEMA["categories_meta"]["attributes"]
    cat_uid = categories.get(cat_name, {}).get("uid", 0) if cat_name != "other" else 0
    want_class = cat_uid * 1000 + spec.get("uid", 0) if class_uid else 0
    if want_class != class_uid:
        c.err(where, f"class_uid {class_uid} but the schema gives {want_class} for {schema_name}")
    if ev.get("category_uid") != cat_uid:
        c.err(where, f"category_uid {ev.get('category_uid')!r}, schema says {cat_uid}")
    if ev.get("class_name") is not None and ev.get("class_name") != spec.get("caption"):
        c.err(where, f"class_name {ev.get('class_name')!r}, schema says {spec.get('caption')!r}")
    activity_id = ev.get("activity_id")
    if not isinstance(activity_id, int) or ev.get("type_uid") != class_uid * 100 + activity_id:
        c.err(where, f"type_uid {ev.get('type_uid')!r} != class_uid*100 + activity_id ({activity_id!r})")
    md = ev.get("metadata") if isinstance(ev.get("metadata"), dict) else {}
    if md.get("version") != OCSF_VERSION:
        c.err(where, f"metadata.version {md.get('version')!r}, expected {OCSF_VERSION}")
    # 1. pydantic-ocsf model
    model = getattr(ocsf_events, model_name)
    pydantic_ocsf_errors(model, ev, where, c)
    # 2. declared attributes, 3. constraints
    profiles = [p for p in md.get("profiles") or [] if isinstance(p, str)]
    c.constraints(ev, schema_name, SCHEMA["events"], where)
    c.walk(ev, model, where, profiles, True)
    # 5. py-ocsf-models
    used_py = False
    if class_uid == 2004:
        used_py = True
        py_ocsf_models_errors(ev, where, c, waived)
    return c.errors, used_py


def main(argv):
    if PY_OCSF_MODELS_VERSION != OCSF_VERSION:
        print(f"py-ocsf-models models OCSF {PY_OCSF_MODELS_VERSION}, expected {OCSF_VERSION}", file=sys.stderr)
        return 2
    streams = [open(p, encoding="utf-8") for p in argv[1:]] or [sys.stdin]
    counts = {}
    py_count = 0
    waived = {}
    bad = 0
    n = 0
    for s in streams:
        name = getattr(s, "name", "<stdin>")
        for lineno, line in enumerate(s, 1):
            if not line.strip():
                continue
            n += 1
            where = f"{name}:{lineno}"
            try:
                ev = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{where}: not JSON: {e}", file=sys.stderr)
                bad += 1
                continue
            if isinstance(ev, dict):
                uid = (ev.get("metadata") or {}).get("uid")
                where = f"{where} class {ev.get('class_uid')} uid {uid}"
            errors, used_py = check_event(ev, where, waived)
            if errors:
                bad += 1
                for e in errors:
                    print(e, file=sys.stderr)
            else:
                counts[ev["class_uid"]] = counts.get(ev["class_uid"], 0) + 1
                py_count += 1 if used_py else 0
    per_class = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"validated {n - bad} of {n} events: {per_class}; py-ocsf-models: {py_count}")
    if waived:
        text = ", ".join(f"{k} x{v}" for k, v in sorted(waived.items()))
        print(f"py-ocsf-models rules beyond OCSF 1.5.0, not enforced: {text}")
    if bad or n == 0:
        print(f"{bad} invalid event(s) of {n}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
