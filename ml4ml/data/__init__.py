"""Test suites (datasets) and the writers of tiny files in their standard on-disk formats.

Modules: ``suites`` (``load_suite``: the embedded digits and mnist5k, and MNIST, CIFAR, SVHN,
... through torchvision's loaders), ``own`` (``load_own_suite``: your own images, an
ImageFolder or an npz, with ``suite_digest``), ``tiny`` (``write_mnist``, ``write_cifar10``,
... for tests and demos). Exports load lazily (torch).
"""

from ml4ml._lazy import lazy_exports

__all__ = ["Suite", "load_suite", "register_suite", "suite_names", "write_mnist",
           "write_cifar10", "write_cifar100", "write_svhn", "OwnSuiteSpec", "load_own_suite",
           "own_suite_classes", "own_spec_problems", "suite_digest"]

__getattr__ = lazy_exports(__name__, {
    "Suite": "ml4ml.data.suites",
    "load_suite": "ml4ml.data.suites",
    "register_suite": "ml4ml.data.suites",
    "suite_names": "ml4ml.data.suites",
    "write_mnist": "ml4ml.data.tiny",
    "write_cifar10": "ml4ml.data.tiny",
    "write_cifar100": "ml4ml.data.tiny",
    "write_svhn": "ml4ml.data.tiny",
    "OwnSuiteSpec": "ml4ml.data.own",
    "load_own_suite": "ml4ml.data.own",
    "own_suite_classes": "ml4ml.data.own",
    "own_spec_problems": "ml4ml.data.own",
    "suite_digest": "ml4ml.data.own",
})
