"""Label scopes: a person limited to the devices matching any of their selectors (`site=north`, or
`site=north,model=tx`: every pair of one selector must match). An empty scope is the whole fleet."""

from collections.abc import Mapping, Sequence
from typing import TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet
from django.db.models.fields.json import KeyTransform

from devices.labels import Labels, labels_match, labels_parse, labels_text

Scope = tuple[Labels, ...]  # any selector matches; () = every device
M = TypeVar("M", bound=Model)


def selector_parse(text: str) -> Labels:
    """One selector from its text; ValidationError naming the problem (an empty one would match everything)."""
    selector = labels_parse(text)
    if not selector:
        raise ValidationError("a scope selector names at least one label, e.g. site=north")
    return selector


def scope_text(scope: Scope) -> list[str]:
    return [labels_text(selector) for selector in scope]


def scope_covers(scope: Scope, labels: Mapping[str, str]) -> bool:
    """Whether a device with these labels is in the scope."""
    return not scope or any(labels_match(labels, selector) for selector in scope)


def scope_within(inner: Scope, outer: Scope) -> bool:
    """Whether everything `inner` matches, `outer` matches too (each of inner's selectors is as strict as one of
    outer's): a rule or profile made by a scoped person stays theirs."""
    if not outer:
        return True
    return bool(inner) and all(any(labels_match(i, o) for o in outer) for i in inner)


def scoped(objects: QuerySet[M], scope: Scope, labels: str = "labels") -> QuerySet[M]:
    """`objects` whose device labels (the field `labels`, e.g. "device__labels") are in the scope, in SQL."""
    if not scope:
        return objects
    aliases: dict[str, KeyTransform] = {}
    matches = Q()
    for i, selector in enumerate(scope):
        every = Q()
        for j, (name, value) in enumerate(selector.items()):
            alias = f"_scope_{i}_{j}"
            aliases[alias] = KeyTransform(name, labels)
            every &= Q(**{alias: value})
        matches |= every
    return objects.alias(**aliases).filter(matches)


def scope_of(selectors: Sequence[str]) -> Scope:
    """The scope of stored selector texts (each valid when stored), in a stable order."""
    return tuple(selector_parse(text) for text in sorted(set(selectors)))
