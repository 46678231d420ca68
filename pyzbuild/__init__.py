"""The Python steps of `build.sh` (docs/PACKAGING.md), where ruff and pytest see them.

Not part of the gateway: setup.cfg packages only `diminuendo`, so nothing here ships in the
zipapp. Two interpreters run these modules, and each module is written for one of them:

* the build venv's (`python -m pyzbuild …`, standard library only): `package_data` (the wheel
  holds every non-Python file), `normalise` (site-packages without build-machine traces),
  `digest` (the content hash in the build id) and `zipdiff` (what differs between two builds);
* the built pyz's own (`SHIV_INTERPRETER=1 python dist/diminuendo-pyX.Y.pyz pyzbuild/smoke.py`):
  `smoke`, the smoke test. shiv runs it as a file, so it imports nothing from beside it, and
  every import it makes comes from the pyz.
"""
