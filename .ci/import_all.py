"""Import every module of ml4ml; exit 1 naming each one that does not import.

CI runs it in a fresh venv where ml4ml is installed without its extras, so a module that
imports something the package does not declare fails here. ``--without NAME ...`` makes
those top-level packages unimportable first (as if they were not installed):

    python .ci/import_all.py
    python .ci/import_all.py --without boto3 s3fs
"""

import argparse
import importlib
import importlib.abc
import pkgutil
import sys
import traceback


class _Absent(importlib.abc.MetaPathFinder):
    """Finds the named top-level packages as not installed."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{fullname}'", name=fullname)
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without", nargs="*", default=[], metavar="NAME",
                        help="top-level packages to treat as not installed")
    args = parser.parse_args(argv)
    if args.without:
        for name in list(sys.modules):
            if name.partition(".")[0] in args.without:
                del sys.modules[name]
        sys.meta_path.insert(0, _Absent(args.without))
    import ml4ml

    # every module but ``__main__`` (importing it runs the command line)
    names = ["ml4ml"] + [info.name for info in
                         pkgutil.walk_packages(ml4ml.__path__, prefix="ml4ml.",
                                               onerror=lambda name: None)
                         if not info.name.endswith(".__main__")]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - report every module that does not import
            failed.append(name)
            print(f"error: cannot import {name}:", file=sys.stderr)
            traceback.print_exc()
    print(f"imported {len(names) - len(failed)} of {len(names)} ml4ml modules"
          + (f" (without {', '.join(args.without)})" if args.without else "")
          + f" from {ml4ml.__file__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
