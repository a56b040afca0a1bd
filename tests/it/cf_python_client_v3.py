"""Drives tally's v3 app lifecycle with the PyPI client cloudfoundry-client==1.40.4, unmodified:
create an app through its v3 entity manager, push bits through a package and a build, start
and stop it through the links tally returns, scale its process through the process's link,
restart, run and cancel a task, delete it with the job polled, then read the usage and audit
events it caused. Exits non-zero on any failure."""

import os
import sys
import tempfile
import time

from cloudfoundry_client.client import CloudFoundryClient
from cloudfoundry_client.v3.entities import EntityManager
from cloudfoundry_client.v3.packages import PackageType

target = sys.argv[1]
client = CloudFoundryClient(target, verify=False)
client.init_with_user_credentials("admin", "password")

org = client.v2.organizations._create({"name": "py3-org"})
space = client.v2.spaces._create({"name": "py3-space", "organization_guid": org["metadata"]["guid"]})
space_guid = space["metadata"]["guid"]

app = client.v3.apps._create({"name": "py3-app", "relationships": {"space": {"data": {"guid": space_guid}}}})
guid = app["guid"]
assert app["state"] == "STOPPED", app
assert client.v3.apps.get(guid)["name"] == "py3-app"
found = list(client.v3.apps.list(names=["py3-app"], include="space"))
assert [a["guid"] for a in found] == [guid], found
assert found[0].space()["guid"] == space_guid
renamed = client.v3.apps._update(guid, {"name": "py3-web"})
assert renamed["name"] == "py3-web", renamed

# Bits: a package, its upload, a build, the droplet made current.
package = client.v3.packages.create(guid, PackageType.BITS)
assert package["state"] == "AWAITING_UPLOAD", package
with tempfile.NamedTemporaryFile(suffix=".zip", delete=False) as zip_file:
    zip_file.write(b"PK\x05\x06" + b"\x00" * 18)
uploaded = client.v3.packages._upload_bits(package["guid"], zip_file.name)
os.unlink(zip_file.name)
assert uploaded["state"] == "READY", uploaded
builds = EntityManager(target, client, "/v3/builds")
build = builds._create({"package": {"guid": package["guid"]}})
for _ in range(50):
    if build["state"] != "STAGING":
        break
    time.sleep(0.1)
    build = builds.get(build["guid"])
assert build["state"] == "STAGED", build
droplet = client.v3.droplets.get(build["droplet"]["guid"])
client.v3.apps._patch("%s/v3/apps/%s/relationships/current_droplet" % (target, guid), {"data": {"guid": droplet["guid"]}})

# Start and stop through the links, scale through the process's link, restart by path.
started = client.v3.apps.get(guid).start()
assert started["state"] == "STARTED", started
process = next(iter(client.v3.apps.get(guid).processes()))
assert process["type"] == "web" and process["guid"] == guid, process
scaled = process.scale(data={"instances": 3})
assert scaled["instances"] == 3, scaled
restarted = client.v3.apps.restart(guid)
assert restarted["state"] == "STARTED", restarted
stopped = client.v3.apps.get(guid).stop()
assert stopped["state"] == "STOPPED", stopped
client.v3.apps.get(guid).start()

# A task, then its cancel.
task = client.v3.tasks.create(guid, command="rake db:migrate", name="migrate")
assert task["state"] == "RUNNING", task
canceled = client.v3.tasks.cancel(task["guid"])
assert canceled["state"] == "CANCELING", canceled

# Delete: the client polls the job until it is COMPLETE.
client.v3.apps.remove(guid, asynchronous=False)
assert client.v3.apps.len(names=["py3-web"]) == 0

# What it left: usage events keyed by the process guid (and the task's), and the audit trail.
usage = EntityManager(target, client, "/v3/app_usage_events")
states = [(e["state"]["current"], e["process"]["guid"] or e["task"]["guid"]) for e in usage.list(per_page=2)]
expected = [
    ("STAGING_STARTED", None), ("STAGING_STOPPED", None), ("BUILDPACK_SET", None),
    ("STARTED", guid),  # start
    ("STARTED", guid),  # scale 1 -> 3
    ("STOPPED", guid), ("STARTED", guid),  # restart
    ("STOPPED", guid), ("STARTED", guid),  # stop, start
    ("TASK_STARTED", task["guid"]),
    ("TASK_STOPPED", task["guid"]),  # the app's delete stops the canceling task
    ("STOPPED", guid),  # and its process
]
assert [s for s, _ in states] == [s for s, _ in expected], states
assert all(g == want for (_, g), (_, want) in zip(states, expected) if want is not None), states
types = [e["type"] for e in client.v3.audit_events.list(target_guids=[guid])]
for expected_type in [
    "audit.app.process.create", "audit.app.create", "audit.app.update", "audit.app.package.create",
    "audit.app.package.upload", "audit.app.build.create", "audit.app.droplet.mapped", "audit.app.start",
    "audit.app.process.scale", "audit.app.restart", "audit.app.stop", "audit.app.task.create",
    "audit.app.task.cancel", "audit.app.process.delete", "audit.app.delete-request",
]:
    assert expected_type in types, (expected_type, types)

print("ok")
