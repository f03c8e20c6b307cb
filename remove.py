"""Remove what the deploy made: `pyinfra inventory.py remove.py`.

Stops and removes the serving stack (and, on the fleet's router host, the router), then what the deploy
wrote in the stack folder for them, the secrets env files among them (one holds the API key). Kept: the
storage roots (models, adapters, caches) unless remove_purge names them, the images, and the gateway
this run connects through (the box's network door). A second run changes nothing.
lorafleet/deploy/removal.py says exactly what goes and what stays.
"""

from pyinfra import host

from lorafleet.deploy import preflight, storage
from lorafleet.deploy.context import host_settings, routes
from lorafleet.deploy.image import deployer as image
from lorafleet.deploy.lock import deployer as lock
from lorafleet.deploy.router import deployer as router
from lorafleet.deploy.serving import deployer as serving

settings = host_settings(host, removing=True)  # validated (remove_purge too); needs no secret, makes no key
preflight.engine_answers()  # docker answers: an engine that does not would look like one running nothing
settings = image.resolve_base(settings)  # the images' tags as the deploy made them, to say they stay
lock.acquire(settings, if_deployed=True)  # never alongside a deploy; none taken (nor a folder made) where nothing is deployed
if routes(host):
    router.remove(settings)  # first, so the router never sends to a box whose vLLM is gone
if settings.serve_models:
    serving.remove(settings)  # vLLM's container and network: the port and the memory come back; the gateway stays
storage.remove(settings, routes=routes(host))  # the stack folder's compose files, scripts, build files, secrets env files
storage.purge(settings)  # only the roots remove_purge names: what the deploy put there, never the user's own
lock.release(settings, if_deployed=True)
