# syntax=docker/dockerfile:1
# streamtrain GPU trainer image.
#   docker build -t streamtrain:dev .                              # GPU (CUDA from pip wheels)
#   docker build --build-arg TF_VARIANT=cpu -t streamtrain:cpu .   # CPU only
#   docker run --rm streamtrain:dev --help
# Without a Docker engine or registry: `make image` (scripts/image/build.sh, buildah).
# Base: python slim + tensorflow[and-cuda]. The official tensorflow/tensorflow:*-gpu image
# installs the same NVIDIA pip wheels on a full Ubuntu with more tooling, so it is larger
# for the same CUDA bits; the NVIDIA driver itself comes from the node (GKE device plugin).
# One pinned base for both stages: the venv built in `build` runs on the same Python.
FROM python:3.11.14-slim-bookworm AS base

FROM base AS build
# gpu: tensorflow[and-cuda]; cpu: tensorflow-cpu (`make image`, tested by tests/test_image.py).
ARG TF_VARIANT=gpu
# Unset unless given: a CA bundle for pip behind a TLS-intercepting proxy. Build-stage only, so
# it never reaches the runtime image; scripts/image/build.sh mounts the host's bundle there.
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# TensorFlow and CUDA first, in their own layer: gigabytes that change only with requirements/.
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r "requirements/${TF_VARIANT}.txt"
COPY pyproject.toml README.md ./
COPY trainer/ trainer/
RUN pip install --no-cache-dir -c requirements/constraints.txt ".[${TF_VARIANT}]" \
    && pip check

FROM base
LABEL org.opencontainers.image.title="streamtrain" \
      org.opencontainers.image.description="Keras image-model trainer streaming from object storage"
RUN groupadd --system --gid 10001 trainer \
    && useradd --system --uid 10001 --gid trainer --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin trainer
COPY --from=build /opt/venv /opt/venv
# The root filesystem is read-only in the cluster: HOME, Keras and the data cache point at
# the emptyDir volumes the Job mounts (/tmp, /var/cache/streamtrain); no .pyc writes.
# /usr/local/nvidia is where GKE mounts the node's NVIDIA driver libraries.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    KERAS_HOME=/tmp/keras \
    TRAINER_CACHE_DIR=/var/cache/streamtrain \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib
WORKDIR /tmp
USER 10001:10001
# A batch job, not a server: Kubernetes judges it by its exit code (see docs/operations.md).
HEALTHCHECK NONE
ENTRYPOINT ["trainer"]
CMD ["train"]
