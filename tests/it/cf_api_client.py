"""Connects to tally with the PyPI client cf-api==1.0.0 (hsdp/python-cf-api), which reads
/v2/info (it refuses a null doppler_logging_endpoint), logs in through UAA's password grant, and
then makes a v2 and a v3 request. Exits non-zero on any failure."""

import sys

import cf_api

target = sys.argv[1]
cc = cf_api.new_cloud_controller(
    target, username="admin", password="password", client_id="cf", client_secret="", verify_ssl=False
)
assert cc.info.doppler_url.startswith("wss://"), cc.info.data
assert cc.info.ssh_url and cc.info.ssh_client_id == "ssh-proxy", cc.info.data

orgs = cc.request("organizations").get()
assert not orgs.has_error, orgs.text
assert orgs.data["total_results"] == 0, orgs.data

v3 = cc.new_v3()
apps = v3.request("apps").get()
assert not apps.has_error, apps.text
assert apps.data["pagination"]["total_results"] == 0, apps.data
missing = v3.request("apps", "00000000-0000-4000-8000-000000000000").get()
assert missing.has_error and missing.error_code == ["10010"], missing.text

print("ok")
