"""Deploy the multi-LoRA FunctionGemma serving stack: `pyinfra inventory.py deploy.py`.

Reads as a table of contents; each step is a module of lorafleet/deploy/<step>/,
and what it ships is in files/<step>/ and templates/<step>/. With a `router` group in the inventory, the boxes
serve behind one router (docs/fleet.md); server changes then roll box by box.
"""

from pyinfra import host, inventory

from lorafleet.deploy import preflight, secret_files, storage
from lorafleet.deploy.adapters import deployer as adapters
from lorafleet.deploy.context import host_settings, inventory_fleet
from lorafleet.deploy.gateway import deployer as gateway
from lorafleet.deploy.image import deployer as image
from lorafleet.deploy.lock import deployer as lock
from lorafleet.deploy.models import deployer as models
from lorafleet.deploy.router import deployer as router
from lorafleet.deploy.serving import deployer as serving

settings = host_settings(host)  # every setting validated here, before anything is planned
fleet = inventory_fleet(inventory)  # the boxes and the router, when the inventory has a router; else None
engine, settings = preflight.check(settings, routes=bool(fleet) and host.name == fleet.router)  # docker + compose v2, the GPU and the dtype it takes (printed with why), each root proven through the engine
settings = image.resolve_base(settings)  # cpu_base_image = "local": the host's own base image, else python:3.11-slim
lock.acquire(settings)  # one deploy at a time on a box; a crashed deploy's lock is recognised
storage.ensure(settings)  # storage roots, cache folders, the stack folder, the scripts it runs
if settings.serve_models:  # every host but a router-only one
    secret_files.upload(settings)  # the 0600 env files: the vLLM API key (a box's own, in a fleet), HF_TOKEN
    gateway.stage(settings)  # the gateway project's files, for the bootstrap (never recreated here)
    image.ensure(settings)  # pull the pinned CUDA image, or build the CPU image
    models.ensure_base(settings, engine)  # the base model: hub download, laptop upload or demo build
    versions = adapters.ensure(settings, engine)  # every adapter in place and checked
    serving.apply(settings, versions, engine, fleet)  # manifest, compose, start (rolling in a fleet), adapter sync, verify
    adapters.prune(settings)  # only with prune_adapters: undeclared adapters are unloaded, never deleted, by default
if fleet and host.name == fleet.router:
    router.apply(settings, fleet, engine)  # the router's image, its configuration (reloaded, never restarted), health
lock.release(settings)
