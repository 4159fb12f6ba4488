"""Base class of the generated root models (hand-written, not generated).

A module of its own: pydantic's ``RootModel`` is built when it is imported, which
loads pydantic's plugin loader and ``importlib.metadata``; a module of models without
a root model (``Manifest``) stays free of that.
"""

from __future__ import annotations

from typing import Generic

from pydantic import ConfigDict, RootModel
from pydantic.root_model import RootModelRootType


class ContractRootModel(RootModel[RootModelRootType], Generic[RootModelRootType]):
    """Base class of the generated root models (``BusMessage``: the union of messages).

    Only ``defer_build``: parametrizing pydantic's ``RootModel`` makes a class with
    RootModel's own configuration, whose whole union schema would be built at import
    (milliseconds of every agent's start); here it is built on first use, as the
    ``ContractModel`` classes are. The members keep their own (strict) configuration.
    """

    model_config = ConfigDict(defer_build=True)
