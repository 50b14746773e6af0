# The README's two commands. Both install the package first, so they work on a fresh clone.
PYTHON ?= python3
QS ?= quickstart
# `python -m medsam_kit` is the `medsam-kit` console script of the same interpreter that was installed into.
MEDSAM = $(PYTHON) -m medsam_kit

.PHONY: install demo test test-all lint

# sam2 (Meta's SAM 2.1 code, PyPI sdist) would compile a CUDA extension in an isolated build env
# (minutes, GBs, then fall back); built against the installed torch without it, it takes seconds.
install:
	$(PYTHON) -m pip install -q setuptools wheel torch torchvision
	SAM2_BUILD_CUDA=0 $(PYTHON) -m pip install -q --no-build-isolation 'sam2==1.1.0'
	$(PYTHON) -m pip install -q -e '.[test]'

# Main job on built-in synthetic data: ACDC phantoms -> SSS training (tiny SAM-2.1) -> automatic
# segmentation of held-out patients -> evaluation + report in $(QS)/ (about 6-10 min on 2 CPU cores).
demo: install
	$(MEDSAM) demo --out $(QS) --overwrite

lint:
	$(PYTHON) -m ruff check .

# Fast default test set (slow tests deselected in pyproject.toml); `make test-all` includes them.
# pytest exits 5 when it collects nothing: that is a broken suite, reported as such.
PYTEST = $(PYTHON) -m pytest -n 2 -q
test: install lint
	@$(PYTEST); rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests: the suite is missing or mis-configured" >&2; exit $$rc

test-all: install lint
	@$(PYTEST) -m ""; rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests" >&2; exit $$rc
