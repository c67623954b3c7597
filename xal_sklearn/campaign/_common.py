"""What every part of a campaign shares: its format, errors and clock."""

import datetime

FORMAT, VERSION = "xal-campaign", 1
#: The strategy a campaign made without ``strategy`` uses: the dual criterion, on the pool
#: ROIs the ROI model draws from the expert's once labels carry some (until then, and for
#: images whose ROI it cannot draw, it ranks by uncertainty).
DEFAULT_STRATEGY = "dual"
#: Folds of the ROI model's cross-validated quality that ``status`` reports.
ROI_CV_FOLDS = 3
STATE_FORMAT = "xal-campaign-state"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")


class CampaignError(ValueError):
    """A campaign operation that cannot be carried out; the message says why."""


class ManifestColumnsWarning(UserWarning):
    """A campaign's manifest has columns that the campaign does not read."""


#: The columns a campaign reads from a manifest.
MANIFEST_COLUMNS = ("image", "mask", "id")


def now():
    """The time, as the campaign's records write it (UTC, ISO 8601, seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
