"""The store: the only code that touches Zarr. Groups, the reference's files, import.

Modules: ``groups`` (create and open a store, the ``models`` table, probe groups, derived
rows), ``legacy`` (read the reference's .npy files), ``importing`` (import them into a
store). Users read a store with plain ``xr.open_zarr(path, group=...)`` or
``xr.open_datatree(path, engine="zarr")``.
"""

from ml4ml.store.groups import *  # noqa: F401,F403
from ml4ml.store.groups import __all__  # noqa: F401,E402
