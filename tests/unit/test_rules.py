"""The folders the deploy must never write into, and the names remove.py may purge, as the issue and
docs/security.md list them: each one refused (or accepted) through the settings that use it."""

from __future__ import annotations

import pytest

from lorafleet.deploy.rules import PURGEABLE_ROOTS
from lorafleet.deploy.settings_table import protected_folder, storage_path

SYSTEM = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/var",
          "/tmp", "/home", "/mnt", "/opt", "/srv", "/media", "/var/lib", "/var/lib/docker"]
NOTHING_BELOW = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr",
                 "/var/lib/docker", "/var/log", "/var/spool", "/var/mail"]
SECRETS = [".ssh", ".gnupg", ".aws", ".kube", ".docker", ".password-store"]


@pytest.mark.parametrize("folder", SYSTEM)
def test_a_system_folder_itself_is_never_a_storage_root(folder):
    problems: list[str] = []
    storage_path("cache_root", folder, problems)
    assert problems == [f"cache_root={folder!r} is a system folder the deploy would write into: choose a folder of your own"]


@pytest.mark.parametrize("folder", NOTHING_BELOW)
def test_nothing_below_the_systems_own_folders(folder):
    assert protected_folder(f"{folder}/lorafleet") == "is a system folder the deploy would write into"


@pytest.mark.parametrize("folder", ["/mnt/d/AI_Models", "/home/ana/models", "/opt/lorafleet", "/srv/lf", "/tmp/lf",
                                    "/media/usb/models", "/var/lib/lorafleet", "/root/lorafleet", "/var/tmp/lf"])
def test_a_folder_of_ones_own_below_a_shared_one_is_fine(folder):
    assert protected_folder(folder) is None


@pytest.mark.parametrize("secret", SECRETS)
def test_never_inside_a_folder_of_secrets(secret):
    assert protected_folder(f"/home/ana/{secret}/models") == "is inside a folder of secrets (.ssh and the like)"
    assert protected_folder(f"/srv/{secret}") == "is inside a folder of secrets (.ssh and the like)"


def test_remove_purge_names_each_root_by_its_short_name(gpu_data):
    from lorafleet.deploy import removal
    from lorafleet.deploy.settings import Secrets, build_settings

    s = build_settings({**gpu_data, "remove_purge": ["models", "adapters", "cache"]}, Secrets(api_key="k"),
                       check_sources=False, removing=True)
    assert removal.purge_roots(s) == {"models_root": s.models_root, "adapters_root": s.adapters_root,
                                       "cache_root": s.cache_root}
    assert set(PURGEABLE_ROOTS) == {"models", "adapters", "cache"}
