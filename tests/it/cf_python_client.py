"""Drives tally with the PyPI client cloudfoundry-client==1.40.4, as a user of Cloud Foundry
would: log in through UAA, create an org, a space and apps, list them page by page, update,
start, restage and delete an app, and read the audit events. Exits non-zero on any failure."""

import sys

from cloudfoundry_client.client import CloudFoundryClient

target = sys.argv[1]
client = CloudFoundryClient(target, verify=False)
client.init_with_user_credentials("admin", "password")

org = client.v2.organizations._create({"name": "py-org"})
space = client.v2.spaces._create({"name": "py-space", "organization_guid": org["metadata"]["guid"]})
space_guid = space["metadata"]["guid"]

guids = []
for n in range(5):
    app = client.v2.apps.create(name="py-app-%d" % n, space_guid=space_guid, docker_image="nginx")
    assert app["entity"]["state"] == "STOPPED", app
    guids.append(app["metadata"]["guid"])

# Two per page: the client follows next_url until it is null.
names = [app["entity"]["name"] for app in client.v2.apps.list(**{"results-per-page": 2})]
assert names == ["py-app-%d" % n for n in range(5)], names
assert client.v2.apps.get_first(name="py-app-3")["metadata"]["guid"] == guids[3]

updated = client.v2.apps.update(guids[0], instances=3, memory=256)
assert updated["entity"]["instances"] == 3 and updated["entity"]["memory"] == 256, updated
started = client.v2.apps.start(guids[0], asynchronous=True)
assert started["entity"]["state"] == "STARTED", started
assert started["entity"]["package_state"] == "STAGED", started
stopped = client.v2.apps.stop(guids[0], asynchronous=True)
assert stopped["entity"]["state"] == "STOPPED", stopped
# Restage starts a stopped app again (reference 5.3).
restaged = client.v2.apps.restage(guids[0])
assert restaged["entity"]["state"] == "STARTED", restaged
# An app that never staged cannot be restaged: CC's NotStaged.
try:
    client.v2.apps.restage(guids[1])
    raise AssertionError("restaging an unstaged app was accepted")
except Exception as error:
    assert "CF-NotStaged" in str(error), error

client.v2.apps.remove(guids[4])
remaining = [app["metadata"]["guid"] for app in client.v2.apps.list()]
assert guids[4] not in remaining and len(remaining) == 4, remaining

events = client.get("%s/v2/events?q=type:audit.app.create&results-per-page=2" % target).json()
assert events["total_results"] == 5, events
types = set()
page = client.get("%s/v2/events" % target).json()
while True:
    types.update(resource["entity"]["type"] for resource in page["resources"])
    if page["next_url"] is None:
        break
    page = client.get(target + page["next_url"]).json()
for expected in ["audit.app.create", "audit.app.update", "audit.app.restage", "audit.app.process.delete", "audit.app.delete-request"]:
    assert expected in types, (expected, types)

try:
    client.v2.apps.create(name="py-app-0", space_guid=space_guid)
    raise AssertionError("a duplicate name was accepted")
except Exception as error:  # the client raises InvalidStatusCode with CC's body
    assert "CF-AppNameTaken" in str(error), error

print("ok")
