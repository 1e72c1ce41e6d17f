#!/usr/bin/env bash
# Fill .whl/ (gitignored) with the wheels a lent GPU machine lacks, for `run --carry .whl`; gpu_session.sh
# installs them into /tmp/site there. Python 3.12 on x86-64 Linux, as on the GPU machines of 2026-11-26.
#
#   bash bench/fetch_wheels.sh
set -eu
mkdir -p .whl
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    transformers==5.24.0 peft==0.21.2 absl-py nltk regex click joblib six \
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 opentelemetry-api==1.45.2  # the serve tests (pydantic and its core must match)
pip wheel -q --no-deps -w .whl rouge-score==0.1.2   # an sdist only: built here, pure Python
ls .whl
