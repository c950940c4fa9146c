"""What an EC2 launch needs besides the flow's request, resolved per region: the region's image,
its root volume sized for the job, the zone's subnet and security group, and the user-data that
installs and runs the trainer (with the job's data on the instance store where it fits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from spotshift.aws.ec2 import LaunchRequest
from spotshift.aws.errors import CapacityUnavailable, ImageUnavailable
from spotshift.aws.images import RegionImage
from spotshift.aws.network import LaunchNetwork
from spotshift.catalog import INSTANCE_STORE_DISKS
from spotshift.sizing.disk import RootVolume, RootVolumeTooLarge, plan_root_volume
from training.bootstrap import UNIT_DIR, ScratchDisk, render_user_data

IMDS = "http://169.254.169.254"


@dataclass(frozen=True)
class TrainerBoot:
    """How the instance gets and runs the trainer (see training.bootstrap.render_user_data)."""

    wheel_uri: Callable[[], str]  # builds and uploads the wheel on first use
    python: str
    bucket_region: str
    hub_token_secret: str | None = None

    def user_data(self, request: LaunchRequest, *, instance_store: bool = False) -> str:
        """instance_store: the job's data (HF_HOME, TMPDIR) goes to the instance store (the root
        volume was sized without it)."""
        output = request.spec_uri.rsplit("/", 1)[0] + "/"
        processes = min(request.processes or request.offer.gpu_count, request.offer.gpu_count)  # one per GPU at most
        return render_user_data(
            request.spec_uri, python=self.python, trainer_wheel_uri=self.wheel_uri(), log_uri=output + "logs/",
            gpus=processes, hub_token_secret=self.hub_token_secret, imds=IMDS, power_off=True,
            extra_env={"AWS_DEFAULT_REGION": self.bucket_region}, scratch=ScratchDisk(instance_store=instance_store),
            shutdown_hook=UNIT_DIR)


@dataclass(frozen=True)
class LaunchEnvironment:
    """Completes a LaunchRequest for its region: image, network, user-data."""

    images: Callable[[str], RegionImage]
    network: LaunchNetwork | None = None
    boot: TrainerBoot | None = None
    root_volume_max_gib: int = 2048

    def root_volume(self, request: LaunchRequest, image: RegionImage) -> RootVolume | None:
        """The root volume for the request's job on the offer's type (None: the image does not say
        its root size; EC2 then gives the image's own). CapacityUnavailable (code RootVolumeTooLarge,
        the offer blocked, the next one tried) when it would exceed root_volume_max_gib."""
        if not image.root_device_name or not image.root_volume_gib:
            return None
        instance_type = request.offer.instance_type
        try:
            return plan_root_volume(image.root_volume_gib, request.disk, instance_type,
                                    INSTANCE_STORE_DISKS.get(instance_type, (0, 0)), max_gib=self.root_volume_max_gib)
        except RootVolumeTooLarge as exc:
            raise CapacityUnavailable(str(exc), code="RootVolumeTooLarge", operation="RunInstances",
                                      region=request.region) from exc

    def complete(self, request: LaunchRequest) -> LaunchRequest:
        """The request with the region's image and its root volume, the zone's subnet and group, and
        the EC2 user-data. ImageUnavailable when the image cannot boot the offer's instance type, and
        CapacityUnavailable when the job's root volume would be too large (both block the offer)."""
        image = self.images(request.region)
        if not image.supports(request.offer.instance_type):
            raise ImageUnavailable(f"{image.image_id} ({image.name or image.source}) does not support "
                                   f"{request.offer.instance_type}", code="UnsupportedInstanceFamily",
                                   operation="RunInstances", region=request.region)
        update: dict = {"image_id": image.image_id}
        root = self.root_volume(request, image)
        if root is not None:
            update |= {"root_device_name": image.root_device_name, "root_volume_gib": root.size_gib}
        if self.network is not None:
            subnet, group = self.network.place(request.region, request.offer.zone)
            update |= {"subnet_id": subnet, "security_group_ids": (group,), "public_ip": not self.network.private}
        if self.boot is not None:
            # an image of unknown root size keeps its own root volume: the job's data goes to any instance store
            on_store = root.data_on_instance_store if root else request.offer.instance_type in INSTANCE_STORE_DISKS
            update["user_data"] = self.boot.user_data(request, instance_store=on_store)
        return request.model_copy(update=update)
