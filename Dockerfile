# GPU image for batch jobs (README "Many scenes, many GPUs"): the project with its cluster and
# export extras. Build: docker build -t detector .
# Run:   docker run --gpus all -v /data:/data detector \
#          python -m detector.infer source=/data/scenes out=/data/counts
# The torch wheels carry their own CUDA libraries; the base image gives the driver hooks.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    YOLO_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH

# python3 (3.12) and the system libraries OpenCV needs
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv \
    && pip install --upgrade pip \
    && pip install torch==2.14.1 torchvision==0.29.1

WORKDIR /opt/detector
COPY pyproject.toml README.md ./
COPY conf ./conf
COPY detector ./detector
RUN pip install ".[cluster,export]" \
    && python -c "import detector.infer, detector.conf"

WORKDIR /work
CMD ["python", "-m", "detector.infer"]
