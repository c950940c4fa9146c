"""What an EC2 launch needs besides the flow's request, resolved per region: the region's image,
the zone's subnet and security group, and the user-data that installs and runs the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from spotshift.aws.ec2 import LaunchRequest
from spotshift.aws.errors import ImageUnavailable
from spotshift.aws.images import RegionImage
from spotshift.aws.network import LaunchNetwork
from training.bootstrap import render_user_data

IMDS = "http://169.254.169.254"


@dataclass(frozen=True)
class TrainerBoot:
    """How the instance gets and runs the trainer (see training.bootstrap.render_user_data)."""

    wheel_uri: Callable[[], str]  # builds and uploads the wheel on first use
    python: str
    bucket_region: str
    hub_token_secret: str | None = None

    def user_data(self, request: LaunchRequest) -> str:
        output = request.spec_uri.rsplit("/", 1)[0] + "/"
        processes = min(request.processes or request.offer.gpu_count, request.offer.gpu_count)  # one per GPU at most
        return render_user_data(
            request.spec_uri, python=self.python, trainer_wheel_uri=self.wheel_uri(), log_uri=output + "logs/",
            gpus=processes, hub_token_secret=self.hub_token_secret, imds=IMDS, power_off=True,
            extra_env={"AWS_DEFAULT_REGION": self.bucket_region})


@dataclass(frozen=True)
class LaunchEnvironment:
    """Completes a LaunchRequest for its region: image, network, user-data."""

    images: Callable[[str], RegionImage]
    network: LaunchNetwork | None = None
    boot: TrainerBoot | None = None

    def complete(self, request: LaunchRequest) -> LaunchRequest:
        """The request with the region's image, the zone's subnet and group, and the EC2 user-data.
        ImageUnavailable when the image cannot boot the offer's instance type (blocks the offer)."""
        image = self.images(request.region)
        if not image.supports(request.offer.instance_type):
            raise ImageUnavailable(f"{image.image_id} ({image.name or image.source}) does not support "
                                   f"{request.offer.instance_type}", code="UnsupportedInstanceFamily",
                                   operation="RunInstances", region=request.region)
        update: dict = {"image_id": image.image_id}
        if self.network is not None:
            subnet, group = self.network.place(request.region, request.offer.zone)
            update |= {"subnet_id": subnet, "security_group_ids": (group,), "public_ip": not self.network.private}
        if self.boot is not None:
            update["user_data"] = self.boot.user_data(request)
        return request.model_copy(update=update)
