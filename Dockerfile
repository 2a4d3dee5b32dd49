# aurora-streams worker image: multi-stage (build the wheel and its dependencies, then a slim
# runtime), non-root, pinned base. Build: docker build -t aurora-streams .
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip==24.3.1 build==1.2.2
COPY pyproject.toml constraints.txt README.md ./
COPY aurora_streams ./aurora_streams
RUN python -m build --wheel --outdir /wheels . \
 && pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels /wheels/aurora_streams-*.whl
# The compiled core (aurora_streams/native.py) from the same sources as the wheel: the worker
# loads it only if its sources hash the same, so a mismatch falls back to pure Python.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir -c constraints.txt ".[native]" \
 && AURORA_NATIVE_DIR=/native python -m aurora_streams native build

FROM python:3.11.10-slim-bookworm
RUN groupadd --system --gid 10001 aurora \
 && useradd --system --uid 10001 --gid aurora --home-dir /var/lib/aurora --create-home aurora
COPY --from=build /wheels /wheels
COPY --from=build /native /opt/aurora-native
RUN pip install --no-cache-dir --no-index --find-links /wheels aurora-streams && rm -rf /wheels
USER 10001:10001
WORKDIR /var/lib/aurora
ENV AURORA_DATADIR=/var/lib/aurora/data \
    AURORA_NATIVE_DIR=/opt/aurora-native \
    AURORA_WEB_BIND=0.0.0.0 \
    AURORA_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/aurora/data"]
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=2)" || exit 1
ENTRYPOINT ["aurora-streams"]
CMD ["worker"]
