# streamer image for docker-compose.yml (`streamer worker`, `streamer serve`, `streamer produce`).
# Build: docker build -t streamer .
#
# Stage 1 builds wheels (hnswlib compiles from source, so it needs a C++ compiler);
# stage 2 installs them into a slim runtime without the compiler.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # portable hnswlib build: no -march=native tuned to the build machine (DESIGN §4)
    HNSWLIB_NO_NATIVE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamer ./streamer
COPY topologies ./topologies
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    STREAMER_STATE_DIR=/var/lib/streamer/state \
    STREAMER_API_HOST=0.0.0.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels streamer \
 && rm -rf /wheels \
 && useradd --system --create-home --home-dir /var/lib/streamer streamer \
 && mkdir -p /var/lib/streamer/state \
 && chown -R streamer:streamer /var/lib/streamer
USER streamer
WORKDIR /var/lib/streamer
# 8080: HTTP API (streamer serve); 6066: worker health/metrics
EXPOSE 8080 6066
CMD ["streamer", "--help"]
