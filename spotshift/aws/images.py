"""The training image of each region: a settings override, else the public SSM parameter of the
AWS Deep Learning AMI, else the newest image by owner and name; resolved once per region."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from spotshift.aws.calls import call_aws
from spotshift.aws.errors import ImageUnavailable, NotFound, SpotshiftAwsError
from spotshift.aws.quotas import family_of

# Families the x86_64 OSS-driver PyTorch DLAMI lists as supported (release notes, 2026).
DLAMI_X86_FAMILIES = frozenset({"g4dn", "g5", "g6", "gr6", "g6e", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200"})
ARM_FAMILIES = frozenset({"g5g", "p6e-gb200"})


@dataclass(frozen=True)
class RegionImage:
    """The image a region's instances boot, and how it was found."""

    region: str
    image_id: str
    source: str  # "settings", "ssm:<parameter>", "describe_images:<pattern>"
    architecture: str = "x86_64"
    name: str = ""
    root_device_name: str | None = None  # e.g. /dev/sda1: the launch sizes the volume mapped there
    root_volume_gib: int | None = None  # the root snapshot's size: the smallest root volume EC2 accepts

    def supports(self, instance_type: str) -> bool:
        """Whether an instance type of this family can boot the image (architecture and driver)."""
        family = family_of(instance_type)
        if self.architecture == "arm64":
            return family in ARM_FAMILIES
        return family not in ARM_FAMILIES and (self.source == "settings" or family in DLAMI_X86_FAMILIES)


def resolve_image(region: str, *, ssm: Any, ec2: Any, override: str | None = None,
                  parameter: str = "", name_pattern: str = "", owners: Sequence[str] = ("amazon",)) -> RegionImage:
    """The region's image; ImageUnavailable naming what was tried when nothing resolves."""
    if override:
        return _described(ec2, region, override, "settings")
    tried = []
    if parameter:
        try:
            value = call_aws(ssm.get_parameter, region=region, Name=parameter)["Parameter"]["Value"]
            return _described(ec2, region, value, f"ssm:{parameter}")
        except NotFound:
            tried.append(f"SSM parameter {parameter}")
    if name_pattern:
        images = call_aws(ec2.describe_images, region=region, Owners=list(owners),
                          Filters=[{"Name": "name", "Values": [name_pattern]}, {"Name": "state", "Values": ["available"]}])
        found = sorted(images.get("Images", []), key=lambda i: i.get("CreationDate", ""))
        if found:
            return _image(region, found[-1], f"describe_images:{name_pattern}")
        tried.append(f"images named {name_pattern!r} owned by {', '.join(owners)}")
    raise ImageUnavailable(f"no training image in {region}: tried {'; '.join(tried) or 'nothing'}; set "
                           f"SPOTSHIFT_IMAGE_IDS='{{\"{region}\": \"ami-...\"}}'", code="ImageNotResolved",
                           operation="ResolveImage", region=region)


def _described(ec2: Any, region: str, image_id: str, source: str) -> RegionImage:
    images = call_aws(ec2.describe_images, region=region, ImageIds=[image_id]).get("Images", [])
    if not images:
        raise ImageUnavailable(f"image {image_id} ({source}) does not exist in {region}",
                               code="InvalidAMIID.NotFound", operation="DescribeImages", region=region)
    return _image(region, images[0], source)


def _image(region: str, raw: dict, source: str) -> RegionImage:
    root = raw.get("RootDeviceName")
    root_ebs = next((m.get("Ebs") or {} for m in raw.get("BlockDeviceMappings") or [] if m.get("DeviceName") == root), {})
    return RegionImage(region=region, image_id=raw["ImageId"], source=source,
                       architecture=raw.get("Architecture", "x86_64"), name=raw.get("Name", ""),
                       root_device_name=root, root_volume_gib=root_ebs.get("VolumeSize"))


class ImageResolver:
    """Resolves each region's image once (thread-safe) through `resolve(region) -> RegionImage`."""

    def __init__(self, resolve: Callable[[str], RegionImage]) -> None:
        self._resolve = resolve
        self._images: dict[str, RegionImage] = {}
        self._lock = threading.Lock()

    def __call__(self, region: str) -> RegionImage:
        with self._lock:
            if region not in self._images:
                self._images[region] = self._resolve(region)
            return self._images[region]


def settings_resolver(settings: Any, clients: Callable[[str, str], Any]) -> ImageResolver:
    """An ImageResolver from spotshift settings and a (service, region) -> client factory."""
    def resolve(region: str) -> RegionImage:
        return resolve_image(region, ssm=clients("ssm", region), ec2=clients("ec2", region),
                             override=settings.image_override(region), parameter=settings.image_ssm_parameter,
                             name_pattern=settings.image_name_pattern, owners=settings.image_owners)
    return ImageResolver(resolve)


__all__ = ["ImageResolver", "RegionImage", "SpotshiftAwsError", "resolve_image", "settings_resolver"]
