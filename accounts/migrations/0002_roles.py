"""The three roles as groups holding accounts.Access's permissions. Before roles, every user could do everything:
staff become admins, the others operators (a viewer is a new kind of person, chosen by an admin)."""

from django.db import migrations

NAMES = {
    "view_fleet": "See devices, history, CSV, live streams; use the read API",
    "operate_fleet": "Change devices, labels, device tokens, alert rules, acknowledge, provisioning",
    "administer_hub": "Manage users, roles and scopes, webhook destinations, others' API tokens, audit",
}
ROLES = {
    "viewer": ("view_fleet",),
    "operator": ("view_fleet", "operate_fleet"),
    "admin": ("view_fleet", "operate_fleet", "administer_hub"),
}


def roles_create(apps, schema_editor) -> None:
    # Django makes permissions after the last migration (post_migrate); the groups need them now.
    ContentType = apps.get_model("contenttypes", "ContentType")
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    User = apps.get_model("auth", "User")
    access, _ = ContentType.objects.get_or_create(app_label="accounts", model="access")
    permissions = {
        codename: Permission.objects.get_or_create(content_type=access, codename=codename, defaults={"name": name})[0]
        for codename, name in NAMES.items()
    }
    groups = {}
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set([permissions[codename] for codename in codenames])
        groups[name] = group
    for user in User.objects.filter(is_superuser=False):
        user.groups.add(groups["admin" if user.is_staff else "operator"])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(roles_create, migrations.RunPython.noop)]
