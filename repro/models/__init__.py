"""Hand-written architectures, one file per family. Importing a family registers its builders."""

from repro.models import resnet  # noqa: F401
from repro.models import densenet, mobilenet  # noqa: F401
from repro.models import cifar_resnet  # noqa: F401
from repro.models import efficientnet  # noqa: F401
