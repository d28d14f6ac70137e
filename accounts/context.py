"""What every page may show of the person's powers (controls they may not use are not drawn)."""

from django.http import HttpRequest

from accounts.policy import Action
from accounts.requests import actor_in


def access(request: HttpRequest) -> dict[str, object]:
    if not request.user.is_authenticated:
        return {}
    actor = actor_in(request)
    return {
        "hub_role": actor.role.label,
        "may_operate": actor.may(Action.OPERATE),
        "may_administer": actor.may(Action.ADMINISTER),
    }
