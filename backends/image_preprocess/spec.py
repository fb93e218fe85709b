"""The image_preprocess backend: encoded images in, the classifier's tensor out."""

from pattern_kernel.spec import BackendSpec, Parameter

SPEC = BackendSpec(
    "image_preprocess",
    "Decodes PNG/JPEG bytes, converts to grayscale, resizes (box filter) and scales the pixels.",
    parameters=(
        Parameter("width", "int", 8, "pixels after resize", min=1),
        Parameter("height", "int", 8, "pixels after resize", min=1),
        Parameter("scale_max", "float", 1.0, "the value of a white pixel"),
        Parameter("invert", "bool", False, "for dark-on-light images"),
    ),
)
