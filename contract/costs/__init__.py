"""Cost models: what a sample pays for the units it runs, registered by name (the export's ``objective``).

``get_cost_model(name)`` gives a registered model (an unknown name is refused in one line naming the known
ones); ``list_cost_models()`` their names. A new model is one module here, registered with
``@register_cost_model`` and imported below, plus its test.
"""

from ._base import (
    DEFAULT_COST_MODEL,
    MEASURED_COST_MODEL,
    CostModel,
    CostModelError,
    CostTable,
    get_cost_model,
    list_cost_models,
    register_cost_model,
)

# isort: off
# Registration, in this order: the default first.
from . import macs  # noqa: F401
from . import latency  # noqa: F401
from . import units  # noqa: F401
from . import time  # noqa: F401
# isort: on

__all__ = [
    "CostModel",
    "CostModelError",
    "CostTable",
    "register_cost_model",
    "get_cost_model",
    "list_cost_models",
    "DEFAULT_COST_MODEL",
    "MEASURED_COST_MODEL",
]
