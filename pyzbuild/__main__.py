"""`python -m pyzbuild STEP ARGS…`: the build steps build.sh runs with its build venv's Python.
A step that finds a problem prints the reason to stderr and exits 1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyzbuild.digest import build_id, file_sha256, tree_digest
from pyzbuild.normalise import normalise_site_packages
from pyzbuild.package_data import check_wheel
from pyzbuild.shiv_root import NoExecError, fresh_shiv_root
from pyzbuild.sources import copy_sources
from pyzbuild.zipdiff import entry_differences, zip_entries


def copy_sources_step(args: argparse.Namespace) -> int:
    copy_sources(args.root, args.dest)
    return 0


def check_wheel_step(args: argparse.Namespace) -> int:
    problem = check_wheel(args.package, args.wheel)
    if problem:
        print(f"build.sh: {problem}", file=sys.stderr)
    return 1 if problem else 0


def normalise_step(args: argparse.Namespace) -> int:
    normalise_site_packages(args.site)
    return 0


def build_id_step(args: argparse.Namespace) -> int:
    print(build_id(args.wheel.name, tree_digest(args.site)))
    return 0


def shiv_root_step(args: argparse.Namespace) -> int:
    try:
        print(fresh_shiv_root(args.parent))
    except NoExecError as exc:
        print(f"build.sh: {exc}", file=sys.stderr)
        return 1
    return 0


def compare_step(args: argparse.Namespace) -> int:
    first, second = file_sha256(args.first), file_sha256(args.second)
    if first == second:
        return 0
    print(f"  sha256 {first} vs {second}", file=sys.stderr)
    for line in entry_differences(zip_entries(args.first), zip_entries(args.second)):
        print(f"  {line}", file=sys.stderr)
    return 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m pyzbuild", description=__doc__)
    steps = top.add_subparsers(required=True, metavar="STEP")
    step = steps.add_parser("copy-sources", help="copy the wheel's inputs, without caches")
    step.add_argument("root", type=Path, help="the project")
    step.add_argument("dest", type=Path)
    step.set_defaults(run=copy_sources_step)
    step = steps.add_parser("check-wheel", help="the wheel holds every non-Python package file")
    step.add_argument("package", type=Path, help="the package directory the wheel was built from")
    step.add_argument("wheel", type=Path)
    step.set_defaults(run=check_wheel_step)
    step = steps.add_parser("normalise", help="strip build-machine traces from site-packages")
    step.add_argument("site", type=Path)
    step.set_defaults(run=normalise_step)
    step = steps.add_parser("build-id", help="print <version>-<content hash> for shiv")
    step.add_argument("wheel", type=Path, help="the project's wheel (its name holds the version)")
    step.add_argument("site", type=Path, help="the normalised site-packages")
    step.set_defaults(run=build_id_step)
    step = steps.add_parser("compare", help="exit 0 if two pyz are byte-identical, else diff them")
    step.add_argument("first", type=Path)
    step.add_argument("second", type=Path)
    step.set_defaults(run=compare_step)
    step = steps.add_parser("shiv-root", help="print a fresh SHIV_ROOT that allows executables")
    step.add_argument("parent", type=Path)
    step.set_defaults(run=shiv_root_step)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
