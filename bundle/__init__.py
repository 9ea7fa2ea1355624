"""A deployable early-exit bundle: ONNX graphs (segments, heads, saver, base model) plus a router that runs them
with onnxruntime and numpy alone. Importing this package loads neither torch nor the ``exits`` package: of the
project it imports only the numpy-only ``contract`` (exit rules, the configuration type).

``python -m exits.export_bundle`` writes a bundle; :func:`open_bundle` loads one (``docs/bundle.md``).
"""

from contract import ExitConfig

from .errors import BundleError
from .manifest import BUNDLE_FORMAT, Manifest, read_manifest
from .preprocess import make_transform
from .router import BundleRouter, RouteResult, open_bundle

__all__ = [
    "BundleError",
    "BUNDLE_FORMAT",
    "Manifest",
    "read_manifest",
    "BundleRouter",
    "ExitConfig",
    "RouteResult",
    "open_bundle",
    "make_transform",
]
