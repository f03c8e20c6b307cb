"""Rules: the patterns and lists a setting's value must meet (used by the settings and the adapter entries)."""

from __future__ import annotations

import re

# vLLM 0.32 accepts only these values for --max-lora-rank.
ALLOWED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
PROFILES = ("cuda", "cpu")
NETWORK_MODES = ("gateway", "publish")
BASE_MODEL_SOURCES = ("hub", "upload", "demo")
# auto: bfloat16 from compute capability 8.0, float32 below (lorafleet/deploy/gpu.py); vLLM's --dtype names.
DTYPES = ("auto", "bfloat16", "float32", "float16")
# The storage roots remove.py may empty of what the deploy put there (remove_purge), each with its setting.
PURGEABLE_ROOTS = {"models": "models_root", "adapters": "adapters_root", "cache": "cache_root"}
# Adapter names become URL path parts, folder names and the OpenAI `model` field.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
# Storage paths go into shell commands (always quoted) and `src:dst` volume specs: no ':', nothing a
# shell or compose would read (`$`, quotes other than the apostrophe, backslashes, control characters).
# A space and an apostrophe are common in Windows drive folders ("D:\\Ana's models"): allowed inside a name.
SAFE_PATH = re.compile(r"^(/[A-Za-z0-9._@+'-]+( [A-Za-z0-9._@+'-]+)*)+$")
# A branch, tag or commit: no part may start with "." (git refuses those too), so ".." can never
# turn the revision's folder into models_root or above it.
# A pinned hub revision: a full commit sha (a branch or a tag can be moved by the repo's owner).
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
REVISION = re.compile(r"^(?![./])(?!.*(/\.|//|/$))[A-Za-z0-9._/-]{1,128}$")
COMPOSE_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[0-9]+)?(/[a-z0-9._-]+)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
PARSER_NAME = re.compile(r"[a-z0-9_]{1,64}")
CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
TAG = re.compile(r"tag:[A-Za-z0-9][A-Za-z0-9-]*")
# CPUs as `docker run --cpuset-cpus` takes them: "3", "0-3", "0,2,4-7".
CPUSET = re.compile(r"^[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?)*$")
HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


# Storage roots the deploy writes into: never these (nor anything below the second set).
SYSTEM_FOLDERS = {"/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys", "/usr",
                  "/var", "/tmp", "/home", "/mnt", "/opt", "/srv", "/media", "/var/lib", "/var/lib/docker"}
SYSTEM_FOLDERS_DEEP = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr",
                       "/var/lib/docker", "/var/log", "/var/spool", "/var/mail")
# Folders that hold someone's secrets, wherever they are (~/.ssh, /root/.gnupg, ...): never a storage root.
SECRET_FOLDERS = (".ssh", ".gnupg", ".aws", ".kube", ".docker", ".password-store")


def cpuset_ranges(cpuset: str) -> list[tuple[int, int]]:
    """The (first, last) CPU of each part of a CPUSET: [(0, 0), (2, 3)] for "0,2-3"."""
    return [(int(low), int(high or low)) for low, _, high in (part.partition("-") for part in cpuset.split(","))]


def cpuset_cpus(cpuset: str) -> list[int]:
    """The CPUs a CPUSET names, e.g. [0, 2, 3] for "0,2-3"."""
    return [cpu for low, high in cpuset_ranges(cpuset) for cpu in range(low, high + 1)]
