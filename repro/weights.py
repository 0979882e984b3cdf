"""Safe weight files: ``reference.weights`` is the one implementation (the bottom layer reads files
for ``reference.create(weights=PATH)``); this module keeps ``repro.weights`` as a public path."""

from reference.weights import (  # noqa: F401
    WeightsError,
    check_state_dict_fits,
    load_state_dict_atomic,
    load_weights_file,
    read_state_dict,
)
