"""Hand-written architectures, one file per family. Importing a family registers its builders."""

from repro.models import resnet  # noqa: F401
