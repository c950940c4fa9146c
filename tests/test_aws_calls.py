"""botocore owns retries: clients are built in standard retry mode, and a throttled call is retried
by botocore itself (a local HTTP endpoint that throttles twice, then answers)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from blocks.aws import aws_credentials_from_settings
from spotshift.aws.calls import call_aws, retry_config
from spotshift.aws.errors import Throttled
from spotshift.aws.moto_env import client
from spotshift.settings import Settings

THROTTLED = b"""<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors>
<RequestID>r1</RequestID></Response>"""
REGIONS = b"""<?xml version="1.0" encoding="UTF-8"?>
<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r2</requestId>
<regionInfo><item><regionName>us-east-1</regionName><regionEndpoint>ec2.us-east-1.amazonaws.com</regionEndpoint></item>
</regionInfo></DescribeRegionsResponse>"""


class ThrottlingEc2:
    """An EC2 endpoint on 127.0.0.1 that answers RequestLimitExceeded `throttle` times, then succeeds."""

    def __init__(self, throttle: int):
        self.throttle, self.requests = throttle, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                throttled = outer.requests <= outer.throttle
                body = THROTTLED if throttled else REGIONS
                self.send_response(400 if throttled else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def throttling():
    servers = []

    def make(throttle):
        servers.append(ThrottlingEc2(throttle))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _ec2(url: str, max_attempts: int):
    return boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=retry_config(max_attempts))


def test_botocore_retries_throttling_and_the_call_succeeds(throttling):
    server = throttling(2)
    regions = call_aws(_ec2(server.url, 5).describe_regions, region="us-east-1")
    assert [r["RegionName"] for r in regions["Regions"]] == ["us-east-1"]
    assert server.requests == 3  # two throttled attempts, retried by botocore, then the answer


def test_throttling_beyond_max_attempts_is_a_typed_error(throttling):
    server = throttling(10)
    with pytest.raises(Throttled, match="RequestLimitExceeded on DescribeRegions in us-east-1"):
        call_aws(_ec2(server.url, 2).describe_regions, region="us-east-1")
    assert server.requests == 2  # botocore's attempts, no second layer of retries on top


def test_every_client_the_project_builds_uses_standard_retries():
    settings = Settings(aws_endpoint_url="http://127.0.0.1:1", aws_max_attempts=7)
    ec2 = aws_credentials_from_settings(settings).get_client("ec2")
    assert ec2.meta.config.retries == {"mode": "standard", "total_max_attempts": 7}
    assert client("s3", "http://127.0.0.1:1").meta.config.retries["mode"] == "standard"
